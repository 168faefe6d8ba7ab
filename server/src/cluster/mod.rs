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

mod metrics;
mod publish;
mod read;
mod wire;
use metrics::*;
pub use wire::*;

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
    /// Routing quality, live, per tier (absent from an older instance).
    #[serde(default)]
    quality: Option<shared::PerTier<shared::shadow::TierCounts>>,
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
    /// Routing quality, live: shadow judging and the implicit signals.
    pub quality: shared::PerTier<shared::shadow::TierCounts>,
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
            if let Some(q) = &r.quality {
                for tier in Tier::ALL {
                    others.quality[tier].merge(&q[tier]);
                }
            }
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
