//! Micro-benchmarks of the status service: recording a decision with the
//! metrics on (alone and with 8 threads contending), building a status,
//! serialising it, serving the shared snapshot, and a `/metrics` scrape of
//! 3 tiers x 4 upstreams.
//!
//! `cargo bench -p server --bench service`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use server::service::{NewDecision, StatusService};
use server::upstream::Ended;
use server::upstream::{Settings, UpstreamSpec, Upstreams};
use shared::api::Usage;
use shared::metrics::Outcome;
use shared::{DEFAULT_RECENT, Tier};

const QUERY: &str =
    "Compare B-trees and LSM-trees for a write-heavy database and explain the trade-offs";

/// 3 tiers x 4 upstreams, each with calls of every outcome recorded, so
/// every series of a scrape has data.
fn upstreams() -> Upstreams {
    let specs = Tier::ALL
        .iter()
        .flat_map(|&tier| {
            (1..=4).map(move |n| UpstreamSpec {
                tier,
                name: format!("{}-{n}", tier.internal_name()),
                base_url: format!("http://10.0.0.{n}:8080/v1"),
                model: Some(format!("model-{n}")),
                key: None,
            })
        })
        .collect();
    let up = Upstreams::new(specs, Settings::with_timeout(Duration::from_secs(60)));
    let t = up.health();
    for (i, u) in t.upstreams().iter().enumerate() {
        for k in 0..200 {
            let outcome = Outcome::ALL[(i + k) % Outcome::ALL.len()];
            let admission = u.admit(t, Instant::now());
            let Some(admission) = admission else { break };
            t.begin(u, admission, k % 7 == 0, false).finish(
                outcome,
                Ended {
                    model: Some(format!("model-{}", k % 3)),
                    usage: Some(Usage {
                        prompt_tokens: 40,
                        completion_tokens: 200,
                    }),
                    error: Some("answered HTTP 503".into()),
                },
            );
        }
    }
    up
}

fn full_service() -> StatusService {
    let up = upstreams();
    filled(
        StatusService::new(100, 20)
            .with_telemetry(Arc::clone(up.telemetry()), Arc::clone(up.health())),
    )
}

/// `s` with its buffer full.
fn filled(s: StatusService) -> StatusService {
    for i in 0..100 {
        s.record(NewDecision::new(
            QUERY,
            Tier::ALL[i % 3],
            (i % 16) as f64 * 0.9,
            0.5,
        ))
        .unwrap();
    }
    s
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    let s = full_service();
    let mut i = 0usize;
    g.bench_function("1 thread", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                s.record(NewDecision::new(QUERY, Tier::ALL[i % 3], 4.5, 0.5))
                    .unwrap(),
            );
        })
    });
    // Per-operation cost with 8 threads recording at once: wall time for all
    // of them divided by the operations they did together.
    // The same without metrics, to show what counting costs under
    // contention.
    for (threads, metrics) in [(2usize, true), (8, true), (8, false)] {
        let s = Arc::new(if metrics {
            full_service()
        } else {
            filled(StatusService::new(100, 20))
        });
        let name = if metrics { "" } else { ", metrics off" };
        g.bench_function(format!("{threads} threads{name}"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads as u64);
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for t in 0..threads {
                        let s = Arc::clone(&s);
                        scope.spawn(move || {
                            for i in 0..per_thread {
                                black_box(
                                    s.record(NewDecision::new(
                                        QUERY,
                                        Tier::ALL[(t + i as usize) % 3],
                                        4.5,
                                        0.5,
                                    ))
                                    .unwrap(),
                                );
                            }
                        });
                    }
                });
                let elapsed = start.elapsed();
                // Scale to exactly `iters` operations.
                Duration::from_secs_f64(
                    elapsed.as_secs_f64() * iters as f64 / (per_thread * threads as u64) as f64,
                )
            })
        });
    }
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("status");
    let s = full_service();
    g.bench_function("build (100 buffered)", |b| {
        b.iter(|| black_box(s.status(DEFAULT_RECENT)))
    });
    let status = s.status(DEFAULT_RECENT);
    g.bench_function("serialise", |b| {
        b.iter(|| black_box(serde_json::to_vec(&status).unwrap()))
    });
    g.bench_function("snapshot, unchanged (shared bytes)", |b| {
        b.iter(|| black_box(s.snapshot(DEFAULT_RECENT)))
    });
    let mut i = 0usize;
    g.bench_function("snapshot after a record (rebuild)", |b| {
        b.iter(|| {
            i += 1;
            s.record(NewDecision::new(QUERY, Tier::ALL[i % 3], 4.5, 0.5))
                .unwrap();
            black_box(s.snapshot(DEFAULT_RECENT))
        })
    });
    g.finish();
}

fn scrape(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    let up = upstreams();
    let t = Arc::clone(up.telemetry());
    let health = Arc::clone(up.health());
    let service = StatusService::new(100, 20);
    let state = server::AppState::new(service, up);
    for i in 0..300 {
        state
            .service
            .record(NewDecision::new(
                QUERY,
                Tier::ALL[i % 3],
                (i % 16) as f64 * 0.9,
                0.5,
            ))
            .unwrap();
    }
    g.bench_function("encode (3 tiers x 4 upstreams)", |b| {
        b.iter(|| black_box(t.encode()))
    });
    // The whole request through the router, as a scraper sees it.
    let app = server::app(state);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    g.bench_function("GET /metrics (3 tiers x 4 upstreams)", |b| {
        b.iter(|| {
            rt.block_on(async {
                use http_body_util::BodyExt as _;
                use tower::ServiceExt as _;
                let req = axum::http::Request::get("/metrics")
                    .body(axum::body::Body::empty())
                    .unwrap();
                let res = app.clone().oneshot(req).await.unwrap();
                black_box(res.into_body().collect().await.unwrap().to_bytes())
            })
        })
    });
    g.bench_function("tierMetrics + modelUtilization", |b| {
        b.iter(|| black_box((health.tier_metrics(), health.model_utilization())))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = record, snapshot, scrape
}
criterion_main!(benches);
