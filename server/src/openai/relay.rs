//! A streamed answer: the upstream's events relayed as they come, with the
//! stall, cut and usage rules of OpenAI's stream.

use super::*;

/// Opens the upstream stream (errors before its first byte are ordinary
/// error answers) and relays it.
pub(super) async fn stream_single(
    state: &AppState,
    decision: &RoutingDecision,
    req: ChatRequest,
) -> Result<Response, OpenAiError> {
    let sample = pipeline::shadow_sample(state, decision, &req.body, &req.text);
    let opened = pipeline::open_stream(state, decision, req.body).await?;
    let mut relay = Relay::new(
        state.clone(),
        decision.clone(),
        opened.streaming,
        req.include_usage,
        opened.started,
        opened.admitted,
    );
    relay.sample = sample.map(|s| (s, String::new()));
    Ok(sse_response(relay.into_stream()))
}

pub(super) type Events = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// Relays one upstream stream to the client, event by event.
pub(super) struct Relay {
    pub(super) state: AppState,
    pub(super) decision: RoutingDecision,
    pub(super) events: Events,
    pub(super) call: Option<Attempt>,
    pub(super) upstream: String,
    pub(super) idle: Duration,
    pub(super) include_usage: bool,
    pub(super) waiting_first_token: bool,
    pub(super) model: Option<String>,
    pub(super) usage: Option<Usage>,
    /// The client asked for usage and a chunk carrying it went out.
    pub(super) usage_sent: bool,
    pub(super) started: Instant,
    pub(super) done: bool,
    /// `[DONE]`, held back while a usage chunk of our own goes first.
    pub(super) last: Option<Event>,
    /// Shadow judging's sample, and the answer's text so far.
    pub(super) sample: Option<(crate::shadow::Sample, String)>,
    pub(super) _hold: Admitted,
}

impl Drop for Relay {
    /// A stream dropped before its end was abandoned by its client (one
    /// that broke was ended, and counted as failed).
    fn drop(&mut self) {
        if !self.done {
            self.state.shadow.book().abandoned(self.decision.tier);
        }
    }
}

impl Relay {
    pub(super) fn new(
        state: AppState,
        decision: RoutingDecision,
        s: Streaming,
        include_usage: bool,
        started: Instant,
        hold: Admitted,
    ) -> Relay {
        state.shadow.book().stream_begun(decision.tier);
        Relay {
            state,
            decision,
            events: Box::pin(s.response.bytes_stream().eventsource()),
            call: Some(s.call),
            upstream: s.upstream,
            idle: s.idle,
            include_usage,
            waiting_first_token: true,
            model: s.model,
            usage: None,
            usage_sent: false,
            started,
            done: false,
            last: None,
            sample: None,
            _hold: hold,
        }
    }

    pub(super) fn into_stream(
        self,
    ) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + Send {
        futures_util::stream::unfold(self, |mut relay| async move {
            let bytes = relay.next().await?;
            Some((Ok(bytes), relay))
        })
    }

