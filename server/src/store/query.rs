//! Reads: a page of the decision log (keyset paging, filters) and the
//! rollups of a range.

use super::*;

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
    /// Only decisions of this virtual key (its id).
    pub key: Option<String>,
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
                   AND (?8 IS NULL OR key_id = ?8)
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
                    filter.key,
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

impl Store {
    /// One pass over the decisions made in `from_ms..to_ms`, each given to
    /// `f` as it is read (never all held): its tier, mode, score, usage and,
    /// with `prompts`, its kept prompt.
    pub fn replay_rows(
        &self,
        from_ms: i64,
        to_ms: i64,
        prompts: bool,
        mut f: impl FnMut(Tier, Option<Mode>, f64, Option<Usage>, Option<String>),
    ) -> rusqlite::Result<()> {
        self.read(|conn| {
            let sql = if prompts {
                "SELECT d.tier, d.mode, d.score, d.prompt_tokens, d.completion_tokens, p.text
                 FROM decisions d LEFT JOIN prompts p ON p.seq = d.seq
                 WHERE d.ts >= ?1 AND d.ts < ?2"
            } else {
                "SELECT tier, mode, score, prompt_tokens, completion_tokens, NULL
                 FROM decisions WHERE ts >= ?1 AND ts < ?2"
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params![from_ms, to_ms])?;
            while let Some(r) = rows.next()? {
                let usage = match (r.get::<_, Option<i64>>(3)?, r.get::<_, Option<i64>>(4)?) {
                    (Some(p), Some(c)) => Some(Usage {
                        prompt_tokens: p.max(0) as u64,
                        completion_tokens: c.max(0) as u64,
                    }),
                    _ => None,
                };
                f(
                    tier_of(r.get(0)?),
                    mode_of(r.get(1)?),
                    r.get(2)?,
                    usage,
                    r.get(5)?,
                );
            }
            Ok(())
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
pub const ROLLUP_SUMS: [&str; 15] = [
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
    "better",
    "tie",
    "worse",
];

/// [`ROLLUP_SUMS`] followed by the decision-time and latency buckets.
pub fn rollup_columns() -> Vec<String> {
    let mut cols: Vec<String> = ROLLUP_SUMS.iter().map(|s| s.to_string()).collect();
    cols.extend((0..=DECISION_TIME_BOUNDS_MS.len()).map(|i| format!("dt{i}")));
    cols.extend((0..=LATENCY_BOUNDS_MS.len()).map(|i| format!("lat{i}")));
    cols
}
