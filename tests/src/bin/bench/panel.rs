//! The panel in a real browser: its size, status to paint, decision to
//! pixel, the what-if slider.

use super::*;

/// Raw and gzipped (-9) bytes of the WASM and JS files directly in `dir`.
pub(super) fn bundle_size(dir: &std::path::Path) -> (usize, usize) {
    let (mut raw, mut gz) = (0usize, 0usize);
    for entry in std::fs::read_dir(dir).expect("dist/ exists (scripts/build.sh)") {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy().to_string();
        if name.ends_with(".wasm") || name.ends_with(".js") {
            raw += std::fs::metadata(&path).unwrap().len() as usize;
            let out = Command::new("gzip")
                .args(["-9c"])
                .arg(&path)
                .output()
                .unwrap();
            gz += out.stdout.len();
        }
    }
    (raw, gz)
}

/// The panel in headless Chromium while 10 new decisions arrive every
/// second (all 10 rows change each poll): response-to-paint per poll, first
/// live data after navigation, and the download size.
pub(super) async fn panel(secs: u64) {
    let server = Server::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(server.base.clone(), 10, Arc::clone(&stop));
    let b = Browser::start().await;
    b.goto(&server.base).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let marks = b
        .eval(
            "const r = performance.getEntriesByName('status-response').map(e => e.startTime); \
             const p = performance.getEntriesByName('status-painted').map(e => e.startTime); \
             return {response: r, painted: p};",
            json!([]),
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let response: Vec<f64> = marks["response"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let painted: Vec<f64> = marks["painted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let deltas: Vec<f64> = response.iter().zip(&painted).map(|(r, p)| p - r).collect();
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist");
    let (raw, gz) = bundle_size(&dist);
    let (history_raw, history_gz) = bundle_size(&dist.join("history"));
    println!("\n## panel: {secs} s in headless Chromium, 10 new decisions a second");
    println!(
        "polls with new data: {}; response to painted frame: median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        deltas.len(),
        percentile(&deltas, 50.0),
        percentile(&deltas, 95.0),
        percentile(&deltas, 100.0)
    );
    println!(
        "navigation start to first live data painted: {:.0} ms",
        painted.first().copied().unwrap_or(f64::NAN)
    );
    println!(
        "live page (/), WASM + JS: {:.1} KiB raw, {:.1} KiB gzipped (-9)",
        raw as f64 / 1024.0,
        gz as f64 / 1024.0
    );
    println!(
        "History page (/history, its own bundle), WASM + JS: {:.1} KiB raw, {:.1} KiB gzipped (-9)",
        history_raw as f64 / 1024.0,
        history_gz as f64 / 1024.0
    );
}

/// Decision to pixel: the panel on the stream in headless Chromium while 10
/// decisions a second arrive; for each, the time from the decision's own
/// timestamp (taken by the server as it records it) to the panel's
/// `decision-painted:<seq>` Performance mark (set on the animation frame
/// after the row is in the DOM). Same machine, same clock.
pub(super) async fn pixel(secs: u64) {
    let server = Server::start(&["--buffer-size", "1000"]);
    let latencies = decision_to_pixel(&server, &server, secs).await;
    print_pixel(
        &format!(
            "pixel: decision to painted frame over the stream, {secs} s in headless Chromium, 10 decisions/s"
        ),
        &latencies,
    );
}

/// A `## title` and the decision-to-pixel latencies' summary.
pub(super) fn print_pixel(title: &str, latencies: &[f64]) {
    println!("\n## {title}");
    println!(
        "decisions painted and matched {}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(latencies, 50.0),
        percentile(latencies, 95.0),
        percentile(latencies, 100.0)
    );
}

/// A panel on `shown_on`, a writer posting 10 decisions/s to `written_to`
/// for `secs`: each decision's time from being recorded (its timestamp) to
/// the frame that painted it (the panel's `decision-painted:SEQ` mark), in
/// ms. With two instances, the panel's instance must make no decisions of
/// its own (seqs are per instance).
pub(super) async fn decision_to_pixel(
    shown_on: &Server,
    written_to: &Server,
    secs: u64,
) -> Vec<f64> {
    let c = Client::new(&written_to.base);
    let b = Browser::on_stream(&shown_on.base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(written_to.base.clone(), 10, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let marks = b
        .eval(
            "return performance.getEntriesByType('mark') \
               .filter(m => m.name.startsWith('decision-painted:')) \
               .map(m => [Number(m.name.split(':')[1]), performance.timeOrigin + m.startTime]);",
            json!([]),
        )
        .await;
    let (_, status) = c.get("/api/orchestrator/status?limit=1000").await;
    let decided: std::collections::HashMap<u64, f64> = status["recentDecisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["id"]
                .as_str()
                .is_some_and(|id| id.starts_with(status["instance"]["id"].as_str().unwrap_or("?")))
        })
        .map(|d| {
            let at = chrono::DateTime::parse_from_rfc3339(d["timestamp"].as_str().unwrap())
                .unwrap()
                .timestamp_micros() as f64
                / 1_000.0;
            (d["seq"].as_u64().unwrap(), at)
        })
        .collect();
    b.close().await;
    marks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| Some(m[1].as_f64()? - decided.get(&m[0].as_u64()?)?))
        .collect()
}

/// The what-if slider in headless Chromium with 100 decisions buffered (with
/// signals and token counts, every tier priced): `moves` moves, each timed
/// in the page from the `input` event to the threshold label patched (the
/// shared crate's what-if over the buffer, the histogram line and table
/// rewritten), to a forced layout after it, and to the next animation frame.
pub(super) async fn slider(moves: usize) {
    let server = Server::start(&tests::PRICE_ARGS);
    let c = Client::new(&server.base);
    for n in 0..100u64 {
        let score = ((n * 37) % 151) as f64 / 10.0;
        let tier = if n % 5 == 0 {
            "fast"
        } else if score >= 7.0 {
            "powerful"
        } else {
            "balanced"
        };
        let mode = if n % 5 == 0 { "simple" } else { "two-stage" };
        let (code, _) = c
            .post(
                "/api/orchestrator/decisions",
                &json!({"query": format!("decision {n}"), "tier": tier, "score": score,
                        "decisionTimeMs": 0.5, "mode": mode,
                        "signals": [{"name": "length", "weight": score / 2.0}, {"name": "technical vocabulary", "weight": score / 2.0}],
                        "usage": {"promptTokens": 1000 + n * 10, "completionTokens": 500 + n * 5}}),
            )
            .await;
        assert_eq!(code, 201);
    }
    let b = Browser::start().await;
    b.goto(&server.base).await;
    b.wait_for(Duration::from_secs(10), || async {
        b.eval(
            "return [...document.querySelectorAll('.hist-bar')].reduce((n, e) => n + Number(e.dataset.count), 0);",
            json!([]),
        )
        .await
            == 100
    })
    .await
    .expect("the histogram holds the 100 decisions");
    // Up and down the scale, every position differing from the last.
    let positions: Vec<f64> = (0..moves)
        .map(|i| {
            let step = i % 60;
            let k = if step <= 30 { step } else { 60 - step };
            k as f64 * 0.5
        })
        .collect();
    let timings = b
        .eval(
            "const s = document.querySelector('[data-testid=whatif-slider]'); \
             const label = document.querySelector('[data-testid=whatif-threshold]'); \
             const once = v => new Promise(resolve => { \
               const t0 = performance.now(); \
               const seen = new MutationObserver(() => { \
                 if (label.textContent !== v.toFixed(1)) return; \
                 seen.disconnect(); \
                 const dom = performance.now(); \
                 document.body.offsetHeight; \
                 const layout = performance.now(); \
                 requestAnimationFrame(() => resolve([dom - t0, layout - t0, performance.now() - t0])); \
               }); \
               seen.observe(label, {childList: true, characterData: true, subtree: true}); \
               s.value = String(v); \
               s.dispatchEvent(new Event('input', {bubbles: true})); \
             }); \
             return (async () => { const out = []; let last = Number(s.value); \
               for (const v of arguments[0]) { if (v === last) continue; last = v; \
                 out.push(await once(v)); await new Promise(r => setTimeout(r, 30)); } \
               return out; })();",
            json!([positions]),
        )
        .await;
    let rows = timings.as_array().expect("timings");
    let column = |i: usize| -> Vec<f64> { rows.iter().filter_map(|r| r[i].as_f64()).collect() };
    let (dom, layout, frame) = (column(0), column(1), column(2));
    println!("\n## slider: what-if moves in headless Chromium, 100 decisions buffered");
    for (what, v) in [
        ("input to DOM patched", &dom),
        ("input to layout done", &layout),
        ("input to next animation frame", &frame),
    ] {
        println!(
            "{what}: {} moves, median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            v.len(),
            percentile(v, 50.0),
            percentile(v, 95.0),
            percentile(v, 100.0)
        );
    }
    let within = frame.iter().filter(|ms| **ms <= 1000.0 / 60.0).count();
    println!(
        "moves painted in the frame after the input (<= 16.7 ms): {within} of {} ({:.1}%)",
        frame.len(),
        within as f64 / frame.len().max(1) as f64 * 100.0
    );
    b.close().await;
}
