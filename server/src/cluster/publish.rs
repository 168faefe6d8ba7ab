//! Publishing this instance to Redis: its record (totals, heartbeat), its
//! decisions from the backlog, its rollups, and all of it again after Redis
//! comes back.

use super::*;

impl Cluster {
    pub(super) fn record(&self, service: &dyn Local, now: DateTime<Utc>) -> Record {
        let instance = service.instance();
        let figures = service.figures();
        Record {
            id: instance.id,
            address: self.settings.address.clone(),
            started_at: rfc3339(instance.started_at),
            beat_ms: now.timestamp_millis(),
            active: figures.active,
            per_tier: figures.per_tier,
            tokens: figures
                .tokens
                .map(|t| [t.prompt, t.completion, t.decisions]),
            baseline: Some([
                figures.baseline.prompt,
                figures.baseline.completion,
                figures.baseline.decisions,
            ]),
            assessor: [
                figures.assessor.prompt,
                figures.assessor.completion,
                figures.assessor.decisions,
            ],
            stopped: false,
            quality: Some(figures.quality),
        }
    }

    pub(super) fn take_batch(&self) -> Vec<(RoutingDecision, f64)> {
        let mut q = lock(&self.queue);
        let n = q.items.len().min(MAX_FLUSH);
        q.items.drain(..n).collect()
    }

    /// Puts a batch that failed back at the front of the backlog, as far as
    /// it has room; the rest is counted as overflowed.
    pub(super) fn requeue(&self, batch: Vec<(RoutingDecision, f64)>) {
        let mut q = lock(&self.queue);
        let room = self.settings.backlog.saturating_sub(q.items.len());
        let dropped = batch.len().saturating_sub(room);
        q.overflowed += dropped as u64;
        for item in batch.into_iter().skip(dropped).rev() {
            q.items.push_front(item);
        }
    }

