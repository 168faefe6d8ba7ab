//! The cluster (only from a server run with `--redis`): whose view the
//! status is, every instance with its state, and which one this panel is
//! talking to; built with plain DOM calls, all text set as text.

use leptos::prelude::*;
use shared::OrchestratorStatus;
use shared::cluster::{ClusterInfo, ClusterInstance};

use crate::dom::element;

/// `HH:MM:SS` (UTC) of an RFC 3339 time, as the server writes it.
fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..19).unwrap_or(rfc3339)
}

/// Fills `section` from a status's `cluster` and `instances`; hides it
/// when there are none.
fn fill(section: &web_sys::HtmlElement, cluster: Option<(&ClusterInfo, &[ClusterInstance])>) {
    let Some((c, list)) = cluster else {
        section.set_hidden(true);
        return;
    };
    section.set_hidden(false);
    section.set_text_content(None);
    let head = format!("Cluster {} · {} instances", c.name, list.len());
    let _ = section.append_child(&element(None, "h2", &[], Some(&head)));
    if let Some(label) = c.label.as_deref().filter(|l| !l.is_empty()) {
        let text = format!(
            "Showing the {label}. {} decisions wait{}.",
            c.backlog,
            if c.overflowed > 0 {
                format!(", {} overflowed", c.overflowed)
            } else {
                String::new()
            }
        );
        let banner = element(
            None,
            "p",
            &[
                ("class", "banner"),
                ("role", "alert"),
                ("data-testid", "cluster-banner"),
            ],
            Some(&text),
        );
        let _ = section.append_child(&banner);
    }
    let ul = element(
        None,
        "ul",
        &[("class", "instances"), ("data-testid", "instances")],
        None,
    );
    for i in list {
        let state = i.state.name();
        let row = format!(
            "{}{} · {} · {state} · {} in flight · {} decisions · heartbeat {} UTC",
            i.id,
            if i.current { " (this panel's)" } else { "" },
            i.address,
            i.active_requests,
            i.total_decisions,
            clock(&i.last_heartbeat),
        );
        let li = element(
            None,
            "li",
            &[
                ("data-testid", "instance-row"),
                ("data-state", state),
                ("data-current", if i.current { "true" } else { "false" }),
            ],
            Some(&row),
        );
        let _ = ul.append_child(&li);
    }
    let _ = section.append_child(&ul);
}

/// The cluster card; hidden when the server is not in a cluster.
#[component]
pub fn ClusterCard(
    /// The status; its `cluster` and `instances` fill the card.
    #[prop(into)]
    status: Signal<Option<OrchestratorStatus>>,
) -> impl IntoView {
    let root = NodeRef::<leptos::html::Section>::new();
    Effect::new(move |_| {
        status.with(|s| {
            if let Some(section) = root.get() {
                let cluster = s
                    .as_ref()
                    .and_then(|s| Some((s.cluster.as_ref()?, s.instances.as_deref()?)));
                fill(&section, cluster);
            }
        });
    });
    view! {
        <section class="card wide cluster" data-testid="cluster" hidden=true node_ref=root></section>
    }
}
