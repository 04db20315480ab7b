//! TLS for listening components (`tls:` in a server's config, the Go
//! collector's `configtls` keys), on rustls with the `ring` provider.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};

use crate::component::ComponentError;

/// `tls:` of a server.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA bundle; when set, clients must present a certificate it signs.
    pub client_ca_file: Option<String>,
    /// Lowest TLS version accepted: `1.2` (default) or `1.3`.
    pub min_version: Option<String>,
    /// Accepted for compatibility; ignored (certificates are read at start).
    pub reload_interval: Option<String>,
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
        if self.cert_file.is_empty() || self.key_file.is_empty() {
            return Err(ComponentError::Failed(
                "tls: cert_file and key_file are both required".into(),
            ));
        }
        Ok(PemFiles {
            cert: read("cert_file", &self.cert_file)?,
            key: read("key_file", &self.key_file)?,
            client_ca: self
                .client_ca_file
                .as_deref()
                .map(|p| read("client_ca_file", p))
                .transpose()?,
        })
    }

    /// A rustls server config for these settings, with ALPN for HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, ComponentError> {
        let pem = self.read_pem()?;
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            ComponentError::Failed(format!("tls.{what}: {e}"))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
            .collect::<Result<_, _>>()
            .map_err(|e| bad("cert_file", &e))?;
        if certs.is_empty() {
            return Err(bad("cert_file", &"no certificate found"));
        }
        let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| bad("key_file", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min_version.as_deref() {
            None | Some("") | Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Some("1.3") => &[&rustls::version::TLS13],
            Some(other) => {
                return Err(bad(
                    "min_version",
                    &format!("unsupported version `{other}` (use 1.2 or 1.3)"),
                ))
            }
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| bad("min_version", &e))?;
        let builder = match &pem.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert = cert.map_err(|e| bad("client_ca_file", &e))?;
                    roots.add(cert).map_err(|e| bad("client_ca_file", &e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| bad("client_ca_file", &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad("key_file", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
