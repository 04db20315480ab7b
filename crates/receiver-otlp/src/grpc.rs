//! OTLP/gRPC: the three collector services on one tonic server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use otelcol_core::component::{ComponentError, ServerAuthenticator};
use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::{Logs, Metrics, Traces};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::budget::{Budget, CallBudget, Metered};
use crate::config::GrpcConfig;
use crate::grpc_conn::{ConnInfo, IdleClosing};
use crate::signal::{header_pairs, OtlpSignal, Sink, Sinks};

/// A running gRPC server.
pub(crate) struct GrpcServer {
    pub local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl GrpcServer {
    /// Stops accepting and waits for in-flight calls.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct Handler<T> {
    sink: Arc<Sink<T>>,
    auth: Option<Arc<dyn ServerAuthenticator>>,
    include_metadata: bool,
}

impl<T: OtlpSignal> Handler<T> {
    async fn export(&self, request: Request<Decoded<T>>) -> Result<Response<T::Response>, Status> {
        if let Some(reached) = request.extensions().get::<Reached>() {
            reached.0.store(true, Ordering::Release);
        }
        let mut context = RequestContext {
            client_addr: ConnInfo::of(request.extensions()).and_then(|c| c.remote_addr),
            ..Default::default()
        };
        if self.auth.is_some() || self.include_metadata {
            let headers = request.metadata().clone().into_headers();
            if let Some(auth) = &self.auth {
                let data = auth
                    .authenticate(&headers)
                    .map_err(|e| Status::unauthenticated(e.to_string()))?;
                context.auth = Some(Arc::new(data));
            }
            if self.include_metadata {
                context.metadata = Arc::new(header_pairs(&headers));
            }
        }
        let Decoded { data, items, bytes } = request.into_inner();
        match self.sink.deliver(data, items, context, Some(bytes)).await {
            Ok(delivered) => Ok(Response::new(T::response(&delivered))),
            Err(e) => Err(crate::status::to_grpc(&e)),
        }
    }
}

/// Set by the handler: the call was decoded and reached the pipeline.
#[derive(Clone, Default)]
struct Reached(Arc<AtomicBool>);

/// Wraps a generated service so that what tonic answers before the handler
/// runs carries the OTLP code the Go receiver gives: a body that does not
/// decode (tonic: `INTERNAL`) is `INVALID_ARGUMENT`, permanent; a message
/// over `max_recv_msg_size_mib` (tonic: `OUT_OF_RANGE`, which OTLP clients
/// retry forever) is `RESOURCE_EXHAUSTED` without retry info, which they
/// do not retry. Answers from the pipeline are left as they are.
#[derive(Clone)]
struct DecodeCodes<S>(S);

impl<S: NamedService> NamedService for DecodeCodes<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for DecodeCodes<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let reached = Reached::default();
        request.extensions_mut().insert(reached.clone());
        let in_flight = ConnInfo::of(request.extensions()).map(|c| c.activity.call());
        let call = self.0.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            drop(in_flight);
            if !reached.0.load(Ordering::Acquire) {
                remap_decode_code(response.headers_mut());
            }
            Ok(response)
        })
    }
}

/// Rewrites the `grpc-status` of a trailers-only answer tonic gave before
/// the handler ran (see [`DecodeCodes`]).
fn remap_decode_code(headers: &mut http::HeaderMap) {
    let code = match headers.get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"13") => tonic::Code::InvalidArgument,
        Some(b"11") => tonic::Code::ResourceExhausted,
        _ => return,
    };
    headers.insert("grpc-status", http::HeaderValue::from(code as i32));
}

/// tonic-prost's codec, with the request's `AnyValue` nesting checked
/// before prost decodes it ([`crate::depth`]; prost runs without a depth
/// limit of its own). The generated servers fix tonic-prost's codec, so
/// [`Export`] serves the three export methods itself.
/// A compressed call's decompressed message is taken from the call's
/// budget here (`decompressed`), before it is decoded.
/// With `undecoded`, the message is only checked and its items counted
/// (the pipeline reads the bytes itself, see [`Sink::takes_undecoded`]).
struct DepthCodec<T: OtlpSignal> {
    prost: tonic_prost::ProstCodec<T::Response, T>,
    decompressed: Option<CallBudget>,
    undecoded: bool,
}

