//! Headless Chromium driven through chromedriver with fantoccini, the
//! maintained W3C WebDriver client.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// The chromedriver binary: `CHROMEDRIVER`, else `/usr/bin/chromedriver`.
pub fn chromedriver_bin() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// A chromedriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    client: Client,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium (its own profile,
    /// no background networking: this machine's network is closed).
    pub async fn start() -> Browser {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let profile =
            std::env::temp_dir().join(format!("orch-chromium-{}-{}", std::process::id(), port));
        // Chromium's shared memory (it lives in files with
        // --disable-dev-shm-usage, some 70 MiB a session) goes under the
        // profile, removed with it, rather than into /tmp for good.
        let tmp = profile.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let driver = Command::new(chromedriver_bin())
            .arg(format!("--port={port}"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (scripts/install.sh --test installs it)");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!("an object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            // chromedriver needs a moment before it listens.
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(err) => {
                    assert!(
                        Instant::now() < deadline,
                        "no WebDriver session within 20 s: {err}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            driver,
            client,
            profile,
        }
    }

    /// A browser on the panel at `base`, once it is live on the event
    /// stream (within 10 s).
    pub async fn on_stream(base: &str) -> Browser {
        let b = Browser::start().await;
        b.goto(base).await;
        b.wait_for(Duration::from_secs(10), || async {
            b.text_of("transport").await.as_deref() == Some("stream")
        })
        .await
        .expect("the panel goes live on the stream");
        b
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigation");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page
    /// and returns its JSON result.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        let args = match args {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            one => vec![one],
        };
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// The text of the first element matching `data-testid=id`, if any.
    pub async fn text_of(&self, testid: &str) -> Option<String> {
        let v = self
            .eval(
                "const e = document.querySelector(`[data-testid=\"${arguments[0]}\"]`); \
                 return e ? e.textContent : null;",
                json!([testid]),
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    /// How many elements carry `data-testid=id`.
    pub async fn count(&self, testid: &str) -> usize {
        self.eval(
            "return document.querySelectorAll(`[data-testid=\"${arguments[0]}\"]`).length;",
            json!([testid]),
        )
        .await
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// Polls `check` on the page's state every 50 ms until it holds or
    /// `within` passes; returns how long it took, or `None`.
    pub async fn wait_for<F, Fut>(&self, within: Duration, mut check: F) -> Option<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if check().await {
                return Some(start.elapsed());
            }
            if start.elapsed() >= within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        // Drop stops the driver and removes the profile.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Drop cannot await the session's end: stop the driver, then any
        // Chromium still running on this profile (a test that panicked).
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(format!("user-data-dir={}", self.profile.display()))
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
