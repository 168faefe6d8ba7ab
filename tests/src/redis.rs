//! A real Redis of a test's own, and a port that never answers.

use super::*;

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
