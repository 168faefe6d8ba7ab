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

/// Decisions on their way to the writer: each row's fixed fields, and all
/// their text (queries, signals as JSON) in one buffer, so a batch of any
/// size is two allocations to make and two to free on the writer's thread.
#[derive(Debug, Default)]
pub struct Rows {
    text: Vec<u8>,
    rows: Vec<Row>,
}

/// Signals as stored: `[["length",1.5],["code",4.8]]`, half the bytes of
/// the wire's objects.
struct StoredSignals<'a>(&'a [Signal]);

impl serde::Serialize for StoredSignals<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|x| (&x.name, x.weight)))
    }
}

/// A council or benchmark decision's group as stored (`grp`): its id and,
/// on a moderator's decision, the analysis.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredGroup {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    analysis: Option<shared::group::CouncilAnalysis>,
}

/// One stored decision's fixed fields; its text lies in [`Rows::text`].
#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    ts_ms: i64,
    tier: Tier,
    complexity: Complexity,
    mode: Option<Mode>,
    score: f64,
    decision_ms: f64,
    query: (usize, usize),
    signals: Option<(usize, usize)>,
    usage: Option<Usage>,
    group: Option<(usize, usize)>,
}

impl Rows {
    /// Room for `n` decisions.
    pub fn with_capacity(n: usize) -> Rows {
        Rows {
            text: Vec::with_capacity(n * 128),
            rows: Vec::with_capacity(n),
        }
    }

    /// Adds a decision that took `decision_ms` to make.
    pub fn push(&mut self, w: &RoutingDecision, decision_ms: f64) {
        let start = self.text.len();
        self.text.extend_from_slice(w.query.as_bytes());
        let query = (start, self.text.len());
        let signals = w.signals.as_ref().map(|s| {
            let start = self.text.len();
            serde_json::to_writer(&mut self.text, &StoredSignals(s)).expect("signals serialise");
            (start, self.text.len())
        });
        let group = w.group_id.as_ref().map(|id| {
            let start = self.text.len();
            let stored = StoredGroup {
                id: id.clone(),
                analysis: w.analysis.clone(),
            };
            serde_json::to_writer(&mut self.text, &stored).expect("a group serialises");
            (start, self.text.len())
        });
        self.rows.push(Row {
            seq: w.seq,
            ts_ms: w.timestamp.timestamp_millis(),
            tier: w.tier,
            complexity: w.complexity,
            mode: w.mode,
            score: w.score,
            decision_ms,
            query,
            signals,
            usage: w.usage,
            group,
        });
    }

    /// How many decisions.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The text at `(start, end)`: whole UTF-8 strings were written there.
    fn text(&self, (start, end): (usize, usize)) -> &str {
        std::str::from_utf8(&self.text[start..end]).unwrap_or_default()
    }
}

