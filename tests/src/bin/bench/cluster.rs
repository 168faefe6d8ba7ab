//! Scale-out: three instances on one Redis.

use super::*;

/// This instance's own decisions (its line in `instances`) and the
/// aggregate its status shows.
pub(super) async fn own_and_shown(c: &Client) -> (u64, u64) {
    let s = c.status().await;
    let own = s["instances"][0]["totalDecisions"].as_u64().unwrap();
    (own, s["totalDecisions"].as_u64().unwrap())
}

/// Three instances (store on) on one real Redis: batched ingestion spread
/// over them (decisions/s in total, the aggregate exact at the end, Redis
/// commands per decision from `INFO commandstats`); the status endpoint of
/// one of them against the bare handler while the other two write; and
/// a decision made on one to the pixel on another's panel.
pub(super) async fn cluster(secs: u64) {
    const CLIENTS: usize = 12;
    let redis = tests::Redis::start();
    let url = redis.url();
    let nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(&["--redis", &url, "--buffer-size", "1000"]))
        .collect();
    let clients: Vec<Client> = nodes.iter().map(|n| Client::new(&n.base)).collect();
    let body = batch_body(100);
    for n in &nodes {
        drive_batches(&n.base, &body, 100, 2, 1).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let mut before = 0;
    for c in &clients {
        before += own_and_shown(c).await.0;
    }
    let load: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (base, body) = (n.base.clone(), body.clone());
            tokio::spawn(async move { drive_batches(&base, &body, 100, CLIENTS / 3, secs).await })
        })
        .collect();
    let mut rate = 0.0;
    for l in load {
        rate += l.await.unwrap();
    }
    let ended = Instant::now();
    let mut own = 0;
    for c in &clients {
        own += own_and_shown(c).await.0;
    }
    // Exact on every instance: how long after the load it took.
    let mut exact_after = None;
    while ended.elapsed() < Duration::from_secs(30) {
        let mut all = true;
        for c in &clients {
            all &= own_and_shown(c).await.1 == own;
        }
        if all {
            exact_after = Some(ended.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commands = redis.commands();
    let decisions = own - before;
    println!(
        "\n## cluster: three instances (store on) on one Redis, batches of 100, {CLIENTS} clients spread over them, {secs} s"
    );
    println!(
        "decisions/s acknowledged in total: {rate:.0}; {decisions} decisions; aggregate exact on every instance: {}",
        match exact_after {
            Some(t) => format!("yes, {} ms after the load ended", t.as_millis()),
            None => "NO, not within 30 s".into(),
        }
    );
    println!(
        "Redis commands during the load and until exact: {commands} = {:.5} per decision",
        commands as f64 / decisions as f64
    );
    let stats = redis.cli(&["INFO", "commandstats"]);
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
        println!("  {line}");
    }

    // The status endpoint of node 0 against the bare handler, the other two
    // writing 500 decisions/s each (their decisions reach node 0 through
    // Redis and change its status), through both handlers' runs: they are
    // other processes on the same two cores.
    let (bare, body_file, status_body) = bare_twin(&clients[0], &nodes[0]).await;
    let writers = [nodes[1].base.clone(), nodes[2].base.clone()];
    let rounds = 5;
    let (a_runs, b_runs, write_rates) =
        floor_rounds(&nodes[0], &bare, &writers, 1_000, true, secs, rounds).await;
    std::fs::remove_file(&body_file).ok();
    let ratios: Vec<f64> = a_runs
        .iter()
        .zip(&b_runs)
        .map(|(a, b)| a.rps / b.rps)
        .collect();
    let rps = |runs: &[tests::bench::WrkReport]| {
        percentile(&runs.iter().map(|r| r.rps).collect::<Vec<_>>(), 50.0)
    };
    println!(
        "\n## cluster floor: node 0's status ({} bytes) with wrk -t2 -c64 -d{secs}s, {rounds} alternating rounds, the others writing (node 0 saw {:.0} decisions/s)",
        status_body.len(),
        percentile(&write_rates, 50.0)
    );
    println!(
        "status {:.0} requests/s, bare {:.0}: ratio {:.3}, median of the rounds' ratios ({})",
        rps(&a_runs),
        rps(&b_runs),
        percentile(&ratios, 50.0),
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(nodes);

    // Cross-instance push: a panel on a fresh instance A, decisions posted to B.
    let a = Server::start(&["--redis", &url, "--in-memory"]);
    let b = Server::start(&["--redis", &url, "--in-memory", "--buffer-size", "1000"]);
    let latencies = decision_to_pixel(&a, &b, secs).await;
    print_pixel(
        &format!(
            "cluster pixel: decision on B to painted frame on A's panel, {secs} s, 10 decisions/s"
        ),
        &latencies,
    );
}
