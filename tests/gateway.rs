//! Share routes end to end: who may read them, which methods pass, the
//! method-override tricks, and the owner-side share management routes.
//!
//! Every case asserts on both sides: what the client got, and what reached
//! the fake upstream (a refusal must not reach it at all; an allowed request
//! must arrive with exactly the path and query the client sent). Table
//! cases collect every mismatch before failing, so one run lists them all.

mod common;

use common::*;
use http::StatusCode;

/// Reads on every public class, as the LangSmith SDK and share pages send
/// them: (method, route).
const PUBLIC_READS: &[(&str, &str)] = &[
    ("GET", "/public/{t}/r"),
    ("HEAD", "/public/{t}/r"),
    ("GET", "/public/{t}/d"),
    (
        "GET",
        "/public/{t}/d/compare?selectedSessions={id}&baseline={id}",
    ),
    ("GET", "/api/v1/public/{t}/run"),
    ("GET", "/api/v1/public/{t}/examples?offset=0&limit=10"),
    ("GET", "/api/v2/public/{t}/run"),
    ("GET", "/api/v2/public/threads/{t}/messages"),
    ("GET", "/v2/public/{t}/runs"),
    ("GET", "/api/public/{t}/runs"),
    ("GET", "/api/v1/public/schemas/v1/x.json"),
    ("GET", "/api/v1/public/download?key=attachments-1"),
    (
        "GET",
        "/api/v1/public/datasets/sessions-bulk?share_tokens={t},{t2}",
    ),
    ("GET", "/api/v1/feedback/tokens/{t}"),
    ("OPTIONS", "/api/v1/public/{t}/runs/query"),
];

/// The documented reads that use POST, plus the feedback-token POST (a write
/// by design that the public class admits).
const POST_READS: &[&str] = &[
    "/api/v1/public/{t}/runs/query",
    "/api/v2/public/{t}/runs/query",
    "/api/v1/public/{t}/examples/runs",
    "/api/v1/public/{t}/datasets/runs/query",
    "/api/v1/public/{t}/datasets/runs/stats",
    "/api/v1/public/{t}/datasets/runs/delta",
    "/api/v1/public/{t}/datasets/runs/delta/stream",
    "/v2/public/{t}/runs/v2/query",
    "/api/v1/feedback/tokens/{t}",
];

/// Request headers, as `(name, value)` pairs.
type Headers = &'static [(&'static str, &'static str)];

const GENERATE_QUERY: &str = "/api/v1/public/{t}/datasets/runs/generate-query";

/// Every answer on a share route, forwarded or refused, keeps the page's
/// URL (and its token) from the sites the page loads from or links to, and
/// from indexers, and out of shared caches (refusals are `no-store`).
fn share_headers_set(reply: &Reply) -> bool {
    let cache = reply.header("cache-control");
    reply.header("referrer-policy").as_deref() == Some("same-origin")
        && reply.header("x-robots-tag").as_deref() == Some("noindex, nofollow")
        && (cache.as_deref() == Some("no-store") || cache.is_some_and(|c| c.starts_with("private")))
}

