//! Virtual keys across instances on one real Redis: a key made on one is
//! used on all, a budget holds exactly over all of them under load (and
//! through a Redis outage under each `--budget-fail` policy, nothing
//! counted twice after it), a revocation reaches every instance within
//! 1 s, and `accountingDrift` returns to 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Behavior, Client, FakeUpstream, Redis, Server, eventually};

const ADMIN: &str = "adm-cluster-key";
/// $1/6400 a token: a four-word query (4 + 5 tokens from the test double)
/// costs $9/6400 = 0.00140625, so a $1 budget takes about 711 calls.
const PRICE: &str = "powerful=156.25/156.25";
const CALL: f64 = 9.0 / 6400.0;

fn node(redis: &Redis, up: &FakeUpstream, cluster: &str, extra: &[&str]) -> Server {
    let url = redis.url();
    let upstream = format!("powerful={}", up.base_url);
    let mut args = vec![
        "--redis",
        &url,
        "--cluster",
        cluster,
        "--admin-key",
        ADMIN,
        "--price",
        PRICE,
        "--upstream",
        &upstream,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

async fn make_key(c: &Client, body: Value) -> (String, String) {
    let res = c
        .http()
        .post(format!("{}/api/keys", c.base()))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let v: Value = res.json().await.unwrap();
    (
        v["secret"].as_str().unwrap().to_owned(),
        v["key"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn call(http: &reqwest::Client, base: &str, secret: &str) -> u16 {
    http.post(format!("{base}/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&json!({"model": "powerful", "messages": [{"role": "user", "content": "a b c d"}]}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The spend Redis holds for `id` this period: every instance's ledger,
/// summed (reservations left out).
fn redis_spend(redis: &Redis, cluster: &str, id: &str) -> f64 {
    let keys = redis.cli(&[
        "--scan",
        "--pattern",
        &format!("orch:{{{cluster}}}:spend:{id}:*"),
    ]);
    let key = keys.lines().next().unwrap_or_default().trim().to_owned();
    if key.is_empty() {
        return 0.0;
    }
    let fields = redis.cli(&["HGETALL", &key]);
    let lines: Vec<&str> = fields.lines().collect();
    lines
        .chunks(2)
        .filter(|p| p.len() == 2 && !p[0].starts_with("r:"))
        .map(|p| p[1].trim().parse::<f64>().unwrap_or(0.0))
        .sum()
}

async fn drift(c: &Client) -> f64 {
    c.status().await["budgetLedger"]["accountingDrift"]
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// 24 clients spend through one key, 8 on each of 3 instances, until
/// refused: (calls answered, refusals with insufficient_quota, other).
async fn spend_until_refused(
    bases: &[String],
    secret: &str,
    outage: Option<Box<dyn FnOnce() + Send>>,
) -> (u64, u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let base = bases[i % bases.len()].clone();
        let secret = secret.to_owned();
        let (ok, refused, other, stop) = (ok.clone(), refused.clone(), other.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                match call(&http, &base, &secret).await {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    429 => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        other.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    if let Some(outage) = outage {
        outage();
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_holds_exactly_across_three_instances() {
    let redis = Redis::start();
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let nodes: Vec<Server> = (0..3).map(|_| node(&redis, &up, "budget", &[])).collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let a = Client::new(&bases[0]);
    let (secret, id) = make_key(&a, json!({"name": "shared", "budgetUsd": 1.0})).await;
    // Made on one, known to all.
    for base in &bases[1..] {
        let c = Client::new(base);
        assert!(
            eventually(Duration::from_secs(2), || async {
                call(c.http(), base, &secret).await == 200
            })
            .await,
            "the key reached {base}"
        );
    }
    let (ok, refused, other) = spend_until_refused(&bases, &secret, None).await;
    assert!(
        refused > 0 && other == 0,
        "ok {ok}, refused {refused}, other {other}"
    );
    // Every answered call was charged 0.00140625: the spend is the calls'.
    let total = ok as f64 * CALL + 2.0 * CALL;
    eprintln!(
        "figures: {} calls answered, {refused} refused; spend {total:.8} = {:.5} of the budget, past it by {:.2} calls",
        ok + 2,
        total / 1.0,
        (total - 1.0) / CALL
    );
    // No refusal below the budget; past it by at most one call per
    // instance in flight.
    assert!(total >= 1.0, "refused at {total}");
    assert!(
        total <= 1.0 + 3.0 * CALL + 1e-9,
        "spent {total} of 1.00 ({ok} calls)"
    );
    // Redis's spend is the sum of the instances' ledgers, and each one's
    // drift returns to 0.
    assert!(
        eventually(Duration::from_secs(3), || async {
            (redis_spend(&redis, "budget", &id) - total).abs() < 1e-9
        })
        .await,
        "Redis holds {} against {total}",
        redis_spend(&redis, "budget", &id)
    );
    for base in &bases {
        let c = Client::new(base);
        assert!(
            eventually(Duration::from_secs(3), || async { drift(&c).await == 0.0 }).await,
            "drift on {base}: {}",
            drift(&c).await
        );
        let status = c.status().await;
        assert_eq!(status["accountingDrift"], 0.0);
        assert_eq!(status["budgetLedger"]["shared"], true);
        assert_eq!(status["budgetLedger"]["failPolicy"], "closed");
        // Each instance shows every instance's spend.
        let shown = || async { c.status().await["keys"][0]["spentUsd"].as_f64().unwrap() };
        assert!(
            eventually(Duration::from_secs(3), || async {
                (shown().await - total).abs() < 1e-9
            })
            .await,
            "{base} shows {} of {total}",
            shown().await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_reaches_every_instance_within_a_second() {
    let redis = Redis::start();
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let nodes: Vec<Server> = (0..3).map(|_| node(&redis, &up, "revoke", &[])).collect();
    let a = Client::new(&nodes[0].base);
    let (secret, id) = make_key(&a, json!({"name": "leaving"})).await;
    for n in &nodes {
        let c = Client::new(&n.base);
        assert!(
            eventually(Duration::from_secs(2), || async {
                call(c.http(), &n.base, &secret).await == 200
            })
            .await
        );
    }
    let res = a
        .http()
        .delete(nodes[1].url(&format!("/api/keys/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let revoked = Instant::now();
    for n in &nodes {
        let c = Client::new(&n.base);
        assert!(
            eventually(Duration::from_secs(1), || async {
                call(c.http(), &n.base, &secret).await == 401
            })
            .await,
            "{} still takes the key",
            n.base
        );
    }
    eprintln!(
        "figures: revoked on one, refused on all three after {} ms",
        revoked.elapsed().as_millis()
    );
}

async fn outage(fail: &str) {
    let mut redis = Redis::start();
    let up = FakeUpstream::start_model(Behavior::Ok, "m").await;
    let cluster = format!("outage-{fail}");
    let nodes: Vec<Server> = (0..3)
        .map(|_| node(&redis, &up, &cluster, &["--budget-fail", fail]))
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let a = Client::new(&bases[0]);
    let (secret, id) = make_key(&a, json!({"name": "through an outage", "budgetUsd": 1.0})).await;
    for base in &bases {
        let c = Client::new(base);
        assert!(
            eventually(Duration::from_secs(2), || async {
                call(c.http(), base, &secret).await == 200
            })
            .await
        );
    }
    // Spend a third of the budget, then take Redis away for 10 s.
    let http = reqwest::Client::new();
    let mut answered = 3u64;
    while (answered as f64) * CALL < 0.33 {
        assert_eq!(
            call(&http, &bases[(answered % 3) as usize], &secret).await,
            200
        );
        answered += 1;
    }
    let before = answered as f64 * CALL;
    assert!(
        eventually(Duration::from_secs(3), || async {
            (redis_spend(&redis, &cluster, &id) - before).abs() < 1e-9
        })
        .await
    );
    redis.stop();
    let down = Instant::now();
    let mut during = (0u64, 0u64);
    while down.elapsed() < Duration::from_secs(10) {
        for base in &bases {
            match call(&http, base, &secret).await {
                200 => during.0 += 1,
                503 => during.1 += 1,
                code => panic!("{code} while Redis is down ({fail})"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match fail {
        // Closed: refused once the ledger is known to be unreachable.
        "closed" => assert!(during.1 > 0 && during.0 <= 6, "{during:?}"),
        // Open: answered by each instance's view all along.
        _ => assert!(during.0 > 0 && during.1 == 0, "{during:?}"),
    }
    eprintln!(
        "figures ({fail}): while Redis was down {} answered, {} refused (503)",
        during.0, during.1
    );
    answered += during.0;
    // Redis comes back empty: every instance writes its ledger again, and
    // Redis's spend is exactly what was answered, nothing twice.
    redis.restart();
    let exact = answered as f64 * CALL;
    assert!(
        eventually(Duration::from_secs(5), || async {
            (redis_spend(&redis, &cluster, &id) - exact).abs() < 1e-9
        })
        .await,
        "Redis holds {} against {exact}",
        redis_spend(&redis, &cluster, &id)
    );
    for base in &bases {
        let c = Client::new(base);
        assert!(
            eventually(Duration::from_secs(3), || async { drift(&c).await == 0.0 }).await,
            "drift on {base}"
        );
    }
    // And the budget still holds after it.
    let (ok, refused, other) = spend_until_refused(&bases, &secret, None).await;
    assert!(
        refused > 0 && other == 0,
        "ok {ok} refused {refused} other {other}"
    );
    let total = exact + ok as f64 * CALL;
    eprintln!(
        "figures ({fail}): after the outage the spend {total:.8} = {:.5} of the budget",
        total / 1.0
    );
    assert!(
        (1.0..=1.0 + 3.0 * CALL + 1e-9).contains(&total),
        "spent {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_fail_closed_refuses_while_redis_is_down_and_counts_nothing_twice() {
    outage("closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_fail_open_answers_while_redis_is_down_and_counts_nothing_twice() {
    outage("open").await;
}
