//! Path confusion: the request targets with which proxies in this field
//! have checked one path and forwarded another. Each must be refused before
//! the upstream sees anything, and the harmless look-alikes must pass with
//! the upstream seeing exactly what was checked.
//!
//! Most tricks are sent from outside, aimed at a route an outsider may not
//! reach (share management or a share read): a gateway that normalized the
//! path differently from the upstream would answer 200 here.

mod common;

use common::*;
use http::StatusCode;

/// Ambiguous targets: (from, method, target). Each must be answered `400`
/// with the "ambiguous path" detail and never forwarded.
fn ambiguous() -> Vec<(std::net::IpAddr, &'static str, String)> {
    let cases: &[(&str, &str)] = &[
        // dot segments, plain and encoded, any case
        ("PUT", "/public/{t}/r/../../../api/v1/runs/{id}/share"),
        ("PUT", "/api/v1/public/{t}/../../runs/{id}/share"),
        ("PUT", "/api/v1/runs/{id}/./share"),
        ("PUT", "/api/v1/runs/x/%2e%2e/{id}/share"),
        ("PUT", "/api/v1/runs/x/%2E%2E/{id}/share"),
        ("PUT", "/api/v1/runs/x/.%2e/{id}/share"),
        ("PUT", "/api/v1/runs/{id}/%2e/share"),
        (
            "GET",
            "/api/v1/public/{t}/%2e%2e/%2e%2e/workspaces/current/shared",
        ),
        // encoded and backward slashes
        ("PUT", "/api/v1/runs%2F{id}%2Fshare"),
        ("PUT", "/api/v1/runs/{id}%2fshare"),
        (
            "GET",
            "/api/v1/public/{t}%2F..%2F..%2Fworkspaces%2Fcurrent%2Fshared",
        ),
        ("PUT", "/api/v1/runs/{id}%5Cshare"),
        ("PUT", "/api/v1/runs/{id}%5cshare"),
        ("PUT", "/api/v1/runs\\{id}\\share"),
        (
            "GET",
            "/api/v1/public/{t}\\..\\..\\workspaces\\current\\shared",
        ),
        // empty segments
        ("PUT", "//api/v1/runs/{id}/share"),
        ("PUT", "/api/v1//runs/{id}/share"),
        ("PUT", "/api/v1/runs/{id}//share"),
        ("GET", "//public/{t}/r"),
        // path parameters
        ("PUT", "/api/v1/runs/{id}/share;x=1"),
        ("PUT", "/api/v1/runs;x=1/{id}/share"),
        ("GET", "/public/{t};/r"),
        ("GET", "/api/v1/public/{t}/run;jsessionid=1"),
        // NUL
        ("GET", "/api/v1/public/{t}/run%00"),
        ("PUT", "/api/v1/runs/{id}/share%00.json"),
        // double encoding
        ("PUT", "/api/v1/runs/x/%252e%252e/{id}/share"),
        (
            "GET",
            "/api/v1/public/{t}/%252e%252e/%252e%252e/workspaces/current/shared",
        ),
        ("PUT", "/api/v1/runs%252F{id}%252Fshare"),
        // A full-width dot (NFKC's `.`) that a `..` removes as an ordinary
        // segment, leaving a share page (found by the classify fuzzer).
        ("GET", "/public%2F%ef%bc%8e/..\\{t}"),
        ("GET", "/public%2F%EF%BC%8E/../{t}/r"),
        // An `api` segment below the root: LangSmith's frontend routes
        // `/api/` anywhere in a path to its API (and `/x/api/X` to
        // `/api/v1/X`).
        ("GET", "/x/api/public/{t}/run"),
        ("GET", "/assets/api/v1/public/{t}/run"),
        ("PUT", "/x/api/runs/{id}/share"),
        ("GET", "/public/{t}/api/workspaces/current/shared"),
        ("GET", "/x/%61pi/workspaces/current/shared"),
    ];
    let mut out: Vec<_> = cases.iter().map(|(m, t)| (OUTSIDE, *m, fill(t))).collect();
    // From inside, a write smuggled onto a read route by a dot segment.
    out.push((INSIDE, "DELETE", fill("/api/v1/public/{t}/runs/query/..")));
    out.push((
        INSIDE,
        "POST",
        fill("/api/v1/public/{t}/runs/query/%2e%2e/%2e%2e/delete"),
    ));
    out.push((
        INSIDE,
        "POST",
        fill("/api/v1/public/{t}/runs/query;/../../../runs/{id}"),
    ));
    // On any route, even one open to everyone (from inside and outside):
    // a path that starts like a URL of another host, which an upstream
    // echoing the path into a redirect would turn into an open redirect
    // (`Location: //evil...`), and dot segments next to empty ones.
    for target in [
        "//evil.example/assets/app.js",
        "/\\evil.example/",
        "/%2Fevil.example/login",
        "/%5cevil.example/",
        "/%252F%252Fevil.example/",
        // Dot segments next to empty ones: no single reading, so refused
        // even on a route open to everyone.
        "/assets//../app.js",
        "/assets/x//../../api/v1/public/datasets/sessions-bulk",
    ] {
        out.push((INSIDE, "GET", target.to_owned()));
        out.push((OUTSIDE, "GET", target.to_owned()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_refused_before_the_upstream() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let mut bad = Vec::new();
    for (from, method, target) in ambiguous() {
        let reply = request(from, gw.addr, method, &target, &[], "").await;
        let got = up.take();
        if reply.status != StatusCode::BAD_REQUEST {
            bad.push(format!(
                "{method} {target} from {from}: expected 400, got {}",
                reply.summary()
            ));
        } else if detail(&reply) != AMBIGUOUS {
            bad.push(format!(
                "{method} {target} from {from}: 400 body {}",
                reply.text()
            ));
        }
        if !got.is_empty() {
            bad.push(format!(
                "{method} {target} from {from}: REACHED THE UPSTREAM as {:?}",
                got.iter()
                    .map(|r| format!("{} {}", r.method, r.target))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_letters_never_launder_a_protected_route() {
    // Percent-encoded unreserved characters decode to a protected route. A
    // gateway may decode them and refuse by class (403) or reject them as
    // ambiguous (400); it must never forward them.
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let cases = [
        ("PUT", "/api/v1/runs/{id}/%73hare"),
        ("PUT", "/api/v1/%72uns/{id}/share"),
        ("PUT", "/%61pi/v1/runs/{id}/share"),
        ("GET", "/api/v1/workspaces/current/%73hared"),
        ("GET", "/%70ublic/{t}/r"),
        ("GET", "/api/v1/%70ublic/{t}/run"),
    ];
    let mut bad = Vec::new();
    for (method, route) in cases {
        let target = fill(route);
        let reply = request(OUTSIDE, gw.addr, method, &target, &[], "").await;
        let got = up.take();
        if !matches!(
            reply.status,
            StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN
        ) {
            bad.push(format!(
                "{method} {route}: expected 400 or 403, got {}",
                reply.summary()
            ));
        }
        if !got.is_empty() {
            bad.push(format!(
                "{method} {route}: REACHED THE UPSTREAM from outside"
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_tricks_and_old_names_are_still_protected_routes() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let cases = [
        ("PUT", "/API/V1/RUNS/{id}/SHARE", MANAGE_OUTSIDE),
        ("PUT", "/Api/V1/Runs/{id}/Share", MANAGE_OUTSIDE),
        ("GET", "/api/v1/WORKSPACES/current/shared", MANAGE_OUTSIDE),
        ("POST", "/API/V2/THREADS/{id}/SHARE", MANAGE_OUTSIDE),
        ("PATCH", "/API/V1/ORGS/CURRENT/INFO", MANAGE_OUTSIDE),
        ("GET", "/PUBLIC/{t}/R", SHARE_OUTSIDE),
        ("GET", "/API/V1/PUBLIC/{t}/RUN", SHARE_OUTSIDE),
        // LangSmith's deprecated `/api/X` for `/api/v1/X`, which its
        // frontend still serves.
        ("PUT", "/api/runs/{id}/share", MANAGE_OUTSIDE),
        ("DELETE", "/Api/Datasets/{id}/share", MANAGE_OUTSIDE),
        ("GET", "/api/workspaces/current/shared", MANAGE_OUTSIDE),
        ("PATCH", "/api/orgs/current/info", MANAGE_OUTSIDE),
        (
            "GET",
            "/api/public/datasets/sessions-bulk?share_tokens={t}",
            SHARE_OUTSIDE,
        ),
    ];
    let mut bad = Vec::new();
    for (method, route, expected) in cases {
        let target = fill(route);
        let reply = request(OUTSIDE, gw.addr, method, &target, &[], "{}").await;
        let got = up.take();
        if reply.status != StatusCode::FORBIDDEN || detail(&reply) != expected {
            bad.push(format!(
                "{method} {route} from outside: expected 403 {expected:?}, got {}",
                reply.summary()
            ));
        }
        if !got.is_empty() {
            bad.push(format!(
                "{method} {route}: REACHED THE UPSTREAM from outside"
            ));
        }
        // From inside it is the same route, and allowed (it is a read, or
        // management from the management network).
        let reply = request(INSIDE, gw.addr, method, &target, &[], "{}").await;
        let got = up.take();
        let allowed = method == "GET" || expected == MANAGE_OUTSIDE;
        if allowed {
            match got.as_slice() {
                [r] if reply.status == StatusCode::OK
                    && r.method.as_str() == method
                    && r.target.eq_ignore_ascii_case(&target) => {}
                _ => bad.push(format!(
                    "{method} {route} from inside: got {}, upstream saw {:?}",
                    reply.summary(),
                    got.iter()
                        .map(|r| format!("{} {}", r.method, r.target))
                        .collect::<Vec<_>>()
                )),
            }
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_string_is_not_part_of_the_match() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;

    // A protected path inside the query of a harmless route: an ordinary
    // route, open to anyone, forwarded exactly.
    for target in [
        fill("/api/v1/sessions?next=/api/v1/runs/{id}/share"),
        fill("/api/v1/sessions?x=/public/{t}/r&y=..%2F..%2Fshare"),
        fill("/login?redirect=%2Fapi%2Fv1%2Fworkspaces%2Fcurrent%2Fshared"),
    ] {
        let reply = request(OUTSIDE, gw.addr, "GET", &target, &[], "").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{target}: {}",
            reply.summary()
        );
        let r = up.only(&target);
        assert_eq!(
            r.target, target,
            "the upstream must see the query unchanged"
        );
    }

    // A harmless-looking query does not launder a protected path.
    for (method, target) in [
        ("PUT", fill("/api/v1/runs/{id}/share?next=/api/v1/sessions")),
        ("PUT", fill("/api/v1/runs/{id}/share?")),
        ("GET", fill("/public/{t}/r?x=/login")),
    ] {
        let reply = request(OUTSIDE, gw.addr, method, &target, &[], "").await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {target}: {}",
            reply.summary()
        );
        up.assert_silent(&target);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_on_the_wire_never_reaches_the_upstream() {
    // Clients never send `#...`, but a hand-written request can; whatever the
    // gateway makes of it, the protected route stays protected.
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    for target in [
        fill("/api/v1/runs/{id}/share#/../../sessions"),
        fill("/api/v1/sessions/../runs/{id}/share#x"),
    ] {
        let raw = format!(
            "PUT {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            gw.addr
        );
        let answer = raw_request(OUTSIDE, gw.addr, &raw).await;
        let status = raw_status(&answer);
        assert!(
            (400..500).contains(&status),
            "{target}: expected a 4xx refusal, got {answer:?}"
        );
        up.assert_silent(&target);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_path_keeps_its_routes_protected_under_every_trick() {
    // LangSmith under a sub-path: the profile's routes move below
    // `share.base_path`, and the tricks that launder a route must not work
    // on the prefix either.
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.share_extra = "base_path = \"/langsmith\"".to_owned();
    let gw = setup.start().await;
    let cases = [
        ("GET", "/langsmith/api/v1/public/{t}/run"),
        ("GET", "/langsmith/public/{t}/r"),
        ("PUT", "/langsmith/api/v1/runs/{id}/share"),
        ("GET", "/LANGSMITH/api/v1/public/{t}/run"),
        ("GET", "/LangSmith/public/{t}/r"),
        ("GET", "/%6Cangsmith/api/v1/public/{t}/run"),
        ("GET", "/langsmith//api/v1/public/{t}/run"),
        ("GET", "//langsmith/api/v1/public/{t}/run"),
        ("GET", "/langsmith/./api/v1/public/{t}/run"),
        ("GET", "/x/../langsmith/api/v1/public/{t}/run"),
        ("GET", "/langsmith;x=1/api/v1/public/{t}/run"),
        ("GET", "/langsmith%2Fapi/v1/public/{t}/run"),
        ("GET", "/langsmith%2fpublic/{t}/r"),
        ("GET", "/langsmith\\api\\v1\\public\\{t}\\run"),
        ("GET", "/langsmith/api/v1/public/{t}/run%00"),
        ("PUT", "/langsmith/api/runs/{id}/share"),
    ];
    let mut bad = Vec::new();
    for (method, route) in cases {
        let target = fill(route);
        let reply = request(OUTSIDE, gw.addr, method, &target, &[], "").await;
        if !matches!(
            reply.status,
            StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN
        ) {
            bad.push(format!(
                "{method} {route}: expected 400 or 403, got {}",
                reply.summary()
            ));
        }
        if !up.take().is_empty() {
            bad.push(format!(
                "{method} {route}: REACHED THE UPSTREAM from outside"
            ));
        }
    }
    // From inside, the prefixed read reaches the upstream as it was sent.
    let target = fill("/langsmith/api/v1/public/{t}/run");
    let reply = request(INSIDE, gw.addr, "GET", &target, &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    assert_eq!(up.only("the inside read").target, target);
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}
