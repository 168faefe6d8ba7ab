//! Event streams: 10,000 idle ones, and one idle panel's bytes.

use super::*;

/// One idle stream client: opens the stream, reads its opening frames,
/// then reads and counts until the server ends it.
pub(super) async fn stream_client(
    addr: std::net::SocketAddr,
    received: Arc<std::sync::atomic::AtomicU64>,
    opened: tokio::sync::mpsc::Sender<()>,
) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let req = format!(
        "GET /api/orchestrator/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    let mut announced = false;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                received.fetch_add(n as u64, Ordering::Relaxed);
                if !announced {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(13).any(|w| w == b"event: status") {
                        announced = true;
                        seen = Vec::new();
                        let _ = opened.send(()).await;
                    }
                }
            }
        }
    }
}

/// N idle stream clients (our own load program, this process; the server
/// is another): the server's memory with them open, its CPU while the
/// status changes once a second (each change pushed to every client), and
/// the status endpoint's throughput with them connected against the bare
/// handler's (wrk, a third process).
pub(super) async fn streams(n: usize) {
    let wanted = n as u64 + 1_024;
    let got = rlimit::increase_nofile_limit(wanted).unwrap_or(0);
    assert!(got >= wanted, "open-files limit {got} < {wanted}");
    let max = n.to_string();
    let conns = (n + 512).to_string();
    let server = Server::start(&["--max-streams", &max, "--max-connections", &conns]);
    let c = Client::new(&server.base);
    fill(&c, 100).await;
    let rss_before = rss_kib(server.pid()).unwrap();

    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        if i % 1000 == 0 {
            eprintln!(
                "opening stream {i} of {n} ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
        // At most 256 connecting at once: the listen backlog stays short.
        let permit = Arc::clone(&limit).acquire_owned().await.unwrap();
        let (received, tx) = (Arc::clone(&received), tx.clone());
        let (ptx, mut prx) = tokio::sync::mpsc::channel::<()>(1);
        clients.push(tokio::spawn(stream_client(server.addr, received, ptx)));
        tokio::spawn(async move {
            if prx.recv().await.is_some() {
                let _ = tx.send(());
            }
            drop(permit);
            // Keep the receiver alive: the client may announce once only.
            std::future::pending::<()>().await;
        });
    }
    drop(tx);
    for i in 0..n {
        if tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            panic!("only {i} of {n} streams opened");
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let (_, health) = c.get("/api/health").await;
    assert_eq!(
        health["streams"]["open"].as_u64(),
        Some(n as u64),
        "{health}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_open = rss_kib(server.pid()).unwrap();

    // Idle: no change at all for 10 s.
    let cpu0 = cpu_seconds(server.pid()).unwrap();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = (cpu_seconds(server.pid()).unwrap() - cpu0) / t0.elapsed().as_secs_f64();

    // One status change a second (a decision each), 30 s.
    let bytes0 = received.load(Ordering::Relaxed);
    let cpu0 = cpu_seconds(server.pid()).unwrap();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(server.base.clone(), 1, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let changes = w.await.unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let busy_cpu = (cpu_seconds(server.pid()).unwrap() - cpu0) / wall;
    let pushed = received.load(Ordering::Relaxed) - bytes0;
    let rss_busy = rss_kib(server.pid()).unwrap();

    // Throughput of the status endpoint with every stream connected, against
    // the bare handler of the same bytes, three alternating rounds.
    let (bare, body_file, _) = bare_twin(&c, &server).await;
    let mut ratios = Vec::new();
    let (mut a_rps, mut b_rps) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let b = wrk(&bare.url(STATUS), 5);
        let a = wrk(&server.url(STATUS), 5);
        ratios.push(a.rps / b.rps);
        a_rps.push(a.rps);
        b_rps.push(b.rps);
    }
    std::fs::remove_file(&body_file).ok();
    let (_, health) = c.get("/api/health").await;
    let still_open = health["streams"]["open"].as_u64().unwrap_or(0);

    println!("\n## streams: {n} idle stream clients (this process), server another, wrk a third");
    println!("opened in {connect_secs:.1} s; still open after everything: {still_open}");
    println!(
        "server RSS: {:.1} MiB before, {:.1} MiB with {n} streams open, {:.1} MiB after 30 s of pushes ({:.1} KiB per stream)",
        rss_before as f64 / 1024.0,
        rss_open as f64 / 1024.0,
        rss_busy as f64 / 1024.0,
        (rss_open as f64 - rss_before as f64) / n as f64
    );
    println!(
        "server CPU: {:.1} % of one core idle; {:.1} % at 1 status change per second ({changes} changes in {wall:.1} s, {:.1} MiB pushed, {:.0} B per stream per change)",
        idle_cpu * 100.0,
        busy_cpu * 100.0,
        pushed as f64 / (1 << 20) as f64,
        pushed as f64 / n as f64 / changes.max(1) as f64
    );
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "status throughput with {n} streams open / bare handler: {:.3} (median of rounds {}; {:.0} vs {:.0} requests/s)",
        percentile(&ratios, 50.0),
        shown.join(", "),
        percentile(&a_rps, 50.0),
        percentile(&b_rps, 50.0)
    );
    for client in clients {
        client.abort();
    }
}

/// One idle panel for a minute: on the stream (heartbeats only) against
/// polling with If-None-Match (a 304 a second). Bytes over the wire as the
/// server writes them (the stream's request is sent once, before the minute).
pub(super) async fn stream_idle() {
    let server = Server::start(&[]);
    let c = Client::new(&server.base);
    fill(&c, 10).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /api/orchestrator/stream HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut opening = Vec::new();
    // Chunked: each event ends "\n\n" and its chunk "\r\n".
    while !(opening.ends_with(b"\n\n\r\n") && opening.windows(13).any(|w| w == b"event: status")) {
        let n = s.read(&mut buf).await.unwrap();
        opening.extend_from_slice(&buf[..n]);
    }
    let started = Instant::now();
    let mut minute = 0usize;
    while let Ok(Ok(n)) = tokio::time::timeout(
        Duration::from_secs(60).saturating_sub(started.elapsed()),
        s.read(&mut buf),
    )
    .await
    {
        if n == 0 {
            break;
        }
        minute += n;
    }
    let host = server.addr.to_string();
    let etag = status_etag(&c, &server).await;
    let (mut up, mut down) = (0usize, 0usize);
    for _ in 0..60 {
        let (code, sent, got) =
            exchange_bytes(server.addr, &poll_request(&host, Some(&etag))).unwrap();
        assert_eq!(code, 304);
        up += sent;
        down += got;
    }
    println!("\n## stream-idle: one idle panel for a minute, 10 decisions listed");
    println!("| transport | server to browser | browser to server | total |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| stream (heartbeats only; {} B request and {} B opening once) | {minute} B/min | 0 B/min | {minute} B/min |",
        req.len(),
        opening.len()
    );
    println!(
        "| polling, 304 a second | {down} B/min | {up} B/min | {} B/min |",
        up + down
    );
    println!(
        "stream / polling: {:.4} of the bytes ({:.0}x fewer)",
        minute as f64 / (up + down) as f64,
        (up + down) as f64 / minute.max(1) as f64
    );
}
