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

/// One entry of `libraries`: an instrumentation scope.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LibraryMatch {
    /// Scope name (strict or regexp, as `match_type`).
    pub name: String,
    /// Scope version; any version when unset.
    pub version: Option<String>,
}

/// `log_severity_number`: records at or above `min` match.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeverityMatch {
    /// A severity number (1–24) or name (`TRACE`, `DEBUG`, `INFO`, `WARN`,
    /// `ERROR`, `FATAL`, each also with a suffix 2–4, as `INFO3`).
    pub min: Literal,
    /// Whether records with no severity (0) match.
    #[serde(default)]
    pub match_undefined: bool,
}

/// The OTLP severity number of `name` (`INFO` = 9, `WARN2` = 14).
fn severity_number(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let (base, offset) = match upper.char_indices().find(|(_, c)| c.is_ascii_digit()) {
        Some((i, _)) => (&upper[..i], upper[i..].parse::<i32>().ok()?.checked_sub(1)?),
        None => (upper.as_str(), 0),
    };
    let first = match base {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => return None,
    };
    (0..4).contains(&offset).then_some(first + offset)
}

/// The span kind names Go's filter accepts, by OTLP value.
const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];

/// What a filter looks at beyond the item's own attributes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Item<'a> {
    /// Metric or span name, or log body text.
    pub name: Option<&'a str>,
    /// The resource's attributes.
    pub resource: &'a [KeyValue],
    /// The instrumentation scope's name and version.
    pub scope: Option<(&'a str, &'a str)>,
    /// The span's kind (traces).
    pub span_kind: Option<i32>,
    /// The record's severity text and number (logs).
    pub severity: Option<(&'a str, i32)>,
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
    /// Instrumentation scopes (name, and version if given), any of which matches.
    pub libraries: Vec<LibraryMatch>,
    /// Span kinds (`SPAN_KIND_SERVER`, …; traces pipelines).
    pub span_kinds: Vec<String>,
    /// Log severity texts (logs pipelines).
    pub log_severity_texts: Vec<String>,
    /// The lowest log severity number (logs pipelines).
    pub log_severity_number: Option<SeverityMatch>,
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
            libraries: vec![],
            span_kinds: vec![],
            log_severity_texts: vec![],
            log_severity_number: None,
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
    libraries: Vec<(Text, Option<Text>)>,
    span_kinds: Vec<Text>,
    severity_texts: Vec<Text>,
    severity: Option<(i32, bool)>,
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
        let severity = match &c.log_severity_number {
            None => None,
            Some(m) => {
                let min = match &m.min {
                    Literal::Int(i) if (1..=24).contains(i) => *i as i32,
                    Literal::Str(s) => severity_number(s).ok_or_else(|| {
                        ConfigError::invalid(
                            format!("{path}.log_severity_number.min"),
                            format!("`{s}` is not a severity (TRACE, DEBUG, INFO, WARN, ERROR, FATAL, or with 2-4 after it)"),
                        )
                    })?,
                    other => {
                        return Err(ConfigError::invalid(
                            format!("{path}.log_severity_number.min"),
                            format!("{other:?} is not a severity number from 1 to 24"),
                        ))
                    }
                };
                Some((min, m.match_undefined))
            }
        };
        for kind in &c.span_kinds {
            if !regexp && !SPAN_KINDS.contains(&kind.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{path}.span_kinds"),
                    format!("`{kind}`: use one of {}", SPAN_KINDS.join(", ")),
                ));
            }
        }
        Ok(Self {
            libraries: c
                .libraries
                .iter()
                .map(|l| Ok((text(&l.name)?, l.version.as_deref().map(text).transpose()?)))
                .collect::<Result<_, ConfigError>>()?,
            span_kinds: c
                .span_kinds
                .iter()
                .map(|s| text(s))
                .collect::<Result<_, _>>()?,
            severity_texts: c
                .log_severity_texts
                .iter()
                .map(|s| text(s))
                .collect::<Result<_, _>>()?,
            severity,
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

    /// Whether the item (its name: metric or span name, or log body; its
    /// resource, scope, span kind, severity) matches, ignoring its own
    /// attributes. Every property configured must match; a property the
    /// item does not have (a severity on a metric) does not.
    pub fn matches_item(&self, item: &Item) -> bool {
        let any = |list: &[Text], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|t| t.matches(v)))
        };
        let service = item
            .resource
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(value_string);
        let library_ok = self.libraries.is_empty()
            || item.scope.is_some_and(|(name, version)| {
                self.libraries
                    .iter()
                    .any(|(n, v)| n.matches(name) && v.as_ref().is_none_or(|v| v.matches(version)))
            });
        let kind = item
            .span_kind
            .and_then(|k| usize::try_from(k).ok())
            .and_then(|k| SPAN_KINDS.get(k).copied());
        let severity_ok = self.severity.is_none_or(|(min, undefined)| {
            item.severity
                .is_some_and(|(_, n)| if n == 0 { undefined } else { n >= min })
        });
        any(&self.names, item.name)
            && any(&self.services, service.as_deref())
            && library_ok
            && any(&self.span_kinds, kind)
            && any(&self.severity_texts, item.severity.map(|(t, _)| t))
            && severity_ok
            && Self::pairs_match(&self.resources, item.resource)
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
    pub fn applies(&self, item: &Item, attrs: &[KeyValue]) -> bool {
        let included = self
            .include
            .as_ref()
            .is_none_or(|m| m.matches_item(item) && m.matches_attributes(attrs));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|m| m.matches_item(item) && m.matches_attributes(attrs));
        included && !excluded
    }
}
