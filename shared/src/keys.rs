//! Virtual keys: what `/api/keys` takes and answers, and the pure math of
//! their budgets (UTC calendar periods, brownout, projected exhaustion).

use chrono::{DateTime, Datelike as _, Duration, NaiveDate, TimeZone as _, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::api::Mode;

/// What a secret starts with.
pub const SECRET_PREFIX: &str = "osk-";
/// The Q4 threshold a key reaches at 100 % of its budget under brownout.
pub const BROWNOUT_TOP: f64 = 15.0;
/// Longest key name and team, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest budget, in USD.
pub const MAX_BUDGET_USD: f64 = 1e9;

/// A budget's period: a UTC calendar day, week (from Monday) or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// 00:00 to 24:00 UTC.
    Day,
    /// Monday 00:00 UTC to the next Monday.
    Week,
    /// The 1st 00:00 UTC to the next month's 1st.
    #[default]
    Month,
}

impl Period {
    /// Its name on the wire and in the store.
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The period named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Period::Day, Period::Week, Period::Month]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// When the period holding `now` began.
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let day = now.date_naive();
        let first = match self {
            Period::Day => day,
            Period::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Period::Month => day.with_day(1).unwrap_or(day),
        };
        midnight(first)
    }

    /// When the period holding `now` ends (the next one's start).
    pub fn end(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.start(now);
        match self {
            Period::Day => start + Duration::days(1),
            Period::Week => start + Duration::days(7),
            Period::Month => {
                let d = start.date_naive();
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1).map_or(start + Duration::days(31), midnight)
            }
        }
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// How far into brownout a key is, 0..=1: 0 below the share `from` of its
/// budget, rising linearly to 1 at the whole budget.
pub fn brownout_level(spent_usd: f64, budget_usd: f64, from: f64) -> f64 {
    if budget_usd.is_nan() || budget_usd <= 0.0 {
        return 1.0;
    }
    let share = spent_usd / budget_usd;
    if share.is_nan() || share < from {
        return 0.0;
    }
    if from >= 1.0 {
        return 1.0;
    }
    ((share - from) / (1.0 - from)).clamp(0.0, 1.0)
}

/// The two-stage Q4 threshold of a key at brownout `level`: the configured
/// `base` at 0, [`BROWNOUT_TOP`] at 1, linear in between.
pub fn browned_threshold(base: f64, level: f64) -> f64 {
    if base >= BROWNOUT_TOP {
        return base;
    }
    base + (BROWNOUT_TOP - base) * level.clamp(0.0, 1.0)
}

/// When the budget runs out at the rate spent so far in the period (from
/// `start` to `now`), if that is before the period `end`s.
pub fn projected_exhaustion(
    spent_usd: f64,
    budget_usd: f64,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let elapsed_ms = (now - start).num_milliseconds();
    if spent_usd.is_nan() || spent_usd <= 0.0 || elapsed_ms <= 0 || !budget_usd.is_finite() {
        return None;
    }
    if spent_usd >= budget_usd {
        return Some(now);
    }
    let at_ms = (budget_usd / spent_usd) * elapsed_ms as f64;
    let at = start + Duration::milliseconds(at_ms.min(1e15) as i64);
    (at < end).then_some(at)
}

/// `POST /api/keys`: a new key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    /// What the key is for (1 to 100 characters).
    pub name: String,
    /// The team it spends for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Most USD it may spend per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// The budget's period (default `month`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Most requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Most tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// The modes it may use (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modes: Option<Vec<Mode>>,
    /// When it stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `PATCH /api/keys/{id}`: each field present is set (`null` clears it);
/// each field absent stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyPatch {
    /// A new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A new team, or `null` for none.
    #[serde(
        default,
        deserialize_with = "some",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub team: Option<Option<String>>,
    /// A new budget, or `null` for none.
    #[serde(
        default,
        deserialize_with = "some",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub budget_usd: Option<Option<f64>>,
    /// A new period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// A new requests-per-minute limit, or `null` for none.
    #[serde(
        default,
        deserialize_with = "some",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>))]
    pub rpm: Option<Option<u32>>,
    /// A new tokens-per-minute limit, or `null` for none.
    #[serde(
        default,
        deserialize_with = "some",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub tpm: Option<Option<u64>>,
    /// New modes, or `null` for all.
    #[serde(
        default,
        deserialize_with = "some",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Mode>>))]
    pub modes: Option<Option<Vec<Mode>>>,
    /// A new expiry, or `null` for never.
    #[serde(
        default,
        deserialize_with = "some",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub expires_at: Option<Option<String>>,
}

