//! Component tests in headless Chromium (wasm-bindgen-test).
#![cfg(target_arch = "wasm32")]

use chrono::{DateTime, Utc};
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use panel::components::orchestrator_status_panel::OrchestratorStatusPanel;
use panel::components::status_view::StatusView;
use panel::hooks::{DataSource, Transport};
use shared::{
    OrchestratorStatus, RecordedDecision, RoutingDecision, StatusCounters, Tier, build_status,
};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;
use web_sys::HtmlElement;

wasm_bindgen_test_configure!(run_in_browser);

fn container() -> HtmlElement {
    let doc = document();
    let div: HtmlElement = doc.create_element("div").unwrap().unchecked_into();
    doc.body().unwrap().append_child(&div).unwrap();
    div
}

fn text(root: &HtmlElement, selector: &str) -> String {
    root.query_selector(selector)
        .unwrap()
        .unwrap_or_else(|| panic!("{selector} is rendered"))
        .text_content()
        .unwrap_or_default()
}

fn count(root: &HtmlElement, selector: &str) -> u32 {
    root.query_selector_all(selector).unwrap().length()
}

fn status_of(n: usize, at: DateTime<Utc>) -> OrchestratorStatus {
    let mut counters = StatusCounters::default();
    let decisions: Vec<RecordedDecision> = (0..n)
        .rev()
        .map(|i| {
            let tier = Tier::ALL[i % 3];
            counters.total_processed[tier.index()] += 1;
            let d = RoutingDecision::new(
                format!("d{i}"),
                &format!("<b>query {i}</b>"),
                tier,
                (i % 16) as f64 * 0.9,
                at,
            )
            .unwrap();
            RecordedDecision::new(d, 2.0).unwrap()
        })
        .collect();
    counters.total_decisions = n as u64;
    counters.active_requests = [1, 0, 2];
    build_status(&decisions, 20, 10, &counters, at)
}

/// The status's own decisions, as the feed gives them before any stream
/// event.
fn decisions_of(status: ReadSignal<Option<OrchestratorStatus>>) -> Signal<Vec<RoutingDecision>> {
    Signal::derive(move || {
        status.with(|s| {
            s.as_ref()
                .map(|s| s.recent_decisions.clone())
                .unwrap_or_default()
        })
    })
}

async fn settle() {
    TimeoutFuture::new(30).await;
}

#[wasm_bindgen_test]
async fn renders_a_given_status() {
    let root = container();
    let (status, set_status) = signal(Some(status_of(12, panel::time::now_utc())));
    let decisions = decisions_of(status);
    let _handle = leptos::mount::mount_to(root.clone(), move || {
        view! {
            <StatusView
                status=status
                decisions=decisions
                source=Signal::stored(Some(DataSource::Live(Transport::Stream)))
                last_live_ms=Signal::stored(Some(0.0))
            />
        }
    });
    settle().await;
    assert_eq!(text(&root, "[data-testid=data-source]"), "Live");
    assert_eq!(text(&root, "[data-testid=transport]"), "stream");
    assert_eq!(text(&root, "[data-testid=total-decisions]"), "12");
    assert_eq!(
        text(&root, "[data-testid=utilization-covers]"),
        "last 12 decisions (window 20)"
    );
    assert_eq!(
        text(&root, "[data-testid=distribution-covers]"),
        "last 12 decisions"
    );
    assert_eq!(text(&root, "[data-testid=decision-time]"), "2.00 ms");
    assert_eq!(text(&root, "[data-testid=avg-decision-time]"), "2.00 ms");
    assert_eq!(count(&root, "[data-testid=decision]"), 10);
    let q2 = text(&root, "[data-testid=tier-Q2]");
    assert!(q2.contains("Q2") && q2.contains("active 1"), "{q2}");
    assert!(q2.contains("processed 4"), "{q2}");
    // the query is text, not markup
    assert_eq!(count(&root, "[data-testid=decision] b"), 0);
    assert!(text(&root, "[data-testid=decision]").contains("<b>query 11</b>"));
    // meters carry their value
    let meter = root
        .query_selector("[data-testid=tier-Q4] [role=meter]")
        .unwrap()
        .unwrap();
    assert!(meter.get_attribute("aria-valuenow").is_some());

    // Keyed rows: a status with one new decision adds one row and keeps the
    // DOM nodes of the rows that did not change.
    let kept = root
        .query_selector("[data-testid=decision]")
        .unwrap()
        .unwrap();
    set_status.set(Some(status_of(13, panel::time::now_utc())));
    settle().await;
    assert_eq!(text(&root, "[data-testid=total-decisions]"), "13");
    let rows = root.query_selector_all("[data-testid=decision]").unwrap();
    assert_eq!(rows.length(), 10);
    let second = rows.item(1).unwrap();
    assert!(
        second.is_same_node(Some(kept.unchecked_ref())),
        "the old newest row is reused"
    );
}

