//! Virtual keys: who may use the front doors, what each key spent in its
//! budget's period, and its limits (budget, requests and tokens per
//! minute, modes, expiry).
//!
//! The keys live in the store (only a SHA-256 of each secret) and in a
//! registry in memory that every request reads without a lock; a change
//! made through the admin API rebuilds it at once, one made by another
//! process (`server keys ...` on the same data dir) within
//! [`RELOAD_EVERY`]. With `--in-memory` the keys live in memory only.
//!
//! Each key's meter counts its spend, requests and tokens in the current
//! UTC period (restored from the store's ledger at start) and its requests
//! and tokens in the last 60 s (one slot per second). A request is refused
//! before anything is recorded: at the budget (`insufficient_quota`), past
//! its requests or tokens per minute (`rate_limit_exceeded`), or in a mode
//! it may not use. Near its budget (`--brownout FROM`) its two-stage Q4
//! threshold rises toward 15.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use chrono::{DateTime, TimeZone as _, Utc};
use sha2::Digest as _;
use shared::Tier;
use shared::api::{Mode, Usage};
use shared::insight::Prices;
use shared::keys::{self as wire, KeyPatch, KeyUsage, KeyView, NewKey, Period};

use crate::changes::Changes;
use crate::error::{KeyRefusal, Limit};
use crate::store::{self, KeyRecord, Spend, Store};

mod cli;
pub mod ledger;
mod metrics;
pub use cli::*;
pub use metrics::DEFAULT_METRICS_KEYS;

/// How often a server looks for key changes another process made.
pub const RELOAD_EVERY: Duration = Duration::from_millis(500);
/// Seconds in a rate window.
const WINDOW_SECS: i64 = 60;

/// The SHA-256 of a secret: what the store keeps.
pub fn hash(secret: &str) -> [u8; 32] {
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// A new secret: `osk-` and 32 random bytes in base64url.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{}{}",
        wire::SECRET_PREFIX,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(format!("key-{:016x}", u64::from_be_bytes(bytes)))
}

/// A key's spend and use, in its period and in the last minute.
#[derive(Debug)]
struct Meter {
    period_start: i64,
    /// What this instance spent (its ledger).
    spent_usd: f64,
    /// What the other instances spent, as last read from Redis.
    others_usd: f64,
    /// This instance's ledger as Redis last confirmed it.
    confirmed_usd: f64,
    /// Reserved for this instance's calls in flight.
    reserved: f64,
    requests: u64,
    tokens: u64,
    /// Per second of the last minute (`second % 60`): the second, its
    /// requests and its tokens.
    slots: [(i64, u64, u64); WINDOW_SECS as usize],
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            period_start: 0,
            spent_usd: 0.0,
            others_usd: 0.0,
            confirmed_usd: 0.0,
            reserved: 0.0,
            requests: 0,
            tokens: 0,
            slots: [(i64::MIN, 0, 0); WINDOW_SECS as usize],
        }
    }
}

impl Meter {
    /// The spend every instance made in the period, as far as this one
    /// knows.
    fn total(&self) -> f64 {
        self.spent_usd + self.others_usd
    }

    /// Starts a new period if `now` is past the meter's.
    fn roll(&mut self, period: Period, now: DateTime<Utc>) {
        let start = period.start(now).timestamp_millis();
        if start != self.period_start {
            *self = Meter {
                period_start: start,
                slots: self.slots,
                reserved: self.reserved,
                ..Meter::default()
            };
        }
    }

    fn slot(&mut self, sec: i64) -> &mut (i64, u64, u64) {
        let slot = &mut self.slots[sec.rem_euclid(WINDOW_SECS) as usize];
        if slot.0 != sec {
            *slot = (sec, 0, 0);
        }
        slot
    }

    /// Requests and tokens of the 60 s up to `sec`.
    fn last_minute(&self, sec: i64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|s| s.0 > sec - WINDOW_SECS && s.0 <= sec)
            .fold((0, 0), |(r, t), s| (r + s.1, t + s.2))
    }

    /// Seconds until the oldest second of the window holding `what` (1:
    /// requests, 2: tokens) leaves it.
    fn reset_secs(&self, sec: i64, tokens: bool) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.0 > sec - WINDOW_SECS && s.0 <= sec)
            .filter(|s| if tokens { s.2 > 0 } else { s.1 > 0 })
            .map(|s| s.0 + WINDOW_SECS - sec)
            .min()
            .unwrap_or(1)
            .max(1) as u64
    }
}

