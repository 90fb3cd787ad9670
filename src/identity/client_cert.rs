//! mTLS client certificates as identities: the names a verified
//! certificate carries, as claims. rustls has already verified the chain
//! against `server.client_ca` by the time this runs; this module only reads
//! names (with `x509-parser`).

use serde_json::{Map, Value};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Identity;

/// The identity of a verified client certificate (the leaf, DER), or
/// `None` if it cannot be parsed (rustls accepted it, so this is unlikely).
pub fn identity(der: &[u8]) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
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
    let mut claims = Map::new();
    if let Some(cn) = &cn {
        claims.insert("sub".to_owned(), Value::String(cn.clone()));
    }
    claims.insert("subject".to_owned(), Value::String(subject.to_string()));
    claims.insert("san".to_owned(), Value::Array(san));
    claims.insert("iss".to_owned(), Value::String(cert.issuer().to_string()));
    Some(Identity {
        subject: cn,
        issuer: Some(cert.issuer().to_string()),
        source: "client_cert".to_owned(),
        claims,
    })
}
