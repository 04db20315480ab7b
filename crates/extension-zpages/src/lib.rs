//! The `zpages` extension: live status pages of the collector on
//! `endpoint` (default `localhost:55679`), as HTML or, with `?format=json`,
//! as JSON:
//!
//! - `/debug/servicez`: version, start time, state;
//! - `/debug/pipelinez`: every pipeline and the status of each component;
//! - `/debug/extensionz`: the extensions and their status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use http::StatusCode;
use otelcol_core::component::{
    ComponentError, CreateSettings, Extension, ExtensionFactory, Factory, Host, Kind, Lifecycle,
    NoEffectKey,
};
use otelcol_core::config::go_keys::{self, UnusedHttpServerKeys};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::server::{self, HttpResponse, ServerHandle, ServerOptions};
use otelcol_core::status::{ComponentStatus, StatusBoard};
use otelcol_core::{Signal, Stability};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `extensions.zpages`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ZpagesConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Go: `expvar.enabled` serves the Go runtime's variables. Accepted
    /// with a start-up warning; no effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expvar: Option<RawConfig>,
    /// The rest of the Go `confighttp` server keys: accepted with a
    /// start-up warning, no effect.
    #[serde(flatten)]
    pub unused: UnusedHttpServerKeys,
}

impl Default for ZpagesConfig {
    fn default() -> Self {
        Self {
            endpoint: "localhost:55679".into(),
            expvar: None,
            unused: UnusedHttpServerKeys::default(),
        }
    }
}

/// The running `zpages` extension.
pub struct Zpages {
    config: ZpagesConfig,
    version: String,
    server: Mutex<Option<ServerHandle>>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn component_json(c: &ComponentStatus) -> serde_json::Value {
    json!({
        "kind": c.kind,
        "id": c.id.to_string(),
        "status": c.event.status.go_name(),
        "error": c.event.status.error(),
        "since_unix_ms": c.event.at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
    })
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style>\
         </head><body><h1>{t}</h1>{body}<p><a href=\"/debug/servicez\">servicez</a> · <a href=\"/debug/pipelinez\">pipelinez</a> · <a href=\"/debug/extensionz\">extensionz</a></p></body></html>",
        t = escape(title)
    )
}

fn table(rows: &[&ComponentStatus]) -> String {
    let mut s =
        String::from("<table><tr><th>kind</th><th>id</th><th>status</th><th>error</th></tr>");
    for c in rows {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.kind,
            escape(&c.id.to_string()),
            c.event.status.go_name(),
            escape(c.event.status.error().unwrap_or(""))
        );
    }
    s.push_str("</table>");
    s
}

fn answer(board: &StatusBoard, version: &str, path: &str, query: Option<&str>) -> HttpResponse {
    let as_json = query.is_some_and(|q| q.split('&').any(|kv| kv == "format=json"));
    let snapshot = board.snapshot();
    let (body_json, body_html) = match path {
        "/debug/servicez" => {
            let started = board
                .started_at()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let j = json!({"version": version, "start_unix_s": started, "state": board.state()});
            let h = page(
                "otelcol-multitudes",
                &format!(
                    "<p>version {}</p><p>started at Unix time {started}</p><p>state {:?}</p>",
                    escape(version),
                    board.state()
                ),
            );
            (j, h)
        }
        "/debug/pipelinez" => {
            let mut pipelines: BTreeMap<String, Vec<&ComponentStatus>> = BTreeMap::new();
            for c in &snapshot {
                for p in &c.pipelines {
                    pipelines
                        .entry(p.trim_start_matches("pipeline:").to_string())
                        .or_default()
                        .push(c);
                }
            }
            let j = json!({"pipelines": pipelines.iter().map(|(p, cs)| (p.clone(), cs.iter().map(|c| component_json(c)).collect::<Vec<_>>())).collect::<BTreeMap<_, _>>()});
            let mut h = String::new();
            for (p, cs) in &pipelines {
                let _ = write!(h, "<h2>{}</h2>{}", escape(p), table(cs));
            }
            (j, page("Pipelines", &h))
        }
        "/debug/extensionz" => {
            let exts: Vec<&ComponentStatus> = snapshot
                .iter()
                .filter(|c| c.kind == Kind::Extension)
                .collect();
            let j =
                json!({"extensions": exts.iter().map(|c| component_json(c)).collect::<Vec<_>>()});
            (j, page("Extensions", &table(&exts)))
        }
        _ => {
            return server::response(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 page not found",
            )
        }
    };
    if as_json {
        server::response(StatusCode::OK, "application/json", body_json.to_string())
    } else {
        server::response(StatusCode::OK, "text/html; charset=utf-8", body_html)
    }
}

#[async_trait]
impl Lifecycle for Zpages {
    async fn start(&self, host: &Host) -> Result<(), ComponentError> {
        let listener = server::bind(&self.config.endpoint).await?;
        let (board, version) = (host.status().clone(), self.version.clone());
        let handle = server::serve(listener, ServerOptions::default(), move |req, _| {
            let r = answer(&board, &version, req.uri().path(), req.uri().query());
            async move { r }
        });
        tracing::info!(endpoint = %handle.local_addr(), "zpages listening");
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(s) = server {
            s.shutdown().await;
        }
        Ok(())
    }
}

impl Extension for Zpages {}

/// The factory for type `zpages`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZpagesFactory;

impl Factory for ZpagesFactory {
    fn type_name(&self) -> &'static str {
        "zpages"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<ZpagesConfig>(config).map(|_| ())
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        let mut keys = go_keys::http_server_no_effect(
            "",
            "the status page is a small plain-HTTP server; of the Go server keys only endpoint is implemented",
        );
        keys.push(NoEffectKey::new(
            "expvar",
            "there are no Go runtime variables to serve",
        ));
        keys
    }
}

impl ExtensionFactory for ZpagesFactory {
    fn create(
        &self,
        settings: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        Ok(Arc::new(Zpages {
            config: decode(config)?,
            version: settings.version,
            server: Mutex::new(None),
        }))
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.extension(ZpagesFactory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use otelcol_core::status::Status;
    use otelcol_core::ComponentId;

    #[test]
    fn pages_show_pipelines_and_components() {
        let board = StatusBoard::new();
        board.register(
            Kind::Receiver,
            ComponentId::new("otlp"),
            vec!["pipeline:metrics".into()],
        );
        board.register(Kind::Extension, ComponentId::new("zpages"), vec![]);
        board.report(
            Kind::Receiver,
            &ComponentId::new("otlp"),
            Status::RecoverableError("<busy>".into()),
        );
        let r = answer(&board, "0.1.0", "/debug/pipelinez", Some("format=json"));
        assert_eq!(r.status(), StatusCode::OK);
        let html = answer(&board, "0.1.0", "/debug/pipelinez", None);
        assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
        let j = answer(&board, "0.1.0", "/debug/extensionz", Some("format=json"));
        assert_eq!(j.headers()["content-type"], "application/json");
        assert_eq!(
            answer(&board, "0.1.0", "/nope", None).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
