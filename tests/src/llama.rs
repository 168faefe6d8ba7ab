//! A real model server for the tests: llama.cpp's OpenAI-compatible server
//! (llama-cpp-python, built into .tools/llama by `scripts/install.sh
//! --test`) with the Gemma 3 270M base model, as a process of its own on a
//! free port. A tiny base model: its answers are real text, real usage and
//! real streams, never useful answers or verdicts.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::openai_process::OpenAiProcess;

/// A running llama.cpp server, stopped when dropped.
pub type Llama = OpenAiProcess;

/// Starts it on a free port and waits until `/v1/models` answers.
pub async fn start() -> Llama {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".tools/llama/bin/python");
    let model = root.join(".tools/models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        model.exists(),
        "{} is missing: run scripts/install.sh --test",
        model.display()
    );
    // `--logits_all false`: 450 MB instead of 2.7 GB; one request at a
    // time, a second waits (never cut short).
    let args = |port: u16, _: &Path| -> Vec<OsString> {
        let mut args: Vec<OsString> = ["-m", "llama_cpp.server", "--model"]
            .map(OsString::from)
            .into();
        args.push(model.clone().into());
        let port = port.to_string();
        let rest = [
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--n_ctx",
            "2048",
            "--chat_format",
            "gemma",
            "--logits_all",
            "false",
            "--model_alias",
            "gemma3-270m",
            "--interrupt_requests",
            "false",
        ];
        args.extend(rest.map(OsString::from));
        args
    };
    OpenAiProcess::start(&python, args, &[], None, Duration::from_secs(120)).await
}
