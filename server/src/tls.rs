//! `--tls-cert`/`--tls-key`: serving `wss://` and `https://` with rustls.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn invalid(what: &str, path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {}: {e}", path.display()))
}

/// A TLS acceptor for the PEM certificate chain and key in these files.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid("certificate", cert, e))?;
    if chain.is_empty() {
        return Err(invalid("certificate", cert, "no CERTIFICATE block"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid("private key", key, e))?;
    // The provider is named here rather than taken from the process default,
    // which is ambiguous when more than one is compiled in.
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| invalid("certificate and key", cert, e))?;
    // WebSocket upgrades are HTTP/1.1 only here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
