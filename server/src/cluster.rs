//! Scale-out: instances that name the same Redis (`--redis`) and cluster
//! (`--cluster`) share one status, and Redis is never on a request's path.
//!
//! Each instance publishes, from tasks of its own:
//! - its **record** (id, address, start, heartbeat time, requests in flight,
//!   and its *absolute* totals per tier and tokens) into the hash
//!   `orch:{cluster}:instances`, every second and with every batch. Totals
//!   are absolute, so a retried write, a reconnect or a republish can never
//!   count a decision twice; the cluster's totals are the sum of the
//!   records;
//! - its **decisions** into the stream `orch:{cluster}:decisions`, from a
//!   bounded backlog (`--redis-backlog`), one `XADD` per batch and at most one
//!   batch per 50 ms, each entry carrying the record too;
//! - with the store on, its **rollups** per minute and hour (absolute rows)
//!   for the history API to sum (see [`crate::history`]).
//!
//! Each instance reads the stream (a blocking `XREAD` on a connection of its
//! own) into a buffer of the other instances' newest decisions; a status in
//! cluster view is computed over this instance's buffer merged with it, by
//! the same shared code. A decision from another instance wakes the status
//! stream like a local one.
//!
//! Redis losing its data (a restart without persistence) shows as a changed
//! `orch:{cluster}:epoch`: every instance then republishes what it holds (its
//! record, the records of the instances it knew, with `HSETNX` so a live one's
//! own write wins, its buffered decisions and its rollups) and reads the new
//! stream from its start. A failed or slow exchange (1 s) marks Redis
//! unreachable: statuses say so and cover this instance only, the backlog
//! fills (what overflows is counted), and the next try waits 0.25 s, then
//! twice as long each time up to 2 s (a circuit breaker), so a recovered
//! Redis is used again within 2 s.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use serde::{Deserialize, Serialize};
use shared::cluster::{
    ClusterInfo, ClusterInstance, ClusterView, InstanceState, RedisState, instance_state,
};
use shared::insight::Tokens;
use shared::{Instance, RecordedDecision, RoutingDecision, Tier};
use tokio::sync::Notify;
use tokio::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::changes::Changes;
use crate::store::{Periods, Store};
use crate::telemetry::{Telemetry, encode_gauge};

/// `--redis-backlog` unless given.
pub const DEFAULT_BACKLOG: usize = 100_000;
/// The least time between two batches sent to Redis.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How often the record is written when no decision is.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);
/// The longest an exchange with Redis may take before Redis counts as
/// unreachable.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// The first pause after a failed exchange; doubled up to [`MAX_PAUSE`].
const MIN_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// The most decisions in one stream entry (about 400 KB).
const MAX_BATCH: usize = 1_000;
/// The most decisions sent at once (in entries of [`MAX_BATCH`]): with one
/// send per [`FLUSH_EVERY`], 400,000 decisions/s per instance.
const MAX_FLUSH: usize = 20_000;
/// Stream entries kept (approximately): about a second at full load (at
/// most some 50 MB), the newest 128 decisions or more at a trickle. Readers
/// need only what arrived since their last read, and a joining instance
/// the newest `--buffer-size`.
const STREAM_LEN: usize = 128;
/// Stream entries read at once.
const READ_COUNT: usize = 64;
/// How long a read blocks waiting for new entries.
const READ_BLOCK_MS: u64 = 1_000;

/// `--redis`, `--cluster`, `--redis-backlog` and where this instance listens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `redis://[:password@]host:port/db` or `redis+unix:///path`.
    pub url: String,
    /// The cluster's name.
    pub name: String,
    /// The most decisions waiting to be sent.
    pub backlog: usize,
    /// This instance's address, as the cluster lists it.
    pub address: String,
}

/// What an instance publishes about itself. Every figure is absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    address: String,
    started_at: String,
    /// Wall-clock time of this write, ms since the epoch.
    beat_ms: i64,
    active: [u64; 3],
    per_tier: [u64; 3],
    /// Prompt, completion, decisions reporting them; per tier.
    tokens: [[u64; 3]; 3],
    /// The saving's baseline as prompt, completion, answers (absent from an
    /// older instance: then its tokens, all priced at Q4, as it did).
    #[serde(default)]
    baseline: Option<[u64; 3]>,
    /// The model assessor's tokens as prompt, completion, calls.
    #[serde(default)]
    assessor: [u64; 3],
    /// Written once by a clean shutdown.
    #[serde(default)]
    stopped: bool,
}

impl Record {
    fn total(&self) -> u64 {
        self.per_tier.iter().sum()
    }

    /// Live, stale or gone, by its heartbeat's age at `now_ms`.
    fn state(&self, now_ms: i64) -> InstanceState {
        instance_state(now_ms - self.beat_ms, self.stopped)
    }

