//! The `redaction` processor, with the Go keys: deletes every attribute not
//! on the allow list, masks (or hashes) values whose key or content is
//! blocked, on resources, data points, log records (and their bodies),
//! spans and span events, for sites that forward raw events.

use otelcol_core::config::{ConfigError, RawConfig};
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValue};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// `processors.redaction`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    /// Keep every key (then only values are checked). With `false`, keys
    /// not in `allowed_keys` are deleted; an empty list deletes all.
    pub allow_all_keys: bool,
    /// Keys kept when `allow_all_keys` is false.
    pub allowed_keys: Vec<String>,
    /// Keys passed through untouched: never deleted, never masked.
    pub ignored_keys: Vec<String>,
    /// Regexes on keys: the whole value of a matching key is masked.
    pub blocked_key_patterns: Vec<String>,
    /// Regexes on values: each match inside a value is masked.
    pub blocked_values: Vec<String>,
    /// Regexes on values: a matching value is never masked.
    pub allowed_values: Vec<String>,
    /// Mask with this hash of the masked text (hex) instead of `****`.
    pub hash_function: HashFunction,
    /// Check and mask the text form of numbers and booleans too (they
    /// become strings when masked); by default only strings are.
    pub redact_all_types: bool,
    /// Attributes added to each item saying what was done.
    pub summary: Summary,
    /// Go: SQL statement obfuscation. Accepted, no effect (see
    /// `docs/compatibility.md`).
    pub db_sanitizer: Option<RawConfig>,
    /// Go: URL sanitizing in span names. Accepted, no effect.
    pub url_sanitizer: Option<RawConfig>,
}

/// `hash_function`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HashFunction {
    /// No hash: masked text becomes `****` (Go's empty value).
    #[default]
    #[serde(rename = "")]
    None,
    /// MD5, hex.
    Md5,
    /// SHA-1, hex.
    Sha1,
    /// SHA3-256, hex.
    Sha3,
}

/// `summary`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    /// Counts and the keys concerned (`redaction.redacted.keys`, …).
    Debug,
    /// Counts only (`redaction.redacted.count`, …).
    Info,
    /// Nothing added (also Go's empty value).
    #[default]
    #[serde(alias = "")]
    Silent,
}

const MASK: &str = "****";

/// What was done to one attribute list (or body), for the summary.
#[derive(Default)]
struct Done {
    redacted: Vec<String>,
    masked: Vec<String>,
    allowed: Vec<String>,
    ignored: Vec<String>,
}

/// A checked `redaction` config, ready to apply.
#[derive(Debug)]
pub struct Redaction {
    allow_all_keys: bool,
    allowed_keys: Vec<String>,
    ignored_keys: Vec<String>,
    blocked_keys: Vec<Regex>,
    blocked_values: Vec<Regex>,
    allowed_values: Vec<Regex>,
    hash: HashFunction,
    all_types: bool,
    summary: Summary,
}

/// The attributes the summary writes, always kept.
const SUMMARY_KEYS: [&str; 5] = [
    "redaction.redacted.keys",
    "redaction.redacted.count",
    "redaction.masked.keys",
    "redaction.masked.count",
    "redaction.ignored.count",
];

