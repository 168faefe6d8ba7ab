//! Command-line flags, each with an environment fallback.

use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser as _;
use shared::{DEFAULT_CAPACITY, DEFAULT_WINDOW, Tier};

use crate::upstream::UpstreamTarget;

/// Orchestrator Status: the live telemetry panel and API of a multi-tier LLM
/// query router.
#[derive(Debug, Clone, Parser)]
#[command(name = "server", version, about)]
pub struct Config {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "ORCH_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: String,

    /// An OpenAI-compatible upstream for a tier, as TIER=URL with the API's
    /// base URL (e.g. fast=http://127.0.0.1:8081/v1). Repeatable; the
    /// environment variable takes a comma-separated list.
    #[arg(long = "upstream", env = "ORCH_UPSTREAMS", value_delimiter = ',', value_parser = parse_tier_value)]
    pub upstreams: Vec<(Tier, String)>,

    /// The model name to request from a tier's upstream, as TIER=NAME.
    /// Repeatable; the environment variable takes a comma-separated list.
    #[arg(long = "model", env = "ORCH_MODELS", value_delimiter = ',', value_parser = parse_tier_value)]
    pub models: Vec<(Tier, String)>,

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
    #[arg(long, env = "ORCH_MAX_CONNECTIONS", default_value_t = crate::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub max_connections: usize,

