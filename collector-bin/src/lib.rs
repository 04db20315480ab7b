//! `otelcol-multitudes`: the components this distribution contains, its
//! embedded default config and its command line, as a library so that tests
//! and forks can run the same code the binary runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use otelcol_core::component::Factories;
use otelcol_core::config::{self, ConfigSource, LoadedConfig};
use otelcol_core::pipeline::{self, Service};

/// The release version (the workspace `VERSION` file).
pub const VERSION: &str = include_str!("../../VERSION");

/// The embedded local default (`configs/local.yaml`): no account needed.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/local.yaml");

/// The embedded production config (`configs/otel-collector-config.yaml`),
/// used by default when both Multitudes variables are set.
pub const PRODUCTION_CONFIG: &str = include_str!("../../configs/otel-collector-config.yaml");

/// The variables the production config needs.
pub const PRODUCTION_VARIABLES: [&str; 2] = [
    "MULTITUDES_INTEGRATION_ENDPOINT",
    "MULTITUDES_INTEGRATION_TOKEN",
];

/// Every component type this build contains: one Cargo feature per
/// component crate, all on by default.
pub fn factories() -> Factories {
    #[allow(unused_mut)]
    let mut f = Factories::default();
    #[cfg(feature = "receiver-otlp")]
    {
        f = otelcol_receiver_otlp::register(f);
    }
    #[cfg(feature = "processor-aggregation")]
    {
        f = otelcol_processor_aggregation::register(f);
    }
    #[cfg(feature = "processor-attributes")]
    {
        f = otelcol_processor_attributes::register(f);
    }
    #[cfg(feature = "processor-batch")]
    {
        f = otelcol_processor_batch::register(f);
    }
    #[cfg(feature = "processor-memory-limiter")]
    {
        f = otelcol_processor_memory_limiter::register(f);
    }
    #[cfg(feature = "connector-signaltometrics")]
    {
        f = otelcol_connector_signaltometrics::register(f);
    }
    #[cfg(feature = "exporter-debug")]
    {
        f = otelcol_exporter_debug::register(f);
    }
    #[cfg(feature = "exporter-multitudes")]
    {
        f = otelcol_exporter_multitudes::register(f);
    }
    #[cfg(feature = "exporter-s3")]
    {
        f = otelcol_exporter_s3::register(f);
    }
    #[cfg(feature = "exporter-otlp")]
    {
        f = otelcol_exporter_otlp::register(f);
    }
    #[cfg(feature = "exporter-loadbalancing")]
    {
        f = otelcol_exporter_loadbalancing::register(f);
    }
    #[cfg(feature = "extension-health")]
    {
        f = otelcol_extension_health::register(f);
    }
    #[cfg(feature = "extension-auth")]
    {
        f = otelcol_extension_auth::register(f);
    }
    #[cfg(feature = "extension-zpages")]
    {
        f = otelcol_extension_zpages::register(f);
    }
    #[cfg(feature = "extension-pprof")]
    {
        f = otelcol_extension_pprof::register(f);
    }
    #[cfg(feature = "extension-file-storage")]
    {
        f = otelcol_extension_file_storage::register(f);
    }
    #[cfg(feature = "extension-encoding")]
    {
        f = otelcol_extension_encoding::register(f);
    }
    f
}

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "otelcol-multitudes", version = VERSION.trim(), about = "An OpenTelemetry Collector for AI-usage telemetry")]
pub struct Cli {
    /// A YAML config file; repeat to merge several (later files win: maps merge, lists replace).
    /// Without one, the embedded default (configs/local.yaml) runs.
    #[arg(long = "config", value_name = "FILE", global = true)]
    pub config: Vec<PathBuf>,
    /// Sets one config value after the files, e.g. `--set exporters.debug.verbosity=detailed`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE", global = true)]
    pub set: Vec<String>,
    /// What to do instead of running.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks the config and exits: 0 when valid, 1 with the error otherwise.
    Validate,
    /// Lists the component types this build contains, as YAML.
    Components,
    /// Prints the merged, expanded config with secrets redacted.
    PrintConfig,
    /// Asks a running collector's health endpoint; exit 0 when it answers
    /// 200 (for the container's `HEALTHCHECK`, where no curl exists).
    Healthcheck {
        /// The health endpoint.
        #[arg(long, default_value = "http://127.0.0.1:13133/")]
        url: String,
    },
}

/// GET `url` (plain HTTP) and report whether it answered 200.
fn healthcheck(url: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{authority}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[9..12]).to_string();
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{url} answered {status}"))
    }
}

