use super::*;
use crate::PerTier;
use crate::decision::at;
use proptest::prelude::*;

fn decision(tier: Tier, score: f64, mode: Option<Mode>) -> RoutingDecision {
    RoutingDecision::new("x".into(), "q", tier, score, at())
        .unwrap()
        .with_seq(1, mode)
}

fn routed(scores: &[f64]) -> Vec<RoutingDecision> {
    scores
        .iter()
        .map(|&s| {
            decision(
                two_stage_tier(s, DEFAULT_Q4_THRESHOLD),
                s,
                Some(Mode::TwoStage),
            )
        })
        .collect()
}

#[test]
fn histogram_puts_each_score_in_its_whole_point_bucket() {
    let ds = routed(&[0.0, 0.99, 1.0, 6.5, 7.0, 14.99, 15.0]);
    let h = histogram(&ds);
    assert_eq!(h.iter().sum::<u64>(), 7);
    assert_eq!(h[0], 2);
    assert_eq!(h[1], 1);
    assert_eq!(h[6], 1);
    assert_eq!(h[7], 1);
    assert_eq!(h[14], 1);
    assert_eq!(h[15], 1);
}

#[test]
fn borderline_counts_each_decision_once_within_half_a_point() {
    let ds = routed(&[2.5, 3.5, 3.51, 6.6, 7.0, 10.0, 0.0]);
    let t = Routing::default().thresholds();
    // 2.5 and 3.5 (edges included) near 3; 6.6 and 7.0 near 7 (counted
    // once though 7 is two thresholds).
    assert_eq!(borderline(&ds, &t), 4);
    assert_eq!(borderline(&ds, &Routing::new(10.0).thresholds()), 5);
}

#[test]
fn what_if_moves_only_score_routed_decisions() {
    let mut ds = routed(&[2.0, 5.0, 8.0, 12.0]);
    ds.push(decision(Tier::Q2, 0.0, Some(Mode::Simple)));
    ds.push(decision(Tier::Q2, 9.0, None)); // elsewhere, to Q2: stays
    ds.push(decision(Tier::Q4, 6.0, None)); // elsewhere, to Q4: re-routed
    let p = Population::new(&ds);
    assert_eq!(p.len(), 7);
    assert_eq!(p.score_routed(), 5);
    let none = PerTier([None; 3]);
    assert_eq!(p.what_if(7.0, &none).counts, [2, 3, 2]);
    assert_eq!(p.what_if(0.0, &none).counts, [2, 0, 5]);
    assert_eq!(p.what_if(15.0, &none).counts, [2, 5, 0]);
    assert_eq!(p.what_if(6.0, &none).counts, [2, 2, 3]);
    // Where they really went: the Q4 decision at 6.0 stays on Q4.
    assert_eq!(p.actual(7.0, &none).counts, [2, 2, 3]);
    let w = p.what_if(6.0, &none);
    assert!((w.percent(Tier::Q4) - 300.0 / 7.0).abs() < 1e-9);
}

#[test]
fn what_if_cost_prices_each_decision_at_its_new_tier() {
    let mut ds = routed(&[2.0, 8.0]);
    let usage = Usage {
        prompt_tokens: 1_000_000,
        completion_tokens: 500_000,
    };
    for d in &mut ds {
        d.usage = Some(usage);
    }
    let prices: Prices = PerTier([
        Price::new(0.1, 0.2),
        Price::new(1.0, 2.0),
        Price::new(10.0, 20.0),
    ]);
    let p = Population::new(&ds);
    // 7.0: one on Q3 (1 + 1 = 2), one on Q4 (10 + 10 = 20).
    let w = p.what_if(7.0, &prices);
    assert_eq!(w.cost_usd, Some(22.0));
    assert_eq!(w.all_on_q4_usd, Some(40.0));
    assert_eq!(p.what_if(0.0, &prices).cost_usd, Some(40.0));
    // A tier without a price makes the cost unknown, not zero.
    let partial: Prices = PerTier([None, None, Price::new(10.0, 20.0)]);
    assert_eq!(p.what_if(7.0, &partial).cost_usd, None);
    assert_eq!(p.what_if(0.0, &partial).cost_usd, Some(40.0));
}

