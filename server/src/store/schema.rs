//! The database's tables, how its connections are opened, and what a start
//! restores from it.

use super::*;

/// Writes and removes a 64 KiB file: a full or read-only file system fails
/// here, before anything else is touched.
pub(super) fn probe_space(dir: &Path) -> std::io::Result<()> {
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

pub(super) fn classify(path: &Path, e: rusqlite::Error) -> OpenError {
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

pub(super) const SCHEMA: &str = "
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

/// Virtual keys (only a hash of each secret), what each spent per period,
/// and `keys_rev`, bumped by every change so that a running server sees
/// one made by another process (`server keys`).
pub(super) const KEY_SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS decisions_key ON decisions (key_id, seq) WHERE key_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    team TEXT,
    budget_usd REAL,
    period TEXT NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    modes TEXT,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS key_spend (
    key_id TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    spent_usd REAL NOT NULL,
    requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (key_id, period_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_rollups (
    minute INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    spent_usd REAL NOT NULL,
    requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (minute, key_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('keys_rev', 0);
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS prompts_ts ON prompts (ts);
";

/// The rollup tables and the minutes each row covers: per minute, and per
/// hour (kept in the same transaction, so a week at 1 h steps reads 504
/// rows, not 30,240).
pub(super) const ROLLUP_TABLES: [(&str, i64); 2] = [("rollups", 1), ("rollups_hour", 60)];

/// A rollup table: one row per period (its first minute) and tier, then
/// the columns of [`rollup_columns`] (sums of ms are REAL, counts INTEGER).
pub(super) fn rollup_schema(table: &str) -> String {
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

pub(super) fn open_writer(path: &Path, sync: SyncMode) -> Result<Connection, OpenError> {
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
    // A data dir from before virtual keys: add the key's id and team.
    let has_key: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('decisions') WHERE name = 'key_id'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql)?
        > 0;
    if !has_key {
        conn.execute_batch(
            "ALTER TABLE decisions ADD COLUMN key_id TEXT; ALTER TABLE decisions ADD COLUMN team TEXT;",
        )
        .map_err(sql)?;
    }
    conn.execute_batch(KEY_SCHEMA).map_err(sql)?;
    // A data dir from before shadow judging: add each decision's verdict.
    if !has_column(&conn, "decisions", "verdict").map_err(sql)? {
        conn.execute_batch("ALTER TABLE decisions ADD COLUMN verdict TEXT")
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
        // A data dir from before a measure (the verdicts): add its column.
        for c in rollup_columns() {
            if !has_column(&conn, table, &c).map_err(sql)? {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {c} INTEGER NOT NULL DEFAULT 0"
                ))
                .map_err(sql)?;
            }
        }
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

/// Whether `table` has `column`.
fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}
pub(super) fn restore(conn: &Connection, capacity: usize) -> rusqlite::Result<Restored> {
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