impl Cli {
    /// Where config comes from: the files given; else the embedded
    /// production config when both Multitudes variables are set (per
    /// `env`); else the embedded local default.
    pub fn sources(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigSource> {
        if !self.config.is_empty() {
            return self
                .config
                .iter()
                .cloned()
                .map(ConfigSource::File)
                .collect();
        }
        let set = |v: &str| env(v).is_some_and(|x| !x.trim().is_empty());
        if PRODUCTION_VARIABLES.iter().all(|v| set(v)) {
            vec![ConfigSource::Text {
                name: "embedded configs/otel-collector-config.yaml".into(),
                yaml: PRODUCTION_CONFIG.into(),
            }]
        } else {
            vec![ConfigSource::Text {
                name: "embedded configs/local.yaml".into(),
                yaml: DEFAULT_CONFIG.into(),
            }]
        }
    }

    /// What to tell the operator about the config chosen without `--config`.
    fn default_notice(&self) -> Option<String> {
        if !self.config.is_empty() {
            return None;
        }
        let missing: Vec<&str> = PRODUCTION_VARIABLES
            .iter()
            .copied()
            .filter(|v| std::env::var(v).map_or(true, |x| x.trim().is_empty()))
            .collect();
        Some(if missing.is_empty() {
            "no --config given: running the embedded production config (configs/otel-collector-config.yaml)".into()
        } else {
            format!(
                "no --config given and {} not set: running the embedded local default (configs/local.yaml: OTLP in, debug exporter out); set MULTITUDES_INTEGRATION_ENDPOINT and MULTITUDES_INTEGRATION_TOKEN to send totals to Multitudes",
                missing.join(" and ")
            )
        })
    }

    fn load(&self) -> Result<LoadedConfig, config::ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        config::load(&self.sources(&env), &self.set, &env)
    }
}

/// A build of the collector: its name and the component types it contains.
/// `cargo xtask dist` generates a binary that builds one of these.
pub struct Distribution {
    /// Binary name, shown by `components`.
    pub name: &'static str,
    /// One line about it.
    pub description: &'static str,
    /// Its version.
    pub version: &'static str,
    /// Its component types.
    pub factories: Factories,
}

/// Runs the command line to completion with this crate's components; the binary's `main`.
pub async fn run(cli: Cli) -> ExitCode {
    let dist = Distribution {
        name: "otelcol-multitudes",
        description: "OpenTelemetry Collector for AI-usage telemetry",
        version: VERSION.trim(),
        factories: factories(),
    };
    run_distribution(cli, dist).await
}

/// Runs the command line to completion for `dist`.
pub async fn run_distribution(cli: Cli, dist: Distribution) -> ExitCode {
    let factories = dist.factories;
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return match healthcheck(url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Components) = cli.command {
        let doc = serde_yaml::to_string(
            &serde_yaml::to_value(ComponentsDoc {
                buildinfo: BuildInfo {
                    command: dist.name,
                    description: dist.description,
                    version: dist.version,
                },
                components: factories.describe(),
            })
            .unwrap_or_default(),
        );
        print!("{}", doc.unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let loaded = match cli.load() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Validate) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            match pipeline::validate(&loaded.config, &factories) {
                Ok(_) => {
                    for w in pipeline::no_effect_warnings(&loaded.config, &factories) {
                        eprintln!("warning: {w}");
                    }
                    println!("configuration is valid");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("Error: invalid configuration: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::PrintConfig) => {
            match serde_yaml::to_string(&config::redacted(&loaded.root)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("Error: cannot print the config: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            let notice = cli.default_notice();
            serve(loaded, &factories, dist.version, notice).await
        }
    }
}

#[derive(serde::Serialize)]
struct BuildInfo {
    command: &'static str,
    description: &'static str,
    version: &'static str,
}

#[derive(serde::Serialize)]
struct ComponentsDoc {
    buildinfo: BuildInfo,
    #[serde(flatten)]
    components:
        std::collections::BTreeMap<&'static str, Vec<otelcol_core::component::ComponentInfo>>,
}

async fn serve(
    loaded: LoadedConfig,
    factories: &Factories,
    version: &str,
    notice: Option<String>,
) -> ExitCode {
    otelcol_core::telemetry::init_logging(&loaded.config.service.telemetry.logs);
    if let Some(n) = notice {
        tracing::info!("{n}");
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(version, "starting otelcol-multitudes");
    let mut service = match Service::start(&loaded.config, factories, version).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signal = wait_for_signal().await;
    tracing::info!(
        signal,
        "shutting down: receivers stop accepting, in-flight requests finish"
    );
    service.shutdown().await;
    tracing::info!("shutdown complete");
    ExitCode::SUCCESS
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
