//! A version that grows with every change a status could show, and the
//! wake-up of the one waiter that publishes it (the stream's publisher):
//! what the telemetry, the store and the cluster each keep for
//! [`crate::service::StatusService`] to sum and wait on.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Changes {
    version: AtomicU64,
    notify: Notify,
}

impl Changes {
    /// Grows with every [`Self::bump`].
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Resolves after the next bump (at once if one happened since the
    /// last call returned).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Something changed.
    pub fn bump(&self) {
        self.version.fetch_add(1, Ordering::Release);
        self.notify.notify_one();
    }
}
