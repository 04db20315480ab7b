//! `tls.client_ca_file_reload`: a client-certificate verifier that reads
//! `client_ca_file` again when its contents change, so a rotated client CA
//! takes effect without a restart (Go watches the file; here it is read on
//! a handshake, at most once per interval).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// A verifier that accepts client certificates signed by a CA in `pem`.
pub(super) fn verifier(
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())
}

/// The verifier in use, the file contents it was made from, and when the
/// file was last read.
#[derive(Debug)]
struct State {
    verifier: Arc<dyn ClientCertVerifier>,
    pem: Vec<u8>,
    checked: Instant,
}

/// Checks client certificates against the CA file read last; on a
/// handshake at least `every` after the last read, reads the file again
/// and, when it changed and loads, uses the new CAs (otherwise keeps the
/// ones in use, with a warning). It names no acceptable CAs to clients
/// (the hint list would go stale); clients send their certificate anyway.
#[derive(Debug)]
pub(super) struct ReloadingClientCa {
    path: String,
    every: Duration,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

impl ReloadingClientCa {
    /// Starts from `pem`, read from `path` just now.
    pub(super) fn new(
        path: String,
        pem: Vec<u8>,
        every: Duration,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let verifier = verifier(&pem, &provider)?;
        Ok(Self {
            path,
            every,
            provider,
            state: Mutex::new(State {
                verifier,
                pem,
                checked: Instant::now(),
            }),
        })
    }

    /// The verifier to use now, after reading the file again when due.
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.every {
            state.checked = Instant::now();
            match std::fs::read(&self.path) {
                Err(e) => {
                    tracing::warn!(path = %self.path, error = %e, "tls.client_ca_file_reload: cannot read the client CA file; keeping the CAs in use")
                }
                Ok(pem) if pem == state.pem => {}
                Ok(pem) => match verifier(&pem, &self.provider) {
                    Ok(v) => {
                        tracing::info!(path = %self.path, "tls.client_ca_file_reload: checking client certificates against the new CA file");
                        state.verifier = v;
                        state.pem = pem;
                    }
                    Err(e) => {
                        tracing::warn!(path = %self.path, error = %e, "tls.client_ca_file_reload: the new CA file does not load; keeping the CAs in use")
                    }
                },
            }
        }
        state.verifier.clone()
    }

    /// The verifier in use, without reading the file.
    fn in_use(&self) -> Arc<dyn ClientCertVerifier> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .verifier
            .clone()
    }
}

impl ClientCertVerifier for ReloadingClientCa {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.in_use().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.in_use().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.in_use().supported_verify_schemes()
    }
}
