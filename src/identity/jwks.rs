//! Verification keys: PEM files, JSON Web Key Sets (RFC 7517) from a file or a
//! URL, and the HMAC secret, each pinned to the algorithms it may verify.
//!
//! This module owns turning key material into [`VerifyKey`]s and keeping the
//! remote key set fresh (periodic refresh, rate-limited refetch on an unknown
//! `kid`, the previous set kept while a fetch fails). It does not look at
//! tokens: [`super::jwt`] picks keys from here and verifies.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::time::Instant;

/// Key sets are small (a handful of keys); anything bigger is not a JWKS.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One key and the algorithms it may verify (already narrowed to the
/// configured list, so an RSA key can never be asked to check an HMAC).
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) key: DecodingKey,
    /// PEM files and the HMAC secret carry no authoritative `kid`, so they are
    /// candidates for any token whose `kid` names no other key.
    pub(crate) any_kid: bool,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .field("any_kid", &self.any_kid)
            .finish_non_exhaustive()
    }
}

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn narrow(candidates: &[Algorithm], allowed: &[Algorithm]) -> Vec<Algorithm> {
    candidates
        .iter()
        .copied()
        .filter(|a| allowed.contains(a))
        .collect()
}

/// Loads one public key from PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or
/// `CERTIFICATE`). Returns the key or a message for the config report.
pub(crate) fn load_pem(
    path: &Path,
    kid: Option<String>,
    allowed: &[Algorithm],
) -> Result<VerifyKey, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("PRIVATE KEY-----") {
        return Err(format!(
            "{} holds a private key; give the public key (\"PUBLIC KEY\" PEM or a certificate) so the secret stays with the issuer",
            path.display()
        ));
    }
    let (key, candidates): (DecodingKey, Vec<Algorithm>) = if let Ok(key) =
        DecodingKey::from_rsa_pem(&bytes)
    {
        (key, RSA_ALGS.to_vec())
    } else if let Ok(key) = DecodingKey::from_ec_pem(&bytes) {
        // The decoded key is the SEC1 uncompressed point: its length tells
        // the curve, and the curve fixes the algorithm (RFC 7518 §3.4).
        let alg = match key.as_bytes().len() {
                65 => Algorithm::ES256,
                97 => Algorithm::ES384,
                n => {
                    return Err(format!(
                        "{}: EC key of {n} bytes is on an unsupported curve; use P-256 (ES256) or P-384 (ES384)",
                        path.display()
                    ))
                }
            };
        (key, vec![alg])
    } else if let Ok(key) = DecodingKey::from_ed_pem(&bytes) {
        (key, vec![Algorithm::EdDSA])
    } else {
        return Err(format!(
                "{} is not a PEM public key; expected \"-----BEGIN PUBLIC KEY-----\", \"-----BEGIN RSA PUBLIC KEY-----\" or \"-----BEGIN CERTIFICATE-----\" with an RSA, EC P-256/P-384 or Ed25519 key",
                path.display()
            ));
    };
    let algorithms = narrow(&candidates, allowed);
    if algorithms.is_empty() {
        return Err(format!(
            "{} is a key for {} but algorithms allows only {}; add a matching algorithm or use a different key",
            path.display(),
            names(&candidates),
            names(allowed)
        ));
    }
    Ok(VerifyKey {
        kid,
        algorithms,
        key,
        any_kid: true,
    })
}

pub(crate) fn names(algs: &[Algorithm]) -> String {
    algs.iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a JWKS document, keeping the signature keys usable with the allowed
/// algorithms. Keys that are for encryption (`use`, or `key_ops` without
/// `verify`), symmetric (`kty: oct`: a secret
/// has no business in a published set), malformed, or for other algorithms are
/// skipped so one odd entry does not take the whole set down.
pub(crate) fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<VerifyKey>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS: no \"keys\" array".to_owned());
    };
    let mut keys = Vec::new();
    for entry in entries {
        match parse_jwk(entry, allowed) {
            Ok(key) => keys.push(key),
            Err(why) => {
                let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
                tracing::debug!(kid, why, "skipping JWKS entry");
            }
        }
    }
    Ok(keys)
}

