//! TLS material: loading the listener's certificate chain and key (PEM) into
//! a rustls server config that offers HTTP/2 and HTTP/1.1 by ALPN.
//!
//! This module only reads and checks files; handshakes happen in `server`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientCertMode, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCert { path: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("{cert} and {key} do not form a usable pair: {source}")]
    Pair {
        cert: String,
        key: String,
        source: rustls::Error,
    },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA {path}: {reason}")]
    ClientCa { path: String, reason: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(k)) => Ok(k),
        _ => Err(TlsError::NoKey {
            path: path.display().to_string(),
        }),
    }
}

/// The listener's rustls config: the given chain and key, ALPN h2 then
/// http/1.1, and client-certificate verification when configured; with it,
/// a digest of the client CA certificates it trusts (`None` when client
/// certificates are not verified), so that a connection made under other
/// trust can be told apart after a reload (see [`crate::proxy::Conn`]).
pub fn server_config(
    files: &TlsFiles,
) -> Result<(Arc<rustls::ServerConfig>, Option<u64>), TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut client_trust = None;
    let builder = match (&files.client_ca, files.client_cert) {
        (Some(ca), mode @ (ClientCertMode::Optional | ClientCertMode::Required)) => {
            let shown = ca.display().to_string();
            let mut roots = rustls::RootCertStore::empty();
            let cas = load_certs(ca)?;
            client_trust = Some(digest(&cas));
            for c in cas {
                roots.add(c).map_err(|e| TlsError::ClientCa {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if mode == ClientCertMode::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            let verifier = v.build().map_err(|e| TlsError::ClientCa {
                path: shown,
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Pair {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
            source,
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), client_trust))
}

/// A change detector over the trusted CA certificates (operator files, not
/// client input: a fast hash is enough).
fn digest(certs: &[rustls::pki_types::CertificateDer<'_>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in certs {
        c.as_ref().hash(&mut h);
    }
    h.finish()
}

/// When the first certificate in `path` expires, as Unix seconds.
pub fn expiry(path: &Path) -> Result<Option<f64>, TlsError> {
    let certs = load_certs(path)?;
    Ok(certs.first().and_then(|c| {
        let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
        // Unix seconds fit an f64 exactly for any realistic date.
        #[allow(clippy::cast_precision_loss)]
        Some(cert.validity().not_after.timestamp() as f64)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{generate, CertsArgs};

    /// A certificate with another certificate's key is refused, naming both
    /// files (an operator swapping one file of a pair needs to know which).
    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for dir in [a.path(), b.path()] {
            generate(&CertsArgs {
                dir: dir.to_path_buf(),
                names: vec!["localhost".into()],
                clients: Vec::new(),
                force: false,
                days: 30,
            })
            .unwrap();
        }
        let files = TlsFiles {
            cert: a.path().join("server.crt"),
            key: b.path().join("server.key"),
            client_ca: None,
            client_cert: ClientCertMode::Off,
        };
        let err = server_config(&files).map(|_| ()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{} and {} do not form a usable pair: ",
                files.cert.display(),
                files.key.display()
            )),
            "{err}"
        );
    }
}
