//! The embedded store: every decision, per-minute rollups and all-time
//! totals in one SQLite database (WAL) under `--data-dir`.
//!
//! One writer thread owns the write connection. Decisions reach it through
//! a bounded channel and are committed in groups: the thread takes what is
//! waiting (up to [`GROUP_ROWS`] rows; a trickle also what arrives until
//! [`COMMIT_EVERY`] after its previous commit began) and commits it in one
//! transaction together with the rollups and totals it changes, then tells
//! each waiter. Reads (history, the decision
//! log, exports) use their own read-only connections and never wait on it.
//!
//! A failing disk does not stop the router: the writer reports the failure
//! ([`Store::persistence`]), counts what it could not write, and tries again
//! with each new group and once a second until a commit succeeds.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use shared::api::{Mode, Usage};
use shared::history::{
    DECISION_TIME_BOUNDS_MS, LATENCY_BOUNDS_MS, Persistence, PersistenceState, bucket, minute_of,
};
use shared::insight::Tokens;
use shared::{Complexity, RecordedDecision, RoutingDecision, Signal, Tier};
use tokio::sync::oneshot;

use crate::changes::Changes;

mod keys;
mod query;
mod retention;
mod rows;
mod schema;
mod writer;
pub use keys::*;
pub use query::*;
use retention::*;
pub use rows::*;
use schema::*;
use writer::*;

/// The database file inside the data dir.
pub const DB_FILE: &str = "orchestrator.db";
/// Held locked by the server using the data dir.
pub const LOCK_FILE: &str = "server.lock";
/// Most rows one commit group holds.
pub const GROUP_ROWS: usize = 1_000;
/// A small group's commit begins no sooner than this after the previous
/// commit began: the "at most every 10 ms" of the design, at half of it.
pub const COMMIT_EVERY: Duration = Duration::from_millis(5);
/// A group smaller than this is a trickle, worth waiting for company.
const TRICKLE_ROWS: usize = 64;
/// Messages the writer's channel holds before senders wait.
const CHANNEL: usize = 4_096;
/// What a sender is told when the writer is gone.
const WRITER_STOPPED: &str = "the store writer stopped";
/// Rows one retention batch deletes.
const RETENTION_BATCH: usize = 1_000;

/// `--sync`: how hard a commit presses its data to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// `synchronous=NORMAL` in WAL mode: a commit survives the process
    /// being killed (kill -9, a crash), not the machine losing power.
    Normal,
    /// `synchronous=FULL`: each commit is fsynced; survives power loss.
    Full,
}

impl SyncMode {
    fn name(self) -> &'static str {
        match self {
            SyncMode::Normal => "normal",
            SyncMode::Full => "full",
        }
    }
}

/// Where and how to keep the store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The data dir (created if missing).
    pub dir: PathBuf,
    /// Commit durability.
    pub sync: SyncMode,
    /// How long decisions are kept.
    pub keep_decisions: Duration,
    /// How long per-minute rollups are kept.
    pub keep_rollups: Duration,
    /// How long prompts kept by `--keep-prompts` are kept.
    pub keep_prompts: Duration,
}

/// Why the store cannot open; each message names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The dir cannot be created or is not a directory.
    #[error("the data dir {path} cannot be created: {error}")]
    Create {
        /// The dir.
        path: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// A file cannot be written there (read-only, no permission, full).
    #[error(
        "the data dir {path} is not writable: {error} (free some space or fix its permissions, or pick another with --data-dir)"
    )]
    Unwritable {
        /// The dir.
        path: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// Another server holds the dir.
    #[error(
        "another server is already using the data dir {path} (it holds {lock}); stop it or pick another with --data-dir"
    )]
    Locked {
        /// The dir.
        path: String,
        /// The lock file.
        lock: String,
    },
    /// The database is not a database, or not ours, or damaged.
    #[error(
        "the database {path} is corrupt or not a database of this server: {error}. Move it aside to start with an empty store: mv {path} {path}.corrupt"
    )]
    Corrupt {
        /// The database file.
        path: String,
        /// What SQLite said.
        error: String,
    },
    /// Anything else SQLite refused.
    #[error("the database {path} cannot be opened: {error}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What SQLite said.
        error: String,
    },
}

