//! The deploy/ files against a real Prometheus (Debian's package, started
//! here on a free port with a temp dir) scraping the release binary: every
//! query of the Grafana dashboard and every alert expression returns data
//! after traffic; promtool checks the rules, their unit tests and the scrape
//! config; the dashboard's structure holds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{Behavior, Client, FakeUpstream, Redis, Server, eventually};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// A Prometheus process, stopped when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: orchestrator\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['{target}']\n",
            rules = deploy("prometheus/alerts.yml").display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("log")).unwrap(),
            ))
            .spawn()
            .expect("prometheus is installed (scripts/install.sh --test)");
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The result vector of an instant query (asserting it ran).
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Vec<Value> {
        let res = self.api(http, "/api/v1/query", &[("query", expr)]).await;
        assert_eq!(res["status"], "success", "{expr}: {res}");
        res["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// GET an API path of Prometheus with query parameters, as JSON.
    async fn api(&self, http: &reqwest::Client, path: &str, params: &[(&str, &str)]) -> Value {
        http.get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is installed (scripts/install.sh --test)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each part of an alert expression joined by `and on()`, without the
/// bound it is compared against: the signals that must have data.
fn signals(expr: &str) -> Vec<String> {
    // Prometheus writes `on()` back as `on ()`.
    expr.split(" and on")
        .map(|part| {
            let part = part.trim();
            let part = part.strip_prefix("()").unwrap_or(part).trim();
            let cut = ["==", ">", "<"]
                .iter()
                .filter_map(|op| part.rfind(op))
                .max()
                .expect("each part ends in a comparison");
            let bound = part[cut..].trim_start_matches(['=', '>', '<']).trim();
            assert!(
                bound.parse::<f64>().is_ok(),
                "{part}: the bound is a number"
            );
            part[..cut].trim().to_owned()
        })
        .collect()
}

/// The alert names in deploy/prometheus/alerts.yml, in order.
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(deploy("prometheus/alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: ").map(str::to_owned))
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/orchestrator-status.json")).unwrap(),
    )
    .unwrap()
}

/// Grafana's own interval variables, as Grafana would fill them in.
fn as_grafana_would(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
}

#[test]
fn promtool_accepts_the_rules_their_tests_and_the_scrape_config() {
    let rules = deploy("prometheus/alerts.yml");
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    promtool(&[
        "test",
        "rules",
        deploy("prometheus/alerts_test.yml").to_str().unwrap(),
    ]);
    promtool(&[
        "check",
        "config",
        deploy("prometheus/prometheus.yml").to_str().unwrap(),
    ]);
    assert_eq!(
        alert_names(),
        [
            "OrchestratorUpstreamErrorRateHigh",
            "OrchestratorCircuitOpen",
            "OrchestratorLatencyP95High",
            "OrchestratorNoDecisions",
            "OrchestratorQ4ShareHigh",
            "OrchestratorRedisUnreachable",
            "OrchestratorRedisBacklogOverflow",
            "OrchestratorFastTierQualityLow"
        ]
    );
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "orchestrator-status");
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 7);
    let mut ids = Vec::new();
    let mut cells = std::collections::HashSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("a numeric id");
        assert!(!ids.contains(&id), "id {id} twice");
        ids.push(id);
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "panel {id}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "panel {id} overlaps another at {cx},{cy}"
                );
            }
        }
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            p["datasource"]["uid"].is_string(),
            "panel {id} has a data source"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {id} has a query");
        let mut refs = std::collections::HashSet::new();
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
            assert!(refs.insert(t["refId"].as_str().unwrap().to_owned()));
        }
    }
    let all = serde_json::to_string(&d).unwrap();
    for wanted in [
        "orch_decisions_total{tier=\\\"Q4\\\"}",
        "orch_upstream_latency_seconds_bucket",
        "orch_upstream_tokens_total",
        "orch_upstream_requests_total",
        "orch_upstream_circuit_state",
        "orch_tier_in_flight",
        "orch_upstream_ttft_seconds_bucket",
        "orch_assessor_fallbacks_total",
        "orch_shadow_verdicts_total{verdict=~\\\"better|tie\\\"}",
        "orch_streams_abandoned_total",
    ] {
        assert!(all.contains(wanted), "the dashboard shows {wanted}");
    }
}

