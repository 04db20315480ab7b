//! What the fault tests share: numbered events, their ids back, a sender
//! that honours `Retry-After`, polling with a bound, and a scripted
//! Multitudes endpoint.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use otelcol_core::server::{self, ServerHandle, ServerOptions};

use otelcol_core::pdata::Logs;

/// Now, in Unix nanoseconds.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Events numbered `ids`, each with an attribute `n`.
pub fn events_json(ids: std::ops::Range<u64>) -> Vec<u8> {
    let records: Vec<String> = ids
        .map(|n| {
            format!(
                r#"{{"timeUnixNano": "{}", "body": {{"stringValue": "claude_code.api_request"}}, "attributes": [{{"key": "event.sequence", "value": {{"intValue": "{n}"}}}}, {{"key": "user.email", "value": {{"stringValue": "ana@example.com"}}}}]}}"#,
                now_nanos()
            )
        })
        .collect();
    format!(
        r#"{{"resourceLogs": [{{"scopeLogs": [{{"logRecords": [{}]}}]}}]}}"#,
        records.join(",")
    )
    .into_bytes()
}

/// The `n` of every event in a delivered logs body.
pub fn event_ids(body: &[u8]) -> Vec<u64> {
    let logs: Logs = serde_json::from_slice(body).expect("strict OTLP/JSON");
    logs.resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .filter_map(|r| r.attributes.iter().find(|kv| kv.key == "event.sequence"))
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            otelcol_core::pdata::proto::common::v1::any_value::Value::IntValue(i) => {
                Some(*i as u64)
            }
            _ => None,
        })
        .collect()
}

/// POSTs `body`, retrying a 503 after its `Retry-After` as an SDK would;
/// returns the final status and whether a 503 carried `Retry-After`.
pub async fn post_retrying(url: &str, body: Vec<u8>, deadline: Duration) -> (u16, bool) {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let started = Instant::now();
    let mut saw_retry_after = false;
    loop {
        let req = hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let resp = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
            Ok(Ok(r)) => r,
            _ => return (0, saw_retry_after),
        };
        let status = resp.status().as_u16();
        if status != 503 || started.elapsed() > deadline {
            return (status, saw_retry_after);
        }
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        saw_retry_after |= after.is_some();
        // Honour the hint, compressed for the test.
        tokio::time::sleep(Duration::from_millis(100 * after.unwrap_or(1).min(5))).await;
    }
}

pub async fn until(what: &str, within: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[derive(Clone, Debug)]
/// One request the endpoint answered.
pub struct Attempt {
    pub path: String,
    pub key: String,
    pub status: u16,
    pub body: bytes::Bytes,
}

/// A scripted HTTP server on 127.0.0.1 playing the Multitudes endpoint:
/// up (200) or down (503), recording every attempt.
#[derive(Default)]
pub struct Endpoint {
    pub up: AtomicBool,
    /// Extra latency per answer, in ms.
    pub delay_ms: AtomicU64,
    pub attempts: Mutex<Vec<Attempt>>,
}

impl Endpoint {
    pub async fn start(self: &Arc<Self>) -> (String, ServerHandle) {
        let listener = server::bind("127.0.0.1:0").await.unwrap();
        let me = self.clone();
        let handle = server::serve(listener, ServerOptions::default(), move |req, _| {
            let me = me.clone();
            async move {
                let key = req
                    .headers()
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let path = req.uri().path().to_string();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let delay = me.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let status = if me.up.load(Ordering::SeqCst) {
                    200
                } else {
                    503
                };
                me.attempts.lock().unwrap().push(Attempt {
                    path,
                    key,
                    status,
                    body,
                });
                server::response(
                    hyper::StatusCode::from_u16(status).unwrap(),
                    "application/json",
                    if status == 200 { "{}" } else { "busy" },
                )
            }
        });
        let url = format!("http://127.0.0.1:{}/ai/otel", handle.local_addr().port());
        (url, handle)
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// Bodies answered 200, one per idempotency key (a redelivery under a
    /// key already delivered is what the endpoint drops).
    pub fn delivered_once_per_key(&self, path: &str) -> Vec<Attempt> {
        let mut seen = BTreeSet::new();
        self.attempts()
            .into_iter()
            .filter(|a| a.status == 200 && a.path == path)
            .filter(|a| seen.insert(a.key.clone()))
            .collect()
    }
}
