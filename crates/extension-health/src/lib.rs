//! Health extensions: `health_check` (the Go v1 extension) and
//! `healthcheckv2` (the Go v2 extension: component status aggregated per
//! pipeline over HTTP, and `grpc.health.v1` over gRPC).
//!
//! Both answer `GET /health` as well as their configured path, with 200 when
//! healthy and 503 otherwise; from the first step of shutdown they answer 503.

pub mod config;
pub mod report;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use otelcol_core::component::{
    ComponentError, CreateSettings, Extension, ExtensionFactory, Factory, Host, Lifecycle,
    NoEffectKey,
};
use otelcol_core::config::{decode, go_keys, ConfigError, RawConfig};
use otelcol_core::server::{self, HttpResponse, ServerHandle, ServerOptions};
use otelcol_core::status::{CollectorState, StatusBoard};
use otelcol_core::{Signal, Stability};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use config::{ComponentHealth, ResponseBody, V2Grpc, V2Http};
pub use config::{HealthCheckConfig, HealthCheckV2Config};

/// The factory for type `health_check`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HealthCheckFactory;

/// The factory for type `healthcheckv2`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HealthCheckV2Factory;

impl Factory for HealthCheckFactory {
    fn type_name(&self) -> &'static str {
        "health_check"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<HealthCheckConfig>(config).map(|_| ())
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        v1_no_effect()
    }
}

impl ExtensionFactory for HealthCheckFactory {
    fn create(
        &self,
        _settings: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        let c: HealthCheckConfig = decode(config)?;
        Ok(Arc::new(HealthExtension::new(Mode::V1 {
            endpoint: c.endpoint,
            path: c.path,
            body: c.response_body,
        })))
    }
}

impl Factory for HealthCheckV2Factory {
    fn type_name(&self) -> &'static str {
        "healthcheckv2"
    }
    fn stability(&self) -> Stability {
        Stability::Alpha
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        let c: HealthCheckV2Config = decode(config)?;
        if c.use_v2 && c.http.is_none() && c.grpc.is_none() {
            return Err(ConfigError::invalid(
                "",
                "use_v2 is set but neither http nor grpc is configured",
            ));
        }
        Ok(())
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        let mut keys = v1_no_effect();
        keys.extend(go_keys::http_server_no_effect("http.", PLAIN_ENDPOINT));
        keys.extend(go_keys::grpc_server_no_effect("grpc.", PLAIN_ENDPOINT));
        for key in ["http.config.enabled", "http.config.path"] {
            keys.push(NoEffectKey::new(
                key,
                "the config document is never served: it would show the collector's configuration to anyone who can reach the health port",
            ));
        }
        keys.push(NoEffectKey::new(
            "http.status.include_attributes",
            "no component of this collector attaches attributes to its status events, so the status document is the same with or without it",
        ));
        keys
    }
}

impl ExtensionFactory for HealthCheckV2Factory {
    fn create(
        &self,
        _settings: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        let c: HealthCheckV2Config = decode(config)?;
        let mode = if c.use_v2 {
            Mode::V2 {
                policy: c.component_health,
                http: c.http,
                grpc: c.grpc,
            }
        } else {
            Mode::V1 {
                endpoint: c.endpoint,
                path: c.path,
                body: c.response_body,
            }
        };
        Ok(Arc::new(HealthExtension::new(mode)))
    }
}

/// Why the Go server keys of the health endpoints have no effect.
const PLAIN_ENDPOINT: &str = "the health endpoints are small plain servers for probes on the pod network; of the Go server keys only endpoint is implemented";

/// Why `check_collector_pipeline` has no effect.
const PIPELINE_CHECK: &str =
    "the Go extension ignores it too (deprecated); use healthcheckv2 component_health";

/// The Go keys `health_check` accepts and ignores.
fn v1_no_effect() -> Vec<NoEffectKey> {
    let mut keys = go_keys::http_server_no_effect("", PLAIN_ENDPOINT);
    keys.push(NoEffectKey::new("check_collector_pipeline", PIPELINE_CHECK));
    keys
}

// One value per extension: the size of the v2 variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Mode {
    V1 {
        endpoint: String,
        path: String,
        body: Option<ResponseBody>,
    },
    V2 {
        policy: ComponentHealth,
        http: Option<V2Http>,
        grpc: Option<V2Grpc>,
    },
}

