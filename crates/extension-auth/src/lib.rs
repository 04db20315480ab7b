//! Server authenticators for the OTLP receiver (`auth.authenticator`).
//!
//! - `multitudes_auth`: reads `Authorization: Bearer <token>` (header name
//!   and scheme case-insensitive, token kept as sent) and puts the token in
//!   the request context; never refuses. A request without a token goes on,
//!   and the exporter falls back to its `fallback_token`.
//! - `bearertokenauth`: accepts only the configured tokens (`token`,
//!   `tokens`, or one per line in `filename`), compared in constant time;
//!   anything else is refused (HTTP 401, gRPC Unauthenticated).
//!
//! Both can keep chosen request headers (`headers`) in the context, for the
//! aggregation processor's `lookup: [header:<name>]`.

use std::sync::Arc;

use otelcol_core::component::{
    AuthError, ComponentError, CreateSettings, Extension, ExtensionFactory, Factory, Lifecycle,
    ServerAuthenticator,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::consumer::{AuthData, BearerToken};
use otelcol_core::{Signal, Stability};
use serde::{Deserialize, Serialize};

/// `extensions.multitudes_auth`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MultitudesAuthConfig {
    /// Header carrying the token.
    pub header: String,
    /// Scheme before the token.
    pub scheme: String,
    /// Request headers to keep in the context (lower-case names).
    pub headers: Vec<String>,
}

impl Default for MultitudesAuthConfig {
    fn default() -> Self {
        Self {
            header: "authorization".into(),
            scheme: "Bearer".into(),
            headers: vec![],
        }
    }
}

/// `extensions.bearertokenauth`, with the Go extension's keys.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BearerTokenAuthConfig {
    /// Header carrying the token.
    pub header: String,
    /// Scheme before the token.
    pub scheme: String,
    /// One accepted token.
    pub token: String,
    /// Accepted tokens.
    pub tokens: Vec<String>,
    /// A file with accepted tokens, one per line (read at start).
    pub filename: String,
    /// Request headers to keep in the context (lower-case names).
    pub headers: Vec<String>,
}

impl Default for BearerTokenAuthConfig {
    fn default() -> Self {
        Self {
            header: "authorization".into(),
            scheme: "Bearer".into(),
            token: String::new(),
            tokens: vec![],
            filename: String::new(),
            headers: vec![],
        }
    }
}

/// Reads `<scheme> <token>` from `header`; scheme compared case-insensitively.
fn bearer(headers: &http::HeaderMap, header: &str, scheme: &str) -> Option<String> {
    let value = headers.get(header)?.to_str().ok()?.trim();
    let (s, token) = value.split_once(' ')?;
    let token = token.trim();
    (s.eq_ignore_ascii_case(scheme) && !token.is_empty()).then(|| token.to_string())
}