    /// Whether `self` is at least as new as `other`: a later start of the
    /// instance always (a restart may bring lower totals: what a refused
    /// write had counted, or an in-memory instance's); within one start,
    /// totals never go back, and among equal totals the later heartbeat.
    fn supersedes(&self, other: &Record) -> bool {
        (self.start_ms(), self.total(), self.beat_ms)
            >= (other.start_ms(), other.total(), other.beat_ms)
    }

    /// `started_at` in ms since the epoch (0 if unreadable, so such a
    /// record never displaces one that can be read).
    fn start_ms(&self) -> i64 {
        DateTime::parse_from_rfc3339(&self.started_at).map_or(0, |t| t.timestamp_millis())
    }
}

/// An instance's all-time and right-now figures: this one's own, or the
/// sum of what the other instances add to them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// Decisions per tier since start (restored ones included).
    pub per_tier: [u64; 3],
    /// Requests in flight per tier (of the live instances).
    pub active: [u64; 3],
    /// Tokens per tier.
    pub tokens: [Tokens; 3],
    /// The saving's baseline: the tokens one Q4 answer per query takes.
    pub baseline: Tokens,
    /// The model assessor's tokens.
    pub assessor: Tokens,
}

/// The figures the other instances add to this one's.
pub type Others = Figures;

/// What the cluster reads of this instance (the status service), so that
/// it depends on no more than this.
pub trait Local: Send + Sync + 'static {
    /// Who this instance is.
    fn instance(&self) -> Instance;
    /// Its own figures.
    fn figures(&self) -> Figures;
    /// Its buffered decisions, oldest first, with their decision times.
    fn buffered(&self) -> Vec<(RoutingDecision, f64)>;
    /// Its store, when it keeps one.
    fn store(&self) -> Option<&Arc<Store>>;
}

/// The other instances' newest decisions; see [`Cluster::remote`].
pub struct Remote<'a>(MutexGuard<'a, View>);

impl Remote<'_> {
    /// Newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &RecordedDecision> + Clone {
        self.0.remote.values().rev()
    }
}

/// The cluster's figures for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Redis answers.
    pub redis_up: bool,
    /// Decisions waiting for Redis.
    pub backlog: u64,
    /// Decisions that found the backlog full.
    pub overflowed: u64,
    /// Instances known, this one included: live, stale, gone.
    pub instances: [u64; 3],
}

/// The key of a remote decision: the order of [`shared::cluster::newer`].
type Key = (DateTime<Utc>, u64, String);

struct View {
    /// The other instances' newest records.
    peers: HashMap<String, Record>,
    /// The other instances' newest decisions, at most `capacity`.
    remote: BTreeMap<Key, RecordedDecision>,
    /// Remote decisions not yet taken by the stream's publisher, oldest
    /// first, at most `capacity`.
    fresh: VecDeque<RoutingDecision>,
}

struct Link {
    state: RedisState,
    since: Option<DateTime<Utc>>,
    error: Option<String>,
    /// The last exchange that succeeded.
    last_ok: Option<DateTime<Utc>>,
}

struct Queue {
    items: VecDeque<(RoutingDecision, f64)>,
    overflowed: u64,
}

/// The link to the cluster. Cheap to share behind an `Arc`.
pub struct Cluster {
    settings: Settings,
    capacity: usize,
    keys: Keys,
    queue: Mutex<Queue>,
    wake: Notify,
    view: Mutex<View>,
    link: Mutex<Link>,
    changes: Changes,
    /// Bumped when Redis lost its data: the reader starts over.
    epoch_gen: AtomicU64,
    closing: AtomicBool,
    publisher: ConnectionManager,
    reader: ConnectionManager,
}

/// The Redis keys of one cluster.
#[derive(Debug, Clone)]
struct Keys {
    /// The decisions stream.
    decisions: String,
    /// The hash of instance records.
    instances: String,
    /// The value that changes when Redis lost its data.
    epoch: String,
    prefix: String,
}

impl Keys {
    fn new(cluster: &str) -> Self {
        let prefix = format!("orch:{{{cluster}}}:");
        Keys {
            decisions: format!("{prefix}decisions"),
            instances: format!("{prefix}instances"),
            epoch: format!("{prefix}epoch"),
            prefix,
        }
    }

    /// The sorted set of an instance's rollup rows of `table`.
    fn rollups(&self, table: &str, instance: &str) -> String {
        format!("{}{table}:{instance}", self.prefix)
    }
}

