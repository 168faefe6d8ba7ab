//! Scale-out on the wire: the status's `cluster` (the Redis link and whose
//! view the status is) and `instances` (every router instance of the
//! cluster); and the pure rules both sides share (when an instance counts as
//! live, stale or gone; how the merged decisions are ordered).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::decision::RoutingDecision;

/// An instance whose last heartbeat is younger than this is `live`: its
/// requests in flight count into `activeRequests`.
pub const LIVE_MS: i64 = 5_000;
/// Older than [`LIVE_MS`] but younger than this: `stale`; older: `gone`.
/// Either way its totals stay counted.
pub const STALE_MS: i64 = 60_000;

/// The status's `cluster`: present only when the server runs with `--redis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// The cluster's name (`--cluster`): instances on the same Redis with
    /// the same name share one status.
    #[cfg_attr(feature = "openapi", schema(example = "default"))]
    pub name: String,
    /// The link to Redis.
    pub redis: RedisState,
    /// Since when Redis is unreachable (only while it is), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub since: Option<String>,
    /// What failed (only while unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `cluster`: the status covers every instance. `local`: Redis is
    /// unreachable (or not reached yet) and the status covers this instance
    /// only.
    pub view: ClusterView,
    /// Only in `local` view, the words for it: "local view of instance X;
    /// Redis unreachable since HH:MM:SS UTC".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// This instance's decisions waiting to be sent to Redis.
    pub backlog: u64,
    /// The most that may wait (`--redis-backlog`).
    pub backlog_capacity: u64,
    /// Decisions that found the backlog full and were never sent (their
    /// totals are still exact: totals travel as absolute counts).
    pub overflowed: u64,
}

/// See [`ClusterInfo::redis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RedisState {
    /// Not yet reached since start.
    Connecting,
    /// The last exchange succeeded.
    Connected,
    /// The last exchange failed or timed out; retried after a pause.
    Unreachable,
}

/// See [`ClusterInfo::view`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClusterView {
    /// Every instance.
    Cluster,
    /// This instance only.
    Local,
}

/// One router instance of the cluster, as the status lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClusterInstance {
    /// Its instance id (the prefix of its decision ids).
    pub id: String,
    /// Where it listens.
    #[cfg_attr(feature = "openapi", schema(example = "10.0.0.7:8000"))]
    pub address: String,
    /// When it started, RFC 3339.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub started_at: String,
    /// Its last heartbeat, RFC 3339.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_heartbeat: String,
    /// Its requests in flight (counted into `activeRequests` only while
    /// `live`).
    pub active_requests: u64,
    /// Its decisions, all time.
    pub total_decisions: u64,
    /// Its decisions per tier (Q2, Q3, Q4).
    #[cfg_attr(feature = "openapi", schema(min_items = 3, max_items = 3))]
    pub total_processed: [u64; 3],
    /// `live`, `stale` (no heartbeat for 5 s) or `gone` (none for 60 s, or
    /// stopped).
    pub state: InstanceState,
    /// True for the instance that served this status.
    pub current: bool,
}

/// See [`ClusterInstance::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Heartbeating.
    Live,
    /// Silent for a while.
    Stale,
    /// Silent for long, or stopped.
    Gone,
}

impl InstanceState {
    /// As on the wire: `live`, `stale` or `gone`.
    pub const fn name(self) -> &'static str {
        match self {
            InstanceState::Live => "live",
            InstanceState::Stale => "stale",
            InstanceState::Gone => "gone",
        }
    }
}

/// The state of an instance whose last heartbeat is `age_ms` old.
pub fn instance_state(age_ms: i64, stopped: bool) -> InstanceState {
    if stopped || age_ms >= STALE_MS {
        InstanceState::Gone
    } else if age_ms >= LIVE_MS {
        InstanceState::Stale
    } else {
        InstanceState::Live
    }
}

/// The order of decisions merged from several instances: by time, then by
/// `seq` (one instance's decisions of one instant), then by id (two
/// instances' of one instant). `Greater` is newer. One instance's decisions
/// come out in `seq` order, as before.
pub fn newer(a: &RoutingDecision, b: &RoutingDecision) -> Ordering {
    a.timestamp
        .cmp(&b.timestamp)
        .then(a.seq.cmp(&b.seq))
        .then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_by_age() {
        assert_eq!(instance_state(0, false), InstanceState::Live);
        assert_eq!(instance_state(LIVE_MS - 1, false), InstanceState::Live);
        assert_eq!(instance_state(LIVE_MS, false), InstanceState::Stale);
        assert_eq!(instance_state(STALE_MS, false), InstanceState::Gone);
        assert_eq!(instance_state(0, true), InstanceState::Gone);
    }
}
