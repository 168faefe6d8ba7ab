//! Wire types and pure status math of Orchestrator Status.
//!
//! Compiled into both the server and the WASM panel, so the panel's fallback
//! data comes out of the very functions that compute the server's live data and
//! the two can never drift apart. Depends on serde, chrono and
//! unicode-segmentation only (utoipa is an opt-in feature the server turns on
//! for its OpenAPI document).

pub mod api;
pub mod cluster;
mod decision;
pub mod group;
pub mod history;
pub mod insight;
pub mod keys;
pub mod metrics;
mod mock;
pub mod quality;
pub mod replay;
pub mod shadow;
mod status;
mod tier;
pub mod wire;

pub use decision::{
    DecisionError, INVISIBLE, MAX_DECISION_TIME_MS, MAX_QUERY_CHARS, MAX_SCORE, RecordedDecision,
    RoutingDecision, is_invisible, merge_newest_first, stored_query, truncate_query,
    validate_decision_time, validate_query, validate_score, visible_pattern, visible_query_pattern,
};
pub use insight::{CostSummary, Routing, Signal};
pub use metrics::{ModelUtilization, TierMetrics};
pub use mock::mock_status;
pub use status::{
    ComplexityDistribution, DEFAULT_CAPACITY, DEFAULT_RECENT, DEFAULT_WINDOW, Instance,
    OrchestratorStatus, StatusCounters, TierUtilization, Windows, build_status,
    complexity_distribution, mean_decision_time, tier_utilization,
};
pub use tier::{Complexity, PerTier, Tier};
