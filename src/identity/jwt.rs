//! JWT identities: the `[identity.jwt]` settings, finding the token in a
//! request, and verifying it against pinned keys and algorithms.
//!
//! Owns: settings validation, token extraction (bearer, named headers,
//! cookies), signature and registered-claim checks (`exp`, `nbf`, `iss`,
//! `aud`). Does not own: key material handling (the `jwks` module), claim
//! requirements ([`super::claims`]), or what a failure means for the request
//! (policy maps [`JwtError`] to a refusal).
//!
//! Pinning, because this is where JWT verifiers get broken:
//! - the token's `alg` must be in the configured list, written out by the
//!   operator (no default), and `none` is never accepted;
//! - each key verifies only the algorithms of its own type (an RSA key never
//!   checks an HS256 MAC, so "HMAC with the public key as secret" fails), and
//!   HMAC cannot be configured together with asymmetric algorithms;
//! - `exp` is required, `nbf` checked when present, `iss`/`aud` required and
//!   checked unless explicitly waived; `leeway` (default 0s) widens only
//!   `exp`/`nbf`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{HeaderName, AUTHORIZATION, COOKIE};
use http::{HeaderMap, Uri};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks::{self, Fetcher, RemoteKeys, VerifyKey};
use super::{Identity, Problem};

/// Tokens are a few hundred bytes to a few KiB; a bigger one is an attack on
/// the parser or a misrouted blob.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Default for `jwks_refresh`.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(600);
/// Default for `jwks_refetch_min_interval`.
pub const DEFAULT_JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Default for `jwks_timeout`.
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew beyond this is a broken clock, not skew; it would also keep
/// revoked sessions alive.
const MAX_LEEWAY: Duration = Duration::from_secs(600);
/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
fn min_hmac_secret_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

const ALGORITHM_NAMES: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

/// The `[identity.jwt]` section as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
// Every key may be left out; validation says which ones must be set.
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// Where to look for the token, tried in order; the first present wins:
    /// `bearer`, `header:<name>`, `cookie:<name>`.
    pub sources: Vec<String>,
    /// Accepted `alg` values; required and explicit.
    pub algorithms: Vec<String>,
    /// Accepted `iss` values; required unless `waive_issuer`.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; required unless `waive_audience`.
    pub audiences: Vec<String>,
    /// Accept tokens from any issuer (the keys alone decide).
    pub waive_issuer: bool,
    /// Accept tokens for any audience: a token minted for another app works here.
    pub waive_audience: bool,
    /// Clock skew allowed on `exp`/`nbf`, e.g. `"30s"`. Default `0s`.
    pub leeway: Option<String>,
    /// Public key files (PEM); the file stem is the key's `kid`.
    pub pem_files: Vec<PathBuf>,
    /// A JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS endpoint (`https`, or `http` to a loopback address).
    pub jwks_url: Option<String>,
    /// How often to refetch `jwks_url`. Default `10m`.
    pub jwks_refresh: Option<String>,
    /// Minimum time between refetches caused by an unknown `kid`. Default `30s`.
    pub jwks_refetch_min_interval: Option<String>,
    /// Deadline for one JWKS fetch. Default `5s`.
    pub jwks_timeout: Option<String>,
    /// File holding the HMAC secret (trailing newline ignored).
    pub hmac_secret_file: Option<PathBuf>,
    /// Environment variable holding the HMAC secret.
    pub hmac_secret_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Bearer,
    Header(HeaderName),
    Cookie(String),
}

impl Source {
    fn parse(raw: &str) -> Result<Source, String> {
        let hint = "use \"bearer\", \"header:<name>\" (e.g. \"header:x-goog-iap-jwt-assertion\") or \"cookie:<name>\" (e.g. \"cookie:CF_Authorization\")";
        if raw == "bearer" {
            return Ok(Source::Bearer);
        }
        if let Some(name) = raw.strip_prefix("header:") {
            let header = HeaderName::from_str(name)
                .map_err(|_| format!("{raw:?} is not a valid header name; {hint}"))?;
            if header == AUTHORIZATION || header == COOKIE {
                return Err(format!(
                    "{raw:?} is not allowed; use \"bearer\" for Authorization and \
                     \"cookie:<name>\" for cookies"
                ));
            }
            // Underscores are how headers get smuggled past proxies that
            // normalise them to dashes (and the reverse).
            if name.contains('_') {
                return Err(format!(
                    "{raw:?}: header names with \"_\" are dropped or rewritten by many proxies; use the dashed name"
                ));
            }
            return Ok(Source::Header(header));
        }
        if let Some(name) = raw.strip_prefix("cookie:") {
            // RFC 6265 §4.1.1: cookie-name is an RFC 2616 token.
            let is_token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !is_token {
                return Err(format!("{raw:?} is not a valid cookie name; {hint}"));
            }
            return Ok(Source::Cookie(name.to_owned()));
        }
        Err(format!("{raw:?} is not a token source; {hint}"))
    }

    fn label(&self) -> String {
        match self {
            Source::Bearer => "bearer".to_owned(),
            Source::Header(name) => format!("header:{name}"),
            Source::Cookie(name) => format!("cookie:{name}"),
        }
    }
}

fn parse_duration(
    raw: &Option<String>,
    default: Duration,
    key: String,
    problems: &mut Vec<Problem>,
) -> Duration {
    match raw {
        None => default,
        Some(text) => {
            match humantime::parse_duration(text) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(Problem::new(
                    key,
                    format!("{text:?} is not a duration ({e}); write it like \"30s\", \"5m\" or \"1h\""),
                ));
                    default
                }
            }
        }
    }
}

/// `https` anywhere; plain `http` only to loopback, where no one sits on the
/// path to swap the keys (a local IdP agent, tests).
fn check_jwks_url(raw: &str) -> Result<Uri, String> {
    let example = "e.g. \"https://www.gstatic.com/iap/verify/public_key-jwk\"";
    let Some(uri) = Uri::from_str(raw).ok().filter(|u| u.host().is_some()) else {
        return Err(format!("{raw:?} is not an absolute https URL; {example}"));
    };
    if let Some(hidden) = crate::config::without_userinfo(&uri) {
        return Err(format!(
            "{hidden:?} names a user or password before the host; no credentials are sent \
             from this URL, and it appears in logs and `check`: give only the key set's URL"
        ));
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback_host(&uri) => Ok(uri),
        Some("http") => Err(format!(
            "{raw:?} uses plain http to a remote host, where anyone on the path could swap \
             the keys; use https (plain http is accepted only for loopback)"
        )),
        _ => Err(format!("{raw:?} is not an absolute https URL; {example}")),
    }
}

