//! Shadow judging: for a random share (`--shadow-rate`) of the answers of
//! Q2 and Q3, once the user's answer is complete, Q4 answers the same
//! messages and the judge tier (`--judge`) compares the two answers twice,
//! the order swapped ([`shared::shadow`] holds the prompt and the rules).
//!
//! Off the request path: a sample is a task of its own on a runtime of its
//! own (one thread at nice 10), so no user's request ever waits in a
//! worker's queue behind shadow work; at most `--shadow-max-inflight` at
//! once; beyond, a sample is dropped and counted, never queued. Its calls
//! go through the tiers' upstreams (failover, retries, circuits) but count
//! apart from the tiers' answers: never in utilization, decisions, totals
//! or `activeRequests`. The counts live in the [`Book`].

use std::sync::Arc;

use serde_json::{Value, json};
use shared::shadow::{self as rules, JudgeFailure, Pick};
use shared::{RoutingDecision, Tier};
use tokio::sync::Semaphore;

use crate::store::Store;
use crate::upstream::{Answer, UpstreamError, Upstreams};

mod book;
pub use book::*;

/// `--shadow-max-inflight` unless given.
pub const DEFAULT_MAX_INFLIGHT: usize = 4;

/// How shadow judging runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The share of Q2 and Q3 answers judged (0: off).
    pub rate: f64,
    /// The tier whose upstreams judge.
    pub judge: Tier,
    /// Most samples under way at once.
    pub max_inflight: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rate: 0.0,
            judge: Tier::Q4,
            max_inflight: DEFAULT_MAX_INFLIGHT,
        }
    }
}

/// The shadow thread's nice value: below every request worker's.
const SHADOW_NICE: i32 = 10;

/// A runtime of one thread for shadow work, living as long as the process;
/// `None` (and judging off, said in the log) if the thread cannot start.
fn own_runtime() -> Option<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "shadow judging is off: its runtime cannot start");
            return None;
        }
    };
    let handle = rt.handle().clone();
    let started = std::thread::Builder::new()
        .name("shadow".into())
        .spawn(move || {
            // Below the request workers: where the CPU is short, shadow
            // work waits, users do not. (Linux: a thread's own nice value.)
            let me = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(me), SHADOW_NICE) {
                tracing::debug!(error = %e, "the shadow thread keeps the normal priority");
            }
            rt.block_on(std::future::pending::<()>())
        });
    match started {
        Ok(_) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "shadow judging is off: its thread cannot start");
            None
        }
    }
}

/// A chat completion request body (OpenAI's fields).
pub type Body = serde_json::Map<String, Value>;

/// See the module docs.
pub struct Shadow {
    /// The shadow runtime's handle (only when judging is on).
    runtime: Option<tokio::runtime::Handle>,
    rate: f64,
    judge: Tier,
    places: Arc<Semaphore>,
    book: Arc<Book>,
    upstreams: Arc<Upstreams>,
    store: Option<Arc<Store>>,
    prices: shared::insight::Prices,
}

/// A sampled answer on its way: what Q4 is asked, and what the judge is
/// shown as the user's question.
pub struct Sample {
    /// The user's request body, as the tier was asked.
    pub body: Body,
    /// The user's question (the last user message's text).
    pub question: String,
}