/// A field that is present (even as `null`) is `Some`.
fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A key as `/api/keys` shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// Its id (`key-` and 16 hex digits).
    pub id: String,
    /// The secret's first characters (`osk-` and 4 more), to tell keys apart.
    pub prefix: String,
    /// What it is for.
    pub name: String,
    /// The team it spends for.
    #[serde(default)]
    pub team: Option<String>,
    /// Most USD per period.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// The budget's period.
    pub period: Period,
    /// Most requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Most tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// The modes it may use (absent: all).
    #[serde(default)]
    pub modes: Option<Vec<Mode>>,
    /// When it stops working.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// When it was made.
    pub created_at: String,
    /// When it was revoked.
    #[serde(default)]
    pub revoked_at: Option<String>,
    /// What it spent and used.
    pub usage: KeyUsage,
}

/// What a key spent in its current period and used in the last minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    /// When the current period began (RFC 3339).
    pub period_start: String,
    /// When it ends and the budget resets.
    pub period_end: String,
    /// USD spent in it.
    pub spent_usd: f64,
    /// Requests in it.
    pub requests: u64,
    /// Tokens in it.
    pub tokens: u64,
    /// Budget left (absent without a budget).
    #[serde(default)]
    pub remaining_usd: Option<f64>,
    /// Brownout level, 0..=1 (0: none).
    pub brownout: f64,
    /// Requests in the last 60 s.
    pub requests_last_minute: u64,
    /// Tokens in the last 60 s.
    pub tokens_last_minute: u64,
    /// When the budget runs out at this period's rate so far, if before
    /// the period ends.
    #[serde(default)]
    pub projected_exhaustion: Option<String>,
}

/// `POST /api/keys`'s answer: the key, and its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The key's id (as `key.id`).
    pub id: String,
    /// The secret: `osk-` and 32 random bytes in base64url. Kept nowhere.
    pub secret: String,
    /// The key.
    pub key: KeyView,
}

/// `GET /api/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeyList {
    /// Every key, revoked ones included, newest first.
    pub keys: Vec<KeyView>,
}

/// Keys the status lists by name before the rest become `other`.
pub const KEYS_IN_STATUS: usize = 20;
/// The `key` of the line summing every key past the top ones.
pub const OTHER_KEYS: &str = "other";

/// One line of the status's `keys`: a key's spend this period (or, as
/// `key: "other"`, the sum of every key past the top ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct KeySpend {
    /// The key's id, or `other`.
    pub key: String,
    /// Its name (absent for `other`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// USD spent in its current period.
    pub spent_usd: f64,
    /// Requests in it.
    pub requests: u64,
    /// Tokens in it.
    pub tokens: u64,
    /// Its budget (absent: none; `other`: the sum of those set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Its brownout level, 0..=1 (`other`: the highest).
    #[serde(default)]
    pub brownout: f64,
}

/// How the status's budgets are held (`budgetLedger`, with keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BudgetLedger {
    /// Shared by every instance through Redis (`--redis`); else each
    /// instance holds its own.
    pub shared: bool,
    /// Shared: whether Redis answers now (while it does not, spend is this
    /// instance's view, like the cluster's local view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// Shared: `--budget-fail`, `open` or `closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_policy: Option<String>,
    /// USD this instance's ledger holds that Redis does not yet (goal: 0;
    /// 0 when not shared).
    pub accounting_drift: f64,
}

