//! Cost of `JwtVerifier::verify` per request, for RS256 (2048-bit RSA, as
//! Cloudflare Access signs) and ES256 (P-256, as Google IAP signs), with keys
//! generated here and loaded from PEM files the way `[identity.jwt]
//! pem_files` loads them.
//!
//! - `first_sight`: a token the verifier has not seen (signature and claim
//!   checks, then remembering it);
//! - `cached`: the same token again, as a browser or SDK sends it on every
//!   request (finding it in the headers, hashing it, the cache lookup and
//!   handing out the shared identity).
//!
//!     cargo bench --bench jwt

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sharegate::identity::{Identity, JwtSettings, JwtVerifier};

const HEADER: &str = "x-goog-iap-jwt-assertion";

struct Key {
    name: &'static str,
    alg: Algorithm,
    private_pem: String,
    public_pem: String,
}

fn rsa_key() -> Key {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let mut rng = rand::thread_rng();
    let private = match rsa::RsaPrivateKey::new(&mut rng, 2048) {
        Ok(k) => k,
        Err(e) => panic!("RSA key generation failed: {e}"),
    };
    let private_pem = match private.to_pkcs8_pem(LineEnding::LF) {
        Ok(p) => p.to_string(),
        Err(e) => panic!("RSA private key PEM: {e}"),
    };
    let public_pem = match private.to_public_key().to_public_key_pem(LineEnding::LF) {
        Ok(p) => p,
        Err(e) => panic!("RSA public key PEM: {e}"),
    };
    Key {
        name: "RS256",
        alg: Algorithm::RS256,
        private_pem,
        public_pem,
    }
}

fn p256_key() -> Key {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = p256::SecretKey::random(&mut rand::thread_rng());
    let private_pem = match private.to_pkcs8_pem(LineEnding::LF) {
        Ok(p) => p.to_string(),
        Err(e) => panic!("P-256 private key PEM: {e}"),
    };
    let public_pem = match private.public_key().to_public_key_pem(LineEnding::LF) {
        Ok(p) => p,
        Err(e) => panic!("P-256 public key PEM: {e}"),
    };
    Key {
        name: "ES256",
        alg: Algorithm::ES256,
        private_pem,
        public_pem,
    }
}

/// A token shaped like an identity-aware proxy's: a handful of claims.
fn token(key: &Key, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "iss": "https://cloud.google.com/iap",
        "aud": "/projects/123456789/global/backendServices/987654321",
        "sub": "accounts.google.com:112233445566778899001",
        "email": "dana@corp.example",
        "hd": "corp.example",
        "iat": now,
        "exp": now + 3600,
        "google": {"access_levels": ["accessPolicies/1/accessLevels/corp"]}
    });
    let mut header = Header::new(key.alg);
    header.kid = Some(kid.to_owned());
    let encoding = match key.alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(key.private_pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(key.private_pem.as_bytes()),
    };
    let encoding = match encoding {
        Ok(k) => k,
        Err(e) => panic!("{} encoding key: {e}", key.name),
    };
    match jsonwebtoken::encode(&header, &claims, &encoding) {
        Ok(t) => t,
        Err(e) => panic!("{} signing: {e}", key.name),
    }
}

fn bench(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    };
    let mut group = c.benchmark_group("jwt");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for key in [rsa_key(), p256_key()] {
        let kid = format!("bench-{}", key.name.to_ascii_lowercase());
        let pem = dir.path().join(format!("{kid}.pem"));
        if let Err(e) = std::fs::write(&pem, &key.public_pem) {
            panic!("write {}: {e}", pem.display());
        }
        let settings = JwtSettings {
            sources: vec![format!("header:{HEADER}")],
            algorithms: vec![key.name.to_owned()],
            issuers: vec!["https://cloud.google.com/iap".to_owned()],
            audiences: vec!["/projects/123456789/global/backendServices/987654321".to_owned()],
            pem_files: vec![pem.clone()],
            ..JwtSettings::default()
        };
        let new_verifier = || match rt.block_on(JwtVerifier::new(&settings, dir.path())) {
            Ok(v) => v,
            Err(problems) => panic!("{}: {problems:?}", key.name),
        };
        let token = token(&key, &kid);
        let mut headers = HeaderMap::new();
        match HeaderValue::from_str(&token) {
            Ok(v) => headers.insert(HEADER, v),
            Err(e) => panic!("token header: {e}"),
        };

        // A token the verifier has not seen: signature and claim checks,
        // then the cache insert. Each iteration gets a fresh verifier (made,
        // and dropped, outside the timing).
        group.bench_function(format!("first_sight/{}", key.name), |b| {
            b.iter_batched(
                new_verifier,
                |v| {
                    let verified = rt.block_on(v.verify(black_box(&headers)));
                    (v, black_box(verified))
                },
                BatchSize::PerIteration,
            )
        });

        // The same token again, as on every later request: the cache hit.
        let verifier = new_verifier();
        let _: Arc<Identity> = match rt.block_on(verifier.verify(&headers)) {
            Ok(Some(id)) => id,
            other => panic!("{}: the token did not verify: {other:?}", key.name),
        };
        group.bench_function(format!("cached/{}", key.name), |b| {
            b.iter(|| black_box(rt.block_on(verifier.verify(black_box(&headers)))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
