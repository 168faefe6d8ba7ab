//! The test double of an OpenAI-compatible upstream, and the stand-ins
//! the benchmarks serve.

use super::*;

/// What a fake upstream does with each chat completion request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answers `"echo: <query>"` at once.
    Ok,
    /// Answers after the given delay.
    Slow(Duration),
    /// Answers HTTP 500.
    Fail,
    /// Answers 200 with a body that is not a chat completion.
    Garbage,
    /// Answers a valid chat completion whose content is this many bytes.
    Huge(usize),
    /// Answers this HTTP status with an OpenAI-style error body (and
    /// `Retry-After` when given).
    Status(u16, Option<&'static str>),
    /// Answers `content: null` with tool calls.
    ToolCalls,
    /// Answers `content: null`, no tool calls, `finish_reason: length`.
    Empty,
    /// Answers exactly this text (streamed too, word by word).
    Says(String),
    /// Streams its answer one word per chunk, this long apart (a whole
    /// answer comes after all of them).
    Paced(Duration),
    /// Streams this many chunks, then sends nothing more and keeps the
    /// connection open (a whole answer never comes).
    StallAfter(usize),
    /// Streams this many chunks, then drops the connection mid-stream
    /// (a whole answer: the connection drops before any byte).
    DieAfter(usize),
    /// Answers `content: null` with a `refusal`.
    Refusal,
    /// Answers `content: ""` with `finish_reason: length`.
    EmptyLength,
    /// Answers a legacy `function_call` with `content: null`.
    FunctionCall,
    /// Answers two choices (as for `n: 2`).
    TwoChoices,
    /// Streams as `Ok` but never sends a usage chunk, asked or not.
    NoStreamUsage,
    /// Answers this HTTP status with an OpenAI-style error of this message.
    ErrorText(u16, String),
    /// Answers 200 with exactly these bytes (a whole answer; a stream
    /// streams as `Ok`).
    Raw(String),
    /// By the query: `please fail` answers as `Fail`, `please die` as
    /// `DieAfter(2)`, anything else as `Ok`.
    Scripted,
    /// Q4 and the judge of shadow judging, with verdicts known in advance.
    /// A query is answered `strong: <query>` (`q4-fail` in it: HTTP 500).
    /// A judge's request (the router's judge prompt) is answered by the
    /// word in the user's question: `verdict-better` picks the answer not
    /// Q4's, `verdict-worse` Q4's, `verdict-tie` `[[C]]`,
    /// `verdict-disagree` always `[[A]]` (position bias),
    /// `verdict-garbage` no verdict, `verdict-refuse` a refusal,
    /// `judge-hang` never answers, `judge-fail` HTTP 500; else `[[C]]`.
    Judge,
}

/// An OpenAI-compatible `/v1/chat/completions` test double.
pub struct FakeUpstream {
    /// The base URL to pass as `--upstream TIER=URL` (ends in `/v1`).
    pub base_url: String,
    state: FakeState,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct FakeState {
    behavior: Arc<std::sync::Mutex<Behavior>>,
    model: Option<String>,
    hits: Arc<AtomicU64>,
    finished: Arc<AtomicU64>,
    /// Streams whose writer found its reader gone before the end.
    cut: Arc<AtomicU64>,
    last_body: Arc<std::sync::Mutex<Value>>,
    last_auth: Arc<std::sync::Mutex<Option<String>>>,
}

impl FakeUpstream {
    /// Starts one on a free port in the current tokio runtime; its answers
    /// name no model.
    pub async fn start(behavior: Behavior) -> FakeUpstream {
        Self::start_with(behavior, None).await
    }

    /// Starts one whose answers name `model` (as real servers do) and report
    /// token usage.
    pub async fn start_model(behavior: Behavior, model: &str) -> FakeUpstream {
        Self::start_with(behavior, Some(model.to_owned())).await
    }