/// The top `n` keys by spend (then requests, then id), and one `other`
/// line summing the rest when there are more: a bounded list however many
/// keys there are.
pub fn top_keys(mut all: Vec<KeySpend>, n: usize) -> Vec<KeySpend> {
    all.sort_by(|a, b| {
        b.spent_usd
            .total_cmp(&a.spent_usd)
            .then(b.requests.cmp(&a.requests))
            .then_with(|| a.key.cmp(&b.key))
    });
    if all.len() <= n {
        return all;
    }
    let rest = all.split_off(n);
    let mut other = KeySpend {
        key: OTHER_KEYS.to_owned(),
        name: None,
        team: None,
        spent_usd: 0.0,
        requests: 0,
        tokens: 0,
        budget_usd: None,
        brownout: 0.0,
    };
    for k in rest {
        other.spent_usd += k.spent_usd;
        other.requests += k.requests;
        other.tokens += k.tokens;
        if let Some(b) = k.budget_usd {
            *other.budget_usd.get_or_insert(0.0) += b;
        }
        other.brownout = other.brownout.max(k.brownout);
    }
    all.push(other);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn periods_are_utc_calendar_periods() {
        let now = t("2026-12-31T23:59:59Z"); // a Thursday
        assert_eq!(Period::Day.start(now), t("2026-12-31T00:00:00Z"));
        assert_eq!(Period::Day.end(now), t("2027-01-01T00:00:00Z"));
        assert_eq!(Period::Week.start(now), t("2026-12-28T00:00:00Z"));
        assert_eq!(Period::Week.end(now), t("2027-01-04T00:00:00Z"));
        assert_eq!(Period::Month.start(now), t("2026-12-01T00:00:00Z"));
        assert_eq!(Period::Month.end(now), t("2027-01-01T00:00:00Z"));
        let feb = t("2028-02-29T12:00:00Z");
        assert_eq!(Period::Month.end(feb), t("2028-03-01T00:00:00Z"));
        assert_eq!(
            Period::Week.start(t("2026-12-07T00:00:00Z")),
            t("2026-12-07T00:00:00Z")
        );
    }

    #[test]
    fn brownout_rises_linearly_from_the_share() {
        assert_eq!(brownout_level(0.5, 1.0, 0.8), 0.0);
        assert_eq!(brownout_level(0.8, 1.0, 0.8), 0.0);
        assert!((brownout_level(0.9, 1.0, 0.8) - 0.5).abs() < 1e-12);
        assert_eq!(brownout_level(1.2, 1.0, 0.8), 1.0);
        assert_eq!(brownout_level(0.0, 0.0, 0.8), 1.0);
        assert_eq!(browned_threshold(7.0, 0.0), 7.0);
        assert_eq!(browned_threshold(7.0, 0.5), 11.0);
        assert_eq!(browned_threshold(7.0, 1.0), 15.0);
    }

    #[test]
    fn exhaustion_is_projected_at_the_rate_so_far() {
        let start = t("2026-12-01T00:00:00Z");
        let end = t("2027-01-01T00:00:00Z");
        let now = t("2026-12-06T00:00:00Z");
        assert_eq!(
            projected_exhaustion(0.5, 1.0, start, now, end),
            Some(t("2026-12-11T00:00:00Z"))
        );
        assert_eq!(projected_exhaustion(0.1, 1.0, start, now, end), None);
        assert_eq!(projected_exhaustion(0.0, 1.0, start, now, end), None);
    }

    #[test]
    fn the_status_lists_the_top_keys_then_other() {
        let k = |key: &str, spent: f64, budget: Option<f64>| KeySpend {
            key: key.into(),
            name: Some(key.into()),
            team: None,
            spent_usd: spent,
            requests: 1,
            tokens: 10,
            budget_usd: budget,
            brownout: spent / 10.0,
        };
        let all = vec![
            k("a", 1.0, None),
            k("b", 3.0, Some(5.0)),
            k("c", 2.0, Some(1.0)),
            k("d", 0.5, Some(2.0)),
        ];
        let top = top_keys(all.clone(), 2);
        assert_eq!(
            top.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["b", "c", "other"]
        );
        assert_eq!(top[2].spent_usd, 1.5);
        assert_eq!(top[2].requests, 2);
        assert_eq!(top[2].budget_usd, Some(2.0));
        assert_eq!(top[2].brownout, 0.1);
        assert_eq!(top_keys(all, 4).len(), 4, "no other line when all fit");
    }

    #[test]
    fn a_patch_tells_null_from_absent() {
        let p: KeyPatch = serde_json::from_str(r#"{"budgetUsd": null, "rpm": 5}"#).unwrap();
        assert_eq!(p.budget_usd, Some(None));
        assert_eq!(p.rpm, Some(Some(5)));
        assert_eq!(p.tpm, None);
        assert!(serde_json::from_str::<KeyPatch>(r#"{"secret": "x"}"#).is_err());
    }
}
