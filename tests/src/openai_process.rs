//! Someone else's OpenAI-compatible server as a process of its own for the
//! tests (LiteLLM's proxy, llama.cpp's server): on a free port, in a temp
//! dir holding its log (standard error), stopped when dropped.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

/// A running OpenAI-compatible server, stopped when dropped.
pub struct OpenAiProcess {
    child: Child,
    /// Its OpenAI base URL (ends in `/v1`).
    pub base_url: String,
    _dir: tempfile::TempDir,
}

impl OpenAiProcess {
    /// Runs `program` (installed by `scripts/install.sh --test`) with the
    /// arguments `args` gives for its port and working dir (where a config
    /// file may go) and with `envs`, then waits up to `within` until its
    /// `/v1/models` answers (with `bearer` as the key, if given).
    pub async fn start(
        program: &Path,
        args: impl FnOnce(u16, &Path) -> Vec<OsString>,
        envs: &[(&str, &str)],
        bearer: Option<&str>,
        within: Duration,
    ) -> OpenAiProcess {
        assert!(
            program.exists(),
            "{} is missing: run scripts/install.sh --test",
            program.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let port = crate::closed_port();
        let child = Command::new(program)
            .args(args(port, dir.path()))
            .envs(envs.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
        let server = OpenAiProcess {
            child,
            base_url: format!("http://127.0.0.1:{port}/v1"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let ready = eventually(within, || async {
            let mut req = http.get(format!("{}/models", server.base_url));
            if let Some(key) = bearer {
                req = req.bearer_auth(key);
            }
            req.send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(
            ready,
            "{} answered /v1/models within {within:?}: {}",
            program.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        server
    }
}

impl Drop for OpenAiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