fn is_loopback_host(uri: &Uri) -> bool {
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Settings after validation, in the types the verifier uses.
struct Parsed {
    sources: Vec<Source>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    jwks_url: Option<Uri>,
    jwks_refresh: Duration,
    jwks_refetch_min_interval: Duration,
    jwks_timeout: Duration,
}

impl JwtSettings {
    /// Checks the section; `key_prefix` is where it sits in the config, e.g.
    /// `identity.jwt`. Returns every problem at once (empty when valid). Does
    /// not touch files, the environment or the network: [`JwtVerifier::new`]
    /// does that.
    pub fn validate(&self, key_prefix: &str) -> Vec<Problem> {
        self.parse(key_prefix).err().unwrap_or_default()
    }

    fn parse(&self, key_prefix: &str) -> Result<Parsed, Vec<Problem>> {
        let key = |field: &str| format!("{key_prefix}.{field}");
        let mut problems = Vec::new();

        let mut sources = Vec::new();
        if self.sources.is_empty() {
            problems.push(Problem::new(
                key("sources"),
                "is empty; list where the token is sent, e.g. [\"bearer\"] or [\"header:x-goog-iap-jwt-assertion\"]",
            ));
        }
        for raw in &self.sources {
            match Source::parse(raw) {
                Ok(source) if sources.contains(&source) => problems.push(Problem::new(
                    key("sources"),
                    format!("{raw:?} is listed twice; list each source once"),
                )),
                Ok(source) => sources.push(source),
                Err(message) => problems.push(Problem::new(key("sources"), message)),
            }
        }

        let valid_algs = ALGORITHM_NAMES.join(", ");
        let mut algorithms = Vec::new();
        if self.algorithms.is_empty() {
            problems.push(Problem::new(
                key("algorithms"),
                format!("is required and must be explicit, e.g. [\"ES256\"] for Google IAP or [\"RS256\"] for Cloudflare Access; one of {valid_algs}"),
            ));
        }
        for raw in &self.algorithms {
            if raw.eq_ignore_ascii_case("none") {
                problems.push(Problem::new(
                    key("algorithms"),
                    format!("{raw:?} is not allowed (unsigned tokens prove nothing); use one of {valid_algs}"),
                ));
                continue;
            }
            match Algorithm::from_str(raw) {
                Ok(alg) if ALGORITHM_NAMES.contains(&raw.as_str()) => {
                    if algorithms.contains(&alg) {
                        problems.push(Problem::new(
                            key("algorithms"),
                            format!("{raw:?} is listed twice; list each algorithm once"),
                        ));
                    } else {
                        algorithms.push(alg);
                    }
                }
                _ => problems.push(Problem::new(
                    key("algorithms"),
                    format!("{raw:?} is not a supported algorithm; use one of {valid_algs}"),
                )),
            }
        }
        let hmac_algs: Vec<Algorithm> =
            algorithms.iter().copied().filter(|a| is_hmac(*a)).collect();
        let public_algs: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| !is_hmac(*a))
            .collect();
        let asymmetric = !public_algs.is_empty();
        if !hmac_algs.is_empty() && asymmetric {
            problems.push(Problem::new(
                key("algorithms"),
                format!(
                    "mixes HMAC ({}) with public-key algorithms ({}); a token could then be \
                     MACed with a public key as the secret (algorithm confusion); \
                     configure one kind only",
                    jwks::names(&hmac_algs),
                    jwks::names(&public_algs),
                ),
            ));
        }

        for (list, waived, field, waive_field, example) in [
            (
                &self.issuers,
                self.waive_issuer,
                "issuers",
                "waive_issuer",
                "[\"https://cloud.google.com/iap\"]",
            ),
            (
                &self.audiences,
                self.waive_audience,
                "audiences",
                "waive_audience",
                "[\"/projects/123/global/backendServices/456\"]",
            ),
        ] {
            if list.is_empty() && !waived {
                problems.push(Problem::new(
                    key(field),
                    format!("is required; list the accepted values, e.g. {example}, or set {waive_field} = true to accept any"),
                ));
            }
            if !list.is_empty() && waived {
                problems.push(Problem::new(
                    key(waive_field),
                    format!("is true but {field} is also set; remove one (the list is ignored when waived)"),
                ));
            }
            if list.iter().any(|v| v.is_empty()) {
                problems.push(Problem::new(
                    key(field),
                    "contains an empty string; remove it",
                ));
            }
        }

        let leeway = parse_duration(&self.leeway, Duration::ZERO, key("leeway"), &mut problems);
        if leeway > MAX_LEEWAY {
            problems.push(Problem::new(
                key("leeway"),
                format!(
                    "{} is more than {}; fix the clocks (NTP) instead, leeway is for seconds of skew",
                    humantime::format_duration(leeway),
                    humantime::format_duration(MAX_LEEWAY)
                ),
            ));
        }
        let jwks_refresh = parse_duration(
            &self.jwks_refresh,
            DEFAULT_JWKS_REFRESH,
            key("jwks_refresh"),
            &mut problems,
        );
        let jwks_refetch_min_interval = parse_duration(
            &self.jwks_refetch_min_interval,
            DEFAULT_JWKS_REFETCH_MIN_INTERVAL,
            key("jwks_refetch_min_interval"),
            &mut problems,
        );
        let jwks_timeout = parse_duration(
            &self.jwks_timeout,
            DEFAULT_JWKS_TIMEOUT,
            key("jwks_timeout"),
            &mut problems,
        );
        if jwks_refresh.is_zero() {
            problems.push(Problem::new(
                key("jwks_refresh"),
                "is 0s; give an interval such as \"10m\"",
            ));
        }
        if jwks_timeout.is_zero() {
            problems.push(Problem::new(
                key("jwks_timeout"),
                "is 0s; give a deadline such as \"5s\"",
            ));
        }

        let mut jwks_url = None;
        match &self.jwks_url {
            Some(raw) => match check_jwks_url(raw) {
                Ok(uri) => jwks_url = Some(uri),
                Err(message) => problems.push(Problem::new(key("jwks_url"), message)),
            },
            None => {
                for (set, field) in [
                    (self.jwks_refresh.is_some(), "jwks_refresh"),
                    (
                        self.jwks_refetch_min_interval.is_some(),
                        "jwks_refetch_min_interval",
                    ),
                    (self.jwks_timeout.is_some(), "jwks_timeout"),
                ] {
                    if set {
                        problems.push(Problem::new(
                            key(field),
                            "has no effect without jwks_url; set jwks_url or remove it",
                        ));
                    }
                }
            }
        }

        let has_hmac_secret = self.hmac_secret_file.is_some() || self.hmac_secret_env.is_some();
        if self.hmac_secret_file.is_some() && self.hmac_secret_env.is_some() {
            problems.push(Problem::new(
                key("hmac_secret_env"),
                "is set together with hmac_secret_file; keep one so it is clear which secret is used",
            ));
        }
        if let Some(var) = &self.hmac_secret_env {
            if var.is_empty() || var.contains('=') {
                problems.push(Problem::new(
                    key("hmac_secret_env"),
                    format!("{var:?} is not an environment variable name; give the variable's name (e.g. \"SHAREGATE_JWT_SECRET\"), never the secret itself"),
                ));
            }
        }
        let has_public_keys =
            !self.pem_files.is_empty() || self.jwks_file.is_some() || self.jwks_url.is_some();
        if !has_hmac_secret && !has_public_keys {
            problems.push(Problem::new(
                key_prefix,
                "has no keys; set at least one of pem_files, jwks_file, jwks_url, hmac_secret_file, hmac_secret_env",
            ));
        }
        if has_hmac_secret && hmac_algs.is_empty() && !algorithms.is_empty() {
            problems.push(Problem::new(
                key("algorithms"),
                "has no HMAC algorithm but an HMAC secret is configured; add HS256 (or HS384/HS512) or remove the secret",
            ));
        }
        if !hmac_algs.is_empty() && !has_hmac_secret {
            problems.push(Problem::new(
                key("algorithms"),
                format!(
                    "lists {} but no secret is configured; set hmac_secret_file or hmac_secret_env",
                    jwks::names(&hmac_algs)
                ),
            ));
        }
        if asymmetric && !has_public_keys {
            problems.push(Problem::new(
                key("algorithms"),
                "lists public-key algorithms but no public key is configured; set pem_files, jwks_file or jwks_url",
            ));
        }
        if !hmac_algs.is_empty() && has_public_keys && !asymmetric {
            problems.push(Problem::new(
                key_prefix,
                "has public keys (pem_files/jwks_file/jwks_url) but only HMAC algorithms; remove the keys or use public-key algorithms",
            ));
        }

        if problems.is_empty() {
            Ok(Parsed {
                sources,
                algorithms,
                leeway,
                jwks_url,
                jwks_refresh,
                jwks_refetch_min_interval,
                jwks_timeout,
            })
        } else {
            Err(problems)
        }
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Why a present token was not accepted. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not a compact JWS, undecodable, too large, sent twice, or with
    /// unsupported critical header parameters.
    #[error("token is malformed")]
    Malformed,
    /// `exp` is in the past (beyond leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// No key that may verify it produced a valid signature.
    #[error("token signature is invalid")]
    BadSignature,
    /// The `kid` names no known key (after a refetch where allowed), or no
    /// loaded key fits the token's algorithm.
    #[error("token was signed with an unknown key")]
    UnknownKey,
    /// The header's `alg` is not in the configured list (this includes `none`).
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// `iss` is not an accepted issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` names none of the accepted audiences.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required registered claim (`exp`, `iss`, `aud`) is absent or not of
    /// the right type.
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// No key is loaded (cannot happen after a successful `new`).
    #[error("no verification keys are loaded")]
    NoKeys,
}

impl JwtError {
    /// Stable snake_case reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::BadSignature => "bad_signature",
            JwtError::UnknownKey => "unknown_key",
            JwtError::AlgorithmNotAllowed => "algorithm_not_allowed",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::MissingClaim("exp") => "missing_exp",
            JwtError::MissingClaim("iss") => "missing_iss",
            JwtError::MissingClaim("aud") => "missing_aud",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::NoKeys => "no_keys",
        }
    }
}

fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(static_claim(claim)),
        // A present but non-numeric exp/nbf is as good as absent.
        ErrorKind::InvalidClaimFormat(claim) if claim == "exp" => JwtError::MissingClaim("exp"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => JwtError::AlgorithmNotAllowed,
        _ => JwtError::Malformed,
    }
}

fn static_claim(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "iss" => "iss",
        "aud" => "aud",
        "nbf" => "nbf",
        "sub" => "sub",
        _ => "claim",
    }
}

