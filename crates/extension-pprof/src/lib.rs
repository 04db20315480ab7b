//! The `pprof` extension: a CPU profile of the running collector in the
//! format `go tool pprof` reads, at
//! `GET /debug/pprof/profile?seconds=N` on `endpoint` (default
//! `localhost:1777`), gzip-compressed as Go serves it. Sampling uses the
//! `pprof` crate (SIGPROF at 100 Hz); one profile runs at a time.

mod profile;

use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use otelcol_core::component::{
    ComponentError, CreateSettings, Extension, ExtensionFactory, Factory, Host, Lifecycle,
    NoEffectKey,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::server::{self, HttpResponse, ServerHandle, ServerOptions};
use otelcol_core::{Signal, Stability};
use prost::Message;
use serde::{Deserialize, Serialize};

pub use profile::{from_report, Profile};

/// Longest profile accepted.
const MAX_SECONDS: u64 = 300;

/// `extensions.pprof`, with the Go extension's keys.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PprofConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Accepted with a start-up warning; Rust has no block profile.
    pub block_profile_fraction: i64,
    /// Accepted with a start-up warning; Rust has no mutex profile.
    pub mutex_profile_fraction: i64,
    /// Accepted with a start-up warning; profiles are served over HTTP only.
    pub save_to_file: String,
}

impl Default for PprofConfig {
    fn default() -> Self {
        Self {
            endpoint: "localhost:1777".into(),
            block_profile_fraction: 0,
            mutex_profile_fraction: 0,
            save_to_file: String::new(),
        }
    }
}

/// Samples the whole process for `duration` and returns the profile,
/// protobuf-encoded and gzip-compressed.
pub async fn cpu_profile(duration: Duration, frequency: i32) -> Result<Vec<u8>, String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(frequency)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| format!("cannot start the profiler (is another profile running?): {e}"))?;
    tokio::time::sleep(duration).await;
    let report = guard
        .report()
        .build()
        .map_err(|e| format!("cannot build the profile: {e}"))?;
    drop(guard);
    let raw = from_report(&report).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)
        .and_then(|_| gz.finish())
        .map_err(|e| e.to_string())
}

async fn answer(path: &str, query: Option<&str>) -> HttpResponse {
    match path {
        "/debug/pprof/" | "/debug/pprof" => server::response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "profiles:\n  /debug/pprof/profile?seconds=30  CPU profile (go tool pprof)\n",
        ),
        "/debug/pprof/profile" => {
            let seconds = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|kv| kv.strip_prefix("seconds="))
                .map(|v| v.parse::<u64>())
                .unwrap_or(Ok(30));
            let seconds = match seconds {
                Ok(s) if (1..=MAX_SECONDS).contains(&s) => s,
                _ => {
                    return server::response(
                        StatusCode::BAD_REQUEST,
                        "text/plain; charset=utf-8",
                        format!("seconds must be a whole number from 1 to {MAX_SECONDS}"),
                    )
                }
            };
            match cpu_profile(Duration::from_secs(seconds), 100).await {
                Ok(body) => {
                    let mut r = server::response(StatusCode::OK, "application/octet-stream", body);
                    r.headers_mut().insert(
                        http::header::CONTENT_DISPOSITION,
                        http::HeaderValue::from_static("attachment; filename=\"profile\""),
                    );
                    r
                }
                Err(e) => server::response(StatusCode::CONFLICT, "text/plain; charset=utf-8", e),
            }
        }
        _ => server::response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found",
        ),
    }
}

/// The running `pprof` extension.
pub struct Pprof {
    config: PprofConfig,
    server: Mutex<Option<ServerHandle>>,
}

#[async_trait]
impl Lifecycle for Pprof {
    async fn start(&self, _host: &Host) -> Result<(), ComponentError> {
        let listener = server::bind(&self.config.endpoint).await?;
        let options = ServerOptions {
            drain_timeout: Duration::from_secs(1),
            ..ServerOptions::default()
        };
        let handle = server::serve(listener, options, |req, _| async move {
            answer(req.uri().path(), req.uri().query()).await
        });
        tracing::info!(endpoint = %handle.local_addr(), "pprof listening");
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

impl Extension for Pprof {}

/// The factory for type `pprof`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PprofFactory;

impl Factory for PprofFactory {
    fn type_name(&self) -> &'static str {
        "pprof"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<PprofConfig>(config).map(|_| ())
    }
    fn no_effect_keys(&self) -> Vec<NoEffectKey> {
        vec![
            NoEffectKey::new(
                "block_profile_fraction",
                "Rust has no goroutine block profile; /debug/pprof/profile samples CPU",
            ),
            NoEffectKey::new(
                "mutex_profile_fraction",
                "Rust has no mutex contention profile; /debug/pprof/profile samples CPU",
            ),
            NoEffectKey::new(
                "save_to_file",
                "profiles are served over HTTP only; fetch /debug/pprof/profile to save one",
            ),
        ]
    }
}

impl ExtensionFactory for PprofFactory {
    fn create(
        &self,
        _: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        Ok(Arc::new(Pprof {
            config: decode(config)?,
            server: Mutex::new(None),
        }))
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.extension(PprofFactory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn burn(until: std::time::Instant) -> u64 {
        let mut x = 1u64;
        while std::time::Instant::now() < until {
            for i in 0..10_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
        }
        x
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cpu_profile_decodes_as_profile_proto_with_samples() {
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        let worker = std::thread::spawn(move || burn(until));
        let gz = cpu_profile(Duration::from_secs(1), 200).await.unwrap();
        worker.join().unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let p = Profile::decode(&raw[..]).unwrap();
        assert_eq!(p.string_table[0], "");
        let t = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(
            (t(p.sample_type[1].r#type), t(p.sample_type[1].unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(p.period, 5_000_000);
        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert!(
            total >= 20,
            "a busy second at 200 Hz gives samples: {total}"
        );
        let names: Vec<&str> = p.function.iter().map(|f| t(f.name)).collect();
        assert!(
            names.iter().any(|n| n.contains("burn")),
            "the busy function is named: {names:?}"
        );
        for s in &p.sample {
            for id in &s.location_id {
                assert!(p.location.iter().any(|l| l.id == *id));
            }
        }
    }
}
