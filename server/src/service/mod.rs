//! The status service: the ring buffer of decisions, the all-time counters,
//! the in-flight gauges, and the shared, serialised snapshot readers get.
//!
//! Writers hold one mutex for a push and two additions; readers of the
//! default status mostly touch nothing but an atomic version and an
//! `ArcSwap` of ready bytes, so a wall of dashboards does not slow the router.
//!
//! Every decision gets the next sequence number of this instance under the
//! same lock that buffers it, and decisions are published (buffered,
//! counted, sent to the cluster, the metrics and the stream) in `seq`
//! order, so a reader of "the decisions after N" never misses one. An
//! ingested batch is published only once the store has committed it: one
//! refused (its client got a 503) appears nowhere, leaving a gap in the
//! seqs, and what was recorded after it waits for it so the order holds.
//! Every change also wakes [`StatusService::changed`], which the stream's
//! publisher waits on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::HeaderValue;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use shared::api::{Mode, Usage};
use shared::history::{Persistence, PersistenceState};
use shared::insight::{Population, Prices, Tokens, cost_summary};
use shared::{
    DEFAULT_RECENT, DecisionError, Instance, OrchestratorStatus, PerTier, RecordedDecision,
    Routing, RoutingDecision, Signal, StatusCounters, Tier, build_status,
};
use tokio::sync::Notify;

use crate::changes::Changes;
use crate::cluster::{Cluster, Figures};
use crate::store::{CommitError, Committing, Restored, Rows, Store};
use crate::telemetry::Telemetry;
use crate::upstream::Health;

mod accounting;
mod buffer;
mod snapshot;
pub use buffer::*;
pub use snapshot::*;

/// A cached status older than this is rebuilt even if nothing changed, so its
/// `timestamp` stays close to the time it is served.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// The status service. Cheap to share behind an `Arc`.
pub struct StatusService {
    inner: Mutex<Inner>,
    active: PerTier<AtomicU64>,
    /// Bumped after every change anyone could see in a status.
    version: AtomicU64,
    /// Woken after every bump of `version`.
    changed: Notify,
    /// Distinguishes ids and ETags of this process from an earlier one's.
    boot: String,
    started_at: DateTime<Utc>,
    capacity: usize,
    window: usize,
    /// Store `[redacted #N]` instead of query text.
    redact: bool,
    snapshot: ArcSwap<Snapshot>,
    rebuild: Mutex<()>,
    /// The upstream calls' figures, counted into every status and the
    /// decision metrics, when attached.
    telemetry: Option<(Arc<Telemetry>, Arc<Health>)>,
    /// The model assessor's counters (registered with the telemetry).
    assessor_counts: crate::assessor::Counts,
    /// The thresholds decisions are routed by, shown in every status.
    routing: Routing,
    /// `--price`, for the status's `cost`.
    prices: Prices,
    /// The embedded store every decision is committed to, unless
    /// `--in-memory`.
    store: Option<Arc<Store>>,
    /// The instance id: the data dir's (the same across restarts), else
    /// this process's.
    instance_id: String,
    /// The other instances sharing one status through Redis, with `--redis`.
    cluster: Option<Arc<Cluster>>,
    /// `--assessor`, shown in every status.
    assessor: crate::assessor::AssessorKind,
    /// The virtual keys, whose spend every status lists.
    keys: Option<Arc<crate::keys::Keys>>,
    /// Routing quality, live: shown in every status.
    quality: Option<Arc<crate::shadow::Book>>,
}

/// Decisions recorded in memory on their way to the store.
#[must_use = "the decisions reach the store only when committed or written"]
pub struct Pending {
    store: Option<Arc<Store>>,
    rows: Rows,
}

impl Pending {
    /// Sends them to the store now; what it returns resolves once they
    /// are committed (`None` without a store). Sent even if nobody waits.
    pub fn commit(self) -> Option<Committing> {
        self.store.map(|store| store.commit(self.rows))
    }

    /// Sends them to the store without waiting (outside async code).
    pub fn write(self) {
        if let Some(store) = self.store {
            store.write(self.rows);
        }
    }
}