/// Who called a front door: a virtual key, or `None` (an `--api-key`, the
/// admin key, or no key where none is needed).
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Arc<Entry>>);

/// A key in the registry: its settings and its meter (kept across changes
/// of its settings).
#[derive(Debug)]
pub struct Entry {
    /// Its settings.
    pub record: KeyRecord,
    meter: Arc<Mutex<Meter>>,
}

impl Entry {
    /// Usable at `now_ms`: not revoked, not expired.
    pub fn usable(&self, now_ms: i64) -> bool {
        self.record.revoked_at.is_none() && self.record.expires_at.is_none_or(|t| now_ms < t)
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct Registry {
    by_hash: HashMap<[u8; 32], Arc<Entry>>,
    by_id: HashMap<String, Arc<Entry>>,
}

/// What a request was granted: its brownout and what its answer's headers
/// say about the key's budget and limits.
#[derive(Debug, Default)]
pub struct Grant {
    /// The key's id and team, for its decisions.
    pub key: (String, Option<String>),
    /// Brownout level, 0..=1 (0 without `--brownout` or a budget).
    pub brownout: f64,
    /// `model: "powerful"` is answered by Q3 in brownout.
    pub force: bool,
    headers: HeaderMap,
    /// The budget reserved for the request, given back when it ends.
    _reservation: Option<Reservation>,
}

/// A request's reservation of budget: given back when its grant is dropped.
#[derive(Debug)]
struct Reservation {
    entry: Arc<Entry>,
    est: f64,
    period_start: i64,
    /// The ledger holding it in Redis, and the ledger's epoch then.
    shared: Option<(Arc<ledger::Ledger>, u64)>,
}

impl Clone for Grant {
    fn clone(&self) -> Self {
        // A copy describes the request; the reservation stays with the
        // original.
        Grant {
            key: self.key.clone(),
            brownout: self.brownout,
            force: self.force,
            headers: self.headers.clone(),
            _reservation: None,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        {
            let mut m = self.entry.meter();
            if m.period_start == self.period_start {
                m.reserved = (m.reserved - self.est).max(0.0);
            }
        }
        if let Some((ledger, epoch)) = &self.shared {
            ledger.release(&self.entry.record.id, self.period_start, self.est, *epoch);
        }
    }
}

impl Grant {
    /// The headers every answer to the request carries.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The two-stage Q4 threshold for this request, from the configured one.
    pub fn threshold(&self, base: f64) -> f64 {
        wire::browned_threshold(base, self.brownout)
    }

    /// The tier a request naming `tier` gets: Q3 for Q4 in brownout with
    /// `--brownout-force`.
    pub fn named_tier(&self, tier: Tier) -> Tier {
        if self.force && self.brownout > 0.0 && tier == Tier::Q4 {
            Tier::Q3
        } else {
            tier
        }
    }
}

/// Why a key change was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A field is wrong.
    #[error("{0}")]
    Invalid(String),
    /// No such key.
    #[error("no key {0}")]
    NotFound(String),
    /// The store failed.
    #[error("the store cannot be written: {0}")]
    Store(String),
}

/// How keys are enforced.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Each tier's price (spend is priced tokens; a tier without a price
    /// costs nothing).
    pub prices: Prices,
    /// `--brownout FROM`: the share of a budget where brownout begins.
    pub brownout: Option<f64>,
    /// `--brownout-force`.
    pub brownout_force: bool,
    /// With `--redis`: the budgets shared by every instance.
    pub shared: Option<ledger::Shared>,
}

/// The virtual keys of this server.
pub struct Keys {
    registry: ArcSwap<Registry>,
    store: Option<Arc<Store>>,
    policy: Policy,
    rev: AtomicI64,
    /// Serialises changes (the admin API's and reloads).
    changing: Mutex<()>,
    /// Bumped by every change of the keys (their spend changes with the
    /// decisions, which bump the status themselves).
    changes: Changes,
    /// With `--redis`: the ledger every instance shares.
    ledger: Option<Arc<ledger::Ledger>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("keys", &self.registry.load().by_id.len())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// The keys of `store` (none and in memory only without one).
    pub fn new(store: Option<Arc<Store>>, policy: Policy) -> Result<Arc<Keys>, KeyError> {
        let ledger = match &policy.shared {
            Some(shared) => Some(Arc::new(
                ledger::Ledger::new(shared.clone()).map_err(KeyError::Invalid)?,
            )),
            None => None,
        };
        let keys = Arc::new(Keys {
            ledger,
            registry: ArcSwap::default(),
            store,
            policy,
            rev: AtomicI64::new(-1),
            changing: Mutex::new(()),
            changes: Changes::default(),
        });
        keys.reload()?;
        Ok(keys)
    }