struct GrpcTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running health extension (either type).
pub struct HealthExtension {
    mode: Mode,
    http: Mutex<Option<ServerHandle>>,
    grpc: Mutex<Option<GrpcTask>>,
}

impl HealthExtension {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            http: Mutex::new(None),
            grpc: Mutex::new(None),
        }
    }

    /// The HTTP address, once started.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|h| h.local_addr())
    }
}

fn json_response(healthy: bool, body: String) -> HttpResponse {
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    server::response(status, "application/json", body)
}

fn answer(mode: &Mode, board: &StatusBoard, path: &str, query: Option<&str>) -> HttpResponse {
    let v1_doc = || {
        let (healthy, doc) = report::v1(board);
        json_response(healthy, doc.to_string())
    };
    match mode {
        Mode::V1 { path: p, body, .. } if path == p => {
            let (healthy, doc) = report::v1(board);
            match body {
                Some(b) => {
                    let text = if healthy { &b.healthy } else { &b.unhealthy };
                    let status = if healthy {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    server::response(status, "text/plain; charset=utf-8", text.clone())
                }
                None => json_response(healthy, doc.to_string()),
            }
        }
        Mode::V2 {
            policy,
            http: Some(h),
            ..
        } if h.status.enabled && path == h.status.path => {
            let pipeline = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|kv| kv.strip_prefix("pipeline="));
            match report::v2(board, policy, pipeline) {
                Some((healthy, doc)) => json_response(healthy, doc.to_string()),
                None => server::response(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "unknown pipeline",
                ),
            }
        }
        _ if path == "/health" => v1_doc(),
        _ => server::response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found",
        ),
    }
}

fn serving(mode: &Mode, board: &StatusBoard) -> bool {
    match mode {
        Mode::V2 { policy, .. } => report::v2(board, policy, None).is_some_and(|(h, _)| h),
        Mode::V1 { .. } => board.state() == CollectorState::Running,
    }
}

async fn start_grpc(
    cfg: &V2Grpc,
    mode: Mode,
    board: Arc<StatusBoard>,
) -> Result<GrpcTask, ComponentError> {
    let listener = server::bind(&cfg.endpoint).await?;
    let (reporter, service) = tonic_health::server::health_reporter();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let (server_stop, server_stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = server_stopped.await;
                }),
        );
        let pipelines: BTreeSet<String> = board
            .snapshot()
            .iter()
            .flat_map(|c| {
                c.pipelines
                    .iter()
                    .filter_map(|p| p.strip_prefix("pipeline:").map(str::to_string))
            })
            .collect();
        loop {
            let overall = if serving(&mode, &board) {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", overall).await;
            if let Mode::V2 { policy, .. } = &mode {
                for p in &pipelines {
                    let ok = report::v2(&board, policy, Some(p)).is_some_and(|(h, _)| h);
                    let s = if ok {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    reporter.set_service_status(p, s).await;
                }
            }
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let _ = server_stop.send(());
        let _ = server.await;
    });
    Ok(GrpcTask { stop, task })
}

#[async_trait]
impl Lifecycle for HealthExtension {
    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        let board = host.status().clone();
        let endpoint = match &self.mode {
            Mode::V1 { endpoint, .. } => Some(endpoint.clone()),
            Mode::V2 { http, .. } => http.as_ref().map(|h| h.endpoint.clone()),
        };
        if let Some(endpoint) = endpoint {
            let listener = server::bind(&endpoint).await?;
            let mode = self.mode.clone();
            let board = board.clone();
            let handle = server::serve(listener, ServerOptions::default(), move |req, _| {
                let response = answer(&mode, &board, req.uri().path(), req.uri().query());
                async move { response }
            });
            tracing::info!(endpoint = %handle.local_addr(), "health check listening");
            *self.http.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        }
        if let Mode::V2 { grpc: Some(g), .. } = &self.mode {
            let task = start_grpc(g, self.mode.clone(), board).await?;
            *self.grpc.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let http = self
            .http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = http {
            h.shutdown().await;
        }
        let grpc = self
            .grpc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(g) = grpc {
            let _ = g.stop.send(());
            let _ = g.task.await;
        }
        Ok(())
    }
}

impl Extension for HealthExtension {}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories
        .extension(HealthCheckFactory)
        .extension(HealthCheckV2Factory)
}
