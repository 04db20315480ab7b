//! TLS for listening components (`tls:` in a server's config, the Go
//! collector's `configtls` keys), on rustls with the `ring` provider.

use std::sync::Arc;

mod client_ca;
mod reload;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};

use crate::component::ComponentError;

/// How often `client_ca_file_reload` reads the file when `reload_interval`
/// is not set.
const CLIENT_CA_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// `tls:` of a server, with the keys of the Go `configtls.ServerConfig`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// The certificate chain itself, instead of `cert_file`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert_pem: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// The key itself, instead of `key_file`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_pem: String,
    /// PEM CA bundle; when set, clients must present a certificate it signs.
    pub client_ca_file: Option<String>,
    /// Lowest TLS version accepted: `1.2` (default) or `1.3`.
    pub min_version: Option<String>,
    /// Highest TLS version accepted: `1.2` or `1.3` (default).
    pub max_version: Option<String>,
    /// Re-read `cert_file` and `key_file` at most this often (on a
    /// handshake); a pair that fails to load keeps the one in use, with a
    /// warning. Unset or `0`: read once at start.
    pub reload_interval: Option<String>,
    /// Read `client_ca_file` again when it changes (on a handshake, at
    /// most once per `reload_interval`, 10 s when that is not set), so a
    /// rotated client CA takes effect without a restart.
    pub client_ca_file_reload: Option<bool>,
    /// Go: the CA a client uses to check a server. Accepted with a start-up
    /// warning; no effect on a server (`client_ca_file` checks clients).
    pub ca_file: Option<String>,
    /// As `ca_file`, inline.
    pub ca_pem: Option<String>,
    /// As `ca_file`: no effect on a server.
    pub include_system_ca_certs_pool: Option<bool>,
    /// Accepted with a start-up warning; no effect (rustls offers only
    /// its own modern suites).
    pub cipher_suites: Option<Vec<String>>,
    /// Accepted with a start-up warning; no effect (rustls' defaults).
    pub curve_preferences: Option<Vec<String>>,
    /// Go: keys held in a TPM. Accepted with a start-up warning; no effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<crate::config::RawConfig>,
}

/// The keys of [`TlsSettings`] accepted with no effect, under `prefix`
/// (e.g. `protocols.*.tls.`).
pub fn no_effect_keys(prefix: &str) -> Vec<crate::component::NoEffectKey> {
    use crate::component::NoEffectKey;
    [
        (
            "ca_file",
            "a server checks clients with client_ca_file; ca_file is a client key",
        ),
        (
            "ca_pem",
            "a server checks clients with client_ca_file; ca_pem is a client key",
        ),
        (
            "include_system_ca_certs_pool",
            "a server checks clients with client_ca_file only",
        ),
        (
            "cipher_suites",
            "rustls offers only its own modern cipher suites",
        ),
        (
            "curve_preferences",
            "rustls uses its default key-exchange groups",
        ),
        (
            "tpm",
            "keys are read from key_file or key_pem; no TPM support",
        ),
    ]
    .into_iter()
    .map(|(key, why)| NoEffectKey::new(format!("{prefix}{key}"), why))
    .collect()
}

fn version(key: &str, v: Option<&str>, default: u8) -> Result<u8, ComponentError> {
    match v {
        None | Some("") => Ok(default),
        Some("1.2") => Ok(2),
        Some("1.3") => Ok(3),
        Some(other) => Err(ComponentError::Failed(format!(
            "tls.{key}: unsupported version `{other}` (use 1.2 or 1.3)"
        ))),
    }
}

/// `cert_pem` or the contents of `cert_file` (likewise for keys).
fn inline_or_file(what: &str, inline: &str, path: &str) -> Result<Vec<u8>, ComponentError> {
    let file_key = format!("{what}_file");
    match (inline.is_empty(), path.is_empty()) {
        (false, false) => Err(ComponentError::Failed(format!(
            "tls: set {what}_file or {what}_pem, not both"
        ))),
        (false, true) => Ok(inline.as_bytes().to_vec()),
        (true, false) => read(&file_key, path),
        (true, true) => Err(ComponentError::Failed(
            "tls: a certificate (cert_file or cert_pem) and its key (key_file or key_pem) are both required".into(),
        )),
    }
}

