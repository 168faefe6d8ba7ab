//! Command-line flags, each with an environment fallback.

use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser as _;
use shared::insight::{Price, Prices};
use shared::{DEFAULT_CAPACITY, DEFAULT_WINDOW, PerTier, Tier};

use crate::upstream::UpstreamSpec;

/// Orchestrator Status: the live telemetry panel and API of a multi-tier LLM
/// query router.
#[derive(Debug, Clone, Parser)]
#[command(name = "server", version, about)]
pub struct Config {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "ORCH_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: String,

    /// An OpenAI-compatible upstream for a tier, as TIER=URL or
    /// TIER:NAME=URL with the API's base URL (e.g.
    /// fast:gpu1=http://10.0.0.5:8081/v1). Repeat it to give a tier several
    /// upstreams: queries go to the one with the fewest calls in flight and
    /// fail over to the next. Unnamed ones are called by host:port. The
    /// environment variable takes a comma-separated list.
    #[arg(long = "upstream", env = "ORCH_UPSTREAMS", value_delimiter = ',', value_parser = parse_target_value)]
    pub upstreams: Vec<(Target, String)>,

    /// The model name to request, as TIER=NAME (every upstream of the tier)
    /// or TIER:UPSTREAM=NAME (one). Repeatable; the environment variable
    /// takes a comma-separated list.
    #[arg(long = "model", env = "ORCH_MODELS", value_delimiter = ',', value_parser = parse_target_value)]
    pub models: Vec<(Target, String)>,