/// Why a group was not committed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CommitError(pub String);

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
    Call {
        tier: Tier,
        minute: i64,
        latency_ms: f64,
        ok: bool,
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
    pub fn commit(
        self: &Arc<Self>,
        rows: Rows,
    ) -> impl Future<Output = Result<(), CommitError>> + Send + use<> {
        self.send_rows(rows, false)
    }

    /// [`Self::commit`] for rows whose client is refused if the commit
    /// fails (an ingested batch): a failure does not count them among the
    /// decisions kept in memory only.
    pub fn commit_or_refuse(
        self: &Arc<Self>,
        rows: Rows,
    ) -> impl Future<Output = Result<(), CommitError>> + Send + use<> {
        self.send_rows(rows, true)
    }

    fn send_rows(
        self: &Arc<Self>,
        rows: Rows,
        refusable: bool,
    ) -> impl Future<Output = Result<(), CommitError>> + Send + use<> {
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
        async move { wait.await.unwrap_or_else(|_| Err(stopped())) }
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

/// Writes and removes a 64 KiB file: a full or read-only file system fails
/// here, before anything else is touched.
fn probe_space(dir: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let probe = dir.join(".write-probe");
    let result = (|| {
        let mut f = File::create(&probe)?;
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

fn classify(path: &Path, e: rusqlite::Error) -> OpenError {
    use rusqlite::ffi::ErrorCode;
    let shown = path.display().to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
            path: shown,
            error: e.to_string(),
        },
        _ => OpenError::Sqlite {
            path: shown,
            error: e.to_string(),
        },
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    tier INTEGER NOT NULL,
    mode INTEGER,
    score REAL NOT NULL,
    decision_ms REAL NOT NULL,
    query TEXT NOT NULL,
    signals TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    grp TEXT
);
CREATE TABLE IF NOT EXISTS totals (
    tier INTEGER PRIMARY KEY,
    decisions INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    with_usage INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0, 0, 0), (1, 0, 0, 0, 0), (2, 0, 0, 0, 0);
INSERT OR IGNORE INTO meta VALUES ('schema', 1), ('seq', 0);
";

/// The rollup tables and the minutes each row covers: per minute, and per
/// hour (kept in the same transaction, so a week at 1 h steps reads 504
/// rows, not 30,240).
const ROLLUP_TABLES: [(&str, i64); 2] = [("rollups", 1), ("rollups_hour", 60)];

/// A rollup table: one row per period (its first minute) and tier, then
/// the columns of [`rollup_columns`] (sums of ms are REAL, counts INTEGER).
fn rollup_schema(table: &str) -> String {
    let columns: String = rollup_columns()
        .iter()
        .map(|c| {
            let kind = if c.ends_with("_ms") {
                "REAL"
            } else {
                "INTEGER"
            };
            format!(", {c} {kind} NOT NULL DEFAULT 0")
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (minute INTEGER NOT NULL, tier INTEGER NOT NULL{columns},
            PRIMARY KEY (minute, tier)) WITHOUT ROWID;"
    )
}

fn open_writer(path: &Path, sync: SyncMode) -> Result<Connection, OpenError> {
    let sql = |e| classify(path, e);
    let foreign = |error: String| OpenError::Corrupt {
        path: path.display().to_string(),
        error,
    };
    let conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(foreign(format!("journal_mode is {mode}, not wal")));
    }
    conn.pragma_update(None, "synchronous", sync.name())
        .map_err(sql)?;
    // 64 MiB of page cache for the writer. Checkpoints run beside it (see
    // `checkpoints`); it does one itself only past WAL_PAGES.
    conn.pragma_update(None, "cache_size", -65_536)
        .map_err(sql)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_PAGES)
        .map_err(sql)?;
    conn.execute_batch(SCHEMA).map_err(sql)?;
    // A data dir from before council and benchmark modes: add their column.
    let has_group: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('decisions') WHERE name = 'grp'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql)?
        > 0;
    if !has_group {
        conn.execute_batch("ALTER TABLE decisions ADD COLUMN grp TEXT")
            .map_err(sql)?;
    }
    // The saving's baseline (row BASELINE_ROW); a data dir from before it
    // priced every token at Q4, so it starts from all the tokens.
    conn.execute(
        "INSERT OR IGNORE INTO totals SELECT ?1, 0, sum(prompt_tokens), sum(completion_tokens), sum(with_usage) FROM totals WHERE tier < 3",
        [BASELINE_ROW],
    )
    .map_err(sql)?;
    conn.execute(
        "INSERT OR IGNORE INTO totals VALUES (?1, 0, 0, 0, 0)",
        [ASSESSOR_ROW],
    )
    .map_err(sql)?;
    for (table, _) in ROLLUP_TABLES {
        conn.execute_batch(&rollup_schema(table)).map_err(sql)?;
    }
    let schema: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .map_err(sql)?;
    if schema != 1 {
        return Err(foreign(format!(
            "schema version {schema}, this server knows 1"
        )));
    }
    conn.execute(
        "INSERT OR IGNORE INTO meta VALUES ('instance', ?1)",
        [format!("{:x}", fastrand::u64(..))],
    )
    .map_err(sql)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// The `totals` row of the saving's baseline, after the three tiers'.
const BASELINE_ROW: i64 = 3;
/// The `totals` row of the model assessor's tokens.
const ASSESSOR_ROW: i64 = 4;

fn tier_of(i: i64) -> Tier {
    Tier::ALL[(i.clamp(0, 2)) as usize]
}

fn mode_code(mode: Option<Mode>) -> Option<i64> {
    mode.map(|m| match m {
        Mode::Simple => 0,
        Mode::TwoStage => 1,
        Mode::Council => 2,
        Mode::Benchmark => 3,
    })
}

/// The columns [`decision_from_row`] reads, in order.
pub const DECISION_COLUMNS: &str = "seq, ts, tier, mode, score, decision_ms, query, signals, prompt_tokens, completion_tokens, grp";

/// A stored decision back as the service keeps it. Its id is not stored:
/// every decision of a data dir is `INSTANCE-SEQ`.
pub fn decision_from_row(
    r: &rusqlite::Row<'_>,
    instance: &str,
) -> rusqlite::Result<RecordedDecision> {
    let seq: i64 = r.get(0)?;
    let ts: i64 = r.get(1)?;
    let mode: Option<i64> = r.get(3)?;
    let score: f64 = r.get(4)?;
    let decision_ms: f64 = r.get(5)?;
    let query: String = r.get(6)?;
    let signals: Option<String> = r.get(7)?;
    let prompt: Option<i64> = r.get(8)?;
    let completion: Option<i64> = r.get(9)?;
    let timestamp = Utc
        .timestamp_millis_opt(ts)
        .single()
        .unwrap_or_else(Utc::now);
    let bad = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, what.into())
    };
    let id = format!("{instance}-{seq}");
    let mut d = RoutingDecision::from_kept(id, &query, tier_of(r.get(2)?), score, timestamp)
        .map_err(|e| bad(e.to_string()))?;
    d.seq = seq as u64;
    d.mode = match mode {
        Some(0) => Some(Mode::Simple),
        Some(2) => Some(Mode::Council),
        Some(3) => Some(Mode::Benchmark),
        Some(_) => Some(Mode::TwoStage),
        None => None,
    };
    let group: Option<String> = r.get(10)?;
    if let Some(group) = group {
        let StoredGroup { id, analysis } =
            serde_json::from_str(&group).map_err(|e| bad(e.to_string()))?;
        d.group_id = Some(id);
        d.analysis = analysis;
    }
    d.signals = signals
        .map(|s| serde_json::from_str::<Vec<(String, f64)>>(&s))
        .transpose()
        .map_err(|e| bad(e.to_string()))?
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, weight)| Signal { name, weight })
                .collect()
        });
    d.usage = match (prompt, completion) {
        (Some(p), Some(c)) => Some(Usage {
            prompt_tokens: p as u64,
            completion_tokens: c as u64,
        }),
        _ => None,
    };
    RecordedDecision::new(d, decision_ms).map_err(|e| bad(e.to_string()))
}