#[wasm_bindgen_test]
async fn mock_badge_on_a_failed_fetch() {
    let root = container();
    // Nothing listens on the discard port: every poll fails.
    let _handle = leptos::mount::mount_to(root.clone(), move || {
        view! { <OrchestratorStatusPanel api_base="http://127.0.0.1:9" interval_ms=200 timeout_ms=500/> }
    });
    let mut badge = String::new();
    for _ in 0..60 {
        TimeoutFuture::new(50).await;
        badge = root
            .query_selector("[data-testid=data-source]")
            .unwrap()
            .and_then(|e| e.text_content())
            .unwrap_or_default();
        if badge.starts_with("Mock data: backend unreachable (") {
            break;
        }
    }
    assert!(
        badge.starts_with("Mock data: backend unreachable ("),
        "{badge}"
    );
    // mock numbers still render, from shared's generator
    assert_eq!(count(&root, "[data-testid=decision]"), 10);
    assert_eq!(count(&root, "[data-testid^=tier-]"), 3);
}

/// Before the first answer nothing looks like a real number; a stale panel
/// keeps its numbers, says since when and why; decision times under 1 ms
/// read in microseconds.
#[wasm_bindgen_test]
async fn connecting_stale_and_microseconds() {
    let root = container();
    let (status, set_status) = signal(None::<OrchestratorStatus>);
    let (source, set_source) = signal(None::<DataSource>);
    let decisions = decisions_of(status);
    let _handle = leptos::mount::mount_to(root.clone(), move || {
        view! { <StatusView status=status decisions=decisions source=source last_live_ms=Signal::stored(None)/> }
    });
    settle().await;
    assert_eq!(text(&root, "[data-testid=data-source]"), "Connecting…");
    assert_eq!(text(&root, "[data-testid=total-decisions]"), "—");
    assert_eq!(text(&root, "[data-testid=avg-decision-time]"), "—");
    let q2 = text(&root, "[data-testid=tier-Q2]");
    assert!(
        !q2.contains('0') && q2.contains('—'),
        "no zero before data: {q2}"
    );
    let mix = text(&root, "[data-testid=distribution]");
    assert!(
        !mix.contains('0') && mix.contains('—'),
        "no zero before data: {mix}"
    );
    let mut s = status_of(3, panel::time::now_utc());
    s.avg_decision_time_ms = 0.013;
    set_status.set(Some(s));
    set_source.set(Some(DataSource::Stale {
        since_ms: 0.0,
        reason: "stream dropped".into(),
    }));
    settle().await;
    assert_eq!(text(&root, "[data-testid=avg-decision-time]"), "13 µs");
    let badge = text(&root, "[data-testid=data-source]");
    assert!(
        badge.starts_with("Stale since ") && badge.ends_with(" (stream dropped)"),
        "{badge}"
    );
    assert_eq!(
        text(&root, "[data-testid=total-decisions]"),
        "3",
        "the last live numbers stay"
    );
    let panel = root.query_selector("[data-testid=panel]").unwrap().unwrap();
    assert_eq!(panel.get_attribute("data-state").as_deref(), Some("stale"));
}

