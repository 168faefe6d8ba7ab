//! What live quality counts: shadow judging's verdicts, drops and failures
//! per tier (since start and per minute for the last hour), the shadow
//! calls' tokens and cost, and the implicit signals (abandoned streams,
//! regenerations); with their `/metrics` series. Knows nothing of how the
//! counts are made, so the status service can read it from below.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::Sha256;
use shared::shadow::{JudgeCounts, JudgeFailure, LiveQuality, TierCounts, Verdict};
use shared::{PerTier, Tier};

use crate::changes::Changes;
use crate::telemetry::Telemetry;

/// How long a query's text counts as asked: the same text from the same
/// key within it is a regeneration.
pub const REGENERATION_WINDOW: Duration = Duration::from_secs(60);

/// Most queries remembered for regenerations; beyond, the oldest go first
/// (a bound on memory whatever the rate).
const MAX_REMEMBERED: usize = 200_000;

/// Minutes the last hour spans.
const HOUR_MINUTES: i64 = 60;

/// See the module docs.
pub struct Book {
    shadow_rate: f64,
    judge: Tier,
    inner: Mutex<Inner>,
    in_flight: AtomicU64,
    asked: Mutex<Asked>,
    /// The keyed hash's key: random per process, never stored.
    hash_key: [u8; 32],
    metrics: Metrics,
    changes: Changes,
}

#[derive(Default)]
struct Inner {
    since: PerTier<JudgeCounts>,
    /// Per minute (since the epoch), the newest last; only the last hour.
    minutes: VecDeque<(i64, PerTier<JudgeCounts>)>,
    implicit: PerTier<shared::shadow::ImplicitCounts>,
    tokens: PerTier<[u64; 2]>,
    cost: PerTier<f64>,
}

/// The queries of the last [`REGENERATION_WINDOW`], by keyed hash.
#[derive(Default)]
struct Asked {
    last: HashMap<[u8; 32], (Tier, Instant)>,
    order: VecDeque<([u8; 32], Instant)>,
}

struct Metrics {
    verdicts: PerTier<[Counter; 3]>,
    dropped: Counter,
    judge_failures: [Counter; 4],
    q4_failures: Counter,
    tokens: [Counter; 2],
    cost: Family<Vec<(&'static str, String)>, Counter<f64, std::sync::atomic::AtomicU64>>,
    streams: PerTier<Counter>,
    abandoned: PerTier<Counter>,
    answers: PerTier<Counter>,
    regenerations: PerTier<Counter>,
}

type Labels = Vec<(&'static str, String)>;

impl Metrics {
    fn registered(t: &Telemetry) -> Metrics {
        let family = |name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            t.register(name, help, f.clone());
            f
        };
        let verdicts = family(
            "orch_shadow_verdicts",
            "Shadow judging's verdicts on a tier's answers against Q4's (better, tie, worse), by tier",
        );
        let dropped = family(
            "orch_shadow_dropped",
            "Shadow samples dropped because --shadow-max-inflight were under way",
        );
        let failures = family(
            "orch_shadow_judge_failures",
            "Shadow pairs whose judge gave no verdict, by reason (garbage, timeout, error, refusal)",
        );
        let q4 = family(
            "orch_shadow_q4_failures",
            "Shadow samples whose Q4 call failed (no pair to judge)",
        );
        let tokens = family(
            "orch_shadow_tokens",
            "Tokens the shadow calls (Q4's and the judge's) took, by direction (in, out); apart from the tiers'",
        );
        let cost = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        t.register(
            "orch_shadow_cost_usd",
            "USD the shadow calls cost at the configured prices, by judged tier",
            cost.clone(),
        );
        let per_tier = |name: &str, help: &str| {
            let f = family(name, help);
            PerTier::from_fn(|tier| f.get_or_create(&tier_label(tier)).clone())
        };
        let none = Vec::new();
        Metrics {
            verdicts: PerTier::from_fn(|tier| {
                Verdict::ALL.map(|v| {
                    let mut l = tier_label(tier);
                    l.push(("verdict", v.label().to_owned()));
                    verdicts.get_or_create(&l).clone()
                })
            }),
            dropped: dropped.get_or_create(&none).clone(),
            judge_failures: JudgeFailure::ALL.map(|r| {
                failures
                    .get_or_create(&vec![("reason", r.label().to_owned())])
                    .clone()
            }),
            q4_failures: q4.get_or_create(&none).clone(),
            tokens: ["in", "out"].map(|d| {
                tokens
                    .get_or_create(&vec![("direction", d.to_owned())])
                    .clone()
            }),
            cost,
            streams: per_tier(
                "orch_streams",
                "Streamed single-tier answers begun, by tier",
            ),
            abandoned: per_tier(
                "orch_streams_abandoned",
                "Streamed answers the client abandoned before the end, by tier",
            ),
            answers: per_tier(
                "orch_single_tier_queries",
                "Single-tier queries routed (the regenerations' denominator), by tier",
            ),
            regenerations: per_tier(
                "orch_regenerations",
                "Queries asked again with the same text by the same key within 60 s, by the tier that answered first",
            ),
        }
    }
}

fn tier_label(tier: Tier) -> Labels {
    vec![("tier", tier.label().to_owned())]
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn minute_now() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(60)
}

impl Book {
    /// An empty book, its series registered with `telemetry` (at zero).
    pub fn new(shadow_rate: f64, judge: Tier, telemetry: &Telemetry) -> Self {
        let mut hash_key = [0u8; 32];
        // The operating system's random source; a process without one
        // still works (the hash is then keyed by the time).
        if getrandom::fill(&mut hash_key).is_err() {
            let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            hash_key[..8].copy_from_slice(&t.to_le_bytes());
        }
        Book {
            shadow_rate,
            judge,
            inner: Mutex::default(),
            in_flight: AtomicU64::new(0),
            asked: Mutex::default(),
            hash_key,
            metrics: Metrics::registered(telemetry),
            changes: Changes::default(),
        }
    }

