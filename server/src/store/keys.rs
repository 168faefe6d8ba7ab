//! Virtual keys as the store keeps them: each key (a hash of its secret,
//! never the secret), what each spent per period, and `keys_rev`, which
//! every change bumps so that a running server notices a change that
//! another process (`server keys ...`) made.

use super::*;

/// A key as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// `key-` and 16 hex digits.
    pub id: String,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// The secret's first 8 characters (`osk-` and 4), to tell keys apart.
    pub prefix: String,
    /// What it is for.
    pub name: String,
    /// The team it spends for.
    pub team: Option<String>,
    /// Most USD per period.
    pub budget_usd: Option<f64>,
    /// The budget's period.
    pub period: shared::keys::Period,
    /// Most requests per minute.
    pub rpm: Option<u32>,
    /// Most tokens per minute.
    pub tpm: Option<u64>,
    /// The modes it may use (`None`: all).
    pub modes: Option<Vec<Mode>>,
    /// When it stops working (ms since the epoch).
    pub expires_at: Option<i64>,
    /// When it was made (ms).
    pub created_at: i64,
    /// When it was revoked (ms).
    pub revoked_at: Option<i64>,
}

/// What a key spent in one period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spend {
    /// The key's id.
    pub key_id: String,
    /// The period's start (ms).
    pub period_start: i64,
    /// USD.
    pub usd: f64,
    /// Requests.
    pub requests: u64,
    /// Tokens.
    pub tokens: u64,
    /// The minute it was spent in (its rollup row), ms since the epoch
    /// divided by 60,000.
    pub minute: i64,
}

const KEY_COLUMNS: &str = "id, hash, prefix, name, team, budget_usd, period, rpm, tpm, modes, expires_at, created_at, revoked_at";

fn modes_text(modes: &Option<Vec<Mode>>) -> Option<String> {
    modes
        .as_ref()
        .map(|m| m.iter().map(|m| m.name()).collect::<Vec<_>>().join(","))
}

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let hash: Vec<u8> = r.get(1)?;
    let period: String = r.get(6)?;
    let modes: Option<String> = r.get(9)?;
    Ok(KeyRecord {
        id: r.get(0)?,
        hash: hash.try_into().unwrap_or([0; 32]),
        prefix: r.get(2)?,
        name: r.get(3)?,
        team: r.get(4)?,
        budget_usd: r.get(5)?,
        period: shared::keys::Period::from_name(&period).unwrap_or_default(),
        rpm: r
            .get::<_, Option<i64>>(7)?
            .map(|n| n.clamp(0, u32::MAX.into()) as u32),
        tpm: r.get::<_, Option<i64>>(8)?.map(|n| n.max(0) as u64),
        modes: modes.map(|m| m.split(',').filter_map(Mode::from_name).collect()),
        expires_at: r.get(10)?,
        created_at: r.get(11)?,
        revoked_at: r.get(12)?,
    })
}

fn bump_rev(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'keys_rev'",
        [],
    )
    .map(drop)
}

/// Stores a new key.
pub fn insert_key(conn: &mut Connection, k: &KeyRecord) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
        params![
            k.id,
            &k.hash[..],
            k.prefix,
            k.name,
            k.team,
            k.budget_usd,
            k.period.name(),
            k.rpm.map(i64::from),
            k.tpm.map(|n| n.min(i64::MAX as u64) as i64),
            modes_text(&k.modes),
            k.expires_at,
            k.created_at,
            k.revoked_at,
        ],
    )?;
    bump_rev(&tx)?;
    tx.commit()
}

/// Stores a key's new settings (not its secret); false if there is none.
pub fn update_key(conn: &mut Connection, k: &KeyRecord) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let n = tx.execute(
        "UPDATE api_keys SET name = ?2, team = ?3, budget_usd = ?4, period = ?5, rpm = ?6, tpm = ?7, modes = ?8, expires_at = ?9, revoked_at = ?10 WHERE id = ?1",
        params![
            k.id,
            k.name,
            k.team,
            k.budget_usd,
            k.period.name(),
            k.rpm.map(i64::from),
            k.tpm.map(|n| n.min(i64::MAX as u64) as i64),
            modes_text(&k.modes),
            k.expires_at,
            k.revoked_at,
        ],
    )?;
    bump_rev(&tx)?;
    tx.commit()?;
    Ok(n > 0)
}

/// Revokes key `id` (or the key whose secret starts with `id`, when `id`
/// is a prefix) at `at_ms`; the revoked key, if there was one not revoked.
pub fn revoke_key(conn: &mut Connection, id: &str, at_ms: i64) -> rusqlite::Result<Option<String>> {
    let tx = conn.transaction()?;
    let found: Option<String> = tx
        .query_row(
            "SELECT id FROM api_keys WHERE id = ?1 AND revoked_at IS NULL",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(found) = &found {
        tx.execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1",
            params![found, at_ms],
        )?;
        bump_rev(&tx)?;
    }
    tx.commit()?;
    Ok(found)
}

