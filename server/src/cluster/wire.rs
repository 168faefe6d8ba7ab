//! How records and rollup rows are written to and read from Redis, and
//! the calls' common timeout.

use super::*;

/// Minute rows kept in Redis for the others to sum (hour rows are kept
/// as long as the store keeps them).
pub const MINUTES_KEPT: i64 = 7 * 24 * 60;

/// `ZADD`s rollup rows, scored by their minute.
pub(super) fn add_rows(pipe: &mut redis::Pipeline, key: &str, rows: &[(i64, Tier, Vec<f64>)]) {
    if rows.is_empty() {
        return;
    }
    let cmd = pipe.cmd("ZADD").arg(key);
    for (minute, tier, values) in rows {
        let mut member = format!("{minute}|{}|", tier.index());
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                member.push(',');
            }
            member.push_str(&v.to_string());
        }
        cmd.arg(*minute).arg(member);
    }
    cmd.ignore();
}

/// A row [`add_rows`] wrote.
pub(super) fn parse_row(member: &str) -> Option<(i64, Tier, Vec<f64>)> {
    let mut parts = member.splitn(3, '|');
    let minute = parts.next()?.parse().ok()?;
    let tier = *Tier::ALL.get(parts.next()?.parse::<usize>().ok()?)?;
    let values: Vec<f64> = parts
        .next()?
        .split(',')
        .map(|v| v.parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect::<Option<_>>()?;
    (values.len() == crate::store::rollup_columns().len()).then_some((minute, tier, values))
}

/// Keeps `r` unless an at least as new record of its instance is held.
pub(super) fn take_record(peers: &mut HashMap<String, Record>, r: Record) -> bool {
    match peers.get(&r.id) {
        Some(held) if !r.supersedes(held) => false,
        _ => {
            peers.insert(r.id.clone(), r);
            true
        }
    }
}

pub(super) fn listed(r: &Record) -> ClusterInstance {
    ClusterInstance {
        id: r.id.clone(),
        address: r.address.clone(),
        started_at: r.started_at.clone(),
        last_heartbeat: rfc3339(
            DateTime::from_timestamp_millis(r.beat_ms).unwrap_or(DateTime::UNIX_EPOCH),
        ),
        active_requests: r.active.iter().sum(),
        total_decisions: r.total(),
        total_processed: r.per_tier,
        state: InstanceState::Live,
        current: false,
    }
}

/// One exchange with Redis, bounded by [`REDIS_TIMEOUT`].
pub async fn exchange<T>(call: impl Future<Output = Result<T, RedisError>>) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())),
    }
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
