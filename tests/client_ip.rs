//! Who the client is: the TCP peer, or, only when the peer is a trusted
//! proxy, the rightmost untrusted `X-Forwarded-For` entry; and what the
//! upstream is told about it. Also IPv4-mapped peers on a dual-stack
//! listener, and a native IPv6 client.

mod common;

use std::net::SocketAddr;

use common::*;
use http::StatusCode;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    for headers in [
        &[("X-Forwarded-For", "127.0.0.2")][..],
        &[("X-Forwarded-For", "10.9.9.9, 127.0.0.2")][..],
        &[("X-Real-IP", "127.0.0.2")][..],
        &[("Forwarded", "for=127.0.0.2")][..],
        &[("X_Forwarded_For", "127.0.0.2")][..],
    ] {
        let reply = request(OUTSIDE, gw.addr, "GET", &fill("/public/{t}/r"), headers, "").await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "outsider claiming {headers:?}: {}",
            reply.summary()
        );
        up.assert_silent("outsider claiming an inside address");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_is_told_the_real_client_not_the_claimed_one() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let reply = request(
        OUTSIDE,
        gw.addr,
        "GET",
        "/api/v1/sessions",
        &[
            ("X-Forwarded-For", "10.9.9.9"),
            ("X-Forwarded-For", "10.8.8.8"),
            ("X-Real-IP", "10.9.9.9"),
            ("Forwarded", "for=10.9.9.9;proto=https"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Prefix", "/evil"),
            ("X-Forwarded-Port", "1"),
            ("X-Forwarded-Server", "evil.example"),
            ("X-Forwarded-Ssl", "on"),
            ("X-Original-URL", "/api/v1/runs/x/share"),
            ("X-Rewrite-URL", "/api/v1/runs/x/share"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("ordinary route from outside");
    // Only the forwarding headers the gateway sets itself, and no path of
    // the client's choosing beside the one checked.
    for name in [
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert_eq!(r.header_all(name), Vec::<String>::new(), "{name}");
    }
    // Replaced, not appended to.
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["127.0.0.3".to_owned()]
    );
    assert_eq!(r.header_all("x-real-ip"), vec!["127.0.0.3".to_owned()]);
    assert_eq!(r.header_all("forwarded"), Vec::<String>::new());
    assert_eq!(r.header_all("x-forwarded-proto"), vec!["http".to_owned()]);
    assert_eq!(r.header_all("x-forwarded-host"), vec![gw.addr.to_string()]);
    assert_eq!(r.header("host"), Some(up.addr.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_is_believed() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let target = fill("/public/{t}/r");

    let reply = request(
        PROXY,
        gw.addr,
        "GET",
        &target,
        &[("X-Forwarded-For", "127.0.0.2")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("inside client behind the trusted proxy");
    assert_eq!(r.target, target);
    // The proxy's list, extended with the proxy itself.
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["127.0.0.2, 127.0.0.4".to_owned()]
    );
    assert_eq!(r.header("x-real-ip").as_deref(), Some("127.0.0.2"));

    let reply = request(
        PROXY,
        gw.addr,
        "GET",
        &target,
        &[("X-Forwarded-For", "127.0.0.3")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
    up.assert_silent("outside client behind the trusted proxy");

    // RFC 7239 Forwarded is read only when `client_ip.header` names it.
    let forwarded = [("Forwarded", "for=127.0.0.2;proto=https")];
    let reply = request(PROXY, gw.addr, "GET", &target, &forwarded, "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
    up.assert_silent("Forwarded while X-Forwarded-For is the header read");

    // The proxy itself is not inside: with no header, it is the client.
    let reply = request(PROXY, gw.addr, "GET", &target, &[], "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
    up.assert_silent("trusted proxy without forwarding headers");
}

/// A read of an open route sent by the trusted [`PROXY`] with `headers`:
/// served, and what the upstream received.
async fn open_route_through_proxy(
    gw: std::net::SocketAddr,
    up: &FakeUpstream,
    headers: &[(&str, &str)],
    what: &str,
) -> common::Recorded {
    let reply = request(PROXY, gw, "GET", "/api/v1/info", headers, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.summary());
    up.only(what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_chain_is_walked_right_to_left() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let target = fill("/api/v1/public/{t}/run");

    // Leftmost is whatever the client wrote: an outsider claiming to be
    // inside, then the outsider as the first honest hop saw it, then a
    // second trusted proxy.
    for chain in [
        &[("X-Forwarded-For", "127.0.0.2, 127.0.0.3, 127.0.0.5")][..],
        &[
            ("X-Forwarded-For", "127.0.0.2"),
            ("X-Forwarded-For", "127.0.0.3, 127.0.0.5"),
        ][..],
    ] {
        let reply = request(PROXY, gw.addr, "GET", &target, chain, "").await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{chain:?}: {}",
            reply.summary()
        );
        up.assert_silent("spoofed leftmost entry");
    }

    // The insider behind two trusted hops, with junk on the left.
    let reply = request(
        PROXY,
        gw.addr,
        "GET",
        &target,
        &[("X-Forwarded-For", "127.0.0.3, 127.0.0.2, 127.0.0.5")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("insider behind two trusted hops");
    // The chain from the client the walk found, extended by the peer: what
    // the client wrote left of it never reaches an upstream that reads the
    // first entry (Express with `trust proxy`, many hand-written helpers).
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["127.0.0.2, 127.0.0.5, 127.0.0.4".to_owned()]
    );
    assert_eq!(r.header("x-real-ip").as_deref(), Some("127.0.0.2"));

    // An outsider behind the proxy, claiming an inside address, on an open
    // route: the upstream's first entry is the outsider.
    let r = open_route_through_proxy(
        gw.addr,
        &up,
        &[
            ("X-Forwarded-For", "127.0.0.2"),
            ("X-Forwarded-For", "10.9.9.9 , 127.0.0.3:5555, 127.0.0.5"),
        ],
        "outsider behind two trusted hops",
    )
    .await;
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["127.0.0.3, 127.0.0.5, 127.0.0.4".to_owned()]
    );
    assert_eq!(r.header("x-real-ip").as_deref(), Some("127.0.0.3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_address_from_a_trusted_proxy_is_refused() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let reply = request(
        PROXY,
        gw.addr,
        "GET",
        &fill("/public/{t}/r"),
        &[("X-Forwarded-For", "unknown")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.summary());
    assert!(
        !reply.text().contains("unknown"),
        "no detail echoed: {}",
        reply.text()
    );
    up.assert_silent("garbage X-Forwarded-For from a trusted proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_peer_on_a_dual_stack_listener_matches_the_ipv4_network() {
    let up = FakeUpstream::start().await;
    let listener = match TcpListener::bind("[::]:0").await {
        Ok(l) => l,
        Err(e) => panic!("this test needs IPv6 (a dual-stack [::]:0 listener): {e}"),
    };
    let gw = TestGateway::start_on(listener, &Setup::new(&up).toml()).await;
    // The gateway sees 127.0.0.2 as ::ffff:127.0.0.2.
    let target = fill("/public/{t}/r");
    let reply = request(INSIDE, gw.addr, "GET", &target, &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("mapped insider");
    assert_eq!(r.target, target);
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["127.0.0.2".to_owned()]
    );

    let reply = request(OUTSIDE, gw.addr, "GET", &target, &[], "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
    up.assert_silent("mapped outsider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_ipv6_client_matches_an_ipv6_network() {
    let up = FakeUpstream::start().await;
    let listener = match TcpListener::bind("[::1]:0").await {
        Ok(l) => l,
        Err(e) => panic!("this test needs the IPv6 loopback: {e}"),
    };
    let mut setup = Setup::new(&up);
    setup.inside = vec!["127.0.0.2/32", "::1/128"];
    let gw = TestGateway::start_on(listener, &setup.toml()).await;
    assert!(matches!(gw.addr, SocketAddr::V6(_)));
    let target = fill("/api/v1/public/{t}/run");
    let reply = request(V6_LOOPBACK, gw.addr, "GET", &target, &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("IPv6 insider");
    assert_eq!(r.header_all("x-forwarded-for"), vec!["::1".to_owned()]);

    // Without ::1 in the network, the same client is outside.
    let listener = TcpListener::bind("[::1]:0").await.expect("bind [::1]:0");
    let gw = TestGateway::start_on(listener, &Setup::new(&up).toml()).await;
    let reply = request(V6_LOOPBACK, gw.addr, "GET", &target, &[], "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
    up.assert_silent("IPv6 outsider");
}

/// Behind a proxy that tells the client in `Forwarded` only (HAProxy's
/// `option forwarded`, for one), a client's own `X-Forwarded-For` passes
/// through it untouched: with `client_ip.header = "forwarded"` only
/// `Forwarded` is read, so an outsider claiming an inside address there is
/// still outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_sets_only_forwarded_is_read_there_only() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.client_ip_extra = "header = \"forwarded\"".to_owned();
    let gw = setup.start().await;
    let target = fill("/api/v1/public/{t}/run");
    let reply = request(
        PROXY,
        gw.addr,
        "GET",
        &target,
        &[("Forwarded", "for=127.0.0.2;proto=https")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    up.only("an inside client, as the proxy tells it");
    // The outsider wrote X-Forwarded-For; the proxy added Forwarded.
    let reply = request(
        PROXY,
        gw.addr,
        "GET",
        &target,
        &[
            ("X-Forwarded-For", "127.0.0.2"),
            ("Forwarded", "for=127.0.0.3"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
    up.assert_silent("an outsider's own X-Forwarded-For through the proxy");
    // On an open route, the upstream is told the client the gateway found,
    // not the chain the client began.
    let r = open_route_through_proxy(
        gw.addr,
        &up,
        &[
            ("X-Forwarded-For", "127.0.0.2"),
            ("Forwarded", "for=127.0.0.3"),
        ],
        "an open route through the proxy",
    )
    .await;
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["127.0.0.3".to_owned()]
    );
    assert_eq!(r.header_all("x-real-ip"), vec!["127.0.0.3".to_owned()]);
}

/// A proxy that tells the client in `Forwarded` may copy what the client
/// sent into the element it adds (HAProxy's `option forwarded host`,
/// nginx's `host=$host`), quoted as RFC 7239 asks. A `;` or `,` inside that
/// quoted-string separates nothing: an outsider whose `Host` carries
/// `;for=` or `, for=` with an inside address is still the outsider the
/// proxy named. And an element the proxy added without one `for=` (none,
/// or two) tells no client, so the walk stops there with a `400` instead of
/// going on to what the client wrote further left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_elements_are_read_as_rfc_7239_writes_them() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.client_ip_extra = "header = \"forwarded\"".to_owned();
    let gw = setup.start().await;
    let target = fill("/api/v1/public/{t}/run");
    for (value, want) in [
        (
            r#"for=127.0.0.3;host="x.example;for=127.0.0.2""#,
            StatusCode::FORBIDDEN,
        ),
        (
            r#"for=127.0.0.3;host="x.example, for=127.0.0.2""#,
            StatusCode::FORBIDDEN,
        ),
        (
            r#"for=127.0.0.2, for=127.0.0.3;host="x.example;for=127.0.0.2""#,
            StatusCode::FORBIDDEN,
        ),
        (
            "for=127.0.0.2, proto=https;host=x.example",
            StatusCode::BAD_REQUEST,
        ),
        ("for=127.0.0.2, ", StatusCode::BAD_REQUEST),
        ("for=127.0.0.3;for=127.0.0.2", StatusCode::BAD_REQUEST),
    ] {
        let reply = request(PROXY, gw.addr, "GET", &target, &[("Forwarded", value)], "").await;
        assert_eq!(
            reply.status,
            want,
            "Forwarded: {value}: {}",
            reply.summary()
        );
        up.assert_silent(value);
    }
    // Two fields, the proxy's last: the same reading.
    let reply = request(
        PROXY,
        gw.addr,
        "GET",
        &target,
        &[
            ("Forwarded", "for=127.0.0.2"),
            ("Forwarded", r#"for=127.0.0.3;host="a;for=127.0.0.2""#),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
    up.assert_silent("two Forwarded fields");
    // A quoted address with a port, as RFC 7239 §6 writes it, is read.
    let reply = request(
        PROXY,
        gw.addr,
        "GET",
        &target,
        &[(
            "Forwarded",
            r#"for="127.0.0.2:4711";proto=https;host="a;b""#,
        )],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    assert_eq!(
        up.only("a quoted address").header("x-real-ip").as_deref(),
        Some("127.0.0.2")
    );
}

/// The upstream learns the client from the gateway alone. Besides
/// `X-Forwarded-For`, `X-Real-IP` and `Forwarded`, frameworks and
/// "client IP" helpers read a family of other fields (Rack and Rails
/// `Client-IP`, PHP snippets `X-Client-IP`, `X-Cluster-Client-IP`,
/// `X-Forwarded`, `Forwarded-For`, the npm `request-ip` list with the CDN
/// fields): an outsider's own copies would tell such an upstream it is
/// inside. None of them reaches the upstream, in any spelling, from an
/// untrusted peer or a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_client_address_fields_never_reach_the_upstream() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let claimed = [
        ("Client-IP", "127.0.0.2"),
        ("X-Client-IP", "127.0.0.2"),
        ("True-Client-IP", "127.0.0.2"),
        ("X-Cluster-Client-IP", "127.0.0.2"),
        ("CF-Connecting-IP", "127.0.0.2"),
        ("CF-Connecting-IPv6", "::1"),
        ("Cf-Pseudo-IPv4", "127.0.0.2"),
        ("Fastly-Client-IP", "127.0.0.2"),
        ("DO-Connecting-IP", "127.0.0.2"),
        ("X-AppEngine-User-IP", "127.0.0.2"),
        ("X-Forwarded", "for=127.0.0.2"),
        ("Forwarded-For", "127.0.0.2"),
        ("X-Originating-IP", "127.0.0.2"),
        ("X-Remote-IP", "127.0.0.2"),
        ("X-Remote-Addr", "127.0.0.2"),
        ("x-client-ip", "127.0.0.2"),
        ("TRUE-CLIENT-IP", "127.0.0.2"),
    ];
    for from in [OUTSIDE, PROXY] {
        let reply = request(from, gw.addr, "GET", "/api/v1/info", &claimed, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
        let r = up.only("an ordinary route");
        for (name, _) in claimed {
            assert_eq!(
                r.header_all(name),
                Vec::<String>::new(),
                "{name} from {from}"
            );
        }
        let me = from.to_string();
        assert_eq!(r.header_all("x-real-ip"), vec![me.clone()]);
        assert_eq!(r.header_all("x-forwarded-for"), vec![me]);
        // The share route still judges the peer.
        let reply = request(from, gw.addr, "GET", &fill("/public/{t}/r"), &claimed, "").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.summary());
        up.assert_silent("an outsider claiming an inside address in other fields");
    }
}