fn parse_jwk(entry: &Value, allowed: &[Algorithm]) -> Result<VerifyKey, &'static str> {
    let field = |name: &str| entry.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return Err("not a signature key");
    }
    // RFC 7517 §4.3: a key that lists its operations may be used for
    // those only; one published to encrypt or wrap keys verifies nothing.
    match entry.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|op| op == "verify") => {}
        Some(_) => return Err("key_ops does not include verify"),
    }
    let by_type: Vec<Algorithm> = match (field("kty"), field("crv")) {
        (Some("RSA"), _) => RSA_ALGS.to_vec(),
        (Some("EC"), Some("P-256")) => vec![Algorithm::ES256],
        (Some("EC"), Some("P-384")) => vec![Algorithm::ES384],
        (Some("OKP"), Some("Ed25519")) => vec![Algorithm::EdDSA],
        (Some("oct"), _) => return Err("symmetric key"),
        _ => return Err("unsupported key type or curve"),
    };
    // A key that names its algorithm may verify only that one (RFC 7517 §4.4).
    let candidates = match entry.get("alg") {
        None => by_type,
        Some(Value::String(alg)) => match alg.parse::<Algorithm>() {
            Ok(alg) if by_type.contains(&alg) => vec![alg],
            _ => return Err("alg does not fit the key type"),
        },
        Some(_) => return Err("alg is not a string"),
    };
    let algorithms = narrow(&candidates, allowed);
    if algorithms.is_empty() {
        return Err("algorithm not allowed by config");
    }
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|_| "malformed key")?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "malformed key")?;
    Ok(VerifyKey {
        kid: jwk.common.key_id,
        algorithms,
        key,
        any_kid: false,
    })
}

/// Why a JWKS fetch failed; the message is meant for operators.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", chain(.0))]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("answered HTTP {0}; expected 200 with a JWKS")]
    Status(StatusCode),
    #[error("reading the body failed or it exceeded {MAX_JWKS_BYTES} bytes")]
    Body,
    #[error("{0}")]
    Document(String),
    #[error("the key set holds no key usable with the configured algorithms")]
    NoUsableKeys,
}

/// `client error (Connect): tcp connect error: Connection refused`: the
/// outermost message alone says nothing useful.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// A JWKS endpoint and the client that reads it.
pub(crate) struct Fetcher {
    url: Uri,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    /// Builds the client. `https` URLs use the system's root certificates;
    /// plain `http` is only accepted (by config validation) for loopback.
    pub(crate) fn new(url: Uri, timeout: Duration) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if url.scheme() == Some(&http::uri::Scheme::HTTPS) {
            builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| format!("no trusted root certificates to check {url}: {e}"))?
        } else {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(config)
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Fetcher {
            url,
            timeout,
            client,
        })
    }

    pub(crate) fn url(&self) -> &Uri {
        &self.url
    }

    async fn fetch(&self, allowed: &[Algorithm]) -> Result<Vec<VerifyKey>, FetchError> {
        let request = http::Request::get(self.url.clone())
            .header(
                http::header::ACCEPT,
                "application/json, application/jwk-set+json",
            )
            .header(http::header::USER_AGENT, "sharegate")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Document(format!("bad request: {e}")))?;
        let body = tokio::time::timeout(self.timeout, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(FetchError::Request)?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status(response.status()));
            }
            Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .map_err(|_| FetchError::Body)
        })
        .await
        .map_err(|_| FetchError::Timeout(self.timeout))??;
        let keys = parse_jwks(&body, allowed).map_err(FetchError::Document)?;
        if keys.is_empty() {
            return Err(FetchError::NoUsableKeys);
        }
        Ok(keys)
    }
}

/// The key set behind `jwks_url`, swapped whole on every successful fetch.
pub(crate) struct RemoteKeys {
    fetcher: Fetcher,
    allowed: Vec<Algorithm>,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// Bumped on every successful swap, so callers that queued behind a fetch
    /// can tell that it already happened.
    generation: AtomicU64,
    /// Serialises fetches; holds the time of the last unknown-`kid` refetch.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    pub(crate) refresh_interval: Duration,
    refetch_min_interval: Duration,
}

impl RemoteKeys {
    pub(crate) fn new(
        fetcher: Fetcher,
        allowed: Vec<Algorithm>,
        refresh_interval: Duration,
        refetch_min_interval: Duration,
    ) -> Self {
        RemoteKeys {
            fetcher,
            allowed,
            keys: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            last_refetch: tokio::sync::Mutex::new(None),
            refresh_interval,
            refetch_min_interval,
        }
    }

    pub(crate) fn url(&self) -> &Uri {
        self.fetcher.url()
    }

    pub(crate) fn current(&self) -> Arc<Vec<VerifyKey>> {
        self.snapshot().1
    }

