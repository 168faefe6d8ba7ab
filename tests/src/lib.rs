//! Black-box test harness: starts the real server binary on a free port,
//! talks HTTP to it, and stands up an OpenAI-compatible test double for the
//! upstreams (a system we do not run here: a real LLM server).

pub mod bench;
pub mod browser;
mod fake_upstream;
pub mod front_door;
pub mod litellm;
pub mod llama;
pub mod openai_process;
mod redis;

pub use fake_upstream::*;
pub use redis::*;

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

/// A server that judges every answer of `fast` (its fast tier) with
/// `powerful` (its powerful tier, and the judge): `--shadow-rate 1`, and
/// `extra` flags.
pub fn shadow_judging(fast: &str, powerful: &str, extra: &[&str]) -> Server {
    let fast = format!("fast={fast}");
    let powerful = format!("powerful={powerful}");
    let mut args = vec![
        "--upstream",
        &fast,
        "--upstream",
        &powerful,
        "--shadow-rate",
        "1",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
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

/// Runs the Python script `script` (a path from the workspace root) with
/// the virtual environment's interpreter (the README's test command makes
/// it) and `env`: whether it succeeded, and its stderr then stdout (so the
/// output ends with what the script printed last).
pub async fn run_python(script: &str, env: &[(&str, String)]) -> (bool, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/install.sh --test makes it",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.arg(root.join(script));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("python runs"))
        .await
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
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
