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
/// HTTP/1.1.
async fn start_tls(up: &FakeUpstream) -> TlsGateway {
    let tls = TlsGateway::start(up, "").await;
    let files: TlsFiles = config(&tls.toml)
        .listeners
        .first()
        .and_then(|l| l.tls.clone())
        .expect("[server] names a certificate and key");
    let (server, client_trust) =
        sharegate::tls::server_config(&files).expect("load the certificate and key");
    assert_eq!(client_trust, None, "no client CA is configured");
    assert_eq!(
        server.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
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
    .expect("TLS handshake with the test certificate")
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