/// Every key, newest first.
pub fn load_keys(conn: &Connection) -> rusqlite::Result<Vec<KeyRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id"
    ))?;
    let rows = stmt.query_map([], key_from_row)?;
    rows.collect()
}

/// The revision of the keys: it changes with every change to them.
pub fn keys_rev(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE key = 'keys_rev'", [], |r| {
        r.get(0)
    })
    .optional()
    .map(Option::unwrap_or_default)
}

/// What key `id` spent in the period starting at `period_start` (ms).
pub fn load_spend(conn: &Connection, id: &str, period_start: i64) -> rusqlite::Result<Spend> {
    conn.query_row(
        "SELECT spent_usd, requests, tokens FROM key_spend WHERE key_id = ?1 AND period_start = ?2",
        params![id, period_start],
        |r| {
            Ok(Spend {
                key_id: id.to_owned(),
                period_start,
                usd: r.get(0)?,
                requests: r.get::<_, i64>(1)?.max(0) as u64,
                tokens: r.get::<_, i64>(2)?.max(0) as u64,
                minute: 0,
            })
        },
    )
    .optional()
    .map(|s| {
        s.unwrap_or(Spend {
            key_id: id.to_owned(),
            period_start,
            ..Spend::default()
        })
    })
}

/// Adds `s` to its key's period (in the writer's transaction).
pub(super) fn add_spend(tx: &rusqlite::Transaction<'_>, s: &Spend) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO key_spend VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (key_id, period_start) DO UPDATE SET
           spent_usd = spent_usd + excluded.spent_usd,
           requests = requests + excluded.requests,
           tokens = tokens + excluded.tokens",
    )?;
    let (requests, tokens) = (
        s.requests.min(i64::MAX as u64) as i64,
        s.tokens.min(i64::MAX as u64) as i64,
    );
    stmt.execute(params![s.key_id, s.period_start, s.usd, requests, tokens])?;
    let mut minute = tx.prepare_cached(
        "INSERT INTO key_rollups VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (minute, key_id) DO UPDATE SET
           spent_usd = spent_usd + excluded.spent_usd,
           requests = requests + excluded.requests,
           tokens = tokens + excluded.tokens",
    )?;
    minute
        .execute(params![s.minute, s.key_id, s.usd, requests, tokens])
        .map(drop)
}

impl Store {
    /// Spend per key of the minutes `first..end`, summed per `step`
    /// minutes: `(bucket index from first, key id, USD, requests, tokens)`.
    pub fn key_rollups(
        &self,
        first: i64,
        end: i64,
        step: i64,
    ) -> rusqlite::Result<Vec<shared::history::KeyRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT (minute - ?1) / ?3 AS b, key_id, sum(spent_usd), sum(requests), sum(tokens)
                 FROM key_rollups WHERE minute >= ?1 AND minute < ?2 GROUP BY b, key_id",
            )?;
            let rows = stmt.query_map(params![first, end, step.max(1)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)?.max(0) as u64,
                    r.get::<_, i64>(4)?.max(0) as u64,
                ))
            })?;
            rows.collect()
        })
    }
}

/// Opens the database of the data dir `dir` for key changes, creating it
/// if needed, whether or not a server is using it (SQLite serialises the
/// writers; the server notices through `keys_rev`).
pub fn open_for_keys(dir: &Path) -> Result<Connection, OpenError> {
    std::fs::create_dir_all(dir).map_err(|error| OpenError::Create {
        path: dir.display().to_string(),
        error,
    })?;
    open_writer(&dir.join(DB_FILE), SyncMode::Full)
}

impl Store {
    /// Runs `f` on the connection for key changes (its own, beside the
    /// writer's: a key change commits at once, durably).
    pub fn keys_write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut slot = self
            .keys_conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            let conn = Connection::open(&self.path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            *slot = Some(conn);
        }
        f(slot.as_mut().expect("opened above"))
    }

    /// Adds what a key spent on one call, in order with everything sent
    /// before (its decision); resolves once committed. When the writer's
    /// channel is full, a task of its own waits for room (spend is never
    /// dropped).
    pub fn add_spend(self: &Arc<Self>, spend: Spend) -> Committing {
        let (done, wait) = oneshot::channel();
        match self.tx.try_send(Msg::Spend(spend, Some(done))) {
            Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {}
            Err(flume::TrySendError::Full(msg)) => {
                let store = Arc::clone(self);
                tokio::spawn(async move {
                    let _ = store.tx.send_async(msg).await;
                });
            }
        }
        Committing(wait)
    }
}
