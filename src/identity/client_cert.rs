//! mTLS client certificates as identities: the names a verified
//! certificate carries, as claims, and ([`ClientCert`]) whether the
//! listener still accepts the certificate at each later request. rustls
//! has verified the chain against `client_ca` (and `client_crl`) in the
//! handshake; this module reads names (with `x509-parser`) and asks the
//! listener's verifier again when the config or the time may have changed
//! its verdict.
//!
//! Names become text that claim requirements compare, so each text must
//! have one reading: the distinguished names are written with RFC 4514's
//! escapes (a common name `x, O=Corp` cannot pose as an `O` attribute),
//! and a subject with several common names has no `sub` at all (tools
//! disagree on which one is "the" name: OpenSSL reads the first, Go the
//! last).

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;

use serde_json::{Map, Value};
use x509_parser::asn1_rs::Tag;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2abbrev, oid_registry};
use x509_parser::prelude::{AttributeTypeAndValue, FromDer, X509Certificate, X509Name};

use super::Identity;
use crate::tls::ClientAuth;

/// A verified client certificate on one connection: its identity, and
/// what it takes to tell, at each request, whether the config in force
/// still accepts it.
///
/// rustls verifies the chain once, at the handshake, and gives a resumed
/// TLS session the chain of the session it resumes without verifying it
/// again; a connection kept alive outlives both the certificates' and the
/// CRLs' validity, and any reload. So the verdict is kept with the config
/// snapshot (its generation) and the next moment the clock could change
/// it (a certificate of the chain expiring, a CRL reaching `nextUpdate`):
/// until either has moved, a request pays a lock and a clock read; then
/// the chain is verified again with the listener's current verifier,
/// exactly as a new handshake would verify it (CAs, CRLs, expiry).
#[derive(Debug)]
pub struct ClientCert {
    identity: Arc<Identity>,
    /// As the client sent it, leaf first.
    chain: Vec<CertificateDer<'static>>,
    /// The first second at which each certificate of the chain has
    /// expired, earliest first (one the client sent along unused may have
    /// expired already: the verifier, not this list, says what counts).
    expiries: Vec<SystemTime>,
    verdict: Mutex<Verdict>,
}

#[derive(Debug, Clone, Copy)]
struct Verdict {
    /// The snapshot it was reached under (0: none yet).
    generation: u64,
    accepted: bool,
    /// When the clock could change it; `None`: never.
    recheck_at: Option<SystemTime>,
}

impl ClientCert {
    /// The certificate a handshake accepted (leaf first); `None` when the
    /// leaf cannot be parsed (rustls accepted it, so this is unlikely).
    /// Not yet judged: see [`ClientCert::accepted`] and
    /// [`ClientCert::identity_under`].
    pub fn new(chain: &[CertificateDer<'static>]) -> Option<ClientCert> {
        let (identity, _) = identity(chain.first()?.as_ref())?;
        let mut expiries: Vec<SystemTime> = chain
            .iter()
            .filter_map(|c| not_after(c.as_ref()))
            .map(|t| t + Duration::from_secs(1))
            .collect();
        expiries.sort();
        Some(ClientCert {
            identity: Arc::new(identity),
            chain: chain.to_vec(),
            expiries,
            verdict: Mutex::new(Verdict {
                generation: 0,
                accepted: false,
                recheck_at: None,
            }),
        })
    }

    /// Records that the handshake just made under snapshot `generation`
    /// verified it with `auth`.
    pub fn accepted(self, generation: u64, auth: &ClientAuth, now: SystemTime) -> ClientCert {
        let recheck_at = self.recheck_at(auth, now);
        *self.lock() = Verdict {
            generation,
            accepted: true,
            recheck_at,
        };
        self
    }

    /// The identity, if the listener's verification in snapshot
    /// `generation` (`auth`; `None`: certificates no longer verified)
    /// accepts the certificate now.
    pub fn identity_under(
        &self,
        generation: u64,
        auth: Option<&ClientAuth>,
        now: SystemTime,
    ) -> Option<&Arc<Identity>> {
        let mut v = self.lock();
        let fresh = v.generation == generation && v.recheck_at.is_none_or(|t| now < t);
        if !fresh {
            *v = match auth.filter(|a| a.accepts(&self.chain, now)) {
                Some(a) => Verdict {
                    generation,
                    accepted: true,
                    recheck_at: self.recheck_at(a, now),
                },
                // Refused: only another snapshot can change that.
                None => Verdict {
                    generation,
                    accepted: false,
                    recheck_at: None,
                },
            };
        }
        v.accepted.then_some(&self.identity)
    }

    /// The first moment after `now` at which a certificate of the chain
    /// expires or a CRL of `auth` does.
    fn recheck_at(&self, auth: &ClientAuth, now: SystemTime) -> Option<SystemTime> {
        let expiry = self.expiries.iter().copied().find(|t| *t > now);
        match (expiry, auth.next_change(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Verdict> {
        // The guarded value is plain fields, whole after any panic.
        self.verdict
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The identity of a verified client certificate (the leaf, DER) and the
/// end of the certificate's validity, or `None` if it cannot be parsed
/// (rustls accepted it, so this is unlikely).
pub fn identity(der: &[u8]) -> Option<(Identity, SystemTime)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let until = u64::try_from(not_after)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH);
    let subject = cert.subject();
    let mut common_names = subject.iter_common_name();
    let cn = match (common_names.next(), common_names.next()) {
        (Some(only), None) => only.as_str().ok().map(str::to_owned),
        _ => None,
    };
    let mut san = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    san.push(Value::String((*s).to_owned()))
                }
                _ => {}
            }
        }
    }
    let issuer = dn_text(cert.issuer());
    let mut claims = Map::new();
    if let Some(cn) = &cn {
        claims.insert("sub".to_owned(), Value::String(cn.clone()));
    }
    claims.insert("subject".to_owned(), Value::String(dn_text(subject)));
    claims.insert("san".to_owned(), Value::Array(san));
    claims.insert("iss".to_owned(), Value::String(issuer.clone()));
    let identity = Identity {
        subject: cn,
        issuer: Some(issuer),
        source: "client_cert".to_owned(),
        claims,
    };
    Some((identity, until))
}