fn read(what: &str, path: &str) -> Result<Vec<u8>, ComponentError> {
    std::fs::read(path).map_err(|source| ComponentError::Io {
        context: format!("reading tls.{what} `{path}`"),
        source,
    })
}

/// The PEM files of `settings`: certificate chain, key, and client CA if any.
pub struct PemFiles {
    /// Certificate chain.
    pub cert: Vec<u8>,
    /// Private key.
    pub key: Vec<u8>,
    /// Client CA bundle.
    pub client_ca: Option<Vec<u8>>,
}

impl TlsSettings {
    /// Reads the files named by the settings.
    pub fn read_pem(&self) -> Result<PemFiles, ComponentError> {
        Ok(PemFiles {
            cert: inline_or_file("cert", &self.cert_pem, &self.cert_file)?,
            key: inline_or_file("key", &self.key_pem, &self.key_file)?,
            client_ca: self
                .client_ca_file
                .as_deref()
                .map(|p| read("client_ca_file", p))
                .transpose()?,
        })
    }

    /// The TLS versions `min_version` and `max_version` allow.
    pub fn versions(
        &self,
    ) -> Result<&'static [&'static rustls::SupportedProtocolVersion], ComponentError> {
        let min = version("min_version", self.min_version.as_deref(), 2)?;
        let max = version("max_version", self.max_version.as_deref(), 3)?;
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY_12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match (min, max) {
            (2, 3) => Ok(&BOTH),
            (2, 2) => Ok(&ONLY_12),
            (3, 3) => Ok(&ONLY_13),
            _ => Err(ComponentError::Failed(
                "tls: min_version is above max_version".into(),
            )),
        }
    }

    /// A rustls server config for these settings, with ALPN for HTTP/2 and
    /// HTTP/1.1. With `reload_interval` and certificate files, the files
    /// are read again at most that often, on a handshake
    /// ([`reload::Reloading`]).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, ComponentError> {
        let pem = self.read_pem()?;
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            ComponentError::Failed(format!("tls.{what}: {e}"))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(&pem.cert, &pem.key, &provider)?;
        let versions = self.versions()?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| bad("min_version", &e))?;
        let interval = self
            .reload_interval
            .as_deref()
            .map(|s| crate::config::duration::parse(s).map_err(|e| bad("reload_interval", &e)))
            .transpose()?
            .filter(|d| !d.is_zero());
        let builder = match (&pem.client_ca, &self.client_ca_file) {
            (Some(ca), Some(path)) if self.client_ca_file_reload == Some(true) => {
                let every = interval.unwrap_or(CLIENT_CA_CHECK);
                let verifier = client_ca::ReloadingClientCa::new(
                    path.clone(),
                    ca.clone(),
                    every,
                    provider.clone(),
                )
                .map_err(|e| bad("client_ca_file", &e))?;
                builder.with_client_cert_verifier(Arc::new(verifier))
            }
            (Some(ca), _) => {
                let verifier =
                    client_ca::verifier(ca, &provider).map_err(|e| bad("client_ca_file", &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            (None, _) => builder.with_no_client_auth(),
        };
        let files = !self.cert_file.is_empty() && !self.key_file.is_empty();
        let resolver: Arc<dyn ResolvesServerCert> = match interval {
            Some(every) if files => Arc::new(reload::Reloading::new(
                self.cert_file.clone(),
                self.key_file.clone(),
                every,
                provider,
                key,
            )),
            _ => Arc::new(SingleCertAndKey::from(key)),
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificate chain and key in `cert` and `key` (PEM), checked to
/// belong together.
fn certified_key(
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ComponentError> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| ComponentError::Failed(format!("tls.{what}: {e}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("cert_file", &e))?;
    if certs.is_empty() {
        return Err(bad("cert_file", &"no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("key_file", &e))?;
    CertifiedKey::from_der(certs, key, provider)
        .map(Arc::new)
        .map_err(|e| bad("key_file", &e))
}
