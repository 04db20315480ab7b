//! `tls.reload_interval`: a certificate resolver that re-reads the
//! certificate and key files, so a rotated certificate (cert-manager, a
//! renewed Let's Encrypt pair) is served without a restart.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The pair in use and when the files were last read.
#[derive(Debug)]
struct State {
    key: Arc<CertifiedKey>,
    pem: (Vec<u8>, Vec<u8>),
    checked: Instant,
}

/// Serves the pair read last; on a handshake at least `every` after the
/// last read, reads both files again and serves the new pair if it loads
/// (otherwise the old one, with a warning). The read happens inside that
/// one handshake: two small files, at most once per interval.
#[derive(Debug)]
pub(super) struct Reloading {
    cert_file: String,
    key_file: String,
    every: Duration,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

impl Reloading {
    /// Starts from `key`, read from the files just now.
    pub(super) fn new(
        cert_file: String,
        key_file: String,
        every: Duration,
        provider: Arc<CryptoProvider>,
        key: Arc<CertifiedKey>,
    ) -> Self {
        let pem = (
            std::fs::read(&cert_file).unwrap_or_default(),
            std::fs::read(&key_file).unwrap_or_default(),
        );
        Self {
            cert_file,
            key_file,
            every,
            provider,
            state: Mutex::new(State {
                key,
                pem,
                checked: Instant::now(),
            }),
        }
    }

    fn refresh(&self, state: &mut State) {
        state.checked = Instant::now();
        let read = |p: &str| std::fs::read(p).map_err(|e| format!("reading `{p}`: {e}"));
        let pem = match (read(&self.cert_file), read(&self.key_file)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "tls.reload_interval: keeping the certificate in use");
                return;
            }
        };
        if pem == state.pem {
            return;
        }
        match super::certified_key(&pem.0, &pem.1, &self.provider) {
            Ok(key) => {
                tracing::info!(cert_file = %self.cert_file, "tls.reload_interval: serving the new certificate");
                state.key = key;
                state.pem = pem;
            }
            Err(e) => {
                tracing::warn!(error = %e, "tls.reload_interval: the new files do not load; keeping the certificate in use")
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.every {
            self.refresh(&mut state);
        }
        Some(state.key.clone())
    }
}
