//! TLS material: loading the listener's certificate chain and key (PEM) into
//! a rustls server config that offers HTTP/2, HTTP/1.1 and HTTP/1.0 by
//! ALPN, and verifies client certificates against `client_ca` and the CRLs
//! of `client_crl` ([`crl`] reads and checks those).
//!
//! This module reads and checks files and builds verifiers; handshakes
//! happen in `server`, and what a verified certificate is worth on a
//! connection later on is `identity::client_cert`'s.

pub mod crl;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

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

/// A listener's TLS, as [`server_config`] builds it.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// How client certificates are verified; `None` when they are not.
    pub client_auth: Option<Arc<ClientAuth>>,
}

/// The client-certificate verification a listener's handshakes use, kept
/// so that a certificate accepted earlier (on a connection kept alive, or
/// in a resumed TLS session, which rustls does not verify again) can be
/// held to the config in force: see
/// [`crate::identity::client_cert::ClientCert`].
pub struct ClientAuth {
    verifier: Arc<dyn ClientCertVerifier>,
    /// `nextUpdate` of every CRL, earliest first: the moments at which the
    /// verdict on a certificate can change without a reload.
    next_updates: Vec<SystemTime>,
    /// `client_cert = "required"`.
    pub mandatory: bool,
}

impl ClientAuth {
    /// Verification by `verifier`, whose CRLs expire at `next_updates`.
    pub(crate) fn new(
        verifier: Arc<dyn ClientCertVerifier>,
        mut next_updates: Vec<SystemTime>,
        mandatory: bool,
    ) -> ClientAuth {
        next_updates.sort();
        ClientAuth {
            verifier,
            next_updates,
            mandatory,
        }
    }

    /// Whether a handshake now would accept this chain (leaf first).
    pub fn accepts(&self, chain: &[CertificateDer<'static>], now: SystemTime) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        self.verifier
            .verify_client_cert(leaf, intermediates, now)
            .is_ok()
    }

    /// The first moment after `now` at which a CRL expires.
    pub fn next_change(&self, now: SystemTime) -> Option<SystemTime> {
        self.next_updates.iter().copied().find(|t| *t > now)
    }
}

/// Certificates a client may send after its own: more than a path can
/// use (webpki takes at most six intermediate CAs), with room for a root
/// or a cross-certificate sent along.
pub const MAX_CLIENT_INTERMEDIATES: usize = 8;

/// webpki's client-certificate verifier, refusing a chain with more than
/// [`MAX_CLIENT_INTERMEDIATES`] certificates after the leaf before any
/// work is done on it.
///
/// webpki tries every certificate that bears an issuer's name as that
/// issuer, and gives up only after its budget (200,000 path-building
/// steps, 100 signature checks): a client that sends a forged leaf and
/// sixty or more self-made CAs named like the real one (some 20 KiB, no
/// key of any CA needed) made the gateway spend that budget on each
/// handshake, 43 ms of CPU against 0.6 ms for an honest one (release
/// build). Under this bound the worst is about 7 ms (webpki's signature
/// budget, reached from four impostors on).
#[derive(Debug)]
struct BoundedChain(Arc<dyn ClientCertVerifier>);

/// The refusal of [`BoundedChain`], as rustls logs it.
#[derive(Debug, thiserror::Error)]
#[error("the client sent {0} certificates after its own; at most {MAX_CLIENT_INTERMEDIATES} are accepted")]
struct TooManyIntermediates(usize);

impl ClientCertVerifier for BoundedChain {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if intermediates.len() > MAX_CLIENT_INTERMEDIATES {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                    TooManyIntermediates(intermediates.len()),
                ))),
            ));
        }
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The listener's rustls config: the given chain and key, ALPN h2, then
/// http/1.1 and http/1.0, and client-certificate verification when
/// configured.
///
/// Client certificates are verified by webpki against `client_ca` and,
/// when `client_crl` is set, against those CRLs, failing closed: every
/// certificate of the chain but the trust anchor must be covered by a CRL
/// (a status no CRL tells is refused, rustls's default), and a CRL past
/// its `nextUpdate` no longer vouches for anything (the certificates it
/// covers are refused until a newer one is loaded; rustls's default would
/// go on trusting a stale list forever, so a CRL that stopped being
/// refreshed would freeze revocation without a word).
///
/// Resumption state (rustls's in-memory session cache, used for TLS 1.2
/// session IDs and TLS 1.3 tickets alike: no ticket key is configured)
/// belongs to this config, so it is gone at the next reload. Early data
/// (0-RTT) stays off (`max_early_data_size` 0): a replayable request must
/// never reach the policy as a fresh one.
pub fn server_config(files: &TlsFiles) -> Result<ServerTls, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut client_auth = None;
    let builder = match (&files.client_ca, files.client_cert) {
        (Some(ca), mode @ (ClientCertMode::Optional | ClientCertMode::Required)) => {
            let shown = ca.display().to_string();
            let mut roots = rustls::RootCertStore::empty();
            let cas = load_certs(ca)?;
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
            let v = if files.client_crl.is_empty() {
                v
            } else {
                v.with_crls(files.client_crl.iter().map(|c| c.der.clone()))
                    .enforce_revocation_expiration()
            };
            let verifier: Arc<dyn ClientCertVerifier> =
                Arc::new(BoundedChain(v.build().map_err(|e| TlsError::ClientCa {
                    path: shown,
                    reason: e.to_string(),
                })?));
            client_auth = Some(Arc::new(ClientAuth::new(
                verifier.clone(),
                files.client_crl.iter().map(|c| c.next_update).collect(),
                mode == ClientCertMode::Required,
            )));
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
    // The gateway's order decides (RFC 7301 §3.2). "http/1.0" is what an
    // HTTP/1.0 client offers (curl --http1.0): served like one over
    // cleartext instead of refused with no_application_protocol.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(ServerTls {
        config: Arc::new(cfg),
        client_auth,
    })
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
            client_crl: Vec::new(),
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