/// A distinguished name as text: attributes in the certificate's order,
/// `, ` between them and ` + ` inside a multi-valued one (as x509-parser
/// and OpenSSL's one-line form write them), each value escaped as RFC 4514
/// §2.4 says, so that only the name's own separators separate.
pub(crate) fn dn_text(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for (i, rdn) in name.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            match oid2abbrev(attr.attr_type(), oid_registry()) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attribute_text(attr) {
                Some(text) => escape_value(&text, &mut out),
                // RFC 4514 §2.4: a value that is not text, as `#` and hex.
                None => {
                    out.push('#');
                    for b in attr.as_slice() {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
        }
    }
    out
}

/// The value as text when it is one of the string types and decodes.
fn attribute_text(attr: &AttributeTypeAndValue<'_>) -> Option<String> {
    let data = attr.as_slice();
    match attr.attr_value().tag() {
        Tag::NumericString
        | Tag::PrintableString
        | Tag::Utf8String
        | Tag::Ia5String
        | Tag::VisibleString
        | Tag::GeneralString
        | Tag::GraphicString
        | Tag::T61String
        | Tag::VideotexString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::BmpString if data.len() % 2 == 0 => char::decode_utf16(
            data.chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        _ => None,
    }
}

/// RFC 4514 §2.4: the separators and quoting characters get a backslash,
/// as do a leading `#` or space and a trailing space; NUL and other
/// control characters are written as a backslash and two hex digits.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    const DAY: Duration = Duration::from_secs(86_400);

    /// A CA and a verifier trusting it; `carol`'s certificate from it,
    /// valid for a day, followed by `extra` certificates.
    fn carol_and_her_ca(
        extra: Vec<CertificateDer<'static>>,
    ) -> (Vec<CertificateDer<'static>>, ClientAuth) {
        let now = SystemTime::now();
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "carol");
        p.not_before = (now - DAY).into();
        p.not_after = (now + DAY).into();
        let leaf = p.signed_by(&key, &issuer).expect("leaf").der().clone();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        let mut chain = vec![leaf];
        chain.extend(extra);
        (chain, ClientAuth::new(verifier, Vec::new(), false))
    }

    /// The verdict on a certificate follows the verifier in force and the
    /// clock, not only the handshake: another snapshot's verifier that
    /// refuses it, or the certificate's own expiry, ends the identity.
    #[test]
    fn the_verdict_follows_the_snapshot_and_the_clock() {
        let now = SystemTime::now();
        let (chain, auth) = carol_and_her_ca(Vec::new());
        let (_, other) = carol_and_her_ca(Vec::new());
        let cert = ClientCert::new(&chain)
            .expect("parses")
            .accepted(1, &auth, now);
        assert!(cert.identity_under(1, Some(&auth), now).is_some());
        assert!(cert.identity_under(2, Some(&other), now).is_none());
        assert!(cert.identity_under(2, Some(&other), now).is_none());
        assert!(cert.identity_under(3, None, now).is_none());
        assert!(cert.identity_under(4, Some(&auth), now).is_some());
        assert!(cert.identity_under(4, Some(&auth), now + 2 * DAY).is_none());
    }

    /// A certificate the client sends along that no path needs (an old
    /// cross-certificate, say) does not end the identity when it has
    /// expired: the verifier ignores it, and so does the verdict.
    #[test]
    fn an_expired_certificate_sent_along_unused_changes_nothing() {
        let now = SystemTime::now();
        let key = KeyPair::generate().expect("key");
        let mut old = CertificateParams::default();
        old.distinguished_name
            .push(DnType::CommonName, "old cross-certificate");
        old.not_before = (now - 3 * DAY).into();
        old.not_after = (now - 2 * DAY).into();
        let old = old.self_signed(&key).expect("old").der().clone();
        let (chain, auth) = carol_and_her_ca(vec![old]);
        assert!(auth.accepts(&chain, now), "the verifier ignores it");
        let cert = ClientCert::new(&chain)
            .expect("parses")
            .accepted(1, &auth, now);
        assert!(cert.identity_under(1, Some(&auth), now).is_some());
        assert!(cert.identity_under(2, Some(&auth), now).is_some());
    }

    /// A self-signed certificate whose subject has these attributes, in
    /// this order.
    fn cert(subject: &[(DnType, &str)]) -> Vec<u8> {
        let key = KeyPair::generate().expect("a key pair");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
        let mut name = DistinguishedName::new();
        for (ty, value) in subject {
            name.push(ty.clone(), *value);
        }
        params.distinguished_name = name;
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .to_vec()
    }

    fn claim(id: &Identity, name: &str) -> Option<String> {
        id.claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    #[test]
    fn an_ordinary_name_reads_as_before() {
        let der = cert(&[
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "Corp"),
            (DnType::CommonName, "alice"),
        ]);
        let id = identity(&der).expect("an identity").0;
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(claim(&id, "sub").as_deref(), Some("alice"));
        let shown = X509Certificate::from_der(&der)
            .map(|(_, c)| c.subject().to_string())
            .expect("parses");
        assert_eq!(claim(&id, "subject"), Some(shown));
        assert_eq!(
            claim(&id, "subject").as_deref(),
            Some("C=US, O=Corp, CN=alice")
        );
        assert_eq!(claim(&id, "iss"), claim(&id, "subject"));
    }

    #[test]
    fn a_common_name_cannot_pose_as_another_attribute() {
        // A CA that writes the common name first (LDAP order) and lets the
        // requester choose it: `equals = "CN=alice, OU=Admins, O=Corp"`
        // must not hold for a name of `alice, OU=Admins` under `O=Corp`.
        let admin = cert(&[
            (DnType::CommonName, "alice"),
            (DnType::OrganizationalUnitName, "Admins"),
            (DnType::OrganizationName, "Corp"),
        ]);
        let forged = cert(&[
            (DnType::CommonName, "alice, OU=Admins"),
            (DnType::OrganizationName, "Corp"),
        ]);
        let admin = identity(&admin).expect("an identity").0;
        let forged = identity(&forged).expect("an identity").0;
        assert_eq!(
            claim(&admin, "subject").as_deref(),
            Some("CN=alice, OU=Admins, O=Corp")
        );
        assert_eq!(
            claim(&forged, "subject").as_deref(),
            Some("CN=alice\\, OU=Admins, O=Corp")
        );
        assert_eq!(claim(&forged, "sub").as_deref(), Some("alice, OU=Admins"));

        let der = cert(&[(DnType::CommonName, "#x + O=Corp; <a> \"b\" \\ \n ")]);
        let id = identity(&der).expect("an identity").0;
        assert_eq!(
            claim(&id, "subject").as_deref(),
            Some("CN=\\#x \\+ O=Corp\\; \\<a\\> \\\"b\\\" \\\\ \\0a\\ ")
        );
    }

    #[test]
    fn several_common_names_give_no_subject() {
        let der = cert(&[
            (DnType::CommonName, "alice"),
            // A second commonName attribute (2.5.4.3).
            (DnType::CustomDnType(vec![2, 5, 4, 3]), "admin"),
        ]);
        let id = identity(&der).expect("an identity").0;
        assert_eq!(id.subject, None);
        assert_eq!(claim(&id, "sub"), None);
        assert_eq!(claim(&id, "subject").as_deref(), Some("CN=alice, CN=admin"));
    }
}
