//! Memory stays fixed: a million decisions through the service leave the
//! process's resident memory within 5 MiB of where it started. (A test of
//! boundedness, not of speed; it runs alone in its own process.)

use server::service::{NewDecision, StatusService};
use shared::{DEFAULT_RECENT, Tier};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_million_decisions_leave_memory_fixed() {
    let s = StatusService::new(100, 20);
    let query = "Compare B-trees and LSM-trees for a write-heavy database and explain the trade-offs, twice over";
    // Fill the buffer and warm the allocator's size classes first.
    for i in 0..10_000 {
        s.record(NewDecision::new(
            &query[..(i % query.len()).max(1)],
            Tier::ALL[i % 3],
            4.0,
            1.0,
        ))
        .unwrap();
        let _ = s.snapshot(DEFAULT_RECENT);
    }
    let before = rss_kib();
    for i in 0..1_000_000usize {
        s.record(NewDecision::new(
            &query[..(i % query.len()).max(1)],
            Tier::ALL[i % 3],
            (i % 16) as f64 * 0.9,
            1.0,
        ))
        .unwrap();
        if i % 1_000 == 0 {
            let _ = s.snapshot(DEFAULT_RECENT);
        }
    }
    let after = rss_kib();
    let status = s.status(100);
    assert_eq!(status.total_decisions, 1_010_000);
    assert_eq!(status.recent_decisions.len(), 100);
    assert!(
        after <= before + 5 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
