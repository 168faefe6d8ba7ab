//! Micro-benchmarks of the status service: recording a decision (alone and
//! with 8 threads contending), building a status, serialising it, and
//! serving the shared snapshot.
//!
//! `cargo bench -p server --bench service`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use server::service::StatusService;
use shared::{DEFAULT_RECENT, Tier};

const QUERY: &str =
    "Compare B-trees and LSM-trees for a write-heavy database and explain the trade-offs";

fn full_service() -> StatusService {
    let s = StatusService::new(100, 20);
    for i in 0..100 {
        s.record(QUERY, Tier::ALL[i % 3], (i % 16) as f64 * 0.9, 0.5)
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
            black_box(s.record(QUERY, Tier::ALL[i % 3], 4.5, 0.5).unwrap());
        })
    });
    // Per-operation cost with 8 threads recording at once: wall time for all
    // of them divided by the operations they did together.
    for threads in [2usize, 8] {
        let s = Arc::new(full_service());
        g.bench_function(format!("{threads} threads"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads as u64);
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for t in 0..threads {
                        let s = Arc::clone(&s);
                        scope.spawn(move || {
                            for i in 0..per_thread {
                                black_box(
                                    s.record(QUERY, Tier::ALL[(t + i as usize) % 3], 4.5, 0.5)
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
            s.record(QUERY, Tier::ALL[i % 3], 4.5, 0.5).unwrap();
            black_box(s.snapshot(DEFAULT_RECENT))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = record, snapshot
}
criterion_main!(benches);
