//! `POST /api/orchestrator/decisions`: decisions made by a router that lives
//! elsewhere, one or a batch, recorded once the store has them.

use super::*;
use crate::service::NewDecision;

/// `POST /api/orchestrator/decisions` body: a decision made by a router that
/// lives elsewhere.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestRequest {
    /// The query that was routed. Its first 100 characters (cut at a
    /// grapheme boundary) are kept and must hold a visible character.
    #[schema(example = "What is Python?", min_length = 1)]
    pub query: String,
    /// The tier it was routed to, by either of its names.
    pub tier: TierName,
    /// Complexity score, finite, 0..=15.
    #[schema(example = 4.2, minimum = 0.0, maximum = 15.0)]
    pub score: f64,
    /// Time the router spent deciding, in ms; finite, 0..=3600000.
    #[schema(example = 12.5, minimum = 0.0, maximum = 3_600_000.0)]
    pub decision_time_ms: f64,
    /// The router's mode, when it has one of ours (`simple`, `two-stage`);
    /// absent or null leaves the decision without a mode.
    #[serde(default)]
    #[schema(nullable)]
    pub mode: Option<routing::Mode>,
    /// Why the router gave this score: at most 16 signals, each a name of
    /// 1 to 32 characters and the points (finite) it contributed.
    #[serde(default)]
    #[schema(nullable, max_items = 16)]
    pub signals: Option<Vec<Signal>>,
    /// The tokens the answer took, when the router knows them (each count
    /// 0..=1000000000); priced by `--price` into the status's `cost`.
    #[serde(default)]
    #[schema(nullable)]
    pub usage: Option<Usage>,
}

/// A tier as a router names it: internally (`fast`, `balanced`, `powerful`)
/// or as shown (`Q2`, `Q3`, `Q4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub enum TierName {
    /// Q2.
    #[serde(rename = "fast")]
    Fast,
    /// Q3.
    #[serde(rename = "balanced")]
    Balanced,
    /// Q4.
    #[serde(rename = "powerful")]
    Powerful,
    /// The fast tier.
    Q2,
    /// The balanced tier.
    Q3,
    /// The powerful tier.
    Q4,
}

impl From<TierName> for Tier {
    fn from(name: TierName) -> Tier {
        match name {
            TierName::Fast | TierName::Q2 => Tier::Q2,
            TierName::Balanced | TierName::Q3 => Tier::Q3,
            TierName::Powerful | TierName::Q4 => Tier::Q4,
        }
    }
}
/// Most decisions one ingestion request may carry.
pub const MAX_BATCH: usize = 1_000;

pub use crate::extract::MAX_BATCH_BODY_BYTES;

/// Records a decision made by a router that lives elsewhere, or a batch.
#[utoipa::path(
    post,
    path = "/api/orchestrator/decisions",
    tag = "status",
    request_body(content = IngestBody, description = "One decision, or an array of 1 to 1000 recorded all or nothing",
        example = json!({"query": "Prove Fermat's little theorem", "tier": "powerful", "score": 9.5, "decisionTimeMs": 14.2})),
    responses(
        (status = 201, description = "Recorded, and committed to the store (unless --in-memory): the decision, or for an array the decisions in the order given", body = IngestAnswer),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 403, description = "A cross-site browser request; nothing recorded", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB (one decision) or 4 MiB (an array)", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json; nothing recorded", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid (for an array: which item, `[3].score`), or the array is empty or holds more than 1000; nothing recorded", body = ErrorBody,
         example = json!({"error": "score: must be a finite number in 0..=15, got 16"})),
        (status = 503, description = "The store cannot be written: nothing acknowledged (retry after Retry-After)", body = ErrorBody,
         headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    crate::extract::require_json_content_type(&headers)?;
    let body =
        body.map_err(|rejection| crate::extract::body_rejected(&rejection, MAX_BATCH_BODY_BYTES))?;
    // One decision keeps the API's 64 KiB limit; only a batch may weigh more.
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_array && body.len() > crate::extract::MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: crate::extract::MAX_BODY_BYTES,
        });
    }
    let (items, is_batch) = crate::extract::decode_json_batch::<IngestRequest>(&body)?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::Invalid(format!(
            "body: an array of 1 to {MAX_BATCH} decisions, got {}",
            items.len()
        )));
    }
    // Every item is checked before any is recorded: all or nothing.
    let mut drafts = Vec::with_capacity(items.len());
    for (i, req) in items.into_iter().enumerate() {
        let at = |e: String| match is_batch {
            true => ApiError::Invalid(format!("[{i}].{e}")),
            false => ApiError::Invalid(e),
        };
        if let Some(signals) = &req.signals {
            validate_signals(signals).map_err(|e| at(e.to_string()))?;
        }
        if let Some(usage) = &req.usage {
            validate_usage(usage).map_err(|e| at(e.to_string()))?;
        }
        let draft = state
            .service
            .draft(NewDecision {
                query: &req.query,
                tier: req.tier.into(),
                score: req.score,
                decision_time_ms: req.decision_time_ms,
                mode: req.mode,
                signals: req.signals,
                usage: req.usage,
                // Reported decisions name no key of this router.
                key: None,
            })
            .map_err(|e| at(e.to_string()))?;
        drafts.push(draft);
    }
    if let Some(error) = state.service.store_failing() {
        return Err(ApiError::StoreFailing(error));
    }
    // Published only once committed: a refused batch is counted nowhere.
    let decisions = state
        .service
        .record_durable(drafts)
        .await
        .map_err(|e| ApiError::StoreFailing(e.0))?;
    for d in &decisions {
        crate::pipeline::log_decision(&state, d, "ingested");
    }
    Ok(match is_batch {
        true => (StatusCode::CREATED, Json(decisions)).into_response(),
        false => (StatusCode::CREATED, Json(&decisions[0])).into_response(),
    })
}
/// `POST /api/orchestrator/decisions` body: one decision or a batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape only
pub enum IngestBody {
    /// One decision.
    One(IngestRequest),
    /// 1 to 1000 decisions, recorded all or nothing.
    Many(Vec<IngestRequest>),
}

/// `POST /api/orchestrator/decisions` answer: as the body was.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // the document's shape only
pub enum IngestAnswer {
    /// The decision recorded (boxed: a decision is large beside a `Vec`).
    One(Box<RoutingDecision>),
    /// The decisions recorded, in the order given.
    Many(Vec<RoutingDecision>),
}