    /// Watches the store for changes another process made (`server keys`),
    /// on a thread of its own: a periodic task on the blocking pool would
    /// keep waking its idle threads, so they would never time out.
    pub fn watch(self: &Arc<Self>) {
        if self.store.is_none() {
            return;
        }
        let keys = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("keys-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(RELOAD_EVERY);
                    let Some(keys) = keys.upgrade() else { return };
                    if let Err(e) = keys.reload_if_changed() {
                        tracing::warn!(error = %e, "the keys cannot be read from the store");
                    }
                }
            })
            .expect("a thread starts");
    }

    fn reload_if_changed(&self) -> Result<(), KeyError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let rev = store
            .read(store::keys_rev)
            .map_err(|e| KeyError::Store(e.to_string()))?;
        if rev != self.rev.load(Ordering::Acquire) {
            self.reload()?;
        }
        Ok(())
    }

    /// Reads every key (and each one's spend this period) from the store.
    fn reload(&self) -> Result<(), KeyError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Utc::now();
        let (rev, records, spends) = store
            .read(|conn| {
                let rev = store::keys_rev(conn)?;
                let records = store::load_keys(conn)?;
                let mut spends = HashMap::new();
                for r in &records {
                    let start = r.period.start(now).timestamp_millis();
                    spends.insert(r.id.clone(), store::load_spend(conn, &r.id, start)?);
                }
                Ok((rev, records, spends))
            })
            .map_err(|e| KeyError::Store(e.to_string()))?;
        let old = self.registry.load();
        let mut registry = Registry::default();
        for record in records {
            let meter = match old.by_id.get(&record.id) {
                Some(e) => Arc::clone(&e.meter),
                None => {
                    let s = spends.get(&record.id).cloned().unwrap_or_default();
                    Arc::new(Mutex::new(Meter {
                        period_start: s.period_start,
                        spent_usd: s.usd,
                        requests: s.requests,
                        tokens: s.tokens,
                        ..Meter::default()
                    }))
                }
            };
            registry.insert(Arc::new(Entry { record, meter }));
        }
        self.registry.store(Arc::new(registry));
        self.rev.store(rev, Ordering::Release);
        self.changes.bump();
        Ok(())
    }

    /// The usable key whose secret is `secret`.
    pub fn find(&self, secret: &str) -> Option<Arc<Entry>> {
        let entry = self.registry.load().by_hash.get(&hash(secret)).cloned()?;
        entry.usable(Utc::now().timestamp_millis()).then_some(entry)
    }

    /// What changed of the keys.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// What each key spent this period, for the status: the top
    /// [`wire::KEYS_IN_STATUS`] then `other`; `None` without keys.
    pub fn summary(&self) -> Option<Vec<wire::KeySpend>> {
        let spends = self.spends();
        (!spends.is_empty()).then(|| wire::top_keys(spends, wire::KEYS_IN_STATUS))
    }

    /// Every key's spend this period.
    fn spends(&self) -> Vec<wire::KeySpend> {
        let now = Utc::now();
        self.registry
            .load()
            .by_id
            .values()
            .map(|e| {
                let r = &e.record;
                let mut m = e.meter();
                m.roll(r.period, now);
                wire::KeySpend {
                    key: r.id.clone(),
                    name: Some(r.name.clone()),
                    team: r.team.clone(),
                    spent_usd: m.total(),
                    requests: m.requests,
                    tokens: m.tokens,
                    budget_usd: r.budget_usd,
                    brownout: self.brownout_of(r, m.total()),
                }
            })
            .collect()
    }

    fn brownout_of(&self, r: &KeyRecord, spent_usd: f64) -> f64 {
        match (self.policy.brownout, r.budget_usd) {
            (Some(from), Some(budget)) => wire::brownout_level(spent_usd, budget, from),
            _ => 0.0,
        }
    }

    /// How the budgets are held: shared through Redis or by this instance,
    /// and what this instance's ledger holds that Redis does not yet.
    pub fn ledger_info(&self) -> wire::BudgetLedger {
        let drift: f64 = match &self.ledger {
            None => 0.0,
            Some(_) => {
                let now = Utc::now();
                self.registry
                    .load()
                    .by_id
                    .values()
                    .map(|e| {
                        let mut m = e.meter();
                        m.roll(e.record.period, now);
                        (m.spent_usd - m.confirmed_usd).abs()
                    })
                    .sum()
            }
        };
        wire::BudgetLedger {
            shared: self.ledger.is_some(),
            reachable: self.ledger.as_ref().map(|l| l.is_up()),
            fail_policy: self
                .ledger
                .as_ref()
                .map(|l| if l.fails_open() { "open" } else { "closed" }.to_owned()),
            accounting_drift: if drift < 1e-9 { 0.0 } else { drift },
        }
    }

    /// How many keys there are (revoked ones included).
    pub fn len(&self) -> usize {
        self.registry.load().by_id.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits one request of `entry` in `mode` now, reserving `est_usd` of
    /// its budget until the grant is dropped, or says why not. Its rates are
    /// this instance's; its budget is every instance's with `--redis`. An
    /// admitted request counts toward its requests per minute.
    pub async fn admit(
        &self,
        entry: &Arc<Entry>,
        mode: Mode,
        est_usd: f64,
    ) -> Result<Grant, Box<KeyRefusal>> {
        let r = &entry.record;
        if let Some(modes) = &r.modes
            && !modes.contains(&mode)
        {
            return Err(Box::new(KeyRefusal::mode(mode.name())));
        }
        // The rates first, with the request counted in the window at once
        // (so that requests at the same moment cannot all pass); taken back
        // if the budget refuses it.
        let now = Utc::now();
        let sec = now.timestamp();
        let mut headers = HeaderMap::new();
        {
            let mut m = entry.meter();
            m.roll(r.period, now);
            let (requests, tokens) = m.last_minute(sec);
            let mut refusal = None;
            if let Some(rpm) = r.rpm {
                let reset = m.reset_secs(sec, false);
                rate_headers(&mut headers, "requests", rpm.into(), requests, reset);
                if requests >= u64::from(rpm) {
                    refusal = Some(KeyRefusal::new(
                        Limit::Requests,
                        format!(
                            "Rate limit reached for key {} on requests per min (RPM): Limit {rpm}, Used {requests}, Requested 1. Please try again in {reset}s.",
                            r.id
                        ),
                        reset,
                    ));
                }
            }
            if let Some(tpm) = r.tpm {
                let reset = m.reset_secs(sec, true);
                rate_headers(&mut headers, "tokens", tpm, tokens, reset);
                if refusal.is_none() && tokens >= tpm {
                    refusal = Some(KeyRefusal::new(
                        Limit::Tokens,
                        format!(
                            "Rate limit reached for key {} on tokens per min (TPM): Limit {tpm}, Used {tokens}. Please try again in {reset}s.",
                            r.id
                        ),
                        reset,
                    ));
                }
            }
            if let Some(mut refusal) = refusal {
                refusal.headers = headers;
                return Err(Box::new(refusal));
            }
            m.slot(sec).1 += 1;
            if let Some(rpm) = r.rpm {
                headers.insert(
                    HeaderName::from_static("x-ratelimit-remaining-requests"),
                    HeaderValue::from(u64::from(rpm).saturating_sub(requests + 1)),
                );
                let reset = m.reset_secs(sec, false);
                headers.insert(
                    HeaderName::from_static("x-ratelimit-reset-requests"),
                    HeaderValue::from_str(&format!("{reset}s")).expect("a duration"),
                );
            }
        }
        let (spent, reservation) = match r.budget_usd {
            None => (0.0, None),
            Some(budget) => match self.reserve(entry, budget, est_usd).await {
                Ok(admitted) => admitted,
                Err(mut refusal) => {
                    let mut m = entry.meter();
                    let slot = m.slot(sec);
                    slot.1 = slot.1.saturating_sub(1);
                    refusal.headers.extend(headers);
                    return Err(refusal);
                }
            },
        };
        let brownout = self.brownout_of(r, spent);
        if let Some(budget) = r.budget_usd {
            budget_headers(
                &mut headers,
                budget,
                spent,
                self.policy.brownout.map(|_| brownout),
            );
        }
        let period_start = {
            let mut m = entry.meter();
            m.requests += 1;
            m.period_start
        };
        if let Some(store) = &self.store {
            // The count of requests is not waited for: a lost one costs
            // nothing (the spend is what a budget holds).
            let _ = store.add_spend(Spend {
                key_id: r.id.clone(),
                period_start,
                requests: 1,
                minute: shared::history::minute_of(Utc::now().timestamp_millis()),
                ..Spend::default()
            });
        }
        Ok(Grant {
            key: (r.id.clone(), r.team.clone()),
            brownout,
            force: self.policy.brownout_force,
            headers,
            _reservation: reservation,
        })
    }

    /// Admits a request by `entry`'s budget: refused once it is spent,
    /// waiting (at most [`ledger::WAIT_MAX`]) while reservations in flight
    /// could take the spend past it, else admitted with `est` reserved.
    /// The spend before it, and its reservation.
    async fn reserve(
        &self,
        entry: &Arc<Entry>,
        budget: f64,
        est: f64,
    ) -> Result<(f64, Option<Reservation>), Box<KeyRefusal>> {
        let r = &entry.record;
        let waited = std::time::Instant::now();
        loop {
            let now = Utc::now();
            let (period_start, period_end) = (
                r.period.start(now).timestamp_millis(),
                r.period.end(now).timestamp_millis(),
            );
            let shared = self.ledger.as_ref().filter(|l| l.is_up());
            let outcome = match (shared, &self.ledger) {
                (Some(ledger), _) => {
                    let epoch = ledger.epoch();
                    let own = {
                        let mut m = entry.meter();
                        m.roll(r.period, now);
                        m.spent_usd
                    };
                    match ledger
                        .admit(&r.id, period_start, period_end, budget, est, own)
                        .await
                    {
                        Ok(ledger::Admission::Admitted { spent, .. }) => {
                            let mut m = entry.meter();
                            m.roll(r.period, now);
                            m.reserved += est;
                            return Ok((
                                spent,
                                Some(Reservation {
                                    entry: Arc::clone(entry),
                                    est,
                                    period_start,
                                    shared: Some((Arc::clone(ledger), epoch)),
                                }),
                            ));
                        }
                        Ok(other) => other,
                        // Unreachable now: decided by the policy below.
                        Err(_) => continue,
                    }
                }
                (None, Some(ledger)) if !ledger.fails_open() => {
                    return Err(Box::new(KeyRefusal::new(
                        Limit::Unavailable,
                        format!(
                            "key {} has a budget and the shared budget ledger (Redis) is unreachable; this server refuses such keys until it is back (--budget-fail closed)",
                            r.id
                        ),
                        1,
                    )));
                }
                // This instance's view: its own spend and the others' as
                // last read.
                _ => {
                    let mut m = entry.meter();
                    m.roll(r.period, now);
                    let spent = m.total();
                    if spent >= budget {
                        ledger::Admission::Refused { spent }
                    } else if m.reserved > 1e-9 && spent + m.reserved + est > budget {
                        ledger::Admission::Wait
                    } else {
                        m.reserved += est;
                        return Ok((
                            spent,
                            Some(Reservation {
                                entry: Arc::clone(entry),
                                est,
                                period_start: m.period_start,
                                shared: None,
                            }),
                        ));
                    }
                }
            };
            match outcome {
                ledger::Admission::Refused { spent } => {
                    let reset = (r.period.end(now) - now).num_seconds().max(1) as u64;
                    let mut refusal = KeyRefusal::new(
                        Limit::Budget,
                        format!(
                            "key {} has spent its budget of ${budget} this {} (${spent:.6}); it resets at {}",
                            r.id,
                            r.period.name(),
                            rfc3339(r.period.end(now))
                        ),
                        reset,
                    );
                    budget_headers(
                        &mut refusal.headers,
                        budget,
                        spent,
                        self.policy.brownout.map(|_| self.brownout_of(r, spent)),
                    );
                    return Err(Box::new(refusal));
                }
                ledger::Admission::Wait if waited.elapsed() < ledger::WAIT_MAX => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Waited long enough (a reservation of an instance that
                // died): the spend is under the budget, so it is admitted.
                _ => {
                    let spent = entry.meter().total();
                    return Ok((spent, None));
                }
            }
        }
    }

    /// Charges key `id` for a call of `tier` that took `usage`; with a
    /// store, what resolves once the charge is committed (await it before
    /// the answer is acknowledged, so a kill -9 loses no answered spend).
    pub fn charge(&self, id: &str, tier: Tier, usage: Usage) -> Option<store::Committing> {
        let entry = self.registry.load().by_id.get(id).cloned()?;
        let usd = self.policy.prices[tier].map_or(0.0, |p| {
            p.cost(usage.prompt_tokens, usage.completion_tokens)
        });
        let tokens = usage.prompt_tokens + usage.completion_tokens;
        let now = Utc::now();
        let mut m = entry.meter();
        m.roll(entry.record.period, now);
        m.spent_usd += usd;
        m.tokens += tokens;
        m.slot(now.timestamp()).2 += tokens;
        let period_start = m.period_start;
        drop(m);
        if let Some(ledger) = &self.ledger {
            ledger.charged();
        }
        self.store.as_ref().map(|store| {
            store.add_spend(Spend {
                key_id: id.to_owned(),
                period_start,
                usd,
                tokens,
                requests: 0,
                minute: shared::history::minute_of(now.timestamp_millis()),
            })
        })
    }

    /// Every key as the admin API shows it, newest first.
    pub fn list(&self) -> Vec<KeyView> {
        let registry = self.registry.load();
        let mut all: Vec<&Arc<Entry>> = registry.by_id.values().collect();
        all.sort_by(|a, b| {
            (b.record.created_at, &a.record.id).cmp(&(a.record.created_at, &b.record.id))
        });
        let now = Utc::now();
        all.into_iter().map(|e| self.view(e, now)).collect()
    }

    /// Key `id` as the admin API shows it.
    pub fn get(&self, id: &str) -> Option<KeyView> {
        let entry = self.registry.load().by_id.get(id).cloned()?;
        Some(self.view(&entry, Utc::now()))
    }

    fn view(&self, e: &Entry, now: DateTime<Utc>) -> KeyView {
        let r = &e.record;
        let mut m = e.meter();
        m.roll(r.period, now);
        let (requests_last_minute, tokens_last_minute) = m.last_minute(now.timestamp());
        let start = r.period.start(now);
        let end = r.period.end(now);
        let usage = KeyUsage {
            period_start: rfc3339(start),
            period_end: rfc3339(end),
            spent_usd: m.total(),
            requests: m.requests,
            tokens: m.tokens,
            remaining_usd: r.budget_usd.map(|b| (b - m.total()).max(0.0)),
            brownout: self.brownout_of(r, m.total()),
            requests_last_minute,
            tokens_last_minute,
            projected_exhaustion: r
                .budget_usd
                .and_then(|b| wire::projected_exhaustion(m.total(), b, start, now, end))
                .map(rfc3339),
        };
        KeyView {
            id: r.id.clone(),
            prefix: r.prefix.clone(),
            name: r.name.clone(),
            team: r.team.clone(),
            budget_usd: r.budget_usd,
            period: r.period,
            rpm: r.rpm,
            tpm: r.tpm,
            modes: r.modes.clone(),
            expires_at: r.expires_at.map(ms_rfc3339),
            created_at: ms_rfc3339(r.created_at),
            revoked_at: r.revoked_at.map(ms_rfc3339),
            usage,
        }
    }

    /// Makes a key; its secret is in the answer only.
    pub fn create(&self, new: NewKey) -> Result<wire::CreatedKey, KeyError> {
        let secret = new_secret().map_err(|e| KeyError::Store(e.to_string()))?;
        let record = record_of(new, &secret)?;
        let id = record.id.clone();
        self.write(record, |conn, r| store::insert_key(conn, r).map(|()| true))?;
        let key = self.get(&id).ok_or(KeyError::NotFound(id))?;
        Ok(wire::CreatedKey {
            id: key.id.clone(),
            secret,
            key,
        })
    }

    /// Changes key `id`'s settings.
    pub fn patch(&self, id: &str, patch: KeyPatch) -> Result<KeyView, KeyError> {
        let entry = self.registry.load().by_id.get(id).cloned();
        let entry = entry.ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        let record = patched(&entry.record, patch)?;
        self.write(record, store::update_key)?;
        self.get(id)
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))
    }

    /// Revokes key `id` at once.
    pub fn revoke(&self, id: &str) -> Result<KeyView, KeyError> {
        let entry = self.registry.load().by_id.get(id).cloned();
        let entry = entry.ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        let mut record = entry.record.clone();
        if record.revoked_at.is_none() {
            record.revoked_at = Some(Utc::now().timestamp_millis());
            self.write(record, store::update_key)?;
        }
        self.get(id)
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))
    }

    /// Stores `record` with `f` (with a store) and puts it in the registry.
    fn write(
        &self,
        record: KeyRecord,
        f: impl FnOnce(&mut rusqlite::Connection, &KeyRecord) -> rusqlite::Result<bool>,
    ) -> Result<(), KeyError> {
        match &self.store {
            Some(store) => {
                let found = store
                    .keys_write(|conn| f(conn, &record))
                    .map_err(|e| KeyError::Store(e.to_string()))?;
                if !found {
                    return Err(KeyError::NotFound(record.id));
                }
                self.reload()?;
                // Published from the registry: after the reload.
                if let Some(ledger) = &self.ledger {
                    ledger.changed(&record.id);
                }
                Ok(())
            }
            None => {
                let id = record.id.clone();
                self.put(record)?;
                if let Some(ledger) = &self.ledger {
                    ledger.changed(&id);
                }
                Ok(())
            }
        }
    }

    /// Puts `record` in the registry (in memory only), keeping its meter.
    fn put(&self, record: KeyRecord) -> Result<(), KeyError> {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.registry.load();
        let meter = old
            .by_id
            .get(&record.id)
            .map_or_else(Arc::default, |e| Arc::clone(&e.meter));
        let mut registry = Registry::default();
        for e in old.by_id.values().filter(|e| e.record.id != record.id) {
            registry.insert(Arc::clone(e));
        }
        registry.insert(Arc::new(Entry { record, meter }));
        self.registry.store(Arc::new(registry));
        self.changes.bump();
        Ok(())
    }
}

