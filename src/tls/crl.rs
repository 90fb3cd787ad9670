//! Certificate revocation lists for client certificates (`client_crl`):
//! reading the files and checking them against the client CAs before any
//! of them is put in force.
//!
//! rustls checks a presented chain against these lists at the handshake
//! (see [`super::server_config`] for the policy it is given); the checks
//! here are what it would otherwise only find at the first handshake, or
//! never: a file that holds no CRL, a CRL its CA did not sign, a CA
//! without a CRL (every certificate it issued would be refused, since a
//! status that cannot be told is refused), two CRLs of one CA (rustls
//! consults only the first). This module does not decide any connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::CertRevocationListError;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::identity::client_cert::dn_text;

/// One CRL, read and checked.
#[derive(Debug, Clone)]
pub struct Crl {
    /// The file it came from.
    pub path: PathBuf,
    pub der: CertificateRevocationListDer<'static>,
    /// The issuer's distinguished name, written as identities write one.
    pub issuer: String,
    /// When the issuer promised the next list (`nextUpdate`): from then on
    /// this one has expired, and the certificates it speaks for are refused
    /// until a newer one is loaded.
    pub next_update: SystemTime,
    /// How many certificates it revokes.
    pub revoked: usize,
    /// Whether its issuer is a certificate of `client_ca` (whose key was
    /// found to have signed it here); otherwise it is an intermediate CA's,
    /// whose certificate clients send and whose signature rustls checks at
    /// each handshake.
    pub issued_by_client_ca: bool,
}

impl Crl {
    /// True once `nextUpdate` has passed (as rustls counts it, in whole
    /// seconds: expired from the second `nextUpdate` names).
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.next_update
    }
}

/// Reads every CRL in `paths` (PEM, one or more `X509 CRL` blocks per
/// file, or one DER CRL) and checks them against the certificates of
/// `client_ca`. Every problem is returned, each as text naming the file.
pub fn read(
    paths: &[PathBuf],
    client_ca: &[CertificateDer<'static>],
) -> Result<Vec<Crl>, Vec<String>> {
    let mut problems = Vec::new();
    let cas: Vec<X509Certificate<'_>> = client_ca
        .iter()
        .filter_map(|c| X509Certificate::from_der(c.as_ref()).ok().map(|(_, c)| c))
        .collect();
    let mut crls = Vec::new();
    // (issuer DN, issuing distribution point) of each CRL read, with its file.
    let mut scopes: Vec<(Vec<u8>, Option<Vec<u8>>, PathBuf)> = Vec::new();
    for path in paths {
        let ders = match ders(path) {
            Ok(d) => d,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for der in ders {
            match one(path, der, &cas, client_ca) {
                Ok((crl, issuer_raw, idp)) => {
                    if let Some((_, _, first)) = scopes
                        .iter()
                        .find(|(i, p, _)| *i == issuer_raw && *p == idp)
                    {
                        problems.push(format!(
                            "{} and {} both hold a CRL of {} for the same certificates; rustls consults only the first it finds, so keep only the newest",
                            first.display(),
                            path.display(),
                            crl.issuer
                        ));
                    }
                    scopes.push((issuer_raw, idp, path.clone()));
                    crls.push(crl);
                }
                Err(e) => problems.push(e),
            }
        }
    }
    // With CRLs, a certificate whose status no CRL tells is refused (see
    // `server_config`): a client CA without one would refuse everything it
    // issued, which is better said now than found by its users.
    let mut missing: Vec<String> = Vec::new();
    for ca in &cas {
        let subject = ca.subject().as_raw();
        if !scopes.iter().any(|(i, _, _)| i.as_slice() == subject) {
            let name = dn_text(ca.subject());
            if !missing.contains(&name) {
                missing.push(name);
            }
        }
    }
    if problems.is_empty() {
        // A CRL of no client CA may be an intermediate's, or the wrong
        // CA's: said with the CA left without one.
        let others: Vec<String> = crls
            .iter()
            .filter(|c| !c.issued_by_client_ca)
            .map(|c| format!("{} is a CRL of {}", c.path.display(), c.issuer))
            .collect();
        let others = if others.is_empty() {
            String::new()
        } else {
            format!(
                " ({}, which is no certificate of client_ca)",
                others.join("; ")
            )
        };
        for name in missing {
            problems.push(format!(
                "no CRL of the client CA {name}{others}; with client_crl set, a certificate whose revocation no CRL can tell is refused, so every certificate that CA issued would be; add its CRL, or remove it from client_ca"
            ));
        }
    }
    if problems.is_empty() {
        Ok(crls)
    } else {
        Err(problems)
    }
}

/// The DER of every CRL in the file.
fn ders(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        format!("cannot read {shown}: {e}; give a CRL file (PEM, -----BEGIN X509 CRL-----, or DER; relative paths are taken from the config file's folder)")
    })?;
    let mut crls = Vec::new();
    let mut others = Vec::new();
    for item in rustls_pemfile::read_all(&mut bytes.as_slice()) {
        match item {
            Ok(rustls_pemfile::Item::Crl(der)) => crls.push(der),
            Ok(rustls_pemfile::Item::X509Certificate(_)) => others.push("a certificate"),
            Ok(
                rustls_pemfile::Item::Pkcs1Key(_)
                | rustls_pemfile::Item::Pkcs8Key(_)
                | rustls_pemfile::Item::Sec1Key(_),
            ) => others.push("a private key"),
            Ok(_) => others.push("another PEM object"),
            Err(_) => break,
        }
    }
    if crls.is_empty() && others.is_empty() && bytes.first() == Some(&0x30) {
        // No PEM at all and a DER SEQUENCE: a CRL as CAs publish them at
        // their distribution points (RFC 5280 §4.2.1.13).
        crls.push(CertificateRevocationListDer::from(bytes));
    }
    if crls.is_empty() {
        others.dedup();
        let held = if others.is_empty() {
            String::new()
        } else {
            format!(" (it holds {})", others.join(", "))
        };
        return Err(format!(
            "{shown} holds no CRL{held}; give a PEM file with -----BEGIN X509 CRL----- blocks, or one DER CRL"
        ));
    }
    Ok(crls)
}

