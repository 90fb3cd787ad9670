//! Transport behaviour once a request is allowed: header hygiene in both
//! directions, streams that must not be buffered, protocol upgrades,
//! redirects, upstream failures, graceful shutdown, and idle keep-alive
//! connections (parked with hyper's buffers given back, then woken).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_stay_on_their_hop() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let target = fill("/api/v1/public/{t}/run");
    let reply = request(
        INSIDE,
        gw.addr,
        "GET",
        &target,
        &[
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "named by Connection"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
            ("Proxy-Connection", "keep-alive"),
            ("X_Forwarded_User", "admin"),
            ("X_Custom", "underscored"),
            ("X-Kept", "end to end"),
            ("Authorization", "Bearer placeholder"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("hop-by-hop request");
    for h in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "x_forwarded_user",
        "x_custom",
    ] {
        assert_eq!(r.header(h), None, "{h} must not reach the upstream");
    }
    for v in r.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-secret"),
            "Connection: {v}"
        );
    }
    assert_eq!(r.header("x-kept").as_deref(), Some("end to end"));
    assert_eq!(
        r.header("authorization").as_deref(),
        Some("Bearer placeholder")
    );
}

/// `Expect: 100-continue` is answered by the gateway (hyper sends the
/// interim `100` when the body is read; on a share route the body is read
/// whole first); forwarded, it would have the upstream answer an
/// expectation the body right behind it no longer waits for. The body
/// still arrives whole, on a share route and a streamed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_stays_with_the_gateway() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    for (from, path) in [
        (INSIDE, fill("/api/v1/public/{t}/runs/query")),
        (OUTSIDE, "/api/v1/runs/query".to_owned()),
    ] {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n{{}}"
        );
        let answer = raw_request(from, gw.addr, &raw).await;
        assert!(answer.contains(" 200 OK"), "{path}: {answer}");
        let r = up.only(&path);
        assert_eq!(
            r.header("expect"),
            None,
            "{path}: Expect reached the upstream"
        );
        assert_eq!(&r.body[..], b"{}", "{path}");
    }
}

