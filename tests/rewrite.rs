//! Private share URLs through the real gateway: the public origin
//! `https://smith.example.com` becomes `https://langsmith.corp.example` in
//! bodies (plain, JSON-escaped, percent-encoded; JSON, HTML, event streams;
//! gzip, deflate, br, zstd; URLs split across chunks) and headers (every
//! value: URLs embedded in it, the spellings a browser follows; the
//! upstream's own redirects mapped back, a WebSocket `101`, trailers),
//! and back in request `Origin`/`Referer`;
//! signed URLs, other hosts, look-alikes and types not rewritten stay as
//! they are; a body in a coding the gateway cannot read is refused.

mod common;

use std::io::{Read, Write};

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

const PUBLIC: &str = "https://smith.example.com";
const PRIVATE: &str = "https://langsmith.corp.example";

async fn rewriting_gateway(up: &FakeUpstream) -> TestGateway {
    let mut setup = Setup::new(up);
    setup.extra = format!("[rewrite]\nfrom = [{PUBLIC:?}]\nto = {PRIVATE:?}\n");
    setup.start().await
}

/// The body the client should get for an upstream body `text`: every
/// occurrence of the public origin, in each of its spellings, replaced.
fn private(text: &str) -> String {
    text.replace(PUBLIC, PRIVATE)
        .replace(&PUBLIC.replace('/', "\\/"), &PRIVATE.replace('/', "\\/"))
        .replace(
            "https%3A%2F%2Fsmith.example.com",
            "https%3A%2F%2Flangsmith.corp.example",
        )
        .replace(
            "https:\\u002F\\u002Fsmith.example.com",
            "https:\\u002F\\u002Flangsmith.corp.example",
        )
        .replace(
            "https:\\u002f\\u002fSMITH.example.com",
            "https:\\u002F\\u002Flangsmith.corp.example",
        )
}

/// The upstream answers `path` with `status`, `headers` and `body`.
fn fixed(status: StatusCode, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Behaviour {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let body: Bytes = body.into();
    custom(move |_| {
        let headers = headers.clone();
        let body = body.clone();
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            upstream_response(status, &h, upstream_full(body))
        }
    })
}

