//! `include` / `exclude` of the `attributes` processor: which metrics,
//! log records or spans the actions apply to.

use otelcol_core::component::Signal;
use otelcol_core::config::ConfigError;
use otelcol_core::pdata::proto::common::v1::KeyValue;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::actions::{value_string, Literal};

/// An attribute that must be present (with this value, if given).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AttributeMatch {
    /// Attribute key.
    pub key: String,
    /// Expected value (strict equality, or a regular expression with `match_type: regexp`).
    pub value: Option<Literal>,
}

/// `include` or `exclude`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    /// `strict` or `regexp`.
    pub match_type: String,
    /// Metric names (metrics pipelines).
    pub metric_names: Vec<String>,
    /// Log bodies (logs pipelines; string bodies).
    pub log_bodies: Vec<String>,
    /// Span names (traces pipelines).
    pub span_names: Vec<String>,
    /// `service.name` of the resource.
    pub services: Vec<String>,
    /// Resource attributes that must all match.
    pub resources: Vec<AttributeMatch>,
    /// Item attributes that must all match.
    pub attributes: Vec<AttributeMatch>,
    /// Go: the regexp cache settings. Accepted with a start-up warning; no effect.
    pub regexp: Option<serde_json::Value>,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            match_type: "strict".into(),
            metric_names: vec![],
            log_bodies: vec![],
            span_names: vec![],
            services: vec![],
            resources: vec![],
            attributes: vec![],
            regexp: None,
        }
    }
}

#[derive(Debug)]
enum Text {
    Strict(String),
    Regex(Regex),
}

impl Text {
    fn matches(&self, s: &str) -> bool {
        match self {
            Text::Strict(t) => t == s,
            Text::Regex(r) => r.is_match(s),
        }
    }
}

/// A compiled `include` / `exclude`.
#[derive(Debug)]
pub struct Matcher {
    names: Vec<Text>,
    services: Vec<Text>,
    resources: Vec<(String, Option<Text>)>,
    attributes: Vec<(String, Option<Text>)>,
}

impl Matcher {
    /// Compiles `c` for `signal`; errors name `path`.
    pub fn new(path: &str, c: &MatchConfig, signal: Signal) -> Result<Self, ConfigError> {
        let regexp = match c.match_type.as_str() {
            "strict" => false,
            "regexp" => true,
            other => {
                return Err(ConfigError::invalid(
                    format!("{path}.match_type"),
                    format!("`{other}`: use strict or regexp"),
                ))
            }
        };
        let text = |s: &str| -> Result<Text, ConfigError> {
            if regexp {
                Regex::new(s)
                    .map(Text::Regex)
                    .map_err(|e| ConfigError::invalid(path, format!("invalid pattern `{s}`: {e}")))
            } else {
                Ok(Text::Strict(s.to_string()))
            }
        };
        let names = match signal {
            Signal::Metrics => &c.metric_names,
            Signal::Logs => &c.log_bodies,
            Signal::Traces => &c.span_names,
        };
        let pairs = |list: &[AttributeMatch]| -> Result<Vec<(String, Option<Text>)>, ConfigError> {
            list.iter()
                .map(|m| {
                    let v = m.value.as_ref().map(|v| match v {
                        Literal::Str(s) => s.clone(),
                        Literal::Int(i) => i.to_string(),
                        Literal::Double(d) => d.to_string(),
                        Literal::Bool(b) => b.to_string(),
                    });
                    Ok((m.key.clone(), v.as_deref().map(text).transpose()?))
                })
                .collect()
        };
        Ok(Self {
            names: names.iter().map(|s| text(s)).collect::<Result<_, _>>()?,
            services: c
                .services
                .iter()
                .map(|s| text(s))
                .collect::<Result<_, _>>()?,
            resources: pairs(&c.resources)?,
            attributes: pairs(&c.attributes)?,
        })
    }

    fn pairs_match(want: &[(String, Option<Text>)], have: &[KeyValue]) -> bool {
        want.iter().all(|(k, v)| {
            let found = have.iter().find(|kv| &kv.key == k);
            match (found, v) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(kv), Some(t)) => kv
                    .value
                    .as_ref()
                    .and_then(value_string)
                    .is_some_and(|s| t.matches(&s)),
            }
        })
    }

    /// Whether the item (name: metric or span name, or log body) of this
    /// resource matches, ignoring item attributes.
    pub fn matches_item(&self, name: Option<&str>, resource: &[KeyValue]) -> bool {
        let name_ok =
            self.names.is_empty() || name.is_some_and(|n| self.names.iter().any(|t| t.matches(n)));
        let service = resource
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(value_string);
        let service_ok = self.services.is_empty()
            || service.is_some_and(|s| self.services.iter().any(|t| t.matches(&s)));
        name_ok && service_ok && Self::pairs_match(&self.resources, resource)
    }

    /// Whether the item's own attributes match.
    pub fn matches_attributes(&self, attrs: &[KeyValue]) -> bool {
        Self::pairs_match(&self.attributes, attrs)
    }
}

/// `include` and `exclude` together.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only what matches is processed.
    pub include: Option<Matcher>,
    /// What matches is skipped.
    pub exclude: Option<Matcher>,
}

impl Filter {
    /// Whether actions apply to an item.
    pub fn applies(&self, name: Option<&str>, resource: &[KeyValue], attrs: &[KeyValue]) -> bool {
        let included = self
            .include
            .as_ref()
            .is_none_or(|m| m.matches_item(name, resource) && m.matches_attributes(attrs));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|m| m.matches_item(name, resource) && m.matches_attributes(attrs));
        included && !excluded
    }
}
