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

mod admin;
mod admit;
mod cli;
pub mod ledger;
mod meter;
mod metrics;
use admin::record_of;
pub use cli::*;
use meter::Meter;
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

    /// Its meter, in the period of `now` (a new period starts at zero).
    fn meter_at(&self, now: DateTime<Utc>) -> std::sync::MutexGuard<'_, Meter> {
        let mut m = self.meter();
        m.roll(self.record.period, now);
        m
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

impl Reservation {
    /// Reserves `est` of `entry`'s budget in its meter `m` (of the period
    /// starting at `period_start`), held until the reservation is dropped.
    fn hold(
        entry: &Arc<Entry>,
        m: &mut Meter,
        est: f64,
        period_start: i64,
        shared: Option<(Arc<ledger::Ledger>, u64)>,
    ) -> Reservation {
        m.reserved += est;
        Reservation {
            entry: Arc::clone(entry),
            est,
            period_start,
            shared,
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
        self.each_meter(|r, m| wire::KeySpend {
            key: r.id.clone(),
            name: Some(r.name.clone()),
            team: r.team.clone(),
            spent_usd: m.total(),
            requests: m.requests,
            tokens: m.tokens,
            budget_usd: r.budget_usd,
            brownout: self.brownout_of(r, m.total()),
        })
    }

    /// `f` of every key and its meter, in the current period.
    fn each_meter<T>(&self, mut f: impl FnMut(&KeyRecord, &Meter) -> T) -> Vec<T> {
        let now = Utc::now();
        let registry = self.registry.load();
        let all = registry.by_id.values();
        all.map(|e| f(&e.record, &e.meter_at(now))).collect()
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
            Some(_) => self
                .each_meter(|_, m| (m.spent_usd - m.confirmed_usd).abs())
                .iter()
                .sum(),
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
}

impl Registry {
    fn insert(&mut self, entry: Arc<Entry>) {
        self.by_hash.insert(entry.record.hash, Arc::clone(&entry));
        self.by_id.insert(entry.record.id.clone(), entry);
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms_rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or_else(String::new, rfc3339)
}

#[cfg(test)]
mod tests;