#[tokio::test]
async fn a_real_prometheus_answers_every_dashboard_query_and_alert_expression() {
    let ok = FakeUpstream::start_model(Behavior::Slow(Duration::from_millis(20)), "small").await;
    let failing = FakeUpstream::start(Behavior::Status(503, None)).await;
    // Q4 answers, and judges shadow pairs (a tie, for a query that names
    // no verdict).
    let big = FakeUpstream::start_model(Behavior::Judge, "large").await;
    // In a cluster (of one, on a real Redis), so the orch_cluster_* series
    // of the dashboard and the alerts have data too.
    let redis = Redis::start();
    let server = Server::start(&[
        "--redis",
        &redis.url(),
        "--upstream",
        &format!("fast:ok={}", ok.base_url),
        "--upstream",
        &format!("fast:failing={}", failing.base_url),
        "--upstream",
        &format!("balanced:ok={}", ok.base_url),
        "--upstream",
        &format!("powerful:big={}", big.base_url),
        "--circuit-failures",
        "2",
        "--shadow-rate",
        "1",
    ]);
    let prometheus = Prometheus::start(&server.addr.to_string());
    let http = reqwest::Client::new();
    let up = eventually(Duration::from_secs(30), || async {
        let r = http
            .get(format!("{}/api/v1/query", prometheus.base))
            .query(&[("query", "up{job=\"orchestrator\"} == 1")])
            .send()
            .await;
        match r {
            Ok(r) => r.json::<Value>().await.is_ok_and(|v| {
                v["data"]["result"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            }),
            Err(_) => false,
        }
    })
    .await;
    assert!(up, "Prometheus scrapes the server");

    // Traffic across several scrapes, so every rate has two samples.
    let c = Client::new(&server.base);
    let hard = json!({"query": tests::COMPLEX_QUERY, "mode": "two-stage"});
    for _ in 0..8 {
        for body in [
            json!({"query": "What is Python?", "mode": "simple"}),
            json!({"query": "What is Python?", "mode": "simple"}),
            json!({"query": "What is Python?"}),
            hard.clone(),
        ] {
            let (code, r) = c.post("/api/query", &body).await;
            assert_eq!(code, 200, "{r}");
        }
        // A streamed answer through the front door: time to first token.
        let streamed = c
            .post_response(
                "/v1/chat/completions",
                &json!({"model": "balanced", "stream": true,
                        "messages": [{"role": "user", "content": "What is Python?"}]})
                .to_string(),
            )
            .await;
        assert_eq!(streamed.status(), 200);
        let events = streamed.text().await.unwrap();
        assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    for p in dashboard()["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = as_grafana_would(t["expr"].as_str().unwrap());
            let result = prometheus.query(&http, &expr).await;
            let finite = result.iter().any(|r| {
                r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            });
            assert!(finite, "{}: {expr} gave {result:?}", p["title"]);
        }
    }
    // The alerts as Prometheus loaded them from deploy/prometheus/alerts.yml.
    let rules = prometheus.api(&http, "/api/v1/rules", &[]).await;
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = loaded.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, alert_names());
    for rule in &loaded {
        let (name, expr) = (&rule["name"], rule["query"].as_str().unwrap());
        // The whole expression runs (whether it fires depends on the bound).
        prometheus.query(&http, expr).await;
        for signal in signals(expr) {
            let result = prometheus.query(&http, &signal).await;
            assert!(!result.is_empty(), "{name}: {signal} has no data");
        }
        // Prometheus evaluates it without error.
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // The circuit of `failing` opened: that alert fires for real.
    let circuit = loaded
        .iter()
        .find(|r| r["name"] == "OrchestratorCircuitOpen")
        .unwrap();
    let open = prometheus
        .query(&http, circuit["query"].as_str().unwrap())
        .await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["metric"]["upstream"], "failing");
}
