//! Attribute actions, as the Go `attributes` and `resource` processors
//! define them: `insert`, `update`, `upsert`, `delete`, `hash`, `extract`,
//! `convert`, with values from `value`, `from_attribute`, `from_context`
//! and (beyond Go) `from_resource_attribute`.

use otelcol_core::config::ConfigError;
use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValue};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// A literal `value:` in config.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Double(f64),
    /// A string.
    Str(String),
}

impl Literal {
    fn to_any(&self) -> AnyValue {
        let v = match self {
            Literal::Bool(b) => any_value::Value::BoolValue(*b),
            Literal::Int(i) => any_value::Value::IntValue(*i),
            Literal::Double(d) => any_value::Value::DoubleValue(*d),
            Literal::Str(s) => any_value::Value::StringValue(s.clone()),
        };
        AnyValue { value: Some(v) }
    }
}

/// One entry of `actions:`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ActionConfig {
    /// The attribute acted on.
    pub key: Option<String>,
    /// A regular expression: attributes whose key matches (delete, hash), or
    /// named groups to extract (extract).
    pub pattern: Option<String>,
    /// `insert`, `update`, `upsert`, `delete`, `hash`, `extract`, `convert`.
    pub action: String,
    /// A literal value.
    pub value: Option<Literal>,
    /// Copy from another attribute of the same item.
    pub from_attribute: Option<String>,
    /// Copy from the request context: `auth.token`, `metadata.<header>` or `<header>`.
    pub from_context: Option<String>,
    /// Copy from a resource attribute (beyond the Go processor).
    pub from_resource_attribute: Option<String>,
    /// For `convert`: `int`, `double` or `string`.
    pub converted_type: Option<String>,
    /// For `hash`: HMAC-SHA-256 with this key instead of plain SHA-256.
    pub hmac_key: Option<String>,
}

#[derive(Debug)]
enum Source {
    Value(AnyValue),
    Attribute(String),
    Context(String),
    Resource(String),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Double,
    Str,
}

#[derive(Debug)]
enum Op {
    Insert(Source),
    Update(Source),
    Upsert(Source),
    Delete,
    Hash(Option<ring::hmac::Key>),
    Extract(Regex),
    Convert(Kind),
}

#[derive(Debug)]
enum Target {
    Key(String),
    Pattern(Regex),
}

/// A checked action.
#[derive(Debug)]
pub struct Action {
    target: Target,
    op: Op,
}

fn regex(path: &str, p: &str) -> Result<Regex, ConfigError> {
    Regex::new(p).map_err(|e| ConfigError::invalid(path, format!("invalid pattern `{p}`: {e}")))
}

/// Checks and compiles `actions`; errors name `actions[i]`.
pub fn compile(actions: &[ActionConfig]) -> Result<Vec<Action>, ConfigError> {
    actions
        .iter()
        .enumerate()
        .map(|(i, a)| compile_one(&format!("actions[{i}]"), a))
        .collect()
}

fn compile_one(path: &str, a: &ActionConfig) -> Result<Action, ConfigError> {
    let err = |m: &str| ConfigError::invalid(path, m.to_string());
    let source = || -> Result<Source, ConfigError> {
        let given = [
            a.value.is_some(),
            a.from_attribute.is_some(),
            a.from_context.is_some(),
            a.from_resource_attribute.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(err("exactly one of value, from_attribute, from_context, from_resource_attribute is required"));
        }
        Ok(if let Some(v) = &a.value {
            Source::Value(v.to_any())
        } else if let Some(f) = &a.from_attribute {
            Source::Attribute(f.clone())
        } else if let Some(c) = &a.from_context {
            Source::Context(c.clone())
        } else {
            Source::Resource(a.from_resource_attribute.clone().unwrap_or_default())
        })
    };
    let key = || {
        a.key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| err("`key` is required"))
    };
    let key_or_pattern = || -> Result<Target, ConfigError> {
        match (&a.key, &a.pattern) {
            (Some(k), None) if !k.is_empty() => Ok(Target::Key(k.clone())),
            (None, Some(p)) => Ok(Target::Pattern(regex(path, p)?)),
            _ => Err(err("exactly one of key or pattern is required")),
        }
    };
    let (target, op) = match a.action.as_str() {
        "insert" => (Target::Key(key()?), Op::Insert(source()?)),
        "update" => (Target::Key(key()?), Op::Update(source()?)),
        "upsert" => (Target::Key(key()?), Op::Upsert(source()?)),
        "delete" => (key_or_pattern()?, Op::Delete),
        "hash" => {
            let hmac = a.hmac_key.as_deref().map(|k| {
                if k.is_empty() {
                    Err(err("hmac_key is empty (is its environment variable set?)"))
                } else {
                    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.as_bytes()))
                }
            });
            (key_or_pattern()?, Op::Hash(hmac.transpose()?))
        }
        "extract" => {
            let p = a.pattern.as_deref().ok_or_else(|| err("extract needs `pattern` with named groups"))?;
            let re = regex(path, p)?;
            if re.capture_names().flatten().next().is_none() {
                return Err(err("extract needs `pattern` with at least one named group, e.g. (?P<user>[^@]+)"));
            }
            (Target::Key(key()?), Op::Extract(re))
        }
        "convert" => {
            let kind = match a.converted_type.as_deref() {
                Some("int") => Kind::Int,
                Some("double") => Kind::Double,
                Some("string") => Kind::Str,
                other => return Err(err(&format!("converted_type must be int, double or string, got {other:?}"))),
            };
            (Target::Key(key()?), Op::Convert(kind))
        }
        other => {
            return Err(err(&format!(
                "unknown action `{other}`; use insert, update, upsert, delete, hash, extract or convert"
            )))
        }
    };
    Ok(Action { target, op })
}