impl Registry {
    fn insert(&mut self, entry: Arc<Entry>) {
        self.by_hash.insert(entry.record.hash, Arc::clone(&entry));
        self.by_id.insert(entry.record.id.clone(), entry);
    }
}

/// `X-Router-Budget-Remaining-Usd` (left before the request) and, with
/// `--brownout`, `X-Router-Brownout`.
fn budget_headers(headers: &mut HeaderMap, budget: f64, spent: f64, brownout: Option<f64>) {
    let left = (budget - spent).max(0.0);
    headers.insert(
        HeaderName::from_static(shared::wire::header::BUDGET_REMAINING),
        HeaderValue::from_str(&format!("{left:.6}")).expect("a number"),
    );
    if let Some(level) = brownout {
        headers.insert(
            HeaderName::from_static(shared::wire::header::BROWNOUT),
            HeaderValue::from_str(&format!("{level:.2}")).expect("a number"),
        );
    }
}

fn rate_headers(headers: &mut HeaderMap, what: &str, limit: u64, used: u64, reset: u64) {
    let name = |s: String| HeaderName::from_bytes(s.as_bytes()).expect("a header name");
    headers.insert(
        name(format!("x-ratelimit-limit-{what}")),
        HeaderValue::from(limit),
    );
    headers.insert(
        name(format!("x-ratelimit-remaining-{what}")),
        HeaderValue::from(limit.saturating_sub(used)),
    );
    headers.insert(
        name(format!("x-ratelimit-reset-{what}")),
        HeaderValue::from_str(&format!("{reset}s")).expect("a duration"),
    );
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms_rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or_else(String::new, rfc3339)
}