fn restore(conn: &Connection, capacity: usize) -> rusqlite::Result<Restored> {
    let mut out = Restored {
        seq: conn.query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
        instance: conn.query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
            r.get(0)
        })?,
        ..Restored::default()
    };
    let mut totals = conn.prepare(
        "SELECT tier, decisions, prompt_tokens, completion_tokens, with_usage FROM totals",
    )?;
    let rows = totals.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (tier, decisions, prompt, completion, with_usage) = row?;
        let tokens = Tokens {
            prompt: prompt as u64,
            completion: completion as u64,
            decisions: with_usage as u64,
        };
        match tier {
            BASELINE_ROW => out.baseline = tokens,
            ASSESSOR_ROW => out.assessor = tokens,
            _ => {
                let i = tier_of(tier).index();
                out.per_tier[i] = decisions as u64;
                out.tokens[i] = tokens;
            }
        }
    }
    let mut newest = conn.prepare(&format!(
        "SELECT {DECISION_COLUMNS} FROM decisions ORDER BY seq DESC LIMIT ?1"
    ))?;
    let mut buffer = newest
        .query_map([capacity as i64], |r| decision_from_row(r, &out.instance))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    buffer.reverse();
    // Gaps are fine (a refused batch's seqs, rows a failed commit kept in
    // memory only): the buffer is in seq order, which is all it needs, so
    // the newest `capacity` come back as they were before the restart.
    if buffer.last().is_some_and(|d| d.decision.seq != out.seq) {
        buffer.clear();
    }
    out.buffer = buffer;
    Ok(out)
}

