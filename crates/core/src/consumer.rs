//! How data moves: every receiver, processor and exporter hands batches to
//! the next stage through [`Consumer`].

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

/// A bearer token as the caller sent it. Its `Debug` and `Display` show at
/// most the first four characters, so it can never leak into a log line.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
    /// The token itself, for the one place that must send it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The redacted form used in logs: `abcd***`.
    pub fn redacted(&self) -> String {
        let prefix: String = self.0.chars().take(4).collect();
        format!("{prefix}***")
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken({})", self.redacted())
    }
}

impl fmt::Display for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Who sent a request, as established by a server authenticator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthData {
    /// The caller's bearer token, when it sent one.
    pub token: Option<BearerToken>,
    /// Request headers the authenticator chose to keep (lower-case names).
    pub headers: Vec<(String, String)>,
}

/// What travels beside a batch: where it came from and who sent it.
///
/// Cheap to clone; fan-out copies it to every branch.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The peer address of the connection, when known.
    pub client_addr: Option<SocketAddr>,
    /// Set by the receiver's authenticator (`auth.authenticator`).
    pub auth: Option<Arc<AuthData>>,
    /// Request headers, lower-case names, kept when the receiver has
    /// `include_metadata: true`.
    pub metadata: Arc<Vec<(String, String)>>,
    /// Items of this request that a consumer took the rest of the request
    /// without: the receiver answers them as OTLP `partial_success`.
    pub rejected: Arc<Rejections>,
    /// A stable key for this batch's content, set by a component that may
    /// offer the same content again (the aggregation processor, after a
    /// restart, offers a window's totals under the key it had): exporters
    /// send it as the request's idempotency key instead of drawing one.
    pub idempotency_key: Option<Arc<str>>,
    /// Set by a producer that bounds how much of its output is in memory
    /// downstream (the aggregation processor's emissions): held as long as
    /// a copy of this batch's data is, and given back when the last copy is
    /// dropped. Components that keep the data in memory keep it with the
    /// data (the exporter helper keeps it with each queued request, and
    /// drops it once a persistent queue has the request on disk).
    pub flow: Option<FlowPermit>,
}

/// Room a producer took for one batch of its output; given back when the
/// last clone is dropped. A batch merged from several keeps every one of
/// theirs ([`FlowPermit::absorb`]). See [`RequestContext::flow`].
#[derive(Clone, Debug)]
pub struct FlowPermit {
    permits: Vec<Arc<tokio::sync::OwnedSemaphorePermit>>,
}

/// Two permits are equal when they hold the same room.
impl PartialEq for FlowPermit {
    fn eq(&self, other: &Self) -> bool {
        self.permits.len() == other.permits.len()
            && self
                .permits
                .iter()
                .zip(&other.permits)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl FlowPermit {
    /// Wraps a permit of the producer's semaphore.
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self {
            permits: vec![Arc::new(permit)],
        }
    }

    /// Also holds what `other` holds (its data was merged into this one's).
    pub fn absorb(&mut self, other: FlowPermit) {
        self.permits.extend(other.permits);
    }

    /// `into` also holds `other`'s room, whichever of them has any.
    pub fn merge(into: &mut Option<FlowPermit>, other: Option<FlowPermit>) {
        match (into.as_mut(), other) {
            (Some(a), Some(b)) => a.absorb(b),
            (None, Some(b)) => *into = Some(b),
            (_, None) => {}
        }
    }
}

/// Items a consumer dropped for good while accepting the rest of a request
/// (an invalid point, a point without the user key), with the first reason.
///
/// The receiver creates one per request and answers its count as
/// `partial_success.rejected_*`; a [`FanOut`] gives each branch its own and
/// keeps the largest, so a point refused by two pipelines counts once.
/// Consumers that answer after the request (a batching queue) have nowhere
/// to report, and count their drops as they always do.
#[derive(Debug, Default)]
pub struct Rejections {
    items: AtomicU64,
    message: Mutex<Option<String>>,
}

impl Rejections {
    /// Records `items` dropped for `reason` (the first reason is kept).
    pub fn add(&self, items: u64, reason: impl FnOnce() -> String) {
        if items == 0 {
            return;
        }
        self.items.fetch_add(items, Ordering::Relaxed);
        let mut message = self.message.lock().unwrap_or_else(PoisonError::into_inner);
        if message.is_none() {
            *message = Some(reason());
        }
    }

