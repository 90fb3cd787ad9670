//! JWT identities through the real gateway: keys made in the test (RSA,
//! EC P-256, Ed25519, HMAC), tokens from every source an identity-aware
//! proxy uses, every way a token is refused, the access expressions, a
//! JWKS endpoint that rotates, the login redirect, and verified claims
//! passed to the upstream.

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISS: &str = "https://idp.corp.example";
const AUD: &str = "sharegate-tests";
const MISSING: &str = "Bearer realm=\"sharegate\"";
const INVALID: &str = "Bearer realm=\"sharegate\", error=\"invalid_token\"";
const HMAC_SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

/// A signing key and its public half as PEM.
struct Key {
    alg: Algorithm,
    signing: EncodingKey,
    public_pem: String,
}

struct Keys {
    rsa: Key,
    ec: Key,
    ed: Key,
}

fn rsa_key() -> Key {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePublicKey;
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa keygen");
    let pem = private
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .expect("rsa pem");
    Key {
        alg: Algorithm::RS256,
        signing: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa signing key"),
        public_pem: private
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .expect("rsa public pem"),
    }
}

fn ec_key() -> Key {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rand::thread_rng());
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("ec pem");
    Key {
        alg: Algorithm::ES256,
        signing: EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec signing key"),
        public_pem: secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("ec public pem"),
    }
}

fn ed_key() -> Key {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
    let pem = signing.to_pkcs8_pem(LineEnding::LF).expect("ed pem");
    Key {
        alg: Algorithm::EdDSA,
        signing: EncodingKey::from_ed_pem(pem.as_bytes()).expect("ed signing key"),
        public_pem: signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("ed public pem"),
    }
}

/// One set of keys per test binary: RSA generation is the slow part.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: rsa_key(),
        ec: ec_key(),
        ed: ed_key(),
    })
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("timestamp")
}

/// Claims that the test gateways accept; `changes` overrides or adds.
fn claims(changes: Value) -> Value {
    let mut c = json!({
        "iss": ISS, "aud": AUD, "sub": "alice",
        "email": "alice@corp.example", "exp": now() + 600, "iat": now(),
    });
    if let (Some(c), Some(changes)) = (c.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign the token")
}

fn sign(key: &Key, claims: &Value) -> String {
    sign_with(key.alg, &key.signing, None, claims)
}

/// A token with `alg: none` and no signature.
fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

const SOURCES: &str = r#"sources = ["bearer", "header:x-goog-iap-jwt-assertion", "header:cf-access-jwt-assertion", "header:x-pomerium-jwt-assertion", "cookie:CF_Authorization"]"#;

/// A gateway whose `[identity.jwt]` trusts the test's RSA, EC and Ed25519
/// public keys (PEM files in a temporary folder).
struct IdGateway {
    gw: TestGateway,
    up: FakeUpstream,
    _dir: tempfile::TempDir,
}

/// `require` for share routes, `identity` lines for the `[identity]`
/// table, `tables` appended (e.g. `[[identity.claims]]`).
async fn start(require: &str, identity: &str, tables: &str) -> IdGateway {
    start_requiring(require, "network", identity, tables).await
}

/// [`start`], with `default_require` for every route that is not a share.
async fn start_requiring(
    require: &str,
    default_require: &str,
    identity: &str,
    tables: &str,
) -> IdGateway {
    let dir = tempfile::tempdir().expect("temporary directory");
    let k = keys();
    let mut pems = Vec::new();
    for (name, key) in [("rsa", &k.rsa), ("ec", &k.ec), ("ed", &k.ed)] {
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, &key.public_pem).expect("write the public key");
        pems.push(format!("{path:?}"));
    }
    let jwt = format!(
        "{SOURCES}\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\nissuers = [{ISS:?}]\naudiences = [{AUD:?}]\npem_files = [{}]\n",
        pems.join(", ")
    );
    start_with_jwt_default(require, default_require, identity, &jwt, tables, dir).await
}

async fn start_with_jwt(
    require: &str,
    identity: &str,
    jwt: &str,
    tables: &str,
    dir: tempfile::TempDir,
) -> IdGateway {
    start_with_jwt_default(require, "network", identity, jwt, tables, dir).await
}

