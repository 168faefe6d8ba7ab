//! The status and its versioned, serialised snapshot: built once per change
//! (or when its timestamp grows stale) and shared by every reader.

use super::*;

/// A serialised status, shared by every reader until something changes.
#[derive(Debug)]
pub struct Snapshot {
    /// The service version this snapshot reflects (at least).
    pub version: u64,
    /// When it was built.
    pub built_at: Instant,
    /// The JSON body.
    pub body: Bytes,
    /// A weak ETag naming the version; equal ETags mean equal data.
    pub etag: HeaderValue,
    /// The same ETag, parsed, for matching `If-None-Match`. Kept beside
    /// `etag` because inserting the parsed one as a typed header costs the
    /// status poll about 60 instructions more than the ready value.
    pub tag: headers::ETag,
    /// The newest decision's `seq` in it (0 when none was ever made).
    pub seq: u64,
}

impl StatusService {
    /// The status with the newest `recent` decisions listed.
    pub fn status(&self, recent: usize) -> OrchestratorStatus {
        self.status_since(recent, None).0
    }

    /// The status with the newest `recent` decisions listed and, with
    /// `since`, the buffered decisions after it (`decisionsSince`, `resync`);
    /// and the newest `seq` it covers.
    pub fn status_since(&self, recent: usize, since: Option<u64>) -> (OrchestratorStatus, u64) {
        let active = Tier::ALL.map(|t| self.active(t));
        // In cluster view, the other instances' figures and decisions join
        // this one's; while Redis is unreachable, this instance's alone.
        let cluster = self.cluster.as_ref().filter(|c| c.is_cluster_view());
        let others = cluster.map(|c| c.others()).unwrap_or_default();
        let inner = self.lock();
        let per_tier: [u64; 3] = std::array::from_fn(|i| inner.per_tier.0[i] + others.per_tier[i]);
        let counters = StatusCounters {
            total_decisions: per_tier.iter().sum(),
            total_processed: per_tier,
            active_requests: std::array::from_fn(|i| active[i] + others.active[i]),
        };
        let mut tokens = inner.tokens.0;
        for (t, o) in tokens.iter_mut().zip(&others.tokens) {
            t.merge(o);
        }
        let mut baseline = inner.baseline;
        baseline.merge(&others.baseline);
        let mut assessor = inner.assessor;
        assessor.merge(&others.assessor);
        let now = Utc::now();
        let mut status = match cluster {
            None => build_status(
                inner.buffer.iter().rev(),
                self.window,
                recent,
                &counters,
                now,
            ),
            Some(c) => {
                let remote = c.remote();
                let merged = merge_recorded(
                    inner.buffer.iter().rev(),
                    remote.newest_first(),
                    self.capacity,
                );
                build_status(merged.iter().copied(), self.window, recent, &counters, now)
            }
        };
        if let Some(since) = since {
            let (decisions, gap) = inner.between(since, inner.published);
            status.decisions_since = Some(decisions);
            status.resync = Some(gap);
        }
        let seq = inner.published;
        drop(inner);
        status.instance = Some(self.instance());
        status.buffer_capacity = Some(self.capacity);
        status.routing = Some(self.routing.clone());
        status.cost = Some(cost_summary(&tokens, &baseline, &assessor, &self.prices));
        if let Some(book) = &self.quality {
            status.quality = Some(book.status(cluster.map(|_| &others.quality)));
        }
        if let Some(keys) = &self.keys {
            status.keys = keys.summary();
            status.budget_ledger = status.keys.is_some().then(|| keys.ledger_info());
            status.accounting_drift = status.budget_ledger.as_ref().map(|l| l.accounting_drift);
        }
        status.persistence = Some(match &self.store {
            Some(store) => store.persistence(),
            None => Persistence {
                state: PersistenceState::Off,
                since: None,
                error: None,
                not_persisted: 0,
                sync: None,
            },
        });
        if let Some((_, health)) = &self.telemetry {
            status.tier_metrics = Some(health.tier_metrics());
            status.model_utilization = Some(health.model_utilization());
            let (model_calls, [timeout, bad_answer, error, busy]) = self.assessor_counts.counts();
            status.assessor = Some(shared::metrics::AssessorInfo {
                kind: self.assessor.name().to_owned(),
                model_calls,
                fallbacks: shared::metrics::AssessorFallbacks {
                    timeout,
                    bad_answer,
                    error,
                    busy,
                },
                prompt_tokens: assessor.prompt,
                completion_tokens: assessor.completion,
            });
        }
        if let Some(c) = &self.cluster {
            status.cluster = Some(c.info(&self.instance_id));
            status.instances = Some(c.instances(self));
        }
        (status, seq)
    }