    /// Bumped by every count.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Counts into the judging counts of `tier`, since start and this minute.
    fn judge_count(&self, tier: Tier, f: impl Fn(&mut JudgeCounts)) {
        let minute = minute_now();
        let mut inner = lock(&self.inner);
        f(&mut inner.since[tier]);
        if inner.minutes.back().is_none_or(|(m, _)| *m != minute) {
            inner.minutes.push_back((minute, PerTier::default()));
        }
        while inner
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= minute - HOUR_MINUTES)
        {
            inner.minutes.pop_front();
        }
        if let Some((_, counts)) = inner.minutes.back_mut() {
            f(&mut counts[tier]);
        }
        drop(inner);
        self.changes.bump();
    }

    /// A judged pair's verdict.
    pub fn verdict(&self, tier: Tier, v: Verdict) {
        let i = Verdict::ALL.iter().position(|x| *x == v).unwrap_or(1);
        self.judge_count(tier, |c| c.verdicts[i] += 1);
        self.metrics.verdicts[tier][i].inc();
    }

    /// A sample dropped at `--shadow-max-inflight`.
    pub fn dropped(&self, tier: Tier) {
        self.judge_count(tier, |c| c.dropped += 1);
        self.metrics.dropped.inc();
    }

    /// A pair the judge gave no verdict on.
    pub fn judge_failed(&self, tier: Tier, why: JudgeFailure) {
        self.judge_count(tier, |c| c.judge_failures[why.index()] += 1);
        self.metrics.judge_failures[why.index()].inc();
    }

    /// A sample whose Q4 call failed.
    pub fn q4_failed(&self, tier: Tier) {
        self.judge_count(tier, |c| c.q4_failures += 1);
        self.metrics.q4_failures.inc();
    }

    /// A shadow call's tokens and cost, for a sample of `tier`.
    pub fn shadow_usage(&self, tier: Tier, usage: shared::api::Usage, cost: f64) {
        let cost = if cost.is_finite() { cost.max(0.0) } else { 0.0 };
        let mut inner = lock(&self.inner);
        inner.tokens[tier][0] += usage.prompt_tokens;
        inner.tokens[tier][1] += usage.completion_tokens;
        inner.cost[tier] += cost;
        drop(inner);
        self.metrics.tokens[0].inc_by(usage.prompt_tokens);
        self.metrics.tokens[1].inc_by(usage.completion_tokens);
        self.metrics
            .cost
            .get_or_create(&tier_label(tier))
            .inc_by(cost);
        self.changes.bump();
    }

