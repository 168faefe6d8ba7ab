//! The writer thread: commit groups of decisions with the rollups and
//! totals they change, in one transaction each, and the WAL's checkpoints.

use super::*;

/// What one group adds to a rollup row.
#[derive(Default, Clone, PartialEq)]
pub(super) struct Delta {
    pub(super) decisions: i64,
    pub(super) complexity: [i64; 3],
    pub(super) two_stage: i64,
    pub(super) simple_mode: i64,
    pub(super) decision_ms: f64,
    pub(super) dt: [i64; DECISION_TIME_BOUNDS_MS.len() + 1],
    pub(super) prompt: i64,
    pub(super) completion: i64,
    pub(super) calls: i64,
    pub(super) errors: i64,
    pub(super) latency_ms: f64,
    pub(super) lat: [i64; LATENCY_BOUNDS_MS.len() + 1],
    /// Shadow judging's verdicts: better, tie, worse.
    pub(super) verdicts: [i64; 3],
}

impl Delta {
    /// Its values in the order of [`rollup_columns`].
    pub(super) fn values(&self) -> impl Iterator<Item = rusqlite::types::Value> + '_ {
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
            self.verdicts[0].into(),
            self.verdicts[1].into(),
            self.verdicts[2].into(),
        ];
        debug_assert_eq!(sums.len(), ROLLUP_SUMS.len());
        sums.into_iter()
            .chain(self.dt.iter().chain(&self.lat).map(|v| (*v).into()))
    }

    /// Counts an answer's tokens, here and in its tier's `totals` row
    /// (decisions, prompt, completion, with usage).
    pub(super) fn tokens(&mut self, totals: &mut [i64; 4], u: &Usage) {
        self.prompt += u.prompt_tokens as i64;
        self.completion += u.completion_tokens as i64;
        totals[1] += u.prompt_tokens as i64;
        totals[2] += u.completion_tokens as i64;
        totals[3] += 1;
    }

    pub(super) fn add(&mut self, o: &Delta) {
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
        for (a, b) in self.verdicts.iter_mut().zip(o.verdicts) {
            *a += b;
        }
    }
}

pub(super) fn write_loop(mut conn: Connection, rx: flume::Receiver<Msg>, health: &Health) {
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
            }
            | Msg::Spend(_, Some(done)) = m
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

pub(super) fn msg_rows(m: &Msg) -> usize {
    match m {
        Msg::Decisions { rows, .. } => rows.len(),
        // Nothing joins a group after the last message.
        Msg::Close(_) => GROUP_ROWS,
        _ => 0,
    }
}

pub(super) fn upsert_sql(table: &str) -> String {
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
pub(super) const INSERT_ROWS: usize = 25;
/// Columns of a stored decision, as [`insert_rows`] binds them.
pub(super) const INSERT_COLUMNS: usize = 13;

/// `INSERT` of `n` decisions in one statement.
pub(super) fn insert_sql(n: usize) -> String {
    let row = format!("({})", ["?"; INSERT_COLUMNS].join(", "));
    format!(
        "INSERT INTO decisions ({INSERTED_COLUMNS}) VALUES {}",
        vec![row; n].join(", ")
    )
}

/// Binds `rows` (as many as `stmt` was made for) and runs it.
pub(super) fn insert_rows(
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
        stmt.raw_bind_parameter(at + 12, r.key_id.map(|k| batch.text(k)))?;
        stmt.raw_bind_parameter(at + 13, r.team.map(|t| batch.text(t)))?;
    }
    stmt.raw_execute().map(drop)
}

/// Commits a group; returns the minutes whose rollup rows it changed.
pub(super) fn commit_group(
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
                Msg::Spend(spend, _) => add_spend(&tx, spend)?,
                Msg::Prompt { seq, ts_ms, text } => {
                    tx.prepare_cached("INSERT OR REPLACE INTO prompts VALUES (?1, ?2, ?3)")?
                        .execute(params![*seq as i64, ts_ms, text])?;
                }
                Msg::Verdict {
                    seq,
                    tier,
                    minute,
                    verdict,
                } => {
                    tx.prepare_cached("UPDATE decisions SET verdict = ?2 WHERE seq = ?1")?
                        .execute(params![*seq as i64, verdict.label()])?;
                    let i = shared::shadow::Verdict::ALL
                        .iter()
                        .position(|v| v == verdict)
                        .unwrap_or(1);
                    delta(&mut deltas, (*minute, tier.index())).verdicts[i] += 1;
                }
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
pub(super) fn checkpoints(path: &Path) {
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
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages past which the writer checkpoints by itself (SQLite's default,
/// 4 MiB): the checkpointer has copied nearly all of them by then, so the
/// writer's own pass is short and the WAL starts over small.
pub(super) const WAL_PAGES: i64 = 1_000;