impl Shadow {
    /// Shadow judging as `settings` say, counting into `book`.
    pub fn new(
        settings: &Settings,
        book: Arc<Book>,
        upstreams: Arc<Upstreams>,
        store: Option<Arc<Store>>,
        prices: shared::insight::Prices,
    ) -> Self {
        let rate = if settings.rate.is_finite() {
            settings.rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Shadow {
            runtime: (rate > 0.0).then(own_runtime).flatten(),
            rate,
            judge: settings.judge,
            places: Arc::new(Semaphore::new(settings.max_inflight.max(1))),
            book,
            upstreams,
            store,
            prices,
        }
    }

    /// The counts.
    pub fn book(&self) -> &Arc<Book> {
        &self.book
    }

    /// Whether `decision`'s answer is sampled: a single-tier answer of Q2
    /// or Q3 (never a group's), drawn at `--shadow-rate`. Decided before
    /// the call, so that only a sample's request is kept.
    pub fn samples(&self, decision: &RoutingDecision) -> bool {
        self.runtime.is_some()
            && decision.group_id.is_none()
            && matches!(decision.tier, Tier::Q2 | Tier::Q3)
            && (self.rate >= 1.0 || fastrand::f64() < self.rate)
    }

    /// Judges `answer`, the complete answer to `sample` of `decision`'s
    /// tier, in a task of its own; dropped (and counted) when
    /// `--shadow-max-inflight` samples are under way.
    pub fn submit(self: &Arc<Self>, decision: &RoutingDecision, sample: Sample, answer: String) {
        let tier = decision.tier;
        let Some(runtime) = &self.runtime else {
            return;
        };
        let Ok(place) = Arc::clone(&self.places).try_acquire_owned() else {
            self.book.dropped(tier);
            return;
        };
        let me = Arc::clone(self);
        let seq = decision.seq;
        self.book.in_flight(true);
        runtime.spawn(async move {
            me.judge_sample(seq, tier, sample, answer).await;
            me.book.in_flight(false);
            drop(place);
        });
    }

    async fn judge_sample(&self, seq: u64, tier: Tier, sample: Sample, answer: String) {
        let q4 = match self.upstreams.shadow(Tier::Q4, sample.body).await {
            Ok((a, _)) => {
                self.count_usage(tier, Tier::Q4, &a);
                match a.content.filter(|c| !c.trim().is_empty()) {
                    Some(text) => text,
                    None => {
                        self.book.q4_failed(tier);
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(%tier, error = %e, "shadow: Q4 failed");
                self.book.q4_failed(tier);
                return;
            }
        };
        // Both orders at once: the tier's answer as A, then as B.
        let (first, swapped) = tokio::join!(
            self.judge_once(tier, &sample.question, &answer, &q4),
            self.judge_once(tier, &sample.question, &q4, &answer),
        );
        match (first, swapped) {
            (Ok(a), Ok(b)) => {
                let v = rules::verdict(a, b);
                self.book.verdict(tier, v);
                if let Some(store) = &self.store {
                    store.add_verdict(seq, tier, v);
                }
            }
            (Err(why), _) | (_, Err(why)) => self.book.judge_failed(tier, why),
        }
    }

    /// One judging: the judge's pick between `a` and `b`.
    async fn judge_once(
        &self,
        tier: Tier,
        question: &str,
        a: &str,
        b: &str,
    ) -> Result<Pick, JudgeFailure> {
        let mut body = Body::new();
        body.insert(
            "messages".into(),
            json!([
                {"role": "system", "content": rules::JUDGE_SYSTEM},
                {"role": "user", "content": rules::judge_prompt(question, a, b)},
            ]),
        );
        body.insert("max_tokens".into(), json!(rules::JUDGE_MAX_TOKENS));
        body.insert("temperature".into(), json!(0));
        match self.upstreams.shadow(self.judge, body).await {
            Ok((reply, _)) => {
                self.count_usage(tier, self.judge, &reply);
                if reply.refusal.as_deref().is_some_and(|r| !r.is_empty()) {
                    return Err(JudgeFailure::Refusal);
                }
                reply
                    .content
                    .as_deref()
                    .and_then(rules::read_pick)
                    .ok_or(JudgeFailure::Garbage)
            }
            Err(UpstreamError::Failed(f)) if f.outcome == shared::metrics::Outcome::Timeout => {
                Err(JudgeFailure::Timeout)
            }
            Err(_) => Err(JudgeFailure::Error),
        }
    }

    /// A shadow call's tokens, priced at `called`'s price, counted for the
    /// sample of `tier`.
    fn count_usage(&self, tier: Tier, called: Tier, answer: &Answer) {
        if let Some(u) = answer
            .usage
            .filter(|u| shared::insight::validate_usage(u).is_ok())
        {
            let cost =
                self.prices[called].map_or(0.0, |p| p.cost(u.prompt_tokens, u.completion_tokens));
            self.book.shadow_usage(tier, u, cost);
        }
    }
}