fn regexes(list: &[String], key: &str) -> Result<Vec<Regex>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            Regex::new(p).map_err(|e| {
                ConfigError::invalid(format!("{key}.{i}"), format!("invalid pattern `{p}`: {e}"))
            })
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Redaction {
    /// Compiles `c`; a pattern that does not compile is named by its key.
    pub fn new(c: &RedactionConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            allow_all_keys: c.allow_all_keys,
            allowed_keys: c.allowed_keys.clone(),
            ignored_keys: c.ignored_keys.clone(),
            blocked_keys: regexes(&c.blocked_key_patterns, "blocked_key_patterns")?,
            blocked_values: regexes(&c.blocked_values, "blocked_values")?,
            allowed_values: regexes(&c.allowed_values, "allowed_values")?,
            hash: c.hash_function,
            all_types: c.redact_all_types,
            summary: c.summary,
        })
    }

    fn mask(&self, text: &str) -> String {
        match self.hash {
            HashFunction::None => MASK.to_string(),
            HashFunction::Md5 => {
                use md5::Digest;
                hex(&md5::Md5::digest(text.as_bytes()))
            }
            HashFunction::Sha1 => hex(ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                text.as_bytes(),
            )
            .as_ref()),
            HashFunction::Sha3 => {
                use sha3::Digest;
                hex(&sha3::Sha3_256::digest(text.as_bytes()))
            }
        }
    }

    /// The text the value checks read: strings, and with
    /// `redact_all_types` the text form of numbers and booleans.
    fn text(&self, v: &AnyValue) -> Option<String> {
        match v.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::IntValue(i) if self.all_types => Some(i.to_string()),
            any_value::Value::DoubleValue(d) if self.all_types => Some(d.to_string()),
            any_value::Value::BoolValue(b) if self.all_types => Some(b.to_string()),
            _ => None,
        }
    }

    /// `text` with every match of a blocked value masked.
    fn mask_matches(&self, text: &str) -> String {
        let mut out = text.to_string();
        for re in &self.blocked_values {
            if re.is_match(&out) {
                out = re
                    .replace_all(&out, |c: &regex::Captures<'_>| self.mask(&c[0]))
                    .into_owned();
            }
        }
        out
    }

    fn keeps_key(&self, key: &str) -> bool {
        self.allow_all_keys
            || self.allowed_keys.iter().any(|k| k == key)
            || SUMMARY_KEYS.contains(&key)
    }

    /// Masks one value reached by `key` (an attribute, a body or a part of
    /// one), recording what was done in `done`.
    fn value(&self, key: &str, v: &mut AnyValue, done: &mut Done) {
        match v.value.as_mut() {
            Some(any_value::Value::KvlistValue(list)) => {
                self.list(key, &mut list.values, done);
                return;
            }
            Some(any_value::Value::ArrayValue(items)) => {
                for (i, item) in items.values.iter_mut().enumerate() {
                    self.value(&format!("{key}.[{i}]"), item, done);
                }
                return;
            }
            _ => {}
        }
        let Some(text) = self.text(v) else {
            return;
        };
        if self.allowed_values.iter().any(|re| re.is_match(&text)) {
            done.allowed.push(key.to_string());
            return;
        }
        let masked = self.mask_matches(&text);
        if masked != text {
            done.masked.push(key.to_string());
            v.value = Some(any_value::Value::StringValue(masked));
        }
    }

    /// Applies the rules to the entries of a map value (a body's), keys
    /// named from `prefix`.
    fn list(&self, prefix: &str, entries: &mut Vec<KeyValue>, done: &mut Done) {
        entries.retain_mut(|kv| {
            let key = if prefix.is_empty() {
                kv.key.clone()
            } else {
                format!("{prefix}.{}", kv.key)
            };
            self.entry(kv, key, done)
        });
    }

    /// One entry: `false` when it is to be deleted.
    fn entry(&self, kv: &mut KeyValue, shown: String, done: &mut Done) -> bool {
        if self.ignored_keys.contains(&kv.key) {
            done.ignored.push(shown);
            return true;
        }
        if !self.keeps_key(&kv.key) {
            done.redacted.push(shown);
            return false;
        }
        let Some(v) = kv.value.as_mut() else {
            return true;
        };
        if self.blocked_keys.iter().any(|re| re.is_match(&kv.key)) {
            if let Some(text) = self.text(v) {
                if self.allowed_values.iter().any(|re| re.is_match(&text)) {
                    done.allowed.push(shown);
                } else {
                    v.value = Some(any_value::Value::StringValue(self.mask(&text)));
                    done.masked.push(shown);
                }
                return true;
            }
        }
        self.value(&shown, v, done);
        true
    }

    /// Applies the rules to an attribute list and writes the summary.
    pub fn attributes(&self, attrs: &mut Vec<KeyValue>) {
        let mut done = Done::default();
        attrs.retain_mut(|kv| {
            let key = kv.key.clone();
            self.entry(kv, key, &mut done)
        });
        self.summarize(attrs, &done, "redaction");
    }

    /// Applies the rules to a log record's body; the summary goes on its
    /// attributes (`redaction.body.*`).
    pub fn body(&self, body: &mut Option<AnyValue>, attrs: &mut Vec<KeyValue>) {
        let Some(b) = body.as_mut() else {
            return;
        };
        let mut done = Done::default();
        match b.value.as_mut() {
            Some(any_value::Value::KvlistValue(list)) => self.list("", &mut list.values, &mut done),
            _ => self.value("body", b, &mut done),
        }
        self.summarize(attrs, &done, "redaction.body");
    }

    fn summarize(&self, attrs: &mut Vec<KeyValue>, done: &Done, prefix: &str) {
        if self.summary == Summary::Silent {
            return;
        }
        let parts: [(&str, &[String], bool); 4] = [
            ("redacted", &done.redacted, true),
            ("masked", &done.masked, true),
            ("allowed", &done.allowed, true),
            ("ignored", &done.ignored, false),
        ];
        for (what, keys, listed) in parts {
            if keys.is_empty() {
                continue;
            }
            if self.summary == Summary::Debug && listed {
                let name = format!("{prefix}.{what}.keys");
                let mut all: Vec<String> = keys.to_vec();
                if let Some(before) = take(attrs, &name).and_then(|v| match v.value {
                    Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s),
                    _ => None,
                }) {
                    all.extend(before.split(',').map(str::to_string));
                }
                all.sort();
                put(attrs, name, any_value::Value::StringValue(all.join(",")));
            }
            let name = format!("{prefix}.{what}.count");
            let before = match take(attrs, &name).and_then(|v| v.value) {
                Some(any_value::Value::IntValue(i)) => i,
                _ => 0,
            };
            let n = i64::try_from(keys.len()).unwrap_or(i64::MAX);
            put(
                attrs,
                name,
                any_value::Value::IntValue(before.saturating_add(n)),
            );
        }
    }

    /// Applies the rules to every resource and data point.
    pub fn metrics(&self, data: &mut Metrics) {
        for rm in &mut data.resource_metrics {
            if let Some(r) = rm.resource.as_mut() {
                self.attributes(&mut r.attributes);
            }
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    for attrs in crate::points(&mut m.data) {
                        self.attributes(attrs);
                    }
                }
            }
        }
    }

    /// Applies the rules to every resource, log record and body.
    pub fn logs(&self, data: &mut Logs) {
        for rl in &mut data.resource_logs {
            if let Some(r) = rl.resource.as_mut() {
                self.attributes(&mut r.attributes);
            }
            for sl in &mut rl.scope_logs {
                for r in &mut sl.log_records {
                    self.attributes(&mut r.attributes);
                    self.body(&mut r.body, &mut r.attributes);
                }
            }
        }
    }

    /// Applies the rules to every resource, span and span event.
    pub fn traces(&self, data: &mut Traces) {
        for rs in &mut data.resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                self.attributes(&mut r.attributes);
            }
            for ss in &mut rs.scope_spans {
                for s in &mut ss.spans {
                    self.attributes(&mut s.attributes);
                    for e in &mut s.events {
                        self.attributes(&mut e.attributes);
                    }
                }
            }
        }
    }
}

fn take(attrs: &mut Vec<KeyValue>, key: &str) -> Option<AnyValue> {
    let at = attrs.iter().position(|kv| kv.key == key)?;
    attrs.remove(at).value
}

fn put(attrs: &mut Vec<KeyValue>, key: String, v: any_value::Value) {
    attrs.push(KeyValue {
        key,
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    });
}
