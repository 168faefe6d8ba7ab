//! The ring buffer of published decisions, the batches held until their
//! commit, and the drafts that become decisions.

use super::*;

pub(super) struct Inner {
    /// Oldest first, in `seq` order (with gaps where a batch was refused).
    pub(super) buffer: VecDeque<RecordedDecision>,
    pub(super) total: u64,
    pub(super) per_tier: PerTier<u64>,
    /// The last `seq` handed out (0 before the first decision).
    pub(super) seq: u64,
    /// The newest `seq` published: what statuses and the stream cover.
    pub(super) published: u64,
    /// Batches recorded but not yet published, oldest first: an ingested
    /// one until its commit, and any recorded after it, which wait their
    /// turn.
    pub(super) held: VecDeque<Held>,
    /// Tokens per tier since start, by [`Tier::index`].
    pub(super) tokens: PerTier<Tokens>,
    /// The tokens one Q4 answer per query would have taken: a single-tier
    /// answer's own, one answer per group (see [`StatusService::add_baseline`]).
    pub(super) baseline: Tokens,
    /// The model assessor's calls' tokens (priced at Q2 into the spend).
    pub(super) assessor: Tokens,
    /// `seq`s of buffered decisions changed since they were recorded (their
    /// tokens became known), oldest first, until the stream takes them.
    pub(super) updated: VecDeque<u64>,
}

/// Decisions recorded and not yet published; see [`Inner::held`].
pub(super) struct Held {
    /// The first `seq` of the batch (its key).
    pub(super) first: u64,
    pub(super) decisions: Vec<RecordedDecision>,
    pub(super) state: HeldState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeldState {
    /// Waiting for the store's commit.
    Committing,
    /// To publish as soon as everything before it is.
    Ready,
    /// Its commit failed and its client was refused: never published.
    Refused,
}

impl Inner {
    /// The index of the first buffered decision with `seq >= at`.
    pub(super) fn index_of(&self, at: u64) -> usize {
        self.buffer.partition_point(|d| d.decision.seq < at)
    }

    /// The recorded decision `seq`, buffered or held.
    pub(super) fn find_mut(&mut self, seq: u64) -> Option<&mut RecordedDecision> {
        let at = self.index_of(seq);
        if self.buffer.get(at).is_some_and(|d| d.decision.seq == seq) {
            return self.buffer.get_mut(at);
        }
        self.held
            .iter_mut()
            .flat_map(|h| h.decisions.iter_mut())
            .find(|d| d.decision.seq == seq)
    }

    /// The buffered decisions with `seq` in `after+1..=upto`, newest first,
    /// and whether that is fewer than asked for (some were already dropped,
    /// or `after` is beyond the newest `seq` published).
    pub(super) fn between(&self, after: u64, upto: u64) -> (Vec<RoutingDecision>, bool) {
        if after > self.published {
            return (Vec::new(), true);
        }
        let upto = upto.min(self.published);
        if after >= upto {
            return (Vec::new(), false);
        }
        let oldest = self
            .buffer
            .front()
            .map_or(self.published + 1, |d| d.decision.seq);
        let gap = after + 1 < oldest;
        let range = self.index_of(after + 1)..self.index_of(upto + 1);
        let decisions = self
            .buffer
            .range(range)
            .rev()
            .map(|d| d.decision.clone())
            .collect();
        (decisions, gap)
    }

    /// Buffers and counts `recorded` (the next in `seq` order); returns
    /// what it evicted, to free outside the lock.
    pub(super) fn publish(
        &mut self,
        recorded: RecordedDecision,
        capacity: usize,
    ) -> Option<RecordedDecision> {
        let evicted = if self.buffer.len() == capacity {
            self.buffer.pop_front()
        } else {
            None
        };
        let tier = recorded.decision.tier;
        if let Some(u) = &recorded.decision.usage {
            self.tokens[tier].add(u);
            if recorded.decision.group_id.is_none() {
                self.baseline.add(u);
            }
        }
        self.published = recorded.decision.seq;
        self.buffer.push_back(recorded);
        self.total += 1;
        self.per_tier[tier] += 1;
        evicted
    }
}

/// A validated decision, not yet recorded.
pub struct Draft(pub(super) RecordedDecision);

impl Draft {
    /// The same decision as a member of a council or benchmark group (and,
    /// for a council's moderator, with its analysis).
    pub fn in_group(
        mut self,
        group_id: &str,
        analysis: Option<shared::group::CouncilAnalysis>,
    ) -> Draft {
        self.0.decision.group_id = Some(group_id.to_owned());
        self.0.decision.analysis = analysis;
        self
    }
}
