//! Admission and charging: a request of a key is admitted (budget,
//! requests and tokens per minute, modes, brownout) before anything is
//! recorded, and its call charged to the key once answered.

use super::*;

impl Keys {
    /// Admits one request of `entry` in `mode` now, reserving `est_usd` of
    /// its budget until the grant is dropped, or says why not. Its rates are
    /// this instance's; its budget is every instance's with `--redis`. An
    /// admitted request counts toward its requests per minute.
    pub async fn admit(
        &self,
        entry: &Arc<Entry>,
        mode: Mode,
        est_usd: f64,
    ) -> Result<Grant, Box<KeyRefusal>> {
        let r = &entry.record;
        if let Some(modes) = &r.modes
            && !modes.contains(&mode)
        {
            return Err(Box::new(KeyRefusal::mode(mode.name())));
        }
        // The rates first, with the request counted in the window at once
        // (so that requests at the same moment cannot all pass); taken back
        // if the budget refuses it.
        let now = Utc::now();
        let sec = now.timestamp();
        let mut headers = HeaderMap::new();
        {
            let mut m = entry.meter_at(now);
            let (requests, tokens) = m.last_minute(sec);
            let mut refusal = None;
            if let Some(rpm) = r.rpm {
                let reset = m.reset_secs(sec, false);
                rate_headers(&mut headers, "requests", rpm.into(), requests, reset);
                if requests >= u64::from(rpm) {
                    refusal = Some(KeyRefusal::new(
                        Limit::Requests,
                        format!(
                            "Rate limit reached for key {} on requests per min (RPM): Limit {rpm}, Used {requests}, Requested 1. Please try again in {reset}s.",
                            r.id
                        ),
                        reset,
                    ));
                }
            }
            if let Some(tpm) = r.tpm {
                let reset = m.reset_secs(sec, true);
                rate_headers(&mut headers, "tokens", tpm, tokens, reset);
                if refusal.is_none() && tokens >= tpm {
                    refusal = Some(KeyRefusal::new(
                        Limit::Tokens,
                        format!(
                            "Rate limit reached for key {} on tokens per min (TPM): Limit {tpm}, Used {tokens}. Please try again in {reset}s.",
                            r.id
                        ),
                        reset,
                    ));
                }
            }
            if let Some(mut refusal) = refusal {
                refusal.headers = headers;
                return Err(Box::new(refusal));
            }
            m.slot(sec).1 += 1;
            if let Some(rpm) = r.rpm {
                headers.insert(
                    HeaderName::from_static("x-ratelimit-remaining-requests"),
                    HeaderValue::from(u64::from(rpm).saturating_sub(requests + 1)),
                );
                let reset = m.reset_secs(sec, false);
                headers.insert(
                    HeaderName::from_static("x-ratelimit-reset-requests"),
                    HeaderValue::from_str(&format!("{reset}s")).expect("a duration"),
                );
            }
        }
        let (spent, reservation) = match r.budget_usd {
            None => (0.0, None),
            Some(budget) => match self.reserve(entry, budget, est_usd).await {
                Ok(admitted) => admitted,
                Err(mut refusal) => {
                    let mut m = entry.meter();
                    let slot = m.slot(sec);
                    slot.1 = slot.1.saturating_sub(1);
                    refusal.headers.extend(headers);
                    return Err(refusal);
                }
            },
        };
        let brownout = self.brownout_of(r, spent);
        if let Some(budget) = r.budget_usd {
            budget_headers(
                &mut headers,
                budget,
                spent,
                self.policy.brownout.map(|_| brownout),
            );
        }
        let period_start = {
            let mut m = entry.meter();
            m.requests += 1;
            m.period_start
        };
        if let Some(store) = &self.store {
            // The count of requests is not waited for: a lost one costs
            // nothing (the spend is what a budget holds).
            let _ = store.add_spend(Spend {
                key_id: r.id.clone(),
                period_start,
                requests: 1,
                minute: shared::history::minute_of(Utc::now().timestamp_millis()),
                ..Spend::default()
            });
        }
        Ok(Grant {
            key: (r.id.clone(), r.team.clone()),
            brownout,
            force: self.policy.brownout_force,
            headers,
            _reservation: reservation,
        })
    }