/// An HTTP/2 client may send `cookie` as several fields (browsers do, so
/// that HPACK can index each crumb); RFC 9113 §8.2.3 has them joined with
/// "; " before the request goes on over HTTP/1.1, where an upstream that
/// reads one Cookie line would lose the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_crumbs_reach_the_upstream_as_one_line() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let tcp = connect(INSIDE, gw.addr).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    for (crumbs, want) in [
        (
            &["session=s1", "csrftoken=c2", "x=3"][..],
            "session=s1; csrftoken=c2; x=3",
        ),
        (&["only=1"][..], "only=1"),
    ] {
        let mut req = http::Request::builder().uri(format!(
            "http://{}{}",
            gw.addr,
            fill("/api/v1/public/{t}/run")
        ));
        for c in crumbs {
            req = req.header("cookie", *c);
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        let resp = within("the HTTP/2 response", sender.send_request(req))
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let r = up.only("the HTTP/2 share read");
        assert_eq!(r.header_all("cookie"), [want], "{crumbs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_stay_on_their_hop() {
    let up = FakeUpstream::start().await;
    up.on(
        "/api/v1/info",
        Behaviour::Respond {
            status: StatusCode::OK,
            headers: vec![
                ("connection", "x-internal"),
                ("x-internal", "upstream only"),
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic realm=\"internal\""),
                ("proxy-connection", "keep-alive"),
                ("x-kept", "end to end"),
                ("content-type", "application/json"),
            ],
            body: r#"{"version": "0.10"}"#,
        },
    );
    let gw = Setup::new(&up).start().await;
    let reply = request(OUTSIDE, gw.addr, "GET", "/api/v1/info", &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    assert_eq!(reply.text(), r#"{"version": "0.10"}"#);
    for h in [
        "x-internal",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
    ] {
        assert_eq!(reply.header(h), None, "{h} must not reach the client");
    }
    for v in reply.headers.get_all("connection") {
        let v = v.to_str().unwrap_or_default().to_ascii_lowercase();
        assert!(!v.contains("x-internal"), "Connection: {v}");
    }
    assert_eq!(reply.header("x-kept").as_deref(), Some("end to end"));
    up.only("response hop-by-hop");
}

/// Reads body frames until `want` has arrived; returns everything read.
async fn read_until(body: &mut Incoming, seen: &mut String, want: &str) {
    while !seen.contains(want) {
        let frame = within(&format!("{want:?} to reach the client"), body.frame())
            .await
            .unwrap_or_else(|| panic!("stream ended before {want:?}; got {seen:?}"))
            .expect("stream frame");
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// Releases the event `data: {word}` and reads until it has arrived.
async fn next_event(
    events: &tokio::sync::mpsc::UnboundedSender<Bytes>,
    body: &mut Incoming,
    seen: &mut String,
    word: &str,
) {
    events
        .send(Bytes::from(format!("data: {word}\n\n")))
        .expect("release an event");
    read_until(body, seen, word).await;
}

/// One event reaches the client before the upstream has even produced the
/// next: the test releases event 2 only once the client holds event 1.
async fn assert_streams_unbuffered(method: &str, route: &str, accept_sse: bool) {
    let up = FakeUpstream::start().await;
    let target = fill(route);
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let events = up.sse(&path);
    let gw = Setup::new(&up).start().await;

    let headers: &[(&str, &str)] = if accept_sse {
        &[
            ("accept", "text/event-stream"),
            ("content-type", "application/json"),
        ]
    } else {
        &[]
    };
    let body = if method == "POST" {
        r#"{"limit": 2}"#
    } else {
        ""
    };
    let resp = send(
        INSIDE,
        gw.addr,
        build(gw.addr, method, &target, headers, body),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{method} {route}");
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let mut body = resp.into_body();
    let mut seen = String::new();

    events
        .send(Bytes::from_static(
            b"event: run\ndata: {\"id\": \"run-1\"}\n\n",
        ))
        .expect("release event 1");
    read_until(&mut body, &mut seen, "run-1").await;
    assert!(!seen.contains("run-2"));

    events
        .send(Bytes::from_static(
            b"event: run\ndata: {\"id\": \"run-2\"}\n\n",
        ))
        .expect("release event 2");
    read_until(&mut body, &mut seen, "run-2").await;
    drop(events);
    let rest = within("the end of the stream", body.collect())
        .await
        .expect("stream end");
    assert!(rest.to_bytes().is_empty());

    let r = up.only(route);
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        (method, target.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_runs_query_event_stream_is_not_buffered() {
    assert_streams_unbuffered("POST", "/api/v2/public/{t}/runs/query", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_stream_is_not_buffered() {
    assert_streams_unbuffered(
        "POST",
        "/api/v1/public/{t}/datasets/runs/delta/stream",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_messages_stream_is_not_buffered() {
    assert_streams_unbuffered("GET", "/api/v2/public/threads/{t}/messages", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_on_an_ordinary_route() {
    let up = FakeUpstream::start().await;
    up.on("/api/v1/ws", Behaviour::UpgradeEcho);
    let gw = Setup::new(&up).start().await;
    let req = build(
        gw.addr,
        "GET",
        "/api/v1/ws?session=1",
        &[
            ("Connection", "upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    );
    let mut resp = send(OUTSIDE, gw.addr, req).await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers().get("upgrade").map(|v| v.as_bytes()),
        Some(&b"websocket"[..])
    );
    let upgraded = within("the client-side upgrade", hyper::upgrade::on(&mut resp))
        .await
        .expect("upgraded connection");
    let mut io = TokioIo::new(upgraded);
    for msg in [&b"ping"[..], &b"second message"[..]] {
        within("writing through the tunnel", io.write_all(msg))
            .await
            .expect("write");
        let mut buf = vec![0u8; msg.len()];
        within("the echo through the tunnel", io.read_exact(&mut buf))
            .await
            .expect("read the echo");
        assert_eq!(buf, msg);
    }

    let r = up.only("upgrade");
    assert_eq!(r.target, "/api/v1/ws?session=1");
    assert_eq!(r.header("upgrade").as_deref(), Some("websocket"));
    assert!(r
        .header("connection")
        .is_some_and(|c| c.to_ascii_lowercase().contains("upgrade")));
    assert_eq!(
        r.header("sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upgrade_on_a_share_route() {
    // A share route is plain request/response: the gateway must not open a
    // raw tunnel to the upstream, whatever the client asks for.
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let target = fill("/api/v1/public/{t}/run");
    let reply = request(
        INSIDE,
        gw.addr,
        "GET",
        &target,
        &[("Connection", "upgrade"), ("Upgrade", "websocket")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("upgrade request on a share route");
    assert_eq!(r.header("upgrade"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_pass_through_unfollowed() {
    let up = FakeUpstream::start().await;
    up.on(
        "/login",
        Behaviour::Respond {
            status: StatusCode::FOUND,
            headers: vec![("location", "/oauth/authorize?next=%2F")],
            body: "",
        },
    );
    let gw = Setup::new(&up).start().await;
    let reply = request(OUTSIDE, gw.addr, "GET", "/login", &[], "").await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(
        reply.header("location").as_deref(),
        Some("/oauth/authorize?next=%2F")
    );
    let r = up.only("redirecting route");
    assert_eq!(r.target, "/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_upstream_port_is_502_without_detail() {
    // A port nothing listens on: bind one, note it, close it.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let gw = Setup::with_url(format!("http://{dead}")).start().await;
    let reply = request(INSIDE, gw.addr, "GET", &fill("/public/{t}/r"), &[], "").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.summary());
    assert_eq!(
        reply.json(),
        serde_json::json!({ "detail": "Bad gateway." })
    );
    let text = reply.text();
    for leak in [
        dead.port().to_string().as_str(),
        "127.0.0.1",
        "refused",
        "connect",
    ] {
        assert!(!text.contains(leak), "the body leaks {leak:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_without_detail() {
    let up = FakeUpstream::start().await;
    up.on(&fill("/api/v1/public/{t}/run"), Behaviour::Hang);
    let mut setup = Setup::new(&up);
    setup.response_timeout = "300ms";
    let gw = setup.start().await;
    let reply = request(
        INSIDE,
        gw.addr,
        "GET",
        &fill("/api/v1/public/{t}/run"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.summary()
    );
    assert_eq!(
        reply.json(),
        serde_json::json!({ "detail": "Gateway timeout." })
    );
    let text = reply.text();
    for leak in [
        up.addr.port().to_string().as_str(),
        "127.0.0.1",
        "300ms",
        "upstream",
    ] {
        assert!(!text.contains(leak), "the body leaks {leak:?}: {text}");
    }
    // It was forwarded; the upstream just never answered.
    up.only("hanging route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_open_stream_finish_then_stops_accepting() {
    let up = FakeUpstream::start().await;
    let target = fill("/api/v2/public/threads/{t}/messages");
    let events = up.sse(&target);
    let mut gw = Setup::new(&up).start().await;
    let addr = gw.addr;

    let resp = send(INSIDE, addr, build(addr, "GET", &target, &[], "")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut seen = String::new();
    next_event(&events, &mut body, &mut seen, "one").await;

    gw.begin_shutdown();
    next_event(&events, &mut body, &mut seen, "two").await;
    drop(events);
    within("the stream to end", body.collect())
        .await
        .expect("clean end of the stream");

    gw.stopped().await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(INSIDE, 0))
        .expect("bind");
    assert!(
        within("a connection attempt after shutdown", socket.connect(addr))
            .await
            .is_err(),
        "the listener must be closed once run() has returned"
    );
}

/// The upstream pool keeps at most 64 idle connections: after a burst of 80
/// concurrent requests (80 upstream connections at once), the gateway
/// closes the 16 it does not keep instead of holding them until the idle
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_leaves_at_most_64_idle_upstream_connections() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const BURST: usize = 80;
    // An upstream that counts its open connections and answers only once
    // the whole burst has arrived, so that every request has its own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let open = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(tokio::sync::Barrier::new(BURST));
    let counted = open.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let (counted, all_in) = (counted.clone(), all_in.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: http::Request<Incoming>| {
                    let all_in = all_in.clone();
                    async move {
                        all_in.wait().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), service)
                    .await;
                counted.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let gw = Setup::with_url(format!("http://{addr}")).start().await;
    let requests: Vec<_> = (0..BURST)
        .map(|_| {
            let gw = gw.addr;
            tokio::spawn(async move { request(INSIDE, gw, "GET", "/assets/app.js", &[], "").await })
        })
        .collect();
    for r in requests {
        let reply = within("a request of the burst", r)
            .await
            .expect("client task");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    }
    assert!(open.load(Ordering::SeqCst) <= BURST);
    eventually("the pool to keep 64 idle upstream connections", || {
        let now = open.load(Ordering::SeqCst);
        async move { (now == 64).then_some(()) }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Idle keep-alive connections

fn parked(gw: &TestGateway) -> i64 {
    gw.state.metrics.parked_connections.get()
}

/// Waits until exactly `n` connections are parked.
async fn until_parked(gw: &TestGateway, n: i64) {
    eventually(&format!("{n} idle connection(s) to be parked"), || {
        let now = parked(gw);
        async move { (now == n).then_some(()) }
    })
    .await;
}

/// One request on a kept-alive client connection.
async fn ask(
    client: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Result<Response<Incoming>, hyper::Error> {
    within("the connection to be ready", client.ready()).await?;
    within("the response", client.send_request(req)).await
}

/// The status of each response in a raw HTTP/1.1 answer, in order.
fn statuses(answer: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(answer);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// Reads until the gateway closes the connection.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within("the gateway to close the connection", stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A keep-alive connection that has gone quiet gives hyper's buffers back
/// and is woken by its next request: plain requests, a WebSocket upgrade,
/// and pipelined requests written while it was parked are all served on
/// the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_is_parked_and_woken_by_its_next_request() {
    let up = FakeUpstream::start().await;
    up.on("/api/v1/ws", Behaviour::UpgradeEcho);
    let gw = Setup::new(&up).start().await;
    let share = fill("/public/{t}/r");
    let mut client = http1_client(INSIDE, gw.addr).await;
    for round in 0..3 {
        let resp = ask(&mut client, build(gw.addr, "GET", &share, &[], ""))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the kept-alive connection failed: {e}"));
        let reply = read_reply(resp).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
        until_parked(&gw, 1).await;
    }
    assert_eq!(up.take().len(), 3);

    // An upgrade on the woken connection.
    let upgrade = build(
        gw.addr,
        "GET",
        "/api/v1/ws",
        &[
            ("Connection", "upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    );
    let mut resp = ask(&mut client, upgrade)
        .await
        .expect("upgrade on a woken connection");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = within("the client-side upgrade", hyper::upgrade::on(&mut resp))
        .await
        .expect("upgraded connection");
    assert_eq!(parked(&gw), 0, "an upgraded connection is not parked");
    let mut io = TokioIo::new(upgraded);
    within("writing through the tunnel", io.write_all(b"ping"))
        .await
        .expect("write");
    let mut echo = [0u8; 4];
    within("the echo", io.read_exact(&mut echo))
        .await
        .expect("echo");
    assert_eq!(&echo, b"ping");
    drop(io);
    up.take();

    // Requests pipelined onto a parked connection.
    let mut raw = connect(INSIDE, gw.addr).await;
    let head =
        |extra: &str| format!("GET {share} HTTP/1.1\r\nHost: gateway.corp.example\r\n{extra}\r\n");
    raw.write_all(head("").as_bytes()).await.expect("write");
    until_parked(&gw, 1).await;
    let pipelined = format!(
        "{}{}",
        head("X-Nth: 2\r\n"),
        head("X-Nth: 3\r\nConnection: close\r\n")
    );
    raw.write_all(pipelined.as_bytes()).await.expect("write");
    let answer = read_to_close(&mut raw).await;
    assert_eq!(statuses(&answer), [200, 200, 200]);
    let seen: Vec<_> = up.take().iter().map(|r| r.header("x-nth")).collect();
    assert_eq!(seen, [None, Some("2".to_owned()), Some("3".to_owned())]);
    until_parked(&gw, 0).await;
}

/// Part of a request head that a pipelining client left behind is kept
/// through parking, and the head timeout still applies to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_head_survives_parking_and_still_times_out() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nheader_timeout = \"2s\"\n".to_owned();
    let gw = setup.start().await;
    let share = fill("/public/{t}/r");
    let first = format!("GET {share} HTTP/1.1\r\nHost: gateway.corp.example\r\n\r\n");
    let partial = format!("GET {share}?second HTTP/1.1\r\nHost: gateway.corp.example\r\nX-Sec");

    // Completed after a pause of several ticks: served whole.
    let mut s = connect(INSIDE, gw.addr).await;
    s.write_all(format!("{first}{partial}").as_bytes())
        .await
        .expect("write");
    // Pacing the client (a pause longer than the gateway's idle tick), not
    // waiting for readiness.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(b"ond: yes\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_to_close(&mut s).await;
    assert_eq!(statuses(&answer), [200, 200]);
    let seen = up.take();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].target, format!("{share}?second"));
    assert_eq!(seen[1].header("x-second").as_deref(), Some("yes"));

    // Never completed: the connection is let go after the head timeout,
    // not parked and woken for ever.
    let mut s = connect(INSIDE, gw.addr).await;
    s.write_all(format!("{first}{partial}").as_bytes())
        .await
        .expect("write");
    let answer = read_to_close(&mut s).await;
    let got = statuses(&answer);
    assert!(
        got == [200] || got == [200, 408],
        "the first answer, then nothing or a 408: {got:?}"
    );
    assert_eq!(up.take().len(), 1, "only the complete request arrived");

    // A parked connection is let go after the head timeout too.
    let mut s = connect(INSIDE, gw.addr).await;
    s.write_all(first.as_bytes()).await.expect("write");
    until_parked(&gw, 1).await;
    let answer = read_to_close(&mut s).await;
    assert_eq!(statuses(&answer), [200]);
    until_parked(&gw, 0).await;
}

/// A response still streaming, or an upstream still thinking, keeps its
/// connection out of parking however long it stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_is_never_parked() {
    let up = FakeUpstream::start().await;
    let events = up.sse("/api/v1/events");
    let slow = fill("/public/{t}/r");
    up.on(
        &slow,
        custom(|_| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            upstream_response(StatusCode::OK, &[], upstream_full("slow but sure"))
        }),
    );
    // Far more than the sockets between client and gateway hold, so that
    // the last of it waits in hyper's buffer while the client is slow.
    const BIG: usize = 32 << 20;
    up.on(
        "/api/v1/big",
        custom(|_| async {
            upstream_response(
                StatusCode::OK,
                &[("content-type", "application/octet-stream")],
                upstream_full(vec![b'x'; BIG]),
            )
        }),
    );
    let gw = Setup::new(&up).start().await;
    let resp = send(INSIDE, gw.addr, events_get(gw.addr, "/api/v1/events")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut seen = String::new();
    next_event(&events, &mut body, &mut seen, "one").await;
    // Quiet for several ticks mid-stream (pacing, not readiness).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(parked(&gw), 0, "a streaming connection was parked");
    next_event(&events, &mut body, &mut seen, "two").await;
    drop(events);

    let mut client = http1_client(INSIDE, gw.addr).await;
    for _ in 0..2 {
        let resp = ask(&mut client, build(gw.addr, "GET", &slow, &[], ""))
            .await
            .expect("the slow request on a kept-alive connection");
        let reply = read_reply(resp).await;
        assert_eq!(reply.text(), "slow but sure");
    }

    // A client slow to read a large answer (pacing, not readiness).
    let resp = ask(&mut client, build(gw.addr, "GET", "/api/v1/big", &[], ""))
        .await
        .expect("a large answer");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let body = within("the large body", resp.into_body().collect())
        .await
        .expect("the whole large body")
        .to_bytes();
    assert_eq!(body.len(), BIG);
    assert_eq!(
        up.take().len(),
        4,
        "the stream, two slow reads, the large answer"
    );
}

/// Shutdown closes parked connections at once: they have nothing in
/// flight (the grace period and head timeout are far longer than the test
/// waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_parked_connections() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.server_extra = "shutdown_grace = \"600s\"\n".to_owned();
    setup.extra = "[limits]\nheader_timeout = \"600s\"\n".to_owned();
    let mut gw = setup.start().await;
    let share = fill("/public/{t}/r");
    let mut s = connect(INSIDE, gw.addr).await;
    s.write_all(format!("GET {share} HTTP/1.1\r\nHost: gateway.corp.example\r\n\r\n").as_bytes())
        .await
        .expect("write");
    until_parked(&gw, 1).await;
    gw.begin_shutdown();
    let answer = read_to_close(&mut s).await;
    assert_eq!(statuses(&answer), [200]);
    up.only("the one request before parking");
    gw.stopped().await;
}

/// An HTTP/2 connection (prior knowledge on cleartext) is closed once it
/// has had nothing in flight for the idle timeout, but never while a
/// stream is open, however quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_but_an_open_stream_keeps_it() {
    let up = FakeUpstream::start().await;
    let events = up.sse("/api/v1/events");
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nheader_timeout = \"1s\"\n".to_owned();
    let gw = setup.start().await;
    let stream = connect(INSIDE, gw.addr).await;
    let (mut client, conn) = within(
        "the HTTP/2 handshake",
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        ),
    )
    .await
    .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);

    let share = fill("/public/{t}/r");
    let resp = within(
        "the response",
        client.send_request(build(gw.addr, "GET", &share, &[], "")),
    )
    .await
    .expect("a request over HTTP/2");
    assert_eq!(read_reply(resp).await.status, StatusCode::OK);

    let resp = within(
        "the stream",
        client.send_request(events_get(gw.addr, "/api/v1/events")),
    )
    .await
    .expect("a stream over HTTP/2");
    let mut body = resp.into_body();
    let mut seen = String::new();
    next_event(&events, &mut body, &mut seen, "one").await;
    // Quiet for twice the idle timeout with the stream open (pacing, not
    // readiness).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!conn.is_finished(), "closed with a stream open");
    // Not even closing gracefully: a new request is still taken.
    let resp = within(
        "the response",
        client.send_request(build(gw.addr, "GET", &share, &[], "")),
    )
    .await
    .expect("a request beside the open stream");
    assert_eq!(read_reply(resp).await.status, StatusCode::OK);
    next_event(&events, &mut body, &mut seen, "two").await;
    drop(events);
    let rest = within("the end of the stream", body.collect())
        .await
        .expect("stream end");
    assert!(rest.to_bytes().is_empty());

    // Now idle: the gateway closes it.
    let ended = within("the idle HTTP/2 connection to be closed", conn)
        .await
        .expect("connection task");
    assert!(ended.is_ok(), "closed gracefully: {ended:?}");
    assert_eq!(up.take().len(), 3);
}

/// A client that asks for a stream and then reads nothing is let go after
/// `limits.send_timeout` without progress: the gateway closes its
/// connection and drops the upstream response feeding it (which the
/// upstream sees as its body being dropped), instead of holding both for
/// as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_let_go() {
    let up = FakeUpstream::start().await;
    let events = up.sse("/api/v1/stream");
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nsend_timeout = \"1s\"\n".to_owned();
    let gw = setup.start().await;
    let mut client = connect(INSIDE, gw.addr).await;
    client
        .write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: gateway.corp.example\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("write the request");
    // More than every buffer between the upstream and the client can hold
    // (socket buffers on both sides, hyper's and the gateway's), so the
    // gateway's writes to the client must wait.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let total = 1024;
    for _ in 0..total {
        if events.send(chunk.clone()).is_err() {
            break;
        }
    }
    within(
        "the gateway to give up on the client and drop the stream",
        events.closed(),
    )
    .await;
    // Whatever the client reads now ends before the stream would have.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    within("the closed connection to end", async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(
        got < total * chunk.len(),
        "the client still got the whole stream ({got} bytes)"
    );
    up.only("the stream request");
}

/// `upstream.response_timeout` counts from the last request-body bytes the
/// upstream took, so an upload that keeps moving is never cut for taking
/// longer in all; an upstream silent after the whole body is still a 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_upload_that_keeps_moving_is_not_a_gateway_timeout() {
    let up = FakeUpstream::start().await;
    up.on("/api/v1/hang", Behaviour::Hang);
    let mut setup = Setup::new(&up);
    setup.response_timeout = "2s";
    let gw = setup.start().await;
    let chunk = "x".repeat(1024);
    let chunks = 16;
    for (path, answer) in [("/api/v1/datasets/upload", 200), ("/api/v1/hang", 504)] {
        let (mut rd, mut wr) = connect(INSIDE, gw.addr).await.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gateway.corp.example\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            chunk.len() * chunks
        );
        wr.write_all(head.as_bytes()).await.expect("write the head");
        for _ in 0..chunks {
            // Pacing the upload (16 chunks over about 4 s, twice the
            // response timeout), not waiting for readiness.
            tokio::time::sleep(Duration::from_millis(250)).await;
            wr.write_all(chunk.as_bytes()).await.expect("write a chunk");
        }
        let mut answer_bytes = Vec::new();
        within("the upload's answer", rd.read_to_end(&mut answer_bytes))
            .await
            .expect("read the answer");
        let text = String::from_utf8_lossy(&answer_bytes);
        assert_eq!(raw_status(&text), answer, "{path}: {text:?}");
        let r = up.only(path);
        assert_eq!(r.body.len(), chunk.len() * chunks, "{path}: the whole body");
    }
}

/// A TLS upstream on `127.0.0.1:0` serving a certificate for `names`: it
/// answers every request with the `Host` it received and tells, per
/// handshake, the server name (SNI) the client asked for (`None`: a
/// handshake that failed).
async fn tls_upstream(
    names: &[&str],
) -> (
    std::net::SocketAddr,
    tempfile::TempDir,
    tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
) {
    let issued = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .expect("generate a certificate");
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("ca.pem"), issued.cert.pem()).expect("write the CA");
    let key = rustls::pki_types::PrivateKeyDer::try_from(issued.signing_key.serialize_der())
        .expect("the key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![issued.cert.der().clone()], key)
        .expect("the upstream's TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the TLS upstream");
    let addr = listener.local_addr().expect("its address");
    let (seen, handshakes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    let _ = seen.send(None);
                    return;
                };
                let sni = stream.get_ref().1.server_name().map(str::to_owned);
                let _ = seen.send(Some(sni.unwrap_or_default()));
                let answer =
                    hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                        let host = req.headers().get("host").cloned();
                        let body = format!(
                            "host={}",
                            host.map(|h| h.to_str().unwrap_or("?").to_owned())
                                .unwrap_or_default()
                        );
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), answer)
                    .await;
            });
        }
    });
    (addr, dir, handshakes)
}

/// The test policy in front of `https://localhost:PORT`, trusting the CA
/// [`tls_upstream`] wrote.
fn https_upstream_config(addr: std::net::SocketAddr, dir: &tempfile::TempDir) -> String {
    let ca = dir.path().join("ca.pem");
    Setup::with_url(format!("https://localhost:{}", addr.port()))
        .toml()
        .replacen(
            "connect_timeout",
            &format!("ca_file = {ca:?}\nconnect_timeout"),
            1,
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_under_its_configured_name() {
    let (addr, dir, mut handshakes) = tls_upstream(&["localhost"]).await;
    let gw = TestGateway::start(&https_upstream_config(addr, &dir)).await;
    for round in 0..3 {
        let reply = request(
            INSIDE,
            gw.addr,
            "GET",
            &fill("/api/v1/public/{t}/run"),
            &[],
            "",
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "round {round}: {}",
            reply.summary()
        );
        assert_eq!(
            reply.text(),
            format!("host=localhost:{}", addr.port()),
            "round {round}"
        );
    }
    let sni = within("the upstream's handshake", handshakes.recv()).await;
    assert_eq!(
        sni,
        Some(Some("localhost".to_owned())),
        "SNI is the upstream's configured name"
    );
    assert!(
        handshakes.try_recv().is_err(),
        "one pooled connection served all three reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_whose_certificate_names_another_host_is_refused() {
    let (addr, dir, mut handshakes) = tls_upstream(&["other.example"]).await;
    let gw = TestGateway::start(&https_upstream_config(addr, &dir)).await;
    let reply = request(
        INSIDE,
        gw.addr,
        "GET",
        &fill("/api/v1/public/{t}/run"),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.summary());
    let handshake = within("the upstream's handshake", handshakes.recv()).await;
    assert_eq!(handshake, Some(None), "the gateway broke off the handshake");
}
