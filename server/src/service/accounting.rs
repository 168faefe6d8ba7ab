//! What an answer adds after its decision: upstream calls, tokens per tier,
//! the saving's baseline and the model assessor's tokens.

use super::*;

impl StatusService {
    /// Counts one routed query's upstream call into the store's rollups.
    pub fn add_call(&self, tier: Tier, latency_ms: f64, ok: bool) {
        if let Some(store) = &self.store {
            store.add_call(tier, latency_ms, ok);
        }
    }

    /// Adds the tokens the answer to decision `seq` (routed to `tier`) took:
    /// to the tier's totals, and to the decision while it is buffered. A
    /// single-tier answer's tokens are also its saving's baseline; a group
    /// member's are not (the group adds one answer's, [`Self::add_baseline`]).
    pub fn add_usage(&self, seq: u64, tier: Tier, usage: Usage) {
        self.count_usage(seq, tier, usage, false);
    }

    /// [`Self::add_usage`] for a council or benchmark member: its tokens are
    /// spent, not its query's baseline.
    pub fn add_member_usage(&self, seq: u64, tier: Tier, usage: Usage) {
        self.count_usage(seq, tier, usage, true);
    }

    pub(super) fn count_usage(&self, seq: u64, tier: Tier, usage: Usage, member: bool) {
        if let Some(store) = &self.store {
            store.add_usage(seq, tier, usage, !member);
        }
        {
            let mut inner = self.lock();
            // A decision still held is counted when it is published.
            let held = seq > inner.published;
            if !held {
                inner.tokens[tier].add(&usage);
                if !member {
                    inner.baseline.add(&usage);
                }
            }
            if let Some(d) = inner.find_mut(seq) {
                debug_assert_eq!(d.decision.seq, seq);
                d.decision.usage = Some(usage);
                if !held {
                    // Bounded like the buffer: what is older is gone anyway.
                    if inner.updated.len() == self.capacity {
                        inner.updated.pop_front();
                    }
                    inner.updated.push_back(seq);
                }
            }
        }
        self.bump();
    }

    /// Adds one council or benchmark query's baseline: the tokens of one Q4
    /// answer to it, against which the whole group's spend is weighed.
    pub fn add_baseline(&self, usage: Usage) {
        if let Some(store) = &self.store {
            store.add_baseline(usage);
        }
        self.lock().baseline.add(&usage);
        self.bump();
    }

    /// Counts the tokens of one model assessor call (priced at Q2 into
    /// the spend; apart from the tier's answers).
    pub fn add_assessor_usage(&self, usage: Usage) {
        if let Some(store) = &self.store {
            store.add_assessor_usage(usage);
        }
        self.lock().assessor.add(&usage);
        self.bump();
    }
}
