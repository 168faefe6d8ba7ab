//! A fixed number of places, each held by a permit until it is dropped: the
//! open connections under `--max-connections`, and each tier's upstream
//! calls under `--max-inflight`.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `max` places and the permits that hold them.
#[derive(Debug)]
pub struct Places {
    max: usize,
    free: Arc<Semaphore>,
}

impl Places {
    /// `max` free places.
    pub fn new(max: usize) -> Self {
        Places {
            max,
            free: Arc::new(Semaphore::new(max)),
        }
    }

    /// How many places there are.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many are held now.
    pub fn in_use(&self) -> usize {
        self.max - self.free.available_permits()
    }

    /// A place if one is free now.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.free).try_acquire_owned().ok()
    }

    /// A place, waiting until one is free.
    pub async fn take(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.free)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Resolves once every place is free again.
    pub async fn all_free(&self) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _all = self.free.acquire_many(all).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_are_held_until_dropped() {
        let places = Places::new(2);
        let a = places.take().await;
        let b = places.try_take().expect("a second place");
        assert_eq!((places.in_use(), places.max()), (2, 2));
        assert!(places.try_take().is_none(), "no third place");
        drop(a);
        assert_eq!(places.in_use(), 1);
        let all = places.all_free();
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(1), all)
            .await
            .expect("free once both are dropped");
    }
}