/// What a restarted server takes back from the store.
#[derive(Debug, Default)]
pub struct Restored {
    /// The newest decisions, oldest first (at most the buffer's capacity).
    pub buffer: Vec<RecordedDecision>,
    /// Decisions ever recorded, per tier.
    pub per_tier: [u64; 3],
    /// Tokens ever counted, per tier.
    pub tokens: [Tokens; 3],
    /// The tokens one Q4 answer per query would have taken (the saving's
    /// baseline; see `shared::insight::cost_summary`).
    pub baseline: Tokens,
    /// The model assessor's tokens.
    pub assessor: Tokens,
    /// The last sequence number handed out.
    pub seq: u64,
    /// This data dir's instance id (the same across restarts).
    pub instance: String,
}

/// Why a group was not committed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CommitError(pub String);

/// A commit under way: `.await` it for its outcome (sent to the writer
/// whether or not anybody waits).
#[must_use = "the outcome of the commit is only known when awaited"]
pub struct Committing(oneshot::Receiver<Result<(), CommitError>>);

impl std::future::IntoFuture for Committing {
    type Output = Result<(), CommitError>;
    type IntoFuture = futures_util::future::Map<
        oneshot::Receiver<Result<(), CommitError>>,
        fn(Result<Result<(), CommitError>, oneshot::error::RecvError>) -> Result<(), CommitError>,
    >;

    fn into_future(self) -> Self::IntoFuture {
        futures_util::FutureExt::map(self.0, |r| {
            r.unwrap_or_else(|_| Err(CommitError(WRITER_STOPPED.into())))
        })
    }
}

enum Msg {
    Decisions {
        rows: Rows,
        done: Option<oneshot::Sender<Result<(), CommitError>>>,
        /// The sender refuses its client if the commit fails, so the rows
        /// are not "kept in memory only": a failure does not count them
        /// as not persisted.
        refusable: bool,
    },
    Usage {
        seq: u64,
        tier: Tier,
        minute: i64,
        usage: Usage,
        /// Counts in the saving's baseline too (not a group's member).
        baseline: bool,
    },
    /// Tokens counted in one of the `totals` rows past the tiers':
    /// [`BASELINE_ROW`] or [`ASSESSOR_ROW`].
    Extra(i64, Usage),
    /// What a virtual key spent on one call, and who waits for its commit.
    Spend(Spend, Option<oneshot::Sender<Result<(), CommitError>>>),
    Call {
        tier: Tier,
        minute: i64,
        latency_ms: f64,
        ok: bool,
    },
    /// The whole prompt of decision `seq` (`--keep-prompts`).
    Prompt { seq: u64, ts_ms: i64, text: String },
    /// Shadow judging's verdict on decision `seq` (of `tier`).
    Verdict {
        seq: u64,
        tier: Tier,
        minute: i64,
        verdict: shared::shadow::Verdict,
    },
    /// The server is stopping: fold the WAL into the database and stop.
    Close(oneshot::Sender<()>),
}

/// Whether commits succeed, shared by the writer and the status.
#[derive(Default)]
struct Health {
    failing: AtomicBool,
    detail: Mutex<Option<(DateTime<Utc>, String)>>,
    not_persisted: AtomicU64,
    changes: Changes,
    /// With a cluster: the minutes whose rollup rows changed since the
    /// cluster last published them.
    dirty: Mutex<Option<BTreeSet<i64>>>,
}

