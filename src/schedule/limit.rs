//! A concurrency limit that a reload can raise or lower while its permits are out, for the
//! scheduler's global and per-server limits.
//!
//! Probes waiting for a permit wait on the same limit before and after a reload, so a changed
//! `concurrency` or `per_server_concurrency` applies to them at once: a raised limit lets
//! waiting probes start now; a lowered one withdraws idle permits now and the others as the
//! probes holding them finish, so no probe starts until fewer than the new limit are running.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits to run, at most `limit` of them out at a time once the probes started under a
/// higher limit have finished.
#[derive(Debug)]
pub(super) struct Limit {
    semaphore: Arc<Semaphore>,
    size: Mutex<Size>,
}

#[derive(Debug)]
struct Size {
    /// Permits in existence: those held plus those available.
    issued: usize,
    /// What the config asks for. While `issued` is above it, returned permits are withdrawn.
    limit: usize,
}

/// A permit of a [`Limit`], given back (or withdrawn, if the limit was lowered) when dropped.
#[derive(Debug)]
pub(super) struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<Limit>,
}

impl Limit {
    pub(super) fn new(limit: usize) -> Arc<Limit> {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Arc::new(Limit {
            semaphore: Arc::new(Semaphore::new(limit)),
            size: Mutex::new(Size {
                issued: limit,
                limit,
            }),
        })
    }

    /// Changes the limit, for the probes already waiting as well as for later ones.
    pub(super) fn set(&self, limit: usize) {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        let mut size = self.size();
        size.limit = limit;
        if size.issued < limit {
            self.semaphore.add_permits(limit - size.issued);
            size.issued = limit;
        } else if size.issued > limit {
            size.issued -= self.semaphore.forget_permits(size.issued - limit);
        }
    }

    /// Waits for a permit, in the order asked.
    pub(super) async fn acquire(self: &Arc<Self>) -> Permit {
        let permit = Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            // The semaphore is private and never closed.
            .expect("a limit's semaphore is never closed");
        self.wrap(permit)
    }

    /// A permit if one is free now.
    pub(super) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let permit = Arc::clone(&self.semaphore).try_acquire_owned().ok()?;
        Some(self.wrap(permit))
    }

    fn wrap(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Permit {
        Permit {
            permit: Some(permit),
            limit: Arc::clone(self),
        }
    }

    fn size(&self) -> std::sync::MutexGuard<'_, Size> {
        // The counts stay consistent under the lock; a panic elsewhere cannot break them.
        self.size.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut size = self.limit.size();
        if size.issued > size.limit {
            permit.forget();
            size.issued -= 1;
        } else {
            // Returned under the lock, so that a concurrent `set` counts it either as held
            // or as available, never as neither.
            drop(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_limit_hands_out_more_permits_at_once() {
        let limit = Limit::new(1);
        let first = limit.try_acquire().expect("one permit");
        assert!(limit.try_acquire().is_none());
        limit.set(3);
        let more: Vec<Permit> = (0..2).filter_map(|_| limit.try_acquire()).collect();
        assert_eq!(more.len(), 2);
        assert!(limit.try_acquire().is_none());
        drop((first, more));
        assert_eq!(limit.semaphore.available_permits(), 3);
    }

    #[test]
    fn a_lowered_limit_withdraws_permits_as_they_come_back() {
        let limit = Limit::new(4);
        let mut held: Vec<Permit> = (0..3).filter_map(|_| limit.try_acquire()).collect();
        assert_eq!(held.len(), 3);
        // One idle permit goes at once; the three held ones are over the new limit of 1.
        limit.set(1);
        assert!(limit.try_acquire().is_none());
        held.pop();
        assert!(limit.try_acquire().is_none(), "still two running");
        held.pop();
        assert!(limit.try_acquire().is_none(), "still one running");
        held.pop();
        let again = limit.try_acquire().expect("none running: one may start");
        assert!(limit.try_acquire().is_none());
        drop(again);
        assert_eq!(limit.semaphore.available_permits(), 1);
    }

    #[test]
    fn lowering_then_raising_before_permits_return() {
        let limit = Limit::new(4);
        let held: Vec<Permit> = (0..4).filter_map(|_| limit.try_acquire()).collect();
        limit.set(1);
        limit.set(2);
        drop(held);
        assert_eq!(limit.semaphore.available_permits(), 2);
        limit.set(5);
        assert_eq!(limit.semaphore.available_permits(), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raised_limit_wakes_a_waiting_acquire() {
        let limit = Limit::new(1);
        let held = limit.try_acquire().unwrap();
        let waiting = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.acquire().await }
        });
        limit.set(2);
        let second = waiting.await.unwrap();
        drop((held, second));
        assert_eq!(limit.semaphore.available_permits(), 2);
    }
}
