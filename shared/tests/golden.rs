//! Pins the wire format to the seed's TypeScript interface, key by key: the
//! seed's fields byte for byte, in the seed's order, first; the fields added
//! since (each named in `ADDED`) after them and nowhere else.

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::api::Mode;
use shared::{Instance, RecordedDecision, RoutingDecision, StatusCounters, Tier, build_status};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The keys added beyond the seed: of the status, and of each decision.
const ADDED_STATUS: &[&str] = &[
    "instance",
    "windows",
    "bufferCapacity",
    "decisionsSince",
    "resync",
    "tierMetrics",
    "modelUtilization",
    "routing",
    "cost",
    "persistence",
    "cluster",
    "instances",
    "modeMix",
    "assessor",
];
const ADDED_DECISION: &[&str] = &[
    "seq",
    "mode",
    "decisionTimeMs",
    "tierName",
    "signals",
    "usage",
    "groupId",
    "analysis",
];

/// The JSON with every added key removed, keys otherwise in the order they
/// were written; and a check that the added keys all come after the seed's.
fn seed_view(json: &str) -> String {
    let mut v: Value = serde_json::from_str(json).unwrap();
    fn strip(obj: &mut Value, added: &[&str]) {
        let map = obj.as_object_mut().unwrap();
        let keys: Vec<&String> = map.keys().collect();
        let first_added = keys.iter().position(|k| added.contains(&k.as_str()));
        if let Some(i) = first_added {
            assert!(
                keys[i..].iter().all(|k| added.contains(&k.as_str())),
                "added keys come after every seed key: {keys:?}"
            );
        }
        map.retain(|k, _| !added.contains(&k.as_str()));
    }
    strip(&mut v, ADDED_STATUS);
    for d in v["recentDecisions"].as_array_mut().unwrap() {
        strip(d, ADDED_DECISION);
    }
    serde_json::to_string(&v).unwrap()
}

#[test]
fn zero_state_matches_the_seed() {
    let status = build_status(
        [],
        20,
        10,
        &StatusCounters::default(),
        at("2025-11-08T12:00:00Z"),
    );
    let got = serde_json::to_string(&status).unwrap();
    let want = concat!(
        r#"{"tierUtilization":["#,
        r#"{"tier":"Q2","utilizationPercent":0.0,"activeRequests":0,"totalProcessed":0},"#,
        r#"{"tier":"Q3","utilizationPercent":0.0,"activeRequests":0,"totalProcessed":0},"#,
        r#"{"tier":"Q4","utilizationPercent":0.0,"activeRequests":0,"totalProcessed":0}],"#,
        r#""recentDecisions":[],"#,
        r#""complexityDistribution":{"simple":0,"moderate":0,"complex":0},"#,
        r#""totalDecisions":0,"avgDecisionTimeMs":0.0,"timestamp":"2025-11-08T12:00:00.000Z"}"#
    );
    assert_eq!(seed_view(&got), want);
    // The text itself starts with exactly those bytes.
    assert!(got.starts_with(&want[..want.len() - 1]), "{got}");
}

#[test]
fn populated_status_matches_the_seed() {
    let d = RoutingDecision::new(
        "abc-1".into(),
        "Design a distributed cache",
        Tier::Q4,
        9.5,
        at("2025-11-08T12:00:01.250Z"),
    )
    .unwrap()
    .with_seq(1, Some(Mode::TwoStage));
    let d = RoutingDecision {
        signals: Some(vec![
            shared::Signal::new("demanding verbs", 1.5),
            shared::Signal::new("technical vocabulary", 8.0),
        ]),
        usage: Some(shared::api::Usage {
            prompt_tokens: 12,
            completion_tokens: 30,
        }),
        ..d
    };
    let counters = StatusCounters {
        total_decisions: 1,
        total_processed: [0, 0, 1],
        active_requests: [0, 0, 1],
    };
    let recorded = [RecordedDecision::new(d, 2.5).unwrap()];
    let mut status = build_status(&recorded, 20, 10, &counters, at("2025-11-08T12:00:02Z"));
    status.instance = Some(Instance {
        id: "abc".into(),
        started_at: at("2025-11-08T11:00:00Z"),
        version: "0.1.0".into(),
    });
    status.buffer_capacity = Some(100);
    status.routing = Some(shared::Routing::default());
    let got = serde_json::to_string(&status).unwrap();
    let want = concat!(
        r#"{"tierUtilization":["#,
        r#"{"tier":"Q2","utilizationPercent":0.0,"activeRequests":0,"totalProcessed":0},"#,
        r#"{"tier":"Q3","utilizationPercent":0.0,"activeRequests":0,"totalProcessed":0},"#,
        r#"{"tier":"Q4","utilizationPercent":100.0,"activeRequests":1,"totalProcessed":1}],"#,
        r#""recentDecisions":[{"id":"abc-1","query":"Design a distributed cache","tier":"Q4","#,
        r#""complexity":"COMPLEX","timestamp":"2025-11-08T12:00:01.250Z","score":9.5}],"#,
        r#""complexityDistribution":{"simple":0,"moderate":0,"complex":100},"#,
        r#""totalDecisions":1,"avgDecisionTimeMs":2.5,"timestamp":"2025-11-08T12:00:02.000Z"}"#
    );
    assert_eq!(seed_view(&got), want);
    // The additions, pinned too.
    let added = concat!(
        r#""score":9.5,"seq":1,"mode":"two-stage","decisionTimeMs":2.5,"tierName":"powerful","#,
        r#""signals":[{"name":"demanding verbs","weight":1.5},{"name":"technical vocabulary","weight":8.0}],"#,
        r#""usage":{"promptTokens":12,"completionTokens":30}}"#
    );
    assert!(got.contains(added), "{got}");
    assert!(
        got.ends_with(concat!(
            r#""timestamp":"2025-11-08T12:00:02.000Z","#,
            r#""instance":{"id":"abc","startedAt":"2025-11-08T11:00:00.000Z","version":"0.1.0"},"#,
            r#""windows":{"utilization":20,"distribution":1,"average":1},"bufferCapacity":100,"#,
            r#""routing":{"q4Threshold":7.0,"moderateFrom":3.0,"complexFrom":7.0},"#,
            r#""modeMix":{"simple":0,"twoStage":1,"council":0,"benchmark":0,"unspecified":0}}"#
        )),
        "{got}"
    );
    // and it reads back to the same value
    let back: shared::OrchestratorStatus = serde_json::from_str(&got).unwrap();
    assert_eq!(back, status);
}

/// A panel built today reads an older server's status, which has none of
/// the added fields.
#[test]
fn the_seed_document_alone_still_decodes() {
    let seed = concat!(
        r#"{"tierUtilization":[{"tier":"Q2","utilizationPercent":0.0,"activeRequests":0,"totalProcessed":0}],"#,
        r#""recentDecisions":[{"id":"abc-1","query":"q","tier":"Q4","#,
        r#""complexity":"COMPLEX","timestamp":"2025-11-08T12:00:01.250Z","score":9.5}],"#,
        r#""complexityDistribution":{"simple":0,"moderate":0,"complex":100},"#,
        r#""totalDecisions":1,"avgDecisionTimeMs":2.5,"timestamp":"2025-11-08T12:00:02.000Z"}"#
    );
    let s: shared::OrchestratorStatus = serde_json::from_str(seed).unwrap();
    assert!(s.instance.is_none() && s.windows.is_none() && s.buffer_capacity.is_none());
    let d = &s.recent_decisions[0];
    assert_eq!((d.seq, d.mode, d.decision_time_ms), (0, None, None));
}