/// The upstream answers `path` with `chunks`, each its own HTTP chunk.
fn chunked(content_type: &str, chunks: Vec<Bytes>) -> Behaviour {
    let content_type = content_type.to_owned();
    custom(move |_| {
        let chunks = chunks.clone();
        let content_type = content_type.clone();
        async move {
            upstream_response(
                StatusCode::OK,
                &[("content-type", content_type.as_str())],
                upstream_stream(futures_util::stream::iter(chunks)),
            )
        }
    })
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_urls_are_rewritten_in_every_spelling() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let body = fill(
        r#"{"share_url":"https://smith.example.com/public/{t}/r","escaped":"https:\/\/smith.example.com\/public\/{t}\/r","encoded":"https://smith.example.com/login?next=https%3A%2F%2Fsmith.example.com%2Fpublic%2F{t}%2Fr","root":"https://smith.example.com","unicode":"https:\u002F\u002Fsmith.example.com\u002Fpublic\u002F{t}\u002Fr","lower":"https:\u002f\u002fSMITH.example.com"}"#,
    );
    let route = fill("/api/v1/public/{t}/runs/{id}");
    up.on(&route, fixed(StatusCode::OK, &[JSON], body.clone()));
    let r = request(INSIDE, gw.addr, "GET", &route, &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    let want = fill(
        r#"{"share_url":"https://langsmith.corp.example/public/{t}/r","escaped":"https:\/\/langsmith.corp.example\/public\/{t}\/r","encoded":"https://langsmith.corp.example/login?next=https%3A%2F%2Flangsmith.corp.example%2Fpublic%2F{t}%2Fr","root":"https://langsmith.corp.example","unicode":"https:\u002F\u002Flangsmith.corp.example\u002Fpublic\u002F{t}\u002Fr","lower":"https:\u002F\u002Flangsmith.corp.example"}"#,
    );
    assert_eq!(r.text(), want);
    assert_eq!(want, private(&body));
    assert!(r
        .header("content-length")
        .is_none_or(|l| l == want.len().to_string()));
    up.only("the JSON read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_links_are_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let page = fill(
        r#"<!doctype html><a href="https://smith.example.com/public/{t}/r">run</a><script>window.base="https://smith.example.com";window.__STATE__={"share":"https:\u002F\u002Fsmith.example.com\u002Fpublic\u002F{t}\u002Fr"};</script>"#,
    );
    let route = fill("/public/{t}/r");
    up.on(
        &route,
        fixed(
            StatusCode::OK,
            &[("content-type", "text/html; charset=utf-8")],
            page.clone(),
        ),
    );
    let r = request(
        INSIDE,
        gw.addr,
        "GET",
        &route,
        &[("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), private(&page));
    assert!(r
        .text()
        .contains("href=\"https://langsmith.corp.example/public/"));
    assert!(r
        .text()
        .contains("\"share\":\"https:\\u002F\\u002Flangsmith.corp.example\\u002Fpublic"));
    up.only("the share page");
}

/// Reads `body` until `seen` holds `want` (frames may split it).
async fn read_until(body: &mut hyper::body::Incoming, seen: &mut String, want: &str) {
    while !seen.contains(want) {
        let frame = within("the next event-stream frame", body.frame())
            .await
            .unwrap_or_else(|| panic!("the stream ended before {want:?}; got {seen:?}"))
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_rewritten_event_by_event() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = fill("/api/v2/public/{t}/runs/query");
    let events = up.sse(&route);
    let resp = send(
        INSIDE,
        gw.addr,
        build(
            gw.addr,
            "POST",
            &route,
            &[("accept", "text/event-stream"), JSON],
            "{}",
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let one = "event: run\ndata: {\"url\":\"https://smith.example.com/o/1/r/1\"}\n\n";
    let two = "event: run\ndata: {\"url\":\"https:\\/\\/smith.example.com\\/o\\/1\\/r\\/2\"}\n\n";
    events.send(Bytes::from(one)).expect("send event 1");
    let mut seen = String::new();
    // Event 2 is released only once the rewritten event 1 has arrived: the
    // rewriter holds nothing back that it does not have to.
    read_until(&mut body, &mut seen, &private(one)).await;
    assert_eq!(seen, private(one));
    events.send(Bytes::from(two)).expect("send event 2");
    read_until(&mut body, &mut seen, &private(two)).await;
    drop(events);
    while let Some(frame) = within("the end of the stream", body.frame()).await {
        if let Ok(data) = frame.expect("a frame").into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(seen, format!("{}{}", private(one), private(two)));
    assert!(!seen.contains("smith.example.com/"));
    up.only("the event stream");
}

fn compress(coding: &str, plain: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).expect("gzip");
            e.finish().expect("gzip")
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).expect("deflate");
            e.finish().expect("deflate")
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                e.write_all(plain).expect("br");
            }
            out
        }
        "zstd" => zstd::encode_all(plain, 3).expect("zstd"),
        other => panic!("no encoder for {other}"),
    }
}

fn decompress(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::MultiGzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("gunzip");
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .expect("inflate");
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("unbrotli");
        }
        "zstd" => out = zstd::decode_all(data).expect("unzstd"),
        other => panic!("no decoder for {other}"),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_rewritten_for_clients_that_accept_them_and_not() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let mut plain = String::from("[");
    for i in 0..200 {
        plain.push_str(&format!(
            "{{\"id\":{i},\"share_url\":\"https://smith.example.com/public/{TOKEN}/r\",\"escaped\":\"https:\\/\\/smith.example.com\\/o\\/{i}\"}},"
        ));
    }
    plain.push_str("{}]");
    let want = private(&plain);
    for coding in ["gzip", "deflate", "br", "zstd"] {
        let route = format!("/api/v1/runs/{coding}");
        up.on(
            &route,
            fixed(
                StatusCode::OK,
                &[JSON, ("content-encoding", coding)],
                compress(coding, plain.as_bytes()),
            ),
        );
        // A client that accepts the coding gets it, rewritten inside.
        let r = request(
            INSIDE,
            gw.addr,
            "GET",
            &route,
            &[("accept-encoding", &format!("{coding}, identity;q=0.5"))],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{coding}");
        assert_eq!(r.header("content-encoding").as_deref(), Some(coding));
        let vary = r.header("vary").unwrap_or_default().to_ascii_lowercase();
        assert!(vary.contains("accept-encoding"), "{coding}: Vary {vary:?}");
        let got = String::from_utf8(decompress(coding, &r.body)).expect("UTF-8");
        assert_eq!(got, want, "{coding}, accepted");
        up.only(coding);

        // A client that does not accept it is served identity.
        let r = request(
            INSIDE,
            gw.addr,
            "GET",
            &route,
            &[("accept-encoding", "identity")],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{coding}");
        assert!(
            r.header("content-encoding").is_none_or(|c| c == "identity"),
            "{coding}: {:?}",
            r.header("content-encoding")
        );
        assert_eq!(r.text(), want, "{coding}, not accepted");
        up.only(coding);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_split_across_upstream_chunks_is_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let body = r#"{"a":"https://smith.example.com/x","b":"https:\/\/smith.example.com\/y","c":"https%3A%2F%2Fsmith.example.com%2Fz","d":"https://smith.example.com.evil.example/"}"#;
    let want = private(body).replace(
        "https://langsmith.corp.example.evil.example/",
        "https://smith.example.com.evil.example/",
    );
    assert!(want.contains("https://smith.example.com.evil.example/"));
    // Every split point of the body into two chunks, and a body of
    // one-byte chunks.
    let mut splits: Vec<Vec<Bytes>> = (1..body.len())
        .map(|at| {
            vec![
                Bytes::copy_from_slice(&body.as_bytes()[..at]),
                Bytes::copy_from_slice(&body.as_bytes()[at..]),
            ]
        })
        .collect();
    splits.push(body.bytes().map(|b| Bytes::from(vec![b])).collect());
    for (i, chunks) in splits.into_iter().enumerate() {
        let route = format!("/api/v1/split/{i}");
        up.on(&route, chunked("application/json", chunks));
        let r = request(INSIDE, gw.addr, "GET", &route, &[], "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), want, "split {i}");
        up.only(&route);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_and_set_cookie_headers_are_mapped_other_hosts_untouched() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let cases = [
        (
            "https://smith.example.com/public/abc/r?x=1",
            "https://langsmith.corp.example/public/abc/r?x=1",
        ),
        (
            "https://other.example/public/abc/r",
            "https://other.example/public/abc/r",
        ),
        (
            "https://smith.example.com.evil.example/x",
            "https://smith.example.com.evil.example/x",
        ),
        (
            "https://smith.example.community/x",
            "https://smith.example.community/x",
        ),
        ("/relative/path", "/relative/path"),
    ];
    for (i, (location, want)) in cases.iter().enumerate() {
        let route = format!("/api/v1/redirect/{i}");
        up.on(
            &route,
            fixed(StatusCode::FOUND, &[("location", location)], ""),
        );
        let r = request(INSIDE, gw.addr, "GET", &route, &[], "").await;
        assert_eq!(r.status, StatusCode::FOUND, "{location}");
        assert_eq!(r.header("location").as_deref(), Some(*want), "{location}");
        up.only(location);
    }

    up.on(
        "/api/v1/login",
        fixed(
            StatusCode::OK,
            &[
                (
                    "set-cookie",
                    "sid=1; Domain=smith.example.com; Path=/; Secure; HttpOnly",
                ),
                ("set-cookie", "pref=2; Domain=.smith.example.com; Path=/"),
                ("set-cookie", "other=3; Domain=other.example; Path=/"),
                ("set-cookie", "host=4; Path=/"),
            ],
            "",
        ),
    );
    let r = request(INSIDE, gw.addr, "GET", "/api/v1/login", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let cookies: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    assert_eq!(
        cookies,
        vec![
            "sid=1; Domain=langsmith.corp.example; Path=/; Secure; HttpOnly".to_owned(),
            "pref=2; Domain=.langsmith.corp.example; Path=/".to_owned(),
            "other=3; Domain=other.example; Path=/".to_owned(),
            "host=4; Path=/".to_owned(),
        ]
    );
    up.only("the cookies");
}

/// Spellings that left the public origin in a body: its default port
/// written out (`:443`, the same origin, which `Location` already mapped),
/// and a share link followed, with no space, by a signed link of another
/// host (a CSV line, a markdown table an LLM wrote): the signature belongs
/// to the second URL, not the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_ports_and_a_signed_link_next_door_do_not_keep_the_public_origin() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = fill("/api/v1/public/{t}/run");
    let cases = [
        (
            JSON.1,
            r#"{"share_url":"https://smith.example.com:443/public/{t}/r","escaped":"https:\/\/smith.example.com:443\/public\/{t}\/r","next":"https://x.example/?u=https%3A%2F%2Fsmith.example.com%3A443%2Fpublic"}"#,
            r#"{"share_url":"https://langsmith.corp.example/public/{t}/r","escaped":"https:\/\/langsmith.corp.example\/public\/{t}\/r","next":"https://x.example/?u=https%3A%2F%2Flangsmith.corp.example%2Fpublic"}"#,
        ),
        (
            "text/plain",
            "https://smith.example.com/public/{t}/r,https://bucket.s3.amazonaws.com/f.png?X-Amz-Signature=abc",
            "https://langsmith.corp.example/public/{t}/r,https://bucket.s3.amazonaws.com/f.png?X-Amz-Signature=abc",
        ),
        (
            JSON.1,
            r#"{"output":"|[run](https://smith.example.com/public/{t}/r)|![img](https://bucket.s3.amazonaws.com/f.png?X-Amz-Signature=abc)|"}"#,
            r#"{"output":"|[run](https://langsmith.corp.example/public/{t}/r)|![img](https://bucket.s3.amazonaws.com/f.png?X-Amz-Signature=abc)|"}"#,
        ),
        // Left alone: another port is another origin, and a signature in
        // the URL's own query still keeps it as signed.
        (
            JSON.1,
            r#"{"a":"https://smith.example.com:4430/x","b":"https://smith.example.com:443/blob?sig=1,https://c.example/"}"#,
            r#"{"a":"https://smith.example.com:4430/x","b":"https://smith.example.com:443/blob?sig=1,https://c.example/"}"#,
        ),
    ];
    for (content_type, body, want) in cases {
        up.on(
            &route,
            fixed(
                StatusCode::OK,
                &[("content-type", content_type)],
                fill(body),
            ),
        );
        let r = request(INSIDE, gw.addr, "GET", &route, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
        assert_eq!(r.text(), fill(want), "{content_type}: {body}");
        up.only("the read");
    }
}

/// A URL right after a JSON escape (a link at the start of a line of a
/// run's output, after a tab, or after a non-ASCII character an ASCII-only
/// encoder wrote as `\uXXXX`), or after a form-encoded space (`+`), is
/// rewritten; a longer scheme (`git+https`) is not this origin and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_right_after_an_escape_or_a_form_space_is_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = fill("/api/v1/public/{t}/run");
    let cases = [
        (
            r#"{"outputs":{"text":"Trace:\nhttps://smith.example.com/public/{t}/r"}}"#,
            r#"{"outputs":{"text":"Trace:\nhttps://langsmith.corp.example/public/{t}/r"}}"#,
        ),
        (
            r#"{"outputs":{"text":"Trace:\r\nhttps://smith.example.com/public/{t}/r\turl\thttps://smith.example.com"}}"#,
            r#"{"outputs":{"text":"Trace:\r\nhttps://langsmith.corp.example/public/{t}/r\turl\thttps://langsmith.corp.example"}}"#,
        ),
        (
            r#"{"outputs":{"text":"\u94fe\u63a5\uff1ahttps://smith.example.com/public/{t}/r"}}"#,
            r#"{"outputs":{"text":"\u94fe\u63a5\uff1ahttps://langsmith.corp.example/public/{t}/r"}}"#,
        ),
        (
            r#"{"outputs":{"text":"Trace:\nhttps:\/\/smith.example.com\/public\/{t}\/r"}}"#,
            r#"{"outputs":{"text":"Trace:\nhttps:\/\/langsmith.corp.example\/public\/{t}\/r"}}"#,
        ),
        (
            r#"{"mailto":"mailto:?body=See+https%3A%2F%2Fsmith.example.com%2Fpublic%2F{t}%2Fr"}"#,
            r#"{"mailto":"mailto:?body=See+https%3A%2F%2Flangsmith.corp.example%2Fpublic%2F{t}%2Fr"}"#,
        ),
        (
            r#"{"pip":"git+https://smith.example.com/repo.git","word":"xhttps://smith.example.com"}"#,
            r#"{"pip":"git+https://smith.example.com/repo.git","word":"xhttps://smith.example.com"}"#,
        ),
    ];
    for (body, want) in cases {
        up.on(&route, fixed(StatusCode::OK, &[JSON], fill(body)));
        let r = request(INSIDE, gw.addr, "GET", &route, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
        assert_eq!(r.text(), fill(want), "{body}");
        up.only("the read");
    }
}

/// A URL percent-encoded with its slashes kept (`https%3A//host`, as
/// Python's `urllib.parse.quote(url)` writes it into a query) is rewritten,
/// keeping that spelling; `http%3A//` (another origin) and a signed one stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_quoted_with_its_slashes_kept_is_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = fill("/api/v1/public/{t}/run");
    let body = fill(
        r#"{"login":"/login?next=https%3A//smith.example.com/public/{t}/r&x=1","upper":"next=HTTPS%3a//SMITH.example.com","http":"next=http%3A//smith.example.com/x","signed":"u=https%3A//smith.example.com/b%3Fsig%3D1"}"#,
    );
    up.on(&route, fixed(StatusCode::OK, &[JSON], body));
    let r = request(INSIDE, gw.addr, "GET", &route, &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    assert_eq!(
        r.text(),
        fill(
            r#"{"login":"/login?next=https%3A//langsmith.corp.example/public/{t}/r&x=1","upper":"next=https%3A//langsmith.corp.example","http":"next=http%3A//smith.example.com/x","signed":"u=https%3A//smith.example.com/b%3Fsig%3D1"}"#
        )
    );
    up.only("the read");
}

/// JSON under its other types (problem details, JSON:API, NDJSON) is
/// rewritten with `application/json` in the list, and so is a body with two
/// `Content-Type` fields when either names a rewritten type (a browser
/// reads the last); one with no type at all is rewritten, since it reads
/// as text (see below); a type outside the list passes untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_of_every_type_and_a_body_with_two_types_are_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = fill("/api/v1/public/{t}/run");
    let body = fill(r#"{"share_url":"https://smith.example.com/public/{t}/r"}"#);
    let cases: [(&[(&str, &str)], bool); 8] = [
        (&[("content-type", "application/problem+json")], true),
        (&[("content-type", "application/vnd.api+json")], true),
        (&[("content-type", "application/x-ndjson")], true),
        (
            &[("content-type", "application/jsonl; charset=utf-8")],
            true,
        ),
        (
            &[
                ("content-type", "application/octet-stream"),
                ("content-type", "text/html"),
            ],
            true,
        ),
        (
            &[
                ("content-type", "application/json"),
                ("content-type", "image/png"),
            ],
            true,
        ),
        (&[], true),
        (&[("content-type", "application/octet-stream")], false),
    ];
    for (headers, rewritten) in cases {
        up.on(&route, fixed(StatusCode::OK, headers, body.clone()));
        let r = request(INSIDE, gw.addr, "GET", &route, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
        let want = if rewritten {
            private(&body)
        } else {
            body.clone()
        };
        assert_eq!(r.text(), want, "{headers:?}");
        up.only("the read");
    }
}

/// Scheme-relative URLs (`//host`, as `href`, `src`, CSS `url()` and
/// preconnect hints write them) are rewritten; `http://host` (another
/// origin: the public one is https) and a longer host stay as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_relative_urls_in_a_page_are_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = fill("/public/{t}/r");
    let page = fill(
        r#"<link rel="preconnect" href="//smith.example.com"><a href="//smith.example.com/public/{t}/r">run</a><style>b{background:url(//smith.example.com/bg.png)}</style><a href="http://smith.example.com/x">http</a><a href="//smith.example.com.evil.example/">other</a>"#,
    );
    up.on(
        &route,
        fixed(
            StatusCode::OK,
            &[("content-type", "text/html; charset=utf-8")],
            page,
        ),
    );
    let r = request(
        INSIDE,
        gw.addr,
        "GET",
        &route,
        &[("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    assert_eq!(
        r.text(),
        fill(
            r#"<link rel="preconnect" href="//langsmith.corp.example"><a href="//langsmith.corp.example/public/{t}/r">run</a><style>b{background:url(//langsmith.corp.example/bg.png)}</style><a href="http://smith.example.com/x">http</a><a href="//smith.example.com.evil.example/">other</a>"#
        )
    );
    up.only("the page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_other_hosts_lookalikes_and_untouched_types_pass_as_they_are() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let untouched = r#"{"signed":"https://smith.example.com/blob/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc123","gcs":"https://smith.example.com/o?X-Goog-Signature=ff","other":"https://other.example/public/x/r","look1":"https://smith.example.com.evil.example/x","look2":"https://smith.example.community/x","http":"http://smith.example.com/x","port":"https://smith.example.com:8443/x"}"#;
    up.on(
        "/api/v1/untouched",
        fixed(StatusCode::OK, &[JSON], untouched),
    );
    let r = request(INSIDE, gw.addr, "GET", "/api/v1/untouched", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), untouched);
    up.only("untouched URLs");

    // A type that is not rewritten (an image) passes untouched, in a
    // coding the gateway does not know too.
    let opaque = "https://smith.example.com/public/x/r";
    up.on(
        "/api/v1/image",
        fixed(
            StatusCode::OK,
            &[
                ("content-type", "image/png"),
                ("content-encoding", "x-custom"),
            ],
            opaque,
        ),
    );
    let r = request(INSIDE, gw.addr, "GET", "/api/v1/image", &[], "").await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("x-custom"));
    assert_eq!(r.text(), opaque);
    up.only("an image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_and_referer_reach_the_upstream_as_the_public_origin() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = fill("/api/v1/public/{t}/runs/query");
    let referer = fill("https://langsmith.corp.example/public/{t}/r?tab=1");
    let r = request(
        INSIDE,
        gw.addr,
        "POST",
        &route,
        &[("origin", PRIVATE), ("referer", &referer), JSON],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    let seen = up.only("a POST read from the private origin");
    assert_eq!(seen.header("origin").as_deref(), Some(PUBLIC));
    assert_eq!(
        seen.header("referer"),
        Some(fill("https://smith.example.com/public/{t}/r?tab=1"))
    );

    // A foreign origin is passed on as it is.
    let r = request(
        INSIDE,
        gw.addr,
        "POST",
        &route,
        &[("origin", "https://evil.example"), JSON],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        up.only("a foreign origin").header("origin").as_deref(),
        Some("https://evil.example")
    );
}

/// A compressed body that expands thousands of times (a decompression
/// bomb: 64 MiB of zeros is about 2 KiB of zstd) is refused with an error
/// instead of being decoded into memory, and the gateway goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_cut_off() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let bomb = compress("zstd", &vec![0u8; 64 << 20]);
    assert!(bomb.len() < 16 << 10, "{} bytes", bomb.len());
    let route = "/api/v1/runs/bomb";
    up.on(
        route,
        fixed(StatusCode::OK, &[JSON, ("content-encoding", "zstd")], bomb),
    );
    for accept in ["zstd", "identity"] {
        // A 502 when the bomb goes off in the bytes read before the head,
        // else the connection is cut after it.
        let io = connect(INSIDE, gw.addr).await;
        let req = build(gw.addr, "GET", route, &[("accept-encoding", accept)], "");
        let got = exchange_on(io, req).await;
        assert!(
            got.as_ref()
                .map_or(true, |r| r.status == StatusCode::BAD_GATEWAY),
            "accepting {accept}: the bomb was served whole ({} bytes)",
            got.map(|r| r.body.len()).unwrap_or_default()
        );
    }
    let share = fill("/api/v1/public/{t}/runs/{id}");
    up.on(&share, fixed(StatusCode::OK, &[JSON], "{}"));
    let r = request(INSIDE, gw.addr, "GET", &share, &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_responses_keep_their_entity_headers() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    up.on(
        "/api/v1/doc",
        custom(|req| async move {
            assert_eq!(req.method, Method::HEAD);
            upstream_response(
                StatusCode::OK,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "2048"),
                    ("etag", "\"v1\""),
                    ("content-location", "https://smith.example.com/api/v1/doc"),
                ],
                upstream_stream(futures_util::stream::empty()),
            )
        }),
    );
    let r = request(INSIDE, gw.addr, "HEAD", "/api/v1/doc", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length").as_deref(), Some("2048"));
    assert_eq!(r.header("etag").as_deref(), Some("\"v1\""));
    assert_eq!(
        r.header("content-location").as_deref(),
        Some("https://langsmith.corp.example/api/v1/doc")
    );
    assert_eq!(up.only("the HEAD").method, Method::HEAD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_streamed_body_is_rewritten_in_full() {
    const TOTAL: usize = 256 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let unit = "{\"u\":\"https://smith.example.com/public/x/r\",\"pad\":\"abcdefghij\"},\n";
    let units = TOTAL.div_ceil(unit.len());
    let total = units * unit.len();
    // The body is the unit repeated, cut into chunks whose size is not a
    // multiple of it, so URLs straddle chunk boundaries.
    let window: Bytes = Bytes::from(unit.repeat(CHUNK / unit.len() + 2));
    up.on(
        "/api/v1/large",
        custom(move |_| {
            let window = window.clone();
            let unit_len = unit.len();
            let chunks = futures_util::stream::unfold(0usize, move |sent| {
                let window = window.clone();
                async move {
                    if sent >= total {
                        return None;
                    }
                    let n = CHUNK.min(total - sent);
                    let at = sent % unit_len;
                    Some((window.slice(at..at + n), sent + n))
                }
            });
            async move {
                upstream_response(
                    StatusCode::OK,
                    &[("content-type", "application/json")],
                    upstream_stream(chunks),
                )
            }
        }),
    );
    let resp = send(
        INSIDE,
        gw.addr,
        build(
            gw.addr,
            "GET",
            "/api/v1/large",
            &[("accept-encoding", "identity")],
            "",
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut rewritten = Counter::new(b"https://langsmith.corp.example/public/x/r");
    let mut stale = Counter::new(b"\"https://smith.example.com");
    let mut bytes = 0usize;
    // Each frame under its own deadline: the whole body takes a while.
    while let Some(frame) = within("the next frame of the large body", body.frame()).await {
        let Ok(data) = frame.expect("a frame").into_data() else {
            continue;
        };
        bytes += data.len();
        rewritten.feed(&data);
        stale.feed(&data);
    }
    let (found, left) = (rewritten.found, stale.found);
    assert_eq!(found, units, "every URL was rewritten");
    assert_eq!(left, 0, "no public URL is left");
    assert_eq!(bytes, total + units * (PRIVATE.len() - PUBLIC.len()));
    up.only("the large body");
}

/// Counts a needle in a stream fed chunk by chunk, matches across chunk
/// boundaries included.
struct Counter {
    needle: &'static [u8],
    carry: Vec<u8>,
    found: usize,
}

impl Counter {
    fn new(needle: &'static [u8]) -> Counter {
        Counter {
            needle,
            carry: Vec::new(),
            found: 0,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.carry.extend_from_slice(data);
        let needle = self.needle;
        self.found += self
            .carry
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count();
        // Keep a tail too short to hold a whole match: none is counted twice.
        let cut = self.carry.len().saturating_sub(needle.len() - 1);
        self.carry.drain(..cut);
    }
}

/// An upstream that serves `body` as `content_type` the way a static file
/// server does: a single `Range: bytes=A-B` (or `A-`) gets a `206` with that
/// slice, several get `multipart/byteranges`, none gets the whole as `200`.
fn ranged(content_type: &'static str, body: &'static str) -> Behaviour {
    custom(move |req| async move {
        let Some(range) = req.header("range") else {
            return upstream_response(
                StatusCode::OK,
                &[("content-type", content_type), ("accept-ranges", "bytes")],
                upstream_full(body),
            );
        };
        let spans: Vec<(usize, usize)> = range
            .trim_start_matches("bytes=")
            .split(',')
            .map(|s| {
                let (a, b) = s.trim().split_once('-').expect("a-b");
                let a: usize = a.parse().expect("start");
                let b = if b.is_empty() {
                    body.len() - 1
                } else {
                    b.parse::<usize>().expect("end").min(body.len() - 1)
                };
                (a, b)
            })
            .collect();
        let total = body.len();
        if let [(a, b)] = spans[..] {
            let content_range = format!("bytes {a}-{b}/{total}");
            return upstream_response(
                StatusCode::PARTIAL_CONTENT,
                &[
                    ("content-type", content_type),
                    ("content-range", content_range.as_str()),
                ],
                upstream_full(&body.as_bytes()[a..=b]),
            );
        }
        let mut multi = String::new();
        for (a, b) in spans {
            multi.push_str(&format!(
                "--SEP\r\ncontent-type: {content_type}\r\ncontent-range: bytes {a}-{b}/{total}\r\n\r\n{}\r\n",
                &body[a..=b]
            ));
        }
        multi.push_str("--SEP--\r\n");
        upstream_response(
            StatusCode::PARTIAL_CONTENT,
            &[("content-type", "multipart/byteranges; boundary=SEP")],
            upstream_full(multi),
        )
    })
}

/// A range of a page or an API answer would be a way around the rewrite
/// (a `206` slice cannot be rewritten, so it used to pass untouched, public
/// origin and all). The gateway asks again for the whole body and rewrites
/// that; binary ranges (media seeking, resumed downloads) still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_request_never_gets_the_public_origin_back() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let share = fill("/api/v1/public/{t}/run");
    let json = r#"{"share_url":"https://smith.example.com/public/x/r","next":"https://smith.example.com/o"}"#;
    up.on(&share, ranged("application/json", json));
    let js = "const base = \"https://smith.example.com\"; export default base;";
    up.on("/static/app.js", ranged("text/javascript", js));

    for (path, headers) in [
        (share.as_str(), &[("range", "bytes=0-40")][..]),
        (share.as_str(), &[("range", "bytes=2-")][..]),
        (share.as_str(), &[("range", "bytes=0-5,10-60")][..]),
        (
            "/static/app.js",
            &[("range", "bytes=10-"), ("if-range", "\"v1\"")][..],
        ),
    ] {
        let r = request(INSIDE, gw.addr, "GET", path, headers, "").await;
        let what = format!("{path} {headers:?}");
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.summary());
        assert!(r.header("content-range").is_none(), "{what}");
        let want = if path == share { json } else { js };
        assert_eq!(r.text(), private(want), "{what}");
        let got = up.take();
        assert_eq!(got.len(), 2, "{what}: the range, then the whole");
        assert_eq!(
            got[0].header("range").as_deref(),
            Some(headers[0].1),
            "{what}"
        );
        assert!(got[1].header("range").is_none(), "{what}");
        assert!(got[1].header("if-range").is_none(), "{what}");
        assert_eq!(got[1].target, got[0].target, "{what}");
    }

    // Binary: the range is served as asked, once.
    up.on("/static/logo.png", ranged("image/png", "0123456789abcdef"));
    let r = request(
        INSIDE,
        gw.addr,
        "GET",
        "/static/logo.png",
        &[("range", "bytes=4-7")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{}", r.summary());
    assert_eq!(r.header("content-range").as_deref(), Some("bytes 4-7/16"));
    assert_eq!(r.text(), "4567");
    assert_eq!(
        up.only("the binary range").header("range").as_deref(),
        Some("bytes=4-7")
    );

    // A HEAD keeps its range: no body comes back.
    let r = request(
        INSIDE,
        gw.addr,
        "HEAD",
        &share,
        &[("range", "bytes=0-5")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{}", r.summary());
    assert!(r.body.is_empty());
    assert_eq!(
        up.only("the HEAD").header("range").as_deref(),
        Some("bytes=0-5")
    );
}

/// `Range` means nothing on other methods (RFC 9110 §14.2) and a request
/// with a body cannot be sent twice: it is dropped before forwarding. An
/// upstream that answers with a partial body of a rewritten type all the
/// same, or again when asked for the whole, gets a `502`: none of its body
/// reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_body_that_cannot_be_rewritten_is_never_passed_on() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let leak = r#"{"share_url":"https://smith.example.com/public/x/r"}"#;
    let stubborn = || {
        fixed(
            StatusCode::PARTIAL_CONTENT,
            &[JSON, ("content-range", "bytes 0-48/200")],
            leak,
        )
    };
    up.on("/api/v1/runs/query", stubborn());
    let r = request(
        INSIDE,
        gw.addr,
        "POST",
        "/api/v1/runs/query",
        &[JSON, ("range", "bytes=0-48"), ("if-range", "\"v1\"")],
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.summary());
    assert!(!r.text().contains("smith.example.com"), "{}", r.text());
    let got = up.only("the POST");
    assert!(got.header("range").is_none());
    assert!(got.header("if-range").is_none());

    let share = fill("/api/v1/public/{t}/run");
    up.on(&share, stubborn());
    for headers in [&[("range", "bytes=0-48")][..], &[][..]] {
        let r = request(INSIDE, gw.addr, "GET", &share, headers, "").await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "{headers:?}: {}",
            r.summary()
        );
        assert!(!r.text().contains("smith.example.com"), "{}", r.text());
        let got = up.take();
        assert_eq!(got.len(), headers.len() + 1, "{headers:?}");
        assert!(got.last().unwrap().header("range").is_none());
    }
}

/// The upstream answers `path` with `status` and the header lines
/// `headers` (appended in order), no body, and the client's view of it.
async fn headers_through(
    up: &FakeUpstream,
    gw: &TestGateway,
    path: &str,
    status: StatusCode,
    headers: &[(&str, &str)],
) -> Reply {
    up.on(path, fixed(status, headers, ""));
    let r = request(INSIDE, gw.addr, "GET", path, &[], "").await;
    assert_eq!(r.status, status, "{}", r.summary());
    up.only(path);
    r
}

/// Every value of `name` the client got, as bytes read as UTF-8.
fn all(r: &Reply, name: &str) -> Vec<String> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// A public URL inside a header value (a login's `next=`, an OAuth
/// `redirect_uri`, a cookie that remembers where to return, a preconnect
/// hint's query) is rewritten as the same text in a body is; the
/// redirect still goes where the upstream sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_urls_inside_header_values_are_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let cases = [
        (
            "location",
            "/login?next=https%3A%2F%2Fsmith.example.com%2Fpublic%2Fabc%2Fr",
            "/login?next=https%3A%2F%2Flangsmith.corp.example%2Fpublic%2Fabc%2Fr",
        ),
        (
            "location",
            "https://idp.example/authorize?client_id=ls&redirect_uri=https%3A%2F%2Fsmith.example.com%2Fapi%2Fv1%2Foauth%2Fcallback",
            "https://idp.example/authorize?client_id=ls&redirect_uri=https%3A%2F%2Flangsmith.corp.example%2Fapi%2Fv1%2Foauth%2Fcallback",
        ),
        (
            "location",
            "https://idp.example/logout?post_logout_redirect_uri=https://smith.example.com/",
            "https://idp.example/logout?post_logout_redirect_uri=https://langsmith.corp.example/",
        ),
        (
            "set-cookie",
            "return_to=https%3A%2F%2Fsmith.example.com%2Fpublic%2Fabc%2Fr; Path=/; HttpOnly",
            "return_to=https%3A%2F%2Flangsmith.corp.example%2Fpublic%2Fabc%2Fr; Path=/; HttpOnly",
        ),
        (
            "link",
            "<https://idp.example/x?u=https%3A%2F%2Fsmith.example.com%2F>; rel=preconnect",
            "<https://idp.example/x?u=https%3A%2F%2Flangsmith.corp.example%2F>; rel=preconnect",
        ),
        // Signed (its query, the embedded URL too, is what was signed), a
        // look-alike and another port: as the upstream wrote them.
        (
            "location",
            "https://idp.example/saml?RelayState=https%3A%2F%2Fsmith.example.com%2F&Signature=abc",
            "https://idp.example/saml?RelayState=https%3A%2F%2Fsmith.example.com%2F&Signature=abc",
        ),
        (
            "location",
            "/login?next=https%3A%2F%2Fsmith.example.com.evil.example%2F&b=https://smith.example.com:8443/",
            "/login?next=https%3A%2F%2Fsmith.example.com.evil.example%2F&b=https://smith.example.com:8443/",
        ),
    ];
    for (i, (name, value, want)) in cases.iter().enumerate() {
        let path = format!("/api/v1/auth/step/{i}");
        let r = headers_through(&up, &gw, &path, StatusCode::FOUND, &[(name, value)]).await;
        assert_eq!(all(&r, name), [*want], "{name}: {value}");
    }
}

/// A value with bytes outside ASCII (a raw UTF-8 path, a cookie value) is
/// rewritten like any other, its bytes kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_values_with_non_ascii_bytes_are_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let r = headers_through(
        &up,
        &gw,
        "/api/v1/datasets/redirect",
        StatusCode::FOUND,
        &[
            ("location", "https://smith.example.com/datasets/café"),
            ("set-cookie", "name=café; Domain=smith.example.com; Path=/"),
        ],
    )
    .await;
    assert_eq!(
        r.headers["location"].as_bytes(),
        "https://langsmith.corp.example/datasets/café".as_bytes()
    );
    assert_eq!(
        r.headers["set-cookie"].as_bytes(),
        "name=café; Domain=langsmith.corp.example; Path=/".as_bytes()
    );
}

/// Spellings a browser follows to the public host become the private
/// origin: scheme-relative references, a trailing-dot host, user info,
/// `Refresh` without `url=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_spellings_a_browser_follows_to_the_public_host_are_rewritten() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let cases = [
        (
            "location",
            "//smith.example.com/public/abc/r",
            "https://langsmith.corp.example/public/abc/r",
        ),
        (
            "location",
            "https://smith.example.com./public/abc/r",
            "https://langsmith.corp.example/public/abc/r",
        ),
        (
            "location",
            "https://user@smith.example.com/public/abc/r",
            "https://langsmith.corp.example/public/abc/r",
        ),
        (
            "content-location",
            "//smith.example.com/api/v1/x",
            "https://langsmith.corp.example/api/v1/x",
        ),
        (
            "link",
            "<//smith.example.com/static/app.js>; rel=preload; as=script",
            "<https://langsmith.corp.example/static/app.js>; rel=preload; as=script",
        ),
        (
            "refresh",
            "0; https://smith.example.com/public/abc/r",
            "0; https://langsmith.corp.example/public/abc/r",
        ),
        // The public host's name as user info, in front of another host:
        // that is where the browser goes, so it stays.
        (
            "location",
            "//smith.example.com@evil.example/",
            "//smith.example.com@evil.example/",
        ),
    ];
    for (i, (name, value, want)) in cases.iter().enumerate() {
        let path = format!("/api/v1/spell/{i}");
        let r = headers_through(&up, &gw, &path, StatusCode::FOUND, &[(name, value)]).await;
        assert_eq!(all(&r, name), [*want], "{name}: {value}");
    }
}

/// Headers without a rule of their own get the body rewriter's: the share
/// page's policy and report endpoints name the private origin, so browsers
/// inside the network never send reports (with the share URL in them) to
/// the public host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csp_and_reporting_headers_name_the_private_origin() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = fill("/public/{t}/r");
    let cases = [
        (
            "content-security-policy",
            "default-src 'self'; connect-src 'self' https://smith.example.com https://smith.example.com.evil.example; report-uri https://smith.example.com/csp-report",
            "default-src 'self'; connect-src 'self' https://langsmith.corp.example https://smith.example.com.evil.example; report-uri https://langsmith.corp.example/csp-report",
        ),
        (
            "reporting-endpoints",
            r#"csp="https://smith.example.com/reports""#,
            r#"csp="https://langsmith.corp.example/reports""#,
        ),
        (
            "report-to",
            r#"{"group":"csp","max_age":86400,"endpoints":[{"url":"https://smith.example.com/reports"}]}"#,
            r#"{"group":"csp","max_age":86400,"endpoints":[{"url":"https://langsmith.corp.example/reports"}]}"#,
        ),
        (
            "x-download",
            "https://smith.example.com/blob?X-Amz-Signature=abc",
            "https://smith.example.com/blob?X-Amz-Signature=abc",
        ),
    ];
    let mut headers = vec![("content-type", "text/html")];
    headers.extend(cases.iter().map(|(name, value, _)| (*name, *value)));
    up.on(&route, fixed(StatusCode::OK, &headers, "<html></html>"));
    let r = request(
        INSIDE,
        gw.addr,
        "GET",
        &route,
        &[("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    for (name, value, want) in cases {
        assert_eq!(all(&r, name), [want], "{name}: {value}");
    }
}

/// The `101` of a WebSocket upgrade gets the same header treatment as any
/// response (browsers store cookies from it): no header the upstream's
/// `Connection` names, the cookie's `Domain` mapped, and the upgrade's own
/// `Connection: upgrade` and `Upgrade: websocket` kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_101_gets_the_same_header_treatment() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    up.on(
        "/api/v1/ws",
        fixed(
            StatusCode::SWITCHING_PROTOCOLS,
            &[
                ("connection", "upgrade, x-internal-node"),
                ("upgrade", "websocket"),
                ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ("x-internal-node", "backend-7.cluster.local"),
                ("keep-alive", "timeout=5"),
                ("set-cookie", "ws=1; Domain=smith.example.com; Path=/"),
            ],
            "",
        ),
    );
    let req = build(
        gw.addr,
        "GET",
        "/api/v1/ws",
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    );
    let resp = send(INSIDE, gw.addr, req).await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers();
    let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        text("set-cookie").as_deref(),
        Some("ws=1; Domain=langsmith.corp.example; Path=/")
    );
    assert_eq!(text("x-internal-node"), None);
    assert_eq!(text("keep-alive"), None);
    assert_eq!(text("connection").as_deref(), Some("upgrade"));
    assert_eq!(text("upgrade").as_deref(), Some("websocket"));
    assert_eq!(
        text("sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    up.only("the upgrade");
}

/// An upstream that builds absolute redirects from the `Host` the gateway
/// sends it (nginx's directory redirects, Starlette's `redirect_slashes`)
/// names its own internal address: with `[rewrite]` on, that becomes the
/// private origin; without it, a reference to the gateway itself. Another
/// port of the same host is another origin and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_naming_the_upstreams_own_origin_are_mapped_back() {
    let up = FakeUpstream::start().await;
    let own = format!("http://{}", up.addr);
    let other_port = format!("http://{}:1/x", up.addr.ip());
    let redirects = || {
        let (own, other_port) = (own.clone(), other_port.clone());
        custom(move |req| {
            let (own, other_port) = (own.clone(), other_port.clone());
            async move {
                // Built from the Host header, as the upstream does it.
                let host = req.header("host").unwrap_or_default();
                assert_eq!(format!("http://{host}"), own);
                let location = format!("http://{host}/assets/?v=1");
                let refresh = format!("0; url=http://{host}/assets/");
                upstream_response(
                    StatusCode::MOVED_PERMANENTLY,
                    &[
                        ("location", &location),
                        ("refresh", &refresh),
                        ("content-location", &other_port),
                    ],
                    upstream_full(""),
                )
            }
        })
    };
    let plain = Setup::new(&up).start().await;
    let rewriting = rewriting_gateway(&up).await;
    for (gw, location, refresh) in [
        (&plain, "/assets/?v=1", "0; url=/assets/"),
        (
            &rewriting,
            "https://langsmith.corp.example/assets/?v=1",
            "0; url=https://langsmith.corp.example/assets/",
        ),
    ] {
        up.on("/assets", redirects());
        let r = request(INSIDE, gw.addr, "GET", "/assets", &[], "").await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY, "{}", r.summary());
        assert_eq!(r.header("location").as_deref(), Some(location));
        assert_eq!(r.header("refresh").as_deref(), Some(refresh));
        assert_eq!(
            r.header("content-location").as_deref(),
            Some(other_port.as_str())
        );
        up.only("the redirect");
    }
}

/// Trailers are header fields too: an HTTP/2 client gets them with the
/// public origin rewritten. The upstream is written by hand, since an
/// HTTP/1.1 server library sends trailers only when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_name_the_private_origin() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: Link, X-Next\r\n\r\n2\r\n{}\r\n0\r\nLink: <https://smith.example.com/public/abc/r>; rel=next\r\nX-Next: https://smith.example.com/public/abc/r\r\n\r\n";
        let _ = s.write_all(answer.as_bytes()).await;
    });
    let mut setup = Setup::with_url(format!("http://{addr}"));
    setup.extra = format!("[rewrite]\nfrom = [{PUBLIC:?}]\nto = {PRIVATE:?}\n");
    let gw = setup.start().await;
    let tcp = connect(INSIDE, gw.addr).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(format!("http://{}/api/v1/runs/x", gw.addr))
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = within("the h2 response", sender.send_request(req))
        .await
        .unwrap();
    let collected = within("the h2 body", resp.into_body().collect())
        .await
        .unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(
        trailers["link"],
        "<https://langsmith.corp.example/public/abc/r>; rel=next"
    );
    assert_eq!(
        trailers["x-next"],
        "https://langsmith.corp.example/public/abc/r"
    );
    assert_eq!(collected.to_bytes(), "{}");
}

/// Clients decode every coding they know, stacked ones too (`gzip, gzip`:
/// browsers and curl undo each in turn), and pass one they do not know
/// through as the raw body (Chromium shows it as it is). So a body whose
/// coding the rewriter cannot read would reach a reader with the public
/// origin in it: stacked codings are decoded one after the other, and a
/// rewritten type in a coding the gateway does not know is a `502`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_coding_carries_the_public_origin_past_the_rewriter() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let plain = fill(r#"{"share_url":"https://smith.example.com/public/{t}/r"}"#);
    let want = private(&plain);
    let twice = compress("gzip", &compress("gzip", plain.as_bytes()));
    let mixed = compress("gzip", &compress("br", plain.as_bytes()));
    let cases: [(&str, &str, Vec<u8>); 4] = [
        ("/api/v1/runs/twice", "gzip, gzip", twice.clone()),
        ("/api/v1/runs/lines", "gzip", twice),
        ("/api/v1/runs/mixed", " BR ,GZIP ", mixed),
        (
            "/api/v1/runs/upper",
            "X-GZIP",
            compress("gzip", plain.as_bytes()),
        ),
    ];
    for (route, coding, body) in cases {
        let mut headers = vec![JSON, ("content-encoding", coding)];
        if route.ends_with("lines") {
            // The same two codings as two header lines.
            headers.push(("content-encoding", "gzip"));
        }
        up.on(route, fixed(StatusCode::OK, &headers, body));
        for accept in ["identity", "gzip"] {
            let r = request(
                INSIDE,
                gw.addr,
                "GET",
                route,
                &[("accept-encoding", accept)],
                "",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{route} {accept}");
            let got = match r.header("content-encoding") {
                None => r.body.to_vec(),
                Some(c) if c == "gzip" => decompress("gzip", &r.body),
                Some(c) => panic!("{route} accepting {accept}: served as {c:?}"),
            };
            assert_eq!(String::from_utf8_lossy(&got), want, "{route} {accept}");
            up.only(route);
        }
    }

    // A coding nobody here can read: refused, not passed on.
    for coding in ["x-custom", "gzip, x-custom", "compress"] {
        let route = "/api/v1/runs/opaque";
        up.on(
            route,
            fixed(
                StatusCode::OK,
                &[JSON, ("content-encoding", coding)],
                plain.clone(),
            ),
        );
        let r = request(INSIDE, gw.addr, "GET", route, &[], "").await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "{coding}: {}",
            r.summary()
        );
        assert!(!r.text().contains("smith.example.com"), "{coding}");
        up.only(coding);
    }
}

/// A body without a usable `Content-Type` is sniffed by browsers (an HTML
/// page renders, links and all; RFC 9110 §8.3, WHATWG MIME Sniffing §7)
/// and read as JSON by API clients that never look at the type: it is
/// rewritten when it reads as text. One that starts as binary data (an
/// image, an archive) passes byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_a_usable_type_is_rewritten_when_it_reads_as_text() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let page = fill(r#"<!doctype html><a href="https://smith.example.com/public/{t}/r">run</a>"#);
    let types: [&[&str]; 5] = [
        &[],
        &["unknown/unknown"],
        &["*/*"],
        &["html"],
        &["text/html garbage"],
    ];
    for (i, types) in types.iter().enumerate() {
        let route = format!("/api/v1/untyped/{i}");
        let headers: Vec<(&str, &str)> = types.iter().map(|t| ("content-type", *t)).collect();
        up.on(&route, fixed(StatusCode::OK, &headers, page.clone()));
        let r = request(INSIDE, gw.addr, "GET", &route, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{types:?}");
        assert_eq!(r.text(), private(&page), "{types:?}");
        up.only(&route);
    }
    // Compressed and untyped: read after decoding.
    let route = "/api/v1/untyped/gzip";
    up.on(
        route,
        fixed(
            StatusCode::OK,
            &[("content-encoding", "gzip")],
            compress("gzip", page.as_bytes()),
        ),
    );
    let r = request(
        INSIDE,
        gw.addr,
        "GET",
        route,
        &[("accept-encoding", "identity")],
        "",
    )
    .await;
    assert_eq!(r.text(), private(&page));
    up.only(route);

    // Binary data: untouched, whatever it holds.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend_from_slice(page.as_bytes());
    let route = "/api/v1/untyped/png";
    up.on(route, fixed(StatusCode::OK, &[], png.clone()));
    let r = request(INSIDE, gw.addr, "GET", route, &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, png);
    up.only(route);
}

/// The rewriter reads ASCII-compatible text: a body a reader decodes as
/// UTF-16 (from its `charset`, or from a byte order mark, which browsers
/// follow before any label) spells the public origin in bytes it cannot
/// match. Such a body never reaches the client: a `502` when the label
/// says so, a cut connection when the body's first bytes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_utf16_never_reaches_the_client() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let page = fill(r#"<a href="https://smith.example.com/public/{t}/r">run</a>"#);
    let utf16le: Vec<u8> = page.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let utf16be: Vec<u8> = page.encode_utf16().flat_map(u16::to_be_bytes).collect();
    for (charset, body) in [
        ("utf-16le", utf16le.clone()),
        ("UTF-16", utf16le.clone()),
        ("\"utf-16be\"", utf16be.clone()),
        ("unicodeFFFE", utf16be.clone()),
    ] {
        let route = "/api/v1/labelled";
        let ct = format!("text/html; charset={charset}");
        up.on(route, fixed(StatusCode::OK, &[("content-type", &ct)], body));
        let r = request(INSIDE, gw.addr, "GET", route, &[], "").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{charset}");
        up.only(charset);
    }
    for (bom, body) in [(&b"\xff\xfe"[..], utf16le), (&b"\xfe\xff"[..], utf16be)] {
        let route = "/api/v1/marked";
        let mut marked = bom.to_vec();
        marked.extend_from_slice(&body);
        up.on(
            route,
            fixed(StatusCode::OK, &[("content-type", "text/html")], marked),
        );
        let io = connect(INSIDE, gw.addr).await;
        let got = exchange_on(io, build(gw.addr, "GET", route, &[], "")).await;
        if let Ok(r) = got {
            assert_eq!(
                r.status,
                StatusCode::BAD_GATEWAY,
                "BOM {bom:?}: {}",
                r.summary()
            );
        }
        up.only("a UTF-16 body with a byte order mark");
    }
}

/// A compressed body that fails to decode at its start (labelled gzip but
/// not gzip) is a `502`: the gateway reads its first bytes before sending
/// the head. One that fails further on (corrupt in the middle, a bomb, an
/// upstream that hangs up) cuts the client's connection once the head has
/// gone out, so the client never takes a part for the whole; either way
/// the cause reaches the access log and the metrics
/// (`reason="upstream_body"`) instead of being lost with the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_fails_to_decode_is_a_502_or_cut_off_and_logged_with_its_cause() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    let route = "/api/v1/runs/mislabelled";
    let plain = fill(r#"{"share_url":"https://smith.example.com/public/{t}/r"}"#).repeat(200);
    up.on(
        route,
        fixed(StatusCode::OK, &[JSON, ("content-encoding", "gzip")], plain),
    );
    let r = request(INSIDE, gw.addr, "GET", route, &[], "").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.summary());
    assert_eq!(detail(&r), "Bad gateway.");
    up.only(route);

    // Corrupt well after its start: the head has gone out, the body is cut.
    let route = "/api/v1/runs/corrupt";
    let mut seed = 0x2545_f491_u32;
    let noisy: String = (0..100_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            char::from(b'a' + (seed % 26) as u8)
        })
        .collect();
    let mut gz = compress("gzip", format!("{{\"n\":\"{noisy}\"}}").as_bytes());
    let at = gz.len() * 2 / 3;
    for b in &mut gz[at..at + 64] {
        *b = !*b;
    }
    up.on(
        route,
        fixed(StatusCode::OK, &[JSON, ("content-encoding", "gzip")], gz),
    );
    let io = connect(INSIDE, gw.addr).await;
    let req = build(
        gw.addr,
        "GET",
        route,
        &[("accept-encoding", "identity")],
        "",
    );
    let got = exchange_on(io, req).await;
    assert!(
        got.as_ref().is_err_and(|e| e.starts_with("body")),
        "a body that stops decoding midway must be cut after its head: {:?}",
        got.map(|r| r.summary())
    );
    up.only(route);
    eventually("both failed bodies in the metrics", || {
        let text = gw.state.metrics.encode();
        async move {
            let statuses: Vec<bool> = ["502", "200"]
                .iter()
                .map(|status| {
                    text.lines().any(|l| {
                        l.starts_with("sharegate_requests_total")
                            && l.contains("reason=\"upstream_body\"")
                            && l.contains(&format!("status=\"{status}\""))
                    })
                })
                .collect();
            statuses.iter().all(|s| *s).then_some(())
        }
    })
    .await;
}