/// Verifies tokens from requests. Cheap to clone; clones share keys.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("sources", &self.inner.sources)
            .field("algorithms", &self.inner.algorithms)
            .field("static_keys", &self.inner.static_keys.len())
            .field(
                "jwks_url",
                &self.inner.remote.as_ref().map(|r| r.url().to_string()),
            )
            .finish()
    }
}

struct Inner {
    sources: Vec<Source>,
    algorithms: Vec<Algorithm>,
    /// One validation per algorithm: jsonwebtoken insists the list it is given
    /// is a single key family, and one algorithm is the tightest pin.
    validations: HashMap<Algorithm, Validation>,
    static_keys: Vec<VerifyKey>,
    remote: Option<Arc<RemoteKeys>>,
    cache: Mutex<HashMap<[u8; 32], Verified>>,
}

/// Verified tokens are remembered until they expire: checking an RS256 or
/// ES256 signature costs 120-180 µs, a lookup under 1 µs (`benches/jwt.rs`),
/// and a browser or SDK sends the same token on every request.
const CACHE_ENTRIES: usize = 4096;

/// A verified token's identity, keyed by the token's SHA-256 (so the cache
/// never holds tokens), shared with the requests that present it. An entry
/// is used only while `exp` (without leeway) and `nbf` hold and, with a JWKS
/// URL, while the key set is the one it was verified with, so a key removed
/// from the set stops its tokens at once.
struct Verified {
    identity: Arc<Identity>,
    source: Source,
    exp: u64,
    nbf: Option<u64>,
    generation: Option<u64>,
}

/// Stops the JWKS refresh task when dropped.
#[derive(Debug)]
pub struct RefreshHandle {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RefreshHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Header {
    alg: String,
    kid: Option<String>,
}

/// Reads the protected header without trusting it, to pick key and algorithm.
fn peek_header(token: &str) -> Result<Header, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(JwtError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed)?;
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(JwtError::Malformed);
    };
    // RFC 7515 §4.1.11: extensions we do not understand must be rejected.
    if fields.contains_key("crit") {
        return Err(JwtError::Malformed);
    }
    let Some(Value::String(alg)) = fields.get("alg") else {
        return Err(JwtError::Malformed);
    };
    let kid = match fields.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    Ok(Header {
        alg: alg.clone(),
        kid,
    })
}