/// The string form of a value, as hashing and conversion read it.
pub fn value_string(v: &AnyValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        _ => return None,
    })
}

fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

pub use otelcol_core::ottl::sha256_hex;

fn convert(v: &AnyValue, kind: Kind) -> Option<AnyValue> {
    use any_value::Value as V;
    let out = match (kind, v.value.as_ref()?) {
        (Kind::Int, V::IntValue(i)) => V::IntValue(*i),
        (Kind::Int, V::DoubleValue(d)) => V::IntValue(*d as i64),
        (Kind::Int, V::BoolValue(b)) => V::IntValue(i64::from(*b)),
        (Kind::Int, V::StringValue(s)) => V::IntValue(s.trim().parse().ok()?),
        (Kind::Double, V::DoubleValue(d)) => V::DoubleValue(*d),
        (Kind::Double, V::IntValue(i)) => V::DoubleValue(*i as f64),
        (Kind::Double, V::BoolValue(b)) => V::DoubleValue(f64::from(u8::from(*b))),
        (Kind::Double, V::StringValue(s)) => V::DoubleValue(s.trim().parse().ok()?),
        (Kind::Str, _) => V::StringValue(value_string(v)?),
        _ => return None,
    };
    Some(AnyValue { value: Some(out) })
}

fn position(attrs: &[KeyValue], key: &str) -> Option<usize> {
    attrs.iter().position(|kv| kv.key == key)
}

fn resolve(
    source: &Source,
    attrs: &[KeyValue],
    resource: &[KeyValue],
    ctx: &RequestContext,
) -> Option<AnyValue> {
    let find = |list: &[KeyValue], k: &str| {
        list.iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
    };
    match source {
        Source::Value(v) => Some(v.clone()),
        Source::Attribute(k) => find(attrs, k),
        Source::Resource(k) => find(resource, k),
        Source::Context(c) => {
            let text = match c.as_str() {
                "auth.token" => ctx.bearer_token().map(|t| t.expose().to_string()),
                _ => ctx
                    .header(c.strip_prefix("metadata.").unwrap_or(c))
                    .map(str::to_string),
            };
            text.map(string_value)
        }
    }
}

/// Applies `actions` in order to `attrs`; `resource` and `ctx` feed the
/// `from_resource_attribute` and `from_context` sources.
pub fn apply(
    actions: &[Action],
    attrs: &mut Vec<KeyValue>,
    resource: &[KeyValue],
    ctx: &RequestContext,
) {
    for a in actions {
        match (&a.target, &a.op) {
            (Target::Key(k), Op::Insert(s) | Op::Update(s) | Op::Upsert(s)) => {
                let at = position(attrs, k);
                let allowed = match a.op {
                    Op::Insert(_) => at.is_none(),
                    Op::Update(_) => at.is_some(),
                    _ => true,
                };
                if !allowed {
                    continue;
                }
                let Some(v) = resolve(s, attrs, resource, ctx) else {
                    continue;
                };
                match at {
                    Some(i) => attrs[i].value = Some(v),
                    None => attrs.push(KeyValue {
                        key: k.clone(),
                        value: Some(v),
                        ..Default::default()
                    }),
                }
            }
            (Target::Key(k), Op::Delete) => attrs.retain(|kv| &kv.key != k),
            (Target::Pattern(re), Op::Delete) => attrs.retain(|kv| !re.is_match(&kv.key)),
            (target, Op::Hash(hmac)) => {
                for kv in attrs.iter_mut() {
                    let hit = match target {
                        Target::Key(k) => &kv.key == k,
                        Target::Pattern(re) => re.is_match(&kv.key),
                    };
                    if let Some(text) = hit
                        .then(|| kv.value.as_ref().and_then(value_string))
                        .flatten()
                    {
                        kv.value = Some(string_value(sha256_hex(text.as_bytes(), hmac.as_ref())));
                    }
                }
            }
            (Target::Key(k), Op::Extract(re)) => {
                let source = attrs
                    .iter()
                    .find(|kv| &kv.key == k)
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(value_string);
                let Some(text) = source else { continue };
                let Some(caps) = re.captures(&text) else {
                    continue;
                };
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        let v = string_value(m.as_str().to_string());
                        match position(attrs, name) {
                            Some(i) => attrs[i].value = Some(v),
                            None => attrs.push(KeyValue {
                                key: name.to_string(),
                                value: Some(v),
                                ..Default::default()
                            }),
                        }
                    }
                }
            }
            (Target::Key(k), Op::Convert(kind)) => {
                if let Some(kv) = attrs.iter_mut().find(|kv| &kv.key == k) {
                    if let Some(v) = kv.value.as_ref().and_then(|v| convert(v, *kind)) {
                        kv.value = Some(v);
                    }
                }
            }
            _ => {}
        }
    }
}
