//! TLS on the listener with a real certificate made for the test: ALPN
//! picks HTTP/2 when the client offers it, HTTP/1.1 clients still work, and
//! the policy holds the same over both.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use sharegate::config::TlsFiles;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The test gateway over TLS, after checking the listener's rustls config
/// as the gateway builds it from the config's files: HTTP/2 first, then
/// HTTP/1.1 and HTTP/1.0; no early data.
async fn start_tls(up: &FakeUpstream) -> TlsGateway {
    let tls = TlsGateway::start(up, "").await;
    let files: TlsFiles = config(&tls.toml)
        .listeners
        .first()
        .and_then(|l| l.tls.clone())
        .expect("[server] names a certificate and key");
    let built = sharegate::tls::server_config(&files).expect("load the certificate and key");
    assert!(built.client_auth.is_none(), "no client CA is configured");
    assert_eq!(
        built.config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()]
    );
    // No 0-RTT: early data could be replayed by anyone who recorded it.
    assert_eq!(built.config.max_early_data_size, 0);
    assert!(!built.config.send_half_rtt_data);
    tls
}

/// A TLS connection from `from` offering `alpn`, verified against the test
/// certificate for `server_name`.
async fn tls_connect(
    from: IpAddr,
    gw: &TlsGateway,
    server_name: &str,
    alpn: &[&[u8]],
) -> TlsStream<tokio::net::TcpStream> {
    try_tls_connect(from, gw, server_name, alpn)
        .await
        .expect("TLS handshake with the test certificate")
}

