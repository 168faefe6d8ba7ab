use super::*;
use shared::Complexity;

#[test]
fn ring_buffer_keeps_the_newest_capacity() {
    let s = StatusService::new(5, 3);
    for i in 0..12 {
        s.record(NewDecision::new(&format!("q{i}"), Tier::Q2, 1.0, 0.0))
            .unwrap();
    }
    let st = s.status(100);
    let queries: Vec<&str> = st
        .recent_decisions
        .iter()
        .map(|d| d.query.as_str())
        .collect();
    assert_eq!(queries, ["q11", "q10", "q9", "q8", "q7"]);
    assert_eq!(st.total_decisions, 12);
    assert_eq!(st.tier_utilization[0].total_processed, 12);
}

#[test]
fn redaction_keeps_decisions_apart_without_their_text() {
    let s = StatusService::new(10, 5).with_redaction(true);
    let a = s
        .record(NewDecision::new("my secret plan", Tier::Q2, 1.0, 0.0))
        .unwrap();
    let b = s
        .record(NewDecision::new("my secret plan", Tier::Q3, 4.0, 0.0))
        .unwrap();
    assert!(a.query.starts_with("[redacted #") && b.query.starts_with("[redacted #"));
    assert_ne!(a.query, b.query);
    let body = String::from_utf8(s.snapshot(DEFAULT_RECENT).body.to_vec()).unwrap();
    assert!(!body.contains("secret"));
    assert!(
        s.record(NewDecision::new(" ", Tier::Q2, 1.0, 0.0)).is_err(),
        "still validated"
    );
}

#[test]
fn invalid_input_records_nothing() {
    let s = StatusService::new(5, 3);
    assert!(
        s.record(NewDecision::new("  ", Tier::Q2, 1.0, 0.0))
            .is_err()
    );
    assert!(
        s.record(NewDecision::new("q", Tier::Q2, 15.5, 0.0))
            .is_err()
    );
    assert!(
        s.record(NewDecision::new("q", Tier::Q2, f64::NAN, 0.0))
            .is_err()
    );
    assert!(
        s.record(NewDecision::new("q", Tier::Q2, 1.0, -1.0))
            .is_err()
    );
    let st = s.status(10);
    assert_eq!(st.total_decisions, 0);
    assert!(st.recent_decisions.is_empty());
}

#[test]
fn guard_counts_in_flight_and_releases_on_drop_and_panic() {
    let s = Arc::new(StatusService::new(5, 3));
    let a = s.begin(Tier::Q3);
    let b = s.begin(Tier::Q3);
    assert_eq!(s.active(Tier::Q3), 2);
    drop(a);
    assert_eq!(s.active(Tier::Q3), 1);
    let s2 = Arc::clone(&s);
    let result = std::thread::spawn(move || {
        let _g = s2.begin(Tier::Q4);
        panic!("boom");
    })
    .join();
    assert!(result.is_err());
    assert_eq!(s.active(Tier::Q4), 0);
    drop(b);
    assert_eq!(s.active(Tier::Q3), 0);
}

#[test]
fn snapshot_is_shared_until_something_changes() {
    let s = Arc::new(StatusService::new(100, 20));
    let a = s.snapshot(DEFAULT_RECENT);
    let b = s.snapshot(DEFAULT_RECENT);
    assert!(Arc::ptr_eq(&a, &b));
    s.record(NewDecision::new("hello", Tier::Q3, 4.0, 1.0))
        .unwrap();
    let c = s.snapshot(DEFAULT_RECENT);
    assert!(!Arc::ptr_eq(&a, &c));
    assert_ne!(a.etag, c.etag);
    let parsed: OrchestratorStatus = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(parsed.total_decisions, 1);
    assert_eq!(parsed.recent_decisions[0].complexity, Complexity::Moderate);
    let g = s.begin(Tier::Q2);
    let d = s.snapshot(DEFAULT_RECENT);
    let parsed: OrchestratorStatus = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(parsed.tier_utilization[0].active_requests, 1);
    drop(g);
    assert_ne!(s.snapshot(DEFAULT_RECENT).etag, d.etag);
}

/// Many writers and readers at once: no decision is lost and every status
/// read along the way obeys the rules.
#[test]
fn concurrent_writers_and_readers_lose_nothing() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 2_000;
    let s = Arc::new(StatusService::new(100, 20));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let s = Arc::clone(&s);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut last_total = 0;
                while !done.load(Ordering::Acquire) {
                    let st: OrchestratorStatus = if r % 2 == 0 {
                        s.status(100)
                    } else {
                        serde_json::from_slice(&s.snapshot(DEFAULT_RECENT).body).unwrap()
                    };
                    assert!(st.total_decisions >= last_total, "totals never go back");
                    last_total = st.total_decisions;
                    let processed: u64 =
                        st.tier_utilization.iter().map(|t| t.total_processed).sum();
                    assert_eq!(processed, st.total_decisions);
                    assert!(st.recent_decisions.len() <= 100);
                    if st.total_decisions > 0 {
                        let d = st.complexity_distribution;
                        assert_eq!(d.simple + d.moderate + d.complex, 100);
                        let u: f64 = st
                            .tier_utilization
                            .iter()
                            .map(|t| t.utilization_percent)
                            .sum();
                        assert!((u - 100.0).abs() < 1e-6);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let tier = Tier::ALL[(w + i) % 3];
                    let _g = s.begin(tier);
                    s.record(NewDecision::new(
                        &format!("w{w}-{i}"),
                        tier,
                        (i % 16) as f64 * 0.9,
                        0.5,
                    ))
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    let st = s.status(100);
    assert_eq!(st.total_decisions, (WRITERS * PER_WRITER) as u64);
    let processed: Vec<u64> = st
        .tier_utilization
        .iter()
        .map(|t| t.total_processed)
        .collect();
    let mut want = [0u64; 3];
    for w in 0..WRITERS {
        for i in 0..PER_WRITER {
            want[(w + i) % 3] += 1;
        }
    }
    assert_eq!(processed, want);
    assert!(st.tier_utilization.iter().all(|t| t.active_requests == 0));
    assert_eq!(st.recent_decisions.len(), 100);
}