    /// How many items were rejected.
    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    /// The first reason given, when any item was rejected.
    pub fn message(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes in what one branch of a fan-out rejected: the larger count wins
    /// (the branches saw the same items), the first reason is kept.
    fn absorb_branch(&self, branch: &Rejections) {
        let n = branch.items();
        if n == 0 {
            return;
        }
        self.items.fetch_max(n, Ordering::Relaxed);
        let mut message = self.message.lock().unwrap_or_else(PoisonError::into_inner);
        if message.is_none() {
            *message = branch.message();
        }
    }
}

impl RequestContext {
    /// The first value of header `name` (case-insensitive) captured by the
    /// receiver, looking in the metadata and then in the authenticator's headers.
    pub fn header(&self, name: &str) -> Option<&str> {
        let auth_headers = self.auth.iter().flat_map(|a| a.headers.iter());
        self.metadata
            .iter()
            .chain(auth_headers)
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The caller's bearer token, when an authenticator captured one.
    pub fn bearer_token(&self) -> Option<&BearerToken> {
        self.auth.as_ref().and_then(|a| a.token.as_ref())
    }
}

/// Request header a gateway's `loadbalancing` exporter sends with every
/// request once its ring has changed: the time of that change, in Unix
/// nanoseconds. A cumulative stream that first reaches an aggregator with
/// it counts in full only if it started at or after that time (it may have
/// been counted on its previous aggregator before), so a ring change never
/// counts a moved stream twice. A sender can only lower its own totals
/// with it.
pub const ROUTED_SINCE_HEADER: &str = "otelcol-routed-since";

/// A batch of one signal with its request context.
#[derive(Clone, Debug)]
pub struct Batch<T> {
    /// The payload: `Metrics`, `Logs` or `Traces` from [`crate::pdata`].
    pub data: T,
    /// Where the payload came from.
    pub context: RequestContext,
    /// The protobuf bytes `data` was decoded from, exactly as received
    /// (or, for OTLP/JSON a receiver hands over undecoded, the same
    /// request written as protobuf), while nothing has changed `data`
    /// since; `None` otherwise. A
    /// component that must store the request as protobuf (the aggregation
    /// processor's durable log) uses them instead of encoding `data` again.
    /// Whoever changes `data` must set this to `None`: the pipeline does so
    /// on the output of every processor whose factory does not declare
    /// [`keeps_data`](crate::component::ProcessorFactory::keeps_data).
    pub received: Option<bytes::Bytes>,
}

impl<T> Batch<T> {
    /// A batch with an empty context, as an embedding program would build one.
    pub fn new(data: T) -> Self {
        Self {
            data,
            context: RequestContext::default(),
            received: None,
        }
    }
}

impl<T: crate::pdata::Payload> Batch<T> {
    /// Whether `data` was left empty and the request is only in
    /// [`Batch::received`]: a receiver does so for a pipeline that
    /// [`reads_received`](Consumer::reads_received), and never hands over
    /// a request without items, so empty `data` beside bytes means exactly
    /// this.
    pub fn undecoded(&self) -> bool {
        self.received.as_ref().is_some_and(|b| !b.is_empty()) && self.data.item_count() == 0
    }

