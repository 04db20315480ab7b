//! The in-flight budget of one OTLP server (HTTP or gRPC): how many bytes
//! of request bodies (as read, and again as decompressed) may be held at
//! once by requests being read, decoded or handed to the pipeline.
//!
//! A memory limiter measures what has already been allocated; this bounds
//! what requests can take before it can see them. A burst of large
//! requests gets retryable refusals (503 / `UNAVAILABLE`, retry after 1 s)
//! once the budget is taken, instead of taking the process past its memory
//! limit. Each refusal is counted
//! (`otelcol_receiver_busy_refused_requests{receiver, transport}`) and
//! warned about at most once a minute.

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};

use otelcol_core::component::CreateSettings;
use otelcol_core::telemetry::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often the "receiver is busy" warning may repeat.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The budget shared by every request of one server.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    max: u64,
    /// The config key that sets it, named in the refusal.
    key: &'static str,
    refused: Counter,
    warned: Arc<Mutex<Option<Instant>>>,
}

/// What one request holds of the budget; given back when dropped.
#[derive(Debug, Default)]
pub(crate) struct Held(Option<OwnedSemaphorePermit>);

/// The budget is taken by other requests.
#[derive(Debug, thiserror::Error)]
#[error("the receiver is busy: {max} bytes of requests are already in flight ({key}); retry later")]
pub(crate) struct Busy {
    max: u64,
    key: &'static str,
}

impl Budget {
    /// A budget of `max` bytes set by config key `key` (`protocols.http.max_inflight_bytes`),
    /// its refusals counted for receiver `receiver` on `transport`.
    pub(crate) fn new(
        max: u64,
        key: &'static str,
        settings: &CreateSettings,
        transport: &str,
    ) -> Self {
        let permits = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let receiver = settings.id.to_string();
        let refused = settings.metrics.counter(
            "otelcol_receiver_busy_refused_requests",
            "Requests refused retryably (503 / UNAVAILABLE) because the receiver's max_inflight_bytes of request bodies were already held by other requests.",
            &[("receiver", &receiver), ("transport", transport)],
        );
        Self {
            bytes: Arc::new(Semaphore::new(permits)),
            max,
            key,
            refused,
            warned: Arc::default(),
        }
    }

    /// Adds `n` bytes to what `held` holds, or says the budget is taken
    /// (counted and warned about: a request is refused once, as its first
    /// take that fails ends it).
    pub(crate) fn take(&self, held: &mut Held, n: usize) -> Result<(), Busy> {
        if n == 0 {
            return Ok(());
        }
        let permit = u32::try_from(n)
            .ok()
            .and_then(|n| self.bytes.clone().try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            return Err(self.refuse());
        };
        match &mut held.0 {
            Some(p) => p.merge(permit),
            None => held.0 = Some(permit),
        }
        Ok(())
    }

    fn refuse(&self) -> Busy {
        self.refused.add(1);
        let busy = Busy {
            max: self.max,
            key: self.key,
        };
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if warned.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *warned = Some(now);
            tracing::warn!("refusing requests for now (retryable; counted in otelcol_receiver_busy_refused_requests): {busy}");
        }
        busy
    }
}

/// What one gRPC call holds of the budget: its body takes each frame as it
/// arrives ([`Metered`]), its decoder the decompressed message; the call
/// keeps a clone until the pipeline has answered, and gives it all back
/// when the last clone goes.
#[derive(Clone)]
pub(crate) struct CallBudget {
    budget: Budget,
    held: Arc<Mutex<Held>>,
    busy: Arc<OnceLock<String>>,
}

impl CallBudget {
    pub(crate) fn new(budget: Budget) -> Self {
        Self {
            budget,
            held: Arc::default(),
            busy: Arc::default(),
        }
    }

    /// Takes `n` more bytes for this call; the refusal's message otherwise
    /// (kept: [`CallBudget::busy`]).
    pub(crate) fn take(&self, n: usize) -> Result<(), String> {
        if let Some(m) = self.busy.get() {
            return Err(m.clone());
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        self.budget.take(&mut held, n).map_err(|e| {
            let message = e.to_string();
            *held = Held::default();
            let _ = self.busy.set(message.clone());
            message
        })
    }

    /// Why the call was refused, if it was.
    pub(crate) fn busy(&self) -> Option<&str> {
        self.busy.get().map(String::as_str)
    }
}

/// A request body that takes each data frame from its call's budget as it
/// arrives; past the budget it ends in an error (the call is then answered
/// `UNAVAILABLE`, see [`CallBudget::busy`]).
pub(crate) struct Metered<B> {
    inner: Pin<Box<B>>,
    call: CallBudget,
}

impl<B> Metered<B> {
    pub(crate) fn new(inner: B, call: CallBudget) -> Self {
        Self {
            inner: Box::pin(inner),
            call,
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Buf::remaining);
                match this.call.take(n) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(message) => Poll::Ready(Some(Err(message.into()))),
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_held_until_dropped() {
        let settings = CreateSettings::standalone(
            otelcol_core::ComponentId::new("otlp"),
            otelcol_core::component::Kind::Receiver,
        );
        let budget = Budget::new(100, "protocols.http.max_inflight_bytes", &settings, "http");
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
        assert!(settings.metrics.render().contains(
            "otelcol_receiver_busy_refused_requests_total{receiver=\"otlp\",transport=\"http\"} 1"
        ), "{}", settings.metrics.render());
    }
}
