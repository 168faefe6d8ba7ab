//! Decisions as the store keeps them: the rows sent to the writer, their
//! stored forms (signals, group) and a stored row read back as a decision.

use super::*;

/// Decisions on their way to the writer: each row's fixed fields, and all
/// their text (queries, signals as JSON) in one buffer, so a batch of any
/// size is two allocations to make and two to free on the writer's thread.
#[derive(Debug, Default)]
pub struct Rows {
    pub(super) text: Vec<u8>,
    pub(super) rows: Vec<Row>,
}

/// Signals as stored: `[["length",1.5],["code",4.8]]`, half the bytes of
/// the wire's objects.
pub(super) struct StoredSignals<'a>(&'a [Signal]);

impl serde::Serialize for StoredSignals<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|x| (&x.name, x.weight)))
    }
}

/// A council or benchmark decision's group as stored (`grp`): its id and,
/// on a moderator's decision, the analysis.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredGroup {
    pub(super) id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) analysis: Option<shared::group::CouncilAnalysis>,
}

/// One stored decision's fixed fields; its text lies in [`Rows::text`].
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) seq: u64,
    pub(super) ts_ms: i64,
    pub(super) tier: Tier,
    pub(super) complexity: Complexity,
    pub(super) mode: Option<Mode>,
    pub(super) score: f64,
    pub(super) decision_ms: f64,
    pub(super) query: (usize, usize),
    pub(super) signals: Option<(usize, usize)>,
    pub(super) usage: Option<Usage>,
    pub(super) group: Option<(usize, usize)>,
    pub(super) key_id: Option<(usize, usize)>,
    pub(super) team: Option<(usize, usize)>,
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
        let mut text = |t: &Option<String>| {
            t.as_ref().map(|t| {
                let start = self.text.len();
                self.text.extend_from_slice(t.as_bytes());
                (start, self.text.len())
            })
        };
        let key_id = text(&w.key_id);
        let team = text(&w.team);
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
            key_id,
            team,
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
    pub(super) fn text(&self, (start, end): (usize, usize)) -> &str {
        std::str::from_utf8(&self.text[start..end]).unwrap_or_default()
    }
}

/// The `totals` row of the saving's baseline, after the three tiers'.
pub(super) const BASELINE_ROW: i64 = 3;
/// The `totals` row of the model assessor's tokens.
pub(super) const ASSESSOR_ROW: i64 = 4;

pub(super) fn tier_of(i: i64) -> Tier {
    Tier::ALL[(i.clamp(0, 2)) as usize]
}

/// A stored mode code back as the mode ([`mode_code`]'s inverse).
pub(super) fn mode_of(code: Option<i64>) -> Option<Mode> {
    match code {
        Some(0) => Some(Mode::Simple),
        Some(2) => Some(Mode::Council),
        Some(3) => Some(Mode::Benchmark),
        Some(_) => Some(Mode::TwoStage),
        None => None,
    }
}

pub(super) fn mode_code(mode: Option<Mode>) -> Option<i64> {
    mode.map(|m| match m {
        Mode::Simple => 0,
        Mode::TwoStage => 1,
        Mode::Council => 2,
        Mode::Benchmark => 3,
    })
}

/// The columns a decision is inserted with, in order.
macro_rules! inserted {
    () => {
        "seq, ts, tier, mode, score, decision_ms, query, signals, prompt_tokens, completion_tokens, grp, key_id, team"
    };
}

/// The columns a decision is inserted with, in order.
pub const INSERTED_COLUMNS: &str = inserted!();

/// The columns [`decision_from_row`] reads, in order: the inserted ones and
/// the verdict shadow judging adds later.
pub const DECISION_COLUMNS: &str = concat!(inserted!(), ", verdict");

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
    d.mode = mode_of(mode);
    d.key_id = r.get(11)?;
    d.team = r.get(12)?;
    d.verdict = r
        .get::<_, Option<String>>(13)?
        .as_deref()
        .and_then(shared::shadow::Verdict::from_label);
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
