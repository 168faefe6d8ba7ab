//! Budgets held exactly across instances (`--redis`): the keys themselves
//! and what each instance spent per key and period live in Redis beside
//! each instance's own store.
//!
//! - `orch:{cluster}:keys` (hash: id -> the key's settings, its secret's
//!   hash only) and `orch:{cluster}:keys:rev` (bumped by every change):
//!   a key made, changed or revoked on one instance reaches every other one
//!   within [`SYNC_EVERY`].
//! - `orch:{cluster}:spend:{id}:{period start}` (hash): per instance, the
//!   **absolute** USD it spent on the key in the period (its own ledger, as
//!   its store keeps it), and `r:{instance}`, what it has reserved for calls
//!   in flight. Absolute figures make a retried or repeated write harmless:
//!   after Redis was unreachable an instance writes its ledger again and
//!   nothing is counted twice.
//!
//! A request of a key with a budget is admitted by one Lua script, atomically
//! over every instance: refused when the spend is at the budget; made to
//! wait (at most [`WAIT_MAX`]) while calls in flight have reservations that
//! could take the spend past it; otherwise admitted with a reservation (an
//! estimate from `max_tokens` and the dearest price), given back when the
//! request ends. So no request is refused while the spend is under the
//! budget, and the spend passes it by at most the calls admitted while it
//! was under.
//!
//! Redis unreachable (an exchange failing or slower than 1 s): with
//! `--budget-fail closed` (the default) a key with a budget is refused (503),
//! with `open` it is admitted by this instance's view (its own spend and the
//! others' as last read). `accountingDrift` is what this instance's ledger
//! holds that Redis does not yet (0 once it is written).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::cluster::exchange;
use serde::{Deserialize, Serialize};

use super::*;

/// How often an instance writes its ledger and reads the keys and the
/// others' spend.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);
/// How long a request may wait for reservations in flight to be settled
/// before it is admitted anyway (its spend is under the budget).
pub const WAIT_MAX: Duration = Duration::from_secs(10);
/// An exchange slower than this marks Redis unreachable (the cluster's).
const TIMEOUT: Duration = crate::cluster::REDIS_TIMEOUT;

/// The admission, atomically over every instance. KEYS[1]: the spend hash;
/// ARGV: budget, the reservation, this instance, the hash's lifetime (ms),
/// this instance's ledger now (written first where it is ahead: a ledger
/// only grows within a period). Answers {0|1|2, spent, reserved}: refused,
/// admitted, wait.
const ADMIT: &str = r"
local mine = tonumber(redis.call('HGET', KEYS[1], ARGV[3]) or '0')
if tonumber(ARGV[5]) > mine then redis.call('HSET', KEYS[1], ARGV[3], ARGV[5]) end
local vals = redis.call('HGETALL', KEYS[1])
local spent, reserved = 0, 0
for i = 1, #vals, 2 do
  local v = tonumber(vals[i + 1]) or 0
  if string.sub(vals[i], 1, 2) == 'r:' then reserved = reserved + v else spent = spent + v end
end
local budget, est = tonumber(ARGV[1]), tonumber(ARGV[2])
if spent >= budget then return {0, tostring(spent), tostring(reserved)} end
if reserved > 1e-9 and spent + reserved + est > budget then return {2, tostring(spent), tostring(reserved)} end
redis.call('HINCRBYFLOAT', KEYS[1], 'r:' .. ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, tostring(spent), tostring(reserved)}
";

/// Writes an instance's ledger where it is ahead of what Redis holds (a
/// late write of an older figure never takes it back). KEYS[1]: the spend
/// hash; ARGV: the instance, its ledger.
const SET_AHEAD: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
";

/// `--budget-fail`: what a key with a budget gets while Redis is
/// unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BudgetFail {
    /// Admitted by this instance's view of the spend.
    Open,
    /// Refused (503) until Redis is back.
    #[default]
    Closed,
}

