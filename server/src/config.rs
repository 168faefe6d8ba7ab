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
}

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
            for tier in Tier::ALL {
                if list.iter().filter(|(t, _)| *t == tier).count() > 1 {
                    return Err(format!("{flag} names tier {tier} more than once"));
                }
            }
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
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }
}