/// An upstream that hands share pages a leaky `Referrer-Policy` and lets
/// caches in front keep them: on share routes the gateway's headers replace
/// those (an image in a shared trace, say one an LLM wrote into its output,
/// would otherwise receive the token in `Referer`; a CDN in front would
/// hand an insider's answer to the next outsider), and share management's
/// answers are private too; on ordinary routes the upstream's headers pass
/// untouched; and with `share.referrer_policy = "off"`, `share.noindex =
/// false` and `share.cache_private = false` the upstream's pass on share
/// routes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_answers_keep_their_url_to_themselves() {
    let up = FakeUpstream::start().await;
    let leaky = || Behaviour::Respond {
        status: StatusCode::OK,
        headers: vec![
            ("content-type", "text/html"),
            ("referrer-policy", "unsafe-url"),
            ("x-robots-tag", "all"),
            ("cache-control", "public, max-age=600, s-maxage=86400"),
            ("cdn-cache-control", "max-age=86400"),
            ("surrogate-control", "max-age=86400"),
        ],
        body: "<img src=\"https://images.example/x.png\">",
    };
    let left_alone = |r: &Reply| {
        r.header("referrer-policy").as_deref() == Some("unsafe-url")
            && r.header("x-robots-tag").as_deref() == Some("all")
            && r.header("cache-control").as_deref() == Some("public, max-age=600, s-maxage=86400")
            && r.header("cdn-cache-control").is_some()
            && r.header("surrogate-control").is_some()
    };
    let share = fill("/public/{t}/r");
    let listing = "/api/v1/workspaces/current/shared";
    for path in [share.as_str(), listing, "/api/v1/info"] {
        up.on(path, leaky());
    }
    let mut setup = Setup::new(&up);
    let gw = setup.start().await;
    let r = request(INSIDE, gw.addr, "GET", &share, &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(share_headers_set(&r), "{}", r.summary());
    assert_eq!(r.headers.get_all("referrer-policy").iter().count(), 1);
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("private, max-age=600")
    );
    assert_eq!(r.header("cdn-cache-control"), None);
    assert_eq!(r.header("surrogate-control"), None);
    up.only("the share page");
    let r = request(INSIDE, gw.addr, "GET", listing, &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("private, max-age=600")
    );
    assert_eq!(r.header("cdn-cache-control"), None);
    assert_eq!(r.header("surrogate-control"), None);
    assert_eq!(r.header("referrer-policy").as_deref(), Some("unsafe-url"));
    up.only("the list of shared entities");
    let r = request(INSIDE, gw.addr, "GET", "/api/v1/info", &[], "").await;
    assert!(left_alone(&r), "{}", r.summary());
    up.only("an ordinary route");

    setup.share_extra =
        "referrer_policy = \"off\"\nnoindex = false\ncache_private = false\n".to_owned();
    let gw = setup.start().await;
    for path in [share.as_str(), listing] {
        let r = request(INSIDE, gw.addr, "GET", path, &[], "").await;
        assert!(left_alone(&r), "{path}: {}", r.summary());
        up.only("headers left alone");
    }
    let r = request(OUTSIDE, gw.addr, "GET", &share, &[], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.header("referrer-policy"), None);
    assert_eq!(r.header("x-robots-tag"), None);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
}

/// A page on the internet, opened by a browser inside the network, that
/// fetches a leaked share's API (its requests come from inside, so the
/// network check passes) or acts on share management with the user's
/// session: the browser marks such requests `Sec-Fetch-Site: cross-site`,
/// and unless they open a page they are refused before the upstream. The
/// same share opened by following a link from another site, the share
/// page's own requests, and clients that are not browsers pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_from_a_browser_inside_are_refused() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let api = fill("/api/v1/public/{t}/run");
    let page = fill("/public/{t}/r");
    let manage = fill("/api/v1/runs/{id}/share");
    let fetch = |site: &'static str, mode: &'static str, dest: &'static str| {
        vec![
            ("sec-fetch-site", site),
            ("sec-fetch-mode", mode),
            ("sec-fetch-dest", dest),
        ]
    };
    let refused = [
        (
            "a cross-site fetch of the share API",
            "GET",
            &api,
            fetch("cross-site", "cors", "empty"),
        ),
        (
            "a cross-site <script> of the share API",
            "GET",
            &api,
            fetch("cross-site", "no-cors", "script"),
        ),
        (
            "a CORS preflight",
            "OPTIONS",
            &api,
            fetch("cross-site", "cors", "empty"),
        ),
        (
            "a cross-site share creation",
            "PUT",
            &manage,
            fetch("cross-site", "cors", "empty"),
        ),
        (
            "the share page as an <object>",
            "GET",
            &page,
            fetch("cross-site", "navigate", "object"),
        ),
    ];
    for (what, method, path, headers) in &refused {
        let r = request(INSIDE, gw.addr, method, path, headers, "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.summary());
        if *method != "HEAD" {
            assert_eq!(
                detail(&r),
                "Cross-site requests to shared links are refused: open the link itself.",
                "{what}"
            );
        }
        up.assert_silent(what);
    }
    let passes = [
        (
            "following a link from another site",
            "GET",
            &page,
            fetch("cross-site", "navigate", "document"),
        ),
        (
            "the share page's own fetch",
            "GET",
            &api,
            fetch("same-origin", "cors", "empty"),
        ),
        (
            "a typed or bookmarked URL",
            "GET",
            &page,
            fetch("none", "navigate", "document"),
        ),
        ("a client that is not a browser", "GET", &api, Vec::new()),
    ];
    for (what, method, path, headers) in &passes {
        let r = request(INSIDE, gw.addr, method, path, headers, "").await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.summary());
        up.only(what);
    }
}