#[test]
fn cost_summary_prices_tokens_and_the_all_on_q4_alternative() {
    let mut tokens = [Tokens::default(); 3];
    tokens[0].add(&Usage {
        prompt_tokens: 2_000_000,
        completion_tokens: 1_000_000,
    });
    tokens[2].add(&Usage {
        prompt_tokens: 1_000_000,
        completion_tokens: 0,
    });
    let prices: Prices = PerTier([Price::new(0.5, 1.0), None, Price::new(5.0, 15.0)]);
    // Single-tier answers: the baseline is their own tokens.
    let mut baseline = tokens[0];
    baseline.merge(&tokens[2]);
    let c = cost_summary(&tokens, &baseline, &Tokens::default(), &prices);
    assert_eq!(c.tiers[0].spent_usd, Some(2.0));
    assert_eq!(c.tiers[1].spent_usd, None);
    assert_eq!(c.spent_usd, Some(7.0)); // Q3 has no tokens, so no price needed
    assert_eq!(c.all_on_q4_usd, Some(10.0 + 15.0 + 5.0));
    assert_eq!(c.saved_usd, Some(23.0));
    assert!((c.saving_percent.unwrap() - 23.0 / 30.0 * 100.0).abs() < 1e-9);
    // Without prices: token counts only.
    let bare = cost_summary(&tokens, &baseline, &Tokens::default(), &PerTier([None; 3]));
    assert_eq!(bare.tiers[0].prompt_tokens, 2_000_000);
    assert!(bare.spent_usd.is_none() && bare.all_on_q4_usd.is_none());
    assert!(bare.saving_percent.is_none());
    // Nothing spent: a 0 % saving, not NaN.
    let none = cost_summary(
        &[Tokens::default(); 3],
        &Tokens::default(),
        &Tokens::default(),
        &prices,
    );
    assert_eq!(none.saving_percent, Some(0.0));
    assert!(none.assessor.is_none());
    // The model assessor's tokens, at Q2's price, are spent too.
    let mut asked = Tokens::default();
    asked.add(&Usage {
        prompt_tokens: 1_000_000,
        completion_tokens: 0,
    });
    let with = cost_summary(&tokens, &baseline, &asked, &prices);
    assert_eq!(with.assessor.as_ref().unwrap().spent_usd, Some(0.5));
    assert_eq!(with.spent_usd, Some(7.5));
    assert_eq!(with.all_on_q4_usd, c.all_on_q4_usd);
}

#[test]
fn a_group_query_is_weighed_against_one_q4_answer() {
    // One benchmark query: each tier answered the same 1M prompt
    // tokens with 1M completion tokens, at 0.1, 1 and 10 per 1M.
    let u = Usage {
        prompt_tokens: 1_000_000,
        completion_tokens: 1_000_000,
    };
    let mut tokens = [Tokens::default(); 3];
    for t in &mut tokens {
        t.add(&u);
    }
    let members = [(Tier::Q2, u), (Tier::Q3, u), (Tier::Q4, u)];
    let one = group_baseline(&members).unwrap();
    assert_eq!(one, u, "its Q4 member's tokens");
    let mut baseline = Tokens::default();
    baseline.add(&one);
    let prices: Prices = PerTier([
        Price::new(0.1, 0.1),
        Price::new(1.0, 1.0),
        Price::new(10.0, 10.0),
    ]);
    let c = cost_summary(&tokens, &baseline, &Tokens::default(), &prices);
    assert!((c.spent_usd.unwrap() - 22.2).abs() < 1e-9);
    assert!((c.all_on_q4_usd.unwrap() - 20.0).abs() < 1e-9);
    assert!(
        c.saved_usd.unwrap() < 0.0,
        "it spent more than one Q4 answer"
    );
    assert!((c.saving_percent.unwrap() + 11.0).abs() < 1e-9);
    // Without a Q4 member: the members' mean.
    let small = Usage {
        prompt_tokens: 10,
        completion_tokens: 30,
    };
    let mean = group_baseline(&[(Tier::Q2, u), (Tier::Q3, small)]).unwrap();
    assert_eq!(
        (mean.prompt_tokens, mean.completion_tokens),
        (500_005, 500_015)
    );
    assert_eq!(group_baseline(&[]), None);
}

#[test]
fn signals_and_usage_are_validated() {
    let ok = vec![
        Signal::new("length", 1.0),
        Signal::new("x".repeat(32).as_str(), -2.0),
    ];
    assert!(validate_signals(&ok).is_ok());
    let many = vec![Signal::new("s", 0.1); 17];
    assert_eq!(
        validate_signals(&many),
        Err(InsightError::TooManySignals(17))
    );
    for (bad, at) in [
        (vec![Signal::new("", 1.0)], 0),
        (
            vec![Signal::new("ok", 1.0), Signal::new(" \u{200B}", 1.0)],
            1,
        ),
        (vec![Signal::new(&"é".repeat(33), 1.0)], 0),
    ] {
        assert_eq!(validate_signals(&bad), Err(InsightError::SignalName(at)));
    }
    for w in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e6 + 1.0,
        -1e300,
    ] {
        let e = validate_signals(&[Signal::new("w", w)]).unwrap_err();
        assert_eq!(e, InsightError::SignalWeight(0));
        assert_eq!(e.field(), "signals");
    }
    let huge = Usage {
        prompt_tokens: MAX_DECISION_TOKENS + 1,
        completion_tokens: 0,
    };
    assert_eq!(validate_usage(&huge).unwrap_err().field(), "usage");
}