    /// Items in the batch: those of `data`, or of the bytes when it was
    /// left [undecoded](Batch::undecoded) (counted on the wire, see
    /// [`Payload::count_encoded`](crate::pdata::Payload::count_encoded)).
    pub fn items(&self) -> usize {
        match &self.received {
            Some(bytes) if self.undecoded() => T::count_encoded(bytes),
            _ => self.data.item_count(),
        }
    }
}

/// Clears [`Batch::received`] on the way out of a processor that may change
/// the data (see [`crate::component::ProcessorFactory::keeps_data`]).
pub struct ForgetReceived<T>(pub Arc<dyn Consumer<T>>);

#[async_trait]
impl<T: Send + 'static> Consumer<T> for ForgetReceived<T> {
    async fn consume(&self, mut batch: Batch<T>) -> Result<(), ConsumerError> {
        batch.received = None;
        self.0.consume(batch).await
    }
}

/// What kind of permanent failure, so a receiver can answer the OTLP status
/// that fits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermanentKind {
    /// The data itself is unacceptable (HTTP 400, gRPC InvalidArgument).
    InvalidData,
    /// The caller's credentials were refused downstream (401, Unauthenticated).
    Unauthenticated,
    /// The caller may not send this (403, PermissionDenied).
    PermissionDenied,
    /// Anything else that retrying will not fix (500, Internal).
    Other,
}

/// Why a consumer did not take a batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    /// Try again later; the sender should retry (HTTP 503 with `Retry-After`,
    /// gRPC Unavailable).
    #[error("{message} (retryable)")]
    Retryable {
        /// What went wrong.
        message: String,
        /// How long the sender should wait, when the consumer knows.
        retry_after: Option<Duration>,
    },
    /// Retrying will not help.
    #[error("{message}")]
    Permanent {
        /// What went wrong.
        message: String,
        /// Which kind of refusal this is.
        kind: PermanentKind,
    },
}

impl ConsumerError {
    /// A retryable error without a retry hint.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
    /// A permanent error of kind [`PermanentKind::Other`].
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
            kind: PermanentKind::Other,
        }
    }
    /// Whether the sender should retry.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

/// The one data-flow contract: take a batch, or say why not.
///
/// Implemented by processors, exporters and [`FanOut`]; called by receivers.
/// `T` is one of the payloads of [`crate::pdata`].
#[async_trait]
pub trait Consumer<T: Send + 'static>: Send + Sync {
    /// Takes ownership of a batch. Returning `Ok` means the consumer is now
    /// responsible for it.
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError>;

    /// The consumers a fan-out hands each batch to, in order; `None` for
    /// any other consumer. A component that retries what was refused uses
    /// it to send the retry only to the branches that refused, never again
    /// to one that accepted (which would count the data twice).
    fn branches(&self) -> Option<Vec<Arc<dyn Consumer<T>>>> {
        None
    }

    /// Whether this consumer, and everything it passes batches to, reads
    /// [`Batch::received`] whenever it is present and never needs `data`
    /// then. A receiver may then skip decoding: it hands over the bytes
    /// with `data` left empty (see [`Batch::undecoded`]). Asked once, when
    /// the receiver is built. `false` unless a consumer says so; a
    /// processor that passes batches on unchanged answers what its next
    /// consumer answers.
    fn reads_received(&self) -> bool {
        false
    }
}

/// Sends each batch to several consumers (a receiver feeding several
/// pipelines, or a pipeline feeding several exporters).
///
/// Every branch gets the batch even if an earlier one fails. The result is
/// `Ok` only if all succeed; otherwise the first permanent error if any,
/// else the first retryable one. Each branch reports its
/// [`Rejections`] apart; the request's count is the largest of them.
pub struct FanOut<T> {
    consumers: Vec<Arc<dyn Consumer<T>>>,
}

