//! `GET /api/orchestrator/replay`: what-if over the stored history. The
//! two-stage decisions of a range routed again at another Q4 threshold
//! (by their stored scores, or with `scorer` by their kept prompts scored
//! again), in one pass over the stored rows ([`shared::replay`] holds the
//! math).

use std::str::FromStr as _;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use clap::ValueEnum as _;
use shared::api::Mode;
use shared::replay::{Replay, ReplayPass};

use crate::error::ApiError;
use crate::history::{get, params, store, time_range};
use crate::routing::Scorer;
use crate::state::AppState;

/// The range a replay covers unless `from` says otherwise.
const DEFAULT_RANGE_HOURS: i64 = 24;

/// What-if over the stored history.
#[utoipa::path(
    get,
    path = "/api/orchestrator/replay",
    tag = "history",
    params(
        ("threshold" = f64, Query, description = "The Q4 threshold to replay at, 0 to 15", example = 6.5),
        ("from" = Option<String>, Query, description = "Start, as the history takes it (RFC 3339, Unix seconds or ms, `now` or `-DURATION`); default 24 hours before `to`"),
        ("to" = Option<String>, Query, description = "End (exclusive), in the same forms; default now"),
        ("scorer" = Option<String>, Query, description = "`heuristic` or `learned`: score the prompts kept by --keep-prompts again with it instead of replaying the stored scores (only decisions whose prompt was kept count)"),
    ),
    responses(
        (status = 200, description = "How many two-stage decisions of the range would move into or out of Q4 at the threshold, the Q4 share before and after, the token and cost difference (moved decisions priced with the destination tier's mean tokens over the range, as `pricing` says) and the expected quality before and after from the labelled curve", body = Replay),
        (status = 400, description = "A bad or missing threshold, a bad time or scorer, `from` not before `to`, or `scorer` without --keep-prompts", body = crate::error::ErrorBody),
        (status = 404, description = "The server runs with --in-memory: there is no stored history", body = crate::error::ErrorBody),
    )
)]
pub async fn replay(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let pairs = params(&req)?;
    let (from, to) = time_range(&pairs, chrono::Duration::hours(DEFAULT_RANGE_HOURS))?;
    let threshold = match get(&pairs, "threshold") {
        None => {
            return Err(ApiError::BadParameter(
                "threshold: required (the Q4 threshold to replay at, 0 to 15)".into(),
            ));
        }
        Some(raw) => f64::from_str(raw)
            .ok()
            .filter(|t| t.is_finite() && (0.0..=shared::MAX_SCORE).contains(t))
            .ok_or_else(|| {
                ApiError::BadParameter(format!("threshold: {raw:?} is not a number from 0 to 15"))
            })?,
    };
    let scorer = match get(&pairs, "scorer") {
        None => None,
        Some(raw) => Some(Scorer::from_str(raw, false).map_err(|_| {
            ApiError::BadParameter(format!("scorer: {raw:?} is not heuristic or learned"))
        })?),
    };
    if scorer.is_some() && !state.options.keep_prompts {
        return Err(ApiError::BadParameter(
            "scorer: scoring again needs the prompts, kept only with --keep-prompts".into(),
        ));
    }
    let store = store(&state)?;
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    let (pass, without_prompt) = tokio::task::spawn_blocking(move || {
        let mut pass = ReplayPass::new(threshold);
        let mut without_prompt = 0u64;
        store.replay_rows(
            from_ms,
            to_ms,
            scorer.is_some(),
            |tier, mode, score, usage, prompt| {
                if let Some(u) = usage {
                    pass.answered(tier, u);
                }
                if mode != Some(Mode::TwoStage) {
                    return;
                }
                match (scorer, prompt) {
                    (None, _) => pass.decision(tier, score, usage),
                    (Some(s), Some(text)) => pass.decision(tier, s.assess(&text).score, usage),
                    (Some(_), None) => without_prompt += 1,
                }
            },
        )?;
        Ok::<_, rusqlite::Error>((pass, without_prompt))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("replay: {e}")))?;
    let routing = state.service.routing();
    let rfc = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(axum::Json(Replay {
        from: rfc(from),
        to: rfc(to),
        scorer: scorer.map_or("stored", Scorer::name).to_owned(),
        without_prompt,
        ..pass.finish(state.service.prices(), routing.expected_quality.as_ref())
    })
    .into_response())
}