impl Health {
    fn fail(&self, error: String, lost: u64) {
        self.not_persisted.fetch_add(lost, Ordering::AcqRel);
        let mut detail = self.detail.lock().unwrap_or_else(PoisonError::into_inner);
        let since = detail.as_ref().map_or_else(Utc::now, |(since, _)| *since);
        if detail.is_none() {
            tracing::error!(%error, "the store is failing: decisions are kept in memory only");
        }
        *detail = Some((since, error));
        self.failing.store(true, Ordering::Release);
        drop(detail);
        self.bump();
    }

    fn ok(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            *self.detail.lock().unwrap_or_else(PoisonError::into_inner) = None;
            tracing::info!("the store is writable again");
            self.bump();
        }
    }

    fn bump(&self) {
        self.changes.bump();
    }
}

/// The store. Dropping it lets the writer finish what it was sent.
pub struct Store {
    tx: flume::Sender<Msg>,
    health: Arc<Health>,
    sync: SyncMode,
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    /// The connection for key changes, opened at the first.
    keys_conn: Mutex<Option<Connection>>,
    /// The data dir's instance id, the prefix of every decision's id.
    instance: String,
    /// Held for the life of the process: the second server on the dir
    /// cannot take it.
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store under `settings.dir`, starts its
    /// writer and retention threads, and returns what it holds.
    pub fn open(settings: &Settings, capacity: usize) -> Result<(Arc<Store>, Restored), OpenError> {
        let dir = &settings.dir;
        let shown = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|error| OpenError::Create {
            path: shown.clone(),
            error,
        })?;
        if !dir.is_dir() {
            return Err(OpenError::Create {
                path: shown,
                error: std::io::Error::other("not a directory"),
            });
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| OpenError::Unwritable {
                path: shown.clone(),
                error,
            })?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked {
                path: shown,
                lock: lock_path.display().to_string(),
            });
        }
        probe_space(dir).map_err(|error| OpenError::Unwritable {
            path: shown.clone(),
            error,
        })?;
        let path = dir.join(DB_FILE);
        let conn = open_writer(&path, settings.sync)?;
        let restored = restore(&conn, capacity).map_err(|e| classify(&path, e))?;
        let (tx, rx) = flume::bounded(CHANNEL);
        let health = Arc::new(Health::default());
        let store = Arc::new(Store {
            tx,
            health: Arc::clone(&health),
            sync: settings.sync,
            path: path.clone(),
            readers: Mutex::new(Vec::new()),
            keys_conn: Mutex::new(None),
            instance: restored.instance.clone(),
            _lock: lock,
        });
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(conn, rx, &health))
            .expect("a thread starts");
        let retention = Retention {
            path: path.clone(),
            keep_decisions: settings.keep_decisions,
            keep_rollups: settings.keep_rollups,
            keep_prompts: settings.keep_prompts,
        };
        std::thread::Builder::new()
            .name("store-retention".into())
            .spawn(move || retention.run())
            .expect("a thread starts");
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoints(&path))
            .expect("a thread starts");
        Ok((store, restored))
    }

    /// The status's `persistence`.
    pub fn persistence(&self) -> Persistence {
        let detail = self
            .health
            .detail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Persistence {
            state: if detail.is_some() {
                PersistenceState::Failing
            } else {
                PersistenceState::Ok
            },
            since: detail
                .as_ref()
                .map(|(since, _)| since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            error: detail.map(|(_, e)| e),
            not_persisted: self.health.not_persisted.load(Ordering::Acquire),
            sync: Some(self.sync.name().to_owned()),
        }
    }

    /// True while commits fail.
    pub fn is_failing(&self) -> bool {
        self.health.failing.load(Ordering::Acquire)
    }

    /// What changed of [`Self::persistence`].
    pub fn changes(&self) -> &Changes {
        &self.health.changes
    }

    /// Sends `rows` to the writer at once, in order with everything sent
    /// after (a routed query's tokens come after its decision), and returns
    /// what resolves once their group is committed (or failed). The rows
    /// reach the writer whether or not anyone waits: when the channel is
    /// full, a task of their own waits for room.
    pub fn commit(self: &Arc<Self>, rows: Rows) -> Committing {
        self.send_rows(rows, false)
    }

    /// [`Self::commit`] for rows whose client is refused if the commit
    /// fails (an ingested batch): a failure does not count them among the
    /// decisions kept in memory only.
    pub fn commit_or_refuse(self: &Arc<Self>, rows: Rows) -> Committing {
        self.send_rows(rows, true)
    }

    fn send_rows(self: &Arc<Self>, rows: Rows, refusable: bool) -> Committing {
        let stopped = || CommitError(WRITER_STOPPED.into());
        let n = if refusable { 0 } else { rows.len() as u64 };
        let (done, wait) = oneshot::channel();
        let msg = Msg::Decisions {
            rows,
            done: Some(done),
            refusable,
        };
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(msg)) => {
                let store = Arc::clone(self);
                tokio::spawn(async move {
                    if store.tx.send_async(msg).await.is_err() {
                        store.health.fail(stopped().0, n);
                    }
                });
            }
            Err(flume::TrySendError::Disconnected(_)) => self.health.fail(stopped().0, n),
        }
        Committing(wait)
    }

    /// Sends `rows` to the writer without waiting for the commit (from code
    /// that is not async: tests, benchmarks). Blocks while the channel is
    /// full.
    pub fn write(&self, rows: Rows) {
        let n = rows.len() as u64;
        let msg = Msg::Decisions {
            rows,
            done: None,
            refusable: false,
        };
        if self.tx.send(msg).is_err() {
            self.health.fail(WRITER_STOPPED.into(), n);
        }
    }

    /// Commits what was sent, folds the WAL into the database and stops the
    /// writer (on a clean shutdown; a killed process loses nothing either,
    /// the WAL is replayed on the next start).
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send_async(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Adds the tokens the answer to decision `seq` took: to its row, its
    /// tier's totals and the current minute's rollup, and with `baseline`
    /// to the saving's baseline.
    pub fn add_usage(&self, seq: u64, tier: Tier, usage: Usage, baseline: bool) {
        let minute = minute_of(Utc::now().timestamp_millis());
        let _ = self.tx.try_send(Msg::Usage {
            seq,
            tier,
            minute,
            usage,
            baseline,
        });
    }

    /// Adds one group query's baseline (the tokens of one Q4 answer).
    pub fn add_baseline(&self, usage: Usage) {
        let _ = self.tx.try_send(Msg::Extra(BASELINE_ROW, usage));
    }

    /// Adds the tokens of one model assessor call.
    pub fn add_assessor_usage(&self, usage: Usage) {
        let _ = self.tx.try_send(Msg::Extra(ASSESSOR_ROW, usage));
    }

    /// Keeps the whole prompt of decision `seq` made at `ts_ms`
    /// (`--keep-prompts`), for `replay?scorer=` to score again.
    pub fn keep_prompt(&self, seq: u64, ts_ms: i64, text: &str) {
        let _ = self.tx.try_send(Msg::Prompt {
            seq,
            ts_ms,
            text: text.to_owned(),
        });
    }

    /// Keeps shadow judging's verdict on decision `seq` of `tier`: on its
    /// row, and counted in the current minute's rollup.
    pub fn add_verdict(&self, seq: u64, tier: Tier, verdict: shared::shadow::Verdict) {
        let minute = minute_of(Utc::now().timestamp_millis());
        let _ = self.tx.try_send(Msg::Verdict {
            seq,
            tier,
            minute,
            verdict,
        });
    }

    /// Counts one routed query's upstream call (after its retries) into the
    /// current minute's rollup.
    pub fn add_call(&self, tier: Tier, latency_ms: f64, ok: bool) {
        let minute = minute_of(Utc::now().timestamp_millis());
        let _ = self.tx.try_send(Msg::Call {
            tier,
            minute,
            latency_ms,
            ok,
        });
    }

    /// From now on, notes the minutes whose rollups change, for
    /// [`Self::take_dirty`] (a cluster publishes them).
    pub fn track_changes(&self) {
        let mut dirty = self
            .health
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        dirty.get_or_insert_with(BTreeSet::new);
    }

    /// The minutes whose rollup rows changed since the last call.
    pub fn take_dirty(&self) -> Vec<i64> {
        let mut dirty = self
            .health
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        dirty
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
            .into_iter()
            .collect()
    }

    /// Gives back minutes taken by [`Self::take_dirty`] that could not be
    /// published.
    pub fn put_dirty(&self, minutes: Vec<i64>) {
        let mut dirty = self
            .health
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(dirty) = dirty.as_mut() {
            dirty.extend(minutes);
        }
    }

    /// The whole rollup rows (of the hourly table when `hourly`) of the
    /// periods starting at `periods` (or, with `since`, of every period
    /// from that minute on): `(minute, tier, values)` in the order of
    /// [`rollup_columns`].
    pub fn rollup_rows(
        &self,
        hourly: bool,
        periods: Periods<'_>,
    ) -> rusqlite::Result<Vec<(i64, Tier, Vec<f64>)>> {
        let table = ROLLUP_TABLES[usize::from(hourly)].0;
        let cols: String = rollup_columns().iter().map(|c| format!(", {c}")).collect();
        let n = rollup_columns().len();
        self.read(|conn| {
            let row = |r: &rusqlite::Row<'_>| {
                let values = (0..n)
                    .map(|i| r.get::<_, f64>(i + 2))
                    .collect::<rusqlite::Result<Vec<f64>>>()?;
                Ok((r.get(0)?, tier_of(r.get(1)?), values))
            };
            let mut out = Vec::new();
            match periods {
                Periods::Since(first) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT minute, tier{cols} FROM {table} WHERE minute >= ?1"
                    ))?;
                    for r in stmt.query_map([first], row)? {
                        out.push(r?);
                    }
                }
                Periods::At(minutes) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT minute, tier{cols} FROM {table} WHERE minute = ?1"
                    ))?;
                    for m in minutes {
                        for r in stmt.query_map([m], row)? {
                            out.push(r?);
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// Runs `f` on a read-only connection (from a small pool).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let conn = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match conn {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(at: &[(u64, i64)]) -> Rows {
        let mut rows = Rows::with_capacity(at.len());
        for &(seq, ts_ms) in at {
            let t = Utc.timestamp_millis_opt(ts_ms).single().unwrap();
            let d = RoutingDecision::new(format!("t-{seq}"), &format!("q{seq}"), Tier::Q3, 4.0, t)
                .unwrap()
                .with_seq(seq, None);
            rows.push(&d, 0.5);
        }
        rows
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.read(|c| c.query_row(sql, [], |r| r.get(0))).unwrap()
    }

    #[test]
    fn retention_deletes_old_decisions_and_rollups_but_keeps_totals() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            dir: dir.path().to_owned(),
            sync: SyncMode::Normal,
            keep_decisions: Duration::from_secs(3_600),
            keep_rollups: Duration::from_secs(86_400),
            keep_prompts: Duration::from_secs(86_400),
        };
        let (store, restored) = Store::open(&settings, 10).unwrap();
        assert_eq!(restored.seq, 0);
        let now = Utc::now().timestamp_millis();
        let day = 86_400_000;
        store.write(rows(&[
            (1, now - 3 * day),
            (2, now - 2 * 3_600_000),
            (3, now),
        ]));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while count(&store, "SELECT count(*) FROM decisions") != 1 {
            assert!(std::time::Instant::now() < deadline, "retention ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The two-hour-old minute's rollup stays (kept a day); the
        // three-day-old one goes; the totals count all three.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while count(&store, "SELECT count(*) FROM rollups") != 2 {
            assert!(std::time::Instant::now() < deadline, "rollup retention ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            count(&store, "SELECT decisions FROM totals WHERE tier = 1"),
            3
        );
        assert_eq!(count(&store, "SELECT value FROM meta WHERE key = 'seq'"), 3);
    }
}
