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

/// The embedded default config (`configs/local.yaml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/local.yaml");

/// Every component type this build contains.
pub fn factories() -> Factories {
    Factories::default()
        .receiver(otelcol_receiver_otlp::OtlpReceiverFactory)
        .processor(otelcol_processor_aggregation::AggregationProcessorFactory)
        .exporter(otelcol_exporter_debug::DebugExporterFactory)
        .extension(otelcol_extension_health::HealthCheckFactory)
        .extension(otelcol_extension_health::HealthCheckV2Factory)
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
}

impl Cli {
    /// Where config comes from: the files given, or the embedded default.
    pub fn sources(&self) -> Vec<ConfigSource> {
        if self.config.is_empty() {
            vec![ConfigSource::Text {
                name: "embedded configs/local.yaml".into(),
                yaml: DEFAULT_CONFIG.into(),
            }]
        } else {
            self.config
                .iter()
                .cloned()
                .map(ConfigSource::File)
                .collect()
        }
    }

    fn load(&self) -> Result<LoadedConfig, config::ConfigError> {
        config::load(&self.sources(), &self.set, &|name| std::env::var(name).ok())
    }
}

/// Runs the command line to completion; the binary's `main`.
pub async fn run(cli: Cli) -> ExitCode {
    let factories = factories();
    if let Some(Command::Components) = cli.command {
        let doc = serde_yaml::to_string(
            &serde_yaml::to_value(ComponentsDoc {
                buildinfo: BuildInfo {
                    command: "otelcol-multitudes",
                    description: "OpenTelemetry Collector for AI-usage telemetry",
                    version: VERSION.trim(),
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
        _ => serve(loaded, &factories).await,
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

async fn serve(loaded: LoadedConfig, factories: &Factories) -> ExitCode {
    otelcol_core::telemetry::init_logging(&loaded.config.service.telemetry.logs);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(version = VERSION.trim(), "starting otelcol-multitudes");
    let mut service = match Service::start(&loaded.config, factories, VERSION.trim()).await {
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
