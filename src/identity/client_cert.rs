//! mTLS client certificates as identities: the names a verified
//! certificate carries, as claims. rustls has already verified the chain
//! against `server.client_ca` by the time this runs; this module only reads
//! names (with `x509-parser`).
//!
//! Names become text that claim requirements compare, so each text must
//! have one reading: the distinguished names are written with RFC 4514's
//! escapes (a common name `x, O=Corp` cannot pose as an `O` attribute),
//! and a subject with several common names has no `sub` at all (tools
//! disagree on which one is "the" name: OpenSSL reads the first, Go the
//! last).

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use x509_parser::asn1_rs::Tag;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2abbrev, oid_registry};
use x509_parser::prelude::{AttributeTypeAndValue, FromDer, X509Certificate, X509Name};

use super::Identity;

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
fn dn_text(name: &X509Name<'_>) -> String {
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