fn check_name(what: &str, name: &str) -> Result<String, KeyError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > wire::MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(KeyError::Invalid(format!(
            "{what}: 1 to {} characters, no control characters",
            wire::MAX_NAME_CHARS
        )));
    }
    Ok(name.to_owned())
}

fn check_budget(b: Option<f64>) -> Result<Option<f64>, KeyError> {
    match b {
        Some(b) if !(b.is_finite() && (0.0..=wire::MAX_BUDGET_USD).contains(&b)) => {
            Err(KeyError::Invalid(format!(
                "budgetUsd: a number in 0..={}",
                wire::MAX_BUDGET_USD
            )))
        }
        _ => Ok(b.map(|b| b + 0.0)),
    }
}

fn check_limit<T: Copy + PartialEq + Default>(
    what: &str,
    n: Option<T>,
) -> Result<Option<T>, KeyError> {
    match n {
        Some(n) if n == T::default() => Err(KeyError::Invalid(format!("{what}: at least 1"))),
        _ => Ok(n),
    }
}

fn check_expiry(raw: Option<&str>) -> Result<Option<i64>, KeyError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                KeyError::Invalid(format!("expiresAt: {raw:?} is not an RFC 3339 time ({e})"))
            })
    })
    .transpose()
}

fn check_modes(modes: Option<Vec<Mode>>) -> Result<Option<Vec<Mode>>, KeyError> {
    match modes {
        Some(m) if m.is_empty() => Err(KeyError::Invalid(
            "modes: at least one (leave it out for all)".into(),
        )),
        other => Ok(other),
    }
}

