//! Generation through OpenAI-compatible upstreams (llama.cpp server, Ollama,
//! vLLM...), one per tier, each call bounded by a timeout, the size of the
//! reply it reads, and the number of calls a tier may have in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use crate::places::Places;

use serde::Deserialize;
use serde_json::json;
use shared::Tier;

/// One tier's upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// Base URL of the API, e.g. `http://127.0.0.1:8081/v1`.
    pub base_url: String,
    /// The model to ask for, when the upstream needs one.
    pub model: Option<String>,
}

/// The most bytes of a reply read unless configured otherwise.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// The upstreams of all tiers and the client that talks to them.
#[derive(Debug, Clone)]
pub struct Upstreams {
    client: reqwest::Client,
    targets: [Option<UpstreamTarget>; 3],
    timeout: Duration,
    max_body: usize,
    /// One place per call a tier may have in flight.
    inflight: [Arc<Places>; 3],
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The tier has no upstream.
    #[error("no upstream configured for tier {0}")]
    NotConfigured(Tier),
    /// No full answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The upstream answered with an error status.
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    /// The upstream could not be reached or the connection broke.
    #[error("upstream unreachable: {0}")]
    Transport(String),
    /// The upstream's answer is not an OpenAI chat completion.
    #[error("upstream answer is not a chat completion: {0}")]
    BadAnswer(String),
    /// The reply is longer than the configured limit; the rest was not read.
    #[error("upstream reply is larger than {0} bytes")]
    TooLarge(usize),
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

impl Upstreams {
    /// Upstreams for the given tiers, each call bounded by `timeout`, with
    /// the default reply size and in-flight limits.
    pub fn new(targets: [Option<UpstreamTarget>; 3], timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .expect("a plain HTTP client always builds");
        Upstreams {
            client,
            targets,
            timeout,
            max_body: DEFAULT_MAX_BODY,
            inflight: [(); 3].map(|()| Arc::new(Places::new(crate::config::DEFAULT_MAX_INFLIGHT))),
        }
    }

    /// Reads at most `max_body` bytes of a reply, and lets each tier have at
    /// most `max_inflight[tier]` calls in flight.
    pub fn with_limits(mut self, max_body: usize, max_inflight: [usize; 3]) -> Self {
        self.max_body = max_body;
        self.inflight = max_inflight.map(|n| Arc::new(Places::new(n)));
        self
    }

    /// The places for `tier`'s calls: how many are under way, and its limit.
    pub fn in_flight(&self, tier: Tier) -> &Places {
        &self.inflight[tier.index()]
    }

    /// A place for one call on `tier`, held until the permit is dropped; or
    /// the tier's limit when all places are taken.
    pub fn try_begin(&self, tier: Tier) -> Result<OwnedSemaphorePermit, usize> {
        let places = self.in_flight(tier);
        places.try_take().ok_or(places.max())
    }

    /// The upstream of `tier`, if any.
    pub fn target(&self, tier: Tier) -> Option<&UpstreamTarget> {
        self.targets[tier.index()].as_ref()
    }

    /// Asks `tier`'s upstream to answer `query`. Dropping the future cancels
    /// the call (the connection is closed).
    pub async fn generate(
        &self,
        tier: Tier,
        query: &str,
        max_tokens: Option<u64>,
    ) -> Result<Option<String>, UpstreamError> {
        let target = self
            .target(tier)
            .ok_or(UpstreamError::NotConfigured(tier))?;
        let url = format!("{}/chat/completions", target.base_url.trim_end_matches('/'));
        let mut body = json!({
            "messages": [{"role": "user", "content": query}],
            "stream": false,
        });
        if let Some(model) = &target.model {
            body["model"] = json!(model);
        }
        if let Some(n) = max_tokens {
            body["max_tokens"] = json!(n);
        }
        // The client's own timeout covers connect + send + body; the outer one
        // also bounds anything the client does not.
        let call = async {
            let response = self
                .client
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| self.classify(e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(UpstreamError::Status(status.as_u16()));
            }
            let bytes = self.read_body(response).await?;
            let completion: Completion = serde_json::from_slice(&bytes)
                .map_err(|e| UpstreamError::BadAnswer(e.to_string()))?;
            let choice = completion
                .choices
                .into_iter()
                .next()
                .ok_or_else(|| UpstreamError::BadAnswer("no choices".into()))?;
            Ok(choice.message.content)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }

    /// The reply's body, refused as soon as it is known to exceed the limit
    /// (by its Content-Length, or while it streams in).
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
        let limit = self.max_body;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(UpstreamError::TooLarge(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
            if body.len() + chunk.len() > limit {
                return Err(UpstreamError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn classify(&self, err: reqwest::Error) -> UpstreamError {
        if err.is_timeout() {
            UpstreamError::Timeout(self.timeout)
        } else {
            // Without the URL: it may carry credentials.
            UpstreamError::Transport(err.without_url().to_string())
        }
    }
}