/// Checks one CRL: rustls can use it, and when a `client_ca` certificate
/// bears its issuer's name, that CA's key signed it and may sign CRLs.
/// Returns it with its issuer's raw name and issuing distribution point.
#[allow(clippy::type_complexity)]
fn one(
    path: &Path,
    der: CertificateRevocationListDer<'static>,
    cas: &[X509Certificate<'_>],
    client_ca: &[CertificateDer<'static>],
) -> Result<(Crl, Vec<u8>, Option<Vec<u8>>), String> {
    let shown = path.display();
    // rustls's own parser first: what it refuses, it would refuse at start.
    if let Some(roots) = roots(client_ca) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let parsed = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .with_crls([der.clone()])
            .build();
        if let Err(rustls::server::VerifierBuilderError::InvalidCrl(e)) = parsed {
            return Err(format!("{shown}: {}", crl_error(&e)));
        }
    }
    let parsed = x509_parser::parse_x509_crl(der.as_ref())
        .map_err(|e| format!("{shown}: not a readable CRL ({e})"))?;
    let crl: CertificateRevocationList<'_> = parsed.1;
    let issuer = dn_text(crl.issuer());
    let issuer_raw = crl.issuer().as_raw().to_vec();
    let next_update = crl
        .next_update()
        .map(|t| {
            u64::try_from(t.timestamp())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                .unwrap_or(UNIX_EPOCH)
        })
        .ok_or_else(|| {
            format!("{shown}: the CRL of {issuer} has no nextUpdate, so it could never be told stale (RFC 5280 §5.1.2.5); rustls refuses it too")
        })?;
    let idp = crl
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.28")
        .map(|e| e.value.to_vec());
    let named: Vec<&X509Certificate<'_>> = cas
        .iter()
        .filter(|c| c.subject().as_raw() == issuer_raw.as_slice())
        .collect();
    let issued_by_client_ca = !named.is_empty();
    if issued_by_client_ca {
        let signer = named
            .iter()
            .find(|c| crl.verify_signature(c.public_key()).is_ok())
            .ok_or_else(|| {
                format!("{shown}: the CRL names {issuer} as its issuer, but that client CA's key did not sign it (a CRL of another CA of that name, or altered)")
            })?;
        if let Ok(Some(ku)) = signer.key_usage() {
            if !ku.value.crl_sign() {
                return Err(format!("{shown}: the client CA {issuer} may not sign CRLs (its key usage lacks cRLSign), so rustls would refuse every certificate it issued"));
            }
        }
    }
    let revoked = crl.iter_revoked_certificates().count();
    Ok((
        Crl {
            path: path.to_path_buf(),
            der: der.clone(),
            issuer,
            next_update,
            revoked,
            issued_by_client_ca,
        },
        issuer_raw,
        idp,
    ))
}

fn roots(client_ca: &[CertificateDer<'static>]) -> Option<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(client_ca.iter().cloned());
    (added > 0).then(|| Arc::new(roots))
}

/// rustls's reason, in words.
fn crl_error(e: &CertRevocationListError) -> String {
    match e {
        CertRevocationListError::ParseError => "not a well-formed CRL".to_owned(),
        CertRevocationListError::UnsupportedCrlVersion => {
            "not a version 2 CRL, which rustls requires".to_owned()
        }
        CertRevocationListError::UnsupportedDeltaCrl => {
            "a delta CRL, which rustls does not support; give the complete CRL".to_owned()
        }
        CertRevocationListError::UnsupportedIndirectCrl => {
            "an indirect CRL (issued for another CA), which rustls does not support".to_owned()
        }
        CertRevocationListError::UnsupportedCriticalExtension => {
            "the CRL has a critical extension rustls does not know".to_owned()
        }
        other => format!("rustls cannot use this CRL ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };

    struct Ca {
        cert: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str, usages: Vec<KeyUsagePurpose>) -> Ca {
        let key = KeyPair::generate().expect("a key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = usages;
        let cert = p.self_signed(&key).expect("a CA").der().clone();
        Ca {
            cert,
            issuer: Issuer::new(p, key),
        }
    }

    fn crl_of(ca: &Ca, next: Duration, revoked: &[u64]) -> String {
        let now = SystemTime::now();
        CertificateRevocationListParams {
            this_update: (now - Duration::from_secs(60)).into(),
            next_update: (now + next).into(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now.into(),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.issuer)
        .expect("a CRL")
        .pem()
        .expect("PEM")
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_crl_of_each_client_ca_is_read_with_its_issuer_and_next_update() {
        let dir = tempfile::tempdir().unwrap();
        let a = ca(
            "CA a",
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
        );
        let b = ca("CA b", vec![]);
        let f = write(
            dir.path(),
            "both.crl",
            &(crl_of(&a, DAY, &[7, 9]) + &crl_of(&b, DAY, &[])),
        );
        let crls = read(&[f], &[a.cert.clone(), b.cert.clone()]).expect("valid");
        assert_eq!(crls.len(), 2);
        assert_eq!(crls[0].issuer, "CN=CA a");
        assert_eq!(crls[0].revoked, 2);
        assert!(crls[0].issued_by_client_ca && crls[1].issued_by_client_ca);
        assert!(!crls[0].expired_at(SystemTime::now()));
        assert!(crls[0].expired_at(crls[0].next_update));

        // The same CRL as DER, as distribution points publish it.
        let der = rustls_pemfile::crls(&mut crl_of(&a, DAY, &[]).as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let d = dir.path().join("a.der");
        std::fs::write(&d, der.as_ref()).unwrap();
        let b_pem = write(dir.path(), "b.crl", &crl_of(&b, DAY, &[]));
        assert_eq!(
            read(&[d, b_pem], &[a.cert.clone(), b.cert.clone()])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn every_problem_names_its_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let a = ca("CA a", vec![]);
        let other = ca("CA a", vec![]); // same name, another key
        let no_crl_sign = ca("CA k", vec![KeyUsagePurpose::KeyCertSign]);
        let cas = [a.cert.clone()];
        let one_problem = |files: &[PathBuf], cas: &[CertificateDer<'static>]| -> String {
            let p = read(files, cas).expect_err("a problem");
            assert_eq!(p.len(), 1, "{p:?}");
            p[0].clone()
        };

        let missing = dir.path().join("missing.crl");
        let msg = one_problem(&[missing], &cas);
        assert!(
            msg.starts_with("cannot read ") && msg.contains("missing.crl"),
            "{msg}"
        );

        let cert = write(dir.path(), "ca.crt", &rcgen_pem(&a));
        let msg = one_problem(&[cert], &cas);
        assert!(
            msg.contains("holds no CRL (it holds a certificate)"),
            "{msg}"
        );

        let junk = write(dir.path(), "junk.crl", "hello");
        assert!(one_problem(&[junk], &cas).contains("holds no CRL;"));

        let forged = write(dir.path(), "forged.crl", &crl_of(&other, DAY, &[]));
        let msg = one_problem(&[forged], &cas);
        assert!(
            msg.contains("that client CA's key did not sign it"),
            "{msg}"
        );

        let k = write(dir.path(), "k.crl", &crl_of_unchecked(&no_crl_sign));
        let msg = one_problem(&[k], std::slice::from_ref(&no_crl_sign.cert));
        assert!(msg.contains("lacks cRLSign"), "{msg}");

        let first = write(dir.path(), "old.crl", &crl_of(&a, DAY, &[]));
        let second = write(dir.path(), "new.crl", &crl_of(&a, DAY, &[1]));
        let msg = one_problem(&[first.clone(), second], &cas);
        assert!(
            msg.contains("old.crl and ") && msg.contains("consults only the first"),
            "{msg}"
        );

        let b = ca("CA b", vec![]);
        let msg = one_problem(&[first], &[a.cert.clone(), b.cert.clone()]);
        assert!(msg.starts_with("no CRL of the client CA CN=CA b;"), "{msg}");
    }

    /// An intermediate CA's CRL (its issuer is not in `client_ca`) is
    /// taken: its signature is checked against the intermediate a client
    /// sends.
    #[test]
    fn an_intermediate_cas_crl_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let root = ca("root", vec![]);
        let intermediate = ca("intermediate", vec![]);
        let files = [
            write(dir.path(), "root.crl", &crl_of(&root, DAY, &[])),
            write(dir.path(), "int.crl", &crl_of(&intermediate, DAY, &[])),
        ];
        let crls = read(&files, std::slice::from_ref(&root.cert)).expect("valid");
        assert!(crls[0].issued_by_client_ca);
        assert!(!crls[1].issued_by_client_ca);
    }

    fn rcgen_pem(ca: &Ca) -> String {
        let b64 =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.cert.as_ref());
        format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
    }

    /// A CRL signed by a CA whose key usage lacks cRLSign (rcgen refuses
    /// to make one, so the issuer it signs with is told otherwise).
    fn crl_of_unchecked(ca: &Ca) -> String {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "CA k");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = Issuer::new(p, ca.issuer.key());
        let now = SystemTime::now();
        CertificateRevocationListParams {
            this_update: now.into(),
            next_update: (now + DAY).into(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}