    /// A shadow sample began (`true`) or ended.
    pub fn in_flight(&self, began: bool) {
        if began {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        } else {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A streamed answer of `tier` began.
    pub fn stream_begun(&self, tier: Tier) {
        lock(&self.inner).implicit[tier].streams += 1;
        self.metrics.streams[tier].inc();
        self.changes.bump();
    }

    /// A streamed answer of `tier` was abandoned by its client.
    pub fn abandoned(&self, tier: Tier) {
        lock(&self.inner).implicit[tier].abandoned += 1;
        self.metrics.abandoned[tier].inc();
        self.changes.bump();
    }

    /// A single-tier query of key `key` (`""`: no virtual key) with text
    /// `text` was routed to `tier`: counted, and a regeneration of the
    /// tier that answered the same text from the same key within the last
    /// [`REGENERATION_WINDOW`]. Only a keyed hash of the pair is kept, and
    /// only for the window.
    pub fn asked(&self, key: &str, text: &str, tier: Tier) {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hash_key)
            .expect("HMAC takes a key of any length");
        mac.update(key.as_bytes());
        mac.update(&[0]);
        mac.update(text.as_bytes());
        let hash: [u8; 32] = mac.finalize().into_bytes().into();
        let now = Instant::now();
        let again = {
            let mut asked = lock(&self.asked);
            let Asked { last, order } = &mut *asked;
            while let Some((h, at)) = order.front().copied() {
                if now.duration_since(at) < REGENERATION_WINDOW && order.len() < MAX_REMEMBERED {
                    break;
                }
                order.pop_front();
                if last.get(&h).is_some_and(|(_, t)| *t == at) {
                    last.remove(&h);
                }
            }
            let again = last
                .get(&hash)
                .filter(|(_, at)| now.duration_since(*at) < REGENERATION_WINDOW)
                .map(|(t, _)| *t);
            last.insert(hash, (tier, now));
            order.push_back((hash, now));
            again
        };
        let mut inner = lock(&self.inner);
        inner.implicit[tier].answers += 1;
        if let Some(first) = again {
            inner.implicit[first].regenerations += 1;
        }
        drop(inner);
        self.metrics.answers[tier].inc();
        if let Some(first) = again {
            self.metrics.regenerations[first].inc();
        }
        self.changes.bump();
    }

    /// Queries remembered for regenerations now (each only a hash).
    pub fn remembered(&self) -> usize {
        lock(&self.asked).last.len()
    }

    /// This instance's counts, the last hour's as of now.
    pub fn counts(&self) -> PerTier<TierCounts> {
        let minute = minute_now();
        let inner = lock(&self.inner);
        PerTier::from_fn(|tier| {
            let mut last_hour = JudgeCounts::default();
            for (m, c) in &inner.minutes {
                if *m > minute - HOUR_MINUTES {
                    last_hour.merge(&c[tier]);
                }
            }
            TierCounts {
                since_start: inner.since[tier],
                last_hour,
                implicit: inner.implicit[tier],
                shadow_tokens: inner.tokens[tier],
                shadow_cost_usd: inner.cost[tier],
            }
        })
    }

    /// The status's `quality`, from these counts and `others` (the other
    /// instances' in cluster view).
    pub fn status(&self, others: Option<&PerTier<TierCounts>>) -> LiveQuality {
        let mut counts = self.counts();
        if let Some(others) = others {
            for tier in Tier::ALL {
                counts[tier].merge(&others[tier]);
            }
        }
        shared::shadow::live_quality(
            self.shadow_rate,
            self.judge,
            self.in_flight.load(Ordering::Acquire),
            &counts,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_from_the_same_key_within_the_window_is_a_regeneration() {
        let t = Telemetry::new();
        let book = Book::new(0.0, Tier::Q4, &t);
        book.asked("k1", "hello", Tier::Q2);
        book.asked("k2", "hello", Tier::Q3);
        book.asked("k1", "hello!", Tier::Q3);
        book.asked("k1", "hello", Tier::Q3);
        let c = book.counts();
        assert_eq!(
            c[Tier::Q2].implicit.regenerations,
            1,
            "the first answer's tier"
        );
        assert_eq!(c[Tier::Q3].implicit.regenerations, 0);
        assert_eq!(c[Tier::Q3].implicit.answers, 3);
        assert_eq!(book.remembered(), 3);
        let text = t.encode();
        assert!(
            text.contains("orch_regenerations_total{tier=\"Q2\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn counts_show_since_start_and_in_the_last_hour() {
        let t = Telemetry::new();
        let book = Book::new(1.0, Tier::Q4, &t);
        book.verdict(Tier::Q2, Verdict::Better);
        book.verdict(Tier::Q2, Verdict::Tie);
        book.verdict(Tier::Q3, Verdict::Worse);
        book.dropped(Tier::Q3);
        book.judge_failed(Tier::Q2, JudgeFailure::Garbage);
        let q = book.status(None);
        assert_eq!(q.tiers[0].since_start.pairs, 2);
        assert_eq!(q.tiers[0].last_hour.pairs, 2);
        assert_eq!(q.tiers[0].since_start.as_good, Some(1.0));
        assert_eq!(q.tiers[1].since_start.as_good, Some(0.0));
        assert_eq!(q.tiers[1].last_hour.dropped, 1);
        let text = t.encode();
        assert!(text.contains("orch_shadow_verdicts_total{tier=\"Q2\",verdict=\"better\"} 1"));
        assert!(text.contains("orch_shadow_dropped_total 1"));
        assert!(text.contains("orch_shadow_judge_failures_total{reason=\"garbage\"} 1"));
    }
}
