//! Checks that a config forms a valid set of pipelines before anything is built.

use std::collections::{BTreeMap, BTreeSet};

use crate::component::{ComponentId, Factories, Kind, NoEffectKey, Signal};
use crate::config::{CollectorConfig, ConfigError, RawConfig};

/// A pipeline after validation: its signal and its components in order.
#[derive(Clone, Debug)]
pub struct PipelinePlan {
    /// Pipeline id, e.g. `metrics/raw`.
    pub id: String,
    /// Its signal.
    pub signal: Signal,
    /// Receiver ids.
    pub receivers: Vec<ComponentId>,
    /// Processor ids, in order.
    pub processors: Vec<ComponentId>,
    /// Exporter ids.
    pub exporters: Vec<ComponentId>,
}

fn section(config: &CollectorConfig, kind: Kind) -> &BTreeMap<String, RawConfig> {
    match kind {
        Kind::Receiver => &config.receivers,
        Kind::Processor => &config.processors,
        Kind::Exporter => &config.exporters,
        Kind::Extension => &config.extensions,
    }
}

/// Looks up the raw config of `id` in its section.
pub(crate) fn raw_config<'a>(
    config: &'a CollectorConfig,
    kind: Kind,
    id: &ComponentId,
) -> Option<&'a RawConfig> {
    section(config, kind).get(&id.to_string())
}

fn signal_of(pipeline_id: &str) -> Result<Signal, ConfigError> {
    let id: ComponentId = pipeline_id
        .parse()
        .map_err(|e: crate::component::IdError| {
            ConfigError::invalid(format!("service.pipelines.{pipeline_id}"), e.to_string())
        })?;
    Signal::ALL
        .into_iter()
        .find(|s| s.as_str() == id.type_name())
        .ok_or_else(|| {
            ConfigError::invalid(
                format!("service.pipelines.{pipeline_id}"),
                format!(
                    "unknown signal `{}`; a pipeline id starts with metrics, logs or traces",
                    id.type_name()
                ),
            )
        })
}

/// Validates every component section and the service graph. Returns the
/// pipelines in config order. Every error names the component and, where
/// one is involved, the pipeline.
pub fn validate(
    config: &CollectorConfig,
    factories: &Factories,
) -> Result<Vec<PipelinePlan>, ConfigError> {
    if let Some(name) = config.connectors.keys().next() {
        return Err(ConfigError::invalid(
            format!("connectors.{name}"),
            "this build contains no connector types",
        ));
    }
    for kind in [
        Kind::Extension,
        Kind::Receiver,
        Kind::Processor,
        Kind::Exporter,
    ] {
        for (key, raw) in section(config, kind) {
            let path = format!("{}.{key}", kind.section());
            let id: ComponentId = key.parse().map_err(|e: crate::component::IdError| {
                ConfigError::invalid(&path, e.to_string())
            })?;
            let factory = factories.factory(kind, id.type_name()).ok_or_else(|| {
                let known: Vec<&str> = match kind {
                    Kind::Receiver => factories.receivers.keys().copied().collect(),
                    Kind::Processor => factories.processors.keys().copied().collect(),
                    Kind::Exporter => factories.exporters.keys().copied().collect(),
                    Kind::Extension => factories.extensions.keys().copied().collect(),
                };
                ConfigError::invalid(
                    &path,
                    format!(
                        "unknown {kind} type `{}`; this build has: {}",
                        id.type_name(),
                        known.join(", ")
                    ),
                )
            })?;
            factory.validate(raw).map_err(|e| e.within(&path))?;
        }
    }

    let mut used: BTreeSet<(Kind, String)> = BTreeSet::new();
    for ext in &config.service.extensions {
        if !config.extensions.contains_key(ext) {
            return Err(ConfigError::invalid(
                "service.extensions",
                format!("extension `{ext}` is not configured under extensions"),
            ));
        }
        used.insert((Kind::Extension, ext.clone()));
    }

    if config.service.pipelines.is_empty() {
        return Err(ConfigError::invalid(
            "service.pipelines",
            "no pipelines are configured",
        ));
    }
    let mut plans = vec![];
    for (pipeline_id, p) in &config.service.pipelines {
        let signal = signal_of(pipeline_id)?;
        let path = format!("service.pipelines.{pipeline_id}");
        if p.receivers.is_empty() {
            return Err(ConfigError::invalid(
                &path,
                "must have at least one receiver",
            ));
        }
        if p.exporters.is_empty() {
            return Err(ConfigError::invalid(
                &path,
                "must have at least one exporter",
            ));
        }
        let mut resolve = |kind: Kind, names: &[String]| -> Result<Vec<ComponentId>, ConfigError> {
            let mut seen = BTreeSet::new();
            let mut ids = vec![];
            for name in names {
                if !seen.insert(name) {
                    return Err(ConfigError::invalid(
                        &path,
                        format!("{kind} `{name}` is listed twice"),
                    ));
                }
                if !section(config, kind).contains_key(name) {
                    return Err(ConfigError::invalid(
                        &path,
                        format!(
                            "references {kind} `{name}`, which is not configured under {}",
                            kind.section()
                        ),
                    ));
                }
                let id: ComponentId = name.parse().map_err(|e: crate::component::IdError| {
                    ConfigError::invalid(&path, e.to_string())
                })?;
                let supports = factories
                    .factory(kind, id.type_name())
                    .is_some_and(|f| f.signals().contains(&signal));
                if !supports {
                    return Err(ConfigError::invalid(
                        &path,
                        format!("{kind} `{name}` does not support {signal}"),
                    ));
                }
                used.insert((kind, name.clone()));
                ids.push(id);
            }
            Ok(ids)
        };
        let receivers = resolve(Kind::Receiver, &p.receivers)?;
        let processors = resolve(Kind::Processor, &p.processors)?;
        let exporters = resolve(Kind::Exporter, &p.exporters)?;
        plans.push(PipelinePlan {
            id: pipeline_id.clone(),
            signal,
            receivers,
            processors,
            exporters,
        });
    }

    for kind in [
        Kind::Receiver,
        Kind::Processor,
        Kind::Exporter,
        Kind::Extension,
    ] {
        for key in section(config, kind).keys() {
            if !used.contains(&(kind, key.clone())) {
                let where_ = match kind {
                    Kind::Extension => "is not listed in service.extensions",
                    _ => "is not used in any pipeline",
                };
                return Err(ConfigError::invalid(
                    format!("{}.{key}", kind.section()),
                    format!("{kind} `{key}` is configured but {where_}"),
                ));
            }
        }
    }
    Ok(plans)
}

/// One line per key that `config` sets and its component accepts with no
/// effect ([`crate::component::Factory::no_effect_keys`]), naming the key
/// by its full path and saying why. Components of unknown types are
/// skipped ([`validate`] reports them).
pub fn no_effect_warnings(config: &CollectorConfig, factories: &Factories) -> Vec<String> {
    let mut lines = Vec::new();
    for kind in [
        Kind::Extension,
        Kind::Receiver,
        Kind::Processor,
        Kind::Exporter,
    ] {
        for (key, raw) in section(config, kind) {
            let Ok(id) = key.parse::<ComponentId>() else {
                continue;
            };
            let Some(factory) = factories.factory(kind, id.type_name()) else {
                continue;
            };
            for NoEffectKey { path, why } in factory.no_effect_keys() {
                for set in crate::config::set_paths(raw, &path) {
                    lines.push(format!(
                        "{}.{key}.{set} has no effect here: {why}",
                        kind.section()
                    ));
                }
            }
        }
    }
    lines
}
