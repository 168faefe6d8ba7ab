//! A key's meter: its spend in the budget's period and its requests and
//! tokens in the last minute, one slot per second.

use super::*;

/// A key's spend and use, in its period and in the last minute.
#[derive(Debug)]
pub(super) struct Meter {
    pub(super) period_start: i64,
    /// What this instance spent (its ledger).
    pub(super) spent_usd: f64,
    /// What the other instances spent, as last read from Redis.
    pub(super) others_usd: f64,
    /// This instance's ledger as Redis last confirmed it.
    pub(super) confirmed_usd: f64,
    /// Reserved for this instance's calls in flight.
    pub(super) reserved: f64,
    pub(super) requests: u64,
    pub(super) tokens: u64,
    /// Per second of the last minute (`second % 60`): the second, its
    /// requests and its tokens.
    pub(super) slots: [(i64, u64, u64); WINDOW_SECS as usize],
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            period_start: 0,
            spent_usd: 0.0,
            others_usd: 0.0,
            confirmed_usd: 0.0,
            reserved: 0.0,
            requests: 0,
            tokens: 0,
            slots: [(i64::MIN, 0, 0); WINDOW_SECS as usize],
        }
    }
}

impl Meter {
    /// The spend every instance made in the period, as far as this one
    /// knows.
    pub(super) fn total(&self) -> f64 {
        self.spent_usd + self.others_usd
    }

    /// Starts a new period if `now` is past the meter's.
    pub(super) fn roll(&mut self, period: Period, now: DateTime<Utc>) {
        let start = period.start(now).timestamp_millis();
        if start != self.period_start {
            *self = Meter {
                period_start: start,
                slots: self.slots,
                reserved: self.reserved,
                ..Meter::default()
            };
        }
    }

    pub(super) fn slot(&mut self, sec: i64) -> &mut (i64, u64, u64) {
        let slot = &mut self.slots[sec.rem_euclid(WINDOW_SECS) as usize];
        if slot.0 != sec {
            *slot = (sec, 0, 0);
        }
        slot
    }

    /// Requests and tokens of the 60 s up to `sec`.
    pub(super) fn last_minute(&self, sec: i64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|s| s.0 > sec - WINDOW_SECS && s.0 <= sec)
            .fold((0, 0), |(r, t), s| (r + s.1, t + s.2))
    }

    /// Seconds until the oldest second of the window holding `what` (1:
    /// requests, 2: tokens) leaves it.
    pub(super) fn reset_secs(&self, sec: i64, tokens: bool) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.0 > sec - WINDOW_SECS && s.0 <= sec)
            .filter(|s| if tokens { s.2 > 0 } else { s.1 > 0 })
            .map(|s| s.0 + WINDOW_SECS - sec)
            .min()
            .unwrap_or(1)
            .max(1) as u64
    }
}