    async fn start_with(behavior: Behavior, model: Option<String>) -> FakeUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = FakeState {
            behavior: Arc::new(std::sync::Mutex::new(behavior)),
            model,
            hits: Arc::default(),
            finished: Arc::default(),
            cut: Arc::default(),
            last_body: Arc::new(std::sync::Mutex::new(Value::Null)),
            last_auth: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completion))
            .route("/v1/models", axum::routing::get(models))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeUpstream {
            base_url: format!("http://{addr}/v1"),
            state,
            task,
        }
    }

    /// Changes what it does from the next request on.
    pub fn set(&self, behavior: Behavior) {
        *self.state.behavior.lock().unwrap() = behavior;
    }

    /// The `Authorization` header of the last request, if any.
    pub fn last_auth(&self) -> Option<String> {
        self.state.last_auth.lock().unwrap().clone()
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests whose handler ran to its end (a cancelled one does not).
    pub fn finished(&self) -> u64 {
        self.state.finished.load(Ordering::SeqCst)
    }

    /// Streamed answers it stopped writing because the reader (the
    /// router) closed the connection before the end.
    pub fn streams_cut(&self) -> u64 {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// The last request body received.
    pub fn last_body(&self) -> Value {
        self.state.last_body.lock().unwrap().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn completion(
    State(s): State<FakeState>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    *s.last_body.lock().unwrap() = body.clone();
    *s.last_auth.lock().unwrap() = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    // What real servers answer: the conversation's last user message.
    let query = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let behavior = match s.behavior.lock().unwrap().clone() {
        Behavior::Scripted if query.contains("please fail") => Behavior::Fail,
        Behavior::Scripted if query.contains("please die") => Behavior::DieAfter(2),
        Behavior::Scripted => Behavior::Ok,
        Behavior::Judge => judging(&body, &query),
        other => other,
    };
    let model = s.model.as_deref();
    if body["stream"] == json!(true) {
        let include_usage = body["stream_options"]["include_usage"] == json!(true)
            && !matches!(behavior, Behavior::NoStreamUsage);
        let response =
            stream_answer(&query, model, include_usage, behavior, Arc::clone(&s.cut)).await;
        s.finished.fetch_add(1, Ordering::SeqCst);
        return response;
    }
    let response = match behavior {
        Behavior::Ok => answer(&query, model),
        Behavior::Slow(d) => {
            tokio::time::sleep(d).await;
            answer(&query, model)
        }
        Behavior::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "model crashed").into_response(),
        Behavior::Garbage => (StatusCode::OK, "<html>definitely not JSON</html>").into_response(),
        Behavior::Raw(bytes) => {
            (StatusCode::OK, [("content-type", "application/json")], bytes).into_response()
        }
        Behavior::Huge(n) => answer(&"x".repeat(n), model),
        Behavior::Status(code, retry_after) => {
            let status = StatusCode::from_u16(code).unwrap();
            let mut r = (
                status,
                Json(json!({"error": {"message": format!("fake upstream says {code}"), "type": "test_error", "code": code}})),
            )
                .into_response();
            if let Some(after) = retry_after {
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static(after));
            }
            r
        }
        Behavior::ToolCalls => Json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}
            ]}, "finish_reason": "tool_calls"}]
        }))
        .into_response(),
        Behavior::Empty => Json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null}, "finish_reason": "length"}]
        }))
        .into_response(),
        Behavior::Says(text) => says(&text, &query, model),
        Behavior::Refusal => message(
            model,
            json!([{"index": 0, "message": {"role": "assistant", "content": null,
                     "refusal": "I can't help with that."}, "finish_reason": "stop"}]),
        ),
        Behavior::EmptyLength => message(
            model,
            json!([{"index": 0, "message": {"role": "assistant", "content": ""},
                     "finish_reason": "length"}]),
        ),
        Behavior::FunctionCall => message(
            model,
            json!([{"index": 0, "message": {"role": "assistant", "content": null,
                     "function_call": {"name": "lookup", "arguments": "{}"}},
                     "finish_reason": "function_call"}]),
        ),
        Behavior::TwoChoices => message(
            model,
            json!([
                {"index": 0, "message": {"role": "assistant", "content": "first"}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "stop"},
            ]),
        ),
        Behavior::NoStreamUsage => answer(&query, model),
        Behavior::ErrorText(code, text) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": text, "type": "test_error", "code": code}})),
        )
            .into_response(),
        Behavior::Paced(d) => {
            tokio::time::sleep(d * answer_words(&query).len() as u32).await;
            answer(&query, model)
        }
        Behavior::StallAfter(_) => std::future::pending().await,
        Behavior::Scripted | Behavior::Judge => unreachable!("resolved by the query above"),
        Behavior::DieAfter(_) => {
            let stream = futures_util::stream::once(async {
                Err::<bytes::Bytes, _>(std::io::Error::other("the model died"))
            });
            axum::body::Body::from_stream(stream).into_response()
        }
    };
    s.finished.fetch_add(1, Ordering::SeqCst);
    response
}

