//! `GET /api/orchestrator/calibrate`: the routing curve over the buffered
//! decisions, and the threshold a Q4 share asks for.

use super::*;

/// `GET /api/orchestrator/calibrate` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalibrateResponse {
    /// The Q4 share asked for (`q4_share`), 0..=1; absent when not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.2)]
    pub asked_q4_share: Option<f64>,
    /// The threshold whose Q4 share is closest to the one asked for (of
    /// equally close ones the highest); absent when not asked or when no
    /// decision is buffered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Where the decisions come from: `buffer` (the buffered decisions).
    #[schema(example = "buffer")]
    pub source: &'static str,
    /// How many decisions were looked at.
    pub decisions: usize,
    /// How many of them a threshold could move (two-stage, or reported on
    /// Q3/Q4 without a mode); simple-mode and Q2 decisions stay where they
    /// went.
    pub score_routed: usize,
    /// The threshold this server routes by (`--q4-threshold`).
    #[schema(example = 7.0)]
    pub current_threshold: f64,
    /// The Q4 share at the current threshold, 0..=1.
    pub current_q4_share: f64,
    /// The Q4 share at every threshold 0, 0.5, ... 15 (31 points), with
    /// the quality gap each is expected to recover on the labelled data.
    pub curve: Vec<CurvePoint>,
}

/// The parameters of the calibrate endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameter; parsing is by hand for precise errors
pub(super) struct CalibrateParams {
    /// The share of decisions (0..=1) to send to Q4.
    #[param(minimum = 0.0, maximum = 1.0, example = 0.2)]
    pub(super) q4_share: Option<f64>,
}

/// Which Q4 threshold would have sent a given share of the buffered
/// decisions to Q4, and the share every threshold would give.
#[utoipa::path(
    get,
    path = "/api/orchestrator/calibrate",
    tag = "status",
    params(CalibrateParams),
    responses(
        (status = 200, description = "The calibration and the curve", body = CalibrateResponse,
         example = json!({"askedQ4Share": 0.2, "calibration": {"threshold": 6.25, "q4Share": 0.2, "q4Decisions": 20},
            "source": "buffer", "decisions": 100, "scoreRouted": 80, "currentThreshold": 7.0, "currentQ4Share": 0.15,
            "curve": [{"threshold": 0.0, "q4Share": 0.8}, {"threshold": 0.5, "q4Share": 0.78}]})),
        (status = 400, description = "Bad `q4_share`", body = ErrorBody,
         example = json!({"error": "q4_share: must be a number in 0..=1, got \"2\""})),
    )
)]
pub async fn calibrate(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let asked = parse_share(req.uri().query())?;
    let population = state.service.population();
    let current = state.service.q4_threshold();
    let mut body = CalibrateResponse {
        asked_q4_share: asked,
        calibration: asked.and_then(|q| population.calibrate(q)),
        source: "buffer",
        decisions: population.len(),
        score_routed: population.score_routed(),
        current_threshold: current,
        current_q4_share: population
            .what_if(current, &shared::PerTier([None; 3]))
            .q4_share(),
        curve: population.curve(),
    };
    if let Some(eq) = &state.service.routing().expected_quality {
        for point in &mut body.curve {
            point.expected_gap_recovered = eq
                .curve
                .iter()
                .find(|q| q.threshold == point.threshold)
                .map(|q| q.gap_recovered);
        }
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// `q4_share`: absent, or a number in 0..=1 given once.
pub(super) fn parse_share(raw: Option<&str>) -> Result<Option<f64>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::BadParameter(format!("query string: {e}")))?;
    let mut values = pairs
        .iter()
        .filter(|(k, _)| k == "q4_share")
        .map(|(_, v)| v);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadParameter(
            "q4_share: given more than once".into(),
        ));
    }
    match value.trim().parse::<f64>() {
        Ok(q) if q.is_finite() && (0.0..=1.0).contains(&q) => Ok(Some(q + 0.0)),
        _ => Err(ApiError::BadParameter(format!(
            "q4_share: must be a number in 0..=1, got {value:?}"
        ))),
    }
}
