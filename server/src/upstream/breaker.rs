//! One upstream's circuit breaker: after `failures` failed calls in a row it
//! opens and refuses calls for `open_for`; then it lets one probe through,
//! which closes it on success and opens it again on failure.
//!
//! Pure state over an injected clock, so its rules are tested without
//! waiting.

use std::time::{Duration, Instant};

use shared::metrics::CircuitState;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open it (0 turns breaking off).
    pub failures: u32,
    /// How long it stays open before a probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// How a call ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream worked (an answer, or a 4xx it chose to give).
    Success,
    /// The upstream failed (timeout, connect error, 5xx, bad reply).
    Failure,
    /// Says nothing about its health (429, a reply too large for us, a
    /// client that went away).
    Neutral,
}

/// A state change worth counting and logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: CircuitState,
    /// After.
    pub to: CircuitState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probing`: the one probe call is under way.
    HalfOpen {
        probing: bool,
    },
}

/// The breaker of one upstream.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: BreakerSettings,
    state: State,
}

/// Permission to make one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// This call is the half-open probe.
    pub probe: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            state: State::Closed { failures: 0 },
        }
    }

    /// Its state at `now` (an open breaker whose cool-down is over reads as
    /// half-open: the next call is its probe).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        match self.state {
            State::Closed { failures } => failures,
            State::Open { .. } | State::HalfOpen { .. } => self.settings.failures,
        }
    }

    /// When an open breaker will let a probe through.
    pub fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether a call may go now; taking the probe's place when half-open.
    /// The second return is the state change this causes, if any.
    pub fn admit(&mut self, now: Instant) -> (Option<Admission>, Option<Transition>) {
        match self.state {
            State::Closed { .. } => (Some(Admission { probe: false }), None),
            State::Open { until } if now < until => (None, None),
            State::Open { .. } => {
                self.state = State::HalfOpen { probing: true };
                (
                    Some(Admission { probe: true }),
                    Some(Transition {
                        from: CircuitState::Open,
                        to: CircuitState::HalfOpen,
                    }),
                )
            }
            State::HalfOpen { probing: true } => (None, None),
            State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                (Some(Admission { probe: true }), None)
            }
        }
    }

    /// Whether a call could go now, without taking a place.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } | State::HalfOpen { probing: false } => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probing: true } => false,
        }
    }

    /// Records how an admitted call ended; returns the state change, if any.
    pub fn record(
        &mut self,
        admission: Admission,
        verdict: Verdict,
        now: Instant,
    ) -> Option<Transition> {
        let before = self.state(now);
        self.state = match (self.state, verdict) {
            // A call admitted before the circuit opened says nothing new.
            (State::Open { .. }, _) => return None,
            (State::HalfOpen { .. }, _) if !admission.probe => return None,
            (_, Verdict::Success) => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, Verdict::Failure) => self.opened(now),
            (State::HalfOpen { .. }, Verdict::Neutral) => State::HalfOpen { probing: false },
            (State::Closed { failures }, Verdict::Failure) => {
                let failures = failures + 1;
                if self.settings.failures > 0 && failures >= self.settings.failures {
                    self.opened(now)
                } else {
                    State::Closed { failures }
                }
            }
            (State::Closed { failures }, Verdict::Neutral) => State::Closed { failures },
        };
        let after = self.state(now);
        (after != before).then_some(Transition {
            from: before,
            to: after,
        })
    }

    fn opened(&self, now: Instant) -> State {
        State::Open {
            until: now + self.settings.open_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(10),
        })
    }

    fn call(b: &mut Breaker, verdict: Verdict, now: Instant) -> Option<Transition> {
        let (admitted, _) = b.admit(now);
        b.record(admitted.expect("admitted"), verdict, now)
    }

    #[test]
    fn opens_after_failures_in_a_row_and_probes_after_the_cool_down() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(call(&mut b, Verdict::Failure, t0), None);
        assert_eq!(call(&mut b, Verdict::Failure, t0), None);
        assert_eq!(b.consecutive_failures(), 2);
        let opened = call(&mut b, Verdict::Failure, t0).unwrap();
        assert_eq!(
            (opened.from, opened.to),
            (CircuitState::Closed, CircuitState::Open)
        );
        assert_eq!(b.state(t0), CircuitState::Open);
        assert_eq!(
            b.admit(t0 + Duration::from_secs(9)).0,
            None,
            "refused while open"
        );
        // Cool-down over: one probe, and nobody else meanwhile.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.state(later), CircuitState::HalfOpen);
        let (probe, change) = b.admit(later);
        assert_eq!(probe, Some(Admission { probe: true }));
        assert_eq!(change.unwrap().to, CircuitState::HalfOpen);
        assert_eq!(b.admit(later).0, None, "only one probe");
        // The probe fails: open again for a full cool-down.
        let reopened = b.record(probe.unwrap(), Verdict::Failure, later).unwrap();
        assert_eq!(reopened.to, CircuitState::Open);
        assert_eq!(b.open_until(), Some(later + Duration::from_secs(10)));
        // Next probe succeeds: closed, count reset.
        let again = later + Duration::from_secs(10);
        let (probe, _) = b.admit(again);
        let closed = b.record(probe.unwrap(), Verdict::Success, again).unwrap();
        assert_eq!(
            (closed.from, closed.to),
            (CircuitState::HalfOpen, CircuitState::Closed)
        );
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[test]
    fn a_success_or_a_neutral_call_breaks_the_run() {
        let t = Instant::now();
        let mut b = breaker();
        call(&mut b, Verdict::Failure, t);
        call(&mut b, Verdict::Failure, t);
        call(&mut b, Verdict::Success, t);
        call(&mut b, Verdict::Failure, t);
        call(&mut b, Verdict::Neutral, t);
        call(&mut b, Verdict::Failure, t);
        assert_eq!(b.state(t), CircuitState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
    }

    #[test]
    fn a_cancelled_probe_lets_the_next_call_probe() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            call(&mut b, Verdict::Failure, t);
        }
        let later = t + Duration::from_secs(11);
        let (probe, _) = b.admit(later);
        assert_eq!(b.record(probe.unwrap(), Verdict::Neutral, later), None);
        assert_eq!(b.admit(later).0, Some(Admission { probe: true }));
    }

    #[test]
    fn calls_admitted_before_it_opened_do_not_move_it() {
        let t = Instant::now();
        let mut b = breaker();
        let early: Vec<_> = (0..4).map(|_| b.admit(t).0.unwrap()).collect();
        for a in &early[..3] {
            b.record(*a, Verdict::Failure, t);
        }
        assert_eq!(b.state(t), CircuitState::Open);
        assert_eq!(b.record(early[3], Verdict::Success, t), None);
        assert_eq!(b.state(t), CircuitState::Open);
    }

    #[test]
    fn zero_failures_never_opens() {
        let t = Instant::now();
        let mut b = Breaker::new(BreakerSettings {
            failures: 0,
            open_for: Duration::from_secs(1),
        });
        for _ in 0..100 {
            call(&mut b, Verdict::Failure, t);
        }
        assert_eq!(b.state(t), CircuitState::Closed);
    }
}