/// What one group adds to a rollup row.
#[derive(Default, Clone, PartialEq)]
struct Delta {
    decisions: i64,
    complexity: [i64; 3],
    two_stage: i64,
    simple_mode: i64,
    decision_ms: f64,
    dt: [i64; DECISION_TIME_BOUNDS_MS.len() + 1],
    prompt: i64,
    completion: i64,
    calls: i64,
    errors: i64,
    latency_ms: f64,
    lat: [i64; LATENCY_BOUNDS_MS.len() + 1],
}

impl Delta {
    /// Its values in the order of [`rollup_columns`].
    fn values(&self) -> impl Iterator<Item = rusqlite::types::Value> + '_ {
        let sums = [
            self.decisions.into(),
            self.complexity[0].into(),
            self.complexity[1].into(),
            self.complexity[2].into(),
            self.two_stage.into(),
            self.simple_mode.into(),
            self.decision_ms.into(),
            self.prompt.into(),
            self.completion.into(),
            self.calls.into(),
            self.errors.into(),
            self.latency_ms.into(),
        ];
        debug_assert_eq!(sums.len(), ROLLUP_SUMS.len());
        sums.into_iter()
            .chain(self.dt.iter().chain(&self.lat).map(|v| (*v).into()))
    }

    /// Counts an answer's tokens, here and in its tier's `totals` row
    /// (decisions, prompt, completion, with usage).
    fn tokens(&mut self, totals: &mut [i64; 4], u: &Usage) {
        self.prompt += u.prompt_tokens as i64;
        self.completion += u.completion_tokens as i64;
        totals[1] += u.prompt_tokens as i64;
        totals[2] += u.completion_tokens as i64;
        totals[3] += 1;
    }

    fn add(&mut self, o: &Delta) {
        self.decisions += o.decisions;
        for (a, b) in self.complexity.iter_mut().zip(o.complexity) {
            *a += b;
        }
        self.two_stage += o.two_stage;
        self.simple_mode += o.simple_mode;
        self.decision_ms += o.decision_ms;
        for (a, b) in self.dt.iter_mut().zip(o.dt) {
            *a += b;
        }
        self.prompt += o.prompt;
        self.completion += o.completion;
        self.calls += o.calls;
        self.errors += o.errors;
        self.latency_ms += o.latency_ms;
        for (a, b) in self.lat.iter_mut().zip(o.lat) {
            *a += b;
        }
    }
}

fn write_loop(mut conn: Connection, rx: flume::Receiver<Msg>, health: &Health) {
    let upsert = ROLLUP_TABLES.map(|(table, _)| upsert_sql(table));
    let mut last_commit = std::time::Instant::now();
    loop {
        let first = if health.failing.load(Ordering::Acquire) {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(m) => Some(m),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        };
        // Whatever else is waiting joins the group. A small group (a
        // trickle: a decision a millisecond) also takes in whatever arrives
        // until COMMIT_EVERY after the previous commit began, the writer
        // asleep meanwhile (senders do not wake it): several decisions share
        // one commit instead of each paying for its own, at the cost of a
        // few milliseconds each. A large group (load) never waits: its
        // senders are all in it, waiting for it.
        let mut group = Vec::new();
        let mut rows = 0;
        let drain = |group: &mut Vec<Msg>, rows: &mut usize| {
            while *rows < GROUP_ROWS {
                let Ok(m) = rx.try_recv() else { break };
                *rows += msg_rows(&m);
                group.push(m);
            }
        };
        if let Some(m) = first {
            rows += msg_rows(&m);
            group.push(m);
            drain(&mut group, &mut rows);
            let wait =
                (last_commit + COMMIT_EVERY).saturating_duration_since(std::time::Instant::now());
            if rows < TRICKLE_ROWS && !wait.is_zero() {
                std::thread::sleep(wait);
                drain(&mut group, &mut rows);
            }
        }
        last_commit = std::time::Instant::now();
        let close = match group.last() {
            Some(Msg::Close(_)) => group.pop(),
            _ => None,
        };
        let result = match (group.is_empty(), &close) {
            (true, Some(_)) => Ok(()),
            _ => commit_group(&mut conn, &group, &upsert)
                .map(|minutes| {
                    let mut dirty = health.dirty.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(dirty) = dirty.as_mut() {
                        dirty.extend(minutes);
                    }
                })
                .map_err(|e| CommitError(e.to_string())),
        };
        match &result {
            Ok(()) => health.ok(),
            Err(e) => {
                let kept: usize = group
                    .iter()
                    .map(|m| match m {
                        Msg::Decisions {
                            refusable: true, ..
                        } => 0,
                        m => msg_rows(m),
                    })
                    .sum();
                health.fail(e.0.clone(), kept as u64)
            }
        }
        for m in group {
            if let Msg::Decisions {
                done: Some(done), ..
            } = m
            {
                let _ = done.send(result.clone());
            }
        }
        if let Some(Msg::Close(done)) = close {
            // Everything before it is committed: leave one file behind.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "the last checkpoint failed; the WAL is kept and replayed on start");
            }
            let _ = done.send(());
            return;
        }
    }
}

