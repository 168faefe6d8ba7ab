//! A real model server for the tests: llama.cpp's OpenAI-compatible server
//! (llama-cpp-python, built into .tools/llama by `scripts/install.sh
//! --test`) with the Gemma 3 270M base model, as a process of its own on a
//! free port. A tiny base model: its answers are real text, real usage and
//! real streams, never useful answers or verdicts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

/// A running llama.cpp server, stopped when dropped.
pub struct Llama {
    child: Child,
    /// Its OpenAI base URL (ends in `/v1`).
    pub base_url: String,
    /// Its log (standard error), kept until dropped.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Llama {
    /// Starts it on a free port and waits until `/v1/models` answers.
    pub async fn start() -> Llama {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join(".tools/llama/bin/python");
        let model = root.join(".tools/models/gemma-3-270m-q4_k_m.gguf");
        for need in [&python, &model] {
            assert!(
                need.exists(),
                "{} is missing: run scripts/install.sh --test",
                need.display()
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // `--logits_all false`: 450 MB instead of 2.7 GB; one request at a
        // time, a second waits (never cut short).
        let child = Command::new(&python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--n_ctx",
                "2048",
                "--chat_format",
                "gemma",
                "--logits_all",
                "false",
            ])
            .args([
                "--model_alias",
                "gemma3-270m",
                "--interrupt_requests",
                "false",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("the llama.cpp server starts");
        let server = Llama {
            child,
            base_url: format!("http://127.0.0.1:{port}/v1"),
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let ready = eventually(Duration::from_secs(120), || async {
            http.get(format!("{}/models", server.base_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(
            ready,
            "llama.cpp answered /v1/models within 120 s: {}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        server
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
