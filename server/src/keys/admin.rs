//! The admin API's operations on keys (list, create, patch, revoke) and
//! the checks of what it is given.

use super::*;

impl Keys {
    /// Every key as the admin API shows it, newest first.
    pub fn list(&self) -> Vec<KeyView> {
        let registry = self.registry.load();
        let mut all: Vec<&Arc<Entry>> = registry.by_id.values().collect();
        all.sort_by(|a, b| {
            (b.record.created_at, &a.record.id).cmp(&(a.record.created_at, &b.record.id))
        });
        let now = Utc::now();
        all.into_iter().map(|e| self.view(e, now)).collect()
    }

    /// Key `id` as the admin API shows it.
    pub fn get(&self, id: &str) -> Option<KeyView> {
        let entry = self.registry.load().by_id.get(id).cloned()?;
        Some(self.view(&entry, Utc::now()))
    }

    pub(super) fn view(&self, e: &Entry, now: DateTime<Utc>) -> KeyView {
        let r = &e.record;
        let m = e.meter_at(now);
        let (requests_last_minute, tokens_last_minute) = m.last_minute(now.timestamp());
        let start = r.period.start(now);
        let end = r.period.end(now);
        let usage = KeyUsage {
            period_start: rfc3339(start),
            period_end: rfc3339(end),
            spent_usd: m.total(),
            requests: m.requests,
            tokens: m.tokens,
            remaining_usd: r.budget_usd.map(|b| (b - m.total()).max(0.0)),
            brownout: self.brownout_of(r, m.total()),
            requests_last_minute,
            tokens_last_minute,
            projected_exhaustion: r
                .budget_usd
                .and_then(|b| wire::projected_exhaustion(m.total(), b, start, now, end))
                .map(rfc3339),
        };
        KeyView {
            id: r.id.clone(),
            prefix: r.prefix.clone(),
            name: r.name.clone(),
            team: r.team.clone(),
            budget_usd: r.budget_usd,
            period: r.period,
            rpm: r.rpm,
            tpm: r.tpm,
            modes: r.modes.clone(),
            expires_at: r.expires_at.map(ms_rfc3339),
            created_at: ms_rfc3339(r.created_at),
            revoked_at: r.revoked_at.map(ms_rfc3339),
            usage,
        }
    }

    /// Makes a key; its secret is in the answer only.
    pub fn create(&self, new: NewKey) -> Result<wire::CreatedKey, KeyError> {
        let secret = new_secret().map_err(|e| KeyError::Store(e.to_string()))?;
        let record = record_of(new, &secret)?;
        let id = record.id.clone();
        self.write(record, |conn, r| store::insert_key(conn, r).map(|()| true))?;
        let key = self.get(&id).ok_or(KeyError::NotFound(id))?;
        Ok(wire::CreatedKey {
            id: key.id.clone(),
            secret,
            key,
        })
    }

    /// Changes key `id`'s settings.
    pub fn patch(&self, id: &str, patch: KeyPatch) -> Result<KeyView, KeyError> {
        let entry = self.registry.load().by_id.get(id).cloned();
        let entry = entry.ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        let record = patched(&entry.record, patch)?;
        self.write(record, store::update_key)?;
        self.get(id)
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))
    }

    /// Revokes key `id` at once.
    pub fn revoke(&self, id: &str) -> Result<KeyView, KeyError> {
        let entry = self.registry.load().by_id.get(id).cloned();
        let entry = entry.ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        let mut record = entry.record.clone();
        if record.revoked_at.is_none() {
            record.revoked_at = Some(Utc::now().timestamp_millis());
            self.write(record, store::update_key)?;
        }
        self.get(id)
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))
    }

    /// Stores `record` with `f` (with a store) and puts it in the registry.
    pub(super) fn write(
        &self,
        record: KeyRecord,
        f: impl FnOnce(&mut rusqlite::Connection, &KeyRecord) -> rusqlite::Result<bool>,
    ) -> Result<(), KeyError> {
        match &self.store {
            Some(store) => {
                let found = store
                    .keys_write(|conn| f(conn, &record))
                    .map_err(|e| KeyError::Store(e.to_string()))?;
                if !found {
                    return Err(KeyError::NotFound(record.id));
                }
                self.reload()?;
                // Published from the registry: after the reload.
                if let Some(ledger) = &self.ledger {
                    ledger.changed(&record.id);
                }
                Ok(())
            }
            None => {
                let id = record.id.clone();
                self.put(record)?;
                if let Some(ledger) = &self.ledger {
                    ledger.changed(&id);
                }
                Ok(())
            }
        }
    }

    /// Puts `record` in the registry (in memory only), keeping its meter.
    pub(super) fn put(&self, record: KeyRecord) -> Result<(), KeyError> {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.registry.load();
        let meter = old
            .by_id
            .get(&record.id)
            .map_or_else(Arc::default, |e| Arc::clone(&e.meter));
        let mut registry = Registry::default();
        for e in old.by_id.values().filter(|e| e.record.id != record.id) {
            registry.insert(Arc::clone(e));
        }
        registry.insert(Arc::new(Entry { record, meter }));
        self.registry.store(Arc::new(registry));
        self.changes.bump();
        Ok(())
    }
}