    /// The key set and its generation, read together: a swap bumps the
    /// generation while it holds the write lock, so a token verified with
    /// these keys is remembered under their generation, not a later one.
    pub(crate) fn snapshot(&self) -> (u64, Arc<Vec<VerifyKey>>) {
        // A panic elsewhere while holding the lock cannot leave a half-written
        // Arc behind, so a poisoned lock still holds a consistent set.
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        (self.generation.load(Ordering::Acquire), Arc::clone(&keys))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.current().iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Fetches and swaps; on failure the previous set stays.
    async fn load(&self) -> Result<usize, FetchError> {
        let keys = self.fetcher.fetch(&self.allowed).await?;
        let count = keys.len();
        let mut slot = self.keys.write().unwrap_or_else(|e| e.into_inner());
        *slot = Arc::new(keys);
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(slot);
        tracing::info!(url = %self.fetcher.url(), keys = count, "loaded JWKS");
        Ok(count)
    }

    /// Takes over a key set fetched earlier from the same URL (by the
    /// verifier a reload replaces), when this one's first fetch failed.
    pub(crate) fn adopt(&self, keys: Arc<Vec<VerifyKey>>) {
        let mut slot = self.keys.write().unwrap_or_else(|e| e.into_inner());
        *slot = keys;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The first fetch, at startup.
    pub(crate) async fn initial_load(&self) -> Result<usize, FetchError> {
        let _guard = self.last_refetch.lock().await;
        self.load().await
    }

    /// The periodic refresh. Does not use up the unknown-`kid` budget.
    pub(crate) async fn refresh(&self) {
        let _guard = self.last_refetch.lock().await;
        if let Err(e) = self.load().await {
            tracing::warn!(url = %self.fetcher.url(), error = %e, "JWKS refresh failed; keeping the previous key set");
        }
    }

    /// A token named a `kid` we do not have: the issuer may have rotated.
    /// At most one fetch per `refetch_min_interval`; callers that arrive while
    /// a fetch runs wait for it and share its result. Returns true when the set
    /// changed since generation `seen`, which the caller observed before it
    /// found the kid missing.
    pub(crate) async fn refetch_for_unknown_kid(&self, seen: u64) -> bool {
        let mut last = self.last_refetch.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        if let Some(at) = *last {
            if at.elapsed() < self.refetch_min_interval {
                tracing::debug!(url = %self.fetcher.url(), "unknown kid; refetch rate-limited");
                return false;
            }
        }
        *last = Some(Instant::now());
        match self.load().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(url = %self.fetcher.url(), error = %e, "JWKS refetch for unknown kid failed; keeping the previous key set");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[Algorithm] = &[
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    fn ec_p256_jwk(kid: &str) -> Value {
        // The generator point of P-256: a valid public key.
        json!({"kty": "EC", "crv": "P-256", "kid": kid,
               "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
               "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"})
    }

    #[test]
    fn keeps_signature_keys_for_allowed_algorithms() {
        let mut enc = ec_p256_jwk("enc");
        enc["use"] = json!("enc");
        let mut wrong_alg = ec_p256_jwk("wrong");
        wrong_alg["alg"] = json!("RS256");
        let doc = json!({"keys": [
            ec_p256_jwk("good"),
            enc,
            wrong_alg,
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "weird"}
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes(), ALL).unwrap_or_default();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone()).collect();
        assert_eq!(kids, vec![Some("good".to_owned())]);
        assert_eq!(keys[0].algorithms, vec![Algorithm::ES256]);
        assert!(!keys[0].any_kid);
    }

    #[test]
    fn keys_whose_operations_exclude_verify_are_skipped() {
        let with_ops = |kid: &str, ops: Value| {
            let mut key = ec_p256_jwk(kid);
            key["key_ops"] = ops;
            key
        };
        let doc = json!({"keys": [
            with_ops("verify", json!(["verify"])),
            with_ops("both", json!(["sign", "verify"])),
            with_ops("encrypt", json!(["encrypt", "wrapKey"])),
            with_ops("empty", json!([])),
            with_ops("odd", json!("verify")),
            with_ops("odd-entry", json!(["verify", 1])),
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes(), ALL).unwrap_or_default();
        let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, ["verify", "both"]);
    }

    #[test]
    fn key_for_algorithm_outside_config_is_skipped() {
        let doc = json!({"keys": [ec_p256_jwk("a")]});
        let keys = parse_jwks(doc.to_string().as_bytes(), &[Algorithm::RS256]);
        assert_eq!(keys.map(|k| k.len()), Ok(0));
    }

    #[test]
    fn rejects_documents_that_are_not_key_sets() {
        assert_eq!(
            parse_jwks(b"{\"nope\": 1}", ALL).err(),
            Some("not a JWKS: no \"keys\" array".to_owned())
        );
        assert!(parse_jwks(b"<html>", ALL)
            .err()
            .is_some_and(|e| e.starts_with("not JSON")));
    }
}
