//! Client certificates that stop being identities before they expire:
//! `client_crl` at the handshake, on connections kept alive across a CRL
//! reload or past a CRL's `nextUpdate`, and on resumed TLS sessions (which
//! rustls does not verify again), with real certificates, CRLs and TLS.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use http::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sharegate::telemetry::metrics::ResultLabels;

/// A CA that can revoke: its certificate, a server certificate for
/// `localhost`, client certificates with chosen serial numbers, and CRLs
/// written to `ca.crl` on demand; all in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
}

const ALICE: u64 = 0x0a11ce;
const BOB: u64 = 0x0b0b;

impl Pki {
    /// The CA, the server certificate, and a CRL revoking nothing.
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a PKI folder");
        let now = SystemTime::now();
        let key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "revoking CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = (now - Duration::from_secs(3600)).into();
        ca.not_after = (now + Duration::from_secs(86_400)).into();
        let ca_cert = ca.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).expect("write");
        let pki = Pki {
            dir,
            ca: Issuer::new(ca, key),
            ca_der: ca_cert.der().clone(),
        };
        let server_key = KeyPair::generate().expect("server key");
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server names");
        server.not_before = (now - Duration::from_secs(3600)).into();
        server.not_after = (now + Duration::from_secs(86_400)).into();
        let server_cert = server
            .signed_by(&server_key, &pki.ca)
            .expect("server certificate");
        std::fs::write(pki.path("server.crt"), server_cert.pem()).expect("write");
        std::fs::write(pki.path("server.key"), server_key.serialize_pem()).expect("write");
        pki.write_crl(&[], Duration::from_secs(86_400));
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[server]` lines: TLS, the CA, `ca.crl`, and `client_cert = mode`.
    fn server_extra(&self, mode: &str) -> String {
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\nclient_crl = {:?}\nclient_cert = {mode:?}\n",
            self.path("server.crt"),
            self.path("server.key"),
            self.path("ca.crt"),
            self.path("ca.crl"),
        )
    }

    /// Replaces `ca.crl` (in one step) with a CRL revoking `serials`
    /// whose `nextUpdate` is `valid_for` from now.
    fn write_crl(&self, serials: &[u64], valid_for: Duration) -> SystemTime {
        let now = SystemTime::now();
        let next = now + valid_for;
        let crl = CertificateRevocationListParams {
            this_update: (now - Duration::from_secs(60)).into(),
            next_update: next.into(),
            crl_number: SerialNumber::from(u64::try_from(serials.len()).unwrap_or(0) + 1),
            issuing_distribution_point: None,
            revoked_certs: serials
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
        .signed_by(&self.ca)
        .expect("a CRL");
        replace_file(&self.path("ca.crl"), crl.pem().expect("PEM"));
        next
    }

    /// A client certificate with CN `name` and serial `serial`.
    fn client(
        &self,
        name: &str,
        serial: u64,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let now = SystemTime::now();
        let key = KeyPair::generate().expect("client key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.not_before = (now - Duration::from_secs(3600)).into();
        p.not_after = (now + Duration::from_secs(86_400)).into();
        let cert = p.signed_by(&key, &self.ca).expect("client certificate");
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    /// A client presenting the certificate of (`name`, `serial`), with
    /// rustls's default session cache (so a second connection resumes),
    /// speaking only `version`.
    fn client_config(
        &self,
        name: &str,
        serial: u64,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("trust the CA");
        let (chain, key) = self.client(name, serial);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("protocol version")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client certificate");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

const TLS13: &rustls::SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &rustls::SupportedProtocolVersion = &rustls::version::TLS12;

/// The test policy: share routes need an identity (any), every other route
/// is open; `[server]` from `pki` in `mode`.
fn setup(up: &FakeUpstream, pki: &Pki, mode: &str) -> Setup {
    let mut setup = Setup::new(up);
    setup.server_extra = pki.server_extra(mode);
    setup.share_extra = "require = \"identity\"\n".to_owned();
    setup.extra = "[reload]\ninterval = \"50ms\"\n".to_owned();
    setup
}

/// One request over a new TLS connection: whether the handshake resumed
/// a session, and the answer (`Err` when the connection failed, which is
/// how a refused TLS 1.3 client certificate shows: after the client's
/// side of the handshake is done).
async fn fresh_get(
    gw: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    path: &str,
) -> (bool, Result<Reply, String>) {
    let tls = match tls_connect_from(OUTSIDE, gw, client, "localhost").await {
        Ok(t) => t,
        Err(e) => return (false, Err(format!("handshake: {e}"))),
    };
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    (
        resumed,
        exchange_on(tls, build(gw, "GET", path, &[], "")).await,
    )
}

fn refused(got: &Result<Reply, String>) -> bool {
    got.as_ref().is_err()
}

fn reloads(gw: &TestGateway) -> u64 {
    gw.state
        .metrics
        .reloads
        .get_or_create(&ResultLabels { result: "success" })
        .get()
}

/// Waits until `after` is exceeded by `time`'s clock (waiting for a
/// certificate's or CRL's own time, not for readiness).
async fn wait_past(time: SystemTime) {
    while SystemTime::now() <= time + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A certificate the CRL revokes is refused at the handshake, in both
/// modes (a certificate presented must verify, even where none is
/// needed); one it does not revoke is an identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_at_the_handshake() {
    let pki = Pki::new();
    pki.write_crl(&[BOB], Duration::from_secs(86_400));
    let share = fill("/public/{t}/r");
    for mode in ["required", "optional"] {
        let up = FakeUpstream::start().await;
        let gw = setup(&up, &pki, mode).start().await;
        let (_, alice) = fresh_get(gw.addr, pki.client_config("alice", ALICE, TLS13), &share).await;
        let alice = alice.unwrap_or_else(|e| panic!("{mode}: alice: {e}"));
        assert_eq!(alice.status, StatusCode::OK, "{mode}: {}", alice.summary());
        up.only("alice's read");
        for version in [TLS13, TLS12] {
            let (_, bob) = fresh_get(gw.addr, pki.client_config("bob", BOB, version), &share).await;
            assert!(
                refused(&bob),
                "{mode} {version:?}: bob's revoked certificate was served: {:?}",
                bob.map(|r| r.summary())
            );
        }
        up.assert_silent("bob's reads with a revoked certificate");
    }
}

/// A certificate revoked by a CRL that the watcher reloads loses its
/// identity on a connection kept alive since before: the next request
/// that needs one is refused and never reaches the upstream; a new
/// connection with it is refused at the handshake; a resumption of the
/// session from before the reload does not bring it back (the reload
/// replaced the listener's TLS config and with it the session cache, so
/// the client must make a full handshake, which is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_reload_ends_the_identity_on_kept_connections_and_resumptions() {
    let pki = Pki::new();
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("a config folder");
    let (gw, _path) =
        TestGateway::from_file(dir.path(), &setup(&up, &pki, "optional").toml()).await;
    let watcher = tokio::spawn(sharegate::state::watch(gw.state.clone()));
    let share = fill("/public/{t}/r");
    let alice13 = pki.client_config("alice", ALICE, TLS13);
    let alice12 = pki.client_config("alice", ALICE, TLS12);

    let mut kept = KeptConnection::open(gw.addr, alice13.clone()).await;
    let r = kept.get(&share, "alice's read").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("alice's read");
    // Sessions to resume, each shown to resume before the revocation.
    for (what, client) in [("TLS 1.3", &alice13), ("TLS 1.2", &alice12)] {
        let (_, first) = fresh_get(gw.addr, client.clone(), &share).await;
        assert_eq!(first.expect(what).status, StatusCode::OK, "{what}");
        let (resumed, again) = fresh_get(gw.addr, client.clone(), &share).await;
        assert!(resumed, "{what}: the second connection did not resume");
        assert_eq!(again.expect(what).status, StatusCode::OK, "{what}");
        let (_, third) = fresh_get(gw.addr, client.clone(), &share).await;
        assert_eq!(third.expect(what).status, StatusCode::OK, "{what}");
    }
    assert_eq!(up.take().len(), 6);

    let before = reloads(&gw);
    pki.write_crl(&[ALICE], Duration::from_secs(86_400));
    eventually("the watcher to load the new CRL", || {
        let done = reloads(&gw) > before;
        async move { done.then_some(()) }
    })
    .await;

    let r = kept.get(&share, "alice's read after her revocation").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.summary());
    // An open route needs no identity and still passes.
    let r = kept.get("/", "an open route").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("the open route");
    for (what, client) in [("TLS 1.3", &alice13), ("TLS 1.2", &alice12)] {
        let (resumed, got) = fresh_get(gw.addr, client.clone(), &share).await;
        assert!(
            refused(&got) && !resumed,
            "{what}: a resumption after the revocation: resumed {resumed}, {:?}",
            got.map(|r| r.summary())
        );
    }
    let (_, fresh) = fresh_get(gw.addr, pki.client_config("alice", ALICE, TLS13), &share).await;
    assert!(refused(&fresh), "{:?}", fresh.map(|r| r.summary()));
    up.assert_silent("alice's reads after her revocation");
    watcher.abort();
}

/// On a listener that requires a client certificate, a connection whose
/// certificate is revoked while it is kept alive gets nothing more: a new
/// handshake with it would be refused, so every request on it is refused
/// (`403`, connection closed), open routes included, and none reaches the
/// upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_listener_serves_nothing_more_on_a_revoked_kept_connection() {
    let pki = Pki::new();
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("a config folder");
    let (gw, _path) =
        TestGateway::from_file(dir.path(), &setup(&up, &pki, "required").toml()).await;
    let share = fill("/public/{t}/r");
    let mut kept = KeptConnection::open(gw.addr, pki.client_config("alice", ALICE, TLS13)).await;
    let mut open = KeptConnection::open(gw.addr, pki.client_config("alice", ALICE, TLS13)).await;
    let mut h2 = h2_open(gw.addr, &pki).await;
    let r = kept.get(&share, "alice's read").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    let r = open.get("/", "alice's open route").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    let r = h2_get(&mut h2, gw.addr, "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    assert_eq!(up.take().len(), 3);

    pki.write_crl(&[ALICE], Duration::from_secs(86_400));
    gw.state.reload().await.expect("the reload");

    let r = kept.get(&share, "alice's read after her revocation").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.summary());
    let r = open.get("/", "an open route after her revocation").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.summary());
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    // And the connection is closed after the refusal.
    let again = open.try_get("/", "a request after the refusal").await;
    assert!(again.is_err(), "{:?}", again.map(|r| r.summary()));
    // Over HTTP/2, each request is refused.
    for _ in 0..2 {
        let r = h2_get(&mut h2, gw.addr, "/").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.summary());
    }
    up.assert_silent("requests on a revoked kept connection");
}

/// An HTTP/2 connection presenting alice's certificate.
async fn h2_open(
    gw: SocketAddr,
    pki: &Pki,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let mut cfg = (*pki.client_config("alice", ALICE, TLS13)).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tls_connect_from(OUTSIDE, gw, Arc::new(cfg), "localhost")
        .await
        .expect("the client's handshake");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 over the TLS connection");
    tokio::spawn(connection);
    sender
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    gw: SocketAddr,
    target: &str,
) -> Reply {
    let req = http::Request::builder()
        .uri(format!("https://localhost:{}{target}", gw.port()))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = within("an HTTP/2 answer", sender.send_request(req))
        .await
        .expect("the HTTP/2 connection answers");
    read_reply(resp).await
}

/// A CRL is trusted until its `nextUpdate` and not after (fail closed):
/// once it has passed, with no reload, a connection kept alive loses the
/// identity, a new handshake is refused, and so is a resumed TLS session,
/// which rustls would hand back with its certificate unverified (TLS 1.3
/// ticket and TLS 1.2 session ID alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_crl_refuses_kept_connections_resumptions_and_handshakes() {
    let pki = Pki::new();
    // Long enough for the connections below on a loaded machine; the test
    // then waits for it to pass.
    let next_update = pki.write_crl(&[BOB], Duration::from_secs(8));
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("a config folder");
    let (gw, _path) =
        TestGateway::from_file(dir.path(), &setup(&up, &pki, "optional").toml()).await;
    let share = fill("/public/{t}/r");
    let alice13 = pki.client_config("alice", ALICE, TLS13);
    let alice12 = pki.client_config("alice", ALICE, TLS12);
    // The metric operators alert on.
    let next_secs = next_update
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    #[allow(clippy::cast_precision_loss)]
    let expected = next_secs as f64;
    assert_eq!(gw.state.metrics.crl_next_update.get(), expected);

    let mut kept = KeptConnection::open(gw.addr, alice13.clone()).await;
    let r = kept.get(&share, "alice's read").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    for (what, client) in [("TLS 1.3", &alice13), ("TLS 1.2", &alice12)] {
        let (_, first) = fresh_get(gw.addr, client.clone(), &share).await;
        assert_eq!(first.expect(what).status, StatusCode::OK, "{what}");
    }
    assert_eq!(up.take().len(), 3);

    wait_past(next_update).await;
    let r = kept.get(&share, "alice's read after the CRL expired").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.summary());
    for (what, client) in [("TLS 1.3", &alice13), ("TLS 1.2", &alice12)] {
        let (resumed, got) = fresh_get(gw.addr, client.clone(), &share).await;
        assert!(
            refused(&got),
            "{what}: resumed {resumed} after the CRL expired: {:?}",
            got.map(|r| r.summary())
        );
    }
    let (_, fresh) = fresh_get(gw.addr, pki.client_config("alice", ALICE, TLS13), &share).await;
    assert!(refused(&fresh), "{:?}", fresh.map(|r| r.summary()));
    up.assert_silent("reads under an expired CRL");

    // A fresh CRL (reloaded) puts her back.
    pki.write_crl(&[BOB], Duration::from_secs(86_400));
    gw.state.reload().await.expect("the reload");
    let (_, back) = fresh_get(gw.addr, pki.client_config("alice", ALICE, TLS13), &share).await;
    assert_eq!(back.expect("served").status, StatusCode::OK);
}
