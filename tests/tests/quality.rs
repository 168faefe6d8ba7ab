//! Routing quality, black-box against the release binary: `server eval` on
//! the shipped labelled data (figures, JSON shape, scores that equal
//! `X-Router-Score`, the plot), its errors on bad data, `server train`
//! reproducing the embedded model, and `--quality-target` in the status
//! and calibrate.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tests::{Client, Server, server_bin};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("datasets/routing-quality/labelled.jsonl")
}

fn server(args: &[&str]) -> Output {
    Command::new(server_bin())
        .args(args)
        .output()
        .expect("the server binary runs")
}

fn eval_json(scorer: &str, extra: &[&str]) -> Value {
    let data = shipped();
    let mut args = vec![
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--scorer",
        scorer,
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = server(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn set<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no set {name} in {r}"))
}

#[test]
fn eval_reports_every_figure_for_both_scorers() {
    for scorer in ["heuristic", "learned"] {
        let r = eval_json(scorer, &[]);
        assert_eq!(r["scorer"], scorer);
        assert_eq!(r["threshold"], 7.0);
        let names: Vec<&str> = r["sets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["mmlu", "gsm8k", "all"]);
        for s in r["sets"].as_array().unwrap() {
            for key in [
                "n",
                "weak",
                "strong",
                "apgr",
                "apgr11",
                "cpt50",
                "cpt80",
                "q4Share",
                "qualityAtThreshold",
            ] {
                assert!(s[key].is_number(), "{key} in {s}");
            }
            assert!((s["random"]["apgr"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        }
        let mmlu = set(&r, "mmlu");
        assert_eq!(mmlu["n"], 9784);
        assert!((mmlu["weak"].as_f64().unwrap() - 0.678).abs() < 5e-4);
        assert!((mmlu["strong"].as_f64().unwrap() - 0.789).abs() < 5e-4);
        assert_eq!(set(&r, "all")["n"], 10569);
    }
    // The figures the issue measured for today's scorer, through the eval.
    let h = eval_json("heuristic", &[]);
    assert!((set(&h, "mmlu")["apgr"].as_f64().unwrap() - 0.556).abs() < 5e-4);
    assert!((set(&h, "gsm8k")["apgr"].as_f64().unwrap() - 0.566).abs() < 5e-4);
    assert_eq!(set(&h, "gsm8k")["q4Share"], 0.0);
    // Cross-validated, the learned scorer beats it on both sets.
    let l = eval_json("learned", &["--held-out"]);
    for name in ["mmlu", "gsm8k"] {
        assert!(
            set(&l, name)["apgr"].as_f64().unwrap() > set(&h, name)["apgr"].as_f64().unwrap(),
            "{name}: {l} vs {h}"
        );
    }
}

#[test]
fn the_text_format_is_a_table_and_the_plot_an_svg() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("q.svg");
    let data = shipped();
    let out = server(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("scorer learned, Q4 threshold 7"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("all ")), "{text}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
    for what in [
        "mmlu (9784 prompts)",
        "gsm8k (785 prompts)",
        "oracle",
        "random",
    ] {
        assert!(svg.contains(what), "{what}");
    }
}

#[tokio::test]
async fn scores_out_are_the_scores_the_router_gives() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("scores.jsonl");
    let data = shipped();
    for scorer in ["learned", "heuristic"] {
        let out = server(&[
            "eval",
            "--data",
            data.to_str().unwrap(),
            "--scorer",
            scorer,
            "--scores-out",
            out_path.to_str().unwrap(),
        ]);
        assert!(out.status.success());
        let scores: Vec<Value> = std::fs::read_to_string(&out_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(scores.len(), 10569);
        let prompts: Vec<Value> = std::fs::read_to_string(&data)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let server = Server::start(&["--in-memory", "--scorer", scorer]);
        let c = Client::new(&server.base);
        // A sample across the file: every 97th prompt.
        for s in scores.iter().step_by(97) {
            assert_eq!(s["file"], data.to_str().unwrap());
            let line = s["line"].as_u64().unwrap() as usize;
            let prompt = &prompts[line - 1]["prompt"];
            let res = c
                .post_response(
                    "/api/query",
                    &json!({"query": prompt, "mode": "two-stage"}).to_string(),
                )
                .await;
            let header: f64 = res.headers()["x-router-score"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(header, s["score"].as_f64().unwrap(), "{scorer} line {line}");
        }
    }
}

fn eval_error(file: &Path) -> String {
    let out = server(&["eval", "--data", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_data_is_one_error_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let ok = r#"{"prompt": "What is 2 + 2?", "weak": 0, "strong": 1}"#;
    let cases: &[(&str, String, &str)] = &[
        ("empty.jsonl", String::new(), "empty.jsonl: no labelled prompts"),
        (
            "notjson.jsonl",
            format!("{ok}\n{{\"prompt\": oops}}\n"),
            "notjson.jsonl:2: not a JSON object",
        ),
        (
            "noweak.jsonl",
            format!("{ok}\n{ok}\n{{\"prompt\": \"x\", \"strong\": 1}}\n"),
            "noweak.jsonl:3: `weak` is missing",
        ),
        (
            "nostrong.jsonl",
            "{\"prompt\": \"x\", \"weak\": 1}\n".into(),
            "nostrong.jsonl:1: `strong` is missing",
        ),
        (
            "nan.jsonl",
            format!("{ok}\n{{\"prompt\": \"x\", \"weak\": \"NaN\", \"strong\": 1}}\n"),
            "nan.jsonl:2: `weak` must be a finite number",
        ),
        (
            "huge.jsonl",
            "{\"prompt\": \"x\", \"weak\": 0, \"strong\": 1e999}\n".into(),
            "huge.jsonl:1: not a JSON object",
        ),
        (
            "nogap.jsonl",
            "{\"prompt\": \"a\", \"weak\": 1, \"strong\": 1}\n{\"prompt\": \"b\", \"weak\": 0.5, \"strong\": 0.5}\n".into(),
            "nogap.jsonl: `strong` equals `weak` on every line",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = eval_error(&path);
        let want = format!("error: {}", dir.path().join(want).display());
        assert!(
            err.starts_with(&want),
            "{name}: {err:?} does not start with {want:?}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let missing = dir.path().join("missing.jsonl");
    assert!(eval_error(&missing).contains("missing.jsonl: cannot read"));
}

#[test]
fn an_operators_own_labelled_traffic_is_evaluated_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traffic.jsonl");
    // No benchmark field: the file's stem names the set; judge scores, not 0/1.
    let rows = [
        ("Summarise this paragraph in one line.", 8.0, 8.5),
        ("Prove that the square root of 2 is irrational.", 4.0, 9.0),
        (
            "Design a lock-free queue and prove it linearizable.",
            3.0,
            8.0,
        ),
        ("What is the capital of France?", 9.0, 9.0),
    ];
    let text: String = rows
        .iter()
        .map(|(p, w, s)| json!({"prompt": p, "weak": w, "strong": s}).to_string() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    let out = server(&[
        "eval",
        "--data",
        path.to_str().unwrap(),
        "--scorer",
        "heuristic",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = r["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["traffic", "all"]);
    assert_eq!(r["sets"][0]["weak"], 6.0);
    assert_eq!(r["sets"][0]["strong"], 8.625);
}

#[test]
fn training_the_shipped_data_gives_the_embedded_model_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.json");
    let data = shipped();
    let run = server(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{run:?}");
    let embedded = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("server/model/learned.json");
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&embedded).unwrap(),
        "server train no longer reproduces server/model/learned.json: retrain and commit it"
    );
}

#[tokio::test]
async fn a_quality_target_sets_the_threshold_and_the_status_reports_it() {
    let server = Server::start(&["--in-memory", "--quality-target", "0.8"]);
    let c = Client::new(&server.base);
    let status = c.status().await;
    let routing = &status["routing"];
    assert_eq!(routing["scorer"], "learned");
    let eq = &routing["expectedQuality"];
    let gap = eq["gapRecovered"].as_f64().unwrap();
    assert!((gap - 0.8).abs() <= 0.02, "{eq}");
    assert_eq!(eq["source"]["prompts"], 10569);
    assert!(
        eq["source"]["name"]
            .as_str()
            .unwrap()
            .starts_with("embedded:labelled.jsonl")
    );
    let t = routing["q4Threshold"].as_f64().unwrap();
    assert!((0.0..=15.0).contains(&t) && t != 7.0, "{routing}");
    // The quality at the threshold is the gap recovered, from weak to strong.
    let (w, s) = (eq["weak"].as_f64().unwrap(), eq["strong"].as_f64().unwrap());
    let q = eq["qualityAtThreshold"].as_f64().unwrap();
    assert!((q - (w + gap * (s - w))).abs() < 1e-9, "{eq}");
    // Calibrate gives the expected gap at each threshold of its curve.
    let (code, cal) = c.get("/api/orchestrator/calibrate").await;
    assert_eq!(code, 200);
    let curve = cal["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 31);
    for (p, q) in curve.iter().zip(eq["curve"].as_array().unwrap()) {
        assert_eq!(p["threshold"], q["threshold"]);
        assert_eq!(p["expectedGapRecovered"], q["gapRecovered"]);
    }
    // At 0 everything goes to Q4: the whole gap.
    assert!((curve[0]["expectedGapRecovered"].as_f64().unwrap() - 1.0).abs() < 1e-9);

    // Set by --q4-threshold instead, the status names the quality there too.
    let server = Server::start(&[
        "--in-memory",
        "--q4-threshold",
        "9",
        "--scorer",
        "heuristic",
    ]);
    let status = Client::new(&server.base).status().await;
    assert_eq!(status["routing"]["q4Threshold"], 9.0);
    assert_eq!(status["routing"]["scorer"], "heuristic");
    let eq = &status["routing"]["expectedQuality"];
    assert_eq!(eq["source"]["name"], "embedded:labelled.jsonl");
    assert!(eq["gapRecovered"].as_f64().unwrap() < 0.1, "{eq}");
}

#[test]
fn a_quality_target_refuses_nonsense_and_a_threshold_beside_it() {
    for bad in [
        vec!["--quality-target", "0"],
        vec!["--quality-target", "1.5"],
        vec!["--quality-target", "NaN"],
        vec!["--quality-target", "0.8", "--q4-threshold", "7"],
    ] {
        let out = server(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{}\n").unwrap();
    let out = server(&[
        "--in-memory",
        "--listen",
        "127.0.0.1:0",
        "--quality-target",
        "0.5",
        "--quality-data",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.jsonl:1: `weak` is missing"));
}