    /// Most `GET /api/orchestrator/stream` event streams open at once;
    /// beyond it a 503 (the panel then polls; 0 turns streaming off). Each
    /// also holds a connection, so keep --max-connections above it.
    #[arg(long, env = "ORCH_MAX_STREAMS", default_value_t = crate::stream::DEFAULT_MAX_STREAMS,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000).map(|n| n as usize))]
    pub max_streams: usize,

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

/// `/api/query` calls in flight per tier unless `--max-inflight` says otherwise.
pub const DEFAULT_MAX_INFLIGHT: usize = 64;

impl Config {
    /// Checks what clap cannot: the window fits in the buffer and every tier
    /// is named once.
    pub fn validate(&self) -> Result<(), String> {
        if self.window > self.buffer_size {
            return Err(format!(
                "--window ({}) cannot exceed --buffer-size ({})",
                self.window, self.buffer_size
            ));
        }
        for (list, flag) in [(&self.upstreams, "--upstream"), (&self.models, "--model")] {
            if let Some(tier) = repeated(list.iter().map(|(t, _)| *t)) {
                return Err(format!("{flag} names tier {tier} more than once"));
            }
        }
        match repeated(self.max_inflight.iter().map(|(t, _)| *t)) {
            Some(Some(tier)) => {
                return Err(format!("--max-inflight names tier {tier} more than once"));
            }
            Some(None) => {
                return Err("--max-inflight gives the value for every tier more than once".into());
            }
            None => {}
        }
        if self
            .ingest_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err("--ingest-token must not be empty".into());
        }
        if let Some(origin) = &self.cors_origin {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && axum::http::HeaderValue::from_str(origin).is_ok()
                && !origin.ends_with('/');
            if !ok {
                return Err(format!(
                    "--cors-origin {origin:?} is not an origin like https://ops.example.com"
                ));
            }
        }
        for (tier, url) in &self.upstreams {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "--upstream {tier}: {url:?} is not an http:// or https:// URL"
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
    pub fn max_inflight(&self) -> [usize; 3] {
        let all = self
            .max_inflight
            .iter()
            .find(|(t, _)| t.is_none())
            .map_or(DEFAULT_MAX_INFLIGHT, |&(_, n)| n);
        Tier::ALL.map(|tier| {
            self.max_inflight
                .iter()
                .find(|(t, _)| *t == Some(tier))
                .map_or(all, |&(_, n)| n)
        })
    }

    /// The per-tier upstream targets.
    pub fn targets(&self) -> [Option<UpstreamTarget>; 3] {
        Tier::ALL.map(|tier| {
            let base_url = self.upstreams.iter().find(|(t, _)| *t == tier)?.1.clone();
            let model = self
                .models
                .iter()
                .find(|(t, _)| *t == tier)
                .map(|(_, m)| m.clone());
            Some(UpstreamTarget { base_url, model })
        })
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

fn parse_tier_value(raw: &str) -> Result<(Tier, String), String> {
    let (tier, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not TIER=VALUE"))?;
    let tier: Tier = tier.trim().parse()?;
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{raw:?} has an empty value"));
    }
    Ok((tier, value.to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["server"];
        argv.extend_from_slice(args);
        let cfg = Config::try_parse_from(argv).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8000");
        assert_eq!(c.buffer_size, 100);
        assert_eq!(c.window, 20);
        assert_eq!(c.upstream_timeout, Duration::from_secs(60));
        assert_eq!(c.targets(), [None, None, None]);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert!(!c.redact_queries && !c.log_queries);
        assert!(c.ingest_token.is_none() && c.cors_origin.is_none());
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_streams, 10_000);
        assert_eq!(c.max_upstream_body, 8 << 20);
        assert_eq!(c.max_inflight(), [64; 3]);
    }

    #[test]
    fn limits_in_either_form() {
        let c = parse(&[
            "--max-inflight",
            "8",
            "--max-inflight",
            "powerful=2",
            "--max-upstream-body",
            "512KiB",
            "--max-connections",
            "50",
        ])
        .unwrap();
        assert_eq!(c.max_inflight(), [8, 8, 2]);
        assert_eq!(c.max_upstream_body, 512 << 10);
        assert_eq!(c.max_connections, 50);
        assert_eq!(
            parse(&["--max-inflight", "Q2=3"]).unwrap().max_inflight(),
            [3, 64, 64]
        );
        assert_eq!(
            parse(&["--max-upstream-body", "1000"])
                .unwrap()
                .max_upstream_body,
            1000
        );
    }

    #[test]
    fn the_ingest_token_is_trimmed_like_a_presented_one() {
        let c = parse(&["--ingest-token", " s3cret\n"]).unwrap();
        assert_eq!(c.ingest_token().as_deref(), Some("s3cret"));
    }

    #[test]
    fn upstreams_in_either_naming_with_models() {
        let c = parse(&[
            "--upstream",
            "fast=http://127.0.0.1:8081/v1",
            "--upstream",
            "Q4=http://127.0.0.1:8083/v1",
            "--model",
            "powerful=qwen-32b",
        ])
        .unwrap();
        let t = c.targets();
        assert_eq!(t[0].as_ref().unwrap().base_url, "http://127.0.0.1:8081/v1");
        assert!(t[1].is_none());
        assert_eq!(t[2].as_ref().unwrap().model.as_deref(), Some("qwen-32b"));
    }

    #[test]
    fn bad_flags_are_refused() {
        for args in [
            &["--upstream", "medium=http://x"][..],
            &["--upstream", "fast"],
            &["--upstream", "fast="],
            &["--upstream", "fast=ftp://x"],
            &["--upstream", "fast=http://a", "--upstream", "Q2=http://b"],
            &["--buffer-size", "0"],
            &["--window", "0"],
            &["--buffer-size", "10", "--window", "11"],
            &["--upstream-timeout", "0"],
            &["--upstream-timeout", "NaN"],
            &["--upstream-timeout", "soon"],
            &["--ingest-token", " "],
            &["--cors-origin", "*"],
            &["--cors-origin", "https://a.example/"],
            &["--max-connections", "0"],
            &["--max-inflight", "0"],
            &["--max-inflight", "fast=x"],
            &["--max-inflight", "Q2=1", "--max-inflight", "fast=2"],
            &["--max-inflight", "1", "--max-inflight", "2"],
            &["--max-upstream-body", "0"],
            &["--max-upstream-body", "8 parsecs"],
            &["--max-upstream-body", "99999GiB"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }
}
