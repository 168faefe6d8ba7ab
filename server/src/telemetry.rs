//! The Prometheus registry of `GET /metrics`, at the bottom of the server:
//! every part registers its own series here (the upstreams' health in
//! [`crate::upstream::health`], the cluster's gauges in [`crate::cluster`],
//! the model assessor's in [`crate::assessor`]), and this module keeps only
//! what belongs to no other part: the routing decisions, the build and the
//! process.
//!
//! Labels are bounded by construction: `tier` (3), `upstream` (from the
//! configuration), `outcome` (9), `mode` (5), `complexity` (3), `direction`
//! (2), `to` (3), `reason` (4). Nothing a client sends becomes a label.
//!
//! Every series is created at start, so the decision path's recording is a
//! few atomic additions with no map lookup.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use shared::api::Mode;
use shared::{Complexity, Tier};

type Labels = Vec<(&'static str, String)>;

/// The registry, and the series of the decisions.
pub struct Telemetry {
    /// Indexed by tier, complexity, mode (simple, two-stage, unspecified).
    decisions: Vec<Counter>,
    decision_time: Histogram,
    registry: Mutex<Registry>,
}

impl Telemetry {
    /// The registry with the decisions', the build's and the process's
    /// series, every one at zero.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();

        let decisions_family = Family::<Labels, Counter>::default();
        registry.register(
            "orch_decisions",
            "Routing decisions by tier, complexity class and router mode",
            decisions_family.clone(),
        );
        let mut decisions = Vec::with_capacity(3 * 3 * MODE_LABELS.len());
        for tier in Tier::ALL {
            for complexity in [
                Complexity::Simple,
                Complexity::Moderate,
                Complexity::Complex,
            ] {
                for mode in MODE_LABELS {
                    decisions.push(
                        decisions_family
                            .get_or_create(&vec![
                                ("tier", tier.to_string()),
                                ("complexity", complexity_label(complexity).to_owned()),
                                ("mode", mode.to_owned()),
                            ])
                            .clone(),
                    );
                }
            }
        }
        let decision_time = Histogram::new(exponential_buckets(1e-6, 4.0, 12));
        registry.register(
            "orch_decision_duration_seconds",
            "Time the router spent choosing a tier",
            decision_time.clone(),
        );

        registry.register_collector(Box::new(BuildInfo));
        registry.register_collector(Box::new(ProcessCollector {
            started: SystemTime::now(),
        }));
        Arc::new(Telemetry {
            decisions,
            decision_time,
            registry: Mutex::new(registry),
        })
    }

    /// Adds a metric (a counter, a histogram, a family of them) to every
    /// scrape; `name` gets the usual `_total` or `_bucket` suffixes.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.registry).register(name, help, metric);
    }

    /// Counts one decision (a few atomic additions; no lookup).
    pub fn record_decision(
        &self,
        tier: Tier,
        complexity: Complexity,
        mode: Option<Mode>,
        decision_time_ms: f64,
    ) {
        let mode = match mode {
            Some(Mode::Simple) => 0,
            Some(Mode::TwoStage) => 1,
            Some(Mode::Council) => 2,
            Some(Mode::Benchmark) => 3,
            None => 4,
        };
        let modes = MODE_LABELS.len();
        self.decisions[(tier.index() * 3 + complexity as usize) * modes + mode].inc();
        self.decision_time.observe(decision_time_ms / 1_000.0);
    }

    /// Adds `collector`'s series to every scrape from now on (the cluster
    /// registers its `orch_cluster_*` this way).
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        lock(&self.registry).register_collector(collector);
    }

    /// The Prometheus text exposition (format 0.0.4) of every series.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &lock(&self.registry))
            .expect("writing to a String cannot fail");
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No critical section here can panic midway.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Content-Type` of [`Telemetry::encode`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const MODE_LABELS: [&str; 5] = ["simple", "two-stage", "council", "benchmark", "unspecified"];

fn complexity_label(c: Complexity) -> &'static str {
    match c {
        Complexity::Simple => "simple",
        Complexity::Moderate => "moderate",
        Complexity::Complex => "complex",
    }
}

/// `orch_build_info`: the server's version, read at scrape time.
#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = ConstGauge::new(1i64);
        let mut family = encoder.encode_descriptor(
            "orch_build_info",
            "The server's version (value 1)",
            None,
            info.metric_type(),
        )?;
        info.encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
    }
}

/// One gauge without labels.
pub fn encode_gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(e)
}

/// The standard `process_*` series, read from `/proc` at scrape time (on
/// systems without it only the start time is given).
#[derive(Debug)]
struct ProcessCollector {
    started: SystemTime,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = encode_gauge::<f64>;
        let start = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, seconds",
            start,
        )?;
        let Some(p) = ProcStat::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        let e = encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(e)?;
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size, bytes",
            p.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size, bytes",
            p.virtual_bytes,
        )?;
        if let Some(n) = p.open_fds {
            gauge(&mut encoder, "process_open_fds", "Open file descriptors", n)?;
        }
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Most file descriptors the process may open",
                soft as f64,
            )?;
        }
        Ok(())
    }
}

struct ProcStat {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: Option<f64>,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which sits in parentheses and may
        // hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line; `rest`
        // starts at field 3.
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let mut pages = statm.split_whitespace().map(|f| f.parse::<f64>().ok());
        let virtual_pages = pages.next()??;
        let resident_pages = pages.next()??;
        let tick_hz = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as f64;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        Some(ProcStat {
            cpu_seconds: if tick_hz > 0.0 { ticks / tick_hz } else { 0.0 },
            resident_bytes: resident_pages * page,
            virtual_bytes: virtual_pages * page,
            open_fds,
        })
    }
}
