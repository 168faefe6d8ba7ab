use super::*;

fn record(budget: Option<f64>, rpm: Option<u32>, tpm: Option<u64>) -> KeyRecord {
    record_of(
        NewKey {
            name: "k".into(),
            budget_usd: budget,
            rpm,
            tpm,
            ..NewKey::default()
        },
        "osk-test",
    )
    .unwrap()
}

fn keys(policy: Policy, r: KeyRecord) -> (Arc<Keys>, Arc<Entry>) {
    let keys = Keys::new(None, policy).unwrap();
    keys.write(r.clone(), |_, _| Ok(true)).unwrap();
    let entry = keys.registry.load().by_id[&r.id].clone();
    (keys, entry)
}

#[test]
fn the_minute_window_slides_by_the_second() {
    let mut m = Meter::default();
    m.slot(100).1 += 2;
    m.slot(130).1 += 1;
    m.slot(130).2 += 50;
    assert_eq!(m.last_minute(130), (3, 50));
    assert_eq!(m.last_minute(159), (3, 50));
    assert_eq!(
        m.last_minute(160),
        (1, 50),
        "second 100 has left the window"
    );
    assert_eq!(m.reset_secs(130, false), 30, "second 100 leaves at 160");
    assert_eq!(m.reset_secs(130, true), 60);
    // A slot reused a minute later starts from nothing.
    m.slot(190).1 += 1;
    assert_eq!(m.last_minute(190), (1, 0));
}

#[tokio::test]
async fn a_budget_refuses_only_once_spent() {
    let prices = q4_prices(1_000_000.0);
    let (keys, e) = keys(
        Policy {
            prices,
            brownout: Some(0.5),
            brownout_force: false,
            shared: None,
        },
        record(Some(2.0), None, None),
    );
    let usage = Usage {
        prompt_tokens: 1,
        completion_tokens: 0,
    };
    let g = keys.admit(&e, Mode::TwoStage, 0.0).await.unwrap();
    assert_eq!(g.brownout, 0.0);
    assert!(
        keys.charge(&e.record.id, Tier::Q4, usage).is_none(),
        "no store"
    );
    // $1 of $2 spent: brownout begins at half.
    let g = keys.admit(&e, Mode::TwoStage, 0.0).await.unwrap();
    assert_eq!(g.brownout, 0.0);
    assert_eq!(g.threshold(7.0), 7.0);
    let _ = keys.charge(&e.record.id, Tier::Q4, usage);
    // $2 of $2: refused, retry at the period's end.
    let refused = keys.admit(&e, Mode::TwoStage, 0.0).await.unwrap_err();
    assert_eq!(refused.limit, Limit::Budget);
    assert!(refused.retry_after_secs >= 1);
    // Q3 has no price: its calls cost nothing.
    let _ = keys.charge(&e.record.id, Tier::Q3, usage);
    assert_eq!(keys.get(&e.record.id).unwrap().usage.spent_usd, 2.0);
}

#[tokio::test]
async fn brownout_raises_the_threshold_and_forces_q3_only_when_asked() {
    let (keys, e) = keys(
        Policy {
            prices: q4_prices(1_000_000.0),
            brownout: Some(0.5),
            brownout_force: true,
            shared: None,
        },
        record(Some(4.0), None, None),
    );
    let usage = Usage {
        prompt_tokens: 3,
        completion_tokens: 0,
    };
    let _ = keys.charge(&e.record.id, Tier::Q4, usage);
    // $3 of $4: half way from 0.5 to 1.
    let g = keys.admit(&e, Mode::TwoStage, 0.0).await.unwrap();
    assert_eq!(g.brownout, 0.5);
    assert_eq!(g.threshold(7.0), 11.0);
    assert_eq!(g.named_tier(Tier::Q4), Tier::Q3);
    assert_eq!(g.named_tier(Tier::Q2), Tier::Q2);
    let g = Grant { force: false, ..g };
    assert_eq!(g.named_tier(Tier::Q4), Tier::Q4);
}

#[tokio::test]
async fn requests_per_minute_count_only_admitted_requests() {
    let (keys, e) = keys(Policy::default(), record(None, Some(2), None));
    assert!(keys.admit(&e, Mode::Simple, 0.0).await.is_ok());
    assert!(keys.admit(&e, Mode::Simple, 0.0).await.is_ok());
    for _ in 0..3 {
        let r = keys.admit(&e, Mode::Simple, 0.0).await.unwrap_err();
        assert_eq!(r.limit, Limit::Requests);
        assert_eq!(r.headers["x-ratelimit-remaining-requests"], "0");
    }
    assert_eq!(keys.get(&e.record.id).unwrap().usage.requests, 2);
}

#[tokio::test]
async fn changes_are_checked_and_keep_the_meter() {
    let (keys, e) = keys(Policy::default(), record(None, Some(5), None));
    assert!(keys.admit(&e, Mode::Simple, 0.0).await.is_ok());
    for bad in [
        KeyPatch {
            name: Some(" ".into()),
            ..KeyPatch::default()
        },
        KeyPatch {
            budget_usd: Some(Some(f64::NAN)),
            ..KeyPatch::default()
        },
        KeyPatch {
            tpm: Some(Some(0)),
            ..KeyPatch::default()
        },
        KeyPatch {
            expires_at: Some(Some("soon".into())),
            ..KeyPatch::default()
        },
    ] {
        assert!(matches!(
            keys.patch(&e.record.id, bad),
            Err(KeyError::Invalid(_))
        ));
    }
    let v = keys
        .patch(
            &e.record.id,
            KeyPatch {
                rpm: Some(None),
                ..KeyPatch::default()
            },
        )
        .unwrap();
    assert_eq!(v.rpm, None);
    assert_eq!(v.usage.requests, 1);
    let v = keys.revoke(&e.record.id).unwrap();
    assert!(v.revoked_at.is_some());
    assert!(
        keys.find("osk-test").is_none(),
        "a revoked key is not found"
    );
}

#[tokio::test]
async fn a_request_waits_while_reservations_could_pass_the_budget() {
    let (keys, e) = keys(
        Policy {
            prices: q4_prices(1_000_000.0),
            ..Policy::default()
        },
        record(Some(1.0), None, None),
    );
    // 0.6 reserved: another 0.6 could pass the budget, so it waits...
    let first = keys.admit(&e, Mode::TwoStage, 0.6).await.unwrap();
    let second = {
        let (keys, e) = (Arc::clone(&keys), Arc::clone(&e));
        tokio::spawn(async move { keys.admit(&e, Mode::TwoStage, 0.6).await.is_ok() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!second.is_finished(), "it waits for the reservation");
    // ...until the first is settled ($0.5 spent) and its grant dropped.
    let usage = Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    let _ = keys.charge(&e.record.id, Tier::Q4, usage);
    e.meter().spent_usd = 0.5;
    drop(first);
    assert!(second.await.unwrap(), "admitted: 0.5 is under the budget");
    // At the budget: refused at once, waiting for nothing.
    e.meter().spent_usd = 1.0;
    let refused = keys.admit(&e, Mode::TwoStage, 0.6).await.unwrap_err();
    assert_eq!(refused.limit, Limit::Budget);
}

/// Prices with only Q4's, at `per_million` in and out.
fn q4_prices(per_million: f64) -> Prices {
    shared::PerTier([
        None,
        None,
        shared::insight::Price::new(per_million, per_million),
    ])
}
