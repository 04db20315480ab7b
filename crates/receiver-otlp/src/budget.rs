//! The in-flight budget of the OTLP/HTTP server: how many bytes of request
//! bodies (as read, and again as decompressed) may be held at once by
//! requests being read, decoded or handed to the pipeline.
//!
//! A memory limiter measures what has already been allocated; this bounds
//! what requests can take before it can see them. A burst of large
//! requests gets retryable refusals (503 with `Retry-After`) once the
//! budget is taken, instead of taking the process past its memory limit.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget shared by every request of one HTTP server.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    max: u64,
}

/// What one request holds of the budget; given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct Held(Option<OwnedSemaphorePermit>);

/// The budget is taken by other requests.
#[derive(Debug, thiserror::Error)]
#[error("the receiver is busy: {max} bytes of requests are already in flight (protocols.http.max_inflight_bytes); retry later")]
pub(crate) struct Busy {
    max: u64,
}

impl Budget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: u64) -> Self {
        let permits = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(permits)),
            max,
        }
    }

    /// Adds `n` bytes to what `held` holds, or says the budget is taken.
    pub(crate) fn take(&self, held: &mut Held, n: usize) -> Result<(), Busy> {
        if n == 0 {
            return Ok(());
        }
        let busy = Busy { max: self.max };
        let n = u32::try_from(n).map_err(|_| Busy { max: self.max })?;
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| busy)?;
        match &mut held.0 {
            Some(p) => p.merge(permit),
            None => held.0 = Some(permit),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_held_until_dropped() {
        let budget = Budget::new(100);
        let mut a = Held::default();
        budget.take(&mut a, 60).unwrap();
        budget.take(&mut a, 30).unwrap();
        let mut b = Held::default();
        assert_eq!(
            budget.take(&mut b, 20).unwrap_err().to_string(),
            "the receiver is busy: 100 bytes of requests are already in flight (protocols.http.max_inflight_bytes); retry later"
        );
        budget.take(&mut b, 10).unwrap();
        drop(a);
        budget.take(&mut b, 90).unwrap();
    }
}