/// An empty body labelled with a coding (a framework that sets
/// `Content-Encoding` on every answer) holds no compressed stream at all;
/// clients read it as empty, and so does the gateway, whether the upstream
/// sends `Content-Length: 0` or an empty chunked body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_body_labelled_with_a_coding_is_an_empty_body() {
    let up = FakeUpstream::start().await;
    let gw = rewriting_gateway(&up).await;
    for coding in ["gzip", "br", "zstd", "deflate"] {
        let length = format!("/api/v1/empty/{coding}/length");
        up.on(
            &length,
            fixed(StatusCode::OK, &[JSON, ("content-encoding", coding)], ""),
        );
        let chunked_route = format!("/api/v1/empty/{coding}/chunked");
        let coding_owned = coding.to_owned();
        up.on(
            &chunked_route,
            custom(move |_| {
                let coding = coding_owned.clone();
                async move {
                    upstream_response(
                        StatusCode::OK,
                        &[JSON, ("content-encoding", &coding)],
                        upstream_stream(futures_util::stream::empty()),
                    )
                }
            }),
        );
        for route in [length, chunked_route] {
            let io = connect(INSIDE, gw.addr).await;
            let req = build(
                gw.addr,
                "GET",
                &route,
                &[("accept-encoding", "identity")],
                "",
            );
            let r = exchange_on(io, req)
                .await
                .unwrap_or_else(|e| panic!("{route}: {e}"));
            assert_eq!(r.status, StatusCode::OK, "{route}");
            assert!(r.body.is_empty(), "{route}: {:?}", r.body);
            up.only(&route);
        }
    }
}