    /// Admits a request by `entry`'s budget: refused once it is spent,
    /// waiting (at most [`ledger::WAIT_MAX`]) while reservations in flight
    /// could take the spend past it, else admitted with `est` reserved.
    /// The spend before it, and its reservation.
    async fn reserve(
        &self,
        entry: &Arc<Entry>,
        budget: f64,
        est: f64,
    ) -> Result<(f64, Option<Reservation>), Box<KeyRefusal>> {
        let r = &entry.record;
        let waited = std::time::Instant::now();
        loop {
            let now = Utc::now();
            let (period_start, period_end) = (
                r.period.start(now).timestamp_millis(),
                r.period.end(now).timestamp_millis(),
            );
            let shared = self.ledger.as_ref().filter(|l| l.is_up());
            let outcome = match (shared, &self.ledger) {
                (Some(ledger), _) => {
                    let epoch = ledger.epoch();
                    let own = {
                        let m = entry.meter_at(now);
                        m.spent_usd
                    };
                    match ledger
                        .admit(&r.id, period_start, period_end, budget, est, own)
                        .await
                    {
                        Ok(ledger::Admission::Admitted { spent, .. }) => {
                            let mut m = entry.meter_at(now);
                            let shared = Some((Arc::clone(ledger), epoch));
                            let held = Reservation::hold(entry, &mut m, est, period_start, shared);
                            return Ok((spent, Some(held)));
                        }
                        Ok(other) => other,
                        // Unreachable now: decided by the policy below.
                        Err(_) => continue,
                    }
                }
                (None, Some(ledger)) if !ledger.fails_open() => {
                    return Err(Box::new(KeyRefusal::new(
                        Limit::Unavailable,
                        format!(
                            "key {} has a budget and the shared budget ledger (Redis) is unreachable; this server refuses such keys until it is back (--budget-fail closed)",
                            r.id
                        ),
                        1,
                    )));
                }
                // This instance's view: its own spend and the others' as
                // last read.
                _ => {
                    let mut m = entry.meter_at(now);
                    let spent = m.total();
                    if spent >= budget {
                        ledger::Admission::Refused { spent }
                    } else if m.reserved > 1e-9 && spent + m.reserved + est > budget {
                        ledger::Admission::Wait
                    } else {
                        let start = m.period_start;
                        let held = Reservation::hold(entry, &mut m, est, start, None);
                        return Ok((spent, Some(held)));
                    }
                }
            };
            match outcome {
                ledger::Admission::Refused { spent } => {
                    let reset = (r.period.end(now) - now).num_seconds().max(1) as u64;
                    let mut refusal = KeyRefusal::new(
                        Limit::Budget,
                        format!(
                            "key {} has spent its budget of ${budget} this {} (${spent:.6}); it resets at {}",
                            r.id,
                            r.period.name(),
                            rfc3339(r.period.end(now))
                        ),
                        reset,
                    );
                    budget_headers(
                        &mut refusal.headers,
                        budget,
                        spent,
                        self.policy.brownout.map(|_| self.brownout_of(r, spent)),
                    );
                    return Err(Box::new(refusal));
                }
                ledger::Admission::Wait if waited.elapsed() < ledger::WAIT_MAX => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Waited long enough (a reservation of an instance that
                // died): the spend is under the budget, so it is admitted.
                _ => {
                    let spent = entry.meter().total();
                    return Ok((spent, None));
                }
            }
        }
    }

    /// Charges key `id` for a call of `tier` that took `usage`; with a
    /// store, what resolves once the charge is committed (await it before
    /// the answer is acknowledged, so a kill -9 loses no answered spend).
    pub fn charge(&self, id: &str, tier: Tier, usage: Usage) -> Option<store::Committing> {
        let entry = self.registry.load().by_id.get(id).cloned()?;
        let usd = self.policy.prices[tier].map_or(0.0, |p| {
            p.cost(usage.prompt_tokens, usage.completion_tokens)
        });
        let tokens = usage.prompt_tokens + usage.completion_tokens;
        let now = Utc::now();
        let mut m = entry.meter_at(now);
        m.spent_usd += usd;
        m.tokens += tokens;
        m.slot(now.timestamp()).2 += tokens;
        let period_start = m.period_start;
        drop(m);
        if let Some(ledger) = &self.ledger {
            ledger.charged();
        }
        self.store.as_ref().map(|store| {
            store.add_spend(Spend {
                key_id: id.to_owned(),
                period_start,
                usd,
                tokens,
                requests: 0,
                minute: shared::history::minute_of(now.timestamp_millis()),
            })
        })
    }
}

/// `X-Router-Budget-Remaining-Usd` (left before the request) and, with
/// `--brownout`, `X-Router-Brownout`.
fn budget_headers(headers: &mut HeaderMap, budget: f64, spent: f64, brownout: Option<f64>) {
    let left = (budget - spent).max(0.0);
    headers.insert(
        HeaderName::from_static(shared::wire::header::BUDGET_REMAINING),
        HeaderValue::from_str(&format!("{left:.6}")).expect("a number"),
    );
    if let Some(level) = brownout {
        headers.insert(
            HeaderName::from_static(shared::wire::header::BROWNOUT),
            HeaderValue::from_str(&format!("{level:.2}")).expect("a number"),
        );
    }
}

fn rate_headers(headers: &mut HeaderMap, what: &str, limit: u64, used: u64, reset: u64) {
    let name = |s: String| HeaderName::from_bytes(s.as_bytes()).expect("a header name");
    headers.insert(
        name(format!("x-ratelimit-limit-{what}")),
        HeaderValue::from(limit),
    );
    headers.insert(
        name(format!("x-ratelimit-remaining-{what}")),
        HeaderValue::from(limit.saturating_sub(used)),
    );
    headers.insert(
        name(format!("x-ratelimit-reset-{what}")),
        HeaderValue::from_str(&format!("{reset}s")).expect("a duration"),
    );
}
