//! Pins the wire format to the seed's TypeScript interface, key by key.

use chrono::{DateTime, Utc};
use shared::{RecordedDecision, RoutingDecision, StatusCounters, Tier, build_status};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
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
    let got = serde_json::to_string_pretty(&status).unwrap();
    let want = r#"{
  "tierUtilization": [
    {
      "tier": "Q2",
      "utilizationPercent": 0.0,
      "activeRequests": 0,
      "totalProcessed": 0
    },
    {
      "tier": "Q3",
      "utilizationPercent": 0.0,
      "activeRequests": 0,
      "totalProcessed": 0
    },
    {
      "tier": "Q4",
      "utilizationPercent": 0.0,
      "activeRequests": 0,
      "totalProcessed": 0
    }
  ],
  "recentDecisions": [],
  "complexityDistribution": {
    "simple": 0,
    "moderate": 0,
    "complex": 0
  },
  "totalDecisions": 0,
  "avgDecisionTimeMs": 0.0,
  "timestamp": "2025-11-08T12:00:00.000Z"
}"#;
    assert_eq!(got, want);
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
    .unwrap();
    let counters = StatusCounters {
        total_decisions: 1,
        total_processed: [0, 0, 1],
        active_requests: [0, 0, 1],
    };
    let recorded = [RecordedDecision::new(d, 2.5).unwrap()];
    let status = build_status(&recorded, 20, 10, &counters, at("2025-11-08T12:00:02Z"));
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
    assert_eq!(got, want);
    // and it reads back to the same value
    let back: shared::OrchestratorStatus = serde_json::from_str(&got).unwrap();
    assert_eq!(back, status);
}
