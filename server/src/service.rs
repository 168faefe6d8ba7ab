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
    DEFAULT_RECENT, DecisionError, Instance, OrchestratorStatus, RecordedDecision, Routing,
    RoutingDecision, Signal, StatusCounters, Tier, build_status,
};
use tokio::sync::Notify;

use crate::changes::Changes;
use crate::cluster::{Cluster, Figures};
use crate::store::{CommitError, Restored, Rows, Store};
use crate::telemetry::Telemetry;
use crate::upstream::Health;

/// A cached status older than this is rebuilt even if nothing changed, so its
/// `timestamp` stays close to the time it is served.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// The status service. Cheap to share behind an `Arc`.
pub struct StatusService {
    inner: Mutex<Inner>,
    active: [AtomicU64; 3],
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
    pub fn commit(self) -> Option<impl Future<Output = Result<(), CommitError>> + Send + use<>> {
        self.store.map(|store| store.commit(self.rows))
    }

    /// Sends them to the store without waiting (outside async code).
    pub fn write(self) {
        if let Some(store) = self.store {
            store.write(self.rows);
        }
    }
}

struct Inner {
    /// Oldest first, in `seq` order (with gaps where a batch was refused).
    buffer: VecDeque<RecordedDecision>,
    total: u64,
    per_tier: [u64; 3],
    /// The last `seq` handed out (0 before the first decision).
    seq: u64,
    /// The newest `seq` published: what statuses and the stream cover.
    published: u64,
    /// Batches recorded but not yet published, oldest first: an ingested
    /// one until its commit, and any recorded after it, which wait their
    /// turn.
    held: VecDeque<Held>,
    /// Tokens per tier since start, by [`Tier::index`].
    tokens: [Tokens; 3],
    /// The tokens one Q4 answer per query would have taken: a single-tier
    /// answer's own, one answer per group (see [`StatusService::add_baseline`]).
    baseline: Tokens,
    /// The model assessor's calls' tokens (priced at Q2 into the spend).
    assessor: Tokens,
    /// `seq`s of buffered decisions changed since they were recorded (their
    /// tokens became known), oldest first, until the stream takes them.
    updated: VecDeque<u64>,
}

/// Decisions recorded and not yet published; see [`Inner::held`].
struct Held {
    /// The first `seq` of the batch (its key).
    first: u64,
    decisions: Vec<RecordedDecision>,
    state: HeldState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldState {
    /// Waiting for the store's commit.
    Committing,
    /// To publish as soon as everything before it is.
    Ready,
    /// Its commit failed and its client was refused: never published.
    Refused,
}

impl Inner {
    /// The index of the first buffered decision with `seq >= at`.
    fn index_of(&self, at: u64) -> usize {
        self.buffer.partition_point(|d| d.decision.seq < at)
    }

