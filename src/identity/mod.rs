//! Who is asking: turns a request's headers into a verified [`Identity`], and
//! checks that identity against the configured claim requirements.
//!
//! This module owns the `[identity.jwt]` and `[[identity.claims]]` config
//! sections (raw serde structs plus their validation), key loading (PEM files,
//! a JWKS file or URL, an HMAC secret), token extraction and verification, and
//! the claim rules. It does not decide what a request may do: policy takes the
//! [`Identity`] (or the [`JwtError`] that explains why there is none) and makes
//! the decision. mTLS client certificates become identities in [`client_cert`].
//!
//! - [`jwt`]: settings, token extraction, signature and registered-claim checks.
//! - `jwks` (private): JSON Web Key Sets: parsing, fetching, refresh and refetch.
//! - [`client_cert`]: the names of a verified client certificate as claims.
//! - [`claims`]: requirements on claim values (`equals`, `one_of`, `contains`,
//!   `ends_with`).

pub mod claims;
pub mod client_cert;
mod jwks;
pub mod jwt;

pub use claims::{ClaimFailure, ClaimRequirement, ClaimRules};
pub use jwt::{JwtError, JwtSettings, JwtVerifier, RefreshHandle};

/// Config problems found here are reported with all the others.
pub use crate::config::Problem;

use std::sync::Arc;

use serde_json::{Map, Value};

/// A verified identity. `claims` holds the JWT's claims, or for a client
/// certificate `sub` (its common name, when it has exactly one), `subject`
/// and `iss` (the full DNs, RFC 4514-escaped) and `san` (its DNS, email
/// and URI names).
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
/// (synchronous) policy decision. Identities are shared, not copied: the
/// token cache, a connection's client certificate and the request's log
/// lines all point at the same one (a copy of a JWT's claims cost more than
/// the cached verification itself).
#[derive(Debug, Clone, PartialEq)]
pub enum IdentityOutcome {
    /// No credential was presented.
    Absent,
    /// A credential was presented and failed verification; `reason` is a
    /// stable snake_case code, never the token.
    Invalid { reason: &'static str },
    /// Verified, but a claim requirement does not hold.
    Rejected {
        identity: Arc<Identity>,
        claim: String,
    },
    /// Verified and every claim requirement holds.
    Verified(Arc<Identity>),
}

impl IdentityOutcome {
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        match self {
            IdentityOutcome::Rejected { identity, .. } | IdentityOutcome::Verified(identity) => {
                Some(identity)
            }
            _ => None,
        }
    }
}
