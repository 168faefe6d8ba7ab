//! The history endpoint against a reference the test computes itself, over
//! decisions spread across three days (written to a real store with the
//! times they were made), for ranges on and off the steps' boundaries, at
//! every step, for every series it answers.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone as _, Utc};
use http_body_util::BodyExt;
use serde_json::Value;
use server::service::StatusService;
use server::store::{Rows, Settings, Store, SyncMode};
use server::upstream::Upstreams;
use server::{AppState, app};
use shared::api::{Mode, Usage};
use shared::history::{DECISION_TIME_BOUNDS_MS, Step, bucket, minute_of};
use shared::{Complexity, RoutingDecision, Tier};
use tower::ServiceExt;

/// A decision made at `ts_ms`, and its decision time.
struct Made {
    d: RoutingDecision,
    ms: f64,
}

/// `n` decisions over the three days before `now_ms`, at deterministic
/// pseudo-random times, tiers, scores, modes, decision times and usage.
fn decisions(n: u64, now_ms: i64) -> Vec<Made> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let span = 3 * 86_400_000u64;
    let mut made: Vec<Made> = (0..n)
        .map(|_| {
            let ts = now_ms - (next() % span) as i64;
            let tier = Tier::ALL[(next() % 3) as usize];
            let score = (next() % 151) as f64 / 10.0;
            let mut d = RoutingDecision::new(
                String::new(),
                "spread over days",
                tier,
                score,
                Utc.timestamp_millis_opt(ts).unwrap(),
            )
            .unwrap();
            d.mode = match next() % 3 {
                0 => Some(Mode::TwoStage),
                1 => Some(Mode::Simple),
                _ => None,
            };
            if next() % 2 == 0 {
                d.usage = Some(Usage {
                    prompt_tokens: next() % 500,
                    completion_tokens: next() % 900,
                });
            }
            let ms = [0.0005, 0.004, 0.05, 0.7, 3.0, 40.0, 600.0, 2_000.0][(next() % 8) as usize];
            Made { d, ms }
        })
        .collect();
    made.sort_by_key(|m| m.d.timestamp);
    for (i, m) in made.iter_mut().enumerate() {
        m.d.seq = i as u64 + 1;
        m.d.id = format!("t-{}", i + 1);
    }
    made
}

