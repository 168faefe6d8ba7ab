//! Choosing an upstream of a tier's pool: the least loaded whose breaker
//! admits, failing over and retrying with backoff as configured.

use super::*;

impl Upstreams {
    /// Tries `exchange` on the available upstreams of `tier` until one
    /// succeeds or a failure may not be retried; each try counts as a call
    /// (failures are recorded here, the winner's call is handed back open).
    pub(super) async fn failover<'a, T, Fut>(
        &'a self,
        tier: Tier,
        assessor: bool,
        exchange: impl Fn(&'a Member) -> Fut,
    ) -> Result<Won<'a, T>, UpstreamError>
    where
        Fut: Future<Output = Result<T, Failure>>,
    {
        let pool = &self.pools[tier];
        if pool.is_empty() {
            return Err(UpstreamError::NotConfigured(tier));
        }
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<Failure> = None;
        for attempt in 0..=self.settings.retries {
            if let Some(failed) = &last {
                let wait = self.backoff(attempt);
                // A 429 on the only upstream left: wait as it asked, if briefly.
                let wait = match (&failed.retry_after, self.only_left(pool, &tried)) {
                    (Some(after), true) => match retry_after_secs(after) {
                        Some(s) if Duration::from_secs(s) <= MAX_RETRY_WAIT => {
                            wait.max(Duration::from_secs(s))
                        }
                        Some(_) => break,
                        None => wait,
                    },
                    _ => wait,
                };
                tokio::time::sleep(wait).await;
            }
            let chosen = {
                let _one = self
                    .choosing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.pick(pool, &tried).map(|(index, admission)| {
                    let call =
                        self.health
                            .begin(&pool[index].state, admission, attempt > 0, assessor);
                    (index, call)
                })
            };
            let Some((index, call)) = chosen else {
                if last.is_some() {
                    break;
                }
                self.health.short_circuited(tier);
                return Err(self.circuit_open(tier, pool));
            };
            let member = &pool[index];
            if let Some(failed) = &last {
                tracing::warn!(%tier, from = %failed.upstream, to = %member.spec.name, attempt = attempt + 1, reason = failed.outcome.label(), "retrying upstream call");
            }
            let attempts = attempt + 1;
            match exchange(member).await {
                Ok(value) => {
                    return Ok(Won {
                        value,
                        call,
                        member,
                        attempts,
                    });
                }
                Err(failure) => {
                    let ended = Ended {
                        error: Some(failure.message.clone()),
                        ..Ended::default()
                    };
                    call.finish(failure.outcome, ended);
                    let retryable = failure.retryable();
                    tried.push(index);
                    last = Some(Failure {
                        attempts,
                        ..failure
                    });
                    if !retryable {
                        break;
                    }
                }
            }
        }
        Err(UpstreamError::Failed(
            last.expect("at least one call was made"),
        ))
    }

    /// The jittered wait before call `attempt` (1 = the first retry).
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let full = self.settings.backoff * 2u32.pow(attempt.saturating_sub(1).min(4));
        full.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// True when the next pick can only be an upstream already tried.
    pub(super) fn only_left(&self, pool: &[Member], tried: &[usize]) -> bool {
        let now = Instant::now();
        !(0..pool.len()).any(|i| !tried.contains(&i) && pool[i].state.available(now))
    }

    /// The available upstream with the fewest calls in flight, preferring
    /// ones not tried yet for this query; ties go round in turn.
    pub(super) fn pick(
        &self,
        pool: &[Member],
        tried: &[usize],
    ) -> Option<(usize, breaker::Admission)> {
        let now = Instant::now();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..pool.len()).map(|k| (start + k) % pool.len()).collect();
        // Stable: among equals the rotation's order stays.
        order.sort_by_key(|&i| (tried.contains(&i), pool[i].state.in_flight()));
        order.into_iter().find_map(|i| {
            pool[i]
                .state
                .admit(&self.health, now)
                .map(|admission| (i, admission))
        })
    }

    pub(super) fn circuit_open(&self, tier: Tier, pool: &[Member]) -> UpstreamError {
        let now = Instant::now();
        let soonest = pool
            .iter()
            .filter_map(|m| m.state.open_until())
            .min()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        UpstreamError::CircuitOpen {
            tier,
            names: pool.iter().map(|m| m.spec.name.clone()).collect(),
            retry_after_secs: soonest.as_secs_f64().ceil().max(1.0) as u64,
        }
    }
}