/// What [`Behavior::Judge`] does with this request.
fn judging(body: &Value, query: &str) -> Behavior {
    let judge = body["messages"][0]["role"] == "system"
        && body["messages"][0]["content"]
            .as_str()
            .is_some_and(|s| s.contains("impartial judge"));
    if !judge {
        return if query.contains("q4-fail") {
            Behavior::Fail
        } else {
            Behavior::Says(format!("strong: {query}"))
        };
    }
    let between = |from: &str, to: &str| {
        let start = query.find(from).map_or(0, |i| i + from.len());
        let end = query[start..].find(to).map_or(query.len(), |i| start + i);
        query[start..end].to_owned()
    };
    let question = between("[User question]\n", "\n\n[Answer A]");
    let a_is_q4 = between("[Answer A]\n", "\n[End of answer A]").starts_with("strong:");
    let says = |s: &str| Behavior::Says(s.to_owned());
    let pick = |q4: bool| says(if q4 == a_is_q4 { "[[A]]" } else { "[[B]]" });
    if question.contains("verdict-better") {
        pick(false)
    } else if question.contains("verdict-worse") {
        pick(true)
    } else if question.contains("verdict-disagree") {
        says("[[A]]")
    } else if question.contains("verdict-garbage") {
        says("Both answers have merit.")
    } else if question.contains("verdict-refuse") {
        Behavior::Refusal
    } else if question.contains("judge-hang") {
        Behavior::StallAfter(0)
    } else if question.contains("judge-fail") {
        Behavior::Fail
    } else {
        says("[[C]]")
    }
}

async fn models(State(s): State<FakeState>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": s.model.as_deref().unwrap_or("fake"), "object": "model"}]}),
    )
}

/// The words of the answer to `query`: `echo:` and the query's words.
pub fn answer_words(query: &str) -> Vec<String> {
    std::iter::once("echo:".to_owned())
        .chain(query.split_whitespace().map(str::to_owned))
        .collect()
}

/// A whole answer with these `choices`.
fn message(model: Option<&str>, choices: Value) -> Response {
    Json(
        json!({"id": "chatcmpl-test", "object": "chat.completion", "created": 1,
                "model": model.unwrap_or("fake"), "choices": choices}),
    )
    .into_response()
}

/// A whole answer of exactly `text`, usage counted as for `query`.
fn says(text: &str, query: &str, model: Option<&str>) -> Response {
    let mut body = json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
    });
    if let Some(model) = model {
        body["model"] = json!(model);
        let words = query.split_whitespace().count() as u64;
        body["usage"] =
            json!({"prompt_tokens": words, "completion_tokens": 1, "total_tokens": words + 1});
    }
    Json(body).into_response()
}