fn msg_rows(m: &Msg) -> usize {
    match m {
        Msg::Decisions { rows, .. } => rows.len(),
        // Nothing joins a group after the last message.
        Msg::Close(_) => GROUP_ROWS,
        _ => 0,
    }
}

fn upsert_sql(table: &str) -> String {
    let cols = rollup_columns();
    let names = cols.join(", ");
    let marks: Vec<String> = (0..cols.len()).map(|i| format!("?{}", i + 3)).collect();
    let sets: Vec<String> = cols
        .iter()
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} (minute, tier, {names}) VALUES (?1, ?2, {}) ON CONFLICT (minute, tier) DO UPDATE SET {}",
        marks.join(", "),
        sets.join(", ")
    )
}

/// Rows one multi-row insert carries.
const INSERT_ROWS: usize = 25;
/// Columns of a stored decision, as [`insert_rows`] binds them.
const INSERT_COLUMNS: usize = 11;

/// `INSERT` of `n` decisions in one statement.
fn insert_sql(n: usize) -> String {
    let row = format!("({})", ["?"; INSERT_COLUMNS].join(", "));
    format!(
        "INSERT INTO decisions ({DECISION_COLUMNS}) VALUES {}",
        vec![row; n].join(", ")
    )
}

/// Binds `rows` (as many as `stmt` was made for) and runs it.
fn insert_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    batch: &Rows,
    rows: &[Row],
) -> rusqlite::Result<()> {
    for (i, r) in rows.iter().enumerate() {
        let at = i * INSERT_COLUMNS;
        stmt.raw_bind_parameter(at + 1, r.seq as i64)?;
        stmt.raw_bind_parameter(at + 2, r.ts_ms)?;
        stmt.raw_bind_parameter(at + 3, r.tier.index() as i64)?;
        stmt.raw_bind_parameter(at + 4, mode_code(r.mode))?;
        stmt.raw_bind_parameter(at + 5, r.score)?;
        stmt.raw_bind_parameter(at + 6, r.decision_ms)?;
        stmt.raw_bind_parameter(at + 7, batch.text(r.query))?;
        stmt.raw_bind_parameter(at + 8, r.signals.map(|s| batch.text(s)))?;
        stmt.raw_bind_parameter(at + 9, r.usage.map(|u| u.prompt_tokens as i64))?;
        stmt.raw_bind_parameter(at + 10, r.usage.map(|u| u.completion_tokens as i64))?;
        stmt.raw_bind_parameter(at + 11, r.group.map(|g| batch.text(g)))?;
    }
    stmt.raw_execute().map(drop)
}

