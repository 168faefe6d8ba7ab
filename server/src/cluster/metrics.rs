//! The cluster's `orch_cluster_*` series, registered by the cluster itself.

use super::*;

/// The `orch_cluster_*` series, read from the cluster at scrape time.
#[derive(Debug)]
pub(super) struct Collector(pub(super) Weak<Cluster>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match self.0.upgrade() {
            Some(cluster) => encode_gauges(&cluster.gauges(), &mut encoder),
            None => Ok(()),
        }
    }
}

pub(super) fn encode_gauges(
    g: &Gauges,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let gauge = |encoder: &mut DescriptorEncoder, name, help, value: u64| {
        encode_gauge(encoder, name, help, value as i64)
    };
    gauge(
        encoder,
        "orch_cluster_redis_up",
        "1 while Redis answers (the status covers the cluster), 0 while it is unreachable or not reached yet",
        u64::from(g.redis_up),
    )?;
    gauge(
        encoder,
        "orch_cluster_backlog",
        "Decisions waiting to be sent to Redis",
        g.backlog,
    )?;
    let overflowed = ConstCounter::new(g.overflowed);
    let e = encoder.encode_descriptor(
        "orch_cluster_overflowed",
        "Decisions that found the Redis backlog full (never sent; totals stay exact)",
        None,
        overflowed.metric_type(),
    )?;
    overflowed.encode(e)?;
    let mut family = encoder.encode_descriptor(
        "orch_cluster_instances",
        "Instances of the cluster this one knows of, by state (itself included)",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    for (state, n) in ["live", "stale", "gone"].into_iter().zip(g.instances) {
        ConstGauge::new(n as i64).encode(family.encode_family(&[("state", state)])?)?;
    }
    Ok(())
}