impl<T> FanOut<T> {
    /// A fan-out over `consumers`, in order.
    pub fn new(consumers: Vec<Arc<dyn Consumer<T>>>) -> Self {
        Self { consumers }
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> Consumer<T> for FanOut<T> {
    async fn consume(&self, batch: Batch<T>) -> Result<(), ConsumerError> {
        let Some((last, rest)) = self.consumers.split_last() else {
            return Ok(());
        };
        let mut first_error: Option<ConsumerError> = None;
        let mut note = |r: Result<(), ConsumerError>| {
            if let Err(e) = r {
                let replace = match &first_error {
                    None => true,
                    Some(prev) => prev.is_retryable() && !e.is_retryable(),
                };
                if replace {
                    first_error = Some(e);
                }
            }
        };
        let request = batch.context.rejected.clone();
        let branch_batch = |batch: &Batch<T>| {
            let mut b = batch.clone();
            b.context.rejected = Arc::new(Rejections::default());
            b
        };
        for c in rest {
            let b = branch_batch(&batch);
            let seen = b.context.rejected.clone();
            note(c.consume(b).await);
            request.absorb_branch(&seen);
        }
        let b = branch_batch(&batch);
        drop(batch);
        let seen = b.context.rejected.clone();
        note(last.consume(b).await);
        request.absorb_branch(&seen);
        first_error.map_or(Ok(()), Err)
    }

    fn branches(&self) -> Option<Vec<Arc<dyn Consumer<T>>>> {
        Some(self.consumers.clone())
    }

    fn reads_received(&self) -> bool {
        self.consumers.iter().all(|c| c.reads_received())
    }
}

/// Builds the consumer for a list: the single consumer itself, or a
/// [`FanOut`] when there are several.
pub fn fan_out<T: Clone + Send + Sync + 'static>(
    mut consumers: Vec<Arc<dyn Consumer<T>>>,
) -> Arc<dyn Consumer<T>> {
    if consumers.len() == 1 {
        if let Some(only) = consumers.pop() {
            return only;
        }
    }
    Arc::new(FanOut::new(consumers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder {
        seen: Mutex<Vec<u32>>,
        answer: Result<(), ConsumerError>,
    }

    #[async_trait]
    impl Consumer<u32> for Recorder {
        async fn consume(&self, batch: Batch<u32>) -> Result<(), ConsumerError> {
            self.seen.lock().unwrap().push(batch.data);
            self.answer.clone()
        }
    }

    fn recorder(answer: Result<(), ConsumerError>) -> Arc<Recorder> {
        Arc::new(Recorder {
            seen: Mutex::new(vec![]),
            answer,
        })
    }

    #[tokio::test]
    async fn fan_out_delivers_to_all_and_prefers_permanent_errors() {
        let a = recorder(Err(ConsumerError::retryable("a busy")));
        let b = recorder(Err(ConsumerError::permanent("b broken")));
        let c = recorder(Ok(()));
        let fan = fan_out(vec![
            a.clone() as Arc<dyn Consumer<u32>>,
            b.clone(),
            c.clone(),
        ]);
        let err = fan.consume(Batch::new(7)).await.unwrap_err();
        assert_eq!(err, ConsumerError::permanent("b broken"));
        for r in [&a, &b, &c] {
            assert_eq!(*r.seen.lock().unwrap(), vec![7]);
        }
    }

    /// Rejects `n` items of each batch, then answers `Ok`.
    struct Rejecter(u64);

    #[async_trait]
    impl Consumer<u32> for Rejecter {
        async fn consume(&self, batch: Batch<u32>) -> Result<(), ConsumerError> {
            let n = self.0;
            batch
                .context
                .rejected
                .add(n, || format!("{n} items refused"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn fan_out_reports_the_largest_branch_rejection_once() {
        let fan = fan_out(vec![
            Arc::new(Rejecter(2)) as Arc<dyn Consumer<u32>>,
            Arc::new(Rejecter(3)),
            Arc::new(Rejecter(0)),
        ]);
        let batch = Batch::new(7);
        let request = batch.context.rejected.clone();
        fan.consume(batch).await.unwrap();
        assert_eq!(
            request.items(),
            3,
            "the same items seen by two branches count once"
        );
        assert_eq!(request.message().as_deref(), Some("2 items refused"));

        let single = Rejecter(4);
        let batch = Batch::new(1);
        let request = batch.context.rejected.clone();
        single.consume(batch).await.unwrap();
        assert_eq!(request.items(), 4);
    }

    #[test]
    fn token_is_redacted_in_debug_and_display() {
        let t = BearerToken::new("secret-token-value");
        assert_eq!(format!("{t}"), "secr***");
        assert_eq!(format!("{t:?}"), "BearerToken(secr***)");
        assert_eq!(t.expose(), "secret-token-value");
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_reads_auth_headers() {
        let ctx = RequestContext {
            metadata: Arc::new(vec![("x-team".into(), "core".into())]),
            auth: Some(Arc::new(AuthData {
                token: None,
                headers: vec![("x-user".into(), "ana@example.com".into())],
            })),
            ..Default::default()
        };
        assert_eq!(ctx.header("X-Team"), Some("core"));
        assert_eq!(ctx.header("x-user"), Some("ana@example.com"));
        assert_eq!(ctx.header("x-none"), None);
    }
}
