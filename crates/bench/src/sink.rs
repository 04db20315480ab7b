//! A counting OTLP/HTTP sink playing the Multitudes endpoint: it checks the
//! bearer token, decodes protobuf or JSON (gzip too), and sums the values
//! of every sum and gauge point by metric name, so a bench can prove that
//! what went in came out.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use otelcol_core::pdata::proto::metrics::v1::{metric, number_data_point};
use otelcol_core::pdata::Metrics;
use prost::Message;

/// What the sink has received.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SinkStats {
    /// Requests accepted.
    pub requests: u64,
    /// Requests refused for their token (401).
    pub bad_token: u64,
    /// Requests that did not decode (400).
    pub bad_body: u64,
    /// Points received.
    pub points: u64,
    /// Sum of point values per metric name.
    pub totals: BTreeMap<String, f64>,
}

impl SinkStats {
    /// Sum over every metric.
    pub fn total(&self) -> f64 {
        self.totals.values().sum()
    }
}

/// A running sink.
#[derive(Clone)]
pub struct Sink {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stats: Arc<Mutex<SinkStats>>,
}

impl Sink {
    /// What it has received so far.
    pub fn stats(&self) -> SinkStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn decode(body: &[u8], json: bool, gzip: bool) -> Option<Metrics> {
    let mut raw = Vec::new();
    let body = if gzip {
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut raw)
            .ok()?;
        &raw[..]
    } else {
        body
    };
    if json {
        serde_json::from_slice(body).ok()
    } else {
        Metrics::decode(body).ok()
    }
}

fn count(m: &Metrics, s: &mut SinkStats) {
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    };
    for metric in m
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        let points = match &metric.data {
            Some(metric::Data::Sum(x)) => &x.data_points,
            Some(metric::Data::Gauge(x)) => &x.data_points,
            _ => continue,
        };
        let total: f64 = points.iter().map(|p| number(&p.value)).sum();
        s.points += points.len() as u64;
        *s.totals.entry(metric.name.clone()).or_default() += total;
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    token: Arc<String>,
    stats: Arc<Mutex<SinkStats>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |code: u16, body: &'static str| {
        Ok(Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap_or_default())
    };
    if req.uri().path() == "/stats" {
        let s = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let body = serde_json::to_vec(&s).unwrap_or_default();
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {token}")) {
        stats.lock().unwrap_or_else(|e| e.into_inner()).bad_token += 1;
        return reply(401, "{}");
    }
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let json = header("content-type").starts_with("application/json");
    let gzip = header("content-encoding") == "gzip";
    let is_metrics = req.uri().path().ends_with("/v1/metrics");
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(400, "{}");
    };
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    if !is_metrics {
        s.requests += 1;
        return reply(200, "{}");
    }
    match decode(&body, json, gzip) {
        Some(m) => {
            s.requests += 1;
            count(&m, &mut s);
            reply(200, "{}")
        }
        None => {
            s.bad_body += 1;
            reply(400, "{}")
        }
    }
}

/// Starts a sink on `addr` that accepts `Bearer {token}`.
pub async fn start(addr: &str, token: &str) -> std::io::Result<Sink> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(Mutex::new(SinkStats::default()));
    let token = Arc::new(token.to_string());
    let st = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (token, st) = (token.clone(), st.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| handle(r, token.clone(), st.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Sink { addr, stats })
}