    /// The serialised status with `recent` decisions (and, with `since`, the
    /// decisions after it). The default listing is served from a snapshot
    /// shared by all readers and rebuilt only when the data changed or the
    /// snapshot's timestamp grew stale.
    pub fn snapshot_since(&self, recent: usize, since: Option<u64>) -> Arc<Snapshot> {
        match since {
            None => self.snapshot(recent),
            Some(_) => Arc::new(self.build_snapshot(recent, since)),
        }
    }

    /// The serialised status with `recent` decisions; see [`Self::snapshot_since`].
    pub fn snapshot(&self, recent: usize) -> Arc<Snapshot> {
        if recent != DEFAULT_RECENT {
            return Arc::new(self.build_snapshot(recent, None));
        }
        let current = self.snapshot.load();
        if self.is_fresh(&current) {
            return arc_swap::Guard::into_inner(current);
        }
        drop(current);
        // One rebuilder at a time; the others wait a few microseconds and take
        // its result instead of all rebuilding the same thing.
        let _one = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot.load_full();
        if self.is_fresh(&current) {
            return current;
        }
        let fresh = Arc::new(self.build_snapshot(DEFAULT_RECENT, None));
        self.snapshot.store(Arc::clone(&fresh));
        fresh
    }

    pub(super) fn is_fresh(&self, snapshot: &Snapshot) -> bool {
        snapshot.version == self.version() && snapshot.built_at.elapsed() < SNAPSHOT_MAX_AGE
    }

    pub(super) fn build_snapshot(&self, recent: usize, since: Option<u64>) -> Snapshot {
        // Read the version first: the status built next reflects at least it.
        let version = self.version();
        let (status, seq) = self.status_since(recent, since);
        let body = serde_json::to_vec(&status).expect("a status always serialises");
        let etag = self.etag_for(version, recent, since);
        Snapshot {
            version,
            built_at: Instant::now(),
            body: Bytes::from(body),
            tag: etag.parse().expect("an ETag of hex and digits is valid"),
            etag: HeaderValue::from_str(&etag)
                .expect("an ETag of hex and digits is a valid header"),
            seq,
        }
    }

    /// Names the data version and every parameter that shapes the body.
    pub(super) fn etag_for(&self, version: u64, recent: usize, since: Option<u64>) -> String {
        match (recent, since) {
            (DEFAULT_RECENT, None) => format!("W/\"{}-{version}\"", self.boot),
            (_, None) => format!("W/\"{}-{version}-{recent}\"", self.boot),
            (_, Some(since)) => format!("W/\"{}-{version}-{recent}-s{since}\"", self.boot),
        }
    }
}

/// Two lists of decisions, each newest first, merged newest first (by
/// [`shared::cluster::newer`]), at most `keep`.
pub(super) fn merge_recorded<'a>(
    a: impl Iterator<Item = &'a RecordedDecision>,
    b: impl Iterator<Item = &'a RecordedDecision>,
    keep: usize,
) -> Vec<&'a RecordedDecision> {
    let mut out = Vec::with_capacity(keep);
    let mut a = a.peekable();
    let mut b = b.peekable();
    while out.len() < keep {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if shared::cluster::newer(&y.decision, &x.decision).is_gt() => {
                b.next()
            }
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(d) => out.push(d),
            None => break,
        }
    }
    out
}