fn check_name(what: &str, name: &str) -> Result<String, KeyError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > wire::MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(KeyError::Invalid(format!(
            "{what}: 1 to {} characters, no control characters",
            wire::MAX_NAME_CHARS
        )));
    }
    Ok(name.to_owned())
}

fn check_budget(b: Option<f64>) -> Result<Option<f64>, KeyError> {
    match b {
        Some(b) if !(b.is_finite() && (0.0..=wire::MAX_BUDGET_USD).contains(&b)) => {
            Err(KeyError::Invalid(format!(
                "budgetUsd: a number in 0..={}",
                wire::MAX_BUDGET_USD
            )))
        }
        _ => Ok(b.map(|b| b + 0.0)),
    }
}

fn check_limit<T: Copy + PartialEq + Default>(
    what: &str,
    n: Option<T>,
) -> Result<Option<T>, KeyError> {
    match n {
        Some(n) if n == T::default() => Err(KeyError::Invalid(format!("{what}: at least 1"))),
        _ => Ok(n),
    }
}

fn check_expiry(raw: Option<&str>) -> Result<Option<i64>, KeyError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                KeyError::Invalid(format!("expiresAt: {raw:?} is not an RFC 3339 time ({e})"))
            })
    })
    .transpose()
}

fn check_modes(modes: Option<Vec<Mode>>) -> Result<Option<Vec<Mode>>, KeyError> {
    match modes {
        Some(m) if m.is_empty() => Err(KeyError::Invalid(
            "modes: at least one (leave it out for all)".into(),
        )),
        other => Ok(other),
    }
}

pub(super) fn record_of(new: NewKey, secret: &str) -> Result<KeyRecord, KeyError> {
    Ok(KeyRecord {
        id: new_id().map_err(|e| KeyError::Store(e.to_string()))?,
        hash: hash(secret),
        prefix: secret.chars().take(wire::SECRET_PREFIX.len() + 4).collect(),
        name: check_name("name", &new.name)?,
        team: new
            .team
            .as_deref()
            .map(|t| check_name("team", t))
            .transpose()?,
        budget_usd: check_budget(new.budget_usd)?,
        period: new.period.unwrap_or_default(),
        rpm: check_limit("rpm", new.rpm)?,
        tpm: check_limit("tpm", new.tpm)?,
        modes: check_modes(new.modes)?,
        expires_at: check_expiry(new.expires_at.as_deref())?,
        created_at: Utc::now().timestamp_millis(),
        revoked_at: None,
    })
}

fn patched(old: &KeyRecord, p: KeyPatch) -> Result<KeyRecord, KeyError> {
    let mut r = old.clone();
    if let Some(name) = p.name {
        r.name = check_name("name", &name)?;
    }
    if let Some(team) = p.team {
        r.team = team.as_deref().map(|t| check_name("team", t)).transpose()?;
    }
    if let Some(b) = p.budget_usd {
        r.budget_usd = check_budget(b)?;
    }
    if let Some(period) = p.period {
        r.period = period;
    }
    if let Some(rpm) = p.rpm {
        r.rpm = check_limit("rpm", rpm)?;
    }
    if let Some(tpm) = p.tpm {
        r.tpm = check_limit("tpm", tpm)?;
    }
    if let Some(modes) = p.modes {
        r.modes = check_modes(modes)?;
    }
    if let Some(at) = p.expires_at {
        r.expires_at = check_expiry(at.as_deref())?;
    }
    Ok(r)
}
