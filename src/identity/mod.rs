//! Who the client is, when the policy asks: a verified JWT from the
//! company IdP or identity-aware proxy, or a verified mTLS client
//! certificate.
//!
//! This module owns turning credentials into an [`Identity`] and checking
//! claim requirements against it. It does not decide access: `policy`
//! combines identity with network membership.

pub mod client_cert;

use serde_json::{Map, Value};

/// A verified identity. `claims` holds the JWT's claims, or for a client
/// certificate `sub` (its common name), `subject` (the full DN) and `san`
/// (its DNS, email and URI names).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// Where it came from: "bearer", "header:NAME", "cookie:NAME" or
    /// "client_cert".
    pub source: String,
    pub claims: Map<String, Value>,
}

/// What the request's credentials amounted to, computed before the
/// (synchronous) policy decision.
#[derive(Debug, Clone, PartialEq)]
pub enum IdentityOutcome {
    /// No credential was presented.
    Absent,
    /// A credential was presented and failed verification; `reason` is a
    /// stable snake_case code, never the token.
    Invalid { reason: &'static str },
    /// Verified, but a claim requirement does not hold.
    Rejected { identity: Identity, claim: String },
    /// Verified and every claim requirement holds.
    Verified(Identity),
}

impl IdentityOutcome {
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            IdentityOutcome::Rejected { identity, .. } | IdentityOutcome::Verified(identity) => {
                Some(identity)
            }
            _ => None,
        }
    }
}