/// A streamed answer as OpenAI sends one: a role chunk, one chunk per
/// word (each with `"sent"`, the Unix time in µs it was written), a finish
/// chunk, the usage chunk when asked for, `[DONE]`; paced, stalled or cut
/// off as `behavior` says.
async fn stream_answer(
    query: &str,
    model: Option<&str>,
    include_usage: bool,
    behavior: Behavior,
    cut_short: Arc<AtomicU64>,
) -> Response {
    let words = match &behavior {
        Behavior::Says(text) => text.split_inclusive(' ').map(str::to_owned).collect(),
        _ => answer_words(query)
            .into_iter()
            .enumerate()
            .map(|(i, w)| if i == 0 { w } else { format!(" {w}") })
            .collect::<Vec<_>>(),
    };
    let (pace, cut) = match behavior {
        Behavior::Paced(d) => (d, None),
        Behavior::Slow(d) => (d / words.len().max(1) as u32, None),
        Behavior::StallAfter(n) => (Duration::ZERO, Some((n, true))),
        Behavior::DieAfter(n) => (Duration::ZERO, Some((n, false))),
        Behavior::Status(..) | Behavior::Fail | Behavior::Garbage | Behavior::ErrorText(..) => {
            // Refused before any byte, as a real server refuses.
            return answer_failure(behavior).await;
        }
        _ => (Duration::ZERO, None),
    };
    let model = model.map(str::to_owned);
    let prompt_tokens = query.split_whitespace().count() as u64;
    let completion_tokens = words.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Value| {
            let mut c = json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            if let Some(m) = &model {
                c["model"] = json!(m);
            }
            c
        };
        let send = |v: Value| bytes::Bytes::from(format!("data: {v}\n\n"));
        if tx
            .send(Ok(send(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ))))
            .await
            .is_err()
        {
            return;
        }
        for (i, w) in words.iter().enumerate() {
            if let Some((n, stall)) = cut
                && i == n
            {
                if stall {
                    // Hold the connection open, silent, until the reader goes.
                    tx.closed().await;
                } else {
                    // What was written reaches the wire before the drop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx.send(Err(std::io::Error::other("the model died"))).await;
                }
                return;
            }
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            let mut c = chunk(json!({"content": w}), Value::Null);
            c["sent"] = json!(unix_micros());
            if tx.send(Ok(send(c))).await.is_err() {
                cut_short.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        let _ = tx.send(Ok(send(chunk(json!({}), json!("stop"))))).await;
        if include_usage {
            let mut u = chunk(json!({}), Value::Null);
            u["choices"] = json!([]);
            u["usage"] = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                "total_tokens": prompt_tokens + completion_tokens});
            let _ = tx.send(Ok(send(u))).await;
        }
        let _ = tx
            .send(Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")))
            .await;
    });
    let body = axum::body::Body::from_stream(tokio_stream_of(rx));
    ([("content-type", "text/event-stream")], body).into_response()
}

/// The whole-answer failure of a failing behaviour, for a stream request.
async fn answer_failure(behavior: Behavior) -> Response {
    match behavior {
        Behavior::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "model crashed").into_response(),
        Behavior::Garbage => (StatusCode::OK, "<html>definitely not JSON</html>").into_response(),
        Behavior::Status(code, _) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": format!("fake upstream says {code}"), "type": "test_error", "code": code}})),
        )
            .into_response(),
        Behavior::ErrorText(code, text) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": text, "type": "test_error", "code": code}})),
        )
            .into_response(),
        _ => unreachable!("only failing behaviours"),
    }
}

/// The items of a channel as a stream (a streamed response's body).
pub fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Serves `app` on a free loopback port, first printing `listening on
/// http://ADDR` as the real server does (so [`Server::spawn`] can start
/// it), with TCP_NODELAY on every connection as the router and LLM servers
/// set it: the benchmarks' stand-ins (`bare`, `bare_proxy`,
/// `mock_upstream`).
pub async fn serve_printing_address(app: Router) {
    use axum::serve::ListenerExt as _;
    use std::io::Write as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    let _ = std::io::stdout().flush();
    // Without it, Nagle's algorithm holds a small write that follows
    // another (a stream's first chunk after the response head) until the
    // client's delayed ACK, tens of ms later.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.unwrap();
}

/// Microseconds since the Unix epoch, now.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn answer(query: &str, model: Option<&str>) -> Response {
    let mut body = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {query}")}, "finish_reason": "stop"}]
    });
    if let Some(model) = model {
        // As real servers do: name the model and count tokens (one per word).
        body["model"] = json!(model);
        let words = query.split_whitespace().count() as u64;
        body["usage"] = json!({"prompt_tokens": words, "completion_tokens": words + 1, "total_tokens": 2 * words + 1});
    }
    Json(body).into_response()
}
