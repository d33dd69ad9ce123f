//! TLS for the API and for the CLI that calls it: rustls with the aws-lc-rs provider, the one the
//! AWS SDK already links.
//!
//! The daemon serves HTTPS when `SPOTPOOL_TLS_CERT` and `SPOTPOOL_TLS_KEY` are both set, and
//! re-reads them on SIGHUP, so a renewed certificate needs no restart (a pair that does not load
//! leaves the old one serving, and the log says why). The CLI trusts the system's roots, plus the
//! PEM certificates of `SPOTPOOL_CA_CERT` (a private CA, or a self-signed certificate). Must not:
//! put key material in an error or a log line.

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The API's certificate chain and private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every PEM certificate in `path`; an error names the setting and the file.
fn certificates(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let fail = |why: String| format!("{setting}={}: {why}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads the pair into a server configuration (TLS 1.2 and 1.3, HTTP/1.1), or a one-line
    /// error naming the setting at fault: a missing or unreadable file, no certificate, no key,
    /// or a key that does not belong to the certificate.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let certs = certificates("SPOTPOOL_TLS_CERT", &self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("SPOTPOOL_TLS_KEY={}: {e}", self.key.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                format!(
                    "SPOTPOOL_TLS_CERT={} with SPOTPOOL_TLS_KEY={}: {e}",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The configuration the server's acceptor reads on every handshake.
    pub fn acceptor_config(&self) -> Result<RustlsConfig, String> {
        Ok(RustlsConfig::from_config(Arc::new(self.server_config()?)))
    }

    /// Re-reads the pair into `live` on every SIGHUP, until the process ends. A pair that does not
    /// load is logged and the old one keeps serving.
    pub async fn reload_on_sighup(self, live: RustlsConfig) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the TLS certificate reloads on restart only");
            return;
        };
        while hangups.recv().await.is_some() {
            match self.server_config() {
                Ok(config) => {
                    live.reload_from_config(Arc::new(config));
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Err(error) => {
                    tracing::error!(%error, "TLS certificate not reloaded; the previous one stays")
                }
            }
        }
    }
}

/// The CLI's client configuration: the system's roots (when `system_roots`; a plain-HTTP call
/// needs none), plus every certificate of `ca_file`.
pub fn client_config(
    ca_file: Option<&Path>,
    system_roots: bool,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if system_roots {
        // Unusable system certificates are skipped: one bad file must not break every call.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    }
    if let Some(path) = ca_file {
        for cert in certificates("SPOTPOOL_CA_CERT", path)? {
            roots
                .add(cert)
                .map_err(|e| format!("SPOTPOOL_CA_CERT={}: {e}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