/// A failing store is said on the panel, with since when, how many
/// decisions were not persisted and why; an older server's status (no
/// `persistence`) and a working store say nothing.
#[wasm_bindgen_test]
async fn a_failing_store_is_said() {
    use shared::history::{Persistence, PersistenceState};
    let root = container();
    let (status, set_status) = signal(Some(status_of(3, panel::time::now_utc())));
    let decisions = decisions_of(status);
    let _handle = leptos::mount::mount_to(root.clone(), move || {
        view! { <StatusView status=status decisions=decisions source=Signal::stored(None) last_live_ms=Signal::stored(None)/> }
    });
    settle().await;
    let banner = root
        .query_selector("[data-testid=persistence-banner]")
        .unwrap()
        .unwrap();
    assert!(
        banner.has_attribute("hidden"),
        "an older server: nothing said"
    );
    let mut s = status_of(3, panel::time::now_utc());
    s.persistence = Some(Persistence {
        state: PersistenceState::Failing,
        since: Some("2026-11-29T18:00:00.000Z".into()),
        error: Some("database or disk is full".into()),
        not_persisted: 4,
        sync: Some("normal".into()),
    });
    set_status.set(Some(s.clone()));
    settle().await;
    assert!(!banner.has_attribute("hidden"));
    let said = banner.text_content().unwrap();
    assert!(
        said.contains("2026-11-29T18:00:00.000Z")
            && said.contains("4 not persisted")
            && said.contains("database or disk is full"),
        "{said}"
    );
    s.persistence.as_mut().unwrap().state = PersistenceState::Ok;
    set_status.set(Some(s));
    settle().await;
    assert!(banner.has_attribute("hidden"), "said only while failing");
}

/// The per-tier upstream table: latency with units, tokens, error rate, a
/// coloured circuit badge per upstream, and the models; absent from an
/// older server's status, absent from the page.
#[wasm_bindgen_test]
async fn upstream_metrics_table() {
    use shared::metrics::{
        CircuitState, LastError, Latency, Outcome, OutcomeCounts, UpstreamMetrics,
    };
    use shared::{ModelUtilization, TierMetrics};
    let root = container();
    let (status, set_status) = signal(Some(status_of(3, panel::time::now_utc())));
    let decisions = decisions_of(status);
    let _handle = leptos::mount::mount_to(root.clone(), move || {
        view! { <StatusView status=status decisions=decisions source=Signal::stored(None) last_live_ms=Signal::stored(None)/> }
    });
    settle().await;
    assert_eq!(
        count(&root, "[data-testid=upstream-metrics]"),
        0,
        "an older server: no table"
    );

    let upstream = |name: &str, circuit| UpstreamMetrics {
        name: name.into(),
        model: Some("qwen-7b".into()),
        in_flight: 0,
        processed: 10,
        outcomes: OutcomeCounts {
            ok: 9,
            http_5xx: 1,
            ..Default::default()
        },
        error_rate: 0.1,
        latency_ms: None,
        circuit,
        consecutive_failures: 0,
        last_error: Some(LastError {
            kind: Outcome::Http5xx,
            message: "model crashed".into(),
            at: panel::time::now_utc(),
        }),
    };
    let tier = |tier, latency_ms, upstreams| TierMetrics {
        tier,
        latency_ms,
        tokens_in: 12_345,
        tokens_out: 678,
        requests: 20,
        outcomes: OutcomeCounts {
            ok: 18,
            timeout: 2,
            ..Default::default()
        },
        error_rate: 0.1,
        retries: 2,
        short_circuited: 0,
        in_flight: 0,
        upstreams,
        ttft_ms: None,
    };
    let mut s = status_of(3, panel::time::now_utc());
    s.tier_metrics = Some(vec![
        tier(
            Tier::Q2,
            Some(Latency {
                samples: 18,
                p50: 12.5,
                p95: 340.0,
                p99: 2_350.0,
            }),
            vec![
                upstream("gpu1", CircuitState::Closed),
                upstream("gpu2", CircuitState::Open),
            ],
        ),
        tier(Tier::Q3, None, vec![]),
        TierMetrics {
            ttft_ms: Some(Latency {
                samples: 4,
                p50: 230.0,
                p95: 410.0,
                p99: 410.0,
            }),
            ..tier(
                Tier::Q4,
                None,
                vec![upstream("big", CircuitState::HalfOpen)],
            )
        },
    ]);
    s.model_utilization = Some(vec![ModelUtilization {
        model: "qwen-7b".into(),
        tier: Tier::Q2,
        answered: 18,
        utilization_percent: 100.0,
        tokens_in: 12_345,
        tokens_out: 678,
        latency_ms: Some(Latency {
            samples: 18,
            p50: 0.85,
            p95: 1.0,
            p99: 1.0,
        }),
    }]);
    set_status.set(Some(s));
    settle().await;
    assert_eq!(text(&root, "[data-testid=tm-Q2-p50]"), "12.5 ms");
    assert_eq!(text(&root, "[data-testid=tm-Q2-p95]"), "340 ms");
    assert_eq!(text(&root, "[data-testid=tm-Q2-p99]"), "2.35 s");
    assert_eq!(text(&root, "[data-testid=tm-Q2-ttft]"), "—");
    assert_eq!(text(&root, "[data-testid=tm-Q4-ttft]"), "230 ms");
    assert_eq!(text(&root, "[data-testid=tm-Q3-p50]"), "—");
    assert!(text(&root, "[data-testid=tm-Q3]").contains("no upstream"));
    assert_eq!(text(&root, "[data-testid=tm-Q2-tokens]"), "12.3k / 678");
    assert_eq!(text(&root, "[data-testid=tm-Q2-errors]"), "10.0%");
    assert_eq!(text(&root, "[data-testid=tm-Q2-calls]"), "20 (2 retried)");
    let badge = |id: &str| {
        root.query_selector(&format!("[data-testid={id}]"))
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        badge("circuit-Q2-gpu2")
            .get_attribute("data-state")
            .as_deref(),
        Some("open")
    );
    assert_eq!(badge("circuit-Q2-gpu2").class_name(), "circuit open");
    assert_eq!(
        badge("circuit-Q4-big")
            .get_attribute("data-state")
            .as_deref(),
        Some("half-open")
    );
    assert!(
        badge("circuit-Q2-gpu1")
            .get_attribute("title")
            .unwrap()
            .contains("model crashed")
    );
    let model = text(&root, "[data-testid=model-qwen-7b]");
    assert!(
        model.contains("100.0%") && model.contains("850 µs"),
        "{model}"
    );
}