/// Commits a group; returns the minutes whose rollup rows it changed.
fn commit_group(
    conn: &mut Connection,
    group: &[Msg],
    upsert: &[String; 2],
) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction()?;
    if group.is_empty() {
        // A probe while failing: a write that must reach the disk.
        tx.execute(
            "INSERT OR REPLACE INTO meta VALUES ('probe', ?1)",
            [Utc::now().timestamp_millis()],
        )?;
        return tx.commit().map(|()| Vec::new());
    }
    // A group spans a minute or two: a short list beats a hash map.
    let mut deltas: Vec<((i64, usize), Delta)> = Vec::new();
    type Deltas = Vec<((i64, usize), Delta)>;
    fn delta(deltas: &mut Deltas, key: (i64, usize)) -> &mut Delta {
        let at = match deltas.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                deltas.push((key, Delta::default()));
                deltas.len() - 1
            }
        };
        &mut deltas[at].1
    }
    // Per tier, then the baseline's row: decisions, prompt and completion
    // tokens, decisions with usage.
    let mut totals = [[0i64; 4]; 5];
    let count = |totals: &mut [[i64; 4]; 5], row: i64, u: &Usage| {
        let t = &mut totals[row as usize];
        t[1] += u.prompt_tokens as i64;
        t[2] += u.completion_tokens as i64;
        t[3] += 1;
    };
    let count_base = |totals: &mut [[i64; 4]; 5], u: &Usage| count(totals, BASELINE_ROW, u);
    let mut max_seq = 0u64;
    {
        let mut one = tx.prepare_cached(&insert_sql(1))?;
        let mut many = tx.prepare_cached(&insert_sql(INSERT_ROWS))?;
        let mut usage = tx.prepare_cached(
            "UPDATE decisions SET prompt_tokens = ?2, completion_tokens = ?3 WHERE seq = ?1",
        )?;
        for m in group {
            match m {
                Msg::Decisions { rows: batch, .. } => {
                    // Several rows a statement: the per-statement work is
                    // a good part of a small row's insert.
                    let mut chunks = batch.rows.chunks_exact(INSERT_ROWS);
                    for chunk in &mut chunks {
                        insert_rows(&mut many, batch, chunk)?;
                    }
                    for r in chunks.remainder() {
                        insert_rows(&mut one, batch, std::slice::from_ref(r))?;
                    }
                    for r in &batch.rows {
                        max_seq = max_seq.max(r.seq);
                        let t = r.tier.index();
                        let d = delta(&mut deltas, (minute_of(r.ts_ms), t));
                        d.decisions += 1;
                        d.complexity[r.complexity as usize] += 1;
                        match r.mode {
                            Some(Mode::TwoStage) => d.two_stage += 1,
                            Some(Mode::Simple) => d.simple_mode += 1,
                            // The history's mode split is simple vs
                            // two-stage; group modes count in the totals.
                            Some(Mode::Council | Mode::Benchmark) | None => {}
                        }
                        d.decision_ms += r.decision_ms;
                        d.dt[bucket(&DECISION_TIME_BOUNDS_MS, r.decision_ms)] += 1;
                        totals[t][0] += 1;
                        if let Some(u) = &r.usage {
                            d.tokens(&mut totals[t], u);
                            if r.group.is_none() {
                                count_base(&mut totals, u);
                            }
                        }
                    }
                }
                Msg::Usage {
                    seq,
                    tier,
                    minute,
                    usage: u,
                    baseline,
                } => {
                    usage.execute(params![
                        *seq as i64,
                        u.prompt_tokens as i64,
                        u.completion_tokens as i64
                    ])?;
                    let t = tier.index();
                    delta(&mut deltas, (*minute, t)).tokens(&mut totals[t], u);
                    if *baseline {
                        count_base(&mut totals, u);
                    }
                }
                Msg::Extra(row, u) => count(&mut totals, *row, u),
                Msg::Close(_) => {}
                Msg::Call {
                    tier,
                    minute,
                    latency_ms,
                    ok,
                } => {
                    let d = delta(&mut deltas, (*minute, tier.index()));
                    d.calls += 1;
                    d.errors += i64::from(!ok);
                    d.latency_ms += latency_ms;
                    d.lat[bucket(&LATENCY_BOUNDS_MS, *latency_ms)] += 1;
                }
            }
        }
        // The same deltas summed per hour for the hourly table.
        let mut hours: Deltas = Vec::new();
        for ((minute, tier), d) in &deltas {
            delta(&mut hours, (minute.div_euclid(60) * 60, *tier)).add(d);
        }
        for (sql, deltas) in upsert.iter().zip([&deltas, &hours]) {
            let mut up = tx.prepare_cached(sql)?;
            for ((minute, tier), d) in deltas {
                let key = [(*minute).into(), (*tier as i64).into()];
                up.execute(rusqlite::params_from_iter(
                    key.into_iter().chain(d.values()),
                ))?;
            }
        }
        let mut total = tx.prepare_cached(
            "UPDATE totals SET decisions = decisions + ?2, prompt_tokens = prompt_tokens + ?3,
             completion_tokens = completion_tokens + ?4, with_usage = with_usage + ?5 WHERE tier = ?1",
        )?;
        for (t, v) in totals.iter().enumerate() {
            if v.iter().any(|x| *x != 0) {
                total.execute(params![t as i64, v[0], v[1], v[2], v[3]])?;
            }
        }
        if max_seq > 0 {
            tx.execute(
                "UPDATE meta SET value = max(value, ?1) WHERE key = 'seq'",
                [max_seq as i64],
            )?;
        }
    }
    tx.commit()?;
    Ok(deltas.into_iter().map(|((minute, _), _)| minute).collect())
}