async fn start_with_jwt_default(
    require: &str,
    default_require: &str,
    identity: &str,
    jwt: &str,
    tables: &str,
    dir: tempfile::TempDir,
) -> IdGateway {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.share_extra = format!("require = {require:?}\n");
    setup.default_extra = format!("require = {default_require:?}\n");
    setup.extra = format!("[identity]\n{identity}\n[identity.jwt]\n{jwt}\n{tables}\n");
    let gw = setup.start().await;
    IdGateway { gw, up, _dir: dir }
}

fn share_page() -> String {
    fill("/public/{t}/r")
}

async fn get(g: &IdGateway, from: IpAddr, headers: &[(&str, &str)]) -> Reply {
    request(from, g.gw.addr, "GET", &share_page(), headers, "").await
}

/// `Authorization: Bearer` with a token of ordinary claims signed by `key`
/// under `kid`.
fn bearer(key: &Key, kid: &str) -> String {
    let token = sign_with(key.alg, &key.signing, Some(kid), &claims(json!({})));
    format!("Bearer {token}")
}

/// The share page from [`OUTSIDE`], through the gateway at `addr`, with
/// `authorization` when given.
async fn outsider_read(addr: std::net::SocketAddr, authorization: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    request(OUTSIDE, addr, "GET", &share_page(), &headers, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_passes_from_every_source() {
    let g = start("identity", "", "").await;
    let k = keys();
    let c = claims(json!({}));
    let cases: Vec<(&str, String, String)> = vec![
        (
            "bearer (RS256)",
            "authorization".into(),
            format!("Bearer {}", sign(&k.rsa, &c)),
        ),
        (
            "Google IAP header (ES256)",
            "x-goog-iap-jwt-assertion".into(),
            sign(&k.ec, &c),
        ),
        (
            "Cloudflare Access header (RS256)",
            "cf-access-jwt-assertion".into(),
            sign(&k.rsa, &c),
        ),
        (
            "Pomerium header (EdDSA)",
            "x-pomerium-jwt-assertion".into(),
            sign(&k.ed, &c),
        ),
        (
            "Cloudflare Access cookie (RS256)",
            "cookie".into(),
            format!("theme=dark; CF_Authorization={}", sign(&k.rsa, &c)),
        ),
    ];
    for (what, name, value) in cases {
        // From outside the network: only the identity can admit it.
        let r = get(&g, OUTSIDE, &[(name.as_str(), value.as_str())]).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.summary());
        let seen = g.up.only(what);
        assert_eq!(seen.target, share_page(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_get_401_invalid_token() {
    let g = start("identity", "", "").await;
    let k = keys();
    let stranger = ec_key();
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(&k.ec, &claims(json!({"exp": now() - 3600}))),
        ),
        (
            "not yet valid",
            sign(&k.ec, &claims(json!({"nbf": now() + 3600}))),
        ),
        (
            "wrong issuer",
            sign(&k.ec, &claims(json!({"iss": "https://evil.example"}))),
        ),
        (
            "wrong audience",
            sign(&k.ec, &claims(json!({"aud": "another-app"}))),
        ),
        (
            // RFC 7519 §4.1.1: one issuer, a string. A list that names
            // ours among others does not say who issued the token.
            "issuer as a list naming ours and another",
            sign(
                &k.ec,
                &claims(json!({"iss": [ISS, "https://evil.example"]})),
            ),
        ),
        (
            "issuer as a list naming only ours",
            sign(&k.ec, &claims(json!({"iss": [ISS]}))),
        ),
        ("alg none", unsigned(&claims(json!({})))),
        (
            "HS256 with the RSA public key as the secret",
            sign_with(
                Algorithm::HS256,
                &EncodingKey::from_secret(k.rsa.public_pem.as_bytes()),
                None,
                &claims(json!({})),
            ),
        ),
        (
            "signed by a key nobody trusts",
            sign(&stranger, &claims(json!({}))),
        ),
        (
            "no exp",
            sign(
                &k.ec,
                &json!({"iss": ISS, "aud": AUD, "sub": "alice", "iat": now()}),
            ),
        ),
    ];
    for (what, token) in cases {
        for (name, value) in [
            ("authorization", format!("Bearer {token}")),
            ("x-goog-iap-jwt-assertion", token.clone()),
        ] {
            // Even from inside: the route requires an identity.
            let r = get(&g, INSIDE, &[(name, value.as_str())]).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{what} via {name}: {}",
                r.summary()
            );
            assert_eq!(
                r.header("www-authenticate").as_deref(),
                Some(INVALID),
                "{what} via {name}"
            );
            assert!(
                !r.text().contains(&token),
                "{what}: the token is never echoed"
            );
            g.up.assert_silent(what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_gets_401_with_the_bare_challenge() {
    let g = start("identity", "", "").await;
    let api_key = [("authorization", "Bearer lsv2_pt_placeholder_key")];
    let placeholder = [("x-api-key", "lsv2_pt_placeholder_key")];
    for (what, headers) in [
        ("no credentials", &[][..]),
        ("an API key as a bearer token", &api_key[..]),
        ("an x-api-key", &placeholder[..]),
    ] {
        let r = get(&g, INSIDE, headers).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            r.summary()
        );
        // One challenge, the token's: with JWTs only, nothing invites a
        // client certificate.
        let challenges: Vec<_> = r.headers.get_all("www-authenticate").iter().collect();
        assert_eq!(challenges, [MISSING], "{what}");
        assert!(
            detail(&r).starts_with("Sign in to open this link"),
            "{what}: {}",
            r.summary()
        );
        g.up.assert_silent(what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_requirement_that_fails_is_403() {
    let g = start(
        "identity",
        "",
        "[[identity.claims]]\nclaim = \"email\"\nends_with = [\"@corp.example\"]\n",
    )
    .await;
    let k = keys();
    let good = sign(&k.rsa, &claims(json!({})));
    let r = get(&g, OUTSIDE, &[("cf-access-jwt-assertion", good.as_str())]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    g.up.only("a token meeting the claim rule");

    for email in ["mallory@evilcorp.example", "alice@corp.example.evil"] {
        let bad = sign(&k.rsa, &claims(json!({ "email": email })));
        let r = get(&g, OUTSIDE, &[("cf-access-jwt-assertion", bad.as_str())]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{email}: {}", r.summary());
        assert_eq!(
            detail(&r),
            "Your account is not allowed to open this link.",
            "{email}"
        );
        assert!(r.header("www-authenticate").is_none(), "{email}");
        g.up.assert_silent(email);
    }
    let none = sign(&k.rsa, &json!({"iss": ISS, "aud": AUD, "exp": now() + 600}));
    let r = get(&g, OUTSIDE, &[("cf-access-jwt-assertion", none.as_str())]).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "no email claim: {}",
        r.summary()
    );
    g.up.assert_silent("a token without the claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_tokens_verify_with_the_shared_secret_only() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, format!("{HMAC_SECRET}\n")).expect("write the secret");
    let jwt = format!(
        "sources = [\"bearer\"]\nalgorithms = [\"HS256\"]\nissuers = [{ISS:?}]\naudiences = [{AUD:?}]\nhmac_secret_file = {secret:?}\n"
    );
    let g = start_with_jwt("identity", "", &jwt, "", dir).await;
    let good = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
        None,
        &claims(json!({})),
    );
    let r = get(&g, OUTSIDE, &[("authorization", &format!("Bearer {good}"))]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    g.up.only("an HS256 token with the secret");

    let forged = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
        None,
        &claims(json!({})),
    );
    let r = get(
        &g,
        OUTSIDE,
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.summary());
    assert_eq!(r.header("www-authenticate").as_deref(), Some(INVALID));
    g.up.assert_silent("an HS256 token with another secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_expressions_combine_network_and_identity() {
    use StatusCode as S;
    // (require, client, with a token, expected)
    let table: &[(&str, IpAddr, bool, S)] = &[
        ("network", INSIDE, false, S::OK),
        ("network", INSIDE, true, S::OK),
        ("network", OUTSIDE, false, S::FORBIDDEN),
        ("network", OUTSIDE, true, S::FORBIDDEN),
        ("identity", INSIDE, false, S::UNAUTHORIZED),
        ("identity", INSIDE, true, S::OK),
        ("identity", OUTSIDE, false, S::UNAUTHORIZED),
        ("identity", OUTSIDE, true, S::OK),
        ("network_and_identity", INSIDE, false, S::UNAUTHORIZED),
        ("network_and_identity", INSIDE, true, S::OK),
        ("network_and_identity", OUTSIDE, false, S::FORBIDDEN),
        ("network_and_identity", OUTSIDE, true, S::FORBIDDEN),
        ("network_or_identity", INSIDE, false, S::OK),
        ("network_or_identity", INSIDE, true, S::OK),
        ("network_or_identity", OUTSIDE, false, S::UNAUTHORIZED),
        ("network_or_identity", OUTSIDE, true, S::OK),
    ];
    let token = sign(&keys().ec, &claims(json!({})));
    for require in [
        "network",
        "identity",
        "network_and_identity",
        "network_or_identity",
    ] {
        let g = start(require, "", "").await;
        for (_, from, with_token, want) in table.iter().filter(|row| row.0 == require) {
            let what = format!("require = {require:?}, from {from}, token: {with_token}");
            let headers: &[(&str, &str)] = if *with_token {
                &[("x-goog-iap-jwt-assertion", token.as_str())]
            } else {
                &[]
            };
            let r = get(&g, *from, headers).await;
            assert_eq!(r.status, *want, "{what}: {}", r.summary());
            if *want == S::OK {
                g.up.only(&what);
            } else {
                g.up.assert_silent(&what);
            }
        }
    }
}

/// The JWKS document the fake IdP serves, which the test swaps.
fn jwks(keys: &[(&str, &Key)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, key)| {
            let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key.signing, key.alg)
                .expect("public JWK of the test key");
            let mut jwk = serde_json::to_value(jwk).expect("JWK as JSON");
            jwk["kid"] = json!(kid);
            jwk
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_the_jwks_and_rotation_takes_effect() {
    let k1 = ec_key();
    let k2 = ec_key();
    let idp = FakeUpstream::start().await;
    let doc = Arc::new(Mutex::new(jwks(&[("k1", &k1)])));
    let served = doc.clone();
    idp.on(
        "/jwks",
        custom(move |_| {
            let body = served.lock().unwrap().clone();
            async move {
                upstream_response(
                    StatusCode::OK,
                    &[("content-type", "application/json")],
                    upstream_full(body),
                )
            }
        }),
    );
    let jwt = format!(
        "sources = [\"bearer\"]\nalgorithms = [\"ES256\"]\nissuers = [{ISS:?}]\naudiences = [{AUD:?}]\njwks_url = \"http://{}/jwks\"\njwks_refetch_min_interval = \"0s\"\n",
        idp.addr
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let g = start_with_jwt("identity", "", &jwt, "", dir).await;
    let fetches = || idp.requests().len();
    assert_eq!(fetches(), 1, "the key set is fetched once at start");

    let r = get(&g, OUTSIDE, &[("authorization", &bearer(&k1, "k1"))]).await;
    assert_eq!(r.status, StatusCode::OK, "k1 is published: {}", r.summary());
    g.up.only("a token signed with k1");
    assert_eq!(fetches(), 1, "a known kid needs no fetch");

    let r = get(&g, OUTSIDE, &[("authorization", &bearer(&k2, "k2"))]).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "k2 unpublished: {}",
        r.summary()
    );
    assert_eq!(r.header("www-authenticate").as_deref(), Some(INVALID));
    g.up.assert_silent("a token signed with an unpublished key");
    assert_eq!(fetches(), 2, "an unknown kid refetches once");

    // The IdP rotates: k2 in, k1 retired.
    *doc.lock().unwrap() = jwks(&[("k2", &k2)]);
    let r = get(&g, OUTSIDE, &[("authorization", &bearer(&k2, "k2"))]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "k2 after rotation: {}",
        r.summary()
    );
    g.up.only("a token signed with the new key");
    assert_eq!(fetches(), 3, "the rotation was picked up by one refetch");

    let r = get(&g, OUTSIDE, &[("authorization", &bearer(&k1, "k1"))]).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "k1 retired: {}",
        r.summary()
    );
    g.up.assert_silent("a token signed with the retired key");
    assert_eq!(fetches(), 4);

    // A k2 token that names k1's kid must not verify with k1's slot or k2.
    let r = get(&g, OUTSIDE, &[("authorization", &bearer(&k2, "k2"))]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    g.up.only("k2 again");
    assert_eq!(fetches(), 4, "a known kid needs no fetch");
}

/// The `rd` value of a login redirect, percent-decoded.
fn return_target(location: &str) -> String {
    let (_, rd) = location
        .split_once("rd=")
        .unwrap_or_else(|| panic!("no rd= in {location:?}"));
    let rd = rd.split('&').next().unwrap_or("");
    percent_encoding::percent_decode_str(rd)
        .decode_utf8()
        .expect("rd is UTF-8")
        .into_owned()
}

const LOGIN: &str = "https://sso.corp.example/login";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_a_token_is_sent_to_the_login_page() {
    let g = start("identity", &format!("login_url = {LOGIN:?}"), "").await;
    let html = ("accept", "text/html,application/xhtml+xml");
    let target = fill("/public/{t}/r?x=1");
    let r = request(OUTSIDE, g.gw.addr, "GET", &target, &[html], "").await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.summary());
    let location = r.header("location").expect("a Location");
    assert_eq!(
        location,
        format!(
            "{LOGIN}?rd={}",
            percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC)
        )
    );
    assert_eq!(return_target(&location), target);
    g.up.assert_silent("a redirected navigation");

    // API clients and non-navigations get the 401, not a redirect.
    for (what, method, headers) in [
        ("JSON client", "GET", vec![("accept", "application/json")]),
        ("browser POST", "POST", vec![html]),
    ] {
        let r = request(OUTSIDE, g.gw.addr, method, &share_page(), &headers, "").await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            r.summary()
        );
        assert!(r.header("location").is_none(), "{what}");
        g.up.assert_silent(what);
    }

    // A browser with a bad token is not redirected into a loop either way:
    // it is refused before the upstream.
    let expired = sign(&keys().ec, &claims(json!({"exp": now() - 3600})));
    let r = request(
        OUTSIDE,
        g.gw.addr,
        "GET",
        &share_page(),
        &[html, ("x-goog-iap-jwt-assertion", &expired)],
        "",
    )
    .await;
    assert!(
        r.status == StatusCode::FOUND || r.status == StatusCode::UNAUTHORIZED,
        "{}",
        r.summary()
    );
    g.up.assert_silent("a browser with an expired token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_redirect_never_returns_to_another_origin() {
    // Every route needs an identity. Targets that start like another host
    // (`//evil.example/...`, `/\\evil...`) are refused as paths outright;
    // the others are judged by their routes: either way, no redirect may
    // lead off this origin.
    let g = start_requiring(
        "identity",
        "identity",
        &format!("login_url = {LOGIN:?}"),
        "",
    )
    .await;
    let targets = [
        fill("//evil.example/public/{t}/r"),
        fill("/\\evil.example/public/{t}/r"),
        fill("/%2F%2Fevil.example/public/{t}/r"),
        fill("/%5Cevil.example/public/{t}/r"),
        fill("http://evil.example/public/{t}/r"),
        fill("https://evil.example//public/{t}/r"),
        fill("/public/{t}/r?next=//evil.example"),
    ];
    for target in &targets {
        let raw = format!(
            "GET {target} HTTP/1.1\r\nHost: gateway.corp.example\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        );
        let answer = raw_request(OUTSIDE, g.gw.addr, &raw).await;
        let status = raw_status(&answer);
        assert!(
            status == 302 || (400..500).contains(&status),
            "{target:?}: a login redirect or a refusal, got {status}: {answer}"
        );
        let location = answer.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_owned())
        });
        if status == 302 {
            let location = location.expect("a 302 carries a Location");
            assert!(location.starts_with(LOGIN), "{target:?}: {location}");
            let rd = return_target(&location);
            assert!(rd.starts_with('/'), "{target:?}: rd = {rd:?}");
            assert!(
                !rd.starts_with("//") && !rd.starts_with("/\\") && !rd.contains('\\'),
                "{target:?}: rd = {rd:?} names another origin"
            );
            for evil in ["rd=%2F%2F", "rd=%2F%5C", "rd=http", "rd=%2F%2f"] {
                assert!(!location.contains(evil), "{target:?}: {location}");
            }
            // `/%2F%2Fevil.example/...` decodes once to a path on this
            // origin, which is fine; a target that itself names another
            // origin must not carry that host back.
            if target.starts_with("//") || target.starts_with("/\\") || target.contains("://") {
                assert!(
                    !rd.contains("evil.example"),
                    "{target:?}: rd = {rd:?} keeps the foreign host"
                );
            }
        } else {
            assert!(location.is_none(), "{target:?}: {answer}");
        }
        g.up.assert_silent(target);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_claims_reach_the_upstream_and_client_copies_never_do() {
    let g = start(
        "identity",
        "[identity.forward_claims]\nemail = \"X-Sharegate-Email\"\nsub = \"X-Sharegate-Subject\"",
        "",
    )
    .await;
    let token = sign(&keys().rsa, &claims(json!({})));
    let bearer = format!("Bearer {token}");

    // A valid token and a forged header: the verified claim wins, alone.
    let r = get(
        &g,
        OUTSIDE,
        &[
            ("authorization", bearer.as_str()),
            ("x-sharegate-email", "mallory@evil.example"),
            ("X_Sharegate_Email", "mallory@evil.example"),
            ("x-sharegate-subject", "root"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    let seen = g.up.only("a request with a valid token");
    assert_eq!(
        seen.header_all("x-sharegate-email"),
        vec!["alice@corp.example".to_owned()]
    );
    assert_eq!(
        seen.header_all("x-sharegate-subject"),
        vec!["alice".to_owned()]
    );
    assert!(seen.header("x_sharegate_email").is_none());

    // No token on a share route: refused, nothing forwarded.
    let r = get(&g, INSIDE, &[("x-sharegate-email", "mallory@evil.example")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.summary());
    g.up.assert_silent("a forged identity header without a token");

    // An ordinary route (no identity needed): the forged header is dropped,
    // with or without a token.
    for (what, headers) in [
        (
            "without a token",
            vec![("x-sharegate-email", "mallory@evil.example")],
        ),
        (
            "with a token",
            vec![
                ("x-sharegate-email", "mallory@evil.example"),
                ("authorization", bearer.as_str()),
            ],
        ),
    ] {
        let r = request(OUTSIDE, g.gw.addr, "GET", "/api/v1/info", &headers, "").await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.summary());
        let seen = g.up.only(what);
        assert!(
            seen.header_all("x-sharegate-email")
                .iter()
                .all(|v| v != "mallory@evil.example"),
            "{what}: the client's copy reached the upstream: {:?}",
            seen.header_all("x-sharegate-email")
        );
    }
}

/// A reload while the IdP's JWKS cannot be fetched (a 503 for a moment):
/// the reload still goes through, keeping the key set in force, so a
/// network the operator just removed is refused at once rather than left
/// admitted until the file changes again; tokens keep verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_the_jwks_is_unreachable_keeps_its_keys_and_takes_effect() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let k1 = ec_key();
    let up = FakeUpstream::start().await;
    let idp = FakeUpstream::start().await;
    let doc = jwks(&[("k1", &k1)]);
    let idp_up = Arc::new(AtomicBool::new(true));
    let flag = idp_up.clone();
    idp.on(
        "/jwks",
        custom(move |_| {
            let serving = flag.load(Ordering::SeqCst);
            let body = doc.clone();
            async move {
                if serving {
                    upstream_response(
                        StatusCode::OK,
                        &[("content-type", "application/json")],
                        upstream_full(body),
                    )
                } else {
                    upstream_response(StatusCode::SERVICE_UNAVAILABLE, &[], upstream_full(""))
                }
            }
        }),
    );
    let mut setup = Setup::new(&up);
    setup.inside = vec!["127.0.0.2/32", "127.0.0.3/32"];
    setup.share_extra = "require = \"network_or_identity\"\n".to_owned();
    setup.extra = format!(
        "[identity.jwt]\nsources = [\"bearer\"]\nalgorithms = [\"ES256\"]\nissuers = [{ISS:?}]\naudiences = [{AUD:?}]\njwks_url = \"http://{}/jwks\"\n",
        idp.addr
    );
    let dir = tempfile::tempdir().expect("a config folder");
    let (gw, path) = TestGateway::from_file(dir.path(), &setup.toml()).await;
    let state = gw.state.clone();
    let r = outsider_read(gw.addr, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("127.0.0.3 while its network is listed");

    idp_up.store(false, Ordering::SeqCst);
    setup.inside = vec!["127.0.0.2/32"];
    replace_file(&path, setup.toml());
    state.reload().await.expect("the reload goes through");
    let r = outsider_read(gw.addr, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.summary());
    up.assert_silent("127.0.0.3 after its network was removed");
    let r = outsider_read(gw.addr, Some(&bearer(&k1, "k1"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("a token checked with the key set kept in force");
}

/// The key files of `[identity.jwt]` are watched like the config and the
/// TLS files: a key withdrawn from `jwks_file` (a compromised key, an
/// issuer's rotation mounted as a Kubernetes Secret) stops its tokens
/// without a signal, those the gateway has verified and remembered
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_withdrawn_from_the_jwks_file_stops_its_tokens_without_a_signal() {
    use std::future::Future;
    let (k1, k2) = (ec_key(), ec_key());
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("a config folder");
    let set = dir.path().join("keys.jwks");
    std::fs::write(&set, jwks(&[("k1", &k1), ("k2", &k2)])).expect("write the key set");
    let mut setup = Setup::new(&up);
    setup.share_extra = "require = \"identity\"\n".to_owned();
    setup.extra = format!(
        "[reload]\ninterval = \"50ms\"\n\n[identity.jwt]\nsources = [\"bearer\"]\nalgorithms = [\"ES256\"]\nissuers = [{ISS:?}]\naudiences = [{AUD:?}]\njwks_file = \"keys.jwks\"\n"
    );
    let (gw, _) = TestGateway::from_file(dir.path(), &setup.toml()).await;
    // The watcher takes its first look at the files when first polled:
    // polled once here, it has seen them before anything changes.
    let mut watching = Box::pin(sharegate::state::watch(gw.state.clone()));
    std::future::poll_fn(|cx| {
        let _ = watching.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
    let watcher = tokio::spawn(watching);

    let (old, new) = (bearer(&k1, "k1"), bearer(&k2, "k2"));
    let r = outsider_read(gw.addr, Some(&old)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("a token of k1 while k1 is in the key set");

    replace_file(&set, jwks(&[("k2", &k2)]));
    eventually("the withdrawn key to stop its tokens", || {
        let (addr, old) = (gw.addr, old.clone());
        async move {
            let r = outsider_read(addr, Some(&old)).await;
            (r.status == StatusCode::UNAUTHORIZED).then_some(())
        }
    })
    .await;
    up.take();
    let r = outsider_read(gw.addr, Some(&old)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.summary());
    assert_eq!(r.header("www-authenticate").as_deref(), Some(INVALID));
    up.assert_silent("a token of the withdrawn key");
    let r = outsider_read(gw.addr, Some(&new)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("a token of the key kept");
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_routes_follow_manage_require() {
    // Share reads need only the network; creating and revoking shares
    // needs the network and a verified identity.
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("ec.pem");
    std::fs::write(&path, &keys().ec.public_pem).expect("write the public key");
    let jwt = format!(
        "{SOURCES}\nalgorithms = [\"ES256\"]\nissuers = [{ISS:?}]\naudiences = [{AUD:?}]\npem_files = [{path:?}]\n"
    );
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.share_extra = "manage_require = \"network_and_identity\"\n".to_owned();
    setup.extra = format!("[identity.jwt]\n{jwt}\n");
    let gw = setup.start().await;
    let manage = fill("/api/v1/runs/{id}/share");
    let token = bearer(&keys().ec, "ec");
    let auth = [("authorization", token.as_str())];

    let r = request(INSIDE, gw.addr, "GET", &share_page(), &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "a share read: {}", r.summary());
    up.only("a share read, network only");

    let r = request(INSIDE, gw.addr, "PUT", &manage, &[], "{}").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.summary());
    assert_eq!(r.header("www-authenticate").as_deref(), Some(MISSING));
    up.assert_silent("share creation without a token");

    let expired = sign(&keys().ec, &claims(json!({"exp": now() - 3600})));
    let expired = format!("Bearer {expired}");
    let r = request(
        INSIDE,
        gw.addr,
        "PUT",
        &manage,
        &[("authorization", &expired)],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.summary());
    up.assert_silent("share creation with an expired token");

    let r = request(OUTSIDE, gw.addr, "PUT", &manage, &auth, "{}").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.summary());
    assert_eq!(detail(&r), MANAGE_OUTSIDE);
    up.assert_silent("share creation from outside with a token");

    let r = request(INSIDE, gw.addr, "PUT", &manage, &auth, "{}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    let seen = up.only("share creation from inside with a token");
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("PUT", manage.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_redirect_uses_the_configured_return_parameter() {
    let g = start(
        "identity",
        &format!("login_url = \"{LOGIN}?app=sharegate\"\nlogin_return_param = \"return_to\""),
        "",
    )
    .await;
    let target = fill("/public/{t}/r?x=1");
    let html = ("accept", "text/html");
    let r = request(OUTSIDE, g.gw.addr, "GET", &target, &[html], "").await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.summary());
    let location = r.header("location").expect("a Location");
    let encoded =
        percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC);
    assert_eq!(
        location,
        format!("{LOGIN}?app=sharegate&return_to={encoded}")
    );
    g.up.assert_silent("a redirected navigation");
}
