use super::*;

fn parse(args: &[&str]) -> Result<Config, String> {
    let mut argv = vec!["server"];
    argv.extend_from_slice(args);
    let cfg = Config::try_parse_from(argv).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[test]
fn defaults() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8000");
    assert_eq!(c.buffer_size, 100);
    assert_eq!(c.window, 20);
    assert_eq!(c.upstream_timeout, Duration::from_secs(60));
    assert!(c.specs().is_empty());
    assert_eq!((c.retries, c.circuit_failures), (1, 5));
    assert_eq!(c.circuit_cooldown, Duration::from_secs(30));
    assert!(c.metrics_token.is_none());
    assert_eq!(c.q4_threshold, 7.0);
    assert_eq!(c.prices(), [None; 3]);
    assert_eq!(c.header_read_timeout, Duration::from_secs(10));
    assert!(!c.redact_queries && !c.log_queries);
    assert!(c.ingest_token.is_none() && c.cors_origin.is_none());
    assert_eq!(c.max_connections, 10_000);
    assert_eq!(c.max_streams, 10_000);
    assert_eq!(c.max_exports, 8);
    assert_eq!(c.write_timeout, Duration::from_secs(30));
    assert_eq!(c.max_upstream_body, 8 << 20);
    assert_eq!(c.max_inflight(), PerTier([64; 3]));
    assert_eq!(c.data_dir, std::path::PathBuf::from("./data"));
    assert!(!c.in_memory);
    assert_eq!(c.sync, crate::store::SyncMode::Normal);
    assert_eq!(c.keep_decisions, Duration::from_secs(7 * 86_400));
    assert_eq!(c.keep_rollups, Duration::from_secs(400 * 86_400));
}

#[test]
fn store_flags() {
    let c = parse(&[
        "--data-dir",
        "/tmp/x",
        "--sync",
        "full",
        "--keep-decisions",
        "12h",
        "--keep-rollups",
        "90s",
    ])
    .unwrap();
    assert_eq!(c.sync, crate::store::SyncMode::Full);
    assert_eq!(c.keep_decisions, Duration::from_secs(12 * 3_600));
    assert_eq!(c.keep_rollups, Duration::from_secs(90));
    assert!(parse(&["--in-memory"]).unwrap().in_memory);
}

#[test]
fn limits_in_either_form() {
    let c = parse(&[
        "--max-inflight",
        "8",
        "--max-inflight",
        "powerful=2",
        "--max-upstream-body",
        "512KiB",
        "--max-connections",
        "50",
    ])
    .unwrap();
    assert_eq!(c.max_inflight(), PerTier([8, 8, 2]));
    assert_eq!(c.max_upstream_body, 512 << 10);
    assert_eq!(c.max_connections, 50);
    assert_eq!(
        parse(&["--max-inflight", "Q2=3"]).unwrap().max_inflight(),
        PerTier([3, 64, 64])
    );
    assert_eq!(
        parse(&["--max-upstream-body", "1000"])
            .unwrap()
            .max_upstream_body,
        1000
    );
}

#[test]
fn the_ingest_token_is_trimmed_like_a_presented_one() {
    let c = parse(&["--ingest-token", " s3cret\n"]).unwrap();
    assert_eq!(c.ingest_token().as_deref(), Some("s3cret"));
}

#[test]
fn upstreams_in_either_naming_with_models() {
    let c = parse(&[
        "--upstream",
        "fast=http://127.0.0.1:8081/v1",
        "--upstream",
        "Q4=http://127.0.0.1:8083/v1",
        "--model",
        "powerful=qwen-32b",
    ])
    .unwrap();
    let t = c.specs();
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0].tier, t[0].base_url.as_str()),
        (Tier::Q2, "http://127.0.0.1:8081/v1")
    );
    assert_eq!(t[0].name, "127.0.0.1:8081");
    assert_eq!(t[1].model.as_deref(), Some("qwen-32b"));
    assert!(t.iter().all(|s| s.key.is_none()));
}

#[test]
fn several_named_upstreams_with_their_own_models_and_keys() {
    let c = parse(&[
        "--upstream",
        "fast:gpu1=http://10.0.0.5:8081/v1",
        "--upstream",
        "fast:gpu2=http://10.0.0.6:8081/v1",
        "--upstream",
        "fast=http://user:pw@10.0.0.7:8081/v1",
        "--upstream",
        "fast=http://10.0.0.7:8081/v2",
        "--model",
        "fast=small",
        "--model",
        "fast:gpu2=other",
        "--upstream-key",
        "fast=sk-tier",
        "--upstream-key",
        "fast:gpu1=sk-one",
    ])
    .unwrap();
    let t = c.specs();
    let names: Vec<&str> = t.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["gpu1", "gpu2", "10.0.0.7:8081", "10.0.0.7:8081-2"]);
    let models: Vec<_> = t.iter().map(|s| s.model.as_deref().unwrap()).collect();
    assert_eq!(models, ["small", "other", "small", "small"]);
    let keys: Vec<_> = t.iter().map(|s| s.key.as_deref().unwrap()).collect();
    assert_eq!(keys, ["sk-one", "sk-tier", "sk-tier", "sk-tier"]);
    // Keys never show in a debug print.
    assert!(!format!("{c:?} {t:?}").contains("sk-"));
}

