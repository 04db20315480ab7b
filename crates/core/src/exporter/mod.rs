//! The one sending path of every exporter, in the spirit of the Go
//! collector's exporterhelper.
//!
//! An exporter writes a [`Push`]: one attempt at sending one [`Request`]
//! (its body, URL or object key, and which errors are retryable). The
//! [`QueuedExporter`] around it gives it the Go keys and their meaning:
//!
//! ```text
//! consume → split (sending_queue.batch.max_size, Push::max_request_bytes)
//!         → sending_queue (memory, or persistent on a storage extension)
//!         → num_consumers workers → retry_on_failure → timeout → Push::push
//! ```
//!
//! and owns the `otelcol_exporter_*` counters. By default requests are
//! never merged here (the `batch` processor merges before the exporter),
//! so a request never mixes two callers' tokens, and each keeps the
//! idempotency key it got when it arrived: a retry, or a resend after a
//! restart from the persistent queue, repeats it, so the destination can
//! drop duplicates.
//!
//! An exporter that writes few large objects sets
//! [`ExporterSettings::merge`]: requests are then acknowledged once they
//! are held in a merge stage (on the same storage as the queue), and on a
//! size or time threshold they are merged, split by [`Push::partition`]
//! and queued, each part with a key of its own, in one storage
//! transaction that also removes them from the stage. A key is drawn
//! once, when its part is queued, so a resend of that part repeats it.
//!
//! What happens to a request, every way it can end:
//! - sent: counted in `sent_*`;
//! - refused permanently by the destination: counted in `send_failed_*`;
//!   the [`Push`] logs why (it knows the status and the answer);
//! - retried until `retry_on_failure.max_elapsed_time` passed (0: never
//!   gives up): counted in `send_failed_*` and logged, naming the items,
//!   the attempts and the last error;
//! - the queue is full: refused retryably to the caller (the receiver
//!   answers 503 / `UNAVAILABLE` with `Retry-After`), counted in
//!   `enqueue_failed_*`; nothing was taken;
//! - shutdown: the queue drains for [`ExporterSettings::drain_timeout`];
//!   what is left stays in a persistent queue for the next start, or, in a
//!   memory queue, is counted in `send_failed_*` and logged as lost.

pub mod config;
mod helper;
mod queue;
mod retry;
mod stage;
#[cfg(test)]
mod stage_tests;
#[cfg(test)]
mod tests;

use async_trait::async_trait;

pub use config::{QueueBatchConfig, QueueConfig, RetryConfig, Sizer};
pub use helper::{ExporterSettings, QueuedExporter};
pub use stage::MergeSettings;

use crate::component::{ComponentError, Host};
use crate::consumer::{BearerToken, ConsumerError, FlowPermit};
use crate::pdata::Batchable;

/// One request as an exporter sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request<T> {
    /// The payload.
    pub data: T,
    /// The caller's bearer token, when the receiver captured one. Requests
    /// are never merged, so a request holds one caller's data only.
    pub token: Option<BearerToken>,
    /// Stable for the life of the request: every attempt and every resend
    /// after a restart carries the same key.
    pub idempotency_key: String,
    /// Items (data points, log records, spans) in `data`.
    pub items: u64,
    /// The label [`Push::partition`] gave this part (an object's folder,
    /// say); empty for exporters that do not partition. Fixed before the
    /// first attempt and stored with the request, like the key.
    pub partition: String,
    /// The producer's room for this data ([`RequestContext::flow`]), held
    /// while the request is in memory; not stored.
    ///
    /// [`RequestContext::flow`]: crate::consumer::RequestContext::flow
    pub flow: Option<FlowPermit>,
}

/// What an exporter writes: one attempt at sending one request.
///
/// Contract with the helper:
/// - `push` makes one attempt; a [`ConsumerError::Retryable`] (with any
///   `retry_after` the destination gave) is retried by the helper, a
///   [`ConsumerError::Permanent`] is not;
/// - a permanent refusal is logged by the `Push`, with what it knows (the
///   status and the answer); the helper counts it;
/// - error messages and [`Push::destination`] hold no secret (no token,
///   no password, no query value).
#[async_trait]
pub trait Push<T: Batchable>: Send + Sync + 'static {
    /// Sends `request` once.
    async fn push(&self, request: &Request<T>) -> Result<(), ConsumerError>;

    /// Where requests go, for log lines, with secrets redacted
    /// ([`crate::net::redact_url`]).
    fn destination(&self) -> String;

    /// Refuses a request before it is queued, when it can never be sent
    /// (no token for it, say). A permanent error is counted as failed and
    /// handed to the caller; the `Push` logs it.
    fn check(&self, _request: &Request<T>) -> Result<(), ConsumerError> {
        Ok(())
    }

    /// The largest request the destination takes, in bytes of the protobuf
    /// encoding (0: no limit). Larger requests are split before queueing.
    fn max_request_bytes(&self) -> usize {
        0
    }

    /// Splits `data` into the parts that must travel as separate requests,
    /// each with a label that stays with its request
    /// ([`Request::partition`]): object storage splits by folder and time
    /// partition here. The default keeps `data` whole, unlabelled.
    fn partition(&self, data: T) -> Vec<(String, T)> {
        vec![(String::new(), data)]
    }

    /// Whether requests of different callers' tokens must stay apart when
    /// requests are merged ([`ExporterSettings::merge`]): true for a
    /// destination that authenticates each caller by its token; false for
    /// one that ignores tokens (object storage), so one object may hold
    /// several callers' data.
    fn keeps_tokens_apart(&self) -> bool {
        true
    }

    /// Called once before the first push.
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        Ok(())
    }
}

/// A new request id: a UUIDv7 (time-ordered, 74 random bits), used as the
/// idempotency key of a request and in object names.
pub fn new_request_id() -> String {
    use std::fmt::Write as _;
    use std::time::{SystemTime, UNIX_EPOCH};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let millis = now.as_millis() as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    let mut random = [0u8; 10];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).is_err() {
        // No system randomness: the clock's nanoseconds and a counter keep
        // ids of this process apart.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = u64::from(now.subsec_nanos()) ^ COUNTER.fetch_add(1, Ordering::Relaxed) << 32;
        random[..8].copy_from_slice(&n.to_be_bytes());
        random[8..].copy_from_slice(&(std::process::id() as u16).to_be_bytes());
    }
    b[6..].copy_from_slice(&random);
    b[6] = (b[6] & 0x0f) | 0x70; // version 7
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v7_and_distinct() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