impl<T: OtlpSignal> DepthCodec<T> {
    fn new(decompressed: Option<CallBudget>, undecoded: bool) -> Self {
        Self {
            prost: tonic_prost::ProstCodec::default(),
            decompressed,
            undecoded,
        }
    }
}

/// An export request with the protobuf bytes it came in (decompressed),
/// which go along with it ([`otelcol_core::consumer::Batch::received`]):
/// decoded, or `data` left empty when the codec was `undecoded`.
struct Decoded<T> {
    data: T,
    items: usize,
    bytes: bytes::Bytes,
}

/// The decoder of [`DepthCodec`].
struct DepthDecoder<T> {
    decompressed: Option<CallBudget>,
    undecoded: bool,
    signal: std::marker::PhantomData<T>,
}

impl<T: OtlpSignal + Send + 'static> tonic::codec::Decoder for DepthDecoder<T> {
    type Item = Decoded<T>;
    type Error = Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        use bytes::Buf;
        let bytes = buf.chunk();
        if bytes.len() < buf.remaining() {
            return Err(Status::internal("a gRPC message arrived in pieces"));
        }
        if let Some(call) = &self.decompressed {
            call.take(bytes.len()).map_err(Status::unavailable)?;
        }
        if self.undecoded {
            // The message as one `Bytes` (a split of tonic's buffer, not a
            // copy); the pipeline checks and reads it.
            let bytes = buf.copy_to_bytes(buf.remaining());
            return Ok(Some(Decoded {
                data: T::default(),
                items: T::count_encoded(&bytes),
                bytes,
            }));
        }
        crate::depth::check_proto(bytes, T::ROOT)
            .map_err(|e| Status::invalid_argument(format!("failed to decode the request: {e}")))?;
        let bytes = buf.copy_to_bytes(buf.remaining());
        T::decode(&bytes[..])
            .map(|data| {
                let items = data.item_count();
                Some(Decoded { data, items, bytes })
            })
            .map_err(|e| Status::invalid_argument(format!("failed to decode the request: {e}")))
    }
}

impl<T: OtlpSignal + Send + 'static> tonic::codec::Codec for DepthCodec<T> {
    type Encode = T::Response;
    type Decode = Decoded<T>;
    type Encoder = tonic_prost::ProstEncoder<T::Response>;
    type Decoder = DepthDecoder<T>;
    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }
    fn decoder(&mut self) -> Self::Decoder {
        DepthDecoder {
            decompressed: self.decompressed.clone(),
            undecoded: self.undecoded,
            signal: std::marker::PhantomData,
        }
    }
}

/// One OTLP export service (`…Service/Export`) on tonic's unary handling
/// with [`DepthCodec`]; other paths are UNIMPLEMENTED, as in the generated
/// servers.
struct Export<T> {
    handler: Arc<Handler<T>>,
    max_message: usize,
    /// Shared by the three services of the server.
    budget: Budget,
}

impl<T> Clone for Export<T> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            max_message: self.max_message,
            budget: self.budget.clone(),
        }
    }
}

/// The gRPC service name of each signal's export.
trait ServiceName {
    const SERVICE: &'static str;
    const PATH: &'static str;
}
impl ServiceName for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
}
impl ServiceName for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
}
impl ServiceName for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
}

impl<T: ServiceName> NamedService for Export<T> {
    const NAME: &'static str = T::SERVICE;
}

/// The handler as tonic's unary service.
struct Unary<T>(Arc<Handler<T>>);

impl<T: OtlpSignal + Send + Sync + 'static> tonic::server::UnaryService<Decoded<T>> for Unary<T> {
    type Response = T::Response;
    type Future = BoxFuture<Response<T::Response>, Status>;
    fn call(&mut self, request: Request<Decoded<T>>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move { handler.export(request).await })
    }
}

impl<T, B> Service<http::Request<B>> for Export<T>
where
    T: OtlpSignal + ServiceName + Send + Sync + 'static,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != T::PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    "grpc-status",
                    http::HeaderValue::from(tonic::Code::Unimplemented as i32),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/grpc"),
                );
                Ok(response)
            });
        }
        let handler = self.handler.clone();
        let max = self.max_message;
        // Held from the first byte until the pipeline has answered.
        let call = CallBudget::new(self.budget.clone());
        let compressed = request
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() != b"identity");
        let request = request.map(|body| Metered::new(body, call.clone()));
        Box::pin(async move {
            let mut accept = tonic::codec::EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let undecoded = handler.sink.takes_undecoded();
            let codec = DepthCodec::<T>::new(compressed.then(|| call.clone()), undecoded);
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_compression_config(accept, Default::default())
                .apply_max_message_size_config(Some(max), None);
            let response = grpc.unary(Unary(handler), request).await;
            if let Some(message) = call.busy() {
                tracing::debug!("refused a call: {message}");
                let e = otelcol_core::consumer::ConsumerError::Retryable {
                    message: message.to_string(),
                    retry_after: Some(std::time::Duration::from_secs(1)),
                };
                return Ok(crate::status::to_grpc(&e).into_http());
            }
            Ok(response)
        })
    }
}

