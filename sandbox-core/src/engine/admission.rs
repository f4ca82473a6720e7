//! Admission: at most `max_concurrency` executions run at once and at most `max_queue` wait; a
//! request that finds the queue full is refused at once, never left hanging.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::EngineError;
use crate::monitor::Load;

pub(crate) struct Admission {
    permits: Semaphore,
    max_concurrency: usize,
    max_queue: usize,
    waiting: AtomicUsize,
}

/// Decrements the waiting count when a queued execution gets its slot or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(crate) fn new(max_concurrency: usize, max_queue: usize) -> Self {
        Self {
            permits: Semaphore::new(max_concurrency),
            max_concurrency,
            max_queue,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A slot: at once when one is free, else after waiting in the queue (`on_queued` is called
    /// when the request starts waiting). Dropping the returned permit frees the slot; dropping
    /// the future while it waits leaves the queue.
    pub(crate) async fn enter(
        &self,
        on_queued: impl FnOnce(),
    ) -> Result<SemaphorePermit<'_>, EngineError> {
        if let Ok(p) = self.permits.try_acquire() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::QueueFull {
                max_queue: self.max_queue,
            });
        }
        let _waiting = Waiting(&self.waiting);
        on_queued();
        self.permits
            .acquire()
            .await
            .map_err(|_| EngineError::ShuttingDown)
    }

    pub(crate) fn running(&self) -> usize {
        self.max_concurrency - self.permits.available_permits()
    }

    pub(crate) fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The counters as monitors see them.
    pub(crate) fn load(&self) -> Load {
        Load {
            running: self.running(),
            queued: self.queued(),
            max_concurrency: self.max_concurrency,
            max_queue: self.max_queue,
        }
    }
}