    /// An API key sent as `Authorization: Bearer KEY`, as TIER=KEY (every
    /// upstream of the tier) or TIER:UPSTREAM=KEY (one). Repeatable; the
    /// environment variable takes a comma-separated list. Never logged or
    /// shown.
    #[arg(long = "upstream-key", env = "ORCH_UPSTREAM_KEYS", hide_env_values = true,
          value_delimiter = ',', value_parser = parse_key)]
    pub upstream_keys: Vec<(Target, Key)>,

    /// Calls after the first for a query whose upstream call failed before
    /// answering (connect error, 429, 502, 503), each after a jittered
    /// backoff and on another upstream of the tier when there is one.
    #[arg(long, env = "ORCH_RETRIES", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,

    /// Failures in a row (timeouts, connect errors, 5xx, bad replies) that
    /// open an upstream's circuit; 0 never opens it.
    #[arg(long, env = "ORCH_CIRCUIT_FAILURES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub circuit_failures: u32,

    /// Seconds an open circuit refuses calls before one probe call is let
    /// through (success closes it, failure opens it again).
    #[arg(long, env = "ORCH_CIRCUIT_COOLDOWN", default_value = "30", value_parser = parse_seconds)]
    pub circuit_cooldown: Duration,

    /// The score from which two-stage routing sends a query to Q4 (the
    /// powerful tier); below it, Q3. The complexity classes stay 3 and 7.
    #[arg(long, env = "ORCH_Q4_THRESHOLD", default_value_t = shared::insight::DEFAULT_Q4_THRESHOLD,
          value_parser = parse_threshold)]
    pub q4_threshold: f64,

    /// How two-stage routing scores a query: `learned` (the linear model
    /// trained on labelled prompts, embedded in the binary) or `heuristic`
    /// (the hand-written keyword table).
    #[arg(long, env = "ORCH_SCORER", value_enum, default_value_t = crate::routing::Scorer::Learned)]
    pub scorer: crate::routing::Scorer,

    /// Sets the Q4 threshold by quality: the share (0 < G <= 1) of the
    /// weak-to-strong quality gap to recover on the labelled data
    /// (`--quality-data`). Instead of `--q4-threshold`.
    #[arg(long, env = "ORCH_QUALITY_TARGET", value_parser = parse_quality_target,
          conflicts_with = "q4_threshold")]
    pub quality_target: Option<f64>,

    /// Labelled prompts (JSON Lines, as `server eval` reads) on which the
    /// expected quality is measured; default the embedded set.
    #[arg(long, env = "ORCH_QUALITY_DATA")]
    pub quality_data: Option<std::path::PathBuf>,

    /// A tier's price, TIER=IN/OUT in USD per million prompt/completion
    /// tokens (e.g. `powerful=5/15`). Repeatable, one per tier.
    #[arg(long = "price", env = "ORCH_PRICES", value_delimiter = ',', value_parser = parse_price)]
    pub prices: Vec<(Tier, Price)>,

    /// An API key clients must send as `Authorization: Bearer KEY` on
    /// `/v1/*` and `POST /api/query`. Repeatable (any of them is accepted);
    /// the environment variable takes a comma-separated list. Never logged.
    #[arg(long = "api-key", env = "ORCH_API_KEYS", hide_env_values = true,
          value_delimiter = ',', value_parser = parse_api_key)]
    pub api_keys: Vec<String>,

    /// The admin key: `Authorization: Bearer KEY` on `/api/keys` makes,
    /// lists, changes and revokes virtual keys. With it the front doors
    /// need a key (a virtual key, an `--api-key`, or this one). Never logged.
    #[arg(long = "admin-key", env = "ORCH_ADMIN_KEY", hide_env_values = true,
          value_parser = parse_api_key)]
    pub admin_key: Option<String>,

    /// Brownout: from this share of its budget (0..1, e.g. 0.8), a virtual
    /// key's two-stage Q4 threshold rises linearly from `--q4-threshold` to
    /// 15 at the whole budget, so its traffic moves to Q3.
    #[arg(long, env = "ORCH_BROWNOUT", value_name = "FROM")]
    pub brownout: Option<f64>,

    /// In brownout, `model: "powerful"` (or Q4) is answered by Q3 too
    /// (otherwise it is honoured).
    #[arg(long, env = "ORCH_BROWNOUT_FORCE", requires = "brownout")]
    pub brownout_force: bool,

    /// With `--redis`, what a virtual key with a budget gets while Redis is
    /// unreachable: `closed` refuses it (503) until Redis is back, `open`
    /// admits it by this instance's view of the spend.
    #[arg(long, env = "ORCH_BUDGET_FAIL", value_enum, default_value_t = crate::keys::ledger::BudgetFail::Closed)]
    pub budget_fail: crate::keys::ledger::BudgetFail,

    /// How many virtual keys `/metrics` names (the top ones by spend this
    /// period); the rest are summed as `key="other"`, so the label stays
    /// bounded however many keys there are.
    #[arg(long, env = "ORCH_METRICS_KEYS", default_value_t = crate::keys::DEFAULT_METRICS_KEYS,
          value_parser = clap::value_parser!(u16).range(0..=1000).map(usize::from))]
    pub metrics_keys: usize,

    /// A key that may read (status, stream, decisions, history, calibrate,
    /// health details, `/metrics`): with any, those reads need one of them
    /// or an `--api-key` as `Authorization: Bearer KEY`, or the session a
    /// panel opens with one (`POST /api/session`). Repeatable; the
    /// environment variable takes a comma-separated list. Never logged.
    #[arg(long = "read-key", env = "ORCH_READ_KEYS", hide_env_values = true,
          value_delimiter = ',', value_parser = parse_api_key)]
    pub read_keys: Vec<String>,

    /// The council's members, as a comma-separated list of tiers: a council
    /// query goes to each of them in parallel.
    #[arg(
        long,
        env = "ORCH_COUNCIL",
        value_delimiter = ',',
        default_value = "fast,balanced,powerful"
    )]
    pub council: Vec<Tier>,

    /// The tier whose model reads the council members' answers and writes
    /// the final one.
    #[arg(long, env = "ORCH_MODERATOR", default_value = "powerful")]
    pub moderator: Tier,

    /// Shadow judging: the share (0..=1) of Q2 and Q3 answers (single-tier,
    /// either door, whole or streamed) that Q4 answers again, off the
    /// request path, for the judge to compare (0: off).
    #[arg(
        long,
        env = "ORCH_SHADOW_RATE",
        default_value_t = 0.0,
        value_name = "R"
    )]
    pub shadow_rate: f64,

    /// The tier whose upstreams judge shadow pairs.
    #[arg(long, env = "ORCH_JUDGE", default_value = "powerful")]
    pub judge: Tier,

    /// Most shadow samples under way at once; beyond, a sample is dropped
    /// and counted, never queued.
    #[arg(long, env = "ORCH_SHADOW_MAX_INFLIGHT", default_value_t = crate::shadow::DEFAULT_MAX_INFLIGHT,
          value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub shadow_max_inflight: usize,

    /// How two-stage routing scores a query (stage 1): `heuristic` (the
    /// explainable features, no call) or `model` (the fast tier's model
    /// rates it 0..15; the heuristic when it times out or answers anything
    /// but a number in range).
    #[arg(long, env = "ORCH_ASSESSOR", value_enum, default_value = "heuristic")]
    pub assessor: crate::assessor::AssessorKind,

    /// Seconds the model assessor may take before the heuristic decides.
    #[arg(long, env = "ORCH_ASSESSOR_TIMEOUT", default_value = "2", value_parser = parse_seconds)]
    pub assessor_timeout: Duration,

    /// Require `Authorization: Bearer <token>` on `GET /metrics`.
    #[arg(long, env = "ORCH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// The embedded store's directory (created if missing): every decision,
    /// per-minute rollups and the totals survive restarts there.
    #[arg(long, env = "ORCH_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,

    /// Keep everything in memory only: nothing survives a restart and there
    /// is no history (the seed's behaviour).
    #[arg(long, env = "ORCH_IN_MEMORY")]
    pub in_memory: bool,

    /// How hard each commit presses decisions to the disk: `normal` survives
    /// the process being killed (kill -9, a crash) but may lose the last
    /// commits on power loss; `full` fsyncs every commit and survives power
    /// loss, at a cost in throughput.
    #[arg(long, env = "ORCH_SYNC", value_enum, default_value = "normal")]
    pub sync: crate::store::SyncMode,

    /// How long stored decisions are kept (e.g. 7d, 12h, 30m).
    #[arg(long, env = "ORCH_KEEP_DECISIONS", default_value = "7d", value_parser = parse_keep)]
    pub keep_decisions: Duration,

    /// How long per-minute rollups (the history's trends) are kept.
    #[arg(long, env = "ORCH_KEEP_ROLLUPS", default_value = "400d", value_parser = parse_keep)]
    pub keep_rollups: Duration,

    /// Keep each two-stage query's whole prompt in the store (off by
    /// default; not with --redact-queries), so that
    /// `replay?scorer=heuristic|learned` can score the operator's own
    /// traffic again before a scorer is switched on.
    #[arg(long, env = "ORCH_KEEP_PROMPTS")]
    pub keep_prompts: bool,

    /// How long kept prompts stay (e.g. 7d, 12h); the store's retention
    /// deletes older ones.
    #[arg(long, env = "ORCH_PROMPT_RETENTION", default_value = "7d", value_parser = parse_keep)]
    pub prompt_retention: Duration,

    /// Share one status with every instance naming the same Redis and
    /// `--cluster` (e.g. redis://10.0.0.5:6379/0). Redis is never on a
    /// request's path: while it is unreachable each instance serves its own
    /// view, labelled.
    #[arg(long, env = "ORCH_REDIS")]
    pub redis: Option<String>,

    /// The cluster's name: instances on one Redis with different names
    /// stay apart.
    #[arg(long, env = "ORCH_CLUSTER", default_value = "default", value_parser = parse_cluster)]
    pub cluster: String,

    /// Most decisions waiting to be sent to Redis (while it is slow or
    /// unreachable); what overflows is counted, and totals stay exact.
    #[arg(long, env = "ORCH_REDIS_BACKLOG", default_value_t = crate::cluster::DEFAULT_BACKLOG,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000).map(|n| n as usize))]
    pub redis_backlog: usize,

    /// How many decisions to keep (ring buffer capacity).
    #[arg(long, env = "ORCH_BUFFER_SIZE", default_value_t = DEFAULT_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub buffer_size: usize,

    /// How many of the newest decisions tier utilization is computed over.
    #[arg(long, env = "ORCH_WINDOW", default_value_t = DEFAULT_WINDOW,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub window: usize,

    /// Seconds an upstream may take to answer before the client gets a 502.
    #[arg(long, env = "ORCH_UPSTREAM_TIMEOUT", default_value = "60", value_parser = parse_seconds)]
    pub upstream_timeout: Duration,

    /// Seconds a connection gets to send a request head, and to stay idle
    /// between requests, before it is closed.
    #[arg(long, env = "ORCH_HEADER_READ_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub header_read_timeout: Duration,

    /// Replace query text in every response and log with a placeholder
    /// (`[redacted #N]`, unique per decision); routing still sees the text.
    #[arg(long, env = "ORCH_REDACT_QUERIES")]
    pub redact_queries: bool,

    /// Log the text of each routed or ingested query (off by default; never
    /// with --redact-queries).
    #[arg(long, env = "ORCH_LOG_QUERIES")]
    pub log_queries: bool,

    /// Require `Authorization: Bearer <token>` on the ingestion endpoint.
    #[arg(long, env = "ORCH_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,

    /// Allow this browser origin (e.g. https://ops.example.com) to call the
    /// API cross-origin; without it no CORS grant is made.
    #[arg(long, env = "ORCH_CORS_ORIGIN")]
    pub cors_origin: Option<String>,

    /// Most connections open at once; beyond it new ones wait in the
    /// listen backlog until one closes.
    #[arg(long, env = "ORCH_MAX_CONNECTIONS", default_value_t = crate::state::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub max_connections: usize,

    /// Most `GET /api/orchestrator/stream` event streams open at once;
    /// beyond it a 503 (the panel then polls; 0 turns streaming off). Each
    /// also holds a connection, so keep --max-connections above it.
    #[arg(long, env = "ORCH_MAX_STREAMS", default_value_t = crate::stream::DEFAULT_MAX_STREAMS,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000).map(|n| n as usize))]
    pub max_streams: usize,

    /// Most `GET /api/orchestrator/decisions?format=ndjson|csv` exports
    /// sent at once; beyond it a 503 with Retry-After.
    #[arg(long, env = "ORCH_MAX_EXPORTS", default_value_t = crate::state::DEFAULT_MAX_EXPORTS,
          value_parser = clap::value_parser!(u32).range(1..=10_000).map(|n| n as usize))]
    pub max_exports: usize,

    /// Seconds a write to a client may wait for it to read (an export or an
    /// event stream nobody reads) before its connection is closed.
    #[arg(long, env = "ORCH_WRITE_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub write_timeout: Duration,

    /// Most bytes of an upstream's reply that are read (e.g. 8388608, 512KiB,
    /// 8MiB); a longer reply is a 502.
    #[arg(long, env = "ORCH_MAX_UPSTREAM_BODY", default_value = "8MiB", value_parser = parse_bytes)]
    pub max_upstream_body: usize,

    /// Most `/api/query` upstream calls in flight per tier: N for every tier,
    /// or TIER=N for one. Repeatable; beyond it a 429.
    #[arg(long = "max-inflight", env = "ORCH_MAX_INFLIGHT", value_delimiter = ',',
          value_parser = parse_inflight)]
    pub max_inflight: Vec<(Option<Tier>, usize)>,
}