impl Cluster {
    /// A link to the cluster `settings` names, keeping as many remote
    /// decisions as the service keeps its own. Connects lazily: a Redis that
    /// is down does not delay the start.
    pub fn new(settings: Settings, capacity: usize) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| format!("--redis {}: {e}", settings.url))?;
        let config = |response: Duration| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(response))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(100))
                .set_max_delay(Duration::from_millis(500))
        };
        let publisher =
            ConnectionManager::new_lazy_with_config(client.clone(), config(REDIS_TIMEOUT))
                .map_err(|e| format!("--redis: {e}"))?;
        let reader = ConnectionManager::new_lazy_with_config(
            client,
            config(REDIS_TIMEOUT + Duration::from_millis(READ_BLOCK_MS)),
        )
        .map_err(|e| format!("--redis: {e}"))?;
        Ok(Cluster {
            keys: Keys::new(&settings.name),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                overflowed: 0,
            }),
            settings,
            capacity,
            wake: Notify::new(),
            view: Mutex::new(View {
                peers: HashMap::new(),
                remote: BTreeMap::new(),
                fresh: VecDeque::new(),
            }),
            link: Mutex::new(Link {
                state: RedisState::Connecting,
                since: None,
                error: None,
                last_ok: None,
            }),
            changes: Changes::default(),
            epoch_gen: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            publisher,
            reader,
        })
    }

    /// Starts publishing `service`'s decisions and figures and reading the
    /// other instances'.
    pub fn start(self: &Arc<Self>, service: Arc<dyn Local>) {
        tokio::spawn(Arc::clone(self).publish_loop(Arc::clone(&service)));
        tokio::spawn(Arc::clone(self).read_loop(service));
    }

    /// Queues decisions for Redis; never waits. What finds the backlog full
    /// is counted and dropped (its totals still travel in the record).
    pub fn enqueue<'a>(&self, decisions: impl IntoIterator<Item = (&'a RoutingDecision, f64)>) {
        let mut q = lock(&self.queue);
        for (d, ms) in decisions {
            if q.items.len() >= self.settings.backlog {
                q.overflowed += 1;
            } else {
                q.items.push_back((d.clone(), ms));
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    /// True while Redis answers: statuses then cover the whole cluster.
    pub fn is_cluster_view(&self) -> bool {
        lock(&self.link).state == RedisState::Connected
    }

    /// The other instances' totals and (live ones') requests in flight.
    pub fn others(&self) -> Others {
        let now = Utc::now().timestamp_millis();
        let view = lock(&self.view);
        let mut others = Others::default();
        for r in view.peers.values() {
            let live = r.state(now) == InstanceState::Live;
            for i in 0..3 {
                others.per_tier[i] += r.per_tier[i];
                if live {
                    others.active[i] += r.active[i];
                }
                let [prompt, completion, decisions] = r.tokens[i];
                let tokens = Tokens {
                    prompt,
                    completion,
                    decisions,
                };
                others.tokens[i].merge(&tokens);
                if r.baseline.is_none() {
                    others.baseline.merge(&tokens);
                }
            }
            let [prompt, completion, decisions] = r.assessor;
            others.assessor.merge(&Tokens {
                prompt,
                completion,
                decisions,
            });
            if let Some([prompt, completion, decisions]) = r.baseline {
                others.baseline.merge(&Tokens {
                    prompt,
                    completion,
                    decisions,
                });
            }
        }
        others
    }

    /// The other instances' newest decisions, held (locked) while the
    /// returned view lives.
    pub fn remote(&self) -> Remote<'_> {
        Remote(lock(&self.view))
    }

    /// The other instances' decisions that arrived since the last call,
    /// oldest first: for the status stream.
    pub fn take_fresh(&self) -> Vec<RoutingDecision> {
        lock(&self.view).fresh.drain(..).collect()
    }

    /// The status's `cluster`, as instance `me` serves it.
    pub fn info(&self, me: &str) -> ClusterInfo {
        let link = lock(&self.link);
        let unreachable = link.state == RedisState::Unreachable;
        let view = if link.state == RedisState::Connected {
            ClusterView::Cluster
        } else {
            ClusterView::Local
        };
        let label = match (view, link.since) {
            (ClusterView::Cluster, _) => None,
            (ClusterView::Local, Some(since)) if unreachable => Some(format!(
                "local view of instance {me}; Redis unreachable since {} UTC",
                since.format("%H:%M:%S")
            )),
            (ClusterView::Local, _) => Some(format!(
                "local view of instance {me}; Redis not reached yet"
            )),
        };
        let q = lock(&self.queue);
        ClusterInfo {
            name: self.settings.name.clone(),
            redis: link.state,
            since: link.since.filter(|_| unreachable).map(rfc3339),
            error: link.error.clone().filter(|_| unreachable),
            view,
            label,
            backlog: q.items.len() as u64,
            backlog_capacity: self.settings.backlog as u64,
            overflowed: q.overflowed,
        }
    }

    /// The status's `instances`: this one (from `service`'s live figures)
    /// first, then the others by id.
    pub fn instances(&self, service: &dyn Local) -> Vec<ClusterInstance> {
        let now = Utc::now();
        let own = self.record(service, now);
        let last_ok = lock(&self.link).last_ok;
        let mut list = vec![ClusterInstance {
            last_heartbeat: rfc3339(last_ok.unwrap_or(now)),
            state: InstanceState::Live,
            current: true,
            ..listed(&own)
        }];
        let view = lock(&self.view);
        let mut peers: Vec<&Record> = view.peers.values().collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        list.extend(peers.into_iter().map(|r| ClusterInstance {
            state: r.state(now.timestamp_millis()),
            ..listed(r)
        }));
        list
    }

    /// The figures `/metrics` shows.
    pub fn gauges(&self) -> Gauges {
        let redis_up = self.is_cluster_view();
        let (backlog, overflowed) = {
            let q = lock(&self.queue);
            (q.items.len() as u64, q.overflowed)
        };
        let now = Utc::now().timestamp_millis();
        let mut instances = [1, 0, 0];
        for r in lock(&self.view).peers.values() {
            instances[r.state(now) as usize] += 1;
        }
        Gauges {
            redis_up,
            backlog,
            overflowed,
            instances,
        }
    }

    /// What changed here that a status could show.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// Adds the cluster's series (`orch_cluster_*`) to every scrape of
    /// `telemetry`.
    pub fn register_metrics(self: &Arc<Self>, telemetry: &Telemetry) {
        telemetry.register_collector(Box::new(Collector(Arc::downgrade(self))));
    }

    fn bump(&self) {
        self.changes.bump();
    }

    /// Sends what waits and a last record marked stopped (so the others
    /// list this instance as gone at once), within a couple of seconds.
    pub async fn close(&self, service: &dyn Local) {
        self.closing.store(true, Ordering::Release);
        let work = async {
            let mut conn = self.publisher.clone();
            loop {
                let batch = self.take_batch();
                if batch.is_empty() {
                    break;
                }
                let record = self.record(service, Utc::now());
                let mut pipe = redis::pipe();
                self.add_send(&mut pipe, &record, &batch);
                if pipe.query_async::<()>(&mut conn).await.is_err() {
                    return;
                }
            }
            let mut record = self.record(service, Utc::now());
            record.stopped = true;
            record.active = [0; 3];
            let mut pipe = redis::pipe();
            self.add_send(&mut pipe, &record, &[]);
            let _ = pipe.query_async::<()>(&mut conn).await;
        };
        let _ = tokio::time::timeout(2 * REDIS_TIMEOUT, work).await;
    }

    fn record(&self, service: &dyn Local, now: DateTime<Utc>) -> Record {
        let instance = service.instance();
        let figures = service.figures();
        Record {
            id: instance.id,
            address: self.settings.address.clone(),
            started_at: rfc3339(instance.started_at),
            beat_ms: now.timestamp_millis(),
            active: figures.active,
            per_tier: figures.per_tier,
            tokens: figures
                .tokens
                .map(|t| [t.prompt, t.completion, t.decisions]),
            baseline: Some([
                figures.baseline.prompt,
                figures.baseline.completion,
                figures.baseline.decisions,
            ]),
            assessor: [
                figures.assessor.prompt,
                figures.assessor.completion,
                figures.assessor.decisions,
            ],
            stopped: false,
        }
    }

    fn take_batch(&self) -> Vec<(RoutingDecision, f64)> {
        let mut q = lock(&self.queue);
        let n = q.items.len().min(MAX_FLUSH);
        q.items.drain(..n).collect()
    }

    /// Puts a batch that failed back at the front of the backlog, as far as
    /// it has room; the rest is counted as overflowed.
    fn requeue(&self, batch: Vec<(RoutingDecision, f64)>) {
        let mut q = lock(&self.queue);
        let room = self.settings.backlog.saturating_sub(q.items.len());
        let dropped = batch.len().saturating_sub(room);
        q.overflowed += dropped as u64;
        for item in batch.into_iter().skip(dropped).rev() {
            q.items.push_front(item);
        }
    }

    /// One send: `batch` as stream entries of at most [`MAX_BATCH`]
    /// decisions (`XADD`), each with the record that counts them, then the
    /// record into the instances hash (`HSET`). The record is serialised
    /// once.
    fn add_send(
        &self,
        pipe: &mut redis::Pipeline,
        record: &Record,
        batch: &[(RoutingDecision, f64)],
    ) {
        let json = serde_json::to_string(record).expect("a record serialises");
        for chunk in batch.chunks(MAX_BATCH) {
            let decisions = serde_json::to_string(chunk).expect("decisions serialise");
            pipe.cmd("XADD")
                .arg(&self.keys.decisions)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LEN)
                .arg("*")
                .arg("i")
                .arg(&record.id)
                .arg("r")
                .arg(&json)
                .arg("d")
                .arg(decisions)
                .ignore();
        }
        pipe.cmd("HSET")
            .arg(&self.keys.instances)
            .arg(&record.id)
            .arg(json)
            .ignore();
    }

    fn connected(&self) {
        let mut link = lock(&self.link);
        let changed = link.state != RedisState::Connected;
        link.state = RedisState::Connected;
        link.since = None;
        link.error = None;
        link.last_ok = Some(Utc::now());
        drop(link);
        if changed {
            tracing::info!(cluster = %self.settings.name, "redis reachable: cluster view");
            self.bump();
        }
    }

    fn unreachable(&self, error: String) {
        let mut link = lock(&self.link);
        let changed = link.state != RedisState::Unreachable;
        if changed {
            link.state = RedisState::Unreachable;
            link.since = Some(Utc::now());
        }
        link.error = Some(error.clone());
        drop(link);
        if changed {
            tracing::warn!(cluster = %self.settings.name, %error, "redis unreachable: local view");
            self.bump();
        }
    }

    async fn publish_loop(self: Arc<Self>, service: Arc<dyn Local>) {
        let mut conn = self.publisher.clone();
        let mut next_beat = Instant::now();
        let mut pause = MIN_PAUSE;
        let mut epoch: Option<String> = None;
        while !self.closing.load(Ordering::Acquire) {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(next_beat) => {}
            }
            let began = Instant::now();
            let beat = began >= next_beat;
            let batch = self.take_batch();
            let record = self.record(&*service, Utc::now());
            let mut pipe = redis::pipe();
            self.add_send(&mut pipe, &record, &batch);
            let candidate = format!("{}-{}", record.id, record.beat_ms);
            if beat {
                pipe.cmd("SET")
                    .arg(&self.keys.epoch)
                    .arg(&candidate)
                    .arg("NX")
                    .arg("GET");
                pipe.cmd("HGETALL").arg(&self.keys.instances);
            }
            let reply = exchange(pipe.query_async::<Vec<Value>>(&mut conn)).await;
            match reply {
                Ok(values) => {
                    self.connected();
                    pause = MIN_PAUSE;
                    if beat {
                        next_beat = began + BEAT_EVERY;
                        if let [previous, records] = &values[..] {
                            let previous: Option<String> =
                                redis::from_redis_value_ref(previous).unwrap_or(None);
                            let current = previous.unwrap_or(candidate);
                            self.take_records(records, &record.id);
                            if epoch.as_ref() != Some(&current) {
                                if epoch.is_some() {
                                    tracing::warn!(cluster = %self.settings.name, "redis lost its data: republishing");
                                }
                                match self.republish(&mut conn, &*service).await {
                                    Ok(()) => {
                                        epoch = Some(current);
                                        self.epoch_gen.fetch_add(1, Ordering::AcqRel);
                                    }
                                    Err(e) => self.unreachable(e),
                                }
                            } else if let Some(store) = service.store()
                                && let Err(e) =
                                    self.publish_rollups(store, &record.id, &mut conn).await
                            {
                                self.unreachable(e);
                            }
                        }
                    }
                }
                Err(error) => {
                    self.requeue(batch);
                    self.unreachable(error);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    next_beat = Instant::now();
                    continue;
                }
            }
            // One batch per FLUSH_EVERY at most: under load, batches grow
            // instead of commands multiplying.
            tokio::time::sleep_until(began + FLUSH_EVERY).await;
        }
    }

    /// After Redis lost its data (or on joining): writes back the records
    /// of the instances this one knew (unless already there), its own
    /// buffered decisions and rollups.
    async fn republish(
        &self,
        conn: &mut ConnectionManager,
        service: &dyn Local,
    ) -> Result<(), String> {
        let mut pipe = redis::pipe();
        {
            let view = lock(&self.view);
            for r in view.peers.values() {
                let json = serde_json::to_string(r).expect("a record serialises");
                pipe.cmd("HSETNX")
                    .arg(&self.keys.instances)
                    .arg(&r.id)
                    .arg(json)
                    .ignore();
            }
        }
        let record = self.record(service, Utc::now());
        self.add_send(&mut pipe, &record, &service.buffered());
        exchange(pipe.query_async::<()>(conn)).await?;
        if let Some(store) = service.store() {
            self.republish_rollups(store, &record.id, conn).await?;
        }
        Ok(())
    }

    /// The sorted sets of `instance`'s rollup rows: per minute, per hour.
    fn rollup_keys(&self, instance: &str) -> [String; 2] {
        [
            self.keys.rollups("rollups", instance),
            self.keys.rollups("rollups-hour", instance),
        ]
    }

    /// Writes the rollup rows of the minutes (and their hours) that changed
    /// since the last call: each period's rows replace the ones published
    /// before (absolute rows: a retry changes nothing).
    async fn publish_rollups(
        &self,
        store: &Arc<Store>,
        me: &str,
        conn: &mut ConnectionManager,
    ) -> Result<(), String> {
        let minutes = store.take_dirty();
        if minutes.is_empty() {
            return Ok(());
        }
        let mut hours: Vec<i64> = minutes.iter().map(|m| m.div_euclid(60) * 60).collect();
        hours.dedup();
        let read = {
            let (store, at_minutes, at_hours) = (Arc::clone(store), minutes.clone(), hours.clone());
            tokio::task::spawn_blocking(move || {
                Ok::<_, rusqlite::Error>([
                    store.rollup_rows(false, Periods::At(&at_minutes))?,
                    store.rollup_rows(true, Periods::At(&at_hours))?,
                ])
            })
            .await
        };
        let Ok(Ok(tables)) = read else {
            store.put_dirty(minutes);
            return Ok(());
        };
        let mut pipe = redis::pipe();
        let keys = self.rollup_keys(me);
        for ((key, rows), periods) in keys.iter().zip(&tables).zip([&minutes, &hours]) {
            for p in periods {
                pipe.cmd("ZREMRANGEBYSCORE").arg(key).arg(p).arg(p).ignore();
            }
            add_rows(&mut pipe, key, rows);
        }
        let oldest = shared::history::minute_of(Utc::now().timestamp_millis()) - MINUTES_KEPT;
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&keys[0])
            .arg("-inf")
            .arg(format!("({oldest}"))
            .ignore();
        if let Err(e) = exchange(pipe.query_async::<()>(conn)).await {
            store.put_dirty(minutes);
            return Err(e);
        }
        Ok(())
    }

    /// Writes every rollup row this instance holds (the minute rows of the
    /// last [`MINUTES_KEPT`]), replacing what Redis had of it.
    async fn republish_rollups(
        &self,
        store: &Arc<Store>,
        me: &str,
        conn: &mut ConnectionManager,
    ) -> Result<(), String> {
        let oldest = shared::history::minute_of(Utc::now().timestamp_millis()) - MINUTES_KEPT;
        let read = {
            let store = Arc::clone(store);
            tokio::task::spawn_blocking(move || {
                Ok::<_, rusqlite::Error>([
                    store.rollup_rows(false, Periods::Since(oldest))?,
                    store.rollup_rows(true, Periods::Since(i64::MIN))?,
                ])
            })
            .await
        };
        let Ok(Ok(tables)) = read else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        for (key, rows) in self.rollup_keys(me).iter().zip(&tables) {
            pipe.cmd("DEL").arg(key).ignore();
            for chunk in rows.chunks(1_000) {
                add_rows(&mut pipe, key, chunk);
            }
        }
        exchange(pipe.query_async::<()>(conn)).await
    }

    /// The other instances' rollup rows of the minutes `first..end`, summed
    /// per `step` minutes and tier, as [`Store::rollups`] gives this
    /// instance's; and the instances they come from. Fails while Redis is
    /// unreachable (the history then covers this instance only).
    pub async fn peer_rollups(
        &self,
        first: i64,
        end: i64,
        step: i64,
    ) -> Result<(Vec<(i64, Tier, Vec<f64>)>, Vec<String>), String> {
        if !self.is_cluster_view() {
            return Err("redis unreachable".into());
        }
        let mut ids: Vec<String> = lock(&self.view).peers.keys().cloned().collect();
        ids.sort();
        let hourly = step % 60 == 0 && first % 60 == 0 && end % 60 == 0;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(&self.rollup_keys(id)[usize::from(hourly)])
                .arg(first)
                .arg(format!("({end}"));
        }
        let mut conn = self.publisher.clone();
        let replies: Vec<Vec<String>> = exchange(pipe.query_async(&mut conn)).await?;
        let mut out = Vec::new();
        for member in replies.iter().flatten() {
            if let Some((minute, tier, values)) = parse_row(member) {
                out.push(((minute - first).div_euclid(step), tier, values));
            }
        }
        Ok((out, ids))
    }

    /// Takes the records of `HGETALL instances` (all but `me`).
    fn take_records(&self, records: &Value, me: &str) {
        let Ok(map) = redis::from_redis_value_ref::<HashMap<String, String>>(records) else {
            return;
        };
        let mut view = lock(&self.view);
        let mut changed = false;
        for (id, json) in map {
            if id == me {
                continue;
            }
            if let Ok(r) = serde_json::from_str::<Record>(&json) {
                changed |= take_record(&mut view.peers, r);
            }
        }
        drop(view);
        if changed {
            self.bump();
        }
    }

    async fn read_loop(self: Arc<Self>, service: Arc<dyn Local>) {
        let me = service.instance().id;
        let mut conn = self.reader.clone();
        let mut seen_gen = 0;
        let mut last_id = "0-0".to_owned();
        while !self.closing.load(Ordering::Acquire) {
            let generation = self.epoch_gen.load(Ordering::Acquire);
            if generation == 0 || !self.is_cluster_view() {
                // Not before the publisher has reached Redis (and learnt its
                // epoch), nor while it finds Redis unreachable.
                tokio::time::sleep(FLUSH_EVERY).await;
                continue;
            }
            if generation != seen_gen {
                seen_gen = generation;
                last_id = "0-0".to_owned();
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK_MS)
                .arg("STREAMS")
                .arg(&self.keys.decisions)
                .arg(&last_id);
            let read = cmd.query_async::<Option<redis::streams::StreamReadReply>>(&mut conn);
            let reply =
                tokio::time::timeout(REDIS_TIMEOUT + Duration::from_millis(READ_BLOCK_MS), read)
                    .await;
            let Ok(Ok(reply)) = reply else {
                tokio::time::sleep(MIN_PAUSE).await;
                continue;
            };
            let entries: Vec<redis::streams::StreamId> = reply
                .map(|r| r.keys)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|k| k.ids)
                .collect();
            if let Some(last) = entries.last() {
                last_id.clone_from(&last.id);
                self.take_entries(&entries, &me);
            }
        }
    }

    /// Takes stream entries (oldest first) of the other instances: their
    /// records, and their decisions as far as the newest `capacity` of
    /// them go (older ones would be dropped at once: they are not parsed).
    fn take_entries(&self, entries: &[redis::streams::StreamId], me: &str) {
        let mut records = Vec::new();
        let mut newest_first = Vec::new();
        for entry in entries.iter().rev() {
            let field = |name: &str| {
                entry
                    .map
                    .get(name)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            };
            if field("i").as_deref() == Some(me) {
                continue;
            }
            records.extend(field("r").and_then(|j| serde_json::from_str::<Record>(&j).ok()));
            if newest_first.len() < self.capacity {
                let decisions: Vec<(RoutingDecision, f64)> = field("d")
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default();
                newest_first.extend(decisions.into_iter().rev());
            }
        }
        let mut view = lock(&self.view);
        for r in records {
            take_record(&mut view.peers, r);
        }
        newest_first.truncate(self.capacity);
        for (decision, ms) in newest_first.into_iter().rev() {
            let Ok(recorded) = RecordedDecision::new(decision, ms) else {
                continue;
            };
            let d = &recorded.decision;
            let key = (d.timestamp, d.seq, d.id.clone());
            if view.remote.contains_key(&key) {
                continue;
            }
            if view.fresh.len() == self.capacity {
                view.fresh.pop_front();
            }
            view.fresh.push_back(recorded.decision.clone());
            view.remote.insert(key, recorded);
            if view.remote.len() > self.capacity {
                view.remote.pop_first();
            }
        }
        drop(view);
        self.bump();
    }
}

