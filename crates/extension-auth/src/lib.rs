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
//!
//! Client authenticators, for exporters (`auth.authenticator` of `otlp`
//! and `otlphttp`):
//! - `bearertokenauth`: sends its own (first) token as `{scheme} {token}`
//!   in `header`, as the Go extension does on the client side;
//! - `headers_setter` ([`headers_setter`]): sets headers from fixed values
//!   or from the caller's bearer token (`from_context: authorization`).

pub mod headers_setter;

use std::sync::Arc;

use otelcol_core::component::{
    AuthError, ClientAuthenticator, ComponentError, CreateSettings, Extension, ExtensionFactory,
    Factory, Lifecycle, ServerAuthenticator,
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
    /// A file with accepted tokens, one per line: read at start, and again
    /// whenever its content changes (checked every second).
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
    accepted: Arc<std::sync::RwLock<Vec<String>>>,
    watch: otelcol_core::task::Periodic,
}

/// How often `filename` is checked for a change.
pub const TOKEN_FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The tokens of `text`, one per line (blank lines skipped).
fn file_tokens(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

impl BearerTokenAuth {
    /// `token` and `tokens` from the config.
    fn inline_tokens(&self) -> Vec<String> {
        let mut tokens = self.config.tokens.clone();
        if !self.config.token.is_empty() {
            tokens.push(self.config.token.clone());
        }
        tokens
    }

    /// Re-reads `filename` every [`TOKEN_FILE_CHECK`] and, when its content
    /// changed, accepts its tokens (plus the inline ones) from then on, as
    /// the Go extension does on a file change. A file that cannot be read
    /// or holds no token keeps the tokens in use, with a warning.
    fn watch_file(&self, first: String) {
        let path = self.config.filename.clone();
        let inline = self.inline_tokens();
        let accepted = self.accepted.clone();
        let mut last = first;
        self.watch.start(TOKEN_FILE_CHECK, move || {
            let text = std::fs::read_to_string(&path);
            match text {
                Ok(text) if text != last => {
                    let from_file = file_tokens(&text);
                    if from_file.is_empty() {
                        tracing::warn!(filename = %path, "bearertokenauth: the token file holds no token now; keeping the tokens in use");
                    } else {
                        let n = from_file.len();
                        let mut tokens = inline.clone();
                        tokens.extend(from_file);
                        *accepted
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokens;
                        tracing::info!(filename = %path, tokens = n, "bearertokenauth: the token file changed; its tokens are accepted from now on");
                    }
                    last = text;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(filename = %path, error = %e, "bearertokenauth: cannot read the token file; keeping the tokens in use");
                }
            }
            std::future::ready(())
        });
    }
}

#[async_trait::async_trait]
impl Lifecycle for BearerTokenAuth {
    async fn start(&self, _host: &otelcol_core::component::Host) -> Result<(), ComponentError> {
        let mut tokens = self.inline_tokens();
        let mut file_text = None;
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
            tokens.extend(file_tokens(&text));
            file_text = Some(text);
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
        if let Some(text) = file_text {
            self.watch_file(text);
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.watch.stop().await;
        Ok(())
    }
}

impl Extension for BearerTokenAuth {
    fn server_authenticator(self: Arc<Self>) -> Option<Arc<dyn ServerAuthenticator>> {
        Some(self)
    }
    fn client_authenticator(self: Arc<Self>) -> Option<Arc<dyn ClientAuthenticator>> {
        Some(self)
    }
}

/// On an exporter: its own first token (after a file change, the file's
/// first), as `{scheme} {token}` in `header`.
impl ClientAuthenticator for BearerTokenAuth {
    fn headers(&self, _caller: Option<&BearerToken>) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let accepted = self
            .accepted
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(token) = accepted.first() else {
            return vec![];
        };
        let name = http::HeaderName::try_from(self.config.header.as_str());
        let value = http::HeaderValue::try_from(format!("{} {token}", self.config.scheme));
        match (name, value) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                vec![(n, v)]
            }
            _ => vec![],
        }
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
            watch: Default::default(),
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
        .extension(headers_setter::HeadersSetterFactory)
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

    #[tokio::test]
    async fn a_changed_token_file_is_read_again() {
        let dir = std::env::temp_dir().join(format!("otelcol-auth-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "old-token\n").unwrap();
        let raw: RawConfig =
            serde_yaml::from_str(&format!("filename: {}\n", file.display())).unwrap();
        let settings = CreateSettings::standalone(
            otelcol_core::ComponentId::new("bearertokenauth"),
            otelcol_core::component::Kind::Extension,
        );
        let ext = BearerTokenAuthFactory.create(settings, &raw).unwrap();
        ext.start(&Host::new(Default::default(), Default::default()))
            .await
            .unwrap();
        let auth = ext.clone().server_authenticator().unwrap();
        let ok = |t: &str| {
            let h: http::HeaderMap = [(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            )]
            .into_iter()
            .collect();
            auth.authenticate(&h).is_ok()
        };
        assert!(ok("old-token") && !ok("new-token"));
        std::fs::write(&file, "new-token\n").unwrap();
        let started = std::time::Instant::now();
        while !ok("new-token") {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "the new token is accepted within 5 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(!ok("old-token"), "the replaced token is refused");
        // A file emptied mid-rotation keeps the tokens in use.
        std::fs::write(&file, "").unwrap();
        tokio::time::sleep(TOKEN_FILE_CHECK * 2 + std::time::Duration::from_millis(200)).await;
        assert!(ok("new-token"), "an empty file does not lock everyone out");
        ext.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
