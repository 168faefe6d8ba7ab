//! Names both sides of the wire spell the same: the event stream's event
//! names and the headers the router puts on every routed answer. The server
//! writes them and the panel listens for and reads them through these
//! constants only, so neither side can drift from the other.

/// The event names of `GET /api/orchestrator/stream`.
pub mod event {
    /// A whole status (the first event, and after a resync).
    pub const STATUS: &str = "status";
    /// One recorded decision, in sequence order.
    pub const DECISION: &str = "decision";
    /// A decision already sent, changed since (its answer's tokens added).
    pub const UPDATE: &str = "update";
    /// The decisions after the client's cursor cannot all be sent: fetch
    /// the status again.
    pub const RESYNC: &str = "resync";
}

/// The `x-router-*` response headers of a routed answer (lower case, as
/// HTTP/2 and `HeaderName::from_static` want them).
pub mod header {
    /// The tier that answered: Q2, Q3 or Q4 (a benchmark: each, comma-separated).
    pub const TIER: &str = "x-router-tier";
    /// The complexity score.
    pub const SCORE: &str = "x-router-score";
    /// SIMPLE, MODERATE or COMPLEX.
    pub const COMPLEXITY: &str = "x-router-complexity";
    /// The decision's id (a benchmark: each one, comma-separated).
    pub const DECISION_ID: &str = "x-router-decision-id";
    /// Council and benchmark: the group's id.
    pub const GROUP_ID: &str = "x-router-group-id";
    /// A virtual key with a budget: USD left in its period.
    pub const BUDGET_REMAINING: &str = "x-router-budget-remaining-usd";
    /// A virtual key with a budget under `--brownout`: its brownout level,
    /// 0..=1 (its Q4 threshold rises with it).
    pub const BROWNOUT: &str = "x-router-brownout";
    /// All of them, for a CORS grant that lets a page read them.
    pub const ALL: [&str; 7] = [
        TIER,
        SCORE,
        COMPLEXITY,
        DECISION_ID,
        GROUP_ID,
        BUDGET_REMAINING,
        BROWNOUT,
    ];
}
