//! The panel's components, one per file.

pub mod announcer;
pub mod answer_view;
pub mod ascii_bar;
pub mod cluster_view;
pub mod complexity_distribution;
pub mod history_view;
pub mod mode_mix;
pub mod orchestrator_status_panel;
pub mod quality_view;
pub mod query_form;
pub mod read_key_prompt;
pub mod recent_decisions;
pub mod routing_insight;
pub mod signal_bars;
pub mod source_badge;
pub mod status_view;
pub mod tier_metrics;
pub mod tier_utilization;
