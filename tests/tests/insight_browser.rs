//! Routing insight in real headless Chromium against the release binary:
//! decisions with known scores, signals and tokens are posted, and every
//! figure the panel paints (each row's signals, the histogram, the what-if
//! shares at three slider positions, the headline figures) is checked
//! against this file's own arithmetic, as is the calibrate endpoint.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tests::browser::Browser;
use tests::{Client, Server};

/// One posted decision: score, tier, mode (None: reported without one),
/// prompt and completion tokens.
struct Posted {
    score: f64,
    tier: &'static str,
    mode: Option<&'static str>,
    tokens: (u64, u64),
}

const fn p(
    score: f64,
    tier: &'static str,
    mode: Option<&'static str>,
    tokens: (u64, u64),
) -> Posted {
    Posted {
        score,
        tier,
        mode,
        tokens,
    }
}

/// Scores chosen around every threshold, in every bucket's edge.
const POSTED: &[Posted] = &[
    p(0.0, "Q2", Some("simple"), (100_000, 50_000)),
    p(0.0, "Q2", Some("simple"), (80_000, 20_000)),
    p(0.4, "Q3", Some("two-stage"), (120_000, 40_000)),
    p(2.6, "Q3", Some("two-stage"), (90_000, 10_000)),
    p(3.0, "Q3", Some("two-stage"), (50_000, 50_000)),
    p(4.25, "Q3", Some("two-stage"), (60_000, 30_000)),
    p(6.5, "Q3", Some("two-stage"), (200_000, 100_000)),
    p(7.0, "Q4", Some("two-stage"), (300_000, 200_000)),
    p(7.45, "Q4", None, (10_000, 90_000)),
    p(9.99, "Q4", Some("two-stage"), (70_000, 70_000)),
    p(12.0, "Q4", Some("two-stage"), (40_000, 160_000)),
    p(15.0, "Q4", Some("two-stage"), (30_000, 30_000)),
];

/// USD per million tokens, in and out, of Q2, Q3, Q4: `tests::PRICE_ARGS`.
const PRICES: [(f64, f64); 3] = [(0.1, 0.4), (1.0, 2.0), (5.0, 15.0)];

fn tier_index(tier: &str) -> usize {
    ["Q2", "Q3", "Q4"].iter().position(|t| *t == tier).unwrap()
}

fn cost(tokens: (u64, u64), tier: usize) -> f64 {
    (tokens.0 as f64 * PRICES[tier].0 + tokens.1 as f64 * PRICES[tier].1) / 1e6
}

/// Where a decision goes at `threshold`: simple mode and Q2 stay put.
fn what_if_tier(d: &Posted, threshold: f64) -> usize {
    if d.tier == "Q2" || d.mode == Some("simple") {
        tier_index(d.tier)
    } else if d.score >= threshold {
        2
    } else {
        1
    }
}

/// Signals that sum to `score`, two of them, as a router elsewhere sends.
fn signals_of(score: f64) -> Value {
    if score == 0.0 {
        return json!([]);
    }
    json!([
        {"name": "length", "weight": 0.25},
        {"name": "technical vocabulary", "weight": score - 0.25},
    ])
}

