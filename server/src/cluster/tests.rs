use super::*;

fn record(id: &str, per_tier: [u64; 3], beat_ms: i64) -> Record {
    Record {
        id: id.into(),
        address: "127.0.0.1:1".into(),
        started_at: "2026-11-29T00:00:00.000Z".into(),
        beat_ms,
        active: [1, 0, 0],
        per_tier,
        tokens: [[0; 3]; 3],
        baseline: None,
        assessor: [0; 3],
        stopped: false,
        quality: None,
    }
}

#[test]
fn a_record_never_goes_back() {
    let mut peers = HashMap::new();
    assert!(take_record(&mut peers, record("a", [5, 0, 0], 10)));
    // An older write (a retry, a republished copy) changes nothing.
    assert!(!take_record(&mut peers, record("a", [4, 0, 0], 20)));
    assert!(!take_record(&mut peers, record("a", [5, 0, 0], 9)));
    assert_eq!(peers["a"].total(), 5);
    assert!(take_record(&mut peers, record("a", [5, 1, 0], 11)));
    assert!(
        take_record(&mut peers, record("a", [5, 1, 0], 12)),
        "a newer heartbeat"
    );
    assert_eq!(peers["a"].beat_ms, 12);
}

#[test]
fn a_newer_start_replaces_higher_totals() {
    let mut peers = HashMap::new();
    assert!(take_record(&mut peers, record("b", [1_005, 0, 0], 10)));
    // B restarted (on its data dir, after a refused write) with fewer.
    let mut restarted = record("b", [5, 0, 0], 20);
    restarted.started_at = "2026-11-29T01:00:00.000Z".into();
    assert!(take_record(&mut peers, restarted.clone()));
    assert_eq!(peers["b"].total(), 5);
    // A late copy from the earlier start changes nothing.
    assert!(!take_record(&mut peers, record("b", [1_005, 0, 0], 30)));
    assert_eq!(peers["b"].started_at, restarted.started_at);
}

#[test]
fn rollup_rows_read_back_as_written() {
    let n = crate::store::rollup_columns().len();
    let values: Vec<f64> = (0..n).map(|i| i as f64 * 1.5).collect();
    let mut pipe = redis::pipe();
    add_rows(&mut pipe, "k", &[(29_000_000, Tier::Q4, values.clone())]);
    let packed = String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned();
    let member = packed
        .split("\r\n")
        .find(|p| p.starts_with("29000000|"))
        .expect("the member is sent");
    assert_eq!(parse_row(member), Some((29_000_000, Tier::Q4, values)));
    assert_eq!(parse_row("1|2|3"), None, "too few values");
    assert_eq!(parse_row("1|7|0"), None, "no such tier");
    let inf = format!("1|0|{}", vec!["inf"; n].join(","));
    assert_eq!(parse_row(&inf), None, "only finite numbers");
}

#[test]
fn keys_of_one_cluster_share_a_hash_tag() {
    let k = Keys::new("blue");
    for key in [
        &k.decisions,
        &k.instances,
        &k.epoch,
        &k.rollups("rollups", "x"),
    ] {
        assert!(key.starts_with("orch:{blue}:"), "{key}");
    }
}

#[tokio::test]
async fn a_full_backlog_counts_what_it_drops() {
    let cluster = Cluster::new(
        Settings {
            url: "redis://127.0.0.1:1".into(),
            name: "t".into(),
            backlog: 3,
            address: "x".into(),
        },
        10,
    )
    .unwrap();
    let d = RoutingDecision::new("i-1".into(), "q", Tier::Q2, 1.0, Utc::now()).unwrap();
    cluster.enqueue((0..5).map(|_| (&d, 0.5)));
    let info = cluster.info("me");
    assert_eq!((info.backlog, info.overflowed), (3, 2));
    // A failed send goes back in front, as far as there is room.
    let batch = cluster.take_batch();
    assert_eq!(batch.len(), 3);
    cluster.enqueue([(&d, 0.5)]);
    cluster.requeue(batch);
    let info = cluster.info("me");
    assert_eq!((info.backlog, info.overflowed), (3, 3));
    assert_eq!(info.view, ClusterView::Local, "not connected yet");
    assert_eq!(
        info.label.as_deref(),
        Some("local view of instance me; Redis not reached yet")
    );
    assert_eq!(info.redis, RedisState::Connecting);
}
