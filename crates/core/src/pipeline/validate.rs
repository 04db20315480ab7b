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
        Kind::Connector => &config.connectors,
    }
}

/// Every component section, in the order they are checked.
const SECTIONS: [Kind; 5] = [
    Kind::Extension,
    Kind::Receiver,
    Kind::Processor,
    Kind::Exporter,
    Kind::Connector,
];

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
    for kind in SECTIONS {
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
                    Kind::Connector => factories.connectors.keys().copied().collect(),
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
            let clash = [Kind::Receiver, Kind::Exporter]
                .into_iter()
                .find(|k| kind == Kind::Connector && section(config, *k).contains_key(key));
            if let Some(other) = clash {
                return Err(ConfigError::invalid(
                    &path,
                    format!(
                        "`{key}` is both a connector and {}; a pipeline could not tell which one it lists",
                        match other {
                            Kind::Receiver => "a receiver",
                            _ => "an exporter",
                        }
                    ),
                ));
            }
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
    // Where each connector is listed: side, the pipeline's signal, its id.
    let mut uses: BTreeMap<String, Vec<(Side, Signal, String)>> = BTreeMap::new();
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
                let id: ComponentId = name.parse().map_err(|e: crate::component::IdError| {
                    ConfigError::invalid(&path, e.to_string())
                })?;
                let connects = kind != Kind::Processor && config.connectors.contains_key(name);
                if connects {
                    let side = if kind == Kind::Receiver {
                        Side::Receiver
                    } else {
                        Side::Exporter
                    };
                    uses.entry(name.clone())
                        .or_default()
                        .push((side, signal, pipeline_id.clone()));
                    ids.push(id);
                    continue;
                }
                if !section(config, kind).contains_key(name) {
                    let or_connector = match kind {
                        Kind::Processor => "",
                        _ => " or connectors",
                    };
                    return Err(ConfigError::invalid(
                        &path,
                        format!(
                            "references {kind} `{name}`, which is not configured under {}{or_connector}",
                            kind.section()
                        ),
                    ));
                }
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

    for (name, listed) in &uses {
        check_connector(factories, name, listed)?;
        used.insert((Kind::Connector, name.clone()));
    }
    downstream_first(&plans, &config.connectors)?;

    for kind in SECTIONS {
        for key in section(config, kind).keys() {
            if !used.contains(&(kind, key.clone())) {
                let where_ = match kind {
                    Kind::Extension => "is not listed in service.extensions",
                    Kind::Connector => {
                        "is not used in any pipeline (list it as an exporter of one \
                         pipeline and a receiver of another)"
                    }
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
    for kind in SECTIONS {
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

/// Which side of a pipeline a connector is listed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// In `exporters`: the pipeline's data goes into the connector.
    Exporter,
    /// In `receivers`: the connector's output enters the pipeline.
    Receiver,
}

/// Checks that connector `name` is listed on both sides, and that every
/// pipeline on one side has a pipeline on the other whose signal the
/// connector joins to its own.
fn check_connector(
    factories: &Factories,
    name: &str,
    listed: &[(Side, Signal, String)],
) -> Result<(), ConfigError> {
    let path = format!("connectors.{name}");
    let pairs = name
        .parse::<ComponentId>()
        .ok()
        .and_then(|id| factories.connectors.get(id.type_name()))
        .map_or(&[][..], |f| f.pairs());
    let shown: Vec<String> = pairs.iter().map(|(a, b)| format!("{a} to {b}")).collect();
    let signals = |side| -> BTreeSet<Signal> {
        listed
            .iter()
            .filter(|(s, ..)| *s == side)
            .map(|(_, signal, _)| *signal)
            .collect()
    };
    let (from, to) = (signals(Side::Exporter), signals(Side::Receiver));
    if from.is_empty() || to.is_empty() {
        let (is, missing) = if from.is_empty() {
            ("a receiver", "an exporter")
        } else {
            ("an exporter", "a receiver")
        };
        return Err(ConfigError::invalid(
            path,
            format!(
                "connector `{name}` is used as {is} but not as {missing} in any pipeline; \
                 a connector joins the pipelines that export to it to those that receive from it"
            ),
        ));
    }
    let exporter_side_first = listed
        .iter()
        .filter(|(s, ..)| *s == Side::Exporter)
        .chain(listed.iter().filter(|(s, ..)| *s == Side::Receiver));
    for (side, signal, pipeline) in exporter_side_first {
        let joined = match side {
            Side::Exporter => to.iter().any(|t| pairs.contains(&(*signal, *t))),
            Side::Receiver => from.iter().any(|f| pairs.contains(&(*f, *signal))),
        };
        if !joined {
            let (role, others) = match side {
                Side::Exporter => ("an exporter", &to),
                Side::Receiver => ("a receiver", &from),
            };
            let others: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
            return Err(ConfigError::invalid(
                path,
                format!(
                    "connector `{name}` is {role} of {signal} pipeline `{pipeline}`, but the \
                     pipelines on its other side carry {}; it joins only: {}",
                    others.join(", "),
                    if shown.is_empty() {
                        "nothing".to_string()
                    } else {
                        shown.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// The pipelines in an order where every pipeline comes after each pipeline
/// it feeds through a connector (the order to build them in), or an error
/// naming a cycle of pipelines joined by connectors.
pub(crate) fn downstream_first(
    plans: &[PipelinePlan],
    connectors: &BTreeMap<String, RawConfig>,
) -> Result<Vec<usize>, ConfigError> {
    let is_connector = |id: &ComponentId| connectors.contains_key(&id.to_string());
    // feeds[i]: the pipelines pipeline i feeds through a connector.
    let feeds: Vec<Vec<usize>> = plans
        .iter()
        .map(|p| {
            let outs: Vec<&ComponentId> = p.exporters.iter().filter(|e| is_connector(e)).collect();
            plans
                .iter()
                .enumerate()
                .filter(|(_, q)| q.receivers.iter().any(|r| outs.contains(&r)))
                .map(|(j, _)| j)
                .collect()
        })
        .collect();
    // 0 = not visited, 1 = on the current path, 2 = placed.
    let mut mark = vec![0u8; plans.len()];
    let mut order = Vec::with_capacity(plans.len());
    fn visit(
        i: usize,
        feeds: &[Vec<usize>],
        mark: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match mark[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|p| *p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            _ => {}
        }
        mark[i] = 1;
        path.push(i);
        for &j in &feeds[i] {
            visit(j, feeds, mark, order, path)?;
        }
        path.pop();
        mark[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..plans.len() {
        visit(i, &feeds, &mut mark, &mut order, &mut vec![]).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|c| plans[*c].id.as_str()).collect();
            ConfigError::invalid(
                "service.pipelines",
                format!(
                    "pipelines feed each other through connectors in a cycle: {}",
                    names.join(" -> ")
                ),
            )
        })?;
    }
    Ok(order)
}