fn record_of(new: NewKey, secret: &str) -> Result<KeyRecord, KeyError> {
    Ok(KeyRecord {
        id: new_id().map_err(|e| KeyError::Store(e.to_string()))?,
        hash: hash(secret),
        prefix: secret.chars().take(wire::SECRET_PREFIX.len() + 4).collect(),
        name: check_name("name", &new.name)?,
        team: new
            .team
            .as_deref()
            .map(|t| check_name("team", t))
            .transpose()?,
        budget_usd: check_budget(new.budget_usd)?,
        period: new.period.unwrap_or_default(),
        rpm: check_limit("rpm", new.rpm)?,
        tpm: check_limit("tpm", new.tpm)?,
        modes: check_modes(new.modes)?,
        expires_at: check_expiry(new.expires_at.as_deref())?,
        created_at: Utc::now().timestamp_millis(),
        revoked_at: None,
    })
}

fn patched(old: &KeyRecord, p: KeyPatch) -> Result<KeyRecord, KeyError> {
    let mut r = old.clone();
    if let Some(name) = p.name {
        r.name = check_name("name", &name)?;
    }
    if let Some(team) = p.team {
        r.team = team.as_deref().map(|t| check_name("team", t)).transpose()?;
    }
    if let Some(b) = p.budget_usd {
        r.budget_usd = check_budget(b)?;
    }
    if let Some(period) = p.period {
        r.period = period;
    }
    if let Some(rpm) = p.rpm {
        r.rpm = check_limit("rpm", rpm)?;
    }
    if let Some(tpm) = p.tpm {
        r.tpm = check_limit("tpm", tpm)?;
    }
    if let Some(modes) = p.modes {
        r.modes = check_modes(modes)?;
    }
    if let Some(at) = p.expires_at {
        r.expires_at = check_expiry(at.as_deref())?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests;