/// Compact JWS: three base64url segments. Used to tell a JWT in
/// `Authorization: Bearer` from an API key sent the same way.
fn looks_like_jws(value: &str) -> bool {
    let mut segments = 0;
    for part in value.split('.') {
        segments += 1;
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    segments == 3
}

impl JwtVerifier {
    /// Loads PEM files, the JWKS file and the HMAC secret, and fetches the
    /// JWKS URL once. `base_dir` resolves relative paths (the config file's
    /// directory). All problems are returned together; an unreachable JWKS URL
    /// is one of them (the gateway must not start unable to verify anyone).
    pub async fn new(settings: &JwtSettings, base_dir: &Path) -> Result<JwtVerifier, Vec<Problem>> {
        JwtVerifier::replacing(settings, base_dir, None).await
    }

    /// [`JwtVerifier::new`] on a reload: when the JWKS cannot be fetched
    /// right now but `previous` (the verifier in force) holds a key set from
    /// the same URL, that set is kept (with a warning) and the refresh tries
    /// again on its schedule. Otherwise an IdP that is briefly down would
    /// refuse the whole reload, leaving a policy the operator just narrowed
    /// in force.
    pub async fn replacing(
        settings: &JwtSettings,
        base_dir: &Path,
        previous: Option<&JwtVerifier>,
    ) -> Result<JwtVerifier, Vec<Problem>> {
        const PREFIX: &str = "identity.jwt";
        let parsed = settings.parse(PREFIX)?;
        let key = |field: &str| format!("{PREFIX}.{field}");
        let mut problems = Vec::new();
        let mut static_keys = Vec::new();

        for path in &settings.pem_files {
            let full = base_dir.join(path);
            let kid = full.file_stem().map(|s| s.to_string_lossy().into_owned());
            match jwks::load_pem(&full, kid, &parsed.algorithms) {
                Ok(k) => static_keys.push(k),
                Err(message) => problems.push(Problem::new(key("pem_files"), message)),
            }
        }

        if let Some(path) = &settings.jwks_file {
            let full = base_dir.join(path);
            match std::fs::read(&full) {
                Err(e) => problems.push(Problem::new(
                    key("jwks_file"),
                    format!("cannot read {}: {e}", full.display()),
                )),
                Ok(body) => match jwks::parse_jwks(&body, &parsed.algorithms) {
                    Err(e) => problems.push(Problem::new(
                        key("jwks_file"),
                        format!("{}: {e}", full.display()),
                    )),
                    Ok(keys) if keys.is_empty() => problems.push(Problem::new(
                        key("jwks_file"),
                        format!(
                            "{} holds no signature key usable with {}; check its kty/crv/alg",
                            full.display(),
                            jwks::names(&parsed.algorithms)
                        ),
                    )),
                    Ok(keys) => static_keys.extend(keys),
                },
            }
        }

        let hmac_algs: Vec<Algorithm> = parsed
            .algorithms
            .iter()
            .copied()
            .filter(|a| is_hmac(*a))
            .collect();
        let secret = match (&settings.hmac_secret_file, &settings.hmac_secret_env) {
            (Some(path), _) => {
                let full = base_dir.join(path);
                match std::fs::read(&full) {
                    Ok(mut bytes) => {
                        // Secret files are usually written with a trailing newline.
                        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            bytes.pop();
                        }
                        Some((key("hmac_secret_file"), bytes))
                    }
                    Err(e) => {
                        problems.push(Problem::new(
                            key("hmac_secret_file"),
                            format!("cannot read {}: {e}", full.display()),
                        ));
                        None
                    }
                }
            }
            (None, Some(var)) => match std::env::var_os(var) {
                Some(value) => Some((key("hmac_secret_env"), value.into_encoded_bytes())),
                None => {
                    problems.push(Problem::new(
                        key("hmac_secret_env"),
                        format!("environment variable {var} is not set; export it with the secret"),
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        if let Some((secret_key, bytes)) = secret {
            let needed = hmac_algs
                .iter()
                .map(|a| min_hmac_secret_len(*a))
                .max()
                .unwrap_or(32);
            if bytes.len() < needed {
                problems.push(Problem::new(
                    secret_key,
                    format!("the secret is {} bytes; {} needs at least {needed} random bytes (RFC 7518 §3.2)", bytes.len(), jwks::names(&hmac_algs)),
                ));
            } else {
                static_keys.push(VerifyKey {
                    kid: None,
                    algorithms: hmac_algs.clone(),
                    key: DecodingKey::from_secret(&bytes),
                    any_kid: true,
                });
            }
        }

        let mut remote = None;
        if let Some(url) = &parsed.jwks_url {
            match Fetcher::new(url.clone(), parsed.jwks_timeout) {
                Err(message) => problems.push(Problem::new(key("jwks_url"), message)),
                Ok(fetcher) => {
                    let keys = RemoteKeys::new(
                        fetcher,
                        parsed.algorithms.clone(),
                        parsed.jwks_refresh,
                        parsed.jwks_refetch_min_interval,
                    );
                    let in_force = previous
                        .and_then(|p| p.inner.remote.as_ref())
                        .filter(|r| r.url() == url)
                        .map(|r| r.current())
                        .filter(|k| !k.is_empty());
                    match (keys.initial_load().await, in_force) {
                        (Ok(_), _) => remote = Some(Arc::new(keys)),
                        (Err(e), Some(in_force)) => {
                            tracing::warn!(%url, error = %e, keys = in_force.len(), "could not fetch the JWKS on reload; keeping the key set in force until the next refresh");
                            keys.adopt(in_force);
                            remote = Some(Arc::new(keys));
                        }
                        (Err(e), None) => problems.push(Problem::new(
                            key("jwks_url"),
                            format!("could not fetch the JWKS from {url}: {e}; check the URL and that this host can reach it"),
                        )),
                    }
                }
            }
        }

        if !problems.is_empty() {
            return Err(problems);
        }

        let leeway = parsed.leeway.as_secs();
        let validations = parsed
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = leeway;
                v.validate_exp = true;
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                if settings.waive_issuer {
                    v.iss = None;
                } else {
                    v.set_issuer(&settings.issuers);
                    required.push("iss");
                }
                if settings.waive_audience {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&settings.audiences);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();

        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                sources: parsed.sources,
                algorithms: parsed.algorithms,
                validations,
                static_keys,
                remote,
                cache: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Starts the periodic JWKS refresh (a no-op handle without `jwks_url`).
    /// A failed fetch keeps the previous key set. Dropping the handle stops it.
    pub fn spawn_refresh(&self) -> RefreshHandle {
        let Some(remote) = &self.inner.remote else {
            return RefreshHandle { task: None };
        };
        // Weak: the task must not keep a discarded verifier (and its keys) alive.
        let weak: Weak<RemoteKeys> = Arc::downgrade(remote);
        let interval = remote.refresh_interval;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(remote) = weak.upgrade() else { break };
                remote.refresh().await;
            }
        });
        RefreshHandle { task: Some(task) }
    }

    /// True when at least one verification key is loaded.
    pub fn ready(&self) -> bool {
        !self.inner.static_keys.is_empty()
            || self
                .inner
                .remote
                .as_ref()
                .is_some_and(|r| !r.current().is_empty())
    }

    /// Finds the token (sources in order, first present wins) and verifies it.
    /// `Ok(None)`: no token. `Err`: a token is present but not acceptable.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<Option<Arc<Identity>>, JwtError> {
        let Some((source, token)) = self.find_token(headers)? else {
            return Ok(None);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let generation = self.inner.remote.as_ref().map(|r| r.generation());
        let cached = self.inner.cache.lock().ok().and_then(|cache| {
            cache
                .get(&key)
                .filter(|v| {
                    now < v.exp
                        && v.nbf.is_none_or(|nbf| nbf <= now)
                        && v.generation == generation
                        // The identity names its source: the same token
                        // from another source is verified (and kept) anew.
                        && v.source == *source
                })
                .map(|v| Arc::clone(&v.identity))
        });
        if let Some(identity) = cached {
            return Ok(Some(identity));
        }
        let result = self.verify_token(&token).await;
        if let Err(e) = &result {
            tracing::debug!(source = %source.label(), reason = e.reason(), "token rejected");
        }
        let (claims, generation) = result?;
        Ok(Some(self.admit(key, source, claims, generation)))
    }

    /// The identity of a token whose signature checked out with the keys of
    /// `generation`, remembered under that generation: a set swapped in
    /// since (a key withdrawn) makes the next request verify it again.
    fn admit(
        &self,
        key: [u8; 32],
        source: &Source,
        claims: Map<String, Value>,
        generation: Option<u64>,
    ) -> Arc<Identity> {
        let identity = Arc::new(Identity {
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            issuer: claims.get("iss").and_then(Value::as_str).map(str::to_owned),
            source: source.label(),
            claims,
        });
        self.remember(key, source, &identity, generation);
        identity
    }

    fn remember(
        &self,
        key: [u8; 32],
        source: &Source,
        identity: &Arc<Identity>,
        generation: Option<u64>,
    ) {
        let secs = |name: &str| identity.claims.get(name).and_then(Value::as_u64);
        let Some(exp) = secs("exp") else {
            return;
        };
        let entry = Verified {
            identity: Arc::clone(identity),
            source: source.clone(),
            exp,
            nbf: secs("nbf"),
            generation,
        };
        if let Ok(mut cache) = self.inner.cache.lock() {
            // Bounded: when full, start over rather than track recency; a
            // miss only costs one signature check.
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, entry);
        }
    }

    fn find_token(&self, headers: &HeaderMap) -> Result<Option<(&Source, String)>, JwtError> {
        for source in &self.inner.sources {
            let found = match source {
                Source::Bearer => bearer(headers)?,
                Source::Header(name) => single_header(headers, name)?,
                Source::Cookie(name) => cookie(headers, name)?,
            };
            if let Some(token) = found {
                if token.len() > MAX_TOKEN_BYTES {
                    return Err(JwtError::Malformed);
                }
                return Ok(Some((source, token)));
            }
        }
        Ok(None)
    }

    /// The token's claims, and the generation of the remote key set that
    /// verified it (`None` without `jwks_url`).
    async fn verify_token(
        &self,
        token: &str,
    ) -> Result<(Map<String, Value>, Option<u64>), JwtError> {
        let header = peek_header(token)?;
        // Unknown names, `none` included, fail to parse and are refused here.
        let alg = match Algorithm::from_str(&header.alg) {
            Ok(alg) if self.inner.algorithms.contains(&alg) => alg,
            _ => return Err(JwtError::AlgorithmNotAllowed),
        };
        let seen = self.inner.remote.as_ref().map(|r| r.generation());
        let first = self.verify_with_keys(token, alg, header.kid.as_deref());
        let (
            Err(JwtError::UnknownKey | JwtError::BadSignature),
            Some(remote),
            Some(seen),
            Some(kid),
        ) = (&first, &self.inner.remote, seen, header.kid.as_deref())
        else {
            return first;
        };
        // Retry once when the set changed since the first attempt (another
        // request's refetch or the refresh task), or when a refetch for this
        // unknown kid produced a new set.
        let changed = remote.generation() != seen
            || (!remote.has_kid(kid) && remote.refetch_for_unknown_kid(seen).await);
        if !changed {
            return first;
        }
        self.verify_with_keys(token, alg, Some(kid))
    }

    fn verify_with_keys(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<(Map<String, Value>, Option<u64>), JwtError> {
        let Some(validation) = self.inner.validations.get(&alg) else {
            return Err(JwtError::AlgorithmNotAllowed);
        };
        let snapshot = self.inner.remote.as_ref().map(|r| r.snapshot());
        let generation = snapshot.as_ref().map(|(g, _)| *g);
        let remote = snapshot.map(|(_, keys)| keys);
        let all: Vec<&VerifyKey> = self
            .inner
            .static_keys
            .iter()
            .chain(remote.iter().flat_map(|keys| keys.iter()))
            .collect();
        if all.is_empty() {
            return Err(JwtError::NoKeys);
        }
        // A kid that names a key selects exactly that key; otherwise the keys
        // without an authoritative kid are the candidates.
        let named: Vec<&VerifyKey> = match kid {
            Some(kid) => all
                .iter()
                .copied()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&VerifyKey> = if !named.is_empty() {
            named
        } else if kid.is_some() {
            all.into_iter()
                .filter(|k| k.any_kid || k.kid.is_none())
                .collect()
        } else {
            all
        };
        let mut outcome = Err(JwtError::UnknownKey);
        for key in candidates
            .into_iter()
            .filter(|k| k.algorithms.contains(&alg))
        {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                // RFC 7519 §4.1.1: `iss` is one string. jsonwebtoken also
                // takes a list and accepts it when any entry is accepted,
                // which would let a token name another issuer beside ours.
                Ok(data)
                    if validation.iss.is_some()
                        && !matches!(data.claims.get("iss"), Some(Value::String(_))) =>
                {
                    return Err(JwtError::WrongIssuer)
                }
                Ok(data) => return Ok((data.claims, generation)),
                Err(e) => match map_error(e.kind()) {
                    // Another candidate may hold the right key.
                    JwtError::BadSignature => outcome = Err(JwtError::BadSignature),
                    // The signature checked out; the claims decide.
                    other => return Err(other),
                },
            }
        }
        outcome
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<String>, JwtError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(JwtError::Malformed);
    }
    let Ok(value) = value.to_str() else {
        return Ok(None);
    };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else {
        return Ok(None);
    };
    // RFC 9110 §11.1: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let credentials = credentials.trim();
    // LangSmith clients send API keys (even placeholders) as bearer tokens to
    // public routes; such a value is not our token and must not hide one sent
    // by an identity-aware proxy in a later source.
    if !looks_like_jws(credentials) {
        return Ok(None);
    }
    Ok(Some(credentials.to_owned()))
}

fn single_header(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, JwtError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two assertions: which one did the proxy add? Refuse to guess.
    if values.next().is_some() {
        return Err(JwtError::Malformed);
    }
    let value = value.to_str().map_err(|_| JwtError::Malformed)?.trim();
    if value.is_empty() {
        return Ok(None);
    }
    Ok(Some(value.to_owned()))
}

/// RFC 6265 §5.4: browsers join cookies with "; ", and HTTP/2 clients may send
/// several Cookie headers (RFC 9113 §8.2.3); both are handled.
fn cookie(headers: &HeaderMap, name: &str) -> Result<Option<String>, JwtError> {
    let mut found: Option<String> = None;
    for header in headers.get_all(COOKIE) {
        let text = String::from_utf8_lossy(header.as_bytes());
        for pair in text.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if key.trim() != name {
                continue;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if value.is_empty() {
                continue;
            }
            match &found {
                // Same name, different values (e.g. a cookie set on a parent
                // domain shadowing ours): ambiguous, so refuse.
                Some(existing) if existing != value => return Err(JwtError::Malformed),
                Some(_) => {}
                None => found = Some(value.to_owned()),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};

    use http::HeaderValue;
    use jsonwebtoken::{encode, EncodingKey};
    use serde_json::json;
    use tokio::sync::watch;
    use tokio::time::timeout;

    const ISS: &str = "https://cloud.google.com/iap";
    const AUD: &str = "/projects/123/global/backendServices/456";
    const WAIT: Duration = Duration::from_secs(20);

    /// A key pair made inside the test: private PEM for signing, public PEM
    /// and JWK for the verifier.
    struct TestKey {
        alg: Algorithm,
        signing: EncodingKey,
        public_pem: String,
    }

    impl TestKey {
        fn jwk(&self, kid: &str) -> Value {
            let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.signing, self.alg)
                .map(|j| serde_json::to_value(j).unwrap_or_default())
                .unwrap_or_default();
            let mut jwk = jwk;
            jwk["kid"] = json!(kid);
            jwk
        }
    }

    fn rsa_key() -> &'static TestKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::EncodePublicKey;
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let private =
                rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa keygen");
            let pem = private
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .expect("rsa pem");
            TestKey {
                alg: Algorithm::RS256,
                signing: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa encoding key"),
                public_pem: private
                    .to_public_key()
                    .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                    .expect("rsa public pem"),
            }
        })
    }

    fn ec_key() -> TestKey {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let secret = p256::SecretKey::random(&mut rand::thread_rng());
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("ec pem");
        TestKey {
            alg: Algorithm::ES256,
            signing: EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec encoding key"),
            public_pem: secret
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("ec public pem"),
        }
    }

    fn ed_key() -> TestKey {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
        let pem = signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("ed pem");
        TestKey {
            alg: Algorithm::EdDSA,
            signing: EncodingKey::from_ed_pem(pem.as_bytes()).expect("ed encoding key"),
            public_pem: signing
                .verifying_key()
                .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .expect("ed public pem"),
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": "accounts.google.com:1234",
               "email": "alice@corp.example", "exp": now() + 300, "iat": now()})
    }

    fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
        sign_alg(key, key.alg, kid, claims)
    }

    fn sign_alg(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &key.signing).expect("sign")
    }

    /// A directory for key files, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new() -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "sharegate-jwt-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }
        fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
            std::fs::write(self.0.join(name), contents).expect("write key file");
            PathBuf::from(name)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn settings(algs: &[&str]) -> JwtSettings {
        JwtSettings {
            sources: vec![
                "bearer".into(),
                "header:x-goog-iap-jwt-assertion".into(),
                "header:cf-access-jwt-assertion".into(),
                "header:x-pomerium-jwt-assertion".into(),
                "cookie:CF_Authorization".into(),
            ],
            algorithms: algs.iter().map(|a| a.to_string()).collect(),
            issuers: vec![ISS.into()],
            audiences: vec![AUD.into()],
            ..JwtSettings::default()
        }
    }

    async fn pem_verifier(
        key: &TestKey,
        algs: &[&str],
        tweak: impl FnOnce(&mut JwtSettings),
    ) -> (JwtVerifier, Dir) {
        let dir = Dir::new();
        let mut s = settings(algs);
        s.pem_files = vec![dir.write("idp.pem", key.public_pem.as_bytes())];
        tweak(&mut s);
        let verifier = JwtVerifier::new(&s, &dir.0).await.expect("verifier");
        (verifier, dir)
    }

    fn bearer_headers(token: &str) -> HeaderMap {
        headers(&[("authorization", &format!("Bearer {token}"))])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_str(name).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    async fn check(v: &JwtVerifier, token: &str) -> Result<Option<Arc<Identity>>, JwtError> {
        v.verify(&bearer_headers(token)).await
    }

    // ---- sources -------------------------------------------------------

    #[tokio::test]
    async fn valid_token_from_every_source() {
        let key = ec_key();
        let (v, _dir) = pem_verifier(&key, &["ES256"], |_| {}).await;
        assert!(v.ready());
        let token = sign(&key, None, &claims());
        let cases = [
            (bearer_headers(&token), "bearer"),
            (
                headers(&[("x-goog-iap-jwt-assertion", &token)]),
                "header:x-goog-iap-jwt-assertion",
            ),
            (
                headers(&[("cf-access-jwt-assertion", &token)]),
                "header:cf-access-jwt-assertion",
            ),
            (
                headers(&[("x-pomerium-jwt-assertion", &token)]),
                "header:x-pomerium-jwt-assertion",
            ),
            (
                headers(&[
                    ("cookie", "theme=dark; lang=en"),
                    ("cookie", &format!("a=1; CF_Authorization={token}; b=2")),
                ]),
                "cookie:CF_Authorization",
            ),
        ];
        for (headers, source) in cases {
            let id = v.verify(&headers).await.expect("valid").expect("present");
            assert_eq!(id.source, source);
            assert_eq!(id.subject.as_deref(), Some("accounts.google.com:1234"));
            assert_eq!(id.issuer.as_deref(), Some(ISS));
            assert_eq!(id.claims.get("email"), Some(&json!("alice@corp.example")));
        }
    }

    #[tokio::test]
    async fn the_cache_never_widens_what_verification_accepts() {
        let key = ec_key();
        let (v, _dir) = pem_verifier(&key, &["ES256"], |_| {}).await;
        let token = sign(&key, None, &claims());
        // Verified once, then served from the cache with the same claims.
        let first = check(&v, &token).await.expect("valid").expect("present");
        let second = check(&v, &token).await.expect("valid").expect("present");
        assert!(
            Arc::ptr_eq(&first, &second),
            "a cache hit shares the identity"
        );
        // A tampered copy is another token: verified, and refused.
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(check(&v, &tampered).await.is_err());
        // An expired token is never remembered, so it stays refused.
        let mut old = claims();
        old["exp"] = json!(now() - 3600);
        let expired = sign(&key, None, &old);
        for _ in 0..2 {
            assert_eq!(check(&v, &expired).await, Err(JwtError::Expired));
        }
    }

    #[tokio::test]
    async fn sources_are_tried_in_order_and_absence_is_none() {
        let key = ec_key();
        let (v, _dir) = pem_verifier(&key, &["ES256"], |_| {}).await;
        assert_eq!(v.verify(&HeaderMap::new()).await, Ok(None));
        // An SDK API key in Authorization is not a JWT: it neither fails the
        // request nor hides the proxy's assertion.
        let token = sign(&key, None, &claims());
        let h = headers(&[
            ("authorization", "Bearer lsv2_pt_0123456789abcdef"),
            ("x-goog-iap-jwt-assertion", &token),
        ]);
        let id = v.verify(&h).await.expect("valid").expect("present");
        assert_eq!(id.source, "header:x-goog-iap-jwt-assertion");
        assert_eq!(
            v.verify(&headers(&[("authorization", "Basic dXNlcjpwYXNz")]))
                .await,
            Ok(None)
        );
        // First present wins, even when a later one would be valid.
        let h = headers(&[
            ("x-goog-iap-jwt-assertion", "garbage"),
            ("cookie", &format!("CF_Authorization={token}")),
        ]);
        assert_eq!(v.verify(&h).await, Err(JwtError::Malformed));
    }

    #[tokio::test]
    async fn ambiguous_or_oversized_tokens_are_malformed() {
        let key = ec_key();
        let (v, _dir) = pem_verifier(&key, &["ES256"], |_| {}).await;
        let token = sign(&key, None, &claims());
        let twice = headers(&[
            ("x-goog-iap-jwt-assertion", &token),
            ("x-goog-iap-jwt-assertion", &token),
        ]);
        assert_eq!(v.verify(&twice).await, Err(JwtError::Malformed));
        let mut other = claims();
        other["sub"] = json!("someone-else");
        let other = sign(&key, None, &other);
        let cookies = headers(&[
            ("cookie", &format!("CF_Authorization={token}")),
            ("cookie", &format!("CF_Authorization={other}")),
        ]);
        assert_eq!(v.verify(&cookies).await, Err(JwtError::Malformed));
        let mut big = claims();
        big["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
        assert_eq!(
            check(&v, &sign(&key, None, &big)).await,
            Err(JwtError::Malformed)
        );
        assert_eq!(check(&v, "a.b.c").await, Err(JwtError::Malformed));
        let crit = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","crit":["exp"]}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert_eq!(check(&v, &crit).await, Err(JwtError::Malformed));
    }

    // ---- time ------------------------------------------------------------

    #[tokio::test]
    async fn expired_not_yet_valid_and_leeway() {
        let key = ec_key();
        let (strict, _d1) = pem_verifier(&key, &["ES256"], |_| {}).await;
        let (lenient, _d2) =
            pem_verifier(&key, &["ES256"], |s| s.leeway = Some("30s".into())).await;
        let mut expired = claims();
        expired["exp"] = json!(now() - 10);
        let expired = sign(&key, None, &expired);
        let mut early = claims();
        early["nbf"] = json!(now() + 10);
        let early = sign(&key, None, &early);
        assert_eq!(check(&strict, &expired).await, Err(JwtError::Expired));
        assert_eq!(check(&strict, &early).await, Err(JwtError::NotYetValid));
        assert!(check(&lenient, &expired).await.is_ok_and(|id| id.is_some()));
        assert!(check(&lenient, &early).await.is_ok_and(|id| id.is_some()));
        let mut long_expired = claims();
        long_expired["exp"] = json!(now() - 120);
        assert_eq!(
            check(&lenient, &sign(&key, None, &long_expired)).await,
            Err(JwtError::Expired)
        );
        assert_eq!(JwtError::Expired.reason(), "expired");
        assert_eq!(JwtError::NotYetValid.reason(), "not_yet_valid");
    }

    // ---- registered claims ---------------------------------------------

    #[tokio::test]
    async fn issuer_audience_and_exp_are_enforced() {
        let key = ec_key();
        let (v, _dir) = pem_verifier(&key, &["ES256"], |_| {}).await;
        let with = |field: &str, value: Value| {
            let mut c = claims();
            c[field] = value;
            sign(&key, None, &c)
        };
        let without = |field: &str| {
            let mut c = claims();
            c.as_object_mut().map(|m| m.remove(field));
            sign(&key, None, &c)
        };
        assert_eq!(
            check(&v, &with("iss", json!("https://evil.example"))).await,
            Err(JwtError::WrongIssuer)
        );
        for list in [json!([ISS, "https://evil.example"]), json!([ISS])] {
            assert_eq!(
                check(&v, &with("iss", list.clone())).await,
                Err(JwtError::WrongIssuer),
                "iss = {list}"
            );
        }
        assert_eq!(
            check(&v, &with("aud", json!("other-app"))).await,
            Err(JwtError::WrongAudience)
        );
        assert!(check(&v, &with("aud", json!(["other-app", AUD])))
            .await
            .is_ok());
        assert_eq!(
            check(&v, &without("aud")).await,
            Err(JwtError::MissingClaim("aud"))
        );
        assert_eq!(
            check(&v, &without("iss")).await,
            Err(JwtError::MissingClaim("iss"))
        );
        assert_eq!(
            check(&v, &without("exp")).await,
            Err(JwtError::MissingClaim("exp"))
        );
        assert_eq!(
            check(&v, &with("exp", json!("tomorrow"))).await,
            Err(JwtError::MissingClaim("exp"))
        );
        assert_eq!(JwtError::MissingClaim("aud").reason(), "missing_aud");
        assert_eq!(JwtError::WrongIssuer.reason(), "wrong_issuer");

        let (waived, _d) = pem_verifier(&key, &["ES256"], |s| {
            s.issuers.clear();
            s.audiences.clear();
            s.waive_issuer = true;
            s.waive_audience = true;
        })
        .await;
        assert!(check(&waived, &with("iss", json!("https://other.example")))
            .await
            .is_ok());
        assert!(check(&waived, &without("aud")).await.is_ok());
        assert_eq!(
            check(&waived, &without("exp")).await,
            Err(JwtError::MissingClaim("exp"))
        );
    }

    // ---- algorithm pinning -----------------------------------------------

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let key = ec_key();
        let (v, _dir) = pem_verifier(&key, &["ES256"], |_| {}).await;
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
            let token = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header));
            let h = headers(&[("x-goog-iap-jwt-assertion", &token)]);
            assert_eq!(v.verify(&h).await, Err(JwtError::AlgorithmNotAllowed));
            assert_eq!(check(&v, &token).await, Err(JwtError::AlgorithmNotAllowed));
        }
        assert_eq!(
            JwtError::AlgorithmNotAllowed.reason(),
            "algorithm_not_allowed"
        );
    }

    #[tokio::test]
    async fn hs256_with_rsa_public_key_as_secret_is_rejected() {
        let key = rsa_key();
        let (v, _dir) = pem_verifier(key, &["RS256"], |_| {}).await;
        assert!(check(&v, &sign(key, None, &claims()))
            .await
            .is_ok_and(|id| id.is_some()));
        let forged_key = TestKey {
            alg: Algorithm::HS256,
            signing: EncodingKey::from_secret(key.public_pem.as_bytes()),
            public_pem: String::new(),
        };
        let forged = sign(&forged_key, None, &claims());
        assert_eq!(check(&v, &forged).await, Err(JwtError::AlgorithmNotAllowed));
        let forged = sign(&forged_key, Some("idp"), &claims());
        assert_eq!(check(&v, &forged).await, Err(JwtError::AlgorithmNotAllowed));
    }

    #[tokio::test]
    async fn key_type_pins_the_algorithm() {
        // RS256 and ES256 both allowed: an ES256 token must not be checked
        // against the RSA key, and PS256 is outside the list.
        let rsa = rsa_key();
        let ec = ec_key();
        let dir = Dir::new();
        let mut s = settings(&["RS256", "ES256"]);
        s.pem_files = vec![dir.write("rsa.pem", rsa.public_pem.as_bytes())];
        let v = JwtVerifier::new(&s, &dir.0).await.expect("verifier");
        assert_eq!(
            check(&v, &sign(&ec, Some("rsa"), &claims())).await,
            Err(JwtError::UnknownKey)
        );
        assert_eq!(
            check(&v, &sign_alg(rsa, Algorithm::PS256, None, &claims())).await,
            Err(JwtError::AlgorithmNotAllowed)
        );
        // Another EC key's signature does not verify under ours.
        let (v, _d) = pem_verifier(&ec, &["ES256"], |_| {}).await;
        assert_eq!(
            check(&v, &sign(&ec_key(), None, &claims())).await,
            Err(JwtError::BadSignature)
        );
    }

    #[tokio::test]
    async fn algorithm_not_in_list_is_rejected() {
        let rsa = rsa_key();
        let dir = Dir::new();
        let mut s = settings(&["ES256"]);
        s.pem_files = vec![dir.write("ec.pem", ec_key().public_pem.as_bytes())];
        let v = JwtVerifier::new(&s, &dir.0).await.expect("verifier");
        assert_eq!(
            check(&v, &sign(rsa, None, &claims())).await,
            Err(JwtError::AlgorithmNotAllowed)
        );
    }

    #[tokio::test]
    async fn rsa_pss_eddsa_and_hmac_keys_verify() {
        let rsa = rsa_key();
        let (v, _d) = pem_verifier(rsa, &["RS256", "PS256"], |_| {}).await;
        assert!(check(&v, &sign_alg(rsa, Algorithm::PS256, None, &claims()))
            .await
            .is_ok_and(|i| i.is_some()));

        let ed = ed_key();
        let (v, _d) = pem_verifier(&ed, &["EdDSA"], |_| {}).await;
        assert!(check(&v, &sign(&ed, None, &claims()))
            .await
            .is_ok_and(|i| i.is_some()));

        let dir = Dir::new();
        let secret: [u8; 32] = rand::random();
        let mut file = secret.to_vec();
        file.push(b'\n');
        let mut s = settings(&["HS256"]);
        s.hmac_secret_file = Some(dir.write("secret", &file));
        let v = JwtVerifier::new(&s, &dir.0).await.expect("verifier");
        let hmac = TestKey {
            alg: Algorithm::HS256,
            signing: EncodingKey::from_secret(&secret),
            public_pem: String::new(),
        };
        assert!(check(&v, &sign(&hmac, Some("any"), &claims()))
            .await
            .is_ok_and(|i| i.is_some()));
        let wrong = TestKey {
            alg: Algorithm::HS256,
            signing: EncodingKey::from_secret(&[7u8; 32]),
            public_pem: String::new(),
        };
        assert_eq!(
            check(&v, &sign(&wrong, None, &claims())).await,
            Err(JwtError::BadSignature)
        );
    }

    #[tokio::test]
    async fn jwks_file_keys_are_selected_by_kid() {
        let a = ec_key();
        let b = ec_key();
        let dir = Dir::new();
        let set = json!({"keys": [a.jwk("a"), b.jwk("b")]});
        let mut s = settings(&["ES256"]);
        s.jwks_file = Some(dir.write("jwks.json", set.to_string().as_bytes()));
        let v = JwtVerifier::new(&s, &dir.0).await.expect("verifier");
        assert!(check(&v, &sign(&a, Some("a"), &claims()))
            .await
            .is_ok_and(|i| i.is_some()));
        assert!(check(&v, &sign(&b, Some("b"), &claims()))
            .await
            .is_ok_and(|i| i.is_some()));
        assert!(check(&v, &sign(&b, None, &claims()))
            .await
            .is_ok_and(|i| i.is_some()));
        assert_eq!(
            check(&v, &sign(&b, Some("a"), &claims())).await,
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            check(&v, &sign(&b, Some("c"), &claims())).await,
            Err(JwtError::UnknownKey)
        );
    }

    // ---- JWKS over HTTP ------------------------------------------------------

    struct JwksServer {
        url: String,
        body: Arc<Mutex<String>>,
        fetches: watch::Receiver<usize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl JwksServer {
        async fn start(set: Value) -> JwksServer {
            use hyper::service::service_fn;
            use hyper_util::rt::TokioIo;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let body = Arc::new(Mutex::new(set.to_string()));
            let (tx, fetches) = watch::channel(0usize);
            let tx = Arc::new(tx);
            let served = Arc::clone(&body);
            let task = tokio::spawn(async move {
                // Connections live in this set, so aborting the task closes
                // them too: the server is really gone.
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let served = Arc::clone(&served);
                    let tx = Arc::clone(&tx);
                    connections.spawn(async move {
                        let service = service_fn(move |_req| {
                            let text = served.lock().map(|b| b.clone()).unwrap_or_default();
                            tx.send_modify(|n| *n += 1);
                            async move {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(text)),
                                ))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            JwksServer {
                url: format!("http://{addr}/jwks.json"),
                body,
                fetches,
                task,
            }
        }

        fn publish(&self, set: Value) {
            if let Ok(mut body) = self.body.lock() {
                *body = set.to_string();
            }
        }

        fn count(&self) -> usize {
            *self.fetches.borrow()
        }

        async fn wait_for_fetches(&mut self, n: usize) {
            timeout(WAIT, self.fetches.wait_for(|c| *c >= n))
                .await
                .expect("JWKS fetch in time")
                .expect("server alive");
        }
    }

    fn url_settings(url: &str, tweak: impl FnOnce(&mut JwtSettings)) -> JwtSettings {
        let mut s = settings(&["ES256"]);
        s.jwks_url = Some(url.to_owned());
        s.jwks_timeout = Some("10s".into());
        s.jwks_refetch_min_interval = Some("1h".into());
        tweak(&mut s);
        s
    }

    #[tokio::test]
    async fn unknown_kid_triggers_one_shared_refetch() {
        let a = ec_key();
        let b = ec_key();
        let server = JwksServer::start(json!({"keys": [a.jwk("a")]})).await;
        let v = JwtVerifier::new(&url_settings(&server.url, |_| {}), Path::new("."))
            .await
            .expect("verifier");
        assert_eq!(server.count(), 1);
        assert!(check(&v, &sign(&a, Some("a"), &claims()))
            .await
            .is_ok_and(|i| i.is_some()));

        server.publish(json!({"keys": [a.jwk("a"), b.jwk("b")]}));
        let token_b = sign(&b, Some("b"), &claims());
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (v, t) = (v.clone(), token_b.clone());
            burst.spawn(async move { check(&v, &t).await });
        }
        while let Some(result) = burst.join_next().await {
            assert!(result.is_ok_and(|r| r.is_ok_and(|i| i.is_some())));
        }
        assert_eq!(server.count(), 2, "concurrent callers share one refetch");

        // Within the rate-limit window unknown kids cost no further fetches.
        let unknown = sign(&b, Some("rotated-away"), &claims());
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (v, t) = (v.clone(), unknown.clone());
            burst.spawn(async move { check(&v, &t).await });
        }
        while let Some(result) = burst.join_next().await {
            assert!(result.is_ok_and(|r| r == Err(JwtError::UnknownKey)));
        }
        assert_eq!(server.count(), 2, "refetch is rate-limited");
        server.task.abort();
    }

    #[tokio::test]
    async fn refetch_allowed_again_after_the_interval() {
        let a = ec_key();
        let server = JwksServer::start(json!({"keys": [a.jwk("a")]})).await;
        let v = JwtVerifier::new(
            &url_settings(&server.url, |s| {
                s.jwks_refetch_min_interval = Some("0s".into())
            }),
            Path::new("."),
        )
        .await
        .expect("verifier");
        let unknown = sign(&a, Some("nope"), &claims());
        assert_eq!(check(&v, &unknown).await, Err(JwtError::UnknownKey));
        assert_eq!(check(&v, &unknown).await, Err(JwtError::UnknownKey));
        assert_eq!(server.count(), 3);
        server.task.abort();
    }

    #[tokio::test]
    async fn key_rotation_through_refresh() {
        let old = ec_key();
        let new = ec_key();
        let mut server = JwksServer::start(json!({"keys": [old.jwk("old")]})).await;
        let v = JwtVerifier::new(
            &url_settings(&server.url, |s| s.jwks_refresh = Some("20ms".into())),
            Path::new("."),
        )
        .await
        .expect("verifier");
        let old_token = sign(&old, Some("old"), &claims());
        let new_token = sign(&new, Some("new"), &claims());

        // Both published: both verify (the new one via the unknown-kid refetch).
        server.publish(json!({"keys": [old.jwk("old"), new.jwk("new")]}));
        assert!(check(&v, &new_token).await.is_ok_and(|i| i.is_some()));
        assert!(check(&v, &old_token).await.is_ok_and(|i| i.is_some()));

        // Old key withdrawn: once a refresh has swapped the set, it is refused
        // (its refetch budget is spent, so only the refresh can drop it).
        server.publish(json!({"keys": [new.jwk("new")]}));
        let _refresh = v.spawn_refresh();
        let seen = server.count();
        // Refreshes run one after another, so when fetch seen+2 arrives the
        // set from fetch seen+1 (which no longer has "old") is in place.
        server.wait_for_fetches(seen + 2).await;
        assert_eq!(check(&v, &old_token).await, Err(JwtError::UnknownKey));
        assert!(check(&v, &new_token).await.is_ok_and(|i| i.is_some()));
        server.task.abort();
    }

    /// A token verified with a key set that a swap replaces before the
    /// token is remembered (the refresh, or another request's refetch,
    /// landing in between) is remembered under the set that verified it: the
    /// next request finds the generation moved on and verifies it again,
    /// against the set without its key.
    #[tokio::test]
    async fn a_token_is_remembered_under_the_key_set_that_verified_it() {
        let old = ec_key();
        let new = ec_key();
        let server = JwksServer::start(json!({"keys": [old.jwk("old")]})).await;
        let v = JwtVerifier::new(&url_settings(&server.url, |_| {}), Path::new("."))
            .await
            .expect("verifier");
        let token = sign(&old, Some("old"), &claims());
        let (claims, generation) = v
            .verify_with_keys(&token, Algorithm::ES256, Some("old"))
            .expect("the old key verifies it");
        server.publish(json!({"keys": [new.jwk("new")]}));
        v.inner.remote.as_ref().expect("a jwks_url").refresh().await;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        v.admit(key, &Source::Bearer, claims, generation);
        assert_eq!(check(&v, &token).await, Err(JwtError::UnknownKey));
        server.task.abort();
    }

    #[tokio::test]
    async fn refresh_stops_when_handle_dropped() {
        let a = ec_key();
        let mut server = JwksServer::start(json!({"keys": [a.jwk("a")]})).await;
        let v = JwtVerifier::new(
            &url_settings(&server.url, |s| s.jwks_refresh = Some("10ms".into())),
            Path::new("."),
        )
        .await
        .expect("verifier");
        let handle = v.spawn_refresh();
        server.wait_for_fetches(3).await;
        drop(handle);
        tokio::task::yield_now().await;
        let stopped_at = server.count();
        // A fetch already in flight may still land; none after that.
        let outcome = timeout(
            Duration::from_millis(300),
            server.wait_for_fetches(stopped_at + 2),
        )
        .await;
        assert!(
            outcome.is_err(),
            "refresh kept running after its handle was dropped"
        );
        server.task.abort();
    }

    #[tokio::test]
    async fn loaded_keys_survive_the_server_going_away() {
        let a = ec_key();
        let server = JwksServer::start(json!({"keys": [a.jwk("a")]})).await;
        let v = JwtVerifier::new(
            &url_settings(&server.url, |s| {
                s.jwks_refetch_min_interval = Some("0s".into())
            }),
            Path::new("."),
        )
        .await
        .expect("verifier");
        server.task.abort();
        let _ = server.task.await;
        let token = sign(&a, Some("a"), &claims());
        assert!(check(&v, &token).await.is_ok_and(|i| i.is_some()));
        // The failed refetch for an unknown kid leaves the set alone.
        assert_eq!(
            check(&v, &sign(&a, Some("b"), &claims())).await,
            Err(JwtError::UnknownKey)
        );
        assert!(check(&v, &token).await.is_ok_and(|i| i.is_some()));
        assert!(v.ready());
    }

    #[tokio::test]
    async fn unreachable_jwks_at_start_is_a_clear_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let url = format!("http://{addr}/jwks.json");
        let problems = JwtVerifier::new(&url_settings(&url, |_| {}), Path::new("."))
            .await
            .err()
            .unwrap_or_default();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "identity.jwt.jwks_url");
        let message = &problems[0].message;
        assert!(
            message.starts_with(&format!(
                "could not fetch the JWKS from {url}: client error (Connect)"
            )),
            "{message}"
        );
        assert!(message.contains("onnection refused"), "{message}");
    }

    #[tokio::test]
    async fn jwks_answer_that_is_not_a_key_set_is_an_error() {
        let server = JwksServer::start(json!({"error": "maintenance"})).await;
        let problems = JwtVerifier::new(&url_settings(&server.url, |_| {}), Path::new("."))
            .await
            .err()
            .unwrap_or_default();
        assert_eq!(
            problems.first().map(|p| p.message.clone()),
            Some(format!("could not fetch the JWKS from {}: not a JWKS: no \"keys\" array; check the URL and that this host can reach it", server.url))
        );
        server.task.abort();
    }

    // ---- config --------------------------------------------------------------

    fn messages(s: &JwtSettings) -> Vec<String> {
        s.validate("identity.jwt")
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn base() -> JwtSettings {
        let mut s = settings(&["ES256"]);
        s.pem_files = vec!["certs/idp-es256.pem".into()];
        s
    }

    #[test]
    fn valid_config_has_no_problems() {
        assert_eq!(messages(&base()), Vec::<String>::new());
        let mut s = base();
        s.jwks_url = Some("https://www.gstatic.com/iap/verify/public_key-jwk".into());
        s.jwks_refresh = Some("10m".into());
        s.leeway = Some("30s".into());
        assert_eq!(messages(&s), Vec::<String>::new());
    }

    #[test]
    fn algorithm_messages() {
        let all =
            "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512";
        let mut s = base();
        s.algorithms = vec!["none".into(), "ES512".into()];
        assert_eq!(
            messages(&s),
            vec![
                format!("identity.jwt.algorithms: \"none\" is not allowed (unsigned tokens prove nothing); use one of {all}"),
                format!("identity.jwt.algorithms: \"ES512\" is not a supported algorithm; use one of {all}"),
            ]
        );
        s.algorithms = vec![];
        assert_eq!(
            messages(&s),
            vec![format!("identity.jwt.algorithms: is required and must be explicit, e.g. [\"ES256\"] for Google IAP or [\"RS256\"] for Cloudflare Access; one of {all}")]
        );
        s.algorithms = vec!["RS256".into(), "HS256".into()];
        s.hmac_secret_env = Some("SHAREGATE_JWT_SECRET".into());
        assert_eq!(
            messages(&s),
            vec!["identity.jwt.algorithms: mixes HMAC (HS256) with public-key algorithms (RS256); a token could then be MACed with a public key as the secret (algorithm confusion); configure one kind only".to_owned()]
        );
    }

    #[test]
    fn issuer_audience_and_source_messages() {
        let mut s = base();
        s.issuers.clear();
        s.waive_audience = true;
        s.sources = vec![
            "header:x_goog_iap".into(),
            "query:token".into(),
            "bearer".into(),
            "bearer".into(),
        ];
        assert_eq!(
            messages(&s),
            vec![
                "identity.jwt.sources: \"header:x_goog_iap\": header names with \"_\" are dropped or rewritten by many proxies; use the dashed name".to_owned(),
                "identity.jwt.sources: \"query:token\" is not a token source; use \"bearer\", \"header:<name>\" (e.g. \"header:x-goog-iap-jwt-assertion\") or \"cookie:<name>\" (e.g. \"cookie:CF_Authorization\")".to_owned(),
                "identity.jwt.sources: \"bearer\" is listed twice; list each source once".to_owned(),
                "identity.jwt.issuers: is required; list the accepted values, e.g. [\"https://cloud.google.com/iap\"], or set waive_issuer = true to accept any".to_owned(),
                "identity.jwt.waive_audience: is true but audiences is also set; remove one (the list is ignored when waived)".to_owned(),
            ]
        );
    }

    #[test]
    fn key_source_and_duration_messages() {
        let mut s = base();
        s.pem_files.clear();
        assert_eq!(
            messages(&s),
            vec![
                "identity.jwt: has no keys; set at least one of pem_files, jwks_file, jwks_url, hmac_secret_file, hmac_secret_env".to_owned(),
                "identity.jwt.algorithms: lists public-key algorithms but no public key is configured; set pem_files, jwks_file or jwks_url".to_owned(),
            ]
        );
        let mut s = base();
        s.jwks_url = Some("http://idp.corp.example/jwks".into());
        s.jwks_timeout = Some("soon".into());
        s.leeway = Some("1h".into());
        assert_eq!(
            messages(&s),
            vec![
                "identity.jwt.leeway: 1h is more than 10m; fix the clocks (NTP) instead, leeway is for seconds of skew".to_owned(),
                "identity.jwt.jwks_timeout: \"soon\" is not a duration (expected number at 0); write it like \"30s\", \"5m\" or \"1h\"".to_owned(),
                "identity.jwt.jwks_url: \"http://idp.corp.example/jwks\" uses plain http to a remote host, where anyone on the path could swap the keys; use https (plain http is accepted only for loopback)".to_owned(),
            ]
        );
        let mut s = base();
        s.jwks_refresh = Some("5m".into());
        assert_eq!(
            messages(&s),
            vec!["identity.jwt.jwks_refresh: has no effect without jwks_url; set jwks_url or remove it".to_owned()]
        );
        let mut s = settings(&["HS256"]);
        assert_eq!(
            messages(&s),
            vec![
                "identity.jwt: has no keys; set at least one of pem_files, jwks_file, jwks_url, hmac_secret_file, hmac_secret_env".to_owned(),
                "identity.jwt.algorithms: lists HS256 but no secret is configured; set hmac_secret_file or hmac_secret_env".to_owned(),
            ]
        );
        s.hmac_secret_file = Some("/run/secrets/jwt".into());
        s.hmac_secret_env = Some("SHAREGATE_JWT_SECRET".into());
        assert_eq!(
            messages(&s),
            vec!["identity.jwt.hmac_secret_env: is set together with hmac_secret_file; keep one so it is clear which secret is used".to_owned()]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let parsed: Result<JwtSettings, _> =
            serde_json::from_value(json!({"algorithms": ["ES256"], "algorithm": "ES256"}));
        assert!(parsed.is_err());
    }

    #[tokio::test]
    async fn key_file_problems_name_the_file_and_fix() {
        let dir = Dir::new();
        let mut s = settings(&["ES256"]);
        s.pem_files = vec![
            dir.write(
                "private.pem",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            dir.write("rsa.pem", rsa_key().public_pem.as_bytes()),
            "missing.pem".into(),
        ];
        let problems = JwtVerifier::new(&s, &dir.0).await.err().unwrap_or_default();
        let text: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{}: {}",
                    p.key,
                    p.message.replace(&dir.0.display().to_string(), "<dir>")
                )
            })
            .collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert_eq!(text[0], "identity.jwt.pem_files: <dir>/private.pem holds a private key; give the public key (\"PUBLIC KEY\" PEM or a certificate) so the secret stays with the issuer");
        assert_eq!(text[1], "identity.jwt.pem_files: <dir>/rsa.pem is a key for RS256, RS384, RS512, PS256, PS384, PS512 but algorithms allows only ES256; add a matching algorithm or use a different key");
        assert!(
            text[2].starts_with("identity.jwt.pem_files: cannot read <dir>/missing.pem: "),
            "{}",
            text[2]
        );

        let mut s = settings(&["HS512"]);
        s.hmac_secret_file = Some(dir.write("short", b"too-short\n"));
        let problems = JwtVerifier::new(&s, &dir.0).await.err().unwrap_or_default();
        assert_eq!(
            problems,
            vec![Problem::new(
                "identity.jwt.hmac_secret_file",
                "the secret is 9 bytes; HS512 needs at least 64 random bytes (RFC 7518 §3.2)"
            )]
        );
    }
}