#[test]
fn prices_must_be_finite_and_non_negative() {
    assert!(Price::new(-0.1, 1.0).is_none());
    assert!(Price::new(f64::NAN, 1.0).is_none());
    assert!(Price::new(1.0, f64::INFINITY).is_none());
    assert_eq!(Price::new(0.0, 2.5).unwrap().cost(0, 2_000_000), 5.0);
}

#[test]
fn calibration_on_an_empty_buffer_is_none_and_the_curve_is_flat() {
    let p = Population::new(&[]);
    assert_eq!(p.calibrate(0.2), None);
    let curve = p.curve();
    assert_eq!(curve.len(), 31);
    assert_eq!(curve[30].threshold, 15.0);
    assert!(curve.iter().all(|c| c.q4_share == 0.0));
}

#[test]
fn calibration_picks_the_highest_of_equally_close_thresholds() {
    // Ten distinct scores: 20 % means the top two.
    let ds = routed(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
    let c = Population::new(&ds).calibrate(0.2).unwrap();
    assert_eq!(c.threshold, 9.0);
    assert_eq!(c.q4_decisions, 2);
    assert_eq!(c.q4_share, 0.2);
    // Nothing on Q4: 15 (no score reaches it).
    assert_eq!(Population::new(&ds).calibrate(0.0).unwrap().threshold, 15.0);
    // Ties move together: the closest achievable share (2.4 of 4 is
    // nearer all four than none).
    let ties = routed(&[5.0; 4]);
    let c = Population::new(&ties).calibrate(0.6).unwrap();
    assert_eq!(c.q4_decisions, 4);
    assert_eq!(c.threshold, 5.0);
}

fn scores() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((0u32..=1500).prop_map(|s| f64::from(s) / 100.0), 1..120)
}

proptest! {
    /// With distinct scores, the calibrated threshold sends the share
    /// asked for to Q4, within one decision.
    #[test]
    fn calibration_meets_the_share_within_one_decision(
        raw in scores(), q in 0.0f64..=1.0, simple in 0usize..5,
    ) {
        let mut distinct = raw;
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        let mut ds = routed(&distinct);
        for _ in 0..simple {
            ds.push(decision(Tier::Q2, 0.0, Some(Mode::Simple)));
        }
        let p = Population::new(&ds);
        let c = p.calibrate(q).unwrap();
        let n = ds.len() as f64;
        // Reachable: at most the score-routed decisions can go to Q4.
        let target = (q * n).min(distinct.len() as f64);
        let got = p.what_if(c.threshold, &PerTier([None; 3])).counts[Tier::Q4];
        prop_assert_eq!(got, c.q4_decisions);
        prop_assert!((got as f64 - target).abs() <= 1.0, "{} vs {}", got, target);
        prop_assert!(valid_threshold(c.threshold));
    }

    /// Raising the threshold never raises the Q4 share.
    #[test]
    fn a_higher_threshold_never_raises_the_q4_share(
        raw in scores(), a in 0.0f64..=15.0, b in 0.0f64..=15.0,
    ) {
        let p = Population::new(&routed(&raw));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(p.what_if(hi, &PerTier([None; 3])).q4_share() <= p.what_if(lo, &PerTier([None; 3])).q4_share());
        let curve = p.curve();
        for w in curve.windows(2) {
            prop_assert!(w[1].q4_share <= w[0].q4_share);
        }
    }

    /// Every decision lands in exactly one bucket, and the what-if
    /// counts always add up to the whole buffer.
    #[test]
    fn buckets_and_what_if_counts_cover_every_decision(raw in scores(), t in 0.0f64..=15.0) {
        let ds = routed(&raw);
        prop_assert_eq!(histogram(&ds).iter().sum::<u64>(), ds.len() as u64);
        let w = Population::new(&ds).what_if(t, &PerTier([None; 3]));
        prop_assert_eq!(w.counts.values().iter().sum::<usize>(), ds.len());
    }
}