/// Minute rows kept in Redis for the others to sum (hour rows are kept
/// as long as the store keeps them).
pub const MINUTES_KEPT: i64 = 7 * 24 * 60;

/// `ZADD`s rollup rows, scored by their minute.
fn add_rows(pipe: &mut redis::Pipeline, key: &str, rows: &[(i64, Tier, Vec<f64>)]) {
    if rows.is_empty() {
        return;
    }
    let cmd = pipe.cmd("ZADD").arg(key);
    for (minute, tier, values) in rows {
        let mut member = format!("{minute}|{}|", tier.index());
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                member.push(',');
            }
            member.push_str(&v.to_string());
        }
        cmd.arg(*minute).arg(member);
    }
    cmd.ignore();
}

/// A row [`add_rows`] wrote.
fn parse_row(member: &str) -> Option<(i64, Tier, Vec<f64>)> {
    let mut parts = member.splitn(3, '|');
    let minute = parts.next()?.parse().ok()?;
    let tier = *Tier::ALL.get(parts.next()?.parse::<usize>().ok()?)?;
    let values: Vec<f64> = parts
        .next()?
        .split(',')
        .map(|v| v.parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect::<Option<_>>()?;
    (values.len() == crate::store::rollup_columns().len()).then_some((minute, tier, values))
}

/// Keeps `r` unless an at least as new record of its instance is held.
fn take_record(peers: &mut HashMap<String, Record>, r: Record) -> bool {
    match peers.get(&r.id) {
        Some(held) if !r.supersedes(held) => false,
        _ => {
            peers.insert(r.id.clone(), r);
            true
        }
    }
}

fn listed(r: &Record) -> ClusterInstance {
    ClusterInstance {
        id: r.id.clone(),
        address: r.address.clone(),
        started_at: r.started_at.clone(),
        last_heartbeat: rfc3339(
            DateTime::from_timestamp_millis(r.beat_ms).unwrap_or(DateTime::UNIX_EPOCH),
        ),
        active_requests: r.active.iter().sum(),
        total_decisions: r.total(),
        total_processed: r.per_tier,
        state: InstanceState::Live,
        current: false,
    }
}

/// One exchange with Redis, bounded by [`REDIS_TIMEOUT`].
pub async fn exchange<T>(call: impl Future<Output = Result<T, RedisError>>) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `orch_cluster_*` series, read from the cluster at scrape time.
#[derive(Debug)]
struct Collector(Weak<Cluster>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.0.upgrade() {
            Some(cluster) => encode_gauges(&cluster.gauges(), &mut encoder),
            None => Ok(()),
        }
    }
}