#[test]
fn thresholds_and_prices() {
    let c = parse(&[
        "--q4-threshold",
        "8.5",
        "--price",
        "fast=0.1/0.4",
        "--price",
        "Q4=5/15",
    ])
    .unwrap();
    assert_eq!(c.q4_threshold, 8.5);
    assert_eq!(
        c.prices(),
        [Price::new(0.1, 0.4), None, Price::new(5.0, 15.0)]
    );
    assert_eq!(parse(&["--q4-threshold", "0"]).unwrap().q4_threshold, 0.0);
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        &["--upstream", "medium=http://x"][..],
        &["--upstream", "fast"],
        &["--upstream", "fast="],
        &["--upstream", "fast=ftp://x"],
        &["--upstream", "fast=http://[::1"],
        &["--upstream", "fast=http://a b/v1"],
        &[
            "--upstream",
            "fast:a=http://a",
            "--upstream",
            "Q2:a=http://b",
        ],
        &["--upstream", "fast:bad name=http://a"],
        &["--upstream", "fast:=http://a"],
        &["--upstream", "fast=http://a", "--model", "fast:nope=m"],
        &[
            "--upstream",
            "fast=http://a",
            "--model",
            "fast=m",
            "--model",
            "Q2=n",
        ],
        &["--upstream-key", "fast=has space"],
        &["--upstream-key", "fast="],
        &["--metrics-token", " "],
        &["--retries", "11"],
        &["--q4-threshold", "15.5"],
        &["--q4-threshold", "-1"],
        &["--q4-threshold", "NaN"],
        &["--price", "fast=1"],
        &["--price", "fast=1/x"],
        &["--price", "medium=1/2"],
        &["--price", "fast=-1/2"],
        &["--price", "fast=1/inf"],
        &["--price", "fast=1/2", "--price", "Q2=1/2"],
        &["--circuit-cooldown", "0"],
        &["--sync", "sometimes"],
        &["--keep-decisions", "0s"],
        &["--keep-decisions", "soon"],
        &["--keep-rollups", "-1d"],
        &["--buffer-size", "0"],
        &["--window", "0"],
        &["--buffer-size", "10", "--window", "11"],
        &["--upstream-timeout", "0"],
        &["--upstream-timeout", "NaN"],
        &["--upstream-timeout", "soon"],
        &["--ingest-token", " "],
        &["--cors-origin", "*"],
        &["--cors-origin", "https://a.example/"],
        &["--max-connections", "0"],
        &["--max-inflight", "0"],
        &["--max-inflight", "fast=x"],
        &["--max-inflight", "Q2=1", "--max-inflight", "fast=2"],
        &["--max-inflight", "1", "--max-inflight", "2"],
        &["--max-upstream-body", "0"],
        &["--max-upstream-body", "8 parsecs"],
        &["--max-upstream-body", "99999GiB"],
        &["--redis", "http://10.0.0.5:6379"],
        &["--redis", "not a url"],
        &["--cluster", ""],
        &["--cluster", "a b"],
        &["--cluster", "a}b"],
        &["--redis-backlog", "0"],
    ] {
        assert!(parse(args).is_err(), "{args:?} should be refused");
    }
}

#[test]
fn refusals_are_typed_and_read_as_before() {
    let refused = |args: &[&str]| {
        let mut argv = vec!["server"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv)
            .unwrap()
            .validate()
            .unwrap_err()
    };
    let e = refused(&["--window", "200"]);
    assert!(matches!(
        e,
        ConfigError::Invalid {
            flag: "--window",
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "--window (200) cannot exceed --buffer-size (100)"
    );
    let e = refused(&["--council", "Q2,Q2"]);
    assert_eq!(
        e,
        ConfigError::Repeated {
            flag: "--council",
            what: "tier Q2".into()
        }
    );
    assert_eq!(e.to_string(), "--council names tier Q2 more than once");
    let e = refused(&["--model", "fast:a=m", "--upstream", "fast:b=http://x/v1"]);
    assert!(matches!(
        e,
        ConfigError::NoSuchUpstream {
            flag: "--model",
            ..
        }
    ));
    assert_eq!(e.to_string(), "--model fast:a: no such --upstream");
    let e = refused(&["--keep-prompts", "--in-memory"]);
    assert!(matches!(e, ConfigError::Conflict(_)));
    assert_eq!(
        e.to_string(),
        "--keep-prompts keeps prompts in the store, and --in-memory has none"
    );
}