    /// The recorded decision `seq`, buffered or held.
    fn find_mut(&mut self, seq: u64) -> Option<&mut RecordedDecision> {
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
    fn between(&self, after: u64, upto: u64) -> (Vec<RoutingDecision>, bool) {
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
    fn publish(&mut self, recorded: RecordedDecision, capacity: usize) -> Option<RecordedDecision> {
        let evicted = if self.buffer.len() == capacity {
            self.buffer.pop_front()
        } else {
            None
        };
        let tier = recorded.decision.tier;
        if let Some(u) = &recorded.decision.usage {
            self.tokens[tier.index()].add(u);
            if recorded.decision.group_id.is_none() {
                self.baseline.add(u);
            }
        }
        self.published = recorded.decision.seq;
        self.buffer.push_back(recorded);
        self.total += 1;
        self.per_tier[tier.index()] += 1;
        evicted
    }
}

/// A validated decision, not yet recorded.
pub struct Draft(RecordedDecision);

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
            inner: Mutex::new(Inner {
                buffer: VecDeque::with_capacity(capacity),
                total: 0,
                per_tier: [0; 3],
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
            routing: Routing::default(),
            prices: [None; 3],
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
        self.telemetry = Some((telemetry, health));
        self
    }

    /// Routes two-stage queries by `routing` and prices tokens by `prices`
    /// (both shown in every status).
    pub fn with_routing(mut self, routing: Routing, prices: Prices) -> Self {
        self.routing = routing;
        self.prices = prices;
        self
    }

    /// Commits every decision to `store`, and takes back what it holds:
    /// the newest decisions, the totals, the sequence and the instance id.
    pub fn with_store(mut self, store: Arc<Store>, restored: Restored) -> Self {
        {
            let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
            let skip = restored.buffer.len().saturating_sub(self.capacity);
            inner.buffer = restored.buffer.into_iter().skip(skip).collect();
            inner.per_tier = restored.per_tier;
            inner.total = restored.per_tier.iter().sum();
            inner.tokens = restored.tokens;
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
        let inner = self.lock();
        Figures {
            per_tier: inner.per_tier,
            active,
            tokens: inner.tokens,
            baseline: inner.baseline,
            assessor: inner.assessor,
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

    /// Validates and records a decision reported without a mode; on error
    /// nothing is recorded.
    pub fn record(
        &self,
        query: &str,
        tier: Tier,
        score: f64,
        decision_time_ms: f64,
    ) -> Result<RoutingDecision, DecisionError> {
        self.record_routed(query, tier, score, decision_time_ms, None)
    }

    /// Validates and records a decision made in `mode` (if known); on error
    /// nothing is recorded. It gets the next `seq`, its id and its time
    /// under the lock that buffers it, so all three follow buffer order.
    pub fn record_routed(
        &self,
        query: &str,
        tier: Tier,
        score: f64,
        decision_time_ms: f64,
        mode: Option<Mode>,
    ) -> Result<RoutingDecision, DecisionError> {
        self.record_explained(query, tier, score, decision_time_ms, mode, None, None)
    }

    /// [`Self::record_routed`] with the signals that made the score and,
    /// when already known, the tokens the answer took (both validated by
    /// the caller: see `shared::insight`). With a store, the decision is
    /// sent to it without waiting for the commit.
    #[allow(clippy::too_many_arguments)] // the fields of one decision
    pub fn record_explained(
        &self,
        query: &str,
        tier: Tier,
        score: f64,
        decision_time_ms: f64,
        mode: Option<Mode>,
        signals: Option<Vec<Signal>>,
        usage: Option<Usage>,
    ) -> Result<RoutingDecision, DecisionError> {
        let (decision, pending) =
            self.record_pending(query, tier, score, decision_time_ms, mode, signals, usage)?;
        pending.write();
        Ok(decision)
    }

    /// [`Self::record_explained`], leaving it to the caller to commit the
    /// decision to the store (and to wait for that).
    #[allow(clippy::too_many_arguments)] // the fields of one decision
    pub fn record_pending(
        &self,
        query: &str,
        tier: Tier,
        score: f64,
        decision_time_ms: f64,
        mode: Option<Mode>,
        signals: Option<Vec<Signal>>,
        usage: Option<Usage>,
    ) -> Result<(RoutingDecision, Pending), DecisionError> {
        let draft = self.draft(query, tier, score, decision_time_ms, mode, signals, usage)?;
        let (mut decisions, pending) = self.record_batch(vec![draft]);
        Ok((decisions.pop().expect("one recorded"), pending))
    }

    /// Validates one decision without recording it; see [`Self::record_batch`].
    #[allow(clippy::too_many_arguments)] // the fields of one decision
    pub fn draft(
        &self,
        query: &str,
        tier: Tier,
        score: f64,
        decision_time_ms: f64,
        mode: Option<Mode>,
        signals: Option<Vec<Signal>>,
        usage: Option<Usage>,
    ) -> Result<Draft, DecisionError> {
        let query = shared::stored_query(query)?;
        let shown = if self.redact { "[redacted]" } else { query };
        let decision = RoutingDecision::new(String::new(), shown, tier, score, Utc::now())?;
        let mut recorded = RecordedDecision::new(decision, decision_time_ms)?;
        recorded.decision.signals = signals;
        recorded.decision.usage = usage;
        recorded.decision.mode = mode;
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

    fn count_usage(&self, seq: u64, tier: Tier, usage: Usage, member: bool) {
        if let Some(store) = &self.store {
            store.add_usage(seq, tier, usage, !member);
        }
        {
            let mut inner = self.lock();
            // A decision still held is counted when it is published.
            let held = seq > inner.published;
            if !held {
                inner.tokens[tier.index()].add(&usage);
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
        self.active[tier.index()].fetch_add(1, Ordering::AcqRel);
        self.bump();
        ActiveGuard {
            service: Arc::clone(self),
            tier,
        }
    }

    /// Requests of `tier` in flight right now.
    pub fn active(&self, tier: Tier) -> u64 {
        self.active[tier.index()].load(Ordering::Acquire)
    }

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
        let per_tier: [u64; 3] = std::array::from_fn(|i| inner.per_tier[i] + others.per_tier[i]);
        let counters = StatusCounters {
            total_decisions: per_tier.iter().sum(),
            total_processed: per_tier,
            active_requests: std::array::from_fn(|i| active[i] + others.active[i]),
        };
        let mut tokens = inner.tokens;
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
        if let Some((t, health)) = &self.telemetry {
            status.tier_metrics = Some(health.tier_metrics());
            status.model_utilization = Some(health.model_utilization());
            let (model_calls, [timeout, bad_answer, error, busy]) = t.assessor_counts();
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

    fn is_fresh(&self, snapshot: &Snapshot) -> bool {
        snapshot.version == self.version() && snapshot.built_at.elapsed() < SNAPSHOT_MAX_AGE
    }

    fn build_snapshot(&self, recent: usize, since: Option<u64>) -> Snapshot {
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
    fn etag_for(&self, version: u64, recent: usize, since: Option<u64>) -> String {
        match (recent, since) {
            (DEFAULT_RECENT, None) => format!("W/\"{}-{version}\"", self.boot),
            (_, None) => format!("W/\"{}-{version}-{recent}\"", self.boot),
            (_, Some(since)) => format!("W/\"{}-{version}-{recent}-s{since}\"", self.boot),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections cannot leave `Inner` half-updated (no call in
        // them can panic midway), so a poisoned lock still guards good data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Two lists of decisions, each newest first, merged newest first (by
/// [`shared::cluster::newer`]), at most `keep`.
fn merge_recorded<'a>(
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

/// Holds one in-flight request of a tier; dropping it (on success, error,
/// panic or a client that went away) ends it.
#[must_use = "the request counts as active only while the guard lives"]
pub struct ActiveGuard {
    service: Arc<StatusService>,
    tier: Tier,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.service.active[self.tier.index()].fetch_sub(1, Ordering::AcqRel);
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
mod tests {
    use super::*;
    use shared::Complexity;

    #[test]
    fn ring_buffer_keeps_the_newest_capacity() {
        let s = StatusService::new(5, 3);
        for i in 0..12 {
            s.record(&format!("q{i}"), Tier::Q2, 1.0, 0.0).unwrap();
        }
        let st = s.status(100);
        let queries: Vec<&str> = st
            .recent_decisions
            .iter()
            .map(|d| d.query.as_str())
            .collect();
        assert_eq!(queries, ["q11", "q10", "q9", "q8", "q7"]);
        assert_eq!(st.total_decisions, 12);
        assert_eq!(st.tier_utilization[0].total_processed, 12);
    }

    #[test]
    fn redaction_keeps_decisions_apart_without_their_text() {
        let s = StatusService::new(10, 5).with_redaction(true);
        let a = s.record("my secret plan", Tier::Q2, 1.0, 0.0).unwrap();
        let b = s.record("my secret plan", Tier::Q3, 4.0, 0.0).unwrap();
        assert!(a.query.starts_with("[redacted #") && b.query.starts_with("[redacted #"));
        assert_ne!(a.query, b.query);
        let body = String::from_utf8(s.snapshot(DEFAULT_RECENT).body.to_vec()).unwrap();
        assert!(!body.contains("secret"));
        assert!(
            s.record(" ", Tier::Q2, 1.0, 0.0).is_err(),
            "still validated"
        );
    }

    #[test]
    fn invalid_input_records_nothing() {
        let s = StatusService::new(5, 3);
        assert!(s.record("  ", Tier::Q2, 1.0, 0.0).is_err());
        assert!(s.record("q", Tier::Q2, 15.5, 0.0).is_err());
        assert!(s.record("q", Tier::Q2, f64::NAN, 0.0).is_err());
        assert!(s.record("q", Tier::Q2, 1.0, -1.0).is_err());
        let st = s.status(10);
        assert_eq!(st.total_decisions, 0);
        assert!(st.recent_decisions.is_empty());
    }

    #[test]
    fn guard_counts_in_flight_and_releases_on_drop_and_panic() {
        let s = Arc::new(StatusService::new(5, 3));
        let a = s.begin(Tier::Q3);
        let b = s.begin(Tier::Q3);
        assert_eq!(s.active(Tier::Q3), 2);
        drop(a);
        assert_eq!(s.active(Tier::Q3), 1);
        let s2 = Arc::clone(&s);
        let result = std::thread::spawn(move || {
            let _g = s2.begin(Tier::Q4);
            panic!("boom");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(s.active(Tier::Q4), 0);
        drop(b);
        assert_eq!(s.active(Tier::Q3), 0);
    }

    #[test]
    fn snapshot_is_shared_until_something_changes() {
        let s = Arc::new(StatusService::new(100, 20));
        let a = s.snapshot(DEFAULT_RECENT);
        let b = s.snapshot(DEFAULT_RECENT);
        assert!(Arc::ptr_eq(&a, &b));
        s.record("hello", Tier::Q3, 4.0, 1.0).unwrap();
        let c = s.snapshot(DEFAULT_RECENT);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_ne!(a.etag, c.etag);
        let parsed: OrchestratorStatus = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(parsed.total_decisions, 1);
        assert_eq!(parsed.recent_decisions[0].complexity, Complexity::Moderate);
        let g = s.begin(Tier::Q2);
        let d = s.snapshot(DEFAULT_RECENT);
        let parsed: OrchestratorStatus = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(parsed.tier_utilization[0].active_requests, 1);
        drop(g);
        assert_ne!(s.snapshot(DEFAULT_RECENT).etag, d.etag);
    }

    /// Many writers and readers at once: no decision is lost and every status
    /// read along the way obeys the rules.
    #[test]
    fn concurrent_writers_and_readers_lose_nothing() {
        const WRITERS: usize = 8;
        const PER_WRITER: usize = 2_000;
        let s = Arc::new(StatusService::new(100, 20));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|r| {
                let s = Arc::clone(&s);
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    let mut last_total = 0;
                    while !done.load(Ordering::Acquire) {
                        let st: OrchestratorStatus = if r % 2 == 0 {
                            s.status(100)
                        } else {
                            serde_json::from_slice(&s.snapshot(DEFAULT_RECENT).body).unwrap()
                        };
                        assert!(st.total_decisions >= last_total, "totals never go back");
                        last_total = st.total_decisions;
                        let processed: u64 =
                            st.tier_utilization.iter().map(|t| t.total_processed).sum();
                        assert_eq!(processed, st.total_decisions);
                        assert!(st.recent_decisions.len() <= 100);
                        if st.total_decisions > 0 {
                            let d = st.complexity_distribution;
                            assert_eq!(d.simple + d.moderate + d.complex, 100);
                            let u: f64 = st
                                .tier_utilization
                                .iter()
                                .map(|t| t.utilization_percent)
                                .sum();
                            assert!((u - 100.0).abs() < 1e-6);
                        }
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..PER_WRITER {
                        let tier = Tier::ALL[(w + i) % 3];
                        let _g = s.begin(tier);
                        s.record(&format!("w{w}-{i}"), tier, (i % 16) as f64 * 0.9, 0.5)
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(reads > 0);
        let st = s.status(100);
        assert_eq!(st.total_decisions, (WRITERS * PER_WRITER) as u64);
        let processed: Vec<u64> = st
            .tier_utilization
            .iter()
            .map(|t| t.total_processed)
            .collect();
        let mut want = [0u64; 3];
        for w in 0..WRITERS {
            for i in 0..PER_WRITER {
                want[(w + i) % 3] += 1;
            }
        }
        assert_eq!(processed, want);
        assert!(st.tier_utilization.iter().all(|t| t.active_requests == 0));
        assert_eq!(st.recent_decisions.len(), 100);
    }
}