/// As [`tls_connect`], with the handshake's error returned.
async fn try_tls_connect(
    from: IpAddr,
    gw: &TlsGateway,
    server_name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(gw.roots.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = connect(from, gw.gw.addr).await;
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    within(
        "the TLS handshake",
        TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
}

async fn h2_request(tls: TlsStream<tokio::net::TcpStream>, req: Request<Full<Bytes>>) -> Reply {
    let (mut sender, conn) = within(
        "the HTTP/2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = within("the HTTP/2 response", sender.send_request(req))
        .await
        .expect("HTTP/2 request");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    read_reply(resp).await
}

/// An HTTP/1.1 client over `tls`, kept alive between requests.
async fn h1_client(
    tls: TlsStream<tokio::net::TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (sender, conn) = within(
        "the HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(tls)),
    )
    .await
    .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn h1_request(tls: TlsStream<tokio::net::TcpStream>, req: Request<Full<Bytes>>) -> Reply {
    let mut sender = h1_client(tls).await;
    let resp = within("the HTTP/1.1 response", sender.send_request(req))
        .await
        .expect("HTTP/1.1 request");
    assert_eq!(resp.version(), http::Version::HTTP_11);
    read_reply(resp).await
}

fn absolute(addr: SocketAddr, method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_h2_and_the_share_read_passes() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let addr = gw.gw.addr;
    let tls = tls_connect(INSIDE, &gw, "localhost", &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let target = fill("/public/{t}/r");
    let reply = h2_request(tls, absolute(addr, "GET", &target, "")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("share read over h2");
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("GET", target.as_str())
    );
    assert_eq!(r.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        r.header("x-forwarded-host"),
        Some(format!("localhost:{}", addr.port()))
    );
    assert_eq!(r.header("x-forwarded-for").as_deref(), Some("127.0.0.2"));
    assert_eq!(r.header("host"), Some(up.addr.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_post_read_passes_and_write_is_refused() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let addr = gw.gw.addr;
    let body = r#"{"limit": 1}"#;

    let target = fill("/api/v1/public/{t}/runs/query");
    let tls = tls_connect(INSIDE, &gw, "127.0.0.1", &[b"h2"]).await;
    let reply = h2_request(tls, absolute(addr, "POST", &target, body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("POST read over h2");
    assert_eq!(r.target, target);
    assert_eq!(r.body, body.as_bytes());

    let tls = tls_connect(INSIDE, &gw, "localhost", &[b"h2"]).await;
    let reply = h2_request(
        tls,
        absolute(addr, "DELETE", &fill("/api/v1/public/{t}/run"), ""),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        reply.summary()
    );
    assert!(reply.header("allow").is_some());
    up.assert_silent("DELETE over h2");

    let tls = tls_connect(OUTSIDE, &gw, "localhost", &[b"h2"]).await;
    let reply = h2_request(tls, absolute(addr, "GET", &fill("/public/{t}/r"), "")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
    assert_eq!(detail(&reply), SHARE_OUTSIDE);
    up.assert_silent("outsider over h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_only_clients_still_work() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let addr = gw.gw.addr;
    let target = fill("/api/v1/public/{t}/run");

    for alpn in [&[&b"http/1.1"[..]][..], &[][..]] {
        let tls = tls_connect(INSIDE, &gw, "localhost", alpn).await;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.is_empty() {
            assert_eq!(negotiated, None);
        } else {
            assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..]));
        }
        let req = build(
            addr,
            "GET",
            &target,
            &[("host", &format!("localhost:{}", addr.port()))],
            "",
        );
        let reply = h1_request(tls, req).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
        let r = up.only("share read over HTTP/1.1 and TLS");
        assert_eq!(r.target, target);
        assert_eq!(r.header("x-forwarded-proto").as_deref(), Some("https"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_listener_gets_nothing() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let raw = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        fill("/public/{t}/r")
    );
    let answer = raw_request(INSIDE, gw.gw.addr, &raw).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    up.assert_silent("plain HTTP to the TLS port");
}

/// RFC 9113 §3.3: over TLS, HTTP/2 is spoken only when ALPN agreed on it. A
/// client that skips ALPN and sends the HTTP/2 preface anyway is read as
/// HTTP/1.1, which refuses it. A client that agreed on h2 and then sends
/// nothing (or part of the preface) is let go after `header_timeout`, as is
/// an HTTP/1.1 one that sends nothing or half a head. None of them reaches
/// the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_needs_alpn_and_silent_clients_are_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = FakeUpstream::start().await;
    let gw = TlsGateway::start(&up, "[limits]\nheader_timeout = \"1s\"\n").await;
    let target = fill("/public/{t}/r");

    // The preface and a whole HTTP/2 request, without ALPN.
    let mut tls = tls_connect(INSIDE, &gw, "localhost", &[]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
    let mut block = Vec::new();
    for (k, v) in [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", target.as_str()),
    ] {
        // Literal without indexing, new name (RFC 7541 §6.2.2); short
        // lengths fit the 7-bit prefix.
        block.push(0);
        block.push(u8::try_from(k.len()).expect("short"));
        block.extend_from_slice(k.as_bytes());
        block.push(u8::try_from(v.len()).expect("short"));
        block.extend_from_slice(v.as_bytes());
    }
    let len = u32::try_from(block.len()).expect("short").to_be_bytes();
    frames.extend_from_slice(&[len[1], len[2], len[3], 1, 0x5, 0, 0, 0, 1]); // HEADERS, END_STREAM|END_HEADERS
    frames.extend_from_slice(&block);
    tls.write_all(&frames).await.expect("write");
    let mut answer = Vec::new();
    let _ = within(
        "the refusal of h2 without ALPN",
        tls.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
        "h2 without ALPN got an answer other than an HTTP/1.1 refusal: {answer:?}"
    );
    assert!(!answer.contains("200"), "{answer:?}");

    // h2 agreed, then silence or half a preface; and HTTP/1.1 (no ALPN),
    // then silence, which hyper's own header timer ends.
    for (what, alpn, opening) in [
        ("h2, then nothing at all", &[&b"h2"[..]][..], &b""[..]),
        (
            "h2, then part of the preface",
            &[&b"h2"[..]][..],
            &b"PRI * HTTP/2.0\r\n"[..],
        ),
        ("HTTP/1.1, then nothing at all", &[][..], &b""[..]),
        (
            "HTTP/1.1, then half a request head",
            &[][..],
            &b"GET / HTTP/1.1\r\n"[..],
        ),
    ] {
        let mut tls = tls_connect(INSIDE, &gw, "localhost", alpn).await;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            alpn.first().copied(),
            "{what}"
        );
        tls.write_all(opening).await.expect("write");
        let mut out = Vec::new();
        let read = tokio::time::timeout(WAIT, tls.read_to_end(&mut out)).await;
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "{what}: the connection was still open after {WAIT:?}"
        );
    }
    up.assert_silent("h2 without ALPN, and silent h2 clients");
}

/// An idle HTTP/1.1 keep-alive connection over TLS gives hyper's buffers
/// back like a plain one, and its next request, read through TLS, wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tls_connection_is_parked_and_woken() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let addr = gw.gw.addr;
    let tls = tls_connect(INSIDE, &gw, "localhost", &[b"http/1.1"]).await;
    let mut sender = h1_client(tls).await;
    let share = fill("/api/v1/public/{t}/run");
    for round in 0..2 {
        within("the connection to be ready", sender.ready())
            .await
            .unwrap_or_else(|e| panic!("round {round}: the connection closed: {e}"));
        let resp = within(
            "the response",
            sender.send_request(absolute(addr, "GET", &share, "")),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let reply = read_reply(resp).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
        eventually("the idle TLS connection to be parked", || {
            let parked = gw.gw.state.metrics.parked_connections.get();
            async move { (parked == 1).then_some(()) }
        })
        .await;
    }
    assert_eq!(up.take().len(), 2);
}

/// A client that opens a connection and stalls before the TLS handshake is
/// done (or, from the balancer, inside its PROXY header) is let go after
/// `limits.handshake_timeout`, however long `header_timeout` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_let_go_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = FakeUpstream::start().await;
    let gw = TlsGateway::start_with(
        &up,
        "proxy_protocol_from = [\"127.0.0.4/32\"]\nproxy_protocol_optional = true",
        "[limits]\nhandshake_timeout = \"1s\"\nheader_timeout = \"600s\"\n",
    )
    .await;
    for (what, from, opening) in [
        ("nothing at all", INSIDE, &b""[..]),
        // A TLS record header announcing a ClientHello that never comes.
        (
            "the start of a ClientHello",
            INSIDE,
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..],
        ),
        ("half a PROXY header", PROXY, &b"PROXY TCP4 127.0.0.2 "[..]),
    ] {
        let mut tcp = connect(from, gw.gw.addr).await;
        tcp.write_all(opening).await.expect("write");
        let mut out = Vec::new();
        let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut out)).await;
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "{what}: the connection was still open after {WAIT:?}"
        );
    }
    up.assert_silent("stalled handshakes");
}

/// Everything the gateway sends on `tls` after `bytes`, until it closes.
async fn raw_over_tls(mut tls: TlsStream<tokio::net::TcpStream>, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = within("the gateway to answer and close", tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// ALPN (RFC 7301): the gateway's order decides (HTTP/2 when offered at
/// all, whatever the client's order); an HTTP/1.0 client that says so in
/// ALPN, as `curl --http1.0` does, is served as over cleartext, not
/// turned away with an alert; a client offering only protocols the
/// gateway does not speak is refused in the handshake
/// (`no_application_protocol`), before any byte of a request is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_follows_the_gateways_order_and_refuses_only_foreign_protocols() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let addr = gw.gw.addr;
    let target = fill("/public/{t}/r");

    let tls = try_tls_connect(INSIDE, &gw, "localhost", &[b"http/1.1", b"h2"])
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let reply = h2_request(tls, absolute(addr, "GET", &target, "")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    up.only("a read over h2 chosen by the gateway");

    let tls = try_tls_connect(INSIDE, &gw, "localhost", &[b"http/1.0"])
        .await
        .expect("an HTTP/1.0 client's handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.0"[..]));
    let answer = raw_over_tls(
        tls,
        format!(
            "GET {target} HTTP/1.0\r\nHost: localhost:{}\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.0 200 ") || answer.starts_with("HTTP/1.1 200 "),
        "{answer:?}"
    );
    up.only("a read by an HTTP/1.0 client over TLS");

    for foreign in [&b"spdy/3.1"[..], b"h2c", b"acme-tls/1", b"HTTP/1.1"] {
        let got = try_tls_connect(INSIDE, &gw, "localhost", &[foreign]).await;
        let err = got.map(|_| ()).expect_err("a foreign protocol was agreed");
        assert!(
            err.to_string().contains("NoApplicationProtocol"),
            "{}: {err}",
            String::from_utf8_lossy(foreign)
        );
    }
    up.assert_silent("clients offering only foreign protocols");
}

/// TLS 1.3 early data (0-RTT) stays off: the gateway's session tickets
/// never allow it, so a client that would send its request in the first
/// flight (replayable by anyone who recorded it) cannot, even when it
/// resumes a session; its request goes after the handshake, as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_data_is_never_offered_even_on_resumption() {
    use std::io::{Read, Write};
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let addr = gw.gw.addr;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(gw.roots.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.enable_early_data = true;
    let cfg = Arc::new(cfg);
    // A blocking rustls client: it says, before the handshake, whether
    // the session it resumes lets it send early data.
    let rounds = tokio::task::spawn_blocking(move || {
        let mut rounds = Vec::new();
        for _ in 0..2 {
            let mut sock = std::net::TcpStream::connect(addr).expect("connect");
            sock.set_read_timeout(Some(WAIT)).expect("timeout");
            let name = ServerName::try_from("localhost").expect("name");
            let mut conn = rustls::ClientConnection::new(cfg.clone(), name).expect("client");
            let offered = conn.early_data().is_some();
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer);
            rounds.push((
                offered,
                conn.handshake_kind(),
                conn.is_early_data_accepted(),
                String::from_utf8_lossy(&answer).into_owned(),
            ));
        }
        rounds
    });
    let rounds = within("two blocking TLS clients", rounds)
        .await
        .expect("joined");
    assert_eq!(rounds[0].1, Some(rustls::HandshakeKind::Full));
    assert_eq!(
        rounds[1].1,
        Some(rustls::HandshakeKind::Resumed),
        "the second connection resumes (so a ticket was there to carry early data)"
    );
    for (offered, kind, accepted, answer) in &rounds {
        assert!(
            !offered && !accepted,
            "{kind:?}: early data offered {offered}, accepted {accepted}"
        );
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    }
    assert_eq!(up.take().len(), 2);
}

/// With `server.hosts` set, the host a request names decides, not the
/// TLS server name (SNI): the gateway has one certificate and one policy
/// per listener, so SNI selects nothing. An SNI naming a foreign host with
/// a listed `Host` is served (a browser never sends that pair: both come
/// from the URL; any other client can name any host anyway); a listed SNI
/// does not let a foreign `Host` through; no SNI at all (an IP address)
/// changes nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_named_host_decides_not_the_tls_server_name() {
    let up = FakeUpstream::start().await;
    let issued = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "foreign.example".to_owned(),
        "127.0.0.1".to_owned(),
    ])
    .expect("a certificate");
    let dir = tempfile::tempdir().expect("a folder");
    let (cert, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
    std::fs::write(&cert, issued.cert.pem()).expect("write");
    std::fs::write(&key, issued.signing_key.serialize_pem()).expect("write");
    let mut setup = Setup::new(&up);
    setup.server_extra =
        format!("tls_cert = {cert:?}\ntls_key = {key:?}\nhosts = [\"localhost\"]\n");
    let gw = TestGateway::start(&setup.toml()).await;
    let roots = vec![rustls::pki_types::CertificateDer::from(
        issued.cert.der().to_vec(),
    )];
    let port = gw.addr.port();
    for (sni, host, want) in [
        ("foreign.example", "localhost", StatusCode::OK),
        ("127.0.0.1", "localhost", StatusCode::OK),
        (
            "localhost",
            "foreign.example",
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (
            "foreign.example",
            "foreign.example",
            StatusCode::MISDIRECTED_REQUEST,
        ),
    ] {
        let tls = tls_connect_from(INSIDE, gw.addr, tls_client_config(&roots, None), sni)
            .await
            .expect("handshake");
        let req = build(
            gw.addr,
            "GET",
            "/",
            &[("host", &format!("{host}:{port}"))],
            "",
        );
        let reply = exchange_on(tls, req).await.expect("an answer");
        assert_eq!(
            reply.status,
            want,
            "SNI {sni}, Host {host}: {}",
            reply.summary()
        );
    }
    assert_eq!(up.take().len(), 2);
}

/// `limits.handshake_timeout` bounds the whole TLS handshake, not each
/// read: a client that connects and says nothing, or trickles a
/// ClientHello a byte at a time, is let go once it has passed, however
/// long `header_timeout` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_timeout_bounds_the_whole_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = FakeUpstream::start().await;
    let gw = TlsGateway::start(
        &up,
        "[limits]\nhandshake_timeout = \"1s\"\nheader_timeout = \"60s\"\n",
    )
    .await;
    // A ClientHello record announcing 512 bytes, of which one is sent
    // every 100 ms (51 s for all of them).
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.resize(5 + 512, 0x2a);
    for trickle in [false, true] {
        let stream = connect(INSIDE, gw.gw.addr).await;
        let (mut read, mut write) = stream.into_split();
        let closed = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        // The whole trickle would take 51 s, longer than this wait: a timer
        // that each byte restarted would not have closed it by then.
        let deadline = tokio::time::Instant::now() + WAIT;
        if trickle {
            for b in &hello {
                if closed.is_finished()
                    || tokio::time::Instant::now() >= deadline
                    || write.write_all(&[*b]).await.is_err()
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        match tokio::time::timeout_at(deadline, closed).await {
            Ok(joined) => joined.expect("the reader task"),
            Err(_) => panic!("trickle {trickle}: still open after {WAIT:?}"),
        }
    }
    up.assert_silent("handshakes that never finished");
}
