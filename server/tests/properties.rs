//! Property tests: request decoding and the decision constructor, on
//! arbitrary input, never panic, and whatever they accept obeys the rules.

use proptest::prelude::*;
use server::api::IngestRequest;
use server::extract::decode_json;
use server::routing::{QueryRequest, assess_complexity};
use shared::{Complexity, MAX_QUERY_CHARS, RoutingDecision, Tier};

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::hash_map(
                prop_oneof![
                    Just("query".to_owned()),
                    Just("mode".to_owned()),
                    Just("max_tokens".to_owned()),
                    Just("tier".to_owned()),
                    Just("score".to_owned()),
                    Just("decisionTimeMs".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_is_ok_or_a_client_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = decode_json::<QueryRequest>(&bytes) {
            prop_assert!(e.status().is_client_error());
        }
        if let Err(e) = decode_json::<IngestRequest>(&bytes) {
            prop_assert!(e.status().is_client_error());
        }
    }

    #[test]
    fn decoding_arbitrary_json_is_ok_or_a_client_error(value in any_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match decode_json::<QueryRequest>(&bytes) {
            Ok(req) => {
                prop_assert!(value.is_object());
                prop_assert_eq!(Some(&serde_json::Value::from(req.query.clone())), value.get("query"));
            }
            Err(e) => prop_assert!(e.status().is_client_error()),
        }
        if let Err(e) = decode_json::<IngestRequest>(&bytes) {
            prop_assert!(e.status().is_client_error());
        }
    }

    #[test]
    fn decisions_obey_the_rules_or_name_the_field(query in ".{0,300}", score in any::<f64>(), tier in 0usize..3) {
        match RoutingDecision::new("id".into(), &query, Tier::ALL[tier], score, chrono::DateTime::UNIX_EPOCH) {
            Ok(d) => {
                prop_assert!(query.starts_with(&d.query));
                // Whole when short enough; else cut at a grapheme boundary
                // at or before the 100th character.
                if query.chars().count() <= MAX_QUERY_CHARS {
                    prop_assert_eq!(&d.query, &query);
                } else {
                    prop_assert!(d.query.chars().count() <= MAX_QUERY_CHARS);
                }
                prop_assert!(score.is_finite() && (0.0..=15.0).contains(&score));
                // The documented thresholds, not the function under test.
                let want = if score < 3.0 {
                    Complexity::Simple
                } else if score < 7.0 {
                    Complexity::Moderate
                } else {
                    Complexity::Complex
                };
                prop_assert_eq!(d.complexity, want);
                prop_assert!(query.chars().any(|c| !c.is_whitespace()));
            }
            Err(e) => prop_assert!(["query", "score"].contains(&e.field())),
        }
    }

    #[test]
    fn the_assessor_scores_any_text_within_range(query in ".{0,2000}") {
        let s = assess_complexity(&query);
        prop_assert!(s.is_finite() && (0.0..=15.0).contains(&s));
    }
}