async fn get(app: &axum::Router, uri: &str) -> Value {
    let res = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{uri}");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn ints(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_equals_a_reference_over_days_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let year = Duration::from_secs(365 * 86_400);
    let settings = Settings {
        dir: dir.path().to_path_buf(),
        sync: SyncMode::Normal,
        keep_decisions: year,
        keep_rollups: year,
        keep_prompts: year,
    };
    let (store, restored) = Store::open(&settings, 100).unwrap();
    let now_ms = Utc::now().timestamp_millis();
    let made = decisions(2_000, now_ms);
    let mut rows = Rows::with_capacity(made.len());
    for m in &made {
        rows.push(&m.d, m.ms);
    }
    store.commit(rows).await.unwrap();
    let service = StatusService::new(100, 20).with_store(store, restored);
    let app = app(AppState::new(service, Upstreams::none()));

    let day = 86_400_000;
    // On the boundaries and off them, short and long.
    let ranges = [
        (now_ms - 3 * day - 1, now_ms + 1),
        (now_ms - 2 * day + 12_345, now_ms - day - 54_321),
        (now_ms - 5 * 3_600_000 + 7_000, now_ms - 3_600_000 + 13_000),
        (
            (now_ms - 2 * day).div_euclid(day) * day,
            (now_ms).div_euclid(day) * day,
        ),
        (now_ms - 90_000 * 60 - 30_000, now_ms - 61_000 * 60 + 59_999),
    ];
    let mut checked = 0;
    for (from, to) in ranges {
        for step in Step::ALL {
            let span = (to - from + 59_999) / 60_000;
            if step.points(span) > shared::history::MAX_POINTS {
                continue;
            }
            let h = get(
                &app,
                &format!(
                    "/api/orchestrator/history?from={from}&to={to}&step={}",
                    step.name()
                ),
            )
            .await;
            let m = step.minutes();
            let times = ints(&h["times"]);
            let first = times[0] as i64 / 60;
            let n = times.len();
            // The points cover [from, to].
            assert!(first * 60_000 <= from, "{}: starts after from", step.name());
            assert!(
                (first + n as i64 * m) * 60_000 >= to,
                "{}: ends before to",
                step.name()
            );
            for (i, t) in times.iter().enumerate() {
                assert_eq!(*t as i64, (first + i as i64 * m) * 60, "aligned");
            }
            let end = first + n as i64 * m;
            for tier in Tier::ALL {
                let s = &h["series"][tier.index()];
                assert_eq!(s["tier"], tier.label());
                let mut want = Reference::new(n);
                for x in made.iter().filter(|x| x.d.tier == tier) {
                    let minute = minute_of(x.d.timestamp.timestamp_millis());
                    if minute < first || minute >= end {
                        continue;
                    }
                    want.add(((minute - first) / m) as usize, x);
                }
                assert_eq!(
                    ints(&s["decisions"]),
                    want.decisions,
                    "{tier} {}",
                    step.name()
                );
                assert_eq!(ints(&s["simple"]), want.complexity[0]);
                assert_eq!(ints(&s["moderate"]), want.complexity[1]);
                assert_eq!(ints(&s["complex"]), want.complexity[2]);
                assert_eq!(ints(&s["twoStage"]), want.two_stage);
                assert_eq!(ints(&s["simpleMode"]), want.simple_mode);
                assert_eq!(ints(&s["promptTokens"]), want.prompt);
                assert_eq!(ints(&s["completionTokens"]), want.completion);
                assert_eq!(ints(&s["decisionTimeBuckets"]), want.dt_buckets);
                for (got, want) in floats(&s["decisionTimeMsSum"]).iter().zip(&want.dt_sum) {
                    assert!((got - want).abs() < 1e-6, "{tier}: {got} vs {want}");
                }
                // No upstream calls were made.
                assert!(ints(&s["upstreamCalls"]).iter().all(|c| *c == 0));
                assert_eq!(ints(&s["upstreamLatencyBuckets"]).iter().sum::<u64>(), 0);
                checked += want.decisions.iter().sum::<u64>();
            }
        }
    }
    assert!(checked > 2_000, "the ranges held decisions ({checked})");
}

/// Per point of one tier, what the history should say.
struct Reference {
    decisions: Vec<u64>,
    complexity: [Vec<u64>; 3],
    two_stage: Vec<u64>,
    simple_mode: Vec<u64>,
    prompt: Vec<u64>,
    completion: Vec<u64>,
    dt_sum: Vec<f64>,
    dt_buckets: Vec<u64>,
}

impl Reference {
    fn new(n: usize) -> Self {
        Reference {
            decisions: vec![0; n],
            complexity: [vec![0; n], vec![0; n], vec![0; n]],
            two_stage: vec![0; n],
            simple_mode: vec![0; n],
            prompt: vec![0; n],
            completion: vec![0; n],
            dt_sum: vec![0.0; n],
            dt_buckets: vec![0; DECISION_TIME_BOUNDS_MS.len() + 1],
        }
    }

    fn add(&mut self, i: usize, x: &Made) {
        self.decisions[i] += 1;
        // The documented thresholds, not the function under test.
        let c = match x.d.score {
            s if s < 3.0 => 0,
            s if s < 7.0 => 1,
            _ => 2,
        };
        assert_eq!(
            x.d.complexity,
            [
                Complexity::Simple,
                Complexity::Moderate,
                Complexity::Complex
            ][c]
        );
        self.complexity[c][i] += 1;
        match x.d.mode {
            Some(Mode::TwoStage) => self.two_stage[i] += 1,
            Some(Mode::Simple) => self.simple_mode[i] += 1,
            _ => {}
        }
        if let Some(u) = x.d.usage {
            self.prompt[i] += u.prompt_tokens;
            self.completion[i] += u.completion_tokens;
        }
        self.dt_sum[i] += x.ms;
        self.dt_buckets[bucket(&DECISION_TIME_BOUNDS_MS, x.ms)] += 1;
    }
}