/// The insight card in a real browser: the histogram counts the decisions
/// given, the slider recomputes the shares with the shared crate's math, and
/// a row opens to its signals.
#[wasm_bindgen_test]
async fn insight_histogram_slider_and_signals() {
    let root = container();
    let at = panel::time::now_utc();
    // Scores 0.5, 2.5, ... 14.5, all two-stage (re-routable), as routed at 7.
    let decisions: Vec<RoutingDecision> = (0..8)
        .map(|i| {
            let score = f64::from(i) * 2.0 + 0.5;
            let tier = if score >= 7.0 { Tier::Q4 } else { Tier::Q3 };
            let mut d = RoutingDecision::new(format!("w{i}"), "q", tier, score, at)
                .unwrap()
                .with_seq(8 - i as u64, Some(shared::api::Mode::TwoStage));
            d.signals = Some(vec![
                shared::Signal::new("length", 0.5),
                shared::Signal::new("technical vocabulary", score - 0.5),
            ]);
            d
        })
        .collect();
    let status = status_of(0, at);
    let _mount = leptos::mount::mount_to(root.clone(), move || {
        view! {
            <StatusView
                status=Signal::stored(Some(status.clone()))
                decisions=Signal::stored(decisions.clone())
                source=Signal::stored(Some(DataSource::Live(Transport::Stream)))
                last_live_ms=Signal::stored(None)
            />
        }
    });
    settle().await;
    let bar = |i: usize| {
        root.query_selector(&format!("[data-testid=hist-bar-{i}]"))
            .unwrap()
            .unwrap()
            .get_attribute("data-count")
            .unwrap()
    };
    for i in 0..16 {
        let want = if i % 2 == 0 && i < 16 { "1" } else { "0" };
        assert_eq!(bar(i), want, "bucket {i}");
    }
    assert_eq!(text(&root, "[data-testid=whatif-share-Q4]"), "50.0%");
    let slider: web_sys::HtmlInputElement = root
        .query_selector("[data-testid=whatif-slider]")
        .unwrap()
        .unwrap()
        .unchecked_into();
    slider.set_value("11");
    let input = web_sys::Event::new_with_event_init_dict("input", &{
        let init = web_sys::EventInit::new();
        init.set_bubbles(true);
        init
    })
    .unwrap();
    slider.dispatch_event(&input).unwrap();
    settle().await;
    // 12.5 and 14.5 reach 11.
    assert_eq!(text(&root, "[data-testid=whatif-share-Q4]"), "25.0%");
    assert_eq!(text(&root, "[data-testid=whatif-share-Q3]"), "75.0%");
    assert_eq!(text(&root, "[data-testid=actual-share-Q4]"), "50.0%");
    // The newest row opens to its two signals.
    let button: HtmlElement = root
        .query_selector("[data-testid=decision-expand]")
        .unwrap()
        .unwrap()
        .unchecked_into();
    button.click();
    assert_eq!(count(&root, "[data-testid=signal]"), 2);
    assert_eq!(text(&root, "[data-testid=signal-sum]"), "0.50");
}