fn kept(headers: &http::HeaderMap, names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|n| {
            let v = headers.get(n.as_str())?.to_str().ok()?;
            Some((n.to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `multitudes_auth` extension.
pub struct MultitudesAuth {
    config: MultitudesAuthConfig,
}

impl Lifecycle for MultitudesAuth {}

impl Extension for MultitudesAuth {
    fn server_authenticator(self: Arc<Self>) -> Option<Arc<dyn ServerAuthenticator>> {
        Some(self)
    }
}

impl ServerAuthenticator for MultitudesAuth {
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<AuthData, AuthError> {
        Ok(AuthData {
            token: bearer(headers, &self.config.header, &self.config.scheme).map(BearerToken::new),
            headers: kept(headers, &self.config.headers),
        })
    }
}

/// The `bearertokenauth` extension.
pub struct BearerTokenAuth {
    config: BearerTokenAuthConfig,
    accepted: std::sync::RwLock<Vec<String>>,
}

#[async_trait::async_trait]
impl Lifecycle for BearerTokenAuth {
    async fn start(&self, _host: &otelcol_core::component::Host) -> Result<(), ComponentError> {
        let mut tokens: Vec<String> = self.config.tokens.clone();
        if !self.config.token.is_empty() {
            tokens.push(self.config.token.clone());
        }
        if !self.config.filename.is_empty() {
            let text = std::fs::read_to_string(&self.config.filename).map_err(|source| {
                ComponentError::Io {
                    context: format!(
                        "reading bearertokenauth filename `{}`",
                        self.config.filename
                    ),
                    source,
                }
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        if tokens.is_empty() {
            return Err(ComponentError::Failed(
                "bearertokenauth: no token configured (token, tokens or filename)".into(),
            ));
        }
        *self
            .accepted
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokens;
        Ok(())
    }
}

impl Extension for BearerTokenAuth {
    fn server_authenticator(self: Arc<Self>) -> Option<Arc<dyn ServerAuthenticator>> {
        Some(self)
    }
}

impl ServerAuthenticator for BearerTokenAuth {
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<AuthData, AuthError> {
        let token = bearer(headers, &self.config.header, &self.config.scheme)
            .ok_or_else(|| AuthError("missing or malformed bearer token".into()))?;
        let accepted = self
            .accepted
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ok = false;
        for t in accepted.iter() {
            ok |= constant_time_eq(t.as_bytes(), token.as_bytes());
        }
        if !ok {
            return Err(AuthError("bearer token not accepted".into()));
        }
        Ok(AuthData {
            token: Some(BearerToken::new(token)),
            headers: kept(headers, &self.config.headers),
        })
    }
}

/// The factory for type `multitudes_auth`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MultitudesAuthFactory;

/// The factory for type `bearertokenauth`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BearerTokenAuthFactory;

impl Factory for MultitudesAuthFactory {
    fn type_name(&self) -> &'static str {
        "multitudes_auth"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<MultitudesAuthConfig>(config).map(|_| ())
    }
}

impl ExtensionFactory for MultitudesAuthFactory {
    fn create(
        &self,
        _: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        Ok(Arc::new(MultitudesAuth {
            config: decode(config)?,
        }))
    }
}

impl Factory for BearerTokenAuthFactory {
    fn type_name(&self) -> &'static str {
        "bearertokenauth"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        let c: BearerTokenAuthConfig = decode(config)?;
        if c.token.is_empty() && c.tokens.is_empty() && c.filename.is_empty() {
            return Err(ConfigError::invalid(
                "",
                "one of token, tokens or filename is required",
            ));
        }
        Ok(())
    }
}

impl ExtensionFactory for BearerTokenAuthFactory {
    fn create(
        &self,
        _: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        Ok(Arc::new(BearerTokenAuth {
            config: decode(config)?,
            accepted: Default::default(),
        }))
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories
        .extension(MultitudesAuthFactory)
        .extension(BearerTokenAuthFactory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use otelcol_core::component::Host;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn pass_through_reads_the_token_and_never_refuses() {
        let auth = MultitudesAuth {
            config: MultitudesAuthConfig {
                headers: vec!["x-user-email".into()],
                ..Default::default()
            },
        };
        let got = auth
            .authenticate(&headers(&[
                ("authorization", "bearer Tok-123"),
                ("x-user-email", "ana@example.com"),
            ]))
            .unwrap();
        assert_eq!(
            got.token.as_ref().map(|t| t.expose()),
            Some("Tok-123"),
            "scheme case-insensitive, token as sent"
        );
        assert_eq!(
            got.headers,
            vec![("x-user-email".to_string(), "ana@example.com".to_string())]
        );
        let none = auth.authenticate(&headers(&[])).unwrap();
        assert_eq!(none, AuthData::default());
        let basic = auth
            .authenticate(&headers(&[("authorization", "Basic abc")]))
            .unwrap();
        assert_eq!(basic.token, None);
    }

    #[tokio::test]
    async fn strict_accepts_only_configured_tokens() {
        let dir = std::env::temp_dir().join(format!("otelcol-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "from-file\n\n  second  \n").unwrap();
        let yaml = format!("token: one\ntokens: [two]\nfilename: {}\n", file.display());
        let raw: RawConfig = serde_yaml::from_str(&yaml).unwrap();
        let settings = CreateSettings::standalone(
            otelcol_core::ComponentId::new("bearertokenauth"),
            otelcol_core::component::Kind::Extension,
        );
        let ext = BearerTokenAuthFactory.create(settings, &raw).unwrap();
        ext.start(&Host::new(Default::default(), Default::default()))
            .await
            .unwrap();
        let auth = ext.server_authenticator().unwrap();
        for ok in [
            "Bearer one",
            "Bearer two",
            "Bearer from-file",
            "bearer second",
        ] {
            let h: http::HeaderMap = [(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(ok).unwrap(),
            )]
            .into_iter()
            .collect();
            assert!(auth.authenticate(&h).is_ok(), "{ok}");
        }
        let h = headers(&[("authorization", "Bearer nope")]);
        assert_eq!(
            auth.authenticate(&h).unwrap_err().to_string(),
            "authentication failed: bearer token not accepted"
        );
        assert_eq!(
            auth.authenticate(&headers(&[])).unwrap_err().to_string(),
            "authentication failed: missing or malformed bearer token"
        );
        let empty: RawConfig = serde_yaml::from_str("scheme: Bearer\n").unwrap();
        assert_eq!(
            BearerTokenAuthFactory
                .validate(&empty)
                .unwrap_err()
                .to_string(),
            "one of token, tokens or filename is required"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
