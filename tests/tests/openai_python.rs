//! The official OpenAI Python client (PyPI's `openai`, in the virtual
//! environment the README's test command makes) against the release
//! binary: whole and streamed answers, the usage chunk, the models, all
//! four routing modes, and errors as the client's own exception types.

use std::process::Command;

use tests::{Behavior, FakeUpstream, Server};

#[tokio::test]
async fn the_official_python_client_works_unchanged() {
    let fast = FakeUpstream::start_model(Behavior::Ok, "m-fast").await;
    let balanced = FakeUpstream::start_model(Behavior::Ok, "m-balanced").await;
    let powerful = FakeUpstream::start_model(Behavior::Scripted, "m-powerful").await;
    let server = Server::start(&[
        "--in-memory",
        "--retries",
        "0",
        "--api-key",
        "sk-test-router",
        "--upstream",
        &format!("fast={}", fast.base_url),
        "--upstream",
        &format!("balanced={}", balanced.base_url),
        "--upstream",
        &format!("powerful={}", powerful.base_url),
    ]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/install.sh --test makes it",
        python.display()
    );
    let script = root.join("tests/python/openai_client.py");
    let base = server.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("ROUTER_BASE_URL", base)
            .env("ROUTER_API_KEY", "sk-test-router")
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.trim_end().ends_with(" passed, 0 failed"), "{stdout}");
}