/// The cluster card: hidden for a server without `--redis`; the instances
/// listed with their states, this panel's marked; the local view's label
/// with the backlog; text from the server shown as text.
#[wasm_bindgen_test]
async fn the_cluster_card_lists_instances_and_says_a_local_view() {
    let root = container();
    let (status, set_status) = signal(Some(status_of(3, panel::time::now_utc())));
    let decisions = decisions_of(status);
    // The server's JSON, decoded through the shared types as the feed does.
    let set_cluster = move |json: serde_json::Value| {
        set_status.update(|s| {
            let s = s.as_mut().unwrap();
            s.cluster = Some(serde_json::from_value(json["cluster"].clone()).unwrap());
            s.instances = Some(serde_json::from_value(json["instances"].clone()).unwrap());
        })
    };
    let _handle = leptos::mount::mount_to(root.clone(), move || {
        view! { <StatusView status=status decisions=decisions source=Signal::stored(None) last_live_ms=Signal::stored(None)/> }
    });
    settle().await;
    let card = root
        .query_selector("[data-testid=cluster]")
        .unwrap()
        .unwrap();
    assert!(card.has_attribute("hidden"), "no cluster: no card");
    let instance = |id: &str, state: &str, current: bool| {
        serde_json::json!({"id": id, "address": "10.0.0.1:8000", "startedAt": "2026-11-29T18:00:00.000Z",
            "lastHeartbeat": "2026-11-29T18:30:05.000Z", "activeRequests": 2, "totalDecisions": 40,
            "totalProcessed": [10, 20, 10], "state": state, "current": current})
    };
    let json = serde_json::json!({
        "totalDecisions": 80,
        "cluster": {"name": "blue", "redis": "unreachable", "since": "2026-11-29T18:30:00.000Z",
            "error": "refused", "view": "local",
            "label": "local view of instance a1; Redis unreachable since 18:30:00 UTC",
            "backlog": 12, "backlogCapacity": 100, "overflowed": 3},
        "instances": [instance("a1", "live", true), instance("<b>b2</b>", "stale", false)]
    });
    set_cluster(json.clone());
    settle().await;
    assert!(!card.has_attribute("hidden"));
    let rows = root
        .query_selector_all("[data-testid=instance-row]")
        .unwrap();
    assert_eq!(rows.length(), 2);
    let row = |i: u32| {
        rows.item(i)
            .unwrap()
            .dyn_into::<web_sys::Element>()
            .unwrap()
    };
    assert_eq!(
        row(0).get_attribute("data-current").as_deref(),
        Some("true")
    );
    assert_eq!(row(1).get_attribute("data-state").as_deref(), Some("stale"));
    let text = row(0).text_content().unwrap();
    assert_eq!(
        text,
        "a1 (this panel's) · 10.0.0.1:8000 · live · 2 in flight · 40 decisions · heartbeat 18:30:05 UTC"
    );
    assert!(
        row(1).text_content().unwrap().starts_with("<b>b2</b> · "),
        "as text"
    );
    let banner = root
        .query_selector("[data-testid=cluster-banner]")
        .unwrap()
        .unwrap()
        .text_content()
        .unwrap();
    assert_eq!(
        banner,
        "Showing the local view of instance a1; Redis unreachable since 18:30:00 UTC. 12 decisions wait, 3 overflowed."
    );
    // Back in cluster view: no banner.
    let mut json = json;
    json["cluster"]["view"] = "cluster".into();
    json["cluster"].as_object_mut().unwrap().remove("label");
    set_cluster(json);
    settle().await;
    assert!(
        root.query_selector("[data-testid=cluster-banner]")
            .unwrap()
            .is_none()
    );
}
