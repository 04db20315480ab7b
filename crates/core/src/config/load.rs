//! Reading, merging and expanding config sources.

use std::path::PathBuf;

use figment::providers::{Format, Serialized, Yaml};
use figment::value::{Dict, Tag, Value};
use figment::Figment;

use super::{expand, from_figment, CollectorConfig, ConfigError};

/// One place config comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A YAML file (`--config FILE`).
    File(PathBuf),
    /// YAML text, e.g. the embedded default; `name` appears in errors.
    Text {
        /// What to call it in errors.
        name: String,
        /// The YAML.
        yaml: String,
    },
}

/// A loaded config: the merged, expanded tree and its typed top level.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The merged tree after expansion (what `print-config` shows, redacted).
    pub root: Value,
    /// The typed top level.
    pub config: CollectorConfig,
    /// Things worth a warning at start (unset variables).
    pub warnings: Vec<String>,
}

fn parse_source(source: &ConfigSource) -> Result<Option<Value>, ConfigError> {
    let (name, text) = match source {
        ConfigSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Source {
                source_name: path.display().to_string(),
                message: format!("cannot read the config file: {e}"),
            })?;
            (path.display().to_string(), text)
        }
        ConfigSource::Text { name, yaml } => (name.clone(), yaml.clone()),
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    Figment::from(Yaml::string(&text))
        .extract::<Value>()
        .map(Some)
        .map_err(|e| ConfigError::Source {
            source_name: name,
            message: format!("not a valid YAML map: {}", e.kind),
        })
}

/// Turns `a.b.c=value` (or `a::b::c=value`) into a nested map; the value is YAML.
fn parse_set(arg: &str) -> Result<Value, ConfigError> {
    let err = |message: String| ConfigError::Source {
        source_name: format!("--set {arg}"),
        message,
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| err("expected key.path=value".into()))?;
    let parts: Vec<&str> = if key.contains("::") {
        key.split("::").collect()
    } else {
        key.split('.').collect()
    };
    if parts.iter().any(|p| p.trim().is_empty()) {
        return Err(err(format!("empty segment in key `{key}`")));
    }
    let mut value = if raw.is_empty() {
        Value::from(String::new())
    } else {
        serde_yaml::from_str::<Value>(raw)
            .map_err(|e| err(format!("value is not valid YAML: {e}")))?
    };
    if let Value::Empty(..) = value {
        value = Value::from(String::new());
    }
    for part in parts.iter().rev() {
        let mut d = Dict::new();
        d.insert(part.trim().to_string(), value);
        value = Value::Dict(Tag::Default, d);
    }
    Ok(value)
}

/// Loads `sources` in order (later ones win: maps merge, lists replace),
/// then applies `sets` (`--set`), then expands `${…}` with `lookup`, then
/// decodes the top level.
pub fn load(
    sources: &[ConfigSource],
    sets: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    let mut figment = Figment::new();
    for source in sources {
        if let Some(v) = parse_source(source)? {
            figment = figment.merge(Serialized::defaults(v));
        }
    }
    for arg in sets {
        figment = figment.merge(Serialized::defaults(parse_set(arg)?));
    }
    let mut root = match figment.extract::<Value>() {
        Ok(v) => v,
        Err(_) => Value::Dict(Tag::Default, Dict::new()),
    };
    let mut warnings = vec![];
    expand(&mut root, lookup, &mut warnings)?;
    let config = Figment::from(Serialized::defaults(root.clone()))
        .extract_lossy::<CollectorConfig>()
        .map_err(from_figment)?;
    Ok(LoadedConfig {
        root,
        config,
        warnings,
    })
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "token",
        "tokens",
        "password",
        "secret",
        "api_key",
        "hmac_key",
        "access_key",
        "secret_key",
        "authorization",
    ]
    .iter()
    .any(|s| k == *s || k.ends_with(&format!("_{s}")))
}

/// A copy of `value` with secrets (`*token`, `*password`, `*secret`,
/// `authorization`, …) replaced by `[REDACTED]`, and the passwords and
/// query values of URLs by `***`.
pub fn redacted(value: &Value) -> Value {
    match value {
        Value::Dict(tag, d) => Value::Dict(
            *tag,
            d.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Empty(..) => v.clone(),
                        _ if is_secret_key(k) => Value::from("[REDACTED]".to_string()),
                        _ => redacted(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(tag, items) => Value::Array(*tag, items.iter().map(redacted).collect()),
        // A URL may carry a password or an `api_key=` query value.
        Value::String(tag, s) if s.contains("://") => {
            Value::String(*tag, crate::net::redact_url(s))
        }
        other => other.clone(),
    }
}