pub use crate::upstream::DEFAULT_MAX_INFLIGHT;

/// Why the flags are refused: what clap cannot check (its own refusals
/// come before). Each reads as the message an operator sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value is malformed or out of its range.
    #[error("{flag} {problem}")]
    Invalid {
        /// The flag, `--window`.
        flag: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// A flag names the same thing twice.
    #[error("{flag} names {what} more than once")]
    Repeated {
        /// The flag.
        flag: &'static str,
        /// What it repeats.
        what: String,
    },
    /// `--model` or `--upstream-key` for an upstream no `--upstream` names.
    #[error("{flag} {target}: no such --upstream")]
    NoSuchUpstream {
        /// The flag.
        flag: &'static str,
        /// The `TIER[:NAME]` it targets.
        target: String,
    },
    /// Two flags that exclude each other.
    #[error("{0}")]
    Conflict(&'static str),
}

impl ConfigError {
    fn invalid(flag: &'static str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            flag,
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Checks what clap cannot: the window fits in the buffer and every tier
    /// is named once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis {
            redis::Client::open(url.as_str())
                .map_err(|e| ConfigError::invalid("--redis", format!("{url:?}: {e}")))?;
        }
        if self.window > self.buffer_size {
            return Err(ConfigError::invalid(
                "--window",
                format!(
                    "({}) cannot exceed --buffer-size ({})",
                    self.window, self.buffer_size
                ),
            ));
        }
        let specs = self.specs();
        for (tier, name) in specs.iter().map(|s| (s.tier, &s.name)) {
            if specs
                .iter()
                .filter(|s| s.tier == tier && &s.name == name)
                .count()
                > 1
            {
                return Err(ConfigError::Repeated {
                    flag: "--upstream",
                    what: format!("{}:{name}", tier.internal_name()),
                });
            }
        }
        let models = self.models.iter().map(|(t, _)| t);
        let keys = self.upstream_keys.iter().map(|(t, _)| t);
        for (targets, flag) in [
            (models.collect::<Vec<_>>(), "--model"),
            (keys.collect(), "--upstream-key"),
        ] {
            if let Some(target) = repeated(targets.iter().copied()) {
                return Err(ConfigError::Repeated {
                    flag,
                    what: target.to_string(),
                });
            }
            for target in targets {
                if let Some(name) = &target.name
                    && !specs
                        .iter()
                        .any(|s| s.tier == target.tier && &s.name == name)
                {
                    return Err(ConfigError::NoSuchUpstream {
                        flag,
                        target: target.to_string(),
                    });
                }
            }
        }
        if self
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::invalid("--metrics-token", "must not be empty"));
        }
        if self
            .brownout
            .is_some_and(|b| !(b.is_finite() && (0.0..=1.0).contains(&b)))
        {
            return Err(ConfigError::invalid(
                "--brownout",
                "must be a share in 0..=1 (e.g. 0.8)",
            ));
        }
        if self.keep_prompts && self.redact_queries {
            return Err(ConfigError::Conflict(
                "--keep-prompts keeps query text, --redact-queries keeps none: choose one",
            ));
        }
        if self.keep_prompts && self.in_memory {
            return Err(ConfigError::Conflict(
                "--keep-prompts keeps prompts in the store, and --in-memory has none",
            ));
        }
        if !(self.shadow_rate.is_finite() && (0.0..=1.0).contains(&self.shadow_rate)) {
            return Err(ConfigError::invalid(
                "--shadow-rate",
                "must be a share in 0..=1 (e.g. 0.05)",
            ));
        }
        if let Some(tier) = repeated(self.council.iter().copied()) {
            return Err(ConfigError::Repeated {
                flag: "--council",
                what: format!("tier {tier}"),
            });
        }
        if self.council.is_empty() {
            return Err(ConfigError::invalid("--council", "needs at least one tier"));
        }
        if let Some(tier) = repeated(self.prices.iter().map(|(t, _)| *t)) {
            return Err(ConfigError::Repeated {
                flag: "--price",
                what: format!("tier {tier}"),
            });
        }
        match repeated(self.max_inflight.iter().map(|(t, _)| *t)) {
            Some(Some(tier)) => {
                return Err(ConfigError::Repeated {
                    flag: "--max-inflight",
                    what: format!("tier {tier}"),
                });
            }
            Some(None) => {
                return Err(ConfigError::invalid(
                    "--max-inflight",
                    "gives the value for every tier more than once",
                ));
            }
            None => {}
        }
        if self
            .ingest_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::invalid("--ingest-token", "must not be empty"));
        }
        if let Some(origin) = &self.cors_origin {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && axum::http::HeaderValue::from_str(origin).is_ok()
                && !origin.ends_with('/');
            if !ok {
                return Err(ConfigError::invalid(
                    "--cors-origin",
                    format!("{origin:?} is not an origin like https://ops.example.com"),
                ));
            }
        }
        for (target, url) in &self.upstreams {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    "--upstream",
                    format!("{target}: {url:?} is not an http:// or https:// URL"),
                ));
            }
            if let Err(e) = reqwest::Url::parse(url) {
                return Err(ConfigError::invalid(
                    "--upstream",
                    format!("{target}: {url:?} is not a valid URL: {e}"),
                ));
            }
        }
        Ok(())
    }

    /// The ingest token as presented tokens are read: without surrounding
    /// whitespace (a token read from a file often ends in a newline).
    pub fn ingest_token(&self) -> Option<String> {
        self.ingest_token.as_deref().map(|t| t.trim().to_owned())
    }

    /// The in-flight limit of each tier: its own `TIER=N`, else the plain
    /// `N`, else 64.
    pub fn max_inflight(&self) -> PerTier<usize> {
        let all = self
            .max_inflight
            .iter()
            .find(|(t, _)| t.is_none())
            .map_or(DEFAULT_MAX_INFLIGHT, |&(_, n)| n);
        PerTier::from_fn(|tier| {
            self.max_inflight
                .iter()
                .find(|(t, _)| *t == Some(tier))
                .map_or(all, |&(_, n)| n)
        })
    }

    /// Each tier's price, where `--price` set one.
    pub fn prices(&self) -> Prices {
        PerTier::from_fn(|tier| {
            self.prices
                .iter()
                .find(|(t, _)| *t == tier)
                .map(|&(_, p)| p)
        })
    }

    /// The metrics token as presented tokens are read (trimmed).
    pub fn metrics_token(&self) -> Option<String> {
        self.metrics_token.as_deref().map(|t| t.trim().to_owned())
    }

    /// Every upstream, in the order given, with its name, model and key: a
    /// setting for the named upstream wins over one for its whole tier.
    pub fn specs(&self) -> Vec<UpstreamSpec> {
        let mut specs: Vec<UpstreamSpec> = Vec::new();
        for (target, url) in &self.upstreams {
            let tier = target.tier;
            let name = match &target.name {
                Some(name) => name.clone(),
                None => {
                    // host:port, with -2, -3... when a tier has it twice.
                    let base = authority(url);
                    let taken = |n: &str| specs.iter().any(|s| s.tier == tier && s.name == n);
                    let mut name = base.clone();
                    let mut k = 1;
                    while taken(&name) {
                        k += 1;
                        name = format!("{base}-{k}");
                    }
                    name
                }
            };
            let pick = |list: &[(Target, String)]| {
                let named = list
                    .iter()
                    .find(|(t, _)| t.tier == tier && t.name.as_deref() == Some(name.as_str()));
                let whole = list
                    .iter()
                    .find(|(t, _)| t.tier == tier && t.name.is_none());
                named.or(whole).map(|(_, v)| v.clone())
            };
            let keys: Vec<(Target, String)> = self
                .upstream_keys
                .iter()
                .map(|(t, k)| (t.clone(), k.0.clone()))
                .collect();
            specs.push(UpstreamSpec {
                tier,
                model: pick(&self.models),
                key: pick(&keys),
                base_url: url.clone(),
                name,
            });
        }
        specs
    }
}

