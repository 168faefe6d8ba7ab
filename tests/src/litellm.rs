//! LiteLLM's proxy (installed into .tools/venv by `scripts/install.sh
//! --test`) as a process of its own: a real OpenAI-compatible server for
//! the tests, and the gateway the front door benchmark compares with.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

/// A running LiteLLM proxy, stopped when dropped.
pub struct LiteLlm {
    child: Child,
    /// Its OpenAI base URL (ends in `/v1`).
    pub base_url: String,
    _dir: tempfile::TempDir,
}

impl LiteLlm {
    /// Starts it on a free port with `config` (its YAML) and `master_key`,
    /// offline (the local cost map, no telemetry), and waits until its
    /// `/v1/models` answers.
    pub async fn start(config: &str, master_key: &str) -> LiteLlm {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/litellm");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/install.sh --test",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args([
                "--config",
                config_path.to_str().unwrap(),
                "--host",
                "127.0.0.1",
            ])
            .args(["--port", &port.to_string()])
            .current_dir(dir.path())
            .env("LITELLM_MASTER_KEY", master_key)
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_TELEMETRY", "False")
            .env("DISABLE_SCHEMA_UPDATE", "True")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("log")).unwrap(),
            ))
            .spawn()
            .expect("litellm starts");
        let proxy = LiteLlm {
            child,
            base_url: format!("http://127.0.0.1:{port}/v1"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let ready = eventually(Duration::from_secs(60), || async {
            http.get(format!("{}/models", proxy.base_url))
                .bearer_auth(master_key)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(ready, "LiteLLM answered /v1/models within 60 s");
        proxy
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