    /// The next bytes for the client; `None` once the stream has ended.
    pub(super) async fn next(&mut self) -> Option<Event> {
        if self.done {
            return self.last.take();
        }
        loop {
            let event = match tokio::time::timeout(self.idle, self.events.next()).await {
                Err(_) => {
                    let msg = format!(
                        "upstream {} sent nothing for {:?} mid-stream (--upstream-timeout)",
                        self.upstream, self.idle
                    );
                    return Some(self.fail(Outcome::Timeout, msg));
                }
                Ok(None) => {
                    let msg = format!(
                        "upstream {} closed the stream before it ended (no [DONE])",
                        self.upstream
                    );
                    return Some(self.fail(Outcome::BadReply, msg));
                }
                Ok(Some(Err(e))) => {
                    let msg = format!("upstream {} broke the stream: {e}", self.upstream);
                    return Some(self.fail(Outcome::BadReply, msg));
                }
                Ok(Some(Ok(event))) => event,
            };
            let data = event.data.trim();
            if data == "[DONE]" {
                self.finish();
                let done = Event::default().data(DONE);
                if self.include_usage && !self.usage_sent {
                    // Promised by include_usage, whether or not the upstream
                    // sent one: its counts if it said them, else null.
                    self.last = Some(done);
                    return Some(sse_data(&self.usage_chunk()));
                }
                return Some(done);
            }
            let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
                let msg = format!(
                    "upstream {} sent an event that is not a chat completion chunk",
                    self.upstream
                );
                return Some(self.fail(Outcome::BadReply, msg));
            };
            if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
                let said = crate::upstream::error_message(&json!({ "error": error }).to_string());
                let msg = format!("upstream {} failed mid-stream: {said}", self.upstream);
                return Some(self.fail(Outcome::BadReply, msg));
            }
            if let Some(model) = chunk.get("model").and_then(Value::as_str)
                && !model.is_empty()
            {
                self.model = Some(crate::upstream::clean(model));
            }
            let usage = chunk.get("usage").filter(|u| !u.is_null()).map(|u| Usage {
                prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            });
            if usage.is_some() {
                self.usage = usage;
            }
            let choices = chunk["choices"].as_array().map_or(0, Vec::len);
            if choices == 0 && usage.is_some() && !self.include_usage {
                continue;
            }
            if !self.include_usage
                && let Value::Object(o) = &mut chunk
            {
                o.remove("usage");
            }
            if self.include_usage && usage.is_some() {
                self.usage_sent = true;
            }
            if let Some((_, text)) = &mut self.sample
                && let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str()
            {
                text.push_str(piece);
            }
            if self.waiting_first_token && has_token(&chunk) {
                self.waiting_first_token = false;
                if let Some(call) = &self.call {
                    call.first_token();
                }
            }
            let model = self
                .model
                .clone()
                .unwrap_or_else(|| self.decision.tier.internal_name().to_owned());
            normalize(
                &mut chunk,
                "chat.completion.chunk",
                &self.decision.id,
                &model,
            );
            return Some(sse_data(&chunk));
        }
    }

    /// The last chunk `include_usage` promises, when the upstream sent none.
    pub(super) fn usage_chunk(&self) -> Value {
        let usage = self.usage.map(|u| {
            json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                   "total_tokens": u.prompt_tokens + u.completion_tokens})
        });
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| self.decision.tier.internal_name().to_owned());
        let mut chunk = json!({"choices": [], "usage": usage});
        normalize(
            &mut chunk,
            "chat.completion.chunk",
            &self.decision.id,
            &model,
        );
        chunk
    }

    /// The stream ended as it should: the call and its tokens are counted.
    pub(super) fn finish(&mut self) {
        self.done = true;
        if let Some(call) = self.call.take() {
            call.finish(
                Outcome::Ok,
                Ended {
                    model: self.model.clone(),
                    usage: self.usage,
                    error: None,
                },
            );
        }
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        self.state.service.add_call(self.decision.tier, ms, true);
        let usage = self.usage;
        // A stream's charge commits with the writer's next group (within
        // a few ms of its end) without holding up its last event.
        let _ = pipeline::add_usage(&self.state, &mut self.decision, usage);
        if let Some((sample, text)) = self.sample.take() {
            self.state.shadow.submit(&self.decision, sample, text);
        }
    }

    /// The stream broke: counted as `outcome`, and the client gets an
    /// error event (and no `[DONE]`).
    pub(super) fn fail(&mut self, outcome: Outcome, message: String) -> Event {
        self.done = true;
        tracing::warn!(tier = %self.decision.tier, id = %self.decision.id, error = %message, "stream failed");
        if let Some(call) = self.call.take() {
            call.finish(
                outcome,
                Ended {
                    error: Some(message.clone()),
                    ..Ended::default()
                },
            );
        }
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        self.state.service.add_call(self.decision.tier, ms, false);
        let code = match outcome {
            Outcome::Timeout => "upstream_timeout",
            _ => "upstream_stream_broken",
        };
        sse_data(&json!({"error": {
            "message": message, "type": "upstream_error", "param": null, "code": code,
        }}))
    }
}

/// Whether a chunk carries the answer's first content: text or a tool call.
pub(super) fn has_token(chunk: &Value) -> bool {
    chunk["choices"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            let d = &c["delta"];
            d["content"].as_str().is_some_and(|s| !s.is_empty())
                || d["tool_calls"].as_array().is_some_and(|t| !t.is_empty())
        })
    })
}

/// The data that ends an OpenAI stream.
pub(super) const DONE: &str = "[DONE]";

/// One `data:` event of JSON (axum frames it: a newline in the data could
/// never end the event early).
pub(super) fn sse_data(v: &Value) -> Event {
    Event::default().data(serde_json::to_string(v).expect("a JSON value serialises"))
}

pub(super) fn sse_response(
    stream: impl Stream<Item = Result<Event, std::convert::Infallible>> + Send + 'static,
) -> Response {
    let mut response = Sse::new(stream).into_response();
    // Proxies (nginx) would buffer the stream otherwise.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
