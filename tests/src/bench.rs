//! Pieces of the benchmark program (`src/bin/bench/`) that can be checked
//! by tests: the wrk report parser, the wire-byte counter, RSS reading.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What one wrk run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Non-2xx/3xx responses and socket errors wrk counted.
    pub errors: u64,
}

/// Parses the output of `wrk --latency`.
pub fn parse_wrk(out: &str) -> Option<WrkReport> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let percentile = |p: &str| {
        out.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(p)).then(|| it.next().and_then(parse_duration_ms))?
        })
    };
    let mut errors = 0;
    for l in out.lines() {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Some(WrkReport {
        rps,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        errors,
    })
}

/// wrk's durations ("512.00us", "2.10ms", "1.02s") in ms.
pub fn parse_duration_ms(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// One HTTP/1.1 exchange over a fresh connection, counting the bytes each
/// way: (status code, request bytes, response bytes).
pub fn exchange_bytes(addr: SocketAddr, request: &str) -> std::io::Result<(u16, usize, usize)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, request.len(), response.len()))
}

/// A GET as a browser's fetch sends it (a representative header set),
/// with `Connection: close` so the response ends with the connection.
pub fn poll_request(host: &str, etag: Option<&str>) -> String {
    let mut r = format!(
        "GET /api/orchestrator/status HTTP/1.1\r\nHost: {host}\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\n\
         Accept: application/json\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\nReferer: http://{host}/\r\n"
    );
    if let Some(tag) = etag {
        r.push_str(&format!("If-None-Match: {tag}\r\n"));
    }
    r.push_str("Connection: close\r\n\r\n");
    r
}

/// Resident memory of a process in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time a process has used so far, in seconds (user + system, Linux
/// `/proc`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The `p`-th percentile (0..=100) of `values`, nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8000/api/orchestrator/status
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   700.12us  300.00us  12.00ms   90.00%
    Req/Sec    45.00k     2.00k   50.00k    70.00%
  Latency Distribution
     50%  612.00us
     75%  800.00us
     90%    1.10ms
     99%    2.50ms
  900000 requests in 10.00s, 2.00GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  90000.50
Transfer/sec:    200.00MB
";

    #[test]
    fn parses_a_wrk_report() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.rps, 90000.50);
        assert!((r.p50_ms - 0.612).abs() < 1e-9);
        assert!((r.p99_ms - 2.5).abs() < 1e-9);
        assert_eq!(r.errors, 7);
        assert_eq!(parse_wrk("garbage"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("1.50s"), Some(1500.0));
        assert_eq!(parse_duration_ms("2ms"), Some(2.0));
        assert_eq!(parse_duration_ms("250.00us"), Some(0.25));
        assert_eq!(parse_duration_ms("12"), None);
    }

    #[test]
    fn percentiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 100.0), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn reads_own_cpu_time() {
        let before = cpu_seconds(std::process::id()).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let spent = cpu_seconds(std::process::id()).unwrap() - before;
        assert!((0.1..=1.0).contains(&spent), "{spent}");
    }

    #[test]
    fn reads_own_rss() {
        let me = std::process::id();
        let before = rss_kib(me).unwrap();
        // 64 MiB, every page touched: the resident size must grow by it.
        let block = vec![1u8; 64 << 20];
        let during = rss_kib(me).unwrap();
        assert!(
            during >= before + 60 * 1024,
            "RSS {before} KiB, then {during} KiB with 64 MiB touched"
        );
        // The kernel's other count of the same (resident pages) agrees.
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        let statm_kib = pages * 4;
        let now = rss_kib(me).unwrap();
        assert!(
            now.abs_diff(statm_kib) < 2 * 1024,
            "{now} vs {statm_kib} KiB"
        );
        assert_eq!(block.iter().map(|b| *b as u64).sum::<u64>(), 64 << 20);
        assert!(rss_kib(u32::MAX).is_none(), "no such process");
    }

    #[test]
    fn counts_wire_bytes_of_an_exchange() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        let req = poll_request("x", Some("W/\"1\""));
        let (code, sent, got) = exchange_bytes(addr, &req).unwrap();
        t.join().unwrap();
        assert_eq!(code, 304);
        assert_eq!(sent, req.len());
        assert_eq!(got, 48);
        assert!(req.contains("If-None-Match: W/\"1\"\r\n"));
    }
}