async fn post(c: &Client, d: &Posted, i: usize) {
    let (code, body) = c
        .post(
            "/api/orchestrator/decisions",
            &json!({
                "query": format!("decision {i} scoring {}", d.score),
                "tier": d.tier,
                "score": d.score,
                "decisionTimeMs": 0.5,
                "mode": d.mode,
                "signals": signals_of(d.score),
                "usage": {"promptTokens": d.tokens.0, "completionTokens": d.tokens.1},
            }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
}

async fn text(b: &Browser, testid: &str) -> String {
    b.text_of(testid)
        .await
        .unwrap_or_else(|| panic!("{testid} is on the page"))
}

/// Moves the slider as a user's drag does: a new value, then `input`.
async fn slide(b: &Browser, to: f64) {
    b.eval(
        "const s = document.querySelector('[data-testid=whatif-slider]'); \
         s.value = String(arguments[0]); \
         s.dispatchEvent(new Event('input', {bubbles: true}));",
        json!([to]),
    )
    .await;
    b.wait_for(Duration::from_secs(2), || async {
        b.text_of("whatif-threshold").await == Some(format!("{to:.1}"))
    })
    .await
    .unwrap_or_else(|| panic!("the what-if threshold shows {to}"));
}

#[tokio::test]
async fn routing_insight_in_a_real_browser_matches_its_own_arithmetic() {
    let mut args = vec!["--q4-threshold", "7"];
    args.extend(tests::PRICE_ARGS);
    let server = Server::start(&args);
    let c = Client::new(&server.base);
    // Half before the page opens (fetched whole), half after (streamed).
    let half = POSTED.len() / 2;
    for (i, d) in POSTED[..half].iter().enumerate() {
        post(&c, d, i).await;
    }
    let b = Browser::start().await;
    b.goto(&server.base).await;
    b.wait_for(Duration::from_secs(10), || async {
        b.text_of("data-source").await.as_deref() == Some("Live")
    })
    .await
    .expect("the panel goes live");
    for (i, d) in POSTED.iter().enumerate().skip(half) {
        post(&c, d, i).await;
    }
    // The router's own decision, with the assessor's signals.
    let (code, routed) = c
        .post(
            "/api/query",
            &json!({"query": tests::COMPLEX_QUERY, "mode": "two-stage"}),
        )
        .await;
    assert_eq!(code, 503, "no upstream here; the decision is recorded");
    let routed = routed["decision"].clone();
    let n = POSTED.len() + 1;

    // The histogram: every decision in its bucket.
    let mut buckets = [0u64; 16];
    for s in POSTED
        .iter()
        .map(|d| d.score)
        .chain([routed["score"].as_f64().unwrap()])
    {
        buckets[(s as usize).min(15)] += 1;
    }
    let painted = || async {
        b.eval(
            "return [...Array(16).keys()].map(i => Number(document.querySelector(`[data-testid=hist-bar-${i}]`)?.dataset.count ?? -1));",
            json!([]),
        )
        .await
    };
    let all_in = b
        .wait_for(Duration::from_secs(5), || async {
            painted().await == json!(buckets)
        })
        .await;
    assert!(
        all_in.is_some(),
        "histogram {} != {buckets:?}",
        painted().await
    );
    // Bars scale to the fullest bucket.
    let heights = b
        .eval(
            "return [...Array(16).keys()].map(i => Number(document.querySelector(`[data-testid=hist-bar-${i}]`).getAttribute('height')));",
            json!([]),
        )
        .await;
    let top = *buckets.iter().max().unwrap() as f64;
    for (i, h) in heights.as_array().unwrap().iter().enumerate() {
        let want = buckets[i] as f64 / top * 100.0;
        assert!(
            (h.as_f64().unwrap() - want).abs() < 1e-6,
            "bar {i}: {h} vs {want}"
        );
    }
    // Borderline: within 0.5 of 3, 7 or the Q4 threshold (7).
    let scores: Vec<f64> = POSTED
        .iter()
        .map(|d| d.score)
        .chain([routed["score"].as_f64().unwrap()])
        .collect();
    let near = scores
        .iter()
        .filter(|s| [3.0, 7.0].iter().any(|t: &f64| (*s - t).abs() <= 0.5))
        .count();
    assert_eq!(text(&b, "borderline-count").await, near.to_string());

    // Each row's signals, read after opening it, sum to its score.
    let rows = b
        .eval(
            "return [...document.querySelectorAll('[data-testid=decision]')].map(r => r.dataset.id);",
            json!([]),
        )
        .await;
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 10, "the table shows the newest ten");
    assert_eq!(rows[0], routed["id"].as_str().unwrap());
    for id in &rows {
        let read = b
            .eval(
                "const row = document.querySelector(`[data-testid=decision][data-id=\"${arguments[0]}\"]`); \
                 row.querySelector('[data-testid=decision-expand]').click(); \
                 const panel = document.getElementById(`signals-${arguments[0]}`); \
                 const box = panel.querySelector('[data-testid=decision-signals]'); \
                 return {hidden: panel.hidden, score: Number(box.dataset.score), \
                         expanded: row.querySelector('[data-testid=decision-expand]').getAttribute('aria-expanded'), \
                         signals: [...box.querySelectorAll('[data-testid=signal]')].map(s => [s.dataset.name, Number(s.dataset.weight)]), \
                         sum: box.querySelector('[data-testid=signal-sum]').textContent, \
                         rects: box.querySelectorAll('svg rect.seg').length};",
                json!([id]),
            )
            .await;
        assert_eq!(read["hidden"], false, "{id} opened: {read}");
        assert_eq!(read["expanded"], "true");
        let score = read["score"].as_f64().unwrap();
        let signals = read["signals"].as_array().unwrap();
        let sum: f64 = signals.iter().map(|s| s[1].as_f64().unwrap()).sum();
        assert!((sum - score).abs() < 1e-9, "{id}: {read}");
        assert_eq!(read["sum"], format!("{score:.2}"));
        assert_eq!(read["rects"].as_u64().unwrap() as usize, signals.len());
        if id == routed["id"].as_str().unwrap() {
            let want: Vec<Value> = routed["signals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| json!([s["name"], s["weight"]]))
                .collect();
            assert_eq!(
                signals, &want,
                "the assessor's signals, as the API gave them"
            );
            assert!(signals.len() >= 3, "{read}");
        } else if score > 0.0 {
            assert_eq!(signals[0], json!(["length", 0.25]));
        }
    }
    // A second click closes the row again.
    let closed = b
        .eval(
            "document.querySelector('[data-testid=decision] [data-testid=decision-expand]').click(); \
             return document.getElementById(`signals-${arguments[0]}`).hidden;",
            json!([rows[0]]),
        )
        .await;
    assert_eq!(closed, true);

    // The headline figures: Q4's share of all decisions, and the saving.
    let on_q4 = POSTED.iter().filter(|d| d.tier == "Q4").count() + 1;
    assert_eq!(
        text(&b, "headline-q4-share").await,
        format!("{:.1}%", on_q4 as f64 / n as f64 * 100.0)
    );
    let spent: f64 = POSTED
        .iter()
        .map(|d| cost(d.tokens, tier_index(d.tier)))
        .sum();
    let all_q4: f64 = POSTED.iter().map(|d| cost(d.tokens, 2)).sum();
    let saved = all_q4 - spent;
    let percent = saved / all_q4 * 100.0;
    assert_eq!(
        text(&b, "headline-cost-saved").await,
        format!("${saved:.2} ({percent:.1}%)")
    );
    let status = c.status().await;
    let wire = &status["cost"];
    assert!(
        (wire["spentUsd"].as_f64().unwrap() - spent).abs() < 1e-9,
        "{wire}"
    );
    assert!((wire["allOnQ4Usd"].as_f64().unwrap() - all_q4).abs() < 1e-9);
    assert!((wire["savingPercent"].as_f64().unwrap() - percent).abs() < 1e-9);

    // The saving never alone: beside it, the quality expected at the
    // server's threshold on the labelled data.
    let eq = &status["routing"]["expectedQuality"];
    let quality_words = |t: f64, share: f64, gap: f64| {
        format!(
            "at {t:.1}: {:.0} % on Q4, {:.0} % of the quality gap recovered on the labelled data ({}, {} prompts)",
            share * 100.0,
            gap * 100.0,
            eq["source"]["name"].as_str().unwrap(),
            eq["source"]["prompts"]
        )
    };
    assert_eq!(
        text(&b, "headline-quality").await,
        format!(
            "expected quality {}",
            quality_words(
                7.0,
                eq["q4Share"].as_f64().unwrap(),
                eq["gapRecovered"].as_f64().unwrap()
            )
        )
    );

    // The what-if slider at three positions: shares and cost recomputed.
    assert_eq!(text(&b, "server-threshold").await, "7.0");
    let routed_score = routed["score"].as_f64().unwrap();
    for to in [5.0, 10.0, 0.0] {
        slide(&b, to).await;
        let mut counts = [0usize; 3];
        let mut what_if_cost = 0.0;
        for d in POSTED {
            let t = what_if_tier(d, to);
            counts[t] += 1;
            what_if_cost += cost(d.tokens, t);
        }
        counts[if routed_score >= to { 2 } else { 1 }] += 1;
        for (i, tier) in ["Q2", "Q3", "Q4"].iter().enumerate() {
            let testid = format!("whatif-share-{tier}");
            let shown = text(&b, &testid).await;
            assert_eq!(
                shown,
                format!("{:.1}%", counts[i] as f64 / n as f64 * 100.0),
                "{tier} at {to}"
            );
            let count = b
                .eval(
                    "return document.querySelector(`[data-testid=\"${arguments[0]}\"]`).dataset.count;",
                    json!([testid]),
                )
                .await;
            assert_eq!(count, counts[i].to_string());
        }
        // The quality marker moves along the labelled data's curve.
        let point = eq["curve"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["threshold"].as_f64() == Some(to))
            .unwrap();
        let (share, gap) = (
            point["q4Share"].as_f64().unwrap(),
            point["gapRecovered"].as_f64().unwrap(),
        );
        assert_eq!(
            text(&b, "whatif-quality").await,
            quality_words(to, share, gap)
        );
        let marker = b
            .eval(
                "const m = document.querySelector('[data-testid=quality-marker]'); \
                 return [m.getAttribute('cx'), m.getAttribute('cy')];",
                json!([]),
            )
            .await;
        assert_eq!(
            marker,
            json!([
                format!("{:.1}", share * 100.0),
                format!("{:.1}", 100.0 - gap * 100.0)
            ]),
            "marker at {to}"
        );
        // The routed query has no tokens: the cost covers the posted ones.
        let shown = b
            .eval(
                "return Number(document.querySelector('[data-testid=whatif-cost]').dataset.value);",
                json!([]),
            )
            .await;
        assert!(
            (shown.as_f64().unwrap() - what_if_cost).abs() < 1e-9,
            "cost at {to}: {shown} vs {what_if_cost}"
        );
        // The server's real threshold stays marked, in words and as a
        // tick on the slider.
        assert_eq!(text(&b, "server-threshold").await, "7.0");
        let tick = b
            .eval(
                "const s = document.querySelector('[data-testid=whatif-slider]'); \
                 return [s.list && s.list.id, document.querySelector('[data-testid=server-threshold-mark]').value];",
                json!([]),
            )
            .await;
        assert_eq!(tick, json!(["whatif-marks", "7"]));
    }
    // "As routed" never moves with the slider.
    let as_routed = text(&b, "actual-share-Q4").await;
    assert_eq!(
        as_routed,
        format!("{:.1}%", on_q4 as f64 / n as f64 * 100.0)
    );

    // The calibrate endpoint, against the same arithmetic: 25 % on Q4.
    let (code, cal) = c.get("/api/orchestrator/calibrate?q4_share=0.25").await;
    assert_eq!(code, 200, "{cal}");
    assert_eq!(cal["decisions"], n);
    assert_eq!(cal["scoreRouted"], n - 2);
    let q4_at = |t: f64| {
        POSTED.iter().filter(|d| what_if_tier(d, t) == 2).count() + usize::from(routed_score >= t)
    };
    let got = cal["calibration"]["threshold"].as_f64().unwrap();
    let reached = q4_at(got);
    assert_eq!(cal["calibration"]["q4Decisions"], reached);
    assert!(
        (reached as f64 - 0.25 * n as f64).abs() <= 1.0,
        "{reached} of {n} at {got}"
    );
    for point in cal["curve"].as_array().unwrap() {
        let t = point["threshold"].as_f64().unwrap();
        let share = point["q4Share"].as_f64().unwrap();
        assert!(
            (share - q4_at(t) as f64 / n as f64).abs() < 1e-12,
            "{point}"
        );
    }

    // The panel's own calibration (the shared crate's code over the same
    // buffer) gives the server's answer, and moves the what-if there.
    let shown = b
        .eval(
            "const share = document.querySelector('[data-testid=calibrate-share]'); \
             share.value = '25'; \
             document.querySelector('[data-testid=calibrate-run]').click(); \
             return null;",
            json!([]),
        )
        .await;
    assert_eq!(shown, Value::Null);
    let want = if got.fract() == 0.0 {
        format!("{got:.1}")
    } else {
        got.to_string()
    };
    b.wait_for(Duration::from_secs(2), || async {
        b.text_of("whatif-threshold").await.as_deref() == Some(want.as_str())
    })
    .await
    .unwrap_or_else(|| panic!("the what-if moved to {want}"));
    let result = text(&b, "calibrate-result").await;
    assert!(
        result.starts_with(&format!("threshold {want} sends "))
            && result.contains(&format!("({reached} of {n};")),
        "{result}"
    );
    assert_eq!(
        text(&b, "whatif-share-Q4").await,
        format!("{:.1}%", reached as f64 / n as f64 * 100.0)
    );

    // The screenshot of the card for the README, the slider back home.
    b.eval(
        "document.querySelector('[data-testid=whatif-reset]').click(); \
         document.querySelectorAll('[data-testid=decision-expand][aria-expanded=true]').forEach(b => b.click()); \
         document.querySelector('[data-testid=decision] [data-testid=decision-expand]').click(); \
         document.getElementById('decisions-h').scrollIntoView({block: 'start'});",
        json!([]),
    )
    .await;
    slide(&b, 7.0).await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/insight.png");
    b.screenshot(&shot).await;
    if std::env::var_os("ORCH_UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/insight.png");
        std::fs::copy(&shot, docs).unwrap();
    }
    // And the card itself: the quality curve beside the what-if cost.
    b.eval(
        "document.getElementById('insight-h').scrollIntoView({block: 'start'});",
        json!([]),
    )
    .await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/quality.png");
    b.screenshot(&shot).await;
    if std::env::var_os("ORCH_UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/quality.png");
        std::fs::copy(&shot, docs).unwrap();
    }

    // A signal's name from a router elsewhere is text, never markup.
    let hostile = "<img src=x onerror=__pwned=1>";
    let (code, d) = c
        .post(
            "/api/orchestrator/decisions",
            &json!({"query": "hostile signal", "tier": "Q3", "score": 2.0, "decisionTimeMs": 1,
                    "signals": [{"name": hostile, "weight": 2.0}]}),
        )
        .await;
    assert_eq!(code, 201, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    b.wait_for(Duration::from_secs(5), || async {
        b.eval(
            "return !!document.querySelector(`[data-testid=decision][data-id=\"${arguments[0]}\"]`);",
            json!([id]),
        )
        .await
            == true
    })
    .await
    .expect("the hostile decision's row");
    let shown = b
        .eval(
            "const row = document.querySelector(`[data-testid=decision][data-id=\"${arguments[0]}\"]`); \
             row.querySelector('[data-testid=decision-expand]').click(); \
             const box = document.getElementById(`signals-${arguments[0]}`); \
             return [box.querySelector('.signal-name').textContent, box.querySelectorAll('img').length, window.__pwned === undefined];",
            json!([id]),
        )
        .await;
    assert_eq!(shown, json!([hostile, 0, true]));
    b.close().await;
}

/// Tokens arrive with the answer, after the decision was pushed: the panel
/// learns them from the stream's `update` event even when the decision is
/// no longer among the newest ten a status lists, and its what-if cost
/// counts them.
#[tokio::test]
async fn tokens_that_arrive_after_the_decision_reach_the_what_if_cost() {
    use tests::{Behavior, FakeUpstream};
    let up = FakeUpstream::start_model(Behavior::Slow(Duration::from_millis(1_500)), "qwen").await;
    let mut args = vec!["--upstream".to_owned(), format!("balanced={}", up.base_url)];
    args.extend(tests::PRICE_ARGS.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    let c = Client::new(&server.base);
    let b = Browser::on_stream(&server.base).await;
    let query = "What is Python?";
    let answer = {
        let c = c.clone();
        tokio::spawn(async move { c.post("/api/query", &json!({"query": query})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Twelve newer decisions, without tokens: the routed one leaves the
    // status's newest ten before its answer arrives.
    for i in 0..12 {
        let body = json!({"query": format!("filler {i}"), "tier": "Q2", "score": 0, "decisionTimeMs": 0, "mode": "simple"});
        assert_eq!(c.post("/api/orchestrator/decisions", &body).await.0, 201);
    }
    let (code, body) = answer.await.unwrap();
    assert_eq!(code, 200, "{body}");
    let seq = body["decision"]["seq"].as_u64().unwrap();
    let (_, status) = c.get("/api/orchestrator/status").await;
    assert!(
        status["recentDecisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["seq"].as_u64() != Some(seq)),
        "the routed decision is no longer listed"
    );
    // Q3 at 1 / 2 USD per million tokens.
    let words = query.split_whitespace().count() as f64;
    let want = (words * 1.0 + (words + 1.0) * 2.0) / 1e6;
    let cost = || async {
        b.eval(
            "return Number(document.querySelector('[data-testid=whatif-cost]').dataset.value);",
            json!([]),
        )
        .await
        .as_f64()
        .unwrap_or(-1.0)
    };
    let reached = b
        .wait_for(Duration::from_secs(5), || async {
            (cost().await - want).abs() < 1e-12
        })
        .await;
    assert!(reached.is_some(), "what-if cost {} != {want}", cost().await);
    b.close().await;
}
