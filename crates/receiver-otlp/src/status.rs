//! OTLP error answers: `google.rpc.Status` bodies and the mapping from
//! consumer errors to HTTP and gRPC codes (as the OTLP spec and the Go receiver).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use otelcol_core::consumer::{ConsumerError, PermanentKind};
use prost::Message;
use tonic::Code;

pub use otelcol_core::pdata::rpc::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus};

/// The wait suggested to a client when the pipeline gave no hint.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_secs(e: &ConsumerError) -> u64 {
    match e {
        ConsumerError::Retryable { retry_after, .. } => {
            let d = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            d.as_secs() + u64::from(d.subsec_nanos() > 0)
        }
        ConsumerError::Permanent { .. } => 0,
    }
    .max(1)
}

/// The gRPC code for a pipeline error.
pub fn grpc_code(e: &ConsumerError) -> Code {
    match e {
        ConsumerError::Retryable { .. } => Code::Unavailable,
        ConsumerError::Permanent { kind, .. } => match kind {
            PermanentKind::InvalidData => Code::InvalidArgument,
            PermanentKind::Unauthenticated => Code::Unauthenticated,
            PermanentKind::PermissionDenied => Code::PermissionDenied,
            PermanentKind::Other => Code::Internal,
        },
    }
}

/// The HTTP status for a gRPC code, as the OTLP/HTTP spec maps them.
pub fn http_code(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A `google.rpc.Status` for `code` and `message`, with `RetryInfo` when a
/// retry delay is given.
pub fn rpc_status(code: Code, message: &str, retry: Option<Duration>) -> RpcStatus {
    let details = retry
        .map(|d| ProtoAny {
            type_url: otelcol_core::pdata::rpc::RETRY_INFO_TYPE.into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                }),
            }
            .encode_to_vec(),
        })
        .into_iter()
        .collect();
    RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details,
    }
}

/// The tonic status for a pipeline error; retryable ones carry `RetryInfo`
/// and a `retry-after` metadata entry.
pub fn to_grpc(e: &ConsumerError) -> tonic::Status {
    let code = grpc_code(e);
    let message = e.to_string();
    if !e.is_retryable() {
        return tonic::Status::new(code, message);
    }
    let secs = retry_after_secs(e);
    let details = rpc_status(code, &message, Some(Duration::from_secs(secs))).encode_to_vec();
    let mut status = tonic::Status::with_details(code, message, Bytes::from(details));
    if let Ok(v) = secs.to_string().parse() {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

/// A `google.rpc.Status` body as JSON (`{"code":3,"message":"…"}`).
pub fn json_body(status: &RpcStatus) -> Vec<u8> {
    let mut obj = serde_json::Map::new();
    obj.insert("code".into(), status.code.into());
    obj.insert("message".into(), status.message.clone().into());
    if !status.details.is_empty() {
        let details: Vec<serde_json::Value> = status
            .details
            .iter()
            .filter_map(|d| RetryInfo::decode(&d.value[..]).ok().map(|r| (d, r)))
            .map(|(d, r)| {
                let delay = r.retry_delay.unwrap_or_default();
                serde_json::json!({"@type": d.type_url, "retryDelay": format!("{}s", delay.seconds)})
            })
            .collect();
        obj.insert("details".into(), details.into());
    }
    serde_json::Value::Object(obj).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errors_as_the_otlp_spec() {
        let retry = ConsumerError::Retryable {
            message: "queue full".into(),
            retry_after: Some(Duration::from_millis(2500)),
        };
        assert_eq!(grpc_code(&retry), Code::Unavailable);
        assert_eq!(
            http_code(grpc_code(&retry)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(retry_after_secs(&retry), 3);
        assert_eq!(retry_after_secs(&ConsumerError::retryable("x")), 1);
        let perm = ConsumerError::permanent("broken");
        assert_eq!(
            http_code(grpc_code(&perm)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let status = to_grpc(&retry);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get("retry-after").unwrap(), "3");
        let decoded = RpcStatus::decode(status.details()).unwrap();
        let info = RetryInfo::decode(&decoded.details[0].value[..]).unwrap();
        assert_eq!(info.retry_delay.unwrap().seconds, 3);
    }

    #[test]
    fn json_status_body() {
        let s = rpc_status(Code::InvalidArgument, "bad \"body\"", None);
        assert_eq!(
            String::from_utf8(json_body(&s)).unwrap(),
            r#"{"code":3,"message":"bad \"body\""}"#
        );
    }
}