/// Copies the WAL's committed pages into the database file every
/// [`CHECKPOINT_EVERY`], beside the writer instead of inside its commits
/// (passive: it never blocks the writer). The writer checkpoints by itself
/// only when the WAL outgrows [`WAL_PAGES`] (a checkpoint that could not
/// catch up under sustained load), and then little is left to copy.
fn checkpoints(path: &Path) {
    let mut conn = None;
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if conn.is_none() {
            conn = Connection::open(path).ok();
        }
        if let Some(c) = &conn
            && let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::debug!(error = %e, "checkpoint: will try again");
        }
    }
}

/// How often the WAL is checkpointed beside the writer.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages past which the writer checkpoints by itself (SQLite's default,
/// 4 MiB): the checkpointer has copied nearly all of them by then, so the
/// writer's own pass is short and the WAL starts over small.
const WAL_PAGES: i64 = 1_000;

/// Deletes what is older than the retention, a batch at a time, off the
/// write path.
struct Retention {
    path: PathBuf,
    keep_decisions: Duration,
    keep_rollups: Duration,
}

impl Retention {
    fn run(self) {
        let mut conn = None;
        loop {
            if conn.is_none() {
                conn = Connection::open(&self.path)
                    .and_then(|c| c.busy_timeout(Duration::from_secs(5)).map(|()| c))
                    .ok();
            }
            if let Some(c) = &conn
                && let Err(e) = self.once(c)
            {
                tracing::warn!(error = %e, "retention: will try again");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// One pass: decisions first, then rollups, each in batches.
    fn once(&self, conn: &Connection) -> rusqlite::Result<()> {
        let now = Utc::now().timestamp_millis();
        let cutoff = now.saturating_sub(self.keep_decisions.as_millis() as i64);
        // Decisions are in time order by seq (give or take a clock step):
        // look at the oldest only, so a store with nothing to delete costs
        // one lookup.
        loop {
            let oldest: Option<i64> = conn
                .query_row("SELECT ts FROM decisions ORDER BY seq LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if oldest.is_none_or(|ts| ts >= cutoff) {
                break;
            }
            let n = conn.execute(
                "DELETE FROM decisions WHERE seq IN (SELECT seq FROM decisions ORDER BY seq LIMIT ?1) AND ts < ?2",
                params![RETENTION_BATCH as i64, cutoff],
            )?;
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let cutoff = minute_of(now.saturating_sub(self.keep_rollups.as_millis() as i64));
        for (table, per) in ROLLUP_TABLES {
            // An hour's row goes once the whole hour is past the cutoff.
            let cutoff = cutoff - (per - 1);
            loop {
                let n = conn.execute(
                    &format!(
                        "DELETE FROM {table} WHERE minute < ?1 AND minute < (SELECT min(minute) FROM {table}) + ?2"
                    ),
                    [cutoff, 360 * per],
                )?;
                if n == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }
}

/// Which stored decisions a page or an export holds.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this tier.
    pub tier: Option<Tier>,
    /// Only this complexity.
    pub complexity: Option<Complexity>,
    /// Only this mode (`Some(None)`: decisions reported without one).
    pub mode: Option<Option<Mode>>,
    /// Only queries holding this text (case-sensitive).
    pub text: Option<String>,
}

impl Store {
    /// Up to `limit` stored decisions with `seq < before` that pass
    /// `filter`, newest first (keyset paging: the next page is
    /// `before = the last one's seq`).
    pub fn page(
        &self,
        filter: &Filter,
        before: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<RoutingDecision>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DECISION_COLUMNS} FROM decisions
                 WHERE seq < ?1
                   AND (?2 IS NULL OR tier = ?2)
                   AND (?3 IS NULL OR (?3 = 0 AND score < 3) OR (?3 = 1 AND score >= 3 AND score < 7) OR (?3 = 2 AND score >= 7))
                   AND (?4 = 0 OR mode IS ?5)
                   AND (?6 IS NULL OR instr(query, ?6) > 0)
                 ORDER BY seq DESC LIMIT ?7"
            ))?;
            let rows = stmt.query_map(
                params![
                    before.min(i64::MAX as u64) as i64,
                    filter.tier.map(|t| t.index() as i64),
                    filter.complexity.map(|c| c as i64),
                    i64::from(filter.mode.is_some()),
                    filter.mode.and_then(mode_code),
                    filter.text,
                    limit as i64,
                ],
                |r| decision_from_row(r, &self.instance).map(|d| d.decision),
            )?;
            rows.collect()
        })
    }