/// host:port of a URL (without any user info), for naming an upstream.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    host.rsplit_once('@').map_or(host, |(_, h)| h).to_owned()
}

/// A tier, or one named upstream of it: `fast`, `Q2`, `fast:gpu1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The tier.
    pub tier: Tier,
    /// One upstream of it, by name.
    pub name: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}:{name}", self.tier.internal_name()),
            None => f.write_str(self.tier.internal_name()),
        }
    }
}

/// An API key; shown as `***` in every debug print.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub String);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The first key that comes a second time, if any.
fn repeated<K: PartialEq>(keys: impl Iterator<Item = K>) -> Option<K> {
    let mut seen = Vec::new();
    for key in keys {
        if seen.contains(&key) {
            return Some(key);
        }
        seen.push(key);
    }
    None
}

fn parse_target_value(raw: &str) -> Result<(Target, String), String> {
    let (target, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not TIER=VALUE or TIER:NAME=VALUE"))?;
    let (tier, name) = match target.split_once(':') {
        Some((tier, name)) => (tier, Some(name.trim())),
        None => (target, None),
    };
    let tier: Tier = tier.trim().parse()?;
    if let Some(name) = name {
        let ok = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(format!(
                "{name:?}: an upstream name is 1 to 64 of A-Z a-z 0-9 . _ -"
            ));
        }
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{target:?} has an empty value"));
    }
    Ok((
        Target {
            tier,
            name: name.map(str::to_owned),
        },
        value.to_owned(),
    ))
}

