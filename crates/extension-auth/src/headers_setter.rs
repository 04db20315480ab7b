//! `headers_setter` (the Go contrib extension): a client authenticator
//! that sets headers on an exporter's requests, from a fixed `value` or
//! from the request's context. The context a request keeps here (in the
//! sending queue too) is its caller's bearer token, so `from_context:
//! authorization` forwards `Bearer <token>`: a second tier of collectors
//! then sends each client's data under its own token. Other context keys
//! and `from_attribute` find nothing here and fall back to `default_value`
//! (as Go does when the metadata is missing), with a start-up warning.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use otelcol_core::component::{
    ClientAuthenticator, ComponentError, CreateSettings, Extension, ExtensionFactory, Factory,
    Lifecycle,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::BearerToken;
use otelcol_core::{Signal, Stability};
use serde::{Deserialize, Serialize};

/// `extensions.headers_setter`, with the Go extension's keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HeadersSetterConfig {
    /// The headers to set, in order.
    pub headers: Vec<HeaderRule>,
}

/// One `headers[]` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderRule {
    /// The header's name (required).
    pub key: String,
    /// `upsert` (default), `insert` (only if not set yet), `update` (only
    /// if set), `delete`.
    pub action: Action,
    /// A fixed value.
    pub value: Option<String>,
    /// A context key: `authorization` is the caller's bearer token (as
    /// `Bearer <token>`); other keys are not kept here.
    pub from_context: Option<String>,
    /// Go: an attribute of the caller's authentication. Not kept here:
    /// `default_value` is used.
    pub from_attribute: Option<String>,
    /// Used when the context gives no value.
    pub default_value: Option<String>,
}

/// What a rule does to its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Set it, replacing a value set before.
    #[default]
    Upsert,
    /// Set it only if no value is set yet.
    Insert,
    /// Replace it only if a value is set.
    Update,
    /// Remove it.
    Delete,
}