/// Browsers from before Fetch Metadata send no `Sec-Fetch-Site` but do
/// send `Origin` on a page's cross-origin requests and on every non-`GET`:
/// with `server.hosts` set, an `Origin` that is not the gateway's own (or
/// `null`) on a share or management route is refused like a cross-site
/// request, and the gateway's own passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_without_fetch_metadata_or_from_a_sibling_host_are_refused_by_origin() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.server_extra = "hosts = [\"127.0.0.1\"]".to_owned();
    let gw = setup.start().await;
    let api = fill("/api/v1/public/{t}/run");
    let query = fill("/api/v1/public/{t}/runs/query");
    let manage = fill("/api/v1/runs/{id}/share");
    let own = format!("http://127.0.0.1:{}", gw.addr.port());
    let refused = [
        (
            "a fetch of the share API from another site",
            "GET",
            &api,
            "http://attacker.example",
        ),
        (
            "a form post of a share query from another site",
            "POST",
            &query,
            "https://attacker.example",
        ),
        (
            "a share query from a sandboxed frame",
            "POST",
            &query,
            "null",
        ),
        (
            "a share creation from another site",
            "PUT",
            &manage,
            "http://attacker.example",
        ),
        (
            "a lookalike of the gateway's name",
            "POST",
            &query,
            "http://127.0.0.1.attacker.example",
        ),
    ];
    // The same from a browser that marks the request `same-site` (another
    // host under the same registrable domain, which may serve anyone's
    // pages): its `Origin` must be one of `server.hosts` too.
    let same_site = [
        ("sec-fetch-site", "same-site"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
    ];
    for fetch_metadata in [&[][..], &same_site[..]] {
        for (what, method, path, origin) in refused {
            let mut headers = vec![("origin", origin)];
            headers.extend_from_slice(fetch_metadata);
            let r = request(INSIDE, gw.addr, method, path, &headers, "{}").await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.summary());
            assert_eq!(
                detail(&r),
                "Cross-site requests to shared links are refused: open the link itself.",
                "{what}"
            );
            up.assert_silent(what);
        }
        let passes = [
            ("the share page's own query", "POST", &query, own.as_str()),
            ("the owner's share creation", "PUT", &manage, own.as_str()),
        ];
        for (what, method, path, origin) in passes {
            let mut headers = vec![("origin", origin)];
            headers.extend_from_slice(fetch_metadata);
            let r = request(INSIDE, gw.addr, method, path, &headers, "{}").await;
            assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.summary());
            up.only(what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_every_public_class_pass_from_inside_unchanged() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let mut bad = Vec::new();
    for (method, route) in PUBLIC_READS {
        let target = fill(route);
        let reply = request(INSIDE, gw.addr, method, &target, &[], "").await;
        let got = up.take();
        if reply.status != StatusCode::OK {
            bad.push(format!("{method} {route}: client got {}", reply.summary()));
        }
        if !share_headers_set(&reply) {
            bad.push(format!(
                "{method} {route}: no share headers: {}",
                reply.summary()
            ));
        }
        match got.as_slice() {
            [r] if r.method.as_str() == *method && r.target == target => {}
            _ => bad.push(format!(
                "{method} {route}: upstream saw {:?}, expected exactly [{method} {target}]",
                got.iter()
                    .map(|r| format!("{} {}", r.method, r.target))
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_every_public_class_refused_from_outside() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let mut bad = Vec::new();
    let mut cases: Vec<(&str, &str)> = PUBLIC_READS.to_vec();
    cases.extend(POST_READS.iter().map(|r| ("POST", *r)));
    for (method, route) in cases {
        let target = fill(route);
        let reply = request(OUTSIDE, gw.addr, method, &target, &[], "").await;
        let got = up.take();
        if reply.status != StatusCode::FORBIDDEN {
            bad.push(format!(
                "{method} {route}: expected 403, got {}",
                reply.summary()
            ));
        } else if method != "HEAD" && detail(&reply) != SHARE_OUTSIDE {
            bad.push(format!("{method} {route}: 403 body {}", reply.text()));
        }
        if !share_headers_set(&reply) {
            bad.push(format!("{method} {route}: refusal without share headers"));
        }
        if !got.is_empty() {
            bad.push(format!(
                "{method} {route}: reached the upstream from outside"
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reads_pass_with_their_body() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let body = r#"{"limit": 5, "filter": "eq(is_root, true)"}"#;
    let mut bad = Vec::new();
    for route in POST_READS {
        let target = fill(route);
        let reply = request(
            INSIDE,
            gw.addr,
            "POST",
            &target,
            &[("content-type", "application/json")],
            body,
        )
        .await;
        let got = up.take();
        if reply.status != StatusCode::OK {
            bad.push(format!("POST {route}: client got {}", reply.summary()));
        }
        match got.as_slice() {
            [r] if r.method == "POST" && r.target == target && r.body == body.as_bytes() => {}
            _ => bad.push(format!(
                "POST {route}: upstream saw {:?}",
                got.iter()
                    .map(|r| format!("{} {} {:?}", r.method, r.target, r.body))
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_query_refused_unless_allowed() {
    let up = FakeUpstream::start().await;
    let target = fill(GENERATE_QUERY);
    let body = r#"{"query": "runs that failed yesterday"}"#;

    let gw = Setup::new(&up).start().await;
    let reply = request(INSIDE, gw.addr, "POST", &target, &[], body).await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        reply.summary()
    );
    let allow = reply.header("allow").expect("a 405 carries Allow");
    assert!(allow.contains("GET"), "Allow: {allow}");
    assert!(
        !allow.contains("POST"),
        "Allow must not offer POST: {allow}"
    );
    up.assert_silent("generate-query with allow_generate_query = false");
    drop(gw);

    let mut setup = Setup::new(&up);
    setup.allow_generate_query = true;
    let gw = setup.start().await;
    let reply = request(INSIDE, gw.addr, "POST", &target, &[], body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("generate-query with allow_generate_query = true");
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("POST", target.as_str())
    );
    assert_eq!(r.body, body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_public_routes_refused_with_allow() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let mut cases: Vec<(&str, &str)> = Vec::new();
    for (method, route) in PUBLIC_READS {
        if *method != "GET" || route.starts_with("/api/v1/feedback/tokens/") {
            continue;
        }
        for write in ["POST", "PUT", "PATCH", "DELETE"] {
            cases.push((write, route));
        }
    }
    for route in POST_READS {
        for write in ["PUT", "PATCH", "DELETE"] {
            cases.push((write, route));
        }
    }
    let mut bad = Vec::new();
    for (method, route) in cases {
        let target = fill(route);
        let reply = request(INSIDE, gw.addr, method, &target, &[], r#"{"name": "x"}"#).await;
        let got = up.take();
        if reply.status != StatusCode::METHOD_NOT_ALLOWED {
            bad.push(format!(
                "{method} {route}: expected 405, got {}",
                reply.summary()
            ));
        } else {
            match reply.header("allow") {
                Some(allow) if allow.contains("GET") && !allow.contains(method) => {}
                other => bad.push(format!("{method} {route}: Allow header {other:?}")),
            }
            if detail(&reply) != VIEW_ONLY {
                bad.push(format!("{method} {route}: 405 body {}", reply.text()));
            }
        }
        if !got.is_empty() {
            bad.push(format!("{method} {route}: the write reached the upstream"));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_overrides_refused_on_share_routes() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let cases: &[(&str, &str, Headers)] = &[
        (
            "GET",
            "/public/{t}/r",
            &[("X-HTTP-Method-Override", "DELETE")],
        ),
        ("GET", "/public/{t}/r", &[("X-HTTP-Method", "DELETE")]),
        ("GET", "/public/{t}/r", &[("X-Method-Override", "DELETE")]),
        (
            "GET",
            "/api/v1/public/{t}/run",
            &[("x-http-method-override", "PATCH")],
        ),
        (
            "POST",
            "/api/v1/public/{t}/runs/query",
            &[("X-HTTP-Method-Override", "DELETE")],
        ),
        ("GET", "/api/v2/public/{t}/run", &[("X-HTTP-Method", "PUT")]),
        (
            "GET",
            "/api/v1/feedback/tokens/{t}",
            &[("X-Method-Override", "DELETE")],
        ),
        ("GET", "/api/v1/public/{t}/run?_method=DELETE", &[]),
        ("GET", "/api/v1/public/{t}/run?limit=1&_method=PUT", &[]),
        ("GET", "/api/v1/public/{t}/run?_METHOD=DELETE", &[]),
        ("GET", "/api/v1/public/{t}/run?_Method=DELETE", &[]),
        ("POST", "/api/v1/public/{t}/runs/query?_method=DELETE", &[]),
        ("GET", "/public/{t}/r?_method=DELETE", &[]),
        (
            "PUT",
            "/api/v1/runs/{id}/share",
            &[("X-HTTP-Method-Override", "DELETE")],
        ),
    ];
    let mut bad = Vec::new();
    for (method, route, headers) in cases {
        let target = fill(route);
        let reply = request(INSIDE, gw.addr, method, &target, headers, "{}").await;
        let got = up.take();
        if reply.status != StatusCode::BAD_REQUEST || detail(&reply) != OVERRIDE {
            bad.push(format!(
                "{method} {route} {headers:?}: expected 400, got {}",
                reply.summary()
            ));
        }
        if !got.is_empty() {
            bad.push(format!(
                "{method} {route} {headers:?}: reached the upstream"
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

/// Rails (Rack::MethodOverride), Laravel and Symfony read the override
/// from a `_method` field of a POST's form body too (Laravel from a JSON
/// body as well): on a route whose policy admits POST as a read, such an
/// upstream would run the body's `DELETE`. Share bodies are read whole
/// before forwarding, so the field is caught there; a body that merely
/// mentions `_method` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_override_in_a_share_requests_body_is_refused() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.extra = "[[routes]]\nname = \"app\"\npaths = [\"/s/{token}/**\"]\n\
                   methods = [\"GET\", \"HEAD\", \"POST\"]\nallow_from = [\"inside\"]\n"
        .to_owned();
    let gw = setup.start().await;
    let form = ("content-type", "application/x-www-form-urlencoded");
    let json = ("content-type", "application/json");
    let query = fill("/api/v1/public/{t}/runs/query");
    for (path, headers, body) in [
        ("/s/abc/items", &[form][..], "_method=DELETE"),
        ("/s/abc/items", &[form][..], "q=1&%5Fmethod=PUT"),
        ("/s/abc/items", &[][..], "_method=DELETE"),
        (
            "/s/abc/items",
            &[("content-type", "multipart/form-data; boundary=X")][..],
            "--X\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--X--\r\n",
        ),
        (query.as_str(), &[form][..], "_method=DELETE"),
        (
            query.as_str(),
            &[json][..],
            r#"{"limit": 1, "_method": "DELETE"}"#,
        ),
    ] {
        let what = format!("POST {path} {headers:?} {body:?}");
        let r = request(INSIDE, gw.addr, "POST", path, headers, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.summary());
        assert_eq!(detail(&r), OVERRIDE, "{what}");
        up.assert_silent(&what);
    }
    for (path, headers, body) in [
        (
            query.as_str(),
            &[json][..],
            r#"{"filter": "eq(name, \"_method\")"}"#,
        ),
        ("/s/abc/items", &[form][..], "q=_method"),
        (
            "/s/abc/items",
            &[("content-type", "text/plain")][..],
            "_method=DELETE",
        ),
    ] {
        let what = format!("POST {path} {headers:?} {body:?}");
        let r = request(INSIDE, gw.addr, "POST", path, headers, body).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.summary());
        assert_eq!(&up.only(&what).body[..], body.as_bytes(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_override_headers_stripped_on_ordinary_routes() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let reply = request(
        OUTSIDE,
        gw.addr,
        "GET",
        "/api/v1/sessions?limit=1",
        &[
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-HTTP-Method", "DELETE"),
            ("X-Method-Override", "DELETE"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.summary());
    let r = up.only("ordinary route with override headers");
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, "/api/v1/sessions?limit=1");
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert_eq!(r.header(h), None, "{h} must not reach the upstream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsider_refusal_is_json_for_api_clients_and_html_for_browsers() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;

    // The SDK sends an API key even to public routes; it proves nothing.
    let reply = request(
        OUTSIDE,
        gw.addr,
        "GET",
        &fill("/api/v1/public/{t}/run"),
        &[
            ("x-api-key", "lsv2_pt_placeholder"),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(reply.json(), serde_json::json!({ "detail": SHARE_OUTSIDE }));
    up.assert_silent("API read from outside");

    let reply = request(
        OUTSIDE,
        gw.addr,
        "GET",
        &fill("/public/{t}/r"),
        &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let ctype = reply.header("content-type").unwrap_or_default();
    assert!(ctype.starts_with("text/html"), "content-type {ctype}");
    let page = reply.text();
    assert!(page.contains("<html"), "{page}");
    assert!(page.contains(SHARE_OUTSIDE), "{page}");
    assert!(page.contains("403"), "{page}");
    assert!(
        !page.contains(TOKEN),
        "the page must not echo the token: {page}"
    );
    up.assert_silent("share page from outside");

    // The same read from inside gets the upstream's answer.
    let reply = request(
        INSIDE,
        gw.addr,
        "GET",
        &fill("/api/v1/public/{t}/run"),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["target"], fill("/api/v1/public/{t}/run"));
    up.only("API read from inside");
}

/// Owner-side share management: (method, route, body).
const MANAGEMENT: &[(&str, &str, &str)] = &[
    ("PUT", "/api/v1/runs/{id}/share", ""),
    ("GET", "/api/v1/runs/{id}/share", ""),
    ("DELETE", "/api/v1/runs/{id}/share", ""),
    ("PUT", "/api/v1/datasets/{id}/share", ""),
    ("DELETE", "/api/v1/datasets/{id}/share", ""),
    ("POST", "/api/v2/runs/{id}/share", ""),
    ("POST", "/api/v2/threads/{id}/share", ""),
    ("DELETE", "/api/v2/threads/{id}/share", ""),
    ("GET", "/api/v1/workspaces/current/shared", ""),
    (
        "DELETE",
        "/api/v1/workspaces/current/shared",
        r#"{"share_tokens": ["{t}"]}"#,
    ),
    (
        "PATCH",
        "/api/v1/orgs/current/info",
        r#"{"public_sharing_disabled": false}"#,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_routes_refused_from_outside() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let mut bad = Vec::new();
    for (method, route, body) in MANAGEMENT {
        let reply = request(OUTSIDE, gw.addr, method, &fill(route), &[], &fill(body)).await;
        let got = up.take();
        if reply.status != StatusCode::FORBIDDEN {
            bad.push(format!(
                "{method} {route}: expected 403, got {}",
                reply.summary()
            ));
        } else if detail(&reply) != MANAGE_OUTSIDE {
            bad.push(format!("{method} {route}: 403 body {}", reply.text()));
        }
        if !got.is_empty() {
            bad.push(format!(
                "{method} {route}: reached the upstream from outside"
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_routes_allowed_from_inside() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let mut bad = Vec::new();
    for (method, route, body) in MANAGEMENT {
        let target = fill(route);
        let body = fill(body);
        let reply = request(INSIDE, gw.addr, method, &target, &[], &body).await;
        let got = up.take();
        if reply.status != StatusCode::OK {
            bad.push(format!("{method} {route}: client got {}", reply.summary()));
        }
        match got.as_slice() {
            [r] if r.method.as_str() == *method
                && r.target == target
                && r.body == body.as_bytes() => {}
            _ => bad.push(format!(
                "{method} {route}: upstream saw {:?}",
                got.iter()
                    .map(|r| format!("{} {}", r.method, r.target))
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_routes_follow_default_allow_from_any() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    for (method, target) in [
        ("GET", "/api/v1/orgs/current/info"),
        ("GET", "/api/v1/sessions?limit=1"),
        ("POST", "/api/v1/runs/batch"),
        ("GET", "/"),
        ("GET", "/projects/p/default"),
    ] {
        let reply = request(OUTSIDE, gw.addr, method, target, &[], "{}").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{method} {target}: {}",
            reply.summary()
        );
        let r = up.only(target);
        assert_eq!((r.method.as_str(), r.target.as_str()), (method, target));
    }
}
