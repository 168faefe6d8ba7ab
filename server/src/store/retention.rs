//! Retention: what is older than `--keep-decisions` / `--keep-rollups` is
//! deleted, a batch at a time, off the write path.

use super::*;

/// Deletes what is older than the retention, a batch at a time, off the
/// write path.
pub(super) struct Retention {
    pub(super) path: PathBuf,
    pub(super) keep_decisions: Duration,
    pub(super) keep_rollups: Duration,
    pub(super) keep_prompts: Duration,
}

impl Retention {
    pub(super) fn run(self) {
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
    pub(super) fn once(&self, conn: &Connection) -> rusqlite::Result<()> {
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
        // Prompts kept by --keep-prompts, by their own retention.
        let prompts = now.saturating_sub(self.keep_prompts.as_millis() as i64);
        loop {
            let n = conn.execute(
                "DELETE FROM prompts WHERE seq IN (SELECT seq FROM prompts WHERE ts < ?2 ORDER BY seq LIMIT ?1)",
                params![RETENTION_BATCH as i64, prompts],
            )?;
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let cutoff = minute_of(now.saturating_sub(self.keep_rollups.as_millis() as i64));
        // Spend per key and minute is a rollup too.
        loop {
            let n = conn.execute(
                "DELETE FROM key_rollups WHERE minute < ?1 AND minute < (SELECT min(minute) FROM key_rollups) + 360",
                [cutoff],
            )?;
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
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