    /// One send: `batch` as stream entries of at most [`MAX_BATCH`]
    /// decisions (`XADD`), each with the record that counts them, then the
    /// record into the instances hash (`HSET`). The record is serialised
    /// once.
    pub(super) fn add_send(
        &self,
        pipe: &mut redis::Pipeline,
        record: &Record,
        batch: &[(RoutingDecision, f64)],
    ) {
        let json = serde_json::to_string(record).expect("a record serialises");
        for chunk in batch.chunks(MAX_BATCH) {
            let decisions = serde_json::to_string(chunk).expect("decisions serialise");
            pipe.cmd("XADD")
                .arg(&self.keys.decisions)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LEN)
                .arg("*")
                .arg("i")
                .arg(&record.id)
                .arg("r")
                .arg(&json)
                .arg("d")
                .arg(decisions)
                .ignore();
        }
        pipe.cmd("HSET")
            .arg(&self.keys.instances)
            .arg(&record.id)
            .arg(json)
            .ignore();
    }

    pub(super) fn connected(&self) {
        let mut link = lock(&self.link);
        let changed = link.state != RedisState::Connected;
        link.state = RedisState::Connected;
        link.since = None;
        link.error = None;
        link.last_ok = Some(Utc::now());
        drop(link);
        if changed {
            tracing::info!(cluster = %self.settings.name, "redis reachable: cluster view");
            self.bump();
        }
    }

    pub(super) fn unreachable(&self, error: String) {
        let mut link = lock(&self.link);
        let changed = link.state != RedisState::Unreachable;
        if changed {
            link.state = RedisState::Unreachable;
            link.since = Some(Utc::now());
        }
        link.error = Some(error.clone());
        drop(link);
        if changed {
            tracing::warn!(cluster = %self.settings.name, %error, "redis unreachable: local view");
            self.bump();
        }
    }

    pub(super) async fn publish_loop(self: Arc<Self>, service: Arc<dyn Local>) {
        let mut conn = self.publisher.clone();
        let mut next_beat = Instant::now();
        let mut pause = MIN_PAUSE;
        let mut epoch: Option<String> = None;
        while !self.closing.load(Ordering::Acquire) {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(next_beat) => {}
            }
            let began = Instant::now();
            let beat = began >= next_beat;
            let batch = self.take_batch();
            let record = self.record(&*service, Utc::now());
            let mut pipe = redis::pipe();
            self.add_send(&mut pipe, &record, &batch);
            let candidate = format!("{}-{}", record.id, record.beat_ms);
            if beat {
                pipe.cmd("SET")
                    .arg(&self.keys.epoch)
                    .arg(&candidate)
                    .arg("NX")
                    .arg("GET");
                pipe.cmd("HGETALL").arg(&self.keys.instances);
            }
            let reply = exchange(pipe.query_async::<Vec<Value>>(&mut conn)).await;
            match reply {
                Ok(values) => {
                    self.connected();
                    pause = MIN_PAUSE;
                    if beat {
                        next_beat = began + BEAT_EVERY;
                        if let [previous, records] = &values[..] {
                            let previous: Option<String> =
                                redis::from_redis_value_ref(previous).unwrap_or(None);
                            let current = previous.unwrap_or(candidate);
                            self.take_records(records, &record.id);
                            if epoch.as_ref() != Some(&current) {
                                if epoch.is_some() {
                                    tracing::warn!(cluster = %self.settings.name, "redis lost its data: republishing");
                                }
                                match self.republish(&mut conn, &*service).await {
                                    Ok(()) => {
                                        epoch = Some(current);
                                        self.epoch_gen.fetch_add(1, Ordering::AcqRel);
                                    }
                                    Err(e) => self.unreachable(e),
                                }
                            } else if let Some(store) = service.store()
                                && let Err(e) =
                                    self.publish_rollups(store, &record.id, &mut conn).await
                            {
                                self.unreachable(e);
                            }
                        }
                    }
                }
                Err(error) => {
                    self.requeue(batch);
                    self.unreachable(error);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    next_beat = Instant::now();
                    continue;
                }
            }
            // One batch per FLUSH_EVERY at most: under load, batches grow
            // instead of commands multiplying.
            tokio::time::sleep_until(began + FLUSH_EVERY).await;
        }
    }

    /// After Redis lost its data (or on joining): writes back the records
    /// of the instances this one knew (unless already there), its own
    /// buffered decisions and rollups.
    pub(super) async fn republish(
        &self,
        conn: &mut ConnectionManager,
        service: &dyn Local,
    ) -> Result<(), String> {
        let mut pipe = redis::pipe();
        {
            let view = lock(&self.view);
            for r in view.peers.values() {
                let json = serde_json::to_string(r).expect("a record serialises");
                pipe.cmd("HSETNX")
                    .arg(&self.keys.instances)
                    .arg(&r.id)
                    .arg(json)
                    .ignore();
            }
        }
        let record = self.record(service, Utc::now());
        self.add_send(&mut pipe, &record, &service.buffered());
        exchange(pipe.query_async::<()>(conn)).await?;
        if let Some(store) = service.store() {
            self.republish_rollups(store, &record.id, conn).await?;
        }
        Ok(())
    }

    /// The sorted sets of `instance`'s rollup rows: per minute, per hour.
    pub(super) fn rollup_keys(&self, instance: &str) -> [String; 2] {
        [
            self.keys.rollups("rollups", instance),
            self.keys.rollups("rollups-hour", instance),
        ]
    }

    /// Writes the rollup rows of the minutes (and their hours) that changed
    /// since the last call: each period's rows replace the ones published
    /// before (absolute rows: a retry changes nothing).
    pub(super) async fn publish_rollups(
        &self,
        store: &Arc<Store>,
        me: &str,
        conn: &mut ConnectionManager,
    ) -> Result<(), String> {
        let minutes = store.take_dirty();
        if minutes.is_empty() {
            return Ok(());
        }
        let mut hours: Vec<i64> = minutes.iter().map(|m| m.div_euclid(60) * 60).collect();
        hours.dedup();
        let read = {
            let (store, at_minutes, at_hours) = (Arc::clone(store), minutes.clone(), hours.clone());
            tokio::task::spawn_blocking(move || {
                Ok::<_, rusqlite::Error>([
                    store.rollup_rows(false, Periods::At(&at_minutes))?,
                    store.rollup_rows(true, Periods::At(&at_hours))?,
                ])
            })
            .await
        };
        let Ok(Ok(tables)) = read else {
            store.put_dirty(minutes);
            return Ok(());
        };
        let mut pipe = redis::pipe();
        let keys = self.rollup_keys(me);
        for ((key, rows), periods) in keys.iter().zip(&tables).zip([&minutes, &hours]) {
            for p in periods {
                pipe.cmd("ZREMRANGEBYSCORE").arg(key).arg(p).arg(p).ignore();
            }
            add_rows(&mut pipe, key, rows);
        }
        let oldest = shared::history::minute_of(Utc::now().timestamp_millis()) - MINUTES_KEPT;
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&keys[0])
            .arg("-inf")
            .arg(format!("({oldest}"))
            .ignore();
        if let Err(e) = exchange(pipe.query_async::<()>(conn)).await {
            store.put_dirty(minutes);
            return Err(e);
        }
        Ok(())
    }

    /// Writes every rollup row this instance holds (the minute rows of the
    /// last [`MINUTES_KEPT`]), replacing what Redis had of it.
    pub(super) async fn republish_rollups(
        &self,
        store: &Arc<Store>,
        me: &str,
        conn: &mut ConnectionManager,
    ) -> Result<(), String> {
        let oldest = shared::history::minute_of(Utc::now().timestamp_millis()) - MINUTES_KEPT;
        let read = {
            let store = Arc::clone(store);
            tokio::task::spawn_blocking(move || {
                Ok::<_, rusqlite::Error>([
                    store.rollup_rows(false, Periods::Since(oldest))?,
                    store.rollup_rows(true, Periods::Since(i64::MIN))?,
                ])
            })
            .await
        };
        let Ok(Ok(tables)) = read else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        for (key, rows) in self.rollup_keys(me).iter().zip(&tables) {
            pipe.cmd("DEL").arg(key).ignore();
            for chunk in rows.chunks(1_000) {
                add_rows(&mut pipe, key, chunk);
            }
        }
        exchange(pipe.query_async::<()>(conn)).await
    }
}
