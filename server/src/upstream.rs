//! Generation through OpenAI-compatible upstreams (llama.cpp server, Ollama,
//! vLLM...), one per tier, each call bounded by a timeout.

use std::time::Duration;

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

/// The upstreams of all tiers and the client that talks to them.
#[derive(Debug, Clone)]
pub struct Upstreams {
    client: reqwest::Client,
    targets: [Option<UpstreamTarget>; 3],
    timeout: Duration,
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
    /// Upstreams for the given tiers, each call bounded by `timeout`.
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
        }
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
            let bytes = response.bytes().await.map_err(|e| self.classify(e))?;
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

    fn classify(&self, err: reqwest::Error) -> UpstreamError {
        if err.is_timeout() {
            UpstreamError::Timeout(self.timeout)
        } else {
            // Without the URL: it may carry credentials.
            UpstreamError::Transport(err.without_url().to_string())
        }
    }
}