fn nonzero(d: std::time::Duration) -> Option<std::time::Duration> {
    (!d.is_zero()).then_some(d)
}

pub(crate) async fn start(
    config: &GrpcConfig,
    sinks: Sinks,
    auth: Option<Arc<dyn ServerAuthenticator>>,
    budget: Budget,
) -> Result<GrpcServer, ComponentError> {
    let listener = otelcol_core::server::bind(&config.endpoint).await?;
    let local_addr = listener.local_addr().map_err(|source| ComponentError::Io {
        context: format!("reading the address of {}", config.endpoint),
        source,
    })?;
    let max = usize::try_from(config.max_message_bytes()).unwrap_or(usize::MAX);
    macro_rules! svc {
        ($sink:expr) => {{
            DecodeCodes(Export {
                handler: Arc::new(Handler {
                    sink: $sink,
                    auth: auth.clone(),
                    include_metadata: config.include_metadata,
                }),
                max_message: max,
                budget: budget.clone(),
            })
        }};
    }
    let params = &config.keepalive.server_parameters;
    let mut builder = tonic::transport::Server::builder();
    if !params.max_connection_age.is_zero() {
        builder = builder.max_connection_age(params.max_connection_age);
        if !params.max_connection_age_grace.is_zero() {
            builder = builder.max_connection_age_grace(params.max_connection_age_grace);
        }
    }
    let tls = match &config.tls {
        Some(tls) => Some(
            tls.server_config()
                .map_err(|e| ComponentError::Failed(format!("protocols.grpc: {e}")))?,
        ),
        None => None,
    };
    let router = builder
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(4 << 20))
        .max_frame_size(Some(FRAME_BYTES))
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(nonzero(params.time))
        .http2_keepalive_timeout(nonzero(params.timeout))
        .add_service(svc!(sinks.metrics))
        .add_service(svc!(sinks.logs))
        .add_service(svc!(sinks.traces));
    let (stop, stopped) = oneshot::channel::<()>();
    let idle = params.max_connection_idle;
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| accepted.map(|stream| IdleClosing::new(stream, idle)));
    let shutdown = async {
        let _ = stopped.await;
    };
    let task = match tls {
        None => tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!(error = %e, "OTLP/gRPC server failed");
            }
        }),
        Some(tls) => {
            let (handshakes, accepted) = tls_incoming(incoming, tls);
            tokio::spawn(async move {
                if let Err(e) = router
                    .serve_with_incoming_shutdown(accepted, shutdown)
                    .await
                {
                    tracing::error!(error = %e, "OTLP/gRPC server failed");
                }
                handshakes.abort();
            })
        }
    };
    Ok(GrpcServer {
        local_addr,
        stop,
        task,
    })
}

/// The largest HTTP/2 frame a client may send (HTTP/2's default and
/// floor is 16 KiB): a 286 KB export then comes in one or two DATA frames
/// instead of eighteen.
const FRAME_BYTES: u32 = 256 << 10;

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// TLS on accepted connections with our rustls config (so `min_version`,
/// `max_version` and `client_ca_file` apply as on OTLP/HTTP; tonic's own
/// TLS setup takes neither version key). Handshakes run concurrently, each
/// bounded in time, so a slow client holds up no other; the returned task
/// accepts until aborted.
fn tls_incoming(
    mut incoming: impl futures_util::Stream<Item = std::io::Result<IdleClosing>>
        + Send
        + Unpin
        + 'static,
    tls: Arc<rustls::ServerConfig>,
) -> (
    JoinHandle<()>,
    impl futures_util::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<IdleClosing>>>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        while let Some(accepted) = incoming.next().await {
            let io = match accepted {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(error = %e, "OTLP/gRPC accept failed");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "OTLP/gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!("OTLP/gRPC TLS handshake timed out"),
                }
            });
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (task, Box::pin(stream))
}