/// An API key: printable ASCII without spaces, never echoed in an error.
fn parse_api_key(raw: &str) -> Result<String, String> {
    let key = raw.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "a key (--api-key, --read-key, --admin-key) must be non-empty printable ASCII without spaces".into(),
        );
    }
    Ok(key.to_owned())
}

/// Like a target value, but the key is never echoed in an error.
fn parse_key(raw: &str) -> Result<(Target, Key), String> {
    let (target, key) = parse_target_value(raw).map_err(|_| {
        "an --upstream-key is TIER=KEY or TIER:NAME=KEY with a non-empty key".to_owned()
    })?;
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "--upstream-key {target}: the key must be printable ASCII without spaces"
        ));
    }
    Ok((target, Key(key)))
}

fn parse_inflight(raw: &str) -> Result<(Option<Tier>, usize), String> {
    let (tier, n) = match raw.split_once('=') {
        Some((tier, n)) => (Some(tier.trim().parse::<Tier>()?), n),
        None => (None, raw),
    };
    match n.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok((tier, n)),
        _ => Err(format!("{raw:?} is not N or TIER=N with N in 1..=1000000")),
    }
}

fn parse_quality_target(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(g) if g > 0.0 && g <= 1.0 => Ok(g),
        _ => Err(format!("must be a number with 0 < G <= 1, got {raw:?}")),
    }
}