/// `--redis` settings the shared ledger needs.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The Redis URL.
    pub url: String,
    /// The cluster's name.
    pub cluster: String,
    /// This instance's id (the data dir's, stable across restarts).
    pub instance: String,
    /// `--budget-fail open`.
    pub fail_open: bool,
}

/// A key's settings as Redis holds them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Stored {
    id: String,
    hash: String,
    prefix: String,
    name: String,
    team: Option<String>,
    budget_usd: Option<f64>,
    period: String,
    rpm: Option<u32>,
    tpm: Option<u64>,
    modes: Option<Vec<Mode>>,
    expires_at: Option<i64>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl From<&KeyRecord> for Stored {
    fn from(r: &KeyRecord) -> Self {
        Stored {
            id: r.id.clone(),
            hash: r.hash.iter().map(|b| format!("{b:02x}")).collect(),
            prefix: r.prefix.clone(),
            name: r.name.clone(),
            team: r.team.clone(),
            budget_usd: r.budget_usd,
            period: r.period.name().to_owned(),
            rpm: r.rpm,
            tpm: r.tpm,
            modes: r.modes.clone(),
            expires_at: r.expires_at,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

impl Stored {
    fn record(&self) -> Option<KeyRecord> {
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(self.hash.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(KeyRecord {
            id: self.id.clone(),
            hash,
            prefix: self.prefix.clone(),
            name: self.name.clone(),
            team: self.team.clone(),
            budget_usd: self.budget_usd,
            period: Period::from_name(&self.period)?,
            rpm: self.rpm,
            tpm: self.tpm,
            modes: self.modes.clone(),
            expires_at: self.expires_at,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// What the shared ledger answered an admission.
pub(super) enum Admission {
    /// Admitted; the spend before it (its reservation is in Redis).
    Admitted { spent: f64 },
    /// The budget is spent.
    Refused { spent: f64 },
    /// Reservations in flight could pass the budget: try again shortly.
    Wait,
}

/// The ledger shared through Redis.
pub struct Ledger {
    conn: ConnectionManager,
    prefix: String,
    settings: Shared,
    up: AtomicBool,
    /// Bumped whenever Redis is reached again: reservations made before
    /// are not in it any more (this instance's were reset to 0).
    epoch: AtomicU64,
    wake: tokio::sync::Notify,
    last_rev: Mutex<Option<i64>>,
    /// Keys changed here that Redis has not taken yet.
    unpublished: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger on the Redis `settings` name (connected lazily).
    pub fn new(settings: Shared) -> Result<Ledger, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| format!("--redis {}: {e}", settings.url))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(250));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("--redis: {e}"))?;
        Ok(Ledger {
            conn,
            prefix: format!("orch:{{{}}}:", settings.cluster),
            settings,
            up: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            last_rev: Mutex::new(None),
            unpublished: Mutex::default(),
        })
    }

    /// True while Redis answers.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// `--budget-fail open`.
    pub fn fails_open(&self) -> bool {
        self.settings.fail_open
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn spend_key(&self, id: &str, period_start: i64) -> String {
        format!("{}spend:{id}:{period_start}", self.prefix)
    }

    fn down(&self, error: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(%error, fail_open = self.settings.fail_open, "the shared budget ledger (Redis) is unreachable");
        }
    }

    /// Admits a request of key `id` (period from `period_start` to
    /// `period_end`) reserving `est` USD, atomically over every instance.
    pub(super) async fn admit(
        &self,
        id: &str,
        period_start: i64,
        period_end: i64,
        budget: f64,
        est: f64,
        own: f64,
    ) -> Result<Admission, String> {
        let ttl = (period_end - Utc::now().timestamp_millis()).max(0) + 86_400_000;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ADMIT)
            .arg(1)
            .arg(self.spend_key(id, period_start))
            .arg(budget)
            .arg(est)
            .arg(&self.settings.instance)
            .arg(ttl)
            .arg(own);
        let reply = exchange(cmd.query_async::<(i64, String, String)>(&mut conn)).await;
        let (verdict, spent, _) = reply.inspect_err(|e| self.down(e))?;
        let spent = spent.parse::<f64>().unwrap_or(0.0);
        Ok(match verdict {
            0 => Admission::Refused { spent },
            1 => Admission::Admitted { spent },
            _ => Admission::Wait,
        })
    }

    /// Gives back a reservation of `est` USD made in Redis at `epoch`.
    pub(super) fn release(self: &Arc<Self>, id: &str, period_start: i64, est: f64, epoch: u64) {
        if epoch != self.epoch() {
            return;
        }
        let ledger = Arc::clone(self);
        let key = self.spend_key(id, period_start);
        tokio::spawn(async move {
            let mut conn = ledger.conn.clone();
            let mut cmd = redis::cmd("HINCRBYFLOAT");
            cmd.arg(key)
                .arg(format!("r:{}", ledger.settings.instance))
                .arg(-est);
            if let Err(e) = exchange(cmd.query_async::<String>(&mut conn)).await {
                ledger.down(&e);
            }
        });
    }

    /// This instance's ledger changed: the sync task writes it at once.
    pub(super) fn charged(&self) {
        self.wake.notify_one();
    }

    /// Notes that key `id` changed here: published to every instance by
    /// the sync task (at once, and again until Redis took it).
    pub(super) fn changed(&self, id: &str) {
        self.unpublished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned());
        self.wake.notify_one();
    }

    /// Publishes a key's new settings to every instance.
    async fn publish_key(&self, record: &KeyRecord) -> Result<(), String> {
        let json = serde_json::to_string(&Stored::from(record)).map_err(|e| e.to_string())?;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(format!("{}keys", self.prefix))
            .arg(&record.id)
            .arg(json)
            .ignore()
            .cmd("INCR")
            .arg(format!("{}keys:rev", self.prefix))
            .ignore();
        exchange(pipe.query_async::<()>(&mut conn))
            .await
            .inspect_err(|e| self.down(e))
    }
}

impl Keys {
    /// Runs the shared ledger: writes this instance's ledger, reads the
    /// keys and the others' spend, every [`SYNC_EVERY`] and at once after a
    /// charge.
    pub fn start_sync(self: &Arc<Self>) {
        let Some(ledger) = self.ledger.clone() else {
            return;
        };
        let keys = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(k) = keys.upgrade() else { return };
                match k.sync(&ledger).await {
                    Ok(()) => {
                        if !ledger.up.swap(true, Ordering::AcqRel) {
                            tracing::info!("the shared budget ledger (Redis) is reachable");
                        }
                    }
                    Err(e) => ledger.down(&e),
                }
                drop(k);
                tokio::select! {
                    () = ledger.wake.notified() => {}
                    () = tokio::time::sleep(SYNC_EVERY) => {}
                }
            }
        });
    }

    /// One round of the sync.
    async fn sync(&self, ledger: &Ledger) -> Result<(), String> {
        let mut conn = ledger.conn.clone();
        let me = &ledger.settings.instance;
        let now = Utc::now();
        let coming_back = !ledger.is_up();
        if coming_back {
            // Reservations made before are not in Redis (or are stale):
            // this instance's start from 0, and those in flight are not
            // given back to it.
            ledger.epoch.fetch_add(1, Ordering::AcqRel);
        }
        // The keys changed here first, then every instance's, and this
        // one's that Redis lacks.
        let unpublished: Vec<String> = ledger
            .unpublished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (i, id) in unpublished.iter().enumerate() {
            let record = self.registry.load().by_id.get(id).map(|e| e.record.clone());
            if let Some(record) = record
                && let Err(e) = ledger.publish_key(&record).await
            {
                ledger
                    .unpublished
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(unpublished[i..].iter().cloned());
                return Err(e);
            }
        }
        let rev: Option<i64> = exchange(
            redis::cmd("GET")
                .arg(format!("{}keys:rev", ledger.prefix))
                .query_async(&mut conn),
        )
        .await?;
        let known = *ledger
            .last_rev
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if coming_back || known != Some(rev.unwrap_or(0)) {
            let all: HashMap<String, String> = exchange(
                redis::cmd("HGETALL")
                    .arg(format!("{}keys", ledger.prefix))
                    .query_async(&mut conn),
            )
            .await?;
            let theirs: Vec<KeyRecord> = all
                .values()
                .filter_map(|j| serde_json::from_str::<Stored>(j).ok()?.record())
                .collect();
            let registry = self.registry.load();
            // Redis lacks it, or it was revoked here and not there (a
            // revocation is never undone): this instance's copy goes out.
            let mut stale = Vec::new();
            for mine in registry.by_id.values() {
                let revoked_here = mine.record.revoked_at.is_some()
                    && theirs
                        .iter()
                        .any(|t| t.id == mine.record.id && t.revoked_at.is_none());
                if !all.contains_key(&mine.record.id) || revoked_here {
                    stale.push(mine.record.clone());
                }
            }
            for record in &stale {
                ledger.publish_key(record).await?;
            }
            let changed: Vec<KeyRecord> = theirs
                .into_iter()
                .filter(|r| !stale.iter().any(|s| s.id == r.id))
                .filter(|r| registry.by_id.get(&r.id).is_none_or(|e| e.record != *r))
                .collect();
            drop(registry);
            if !changed.is_empty() {
                self.adopt(changed).await;
            }
            *ledger
                .last_rev
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(rev.unwrap_or(0));
        }
        // This instance's ledger (absolute), and everyone's spend.
        let live: Vec<Arc<Entry>> = self
            .registry
            .load()
            .by_id
            .values()
            .filter(|e| e.record.revoked_at.is_none())
            .cloned()
            .collect();
        let mut pipe = redis::pipe();
        let mut reads = Vec::new();
        for e in &live {
            let (own, start) = {
                let m = e.meter_at(now);
                (m.spent_usd, m.period_start)
            };
            let key = ledger.spend_key(&e.record.id, start);
            let ttl = (e.record.period.end(now).timestamp_millis() - now.timestamp_millis()).max(0)
                + 86_400_000;
            pipe.cmd("EVAL")
                .arg(SET_AHEAD)
                .arg(1)
                .arg(&key)
                .arg(me)
                .arg(own)
                .ignore();
            if coming_back {
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg(format!("r:{me}"))
                    .arg(0)
                    .ignore();
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
            pipe.cmd("HGETALL").arg(&key);
            reads.push((Arc::clone(e), start));
        }
        // Every round writes every live key's ledger: one that failed is
        // written by the next.
        let replies: Vec<HashMap<String, String>> = exchange(pipe.query_async(&mut conn)).await?;
        let mut moved = false;
        for ((e, start), fields) in reads.into_iter().zip(replies) {
            let mut others = 0.0;
            let mut mine = 0.0;
            for (field, value) in &fields {
                let v = value.parse::<f64>().unwrap_or(0.0);
                if field == me {
                    mine = v;
                } else if !field.starts_with("r:") {
                    others += v;
                }
            }
            let mut m = e.meter();
            if m.period_start == start && (m.others_usd != others || m.confirmed_usd != mine) {
                m.others_usd = others;
                m.confirmed_usd = mine;
                moved = true;
            }
        }
        if moved {
            // The status shows the spend of every instance.
            self.changes.bump();
        }
        Ok(())
    }

    /// Takes keys made or changed on another instance into this one's
    /// store and registry.
    async fn adopt(&self, records: Vec<KeyRecord>) {
        match &self.store {
            Some(store) => {
                let store = Arc::clone(store);
                let written = tokio::task::spawn_blocking(move || {
                    store.keys_write(|conn| {
                        for r in &records {
                            if !store::update_key(conn, r)? {
                                store::insert_key(conn, r)?;
                            }
                        }
                        Ok(())
                    })
                })
                .await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::warn!("the keys from Redis cannot be written to the store");
                }
                if let Err(e) = self.reload() {
                    tracing::warn!(error = %e, "the keys cannot be read from the store");
                }
            }
            None => {
                for r in records {
                    let _ = self.put(r);
                }
            }
        }
    }
}
