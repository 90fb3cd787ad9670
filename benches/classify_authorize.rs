//! Per-request cost of the pure decision stages, without JWT: what
//! `proxy::pipeline` runs before it forwards anything.
//!
//! - `classify`: `RouteTable::classify` alone;
//! - `decide`: classify + `policy::network::client_ip` + `policy::authorize`,
//!   the part the target (≤ 1 µs per request) is about;
//!
//! on realistic LangSmith requests (a browser opening a share page, the SDK's
//! POST read on the public API, a management call from inside, an ordinary
//! app route, an outsider refused, an encoded path that takes the loose
//! readings), with the policy built by `Config::from_toml`, the way the
//! gateway loads it.
//!
//!     cargo bench --bench classify_authorize

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sharegate::config::Config;
use sharegate::identity::IdentityOutcome;
use sharegate::policy::{self, network};

const POLICY: &str = r#"
[server]
listen = ["127.0.0.1:0"]

[upstream]
url = "http://127.0.0.1:8081"

[networks]
corp = ["10.0.0.0/8", "172.16.0.0/12", "fd00::/8", "127.0.0.1/32"]
vpn = ["100.64.0.0/10"]

[client_ip]
trusted_proxies = ["127.0.0.4/32", "10.255.0.0/16"]

[share]
profile = "langsmith"
allow_from = ["corp", "vpn"]
manage_from = ["corp"]
require = "network"
revoked_tokens = ["0f5e2b8c-0000-4000-8000-000000000000"]

[[routes]]
name = "grafana-public-dashboards"
paths = ["/public-dashboards/{token}", "/api/public/dashboards/{token}/**"]
methods = ["GET", "HEAD"]
allow_from = ["corp"]

[default]
allow_from = "any"

[rewrite]
from = ["https://smith.example.com"]
to = "https://langsmith.corp.example"

[limits]
share_rate = "off"

[admin]
listen = "off"

[reload]
watch = false
"#;

const TOKEN: &str = "6a3c9f1e-2b7d-4e58-9c41-8f0d2a6b5e17";

/// What a browser sends when it opens a share page.
fn browser_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "langsmith.corp.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        (
            "cookie",
            "ajs_anonymous_id=5d4c3b2a; _ga=GA1.1.123456789.1700000000",
        ),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("upgrade-insecure-requests", "1"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

/// What the LangSmith SDK sends, placeholder key included.
fn sdk_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "langsmith.corp.example"),
        ("user-agent", "langsmith-py/0.3.45"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("content-type", "application/json"),
        ("content-length", "112"),
        ("x-api-key", "lsv2_pt_placeholder"),
        ("x-tenant-id", "00000000-0000-0000-0000-000000000000"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

struct Case {
    name: &'static str,
    method: Method,
    target: String,
    peer: IpAddr,
    headers: HeaderMap,
    allowed: bool,
}

fn cases() -> Vec<Case> {
    let inside: IpAddr = "10.1.2.3".parse().unwrap_or(IpAddr::from([10, 1, 2, 3]));
    let outside: IpAddr = "203.0.113.9"
        .parse()
        .unwrap_or(IpAddr::from([203, 0, 113, 9]));
    let lb: IpAddr = "10.255.0.7"
        .parse()
        .unwrap_or(IpAddr::from([10, 255, 0, 7]));
    let mut behind_lb = browser_headers();
    behind_lb.insert(
        HeaderName::from_static("x-forwarded-for"),
        HeaderValue::from_static("198.51.100.7, 10.1.2.3"),
    );
    vec![
        Case {
            name: "share_page_get",
            method: Method::GET,
            target: format!("/public/{TOKEN}/r"),
            peer: inside,
            headers: browser_headers(),
            allowed: true,
        },
        Case {
            name: "public_api_post_read",
            method: Method::POST,
            target: format!("/api/v1/public/{TOKEN}/runs/query"),
            peer: inside,
            headers: sdk_headers(),
            allowed: true,
        },
        Case {
            name: "public_api_get_query",
            method: Method::GET,
            target: format!(
                "/api/v1/public/{TOKEN}/runs/{TOKEN}?exclude_s3_stored_attributes=true"
            ),
            peer: inside,
            headers: sdk_headers(),
            allowed: true,
        },
        Case {
            name: "manage_delete",
            method: Method::DELETE,
            target: format!("/api/v1/runs/{TOKEN}/share"),
            peer: inside,
            headers: sdk_headers(),
            allowed: true,
        },
        Case {
            name: "other_get",
            method: Method::GET,
            target: "/api/v1/sessions?limit=10&offset=0&sort_by=last_run_start_time".to_owned(),
            peer: outside,
            headers: sdk_headers(),
            allowed: true,
        },
        Case {
            name: "share_page_behind_lb_xff",
            method: Method::GET,
            target: format!("/public/{TOKEN}/r"),
            peer: lb,
            headers: behind_lb,
            allowed: true,
        },
        Case {
            name: "share_page_outsider_refused",
            method: Method::GET,
            target: format!("/public/{TOKEN}/r"),
            peer: outside,
            headers: browser_headers(),
            allowed: false,
        },
        Case {
            name: "other_encoded_loose",
            method: Method::GET,
            target: "/assets/some%2Efile/index-4f3a.js".to_owned(),
            peer: outside,
            headers: browser_headers(),
            allowed: true,
        },
    ]
}

fn bench(c: &mut Criterion) {
    let cfg = match Config::from_toml(POLICY, Path::new(".")) {
        Ok(cfg) => cfg,
        Err(e) => panic!("the bench policy is invalid: {e}"),
    };
    let absent = IdentityOutcome::Absent;
    let cases = cases();

    // The outcomes are part of the bench: a fast wrong decision is no result.
    for case in &cases {
        let allowed = cfg
            .routes
            .classify(&case.method, &case.target)
            .ok()
            .and_then(|route| {
                let client = network::client_ip(
                    case.peer,
                    &case.headers,
                    &cfg.policy.trusted_proxies,
                    cfg.policy.forwarded_header,
                )
                .ok()?;
                policy::authorize(
                    &cfg.policy,
                    &route,
                    &case.method,
                    &case.headers,
                    client,
                    &absent,
                )
                .ok()
            })
            .is_some();
        assert_eq!(allowed, case.allowed, "{}: unexpected decision", case.name);
    }

    let mut group = c.benchmark_group("classify");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for case in &cases {
        group.bench_function(case.name, |b| {
            b.iter(|| {
                black_box(
                    cfg.routes
                        .classify(black_box(&case.method), black_box(&case.target)),
                )
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decide");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for case in &cases {
        group.bench_function(case.name, |b| {
            b.iter(|| {
                let route = cfg
                    .routes
                    .classify(black_box(&case.method), black_box(&case.target));
                let Ok(route) = route else {
                    return black_box(false);
                };
                let Ok(client) = network::client_ip(
                    black_box(case.peer),
                    black_box(&case.headers),
                    &cfg.policy.trusted_proxies,
                    cfg.policy.forwarded_header,
                ) else {
                    return black_box(false);
                };
                let decision = policy::authorize(
                    &cfg.policy,
                    &route,
                    &case.method,
                    &case.headers,
                    client,
                    &absent,
                );
                black_box(decision.is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
