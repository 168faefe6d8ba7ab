//! The OpenAPI document tells the truth: schemathesis (PyPI, installed into
//! `.tools/venv` by `scripts/install.sh --test`) generates requests from the
//! served document, valid and invalid, and runs all its checks against the
//! release binary, with a test-double upstream behind every tier. Anything
//! the document allows must be accepted, anything it forbids refused, and
//! every answer must be declared (status, content type, headers, schema).

use std::path::PathBuf;

use tests::{Behavior, FakeUpstream, Server};

fn schemathesis() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: scripts/install.sh --test installs it",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_with_all_checks_finds_nothing() {
    let mut ups = Vec::new();
    let mut args: Vec<String> = Vec::new();
    for tier in ["fast", "balanced", "powerful"] {
        let up = FakeUpstream::start(Behavior::Ok).await;
        args.extend(["--upstream".into(), format!("{tier}={}", up.base_url)]);
        ups.push(up);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let seed = std::env::var("ORCH_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261129".into());
    let examples = std::env::var("ORCH_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "200".into());
    // The stream never ends: read each up to its first event (the status),
    // so every case costs milliseconds, not the request timeout.
    let config = std::env::temp_dir().join(format!("schemathesis-{}.toml", std::process::id()));
    let reports = tempfile::tempdir().unwrap();
    let har = reports.path().join("run.har");
    // The history's `from`, `to` and `step` are each described exactly,
    // but three rules a schema cannot say bound them: `from` before `to`,
    // at most 1440 steps between them, and times from 1970 to 9999-12-31
    // (a date-time's format does not bound its year; the answer's `from`
    // and `to` must be RFC 3339). Valid values that break those are a 400
    // there (and only there); the replay reads its range the same way.
    // Likewise a chat completion's last user message must show a visible
    // character in its first 100: every rule of the body but that one is
    // in its schema, so a valid body breaking it is a 400 there.
    std::fs::write(
        &config,
        "max-stream-events = 1\n\n\
         [[operations]]\n\
         include-path = \"/api/orchestrator/history\"\n\
         checks.positive_data_acceptance.expected-statuses = [\"2xx\", \"400\"]\n\n\
         [[operations]]\n\
         include-path = \"/api/orchestrator/replay\"\n\
         checks.positive_data_acceptance.expected-statuses = [\"2xx\", \"400\"]\n\n\
         [[operations]]\n\
         include-path = \"/v1/chat/completions\"\n\
         checks.positive_data_acceptance.expected-statuses = [\"2xx\", \"400\"]\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(schemathesis())
        .args([
            "--config-file",
            config.to_str().unwrap(),
            "run",
            &server.url("/api/openapi.json"),
            "--checks",
            "all",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--report",
            "har",
            "--report-har-path",
            har.to_str().unwrap(),
        ])
        // Its example database goes to a temp dir, not the checkout.
        .current_dir(std::env::temp_dir())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .await
        .expect("schemathesis runs");
    let _ = std::fs::remove_file(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    // It really ran: every operation the document has tested, hundreds of
    // cases, all passed.
    assert!(!stdout.contains("FAILURES"), "{stdout}");
    // One warning is by design: without --read-key, POST /api/session
    // answers 404 (no session is needed), whatever the key. Any other is
    // a finding.
    let warnings: Vec<&str> = stdout
        .lines()
        .skip_while(|l| l.trim() != "Warnings:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(
        stdout.contains("No issues found")
            || (warnings.len() == 1
                && warnings[0].contains("1 operation repeatedly returned 404")
                && stdout.contains("  - POST /api/session\n")),
        "{stdout}"
    );
    let doc: serde_json::Value = reqwest::get(server.url("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Every operation but the document's own (schemathesis does not test
    // the schema it reads).
    let operations = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.as_str() != "/api/openapi.json")
        .map(|(_, item)| item.as_object().unwrap().len() as u32)
        .sum::<u32>();
    let tested = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.split_whitespace().next()?.parse::<u32>().ok());
    assert_eq!(
        tested,
        Some(operations),
        "every operation of the document tested\n{stdout}"
    );
    // A chat completion body the document allows got a 400 only for the
    // one rule a schema cannot say (a visible character in the last user
    // message's first 100): checked over every request the run sent.
    let doc_path = reports.path().join("openapi.json");
    std::fs::write(&doc_path, doc.to_string()).unwrap();
    let check = tokio::process::Command::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python"),
    )
    .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/chat_400s.py"))
    .arg(&har)
    .arg(&doc_path)
    .output()
    .await
    .expect("python runs");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(said.trim_end().ends_with(" 0 failed"), "{said}");
    let counts: Vec<u64> = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        counts.len() == 2 && counts[0] == counts[1] && counts[0] >= 200,
        "cases generated and passed: {counts:?}\n{stdout}"
    );
    eprintln!(
        "schemathesis: {} operations, {} cases generated, all passed (seed {seed})",
        tested.unwrap_or_default(),
        counts[0]
    );
    // Simple mode reaches Q2, two-stage Q3 (random text seldom scores 7).
    assert!(
        ups[0].hits() > 0 && ups[1].hits() > 0,
        "queries reached the upstreams"
    );
}