fn encode_gauges(g: &Gauges, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let gauge = |encoder: &mut DescriptorEncoder, name, help, value: u64| {
        encode_gauge(encoder, name, help, value as i64)
    };
    gauge(
        encoder,
        "orch_cluster_redis_up",
        "1 while Redis answers (the status covers the cluster), 0 while it is unreachable or not reached yet",
        u64::from(g.redis_up),
    )?;
    gauge(
        encoder,
        "orch_cluster_backlog",
        "Decisions waiting to be sent to Redis",
        g.backlog,
    )?;
    let overflowed = ConstCounter::new(g.overflowed);
    let e = encoder.encode_descriptor(
        "orch_cluster_overflowed",
        "Decisions that found the Redis backlog full (never sent; totals stay exact)",
        None,
        overflowed.metric_type(),
    )?;
    overflowed.encode(e)?;
    let mut family = encoder.encode_descriptor(
        "orch_cluster_instances",
        "Instances of the cluster this one knows of, by state (itself included)",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    for (state, n) in ["live", "stale", "gone"].into_iter().zip(g.instances) {
        ConstGauge::new(n as i64).encode(family.encode_family(&[("state", state)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, per_tier: [u64; 3], beat_ms: i64) -> Record {
        Record {
            id: id.into(),
            address: "127.0.0.1:1".into(),
            started_at: "2026-11-29T00:00:00.000Z".into(),
            beat_ms,
            active: [1, 0, 0],
            per_tier,
            tokens: [[0; 3]; 3],
            baseline: None,
            assessor: [0; 3],
            stopped: false,
        }
    }

    #[test]
    fn a_record_never_goes_back() {
        let mut peers = HashMap::new();
        assert!(take_record(&mut peers, record("a", [5, 0, 0], 10)));
        // An older write (a retry, a republished copy) changes nothing.
        assert!(!take_record(&mut peers, record("a", [4, 0, 0], 20)));
        assert!(!take_record(&mut peers, record("a", [5, 0, 0], 9)));
        assert_eq!(peers["a"].total(), 5);
        assert!(take_record(&mut peers, record("a", [5, 1, 0], 11)));
        assert!(
            take_record(&mut peers, record("a", [5, 1, 0], 12)),
            "a newer heartbeat"
        );
        assert_eq!(peers["a"].beat_ms, 12);
    }

    #[test]
    fn a_newer_start_replaces_higher_totals() {
        let mut peers = HashMap::new();
        assert!(take_record(&mut peers, record("b", [1_005, 0, 0], 10)));
        // B restarted (on its data dir, after a refused write) with fewer.
        let mut restarted = record("b", [5, 0, 0], 20);
        restarted.started_at = "2026-11-29T01:00:00.000Z".into();
        assert!(take_record(&mut peers, restarted.clone()));
        assert_eq!(peers["b"].total(), 5);
        // A late copy from the earlier start changes nothing.
        assert!(!take_record(&mut peers, record("b", [1_005, 0, 0], 30)));
        assert_eq!(peers["b"].started_at, restarted.started_at);
    }

    #[test]
    fn rollup_rows_read_back_as_written() {
        let n = crate::store::rollup_columns().len();
        let values: Vec<f64> = (0..n).map(|i| i as f64 * 1.5).collect();
        let mut pipe = redis::pipe();
        add_rows(&mut pipe, "k", &[(29_000_000, Tier::Q4, values.clone())]);
        let packed = String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned();
        let member = packed
            .split("\r\n")
            .find(|p| p.starts_with("29000000|"))
            .expect("the member is sent");
        assert_eq!(parse_row(member), Some((29_000_000, Tier::Q4, values)));
        assert_eq!(parse_row("1|2|3"), None, "too few values");
        assert_eq!(parse_row("1|7|0"), None, "no such tier");
        let inf = format!("1|0|{}", vec!["inf"; n].join(","));
        assert_eq!(parse_row(&inf), None, "only finite numbers");
    }

    #[test]
    fn keys_of_one_cluster_share_a_hash_tag() {
        let k = Keys::new("blue");
        for key in [
            &k.decisions,
            &k.instances,
            &k.epoch,
            &k.rollups("rollups", "x"),
        ] {
            assert!(key.starts_with("orch:{blue}:"), "{key}");
        }
    }

    #[tokio::test]
    async fn a_full_backlog_counts_what_it_drops() {
        let cluster = Cluster::new(
            Settings {
                url: "redis://127.0.0.1:1".into(),
                name: "t".into(),
                backlog: 3,
                address: "x".into(),
            },
            10,
        )
        .unwrap();
        let d = RoutingDecision::new("i-1".into(), "q", Tier::Q2, 1.0, Utc::now()).unwrap();
        cluster.enqueue((0..5).map(|_| (&d, 0.5)));
        let info = cluster.info("me");
        assert_eq!((info.backlog, info.overflowed), (3, 2));
        // A failed send goes back in front, as far as there is room.
        let batch = cluster.take_batch();
        assert_eq!(batch.len(), 3);
        cluster.enqueue([(&d, 0.5)]);
        cluster.requeue(batch);
        let info = cluster.info("me");
        assert_eq!((info.backlog, info.overflowed), (3, 3));
        assert_eq!(info.view, ClusterView::Local, "not connected yet");
        assert_eq!(
            info.label.as_deref(),
            Some("local view of instance me; Redis not reached yet")
        );
        assert_eq!(info.redis, RedisState::Connecting);
    }
}
