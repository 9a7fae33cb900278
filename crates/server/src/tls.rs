//! TLS with rustls (the `ring` provider): a PEM certificate chain and key, reloaded on
//! SIGHUP without dropping a connection. Connections made before a reload keep the
//! session they negotiated; new ones get the new certificate. A reload that fails (a
//! missing file, a key that does not match) keeps the old configuration and says why.
//!
//! In-process TLS costs memory per connection (rustls keeps buffers per session, about
//! 16 KB per idle connection in STACK.md's probe); at very large scale, end TLS at a
//! load balancer in front of Herald.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Builds a server configuration from PEM files.
///
/// # Errors
///
/// A message naming the file and what is wrong with it.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's TLS: the files it comes from and the configuration in use.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// parking_lot lock: read once per accepted connection, written on reload.
    current: RwLock<Arc<ServerConfig>>,
    /// Reloads that worked.
    pub reloads: AtomicU64,
    /// Reloads that failed (the old configuration stayed).
    pub reload_failures: AtomicU64,
    /// TLS handshakes that failed.
    pub handshake_failures: AtomicU64,
}

impl Tls {
    /// Loads the files.
    ///
    /// # Errors
    ///
    /// As [`load`].
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Tls, String> {
        let config = load(&cert, &key)?;
        Ok(Tls {
            cert,
            key,
            current: RwLock::new(config),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
        })
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Reads the files again; on success new connections use them.
    ///
    /// # Errors
    ///
    /// As [`load`]; the configuration in use stays.
    pub fn reload(&self) -> Result<(), String> {
        match load(&self.cert, &self.key) {
            Ok(config) => {
                *self.current.write() = config;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}