fn parse_threshold(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(t) if shared::insight::valid_threshold(t) => Ok(t + 0.0),
        _ => Err(format!("{raw:?} is not a score in 0..=15")),
    }
}

/// `TIER=IN/OUT`, USD per million prompt and completion tokens.
fn parse_price(raw: &str) -> Result<(Tier, Price), String> {
    let bad = || {
        format!(
            "{raw:?} is not TIER=IN/OUT (USD per million prompt/completion tokens, e.g. powerful=5/15)"
        )
    };
    let (tier, prices) = raw.split_once('=').ok_or_else(bad)?;
    let tier = tier.trim().parse::<Tier>()?;
    let (input, output) = prices.split_once('/').ok_or_else(bad)?;
    let number = |s: &str| s.trim().parse::<f64>().map_err(|_| bad());
    let price = Price::new(number(input)?, number(output)?).ok_or_else(|| {
        format!(
            "{raw:?}: prices must be finite and in 0..={}",
            shared::insight::MAX_PRICE
        )
    })?;
    Ok((tier, price))
}

/// A byte count with an optional KiB/MiB/GiB suffix (or K/M/G, the same).
fn parse_bytes(raw: &str) -> Result<usize, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{raw:?}: unknown unit (use bytes, KiB, MiB or GiB)"
            ));
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| (1..=(1usize << 32)).contains(&n))
        .ok_or_else(|| format!("{raw:?} is not a size from 1 byte to 4GiB"))
}

/// A retention: a duration such as `7d`, `12h`, `90s`, at least a second.
fn parse_keep(raw: &str) -> Result<Duration, String> {
    match humantime::parse_duration(raw.trim()) {
        Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(100 * 365 * 86_400) => {
            Ok(d)
        }
        _ => Err(format!(
            "{raw:?} is not a duration from 1s to 100 years (e.g. 7d, 12h, 30m)"
        )),
    }
}

fn parse_seconds(raw: &str) -> Result<Duration, String> {
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 3_600.0) {
        return Err(format!(
            "{raw:?} must be more than 0 and at most 3600 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A cluster name: 1 to 64 letters, digits, `-`, `_` or `.` (it becomes
/// part of Redis keys).
fn parse_cluster(raw: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

#[cfg(test)]
mod tests;