    /// The rollups of the minutes `first..end`, summed per `step` minutes
    /// and tier: `(bucket index from first, tier, sums)` in the column
    /// order of [`ROLLUP_SUMS`]. Steps of whole hours (with `first` and
    /// `end` on hours) read the hourly table.
    pub fn rollups(
        &self,
        first: i64,
        end: i64,
        step: i64,
    ) -> rusqlite::Result<Vec<(i64, Tier, Vec<f64>)>> {
        self.read(|conn| {
            let sums: String = rollup_columns()
                .iter()
                .map(|c| format!(", total({c})"))
                .collect();
            let hourly = step % 60 == 0 && first % 60 == 0 && end % 60 == 0;
            let table = ROLLUP_TABLES[usize::from(hourly)].0;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT (minute - ?1) / ?3 AS b, tier{sums} FROM {table}
                 WHERE minute >= ?1 AND minute < ?2 GROUP BY b, tier"
            ))?;
            let n = rollup_columns().len();
            let rows = stmt.query_map(params![first, end, step], |r| {
                let values = (0..n)
                    .map(|i| r.get::<_, f64>(i + 2))
                    .collect::<rusqlite::Result<Vec<f64>>>()?;
                Ok((r.get(0)?, tier_of(r.get(1)?), values))
            })?;
            rows.collect()
        })
    }
}

/// Which rollup periods [`Store::rollup_rows`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Periods<'a> {
    /// Those starting at these minutes.
    At(&'a [i64]),
    /// Every one from this minute on.
    Since(i64),
}

/// The summed rollup measures, in order (histogram buckets last).
pub const ROLLUP_SUMS: [&str; 12] = [
    "decisions",
    "simple",
    "moderate",
    "complex",
    "two_stage",
    "simple_mode",
    "decision_ms",
    "prompt_tokens",
    "completion_tokens",
    "calls",
    "errors",
    "latency_ms",
];

/// [`ROLLUP_SUMS`] followed by the decision-time and latency buckets.
pub fn rollup_columns() -> Vec<String> {
    let mut cols: Vec<String> = ROLLUP_SUMS.iter().map(|s| s.to_string()).collect();
    cols.extend((0..=DECISION_TIME_BOUNDS_MS.len()).map(|i| format!("dt{i}")));
    cols.extend((0..=LATENCY_BOUNDS_MS.len()).map(|i| format!("lat{i}")));
    cols
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
