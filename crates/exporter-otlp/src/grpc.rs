//! OTLP/gRPC: one attempt at one export call, and what its status means
//! (the OTLP spec's retryable codes, `RetryInfo` honoured). Queue, retries
//! and counters are the core exporter helper's.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use otelcol_core::component::{ComponentError, Host};
use otelcol_core::consumer::{ConsumerError, PermanentKind};
use otelcol_core::exporter::{Push, Request};
use otelcol_core::pdata::rpc::RpcStatus;
use otelcol_core::telemetry::{Counter, MetricsRegistry};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::config::{Compression, OtlpGrpcConfig};
use crate::http::AuthSlot;
use crate::wire::Wire;

/// Sends an already encoded request and decodes the response `U`.
struct RawCodec<U>(PhantomData<fn() -> U>);

impl<U: Message + Default + Send + 'static> Codec for RawCodec<U> {
    type Encode = Bytes;
    type Decode = Option<U>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder<U>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder<U> {
        RawDecoder(PhantomData)
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

struct RawDecoder<U>(PhantomData<fn() -> U>);

impl<U: Message + Default> Decoder for RawDecoder<U> {
    type Item = Option<U>;
    type Error = Status;
    /// A response that does not decode (or holds protobuf groups, see
    /// [`crate::wire`]) is `None`: the call succeeded, its partial-success
    /// note is lost.
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Option<U>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        let response = crate::wire::plain_response(&bytes)
            .then(|| U::decode(bytes))
            .and_then(Result::ok);
        Ok(Some(response))
    }
}

/// Metadata made anew for each attempt (the `loadbalancing` exporter's
/// ring change time).
pub type MetadataSource = Arc<dyn Fn() -> Vec<(http::HeaderName, http::HeaderValue)> + Send + Sync>;

/// The `otlp` exporter's [`Push`].
pub struct OtlpGrpcPush {
    id: String,
    channel: Channel,
    shown: String,
    compression: Compression,
    metadata: MetadataMap,
    auth: AuthSlot,
    extra: Option<MetadataSource>,
    partial_rejected: Counter,
}

/// Whether a gRPC status is worth another attempt (the OTLP spec's list;
/// `RESOURCE_EXHAUSTED` only when the server says when to come back).
fn retryable(code: Code, has_retry_info: bool) -> bool {
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => has_retry_info,
        _ => false,
    }
}

fn permanent_kind(code: Code) -> PermanentKind {
    match code {
        Code::InvalidArgument => PermanentKind::InvalidData,
        Code::Unauthenticated => PermanentKind::Unauthenticated,
        Code::PermissionDenied => PermanentKind::PermissionDenied,
        _ => PermanentKind::Other,
    }
}

impl OtlpGrpcPush {
    /// A push for exporter `id` with `config` (validated). The connection
    /// is made on first use and again after it breaks.
    pub fn new(
        id: String,
        config: &OtlpGrpcConfig,
        metrics: &MetricsRegistry,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = config.url();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("endpoint `{url}`: {e}"))?
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .keep_alive_timeout(config.keepalive.timeout)
            .keep_alive_while_idle(config.keepalive.permit_without_stream);
        if !config.keepalive.time.is_zero() {
            endpoint = endpoint.http2_keep_alive_interval(config.keepalive.time);
        }
        if url.starts_with("https://") {
            let tls = &config.tls;
            let mut t = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = tls.ca()? {
                t = t.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = tls.identity()? {
                t = t.identity(Identity::from_pem(cert, key));
            }
            if !tls.server_name_override.is_empty() {
                t = t.domain_name(tls.server_name_override.clone());
            }
            endpoint = endpoint.tls_config(t).map_err(|e| format!("tls: {e}"))?;
        }
        let mut metadata = MetadataMap::new();
        for (k, v) in &config.headers {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("headers.{k}: not a metadata key"))?;
            let value = MetadataValue::try_from(v.as_str())
                .map_err(|_| format!("headers.{k}: not a metadata value"))?;
            metadata.insert(key, value);
        }
        Ok(Self {
            partial_rejected: metrics.counter(
                "otelcol_exporter_partial_rejected_items",
                "Items the destination rejected in a partial-success answer.",
                &[("exporter", id.as_str())],
            ),
            shown: otelcol_core::net::redact_url(&url),
            id,
            channel: endpoint.connect_lazy(),
            compression: config.compression,
            metadata,
            auth: AuthSlot::new(config.auth.id().map_err(|e| e.to_string())?),
            extra: None,
        })
    }

    /// Adds `extra`'s metadata to every attempt (after `headers` and the
    /// authenticator's).
    pub fn with_metadata(mut self, extra: MetadataSource) -> Self {
        self.extra = Some(extra);
        self
    }
}

