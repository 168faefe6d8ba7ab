//! Black-box test harness: starts the real server binary on a free port,
//! talks HTTP to it, and stands up an OpenAI-compatible test double for the
//! upstreams (a system we do not run here: a real LLM server).

pub mod bench;
pub mod browser;
pub mod front_door;
pub mod litellm;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Path of the server binary under test: `ORCH_SERVER_BIN`, else the
/// workspace's release build (what users run and what CI builds first).
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ORCH_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("server");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p server` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A running server process, killed when dropped.
pub struct Server {
    child: Child,
    /// The data dir the helper made for it (removed on drop), when the
    /// flags named none.
    _data: Option<tempfile::TempDir>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base: String,
}

impl Server {
    /// Starts the server on a free port with extra flags.
    pub fn start(args: &[&str]) -> Server {
        Self::start_on("127.0.0.1:0", args)
    }

    /// Starts the server on `listen` (e.g. a port a previous one used).
    pub fn start_on(listen: &str, args: &[&str]) -> Server {
        Self::start_full(listen, args, &[], None)
    }

    /// The server with its own fresh data dir unless the flags name one
    /// (or `--in-memory`): tests run side by side, each with its store.
    fn start_full(
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Server {
        let named = args
            .iter()
            .any(|a| a.starts_with("--data-dir") || *a == "--in-memory");
        let data = (!named).then(|| tempfile::tempdir().expect("a temp dir"));
        let dir = data.as_ref().map(|d| d.path().display().to_string());
        let mut full = vec!["--listen", listen];
        if let Some(dir) = &dir {
            full.extend(["--data-dir", dir.as_str()]);
        }
        full.extend_from_slice(args);
        let mut server = Self::spawn_with(&server_bin(), &full, env, log);
        server._data = data;
        server
    }

    /// Starts any binary that prints `listening on http://ADDR` first.
    pub fn spawn(bin: &std::path::Path, args: &[&str]) -> Server {
        Self::spawn_with(bin, args, &[], None)
    }

    /// Starts the server on a free port with extra environment variables and,
    /// if `log` is given, its stderr (at `RUST_LOG=debug`) written there.
    pub fn start_with(
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Server {
        Self::start_full("127.0.0.1:0", args, env, log)
    }

    fn spawn_with(
        bin: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Server {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", if log.is_some() { "debug" } else { "warn" })
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("server exited before listening: {:?}", child.wait()));
        let url = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let addr: SocketAddr = url.parse().expect("an address");
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            _data: None,
            addr,
            base: format!("http://{addr}"),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for a clean exit.
    pub fn terminate(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    /// By the query: `please fail` answers as `Fail`, `please die` as
    /// `DieAfter(2)`, anything else as `Ok`.
    Scripted,
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
        Behavior::Scripted => unreachable!("resolved by the query above"),
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

/// A JSON HTTP client for the server under test.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for the server at `base`.
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    /// GET `path`: status and JSON body (Null if empty or not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        split(res).await
    }

    /// GET `path`: the body as text, whatever the status.
    pub async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// POST `body` (raw bytes) to `path`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        split(res).await
    }

    /// POST a JSON text to `path`: the whole response, headers included.
    pub async fn post_response(&self, path: &str, json: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(json.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// POST a JSON value to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// The status document (asserting 200).
    pub async fn status(&self) -> Value {
        let (code, body) = self.get("/api/orchestrator/status?limit=100").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// POST `body` with the given headers only (no content type unless
    /// among them): status and JSON body.
    pub async fn post_with(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        split(req.send().await.unwrap()).await
    }

    /// The raw reqwest client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

async fn split(res: reqwest::Response) -> (u16, Value) {
    let code = res.status().as_u16();
    let bytes = res.bytes().await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Polls `check` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each tier's field `key` in a status, Q2/Q3/Q4 order.
pub fn per_tier(status: &Value, key: &str) -> Vec<f64> {
    status["tierUtilization"]
        .as_array()
        .expect("tierUtilization is an array")
        .iter()
        .map(|t| t[key].as_f64().expect("a number"))
        .collect()
}

/// The value of the sample `name{labels}` in a Prometheus text exposition
/// (labels given as `key="value"` pairs, in any order; all of the sample's
/// labels must be given); `None` when absent.
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (sample, rest) = match series.split_once('{') {
            Some((n, r)) => (n, r.strip_suffix('}')?),
            None => (series, ""),
        };
        if sample != name {
            return None;
        }
        let mut got: Vec<(String, String)> = Vec::new();
        for pair in rest.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"")?;
            got.push((k.to_owned(), v.trim_end_matches('"').to_owned()));
        }
        let wanted = labels.len() == got.len()
            && labels
                .iter()
                .all(|(k, v)| got.iter().any(|(gk, gv)| gk == k && gv == v));
        wanted.then(|| value.parse().ok()).flatten()
    })
}

/// The port of a listener that was just closed: connecting to it is refused.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A query the two-stage router scores COMPLEX and sends to Q4 (19 words:
/// the test doubles count one token per word).
pub const COMPLEX_QUERY: &str = "Design a distributed rate limiter, prove it is fair under concurrent load, then implement it in Rust with tests";

/// `--price` for every tier (USD per million tokens in/out: Q2 0.1/0.4,
/// Q3 1/2, Q4 5/15), for tests and benchmarks that need a cost.
pub const PRICE_ARGS: [&str; 6] = [
    "--price",
    "fast=0.1/0.4",
    "--price",
    "balanced=1/2",
    "--price",
    "powerful=5/15",
];

/// A real Redis (Debian's `redis-server`) of the test's own: a free port on
/// loopback, a temp dir, no persistence (a restart comes back empty, as a
/// Redis without RDB/AOF does). Stopped when dropped.
pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts one and waits until it answers.
    pub fn start() -> Redis {
        let mut redis = Redis {
            child: None,
            dir: tempfile::tempdir().expect("a temp dir"),
            port: closed_port(),
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: nothing is saved, nothing said goodbye).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty; waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts (scripts/install.sh --test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a command through `redis-cli`; its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Commands Redis processed since start (or `CONFIG RESETSTAT`), from
    /// `INFO commandstats`, leaving out the `INFO`/`CONFIG` calls that
    /// read it.
    pub fn commands(&self) -> u64 {
        self.cli(&["INFO", "commandstats"])
            .lines()
            .filter(|l| !l.starts_with("cmdstat_info:") && !l.starts_with("cmdstat_config"))
            .filter_map(|l| l.split("calls=").nth(1))
            .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP server that accepts connections and never answers (a Redis that
/// hangs); the connections stay open until the process ends.
pub fn silent_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("an address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    port
}