impl HeadersSetterConfig {
    /// Checks what serde cannot: names and values are valid header text,
    /// and each rule has one source (none for `delete`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, r) in self.headers.iter().enumerate() {
            let path = format!("headers.{i}");
            HeaderName::try_from(r.key.as_str()).map_err(|_| {
                ConfigError::invalid(
                    format!("{path}.key"),
                    format!("`{}` is not a header name", r.key),
                )
            })?;
            let sources = [&r.value, &r.from_context, &r.from_attribute]
                .iter()
                .filter(|s| s.is_some())
                .count();
            match (r.action, sources) {
                (Action::Delete, _) => {}
                (_, 1) => {}
                (_, n) => {
                    return Err(ConfigError::invalid(
                        path,
                        format!("exactly one of value, from_context or from_attribute must be set, {n} found"),
                    ))
                }
            }
            for (k, v) in [("value", &r.value), ("default_value", &r.default_value)] {
                if let Some(v) = v {
                    HeaderValue::try_from(v.as_str()).map_err(|_| {
                        ConfigError::invalid(format!("{path}.{k}"), "is not valid header text")
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// The `headers_setter` extension.
#[derive(Debug)]
pub struct HeadersSetter {
    rules: Vec<(HeaderName, Action, Source)>,
}

#[derive(Debug)]
enum Source {
    Fixed(HeaderValue),
    Caller(Option<HeaderValue>),
    Default(Option<HeaderValue>),
}

impl HeadersSetter {
    /// The extension for a validated `config`.
    pub fn new(config: &HeadersSetterConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let value = |v: &Option<String>| v.as_deref().and_then(|v| HeaderValue::try_from(v).ok());
        let mut rules = vec![];
        for r in &config.headers {
            let name = HeaderName::try_from(r.key.as_str())
                .map_err(|_| ConfigError::invalid("headers", "bad header name"))?;
            let source = match (&r.value, &r.from_context) {
                (Some(_), _) => {
                    Source::Fixed(value(&r.value).unwrap_or(HeaderValue::from_static("")))
                }
                (None, Some(k)) if k.eq_ignore_ascii_case("authorization") => {
                    Source::Caller(value(&r.default_value))
                }
                _ => Source::Default(value(&r.default_value)),
            };
            rules.push((name, r.action, source));
        }
        Ok(Self { rules })
    }

    /// The context keys and attributes of `config` that always fall back
    /// to `default_value` here, for the start-up warning.
    pub fn unavailable(config: &HeadersSetterConfig) -> Vec<String> {
        config
            .headers
            .iter()
            .filter_map(|r| match (&r.from_context, &r.from_attribute) {
                (Some(k), _) if !k.eq_ignore_ascii_case("authorization") => {
                    Some(format!("from_context: {k}"))
                }
                (_, Some(a)) => Some(format!("from_attribute: {a}")),
                _ => None,
            })
            .collect()
    }
}

impl ClientAuthenticator for HeadersSetter {
    fn headers(&self, caller: Option<&BearerToken>) -> Vec<(HeaderName, HeaderValue)> {
        let mut out: Vec<(HeaderName, HeaderValue)> = vec![];
        for (name, action, source) in &self.rules {
            let at = out.iter().position(|(n, _)| n == name);
            if *action == Action::Delete {
                out.retain(|(n, _)| n != name);
                continue;
            }
            let value = match source {
                Source::Fixed(v) => Some(v.clone()),
                Source::Caller(default) => caller
                    .and_then(|t| HeaderValue::try_from(format!("Bearer {}", t.expose())).ok())
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
                    .or_else(|| default.clone()),
                Source::Default(default) => default.clone(),
            };
            let Some(value) = value else { continue };
            match (action, at) {
                (Action::Upsert, Some(i)) | (Action::Update, Some(i)) => out[i].1 = value,
                (Action::Upsert | Action::Insert, None) => out.push((name.clone(), value)),
                _ => {}
            }
        }
        out
    }
}

impl Lifecycle for HeadersSetter {}

impl Extension for HeadersSetter {
    fn client_authenticator(self: Arc<Self>) -> Option<Arc<dyn ClientAuthenticator>> {
        Some(self)
    }
}

/// The factory for type `headers_setter`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadersSetterFactory;

impl Factory for HeadersSetterFactory {
    fn type_name(&self) -> &'static str {
        "headers_setter"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<HeadersSetterConfig>(config)?.validate()
    }
}

impl ExtensionFactory for HeadersSetterFactory {
    fn create(
        &self,
        settings: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        let config: HeadersSetterConfig = decode(config)?;
        for what in HeadersSetter::unavailable(&config) {
            tracing::warn!(
                extension = %settings.id,
                "{what} is not kept with requests in this build (only the caller's bearer token is, as from_context: authorization); its default_value is used"
            );
        }
        Ok(Arc::new(HeadersSetter::new(&config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setter(yaml: &str) -> HeadersSetter {
        HeadersSetter::new(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn shown(h: Vec<(HeaderName, HeaderValue)>) -> Vec<(String, String)> {
        h.into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn the_callers_token_is_forwarded_and_the_actions_apply_in_order() {
        let s = setter(
            "headers:
  - {key: Authorization, from_context: authorization, default_value: Bearer fallback}
  - {key: X-Team, value: ai}
  - {key: X-Team, action: insert, value: ignored}
  - {key: X-Tenant, action: update, value: never}
  - {key: X-Scope, from_context: tenant, default_value: shared}
  - {key: X-Drop, value: x}
  - {key: X-Drop, action: delete}",
        );
        let token = BearerToken::new("caller-secret");
        assert_eq!(
            shown(s.headers(Some(&token))),
            [
                ("authorization", "Bearer caller-secret"),
                ("x-team", "ai"),
                ("x-scope", "shared")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            shown(s.headers(None))[0],
            ("authorization".to_string(), "Bearer fallback".to_string())
        );
    }

    #[test]
    fn a_rule_needs_exactly_one_source() {
        let c: HeadersSetterConfig =
            serde_yaml::from_str("headers: [{key: a, value: x, from_context: y}]").unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "headers.0: exactly one of value, from_context or from_attribute must be set, 2 found"
        );
    }
}