#[async_trait]
impl<T: Wire> Push<T> for OtlpGrpcPush {
    async fn push(&self, request: &Request<T>) -> Result<(), ConsumerError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc = match self.compression {
            Compression::None => grpc,
            Compression::Gzip => grpc.send_compressed(CompressionEncoding::Gzip),
            Compression::Zstd => grpc.send_compressed(CompressionEncoding::Zstd),
        }
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
        grpc.ready()
            .await
            .map_err(|e| ConsumerError::retryable(format!("connecting to {}: {e}", self.shown)))?;
        let mut call = tonic::Request::new(Bytes::from(request.data.encode_to_vec()));
        *call.metadata_mut() = self.metadata.clone();
        let extra = self.extra.as_ref().map(|f| f()).unwrap_or_default();
        for (name, value) in self
            .auth
            .headers(request.token.as_ref())
            .into_iter()
            .chain(extra)
        {
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(name.as_str().as_bytes()),
                MetadataValue::try_from(value.as_bytes()),
            ) {
                call.metadata_mut().insert(k, v);
            }
        }
        let path = PathAndQuery::from_static(T::GRPC_METHOD);
        match grpc
            .unary(call, path, RawCodec::<T::Response>(PhantomData))
            .await
        {
            Ok(response) => {
                let partial = response.into_inner().as_ref().and_then(T::partial_of);
                if let Some((rejected, message)) = partial.filter(|(r, m)| *r > 0 || !m.is_empty())
                {
                    self.partial_rejected.add(rejected);
                    tracing::warn!(exporter = %self.id, rejected, items = request.items, message, "the endpoint accepted the batch in part");
                }
                Ok(())
            }
            Err(status) => {
                let delay = RpcStatus::decode(status.details())
                    .ok()
                    .and_then(|s| s.retry_delay());
                let message = format!("{}: {:?}: {}", self.shown, status.code(), status.message());
                if retryable(status.code(), delay.is_some()) {
                    return Err(ConsumerError::Retryable {
                        message,
                        retry_after: delay,
                    });
                }
                tracing::error!(
                    exporter = %self.id,
                    endpoint = %self.shown,
                    code = ?status.code(),
                    token = %request.token.as_ref().map(|t| t.redacted()).unwrap_or_default(),
                    items = request.items,
                    idempotency_key = %request.idempotency_key,
                    message = %status.message(),
                    "the endpoint refused the batch; not retrying"
                );
                Err(ConsumerError::Permanent {
                    message,
                    kind: permanent_kind(status.code()),
                })
            }
        }
    }

    fn destination(&self) -> String {
        self.shown.clone()
    }

    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        self.auth.resolve(&self.id, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_otlp_specs_retryable_codes() {
        for c in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert!(retryable(c, false), "{c:?}");
        }
        assert!(!retryable(Code::ResourceExhausted, false));
        assert!(retryable(Code::ResourceExhausted, true));
        for c in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
            Code::Unimplemented,
        ] {
            assert!(!retryable(c, true), "{c:?}");
        }
        assert_eq!(
            permanent_kind(Code::InvalidArgument),
            PermanentKind::InvalidData
        );
    }
}