/// One decision to record, as a front door or an ingested report gives it
/// (the signals and usage already validated: see `shared::insight`).
#[derive(Debug, Clone)]
pub struct NewDecision<'a> {
    /// The query text (the placeholder is recorded instead when redacting).
    pub query: &'a str,
    /// The tier it goes to.
    pub tier: Tier,
    /// Its complexity score.
    pub score: f64,
    /// How long choosing took, in milliseconds.
    pub decision_time_ms: f64,
    /// The router's mode, when known.
    pub mode: Option<Mode>,
    /// The signals that sum to the score.
    pub signals: Option<Vec<Signal>>,
    /// The tokens the answer took, when already known.
    pub usage: Option<Usage>,
    /// The virtual key that asked: its id and team.
    pub key: Option<(String, Option<String>)>,
}

impl<'a> NewDecision<'a> {
    /// A decision reported without a mode, signals or usage.
    pub fn new(query: &'a str, tier: Tier, score: f64, decision_time_ms: f64) -> Self {
        NewDecision {
            query,
            tier,
            score,
            decision_time_ms,
            mode: None,
            signals: None,
            usage: None,
            key: None,
        }
    }
}

impl StatusService {
    /// A service keeping `capacity` decisions and computing utilization over
    /// the newest `window` of them. Both must be at least 1.
    pub fn new(capacity: usize, window: usize) -> Self {
        assert!(
            capacity >= 1 && window >= 1,
            "capacity and window must be >= 1"
        );
        let started_at = Utc::now();
        // Start time and process id: two instances started in the same
        // millisecond (a cluster booting) still differ.
        let boot = format!(
            "{:x}-{:x}",
            started_at.timestamp_millis(),
            std::process::id()
        );
        let service = StatusService {
            instance_id: boot.clone(),
            store: None,
            cluster: None,
            assessor: crate::assessor::AssessorKind::Heuristic,
            keys: None,
            quality: None,
            inner: Mutex::new(Inner {
                buffer: VecDeque::with_capacity(capacity),
                total: 0,
                per_tier: PerTier::default(),
                seq: 0,
                published: 0,
                held: VecDeque::new(),
                tokens: Default::default(),
                baseline: Tokens::default(),
                assessor: Tokens::default(),
                updated: VecDeque::new(),
            }),
            active: Default::default(),
            version: AtomicU64::new(0),
            changed: Notify::new(),
            boot,
            started_at,
            capacity,
            window,
            redact: false,
            snapshot: ArcSwap::from_pointee(Snapshot {
                version: u64::MAX,
                built_at: Instant::now(),
                body: Bytes::new(),
                etag: HeaderValue::from_static("W/\"\""),
                tag: "W/\"\"".parse().expect("a valid ETag"),
                seq: 0,
            }),
            rebuild: Mutex::new(()),
            telemetry: None,
            assessor_counts: crate::assessor::Counts::default(),
            routing: Routing::default(),
            prices: PerTier([None; 3]),
        };
        let first = service.build_snapshot(DEFAULT_RECENT, None);
        service.snapshot.store(Arc::new(first));
        service
    }

    /// Keeps a placeholder, `[redacted #N]` (unique per decision), instead of
    /// each query's text, so no response ever carries it.
    pub fn with_redaction(mut self, redact: bool) -> Self {
        self.redact = redact;
        self
    }

