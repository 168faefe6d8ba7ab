//! The `orch_key_*` series: each key's spend, requests and tokens in its
//! current period, read at scrape time. The `key` label is bounded: the
//! top `--metrics-keys` keys by spend by id, the rest summed as `other`.

use std::sync::Weak;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::*;
use crate::telemetry::Telemetry;

/// Keys `/metrics` names unless `--metrics-keys` says otherwise.
pub const DEFAULT_METRICS_KEYS: usize = 20;

/// A series: its name, its help, and its value for one line.
type Family = (&'static str, &'static str, fn(&wire::KeySpend) -> f64);

#[derive(Debug)]
struct Collector {
    keys: Weak<Keys>,
    top: usize,
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(keys) = self.keys.upgrade() else {
            return Ok(());
        };
        let lines = wire::top_keys(keys.spends(), self.top);
        let families: [Family; 4] = [
            (
                "orch_key_spend_usd",
                "USD a virtual key spent in its current budget period (the top --metrics-keys keys by spend, the rest as key=\"other\")",
                |k| k.spent_usd,
            ),
            (
                "orch_key_requests",
                "Requests a virtual key made in its current budget period",
                |k| k.requests as f64,
            ),
            (
                "orch_key_tokens",
                "Tokens a virtual key used in its current budget period",
                |k| k.tokens as f64,
            ),
            (
                "orch_key_brownout",
                "A virtual key's brownout level, 0..1 (the highest for key=\"other\")",
                |k| k.brownout,
            ),
        ];
        let ledger = keys.ledger_info();
        if ledger.shared {
            crate::telemetry::encode_gauge(
                &mut encoder,
                "orch_key_accounting_drift_usd",
                "USD this instance's key ledger holds that Redis does not yet (goal: 0)",
                ledger.accounting_drift,
            )?;
            crate::telemetry::encode_gauge(
                &mut encoder,
                "orch_key_ledger_up",
                "1 while the shared budget ledger (Redis) answers",
                i64::from(ledger.reachable == Some(true)),
            )?;
        }
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstGauge::new(0.0f64).metric_type(),
            )?;
            for line in &lines {
                ConstGauge::new(value(line))
                    .encode(family.encode_family(&[("key", line.key.as_str())])?)?;
            }
        }
        Ok(())
    }
}

impl Keys {
    /// Registers the `orch_key_*` series, naming the top `top` keys.
    pub fn register_metrics(self: &Arc<Self>, telemetry: &Telemetry, top: usize) {
        telemetry.register_collector(Box::new(Collector {
            keys: Arc::downgrade(self),
            top,
        }));
    }
}
