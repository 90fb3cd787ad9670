//! Cost of the response header rewrite per response: a typical set of
//! LangSmith response headers that never names the public origin (the
//! common case, which must stay cheap), the same with a `Location` to the
//! public origin, and with the public origin embedded in other values
//! (a login redirect's `next=`, a `Content-Security-Policy`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};
use sharegate::rewrite::{rewrite_response_headers, Origin, RewriteOptions, Rules, UpstreamOrigin};

fn headers(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "2048"),
        ("date", "Tue, 03 Mar 2026 10:12:31 GMT"),
        ("server", "nginx"),
        ("vary", "Accept-Encoding, Origin"),
        ("cache-control", "no-store"),
        ("x-request-id", "9f7c4e2a-1b3d-4c5e-8f6a-7b8c9d0e1f2a"),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("access-control-allow-credentials", "true"),
        ("x-content-type-options", "nosniff"),
    ]
    .iter()
    .chain(extra)
    {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let rules = Arc::new(
        Rules::new(
            vec![Origin::parse("https://smith.langchain.com").unwrap()],
            Origin::parse("https://smith.internal.example").unwrap(),
            RewriteOptions::default(),
        )
        .unwrap(),
    );
    let cases = [
        ("none", headers(&[])),
        (
            "location",
            headers(&[("location", "https://smith.langchain.com/public/abc/r")]),
        ),
        (
            "embedded",
            headers(&[
                (
                    "location",
                    "/login?next=https%3A%2F%2Fsmith.langchain.com%2Fpublic%2Fabc%2Fr",
                ),
                (
                    "content-security-policy",
                    "default-src 'self'; connect-src 'self' https://smith.langchain.com",
                ),
            ]),
        ),
    ];
    // As the gateway calls it: the upstream's origin is always given.
    let upstream: http::Uri = "http://langsmith-frontend:80".parse().unwrap();
    let (scheme, authority) = (upstream.scheme().unwrap(), upstream.authority().unwrap());
    let mut group = c.benchmark_group("response_headers");
    for (name, h) in &cases {
        group.bench_function(*name, |b| {
            b.iter_batched_ref(
                || h.clone(),
                |h| {
                    let up = UpstreamOrigin::new(scheme, authority);
                    black_box(rewrite_response_headers(Some(&rules), Some(up), h))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