    /// Counts every decision into `telemetry`'s metrics and adds its
    /// upstream figures (`tierMetrics`, `modelUtilization`) to every status.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>, health: Arc<Health>) -> Self {
        self.assessor_counts = crate::assessor::Counts::registered(&telemetry);
        self.telemetry = Some((telemetry, health));
        self
    }

    /// The model assessor's counters, shown in every status.
    pub fn assessor_counts(&self) -> &crate::assessor::Counts {
        &self.assessor_counts
    }

    /// Routes two-stage queries by `routing` and prices tokens by `prices`
    /// (both shown in every status).
    pub fn with_routing(mut self, routing: Routing, prices: Prices) -> Self {
        self.routing = routing;
        self.prices = prices;
        self
    }

    /// `--price`.
    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// Shows routing quality, live, from `book` in every status.
    pub fn with_quality(mut self, book: Arc<crate::shadow::Book>) -> Self {
        self.quality = Some(book);
        self
    }

    /// Lists what `keys` spent in every status (`keys`); the status is
    /// rebuilt when a key changes.
    pub fn with_keys(mut self, keys: Arc<crate::keys::Keys>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Commits every decision to `store`, and takes back what it holds:
    /// the newest decisions, the totals, the sequence and the instance id.
    pub fn with_store(mut self, store: Arc<Store>, restored: Restored) -> Self {
        {
            let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
            let skip = restored.buffer.len().saturating_sub(self.capacity);
            inner.buffer = restored.buffer.into_iter().skip(skip).collect();
            inner.per_tier = PerTier(restored.per_tier);
            inner.total = restored.per_tier.iter().sum();
            inner.tokens = PerTier(restored.tokens);
            inner.baseline = restored.baseline;
            inner.assessor = restored.assessor;
            inner.seq = restored.seq;
            inner.published = restored.seq;
        }
        self.instance_id = restored.instance;
        self.store = Some(store);
        self.bump();
        self
    }

    /// Names the assessor two-stage routing uses, for the status.
    pub fn with_assessor(mut self, kind: crate::assessor::AssessorKind) -> Self {
        self.assessor = kind;
        self
    }

    /// Shares this instance's decisions and figures with the other
    /// instances of `cluster`, and theirs with every status.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The cluster, with `--redis`.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// This instance's own totals, requests in flight and tokens.
    pub fn figures(&self) -> Figures {
        let active = Tier::ALL.map(|t| self.active(t));
        let quality = self
            .quality
            .as_ref()
            .map(|q| q.counts())
            .unwrap_or_default();
        let inner = self.lock();
        Figures {
            per_tier: inner.per_tier.0,
            active,
            tokens: inner.tokens.0,
            baseline: inner.baseline,
            assessor: inner.assessor,
            quality,
        }
    }

    /// This instance's buffered decisions, oldest first, with their
    /// decision times.
    pub fn buffered(&self) -> Vec<(RoutingDecision, f64)> {
        self.lock()
            .buffer
            .iter()
            .map(|d| (d.decision.clone(), d.decision_time_ms))
            .collect()
    }

    /// The store, unless `--in-memory`.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// The thresholds decisions are routed by, and the quality expected.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// The Q4 threshold decisions are routed by.
    pub fn q4_threshold(&self) -> f64 {
        self.routing.q4_threshold
    }

    /// How many decisions are kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many of the newest decisions utilization covers.
    pub fn window(&self) -> usize {
        self.window
    }

    /// This process: its id, start time and version.
    pub fn instance(&self) -> Instance {
        Instance {
            id: self.instance_id.clone(),
            started_at: self.started_at,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Validates and records `d`; on error nothing is recorded. It gets the
    /// next `seq`, its id and its time under the lock that buffers it, so
    /// all three follow buffer order. With a store, the decision is sent to
    /// it without waiting for the commit.
    pub fn record(&self, d: NewDecision<'_>) -> Result<RoutingDecision, DecisionError> {
        let (decision, pending) = self.record_pending(d)?;
        pending.write();
        Ok(decision)
    }

    /// [`Self::record`], leaving it to the caller to commit the decision to
    /// the store (and to wait for that).
    pub fn record_pending(
        &self,
        d: NewDecision<'_>,
    ) -> Result<(RoutingDecision, Pending), DecisionError> {
        let draft = self.draft(d)?;
        let (mut decisions, pending) = self.record_batch(vec![draft]);
        Ok((decisions.pop().expect("one recorded"), pending))
    }

    /// Validates one decision without recording it; see [`Self::record_batch`].
    pub fn draft(&self, d: NewDecision<'_>) -> Result<Draft, DecisionError> {
        let query = shared::stored_query(d.query)?;
        let shown = if self.redact { "[redacted]" } else { query };
        let decision = RoutingDecision::new(String::new(), shown, d.tier, d.score, Utc::now())?;
        let mut recorded = RecordedDecision::new(decision, d.decision_time_ms)?;
        recorded.decision.signals = d.signals;
        recorded.decision.usage = d.usage;
        recorded.decision.mode = d.mode;
        if let Some((id, team)) = d.key {
            recorded.decision.key_id = Some(id);
            recorded.decision.team = team;
        }
        Ok(Draft(recorded))
    }

    /// Records validated decisions, all at once: they get consecutive
    /// `seq`s, ids and times under the lock that buffers them, so all three
    /// follow buffer order. Validation happened in [`Self::draft`], so
    /// nothing here can fail. They are published at once (or, behind an
    /// ingested batch still committing, right after it); the store gets
    /// them through the returned [`Pending`].
    pub fn record_batch(&self, drafts: Vec<Draft>) -> (Vec<RoutingDecision>, Pending) {
        let (public, published_now, evicted) = {
            let mut inner = self.lock();
            let recorded = self.stamp(&mut inner, drafts);
            let public = Self::public(&recorded);
            if inner.held.is_empty() {
                let mut evicted = Vec::new();
                for r in recorded {
                    evicted.extend(inner.publish(r, self.capacity));
                }
                (public, true, evicted)
            } else {
                let first = recorded.first().map_or(0, |d| d.decision.seq);
                inner.held.push_back(Held {
                    first,
                    decisions: recorded,
                    state: HeldState::Ready,
                });
                (public, false, Vec::new())
            }
        };
        drop(evicted);
        if published_now {
            self.announce(&public);
        }
        let pending = Pending {
            store: self.store.clone(),
            rows: self.rows_of(&public),
        };
        (public.into_iter().map(|(d, _)| d).collect(), pending)
    }

    /// Records validated decisions as [`Self::record_batch`] does, but
    /// publishes them only once the store has committed them: when the
    /// commit fails they appear nowhere (no status, total, metric, stream
    /// or cluster ever counts them) and the error is returned for the
    /// client's refusal. Without a store they are published at once. The
    /// outcome is settled even if the caller stops waiting.
    pub async fn record_durable(
        self: &Arc<Self>,
        drafts: Vec<Draft>,
    ) -> Result<Vec<RoutingDecision>, CommitError> {
        let Some(store) = self.store.clone() else {
            return Ok(self.record_batch(drafts).0);
        };
        let (public, first) = {
            let mut inner = self.lock();
            let recorded = self.stamp(&mut inner, drafts);
            let public = Self::public(&recorded);
            let first = recorded.first().map_or(0, |d| d.decision.seq);
            inner.held.push_back(Held {
                first,
                decisions: recorded,
                state: HeldState::Committing,
            });
            (public, first)
        };
        let committing = store.commit_or_refuse(self.rows_of(&public));
        let (done, outcome) = tokio::sync::oneshot::channel();
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let result = committing.await;
            service.settle(first, result.is_ok());
            let _ = done.send(result);
        });
        outcome
            .await
            .unwrap_or_else(|_| Err(CommitError("the commit was not settled".into())))?;
        Ok(public.into_iter().map(|(d, _)| d).collect())
    }

    /// The held batch beginning at `first` was committed (`ok`) or refused:
    /// publishes, in order, every held batch no longer waiting for an
    /// earlier one.
    fn settle(&self, first: u64, ok: bool) {
        let (published, evicted) = {
            let mut inner = self.lock();
            if let Some(h) = inner.held.iter_mut().find(|h| h.first == first) {
                h.state = if ok {
                    HeldState::Ready
                } else {
                    HeldState::Refused
                };
            }
            let mut published = Vec::new();
            let mut evicted = Vec::new();
            while inner
                .held
                .front()
                .is_some_and(|h| h.state != HeldState::Committing)
            {
                let held = inner.held.pop_front().expect("a front");
                if held.state == HeldState::Ready {
                    let (p, e) = self.publish_all(&mut inner, held.decisions);
                    published.extend(p);
                    evicted.extend(e);
                }
            }
            (published, evicted)
        };
        drop(evicted);
        self.announce(&published);
    }

    /// Gives each draft its `seq`, id and time.
    fn stamp(&self, inner: &mut Inner, drafts: Vec<Draft>) -> Vec<RecordedDecision> {
        let now = Utc::now();
        drafts
            .into_iter()
            .map(|Draft(mut recorded)| {
                inner.seq += 1;
                let seq = inner.seq;
                let d = &mut recorded.decision;
                d.seq = seq;
                d.id = format!("{}-{seq}", self.instance_id);
                d.timestamp = now;
                if self.redact {
                    d.query = format!("[redacted #{seq}]");
                }
                recorded
            })
            .collect()
    }

    fn public(recorded: &[RecordedDecision]) -> Vec<(RoutingDecision, f64)> {
        recorded
            .iter()
            .map(|r| (r.decision.clone(), r.decision_time_ms))
            .collect()
    }

    /// Publishes `recorded` into `inner`: what to announce, and what the
    /// buffer evicted.
    fn publish_all(
        &self,
        inner: &mut Inner,
        recorded: Vec<RecordedDecision>,
    ) -> (Vec<(RoutingDecision, f64)>, Vec<RecordedDecision>) {
        let mut published = Vec::with_capacity(recorded.len());
        let mut evicted = Vec::new();
        for r in recorded {
            published.push((r.decision.clone(), r.decision_time_ms));
            evicted.extend(inner.publish(r, self.capacity));
        }
        (published, evicted)
    }

    /// Tells the cluster, the metrics and the stream about published
    /// decisions (outside the lock).
    fn announce(&self, published: &[(RoutingDecision, f64)]) {
        if published.is_empty() {
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster.enqueue(published.iter().map(|(d, ms)| (d, *ms)));
        }
        if let Some((t, _)) = &self.telemetry {
            for (d, ms) in published {
                t.record_decision(d.tier, d.complexity, d.mode, *ms);
            }
        }
        self.bump();
    }

    fn rows_of(&self, public: &[(RoutingDecision, f64)]) -> Rows {
        let mut rows = Rows::default();
        if self.store.is_some() {
            rows = Rows::with_capacity(public.len());
            for (d, ms) in public {
                rows.push(d, *ms);
            }
        }
        rows
    }

    /// Why the store refuses new decisions right now, if it does.
    pub fn store_failing(&self) -> Option<String> {
        let store = self.store.as_ref()?;
        store.is_failing().then(|| {
            store
                .persistence()
                .error
                .unwrap_or_else(|| "the store is failing".into())
        })
    }

    /// The buffered decisions changed since they were recorded (and since
    /// the last call), oldest change first: for the stream to send again.
    pub fn take_updated(&self) -> Vec<RoutingDecision> {
        let mut inner = self.lock();
        let seqs = std::mem::take(&mut inner.updated);
        seqs.into_iter()
            .filter_map(|seq| {
                let at = inner.index_of(seq);
                inner.buffer.get(at).filter(|d| d.decision.seq == seq)
            })
            .map(|d| d.decision.clone())
            .collect()
    }

    /// The buffered decisions as the what-if math sees them.
    pub fn population(&self) -> Population {
        Population::new(self.lock().buffer.iter().map(|d| &d.decision))
    }

    /// Resolves after the next change anyone could see in a status (at
    /// once if one happened since the last call returned): the wake-up of
    /// a single waiter, the stream's publisher.
    pub async fn changed(&self) {
        async fn of(changes: Option<&Changes>) {
            match changes {
                Some(c) => c.changed().await,
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = self.changed.notified() => {}
            () = of(self.telemetry.as_ref().map(|(_, h)| h.changes())) => {}
            () = of(self.store.as_ref().map(|s| s.changes())) => {}
            () = of(self.cluster.as_ref().map(|c| c.changes())) => {}
            () = of(self.quality.as_ref().map(|q| q.changes())) => {}
        }
    }

    /// The data version: it grows with every change a status could show,
    /// upstream figures included.
    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
            + self
                .telemetry
                .as_ref()
                .map_or(0, |(_, h)| h.changes().version())
            + self.store.as_ref().map_or(0, |s| s.changes().version())
            + self.cluster.as_ref().map_or(0, |c| c.changes().version())
            + self.keys.as_ref().map_or(0, |k| k.changes().version())
            + self.quality.as_ref().map_or(0, |q| q.changes().version())
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::Release);
        self.changed.notify_one();
    }

    /// The buffered decisions with `seq` in `after+1..=upto`, newest first,
    /// and whether some in that range are gone (dropped from the buffer, or
    /// `after` is beyond this instance's newest `seq`).
    pub fn decisions_between(&self, after: u64, upto: u64) -> (Vec<RoutingDecision>, bool) {
        self.lock().between(after, upto)
    }

    /// Marks one request of `tier` as in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>, tier: Tier) -> ActiveGuard {
        self.active[tier].fetch_add(1, Ordering::AcqRel);
        self.bump();
        ActiveGuard {
            service: Arc::clone(self),
            tier,
        }
    }

    /// Requests of `tier` in flight right now.
    pub fn active(&self, tier: Tier) -> u64 {
        self.active[tier].load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections cannot leave `Inner` half-updated (no call in
        // them can panic midway), so a poisoned lock still guards good data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Holds one in-flight request of a tier; dropping it (on success, error,
/// panic or a client that went away) ends it.
#[must_use = "the request counts as active only while the guard lives"]
pub struct ActiveGuard {
    service: Arc<StatusService>,
    tier: Tier,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.service.active[self.tier].fetch_sub(1, Ordering::AcqRel);
        self.service.bump();
    }
}

impl crate::cluster::Local for StatusService {
    fn instance(&self) -> Instance {
        StatusService::instance(self)
    }

    fn figures(&self) -> Figures {
        StatusService::figures(self)
    }

    fn buffered(&self) -> Vec<(RoutingDecision, f64)> {
        StatusService::buffered(self)
    }

    fn store(&self) -> Option<&Arc<Store>> {
        StatusService::store(self)
    }
}

#[cfg(test)]
mod tests;
