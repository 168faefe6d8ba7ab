//! Reading the others from Redis: their records, their decisions from the
//! stream, and their rollups for the history.

use super::*;

impl Cluster {
    /// The other instances' rollup rows of the minutes `first..end`, summed
    /// per `step` minutes and tier, as [`Store::rollups`] gives this
    /// instance's; and the instances they come from. Fails while Redis is
    /// unreachable (the history then covers this instance only).
    pub async fn peer_rollups(
        &self,
        first: i64,
        end: i64,
        step: i64,
    ) -> Result<(Vec<(i64, Tier, Vec<f64>)>, Vec<String>), String> {
        if !self.is_cluster_view() {
            return Err("redis unreachable".into());
        }
        let mut ids: Vec<String> = lock(&self.view).peers.keys().cloned().collect();
        ids.sort();
        let hourly = step % 60 == 0 && first % 60 == 0 && end % 60 == 0;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(&self.rollup_keys(id)[usize::from(hourly)])
                .arg(first)
                .arg(format!("({end}"));
        }
        let mut conn = self.publisher.clone();
        let replies: Vec<Vec<String>> = exchange(pipe.query_async(&mut conn)).await?;
        let mut out = Vec::new();
        for member in replies.iter().flatten() {
            if let Some((minute, tier, values)) = parse_row(member) {
                out.push(((minute - first).div_euclid(step), tier, values));
            }
        }
        Ok((out, ids))
    }

    /// Takes the records of `HGETALL instances` (all but `me`).
    pub(super) fn take_records(&self, records: &Value, me: &str) {
        let Ok(map) = redis::from_redis_value_ref::<HashMap<String, String>>(records) else {
            return;
        };
        let mut view = lock(&self.view);
        let mut changed = false;
        for (id, json) in map {
            if id == me {
                continue;
            }
            if let Ok(r) = serde_json::from_str::<Record>(&json) {
                changed |= take_record(&mut view.peers, r);
            }
        }
        drop(view);
        if changed {
            self.bump();
        }
    }

    pub(super) async fn read_loop(self: Arc<Self>, service: Arc<dyn Local>) {
        let me = service.instance().id;
        let mut conn = self.reader.clone();
        let mut seen_gen = 0;
        let mut last_id = "0-0".to_owned();
        while !self.closing.load(Ordering::Acquire) {
            let generation = self.epoch_gen.load(Ordering::Acquire);
            if generation == 0 || !self.is_cluster_view() {
                // Not before the publisher has reached Redis (and learnt its
                // epoch), nor while it finds Redis unreachable.
                tokio::time::sleep(FLUSH_EVERY).await;
                continue;
            }
            if generation != seen_gen {
                seen_gen = generation;
                last_id = "0-0".to_owned();
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK_MS)
                .arg("STREAMS")
                .arg(&self.keys.decisions)
                .arg(&last_id);
            let read = cmd.query_async::<Option<redis::streams::StreamReadReply>>(&mut conn);
            let reply =
                tokio::time::timeout(REDIS_TIMEOUT + Duration::from_millis(READ_BLOCK_MS), read)
                    .await;
            let Ok(Ok(reply)) = reply else {
                tokio::time::sleep(MIN_PAUSE).await;
                continue;
            };
            let entries: Vec<redis::streams::StreamId> = reply
                .map(|r| r.keys)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|k| k.ids)
                .collect();
            if let Some(last) = entries.last() {
                last_id.clone_from(&last.id);
                self.take_entries(&entries, &me);
            }
        }
    }

    /// Takes stream entries (oldest first) of the other instances: their
    /// records, and their decisions as far as the newest `capacity` of
    /// them go (older ones would be dropped at once: they are not parsed).
    pub(super) fn take_entries(&self, entries: &[redis::streams::StreamId], me: &str) {
        let mut records = Vec::new();
        let mut newest_first = Vec::new();
        for entry in entries.iter().rev() {
            let field = |name: &str| {
                entry
                    .map
                    .get(name)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            };
            if field("i").as_deref() == Some(me) {
                continue;
            }
            records.extend(field("r").and_then(|j| serde_json::from_str::<Record>(&j).ok()));
            if newest_first.len() < self.capacity {
                let decisions: Vec<(RoutingDecision, f64)> = field("d")
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default();
                newest_first.extend(decisions.into_iter().rev());
            }
        }
        let mut view = lock(&self.view);
        for r in records {
            take_record(&mut view.peers, r);
        }
        newest_first.truncate(self.capacity);
        for (decision, ms) in newest_first.into_iter().rev() {
            let Ok(recorded) = RecordedDecision::new(decision, ms) else {
                continue;
            };
            let d = &recorded.decision;
            let key = (d.timestamp, d.seq, d.id.clone());
            if view.remote.contains_key(&key) {
                continue;
            }
            if view.fresh.len() == self.capacity {
                view.fresh.pop_front();
            }
            view.fresh.push_back(recorded.decision.clone());
            view.remote.insert(key, recorded);
            if view.remote.len() > self.capacity {
                view.remote.pop_first();
            }
        }
        drop(view);
        self.bump();
    }
}
