//! The official OpenAI Python client (PyPI's `openai`, in the virtual
//! environment the README's test command makes) against the release
//! binary: whole and streamed answers, the usage chunk, the models, all
//! four routing modes, and errors as the client's own exception types.

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
    let (ok, out) = tests::run_python(
        "tests/python/openai_client.py",
        &[
            ("ROUTER_BASE_URL", server.url("/v1")),
            ("ROUTER_API_KEY", "sk-test-router".into()),
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.trim_end().ends_with(" passed, 0 failed"), "{out}");
}
