//! OTLP/HTTP: `POST /v1/{metrics,logs,traces}` with protobuf or JSON bodies.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::Request;
use otelcol_core::component::{ComponentError, ServerAuthenticator};
use otelcol_core::consumer::RequestContext;
use otelcol_core::server::{self, HttpResponse, ServerHandle, ServerOptions};
use prost::Message;
use tonic::Code;

use crate::budget::{Budget, Held};
use crate::config::HttpConfig;
use crate::decode::{self, DecodeError, Encoding};
use crate::signal::{header_pairs, OtlpSignal, Sink, Sinks};
use crate::status::{http_code, json_body, retry_after_secs, rpc_status};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Proto,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Proto => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

struct State {
    config: HttpConfig,
    sinks: Sinks,
    auth: Option<Arc<dyn ServerAuthenticator>>,
    encodings: Option<Vec<Encoding>>,
    budget: Budget,
}

pub(crate) async fn start(
    config: &HttpConfig,
    sinks: Sinks,
    auth: Option<Arc<dyn ServerAuthenticator>>,
    budget: Budget,
) -> Result<ServerHandle, ComponentError> {
    let listener = server::bind(&config.endpoint).await?;
    let encodings = config
        .compression_algorithms
        .as_ref()
        .map(|list| list.iter().filter_map(|a| Encoding::parse(a)).collect());
    let state = Arc::new(State {
        config: config.clone(),
        sinks,
        auth,
        encodings,
        budget,
    });
    let tls = config
        .tls
        .as_ref()
        .map(|t| t.server_config())
        .transpose()
        .map_err(|e| ComponentError::Failed(format!("protocols.http: {e}")))?;
    let options = ServerOptions {
        read_header_timeout: config.read_header_timeout,
        tls,
        keep_alive: config.keep_alives_enabled.unwrap_or(true),
        ..ServerOptions::default()
    };
    Ok(server::serve(listener, options, move |req, peer| {
        let state = state.clone();
        async move {
            let cors = state.config.cors.as_ref().filter(|c| c.enabled());
            let preflight = cors.and_then(|c| c.preflight(req.method(), req.headers()));
            let origin = cors.and(req.headers().get(header::ORIGIN).cloned());
            let mut resp = match preflight {
                Some(answer) => answer,
                None => {
                    let mut resp = route(&state, req, peer).await;
                    if let Some(c) = cors {
                        c.decorate(origin.as_ref(), &mut resp);
                    }
                    resp
                }
            };
            for (k, v) in &state.config.response_headers {
                if let (Ok(k), Ok(v)) = (
                    header::HeaderName::try_from(k.as_str()),
                    HeaderValue::from_str(v),
                ) {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
    }))
}

async fn route(state: &State, req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let path = req.uri().path();
    let c = &state.config;
    if path == c.metrics_url_path {
        return handle(state, &state.sinks.metrics, req, peer).await;
    } else if path == c.logs_url_path {
        return handle(state, &state.sinks.logs, req, peer).await;
    } else if path == c.traces_url_path {
        return handle(state, &state.sinks.traces, req, peer).await;
    }
    server::response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found",
    )
}

fn error(format: Format, code: Code, message: &str) -> HttpResponse {
    let status = rpc_status(code, message, None);
    let body = match format {
        Format::Proto => status.encode_to_vec(),
        Format::Json => json_body(&status),
    };
    server::response(http_code(code), format.content_type(), body)
}

async fn handle<T: OtlpSignal>(
    state: &State,
    sink: &Sink<T>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> HttpResponse {
    if req.method() != Method::POST {
        let mut r = server::response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "405 method not allowed, supported: [POST]",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let format =
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Format::Proto,
            "application/json" => Format::Json,
            _ => return server::response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "text/plain; charset=utf-8",
                "415 unsupported media type, supported: [application/json, application/x-protobuf]",
            ),
        };
    let mut context = RequestContext {
        client_addr: Some(peer),
        ..Default::default()
    };
    if let Some(auth) = &state.auth {
        match auth.authenticate(req.headers()) {
            Ok(data) => context.auth = Some(Arc::new(data)),
            Err(e) => return error(format, Code::Unauthenticated, &e.to_string()),
        }
    }
    if state.config.include_metadata {
        context.metadata = Arc::new(header_pairs(req.headers()));
    }
    let encoding_header = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .unwrap_or_default();
    let encoding = match Encoding::parse(&encoding_header) {
        Some(e) if e == Encoding::Identity => e,
        Some(e)
            if state
                .encodings
                .as_ref()
                .is_none_or(|allowed| allowed.contains(&e)) =>
        {
            e
        }
        _ => {
            let e = DecodeError::UnsupportedEncoding(encoding_header);
            return error(format, Code::InvalidArgument, &e.to_string());
        }
    };
    let limit = state.config.max_request_body_size;
    // Held until the pipeline has answered: the body, its decompressed form.
    let mut held = Held::default();
    let body = match read_body(req.into_body(), limit, state, &mut held).await {
        Ok(b) => b,
        Err(BodyError::Refused(status, message)) => {
            let mut r = error(format, Code::InvalidArgument, &message);
            *r.status_mut() = status;
            return r;
        }
        Err(BodyError::Busy(message)) => return busy(format, &message),
    };
    let raw = match decode::decompress(&body, encoding, limit) {
        Ok(raw) => raw,
        Err(e) => return error(format, Code::InvalidArgument, &e.to_string()),
    };
    if let std::borrow::Cow::Owned(raw) = &raw {
        if let Err(e) = state.budget.take(&mut held, raw.len()) {
            return busy(format, &e.to_string());
        }
    }
    // OTLP/JSON on the fast path, written as protobuf, for a pipeline
    // that reads the bytes: then handed over as protobuf would be.
    let transcoded = match format {
        Format::Json if sink.takes_undecoded() => T::fast_json_proto(&raw),
        _ => None,
    };
    // `None`: left undecoded for a pipeline that reads the bytes, its
    // items counted on the wire.
    let decoded = match (format, &transcoded) {
        (_, Some(bytes)) => Ok((None, decode::count_proto::<T>(bytes))),
        (Format::Proto, None) if sink.takes_undecoded() => {
            Ok((None, decode::count_proto::<T>(&raw)))
        }
        (Format::Proto, None) => decode::decode_proto::<T>(&raw).map(|d| {
            let items = d.item_count();
            (Some(d), items)
        }),
        (Format::Json, None) => decode::decode_json::<T>(&raw).map(|d| {
            let items = d.item_count();
            (Some(d), items)
        }),
    };
    // The protobuf bytes go along with what was decoded from them (a
    // durable log stores them instead of encoding the request again).
    let received = match (format, raw) {
        (Format::Proto, std::borrow::Cow::Owned(raw)) => Some(Bytes::from(raw)),
        (Format::Proto, std::borrow::Cow::Borrowed(_)) => Some(body.clone()),
        (Format::Json, _) => transcoded.map(Bytes::from),
    };
    drop(body);
    let (data, items) = match decoded {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, %peer, "rejected an OTLP/HTTP body");
            return error(format, Code::InvalidArgument, &e.to_string());
        }
    };
    match sink
        .deliver(data.unwrap_or_default(), items, context, received)
        .await
    {
        Ok(delivered) => {
            let body = match format {
                Format::Proto => T::response(&delivered).encode_to_vec(),
                Format::Json => delivered.json_body::<T>(),
            };
            server::response(StatusCode::OK, format.content_type(), body)
        }
        Err(e) => {
            let code = crate::status::grpc_code(&e);
            let mut r = error(format, code, &e.to_string());
            if e.is_retryable() {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs(&e).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            r
        }
    }
}

/// A retryable refusal (503, `Retry-After: 1`) for a request the in-flight
/// budget has no room for.
fn busy(format: Format, message: &str) -> HttpResponse {
    tracing::debug!("refused a request: {message}");
    let mut r = error(format, Code::Unavailable, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Why a body was not read.
enum BodyError {
    /// The client's fault: the HTTP status and message to answer.
    Refused(StatusCode, String),
    /// The in-flight budget is taken: try again.
    Busy(String),
}

/// Reads the whole body, at most `limit` bytes and within the read timeout,
/// taking each piece from the in-flight budget into `held` as it arrives.
async fn read_body(
    mut body: Incoming,
    limit: u64,
    state: &State,
    held: &mut Held,
) -> Result<Bytes, BodyError> {
    let too_large = || {
        let e = DecodeError::TooLarge {
            limit,
            decompressed: false,
        };
        BodyError::Refused(StatusCode::BAD_REQUEST, e.to_string())
    };
    // A declared Content-Length is the size hint's lower bound.
    if body.size_hint().lower() > limit {
        return Err(too_large());
    }
    let read = async {
        let mut buf = bytes::BytesMut::new();
        // Once the budget is taken, the rest of the body is read and thrown
        // away, so the client gets its 503 instead of a reset connection.
        let mut busy: Option<String> = None;
        let mut seen: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                BodyError::Refused(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len() as u64;
            if seen > limit {
                return Err(too_large());
            }
            if busy.is_some() {
                continue;
            }
            if let Err(e) = state.budget.take(held, data.len()) {
                busy = Some(e.to_string());
                buf = bytes::BytesMut::new();
                *held = Held::default();
                continue;
            }
            if buf.is_empty() && body.is_end_stream() {
                return Ok(data);
            }
            buf.extend_from_slice(&data);
        }
        match busy {
            Some(message) => Err(BodyError::Busy(message)),
            None => Ok(buf.freeze()),
        }
    };
    match tokio::time::timeout(state.config.read_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::Refused(
            StatusCode::REQUEST_TIMEOUT,
            "timed out reading the request body".into(),
        )),
    }
}
