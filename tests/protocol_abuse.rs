//! HTTP/1.1 protocol abuse over raw TCP: request smuggling, header
//! obfuscation, oversized heads and pipelining tricks, sent byte for byte to
//! the real gateway in front of a recording upstream.
//!
//! Every case asserts three things:
//! - the gateway refuses (a 4xx, or closes without answering) or normalizes
//!   the request into one unambiguous message;
//! - it stays up: a normal share read afterwards, on a new connection,
//!   succeeds;
//! - the upstream got exactly the requests the policy approved (method,
//!   path, body), each framed as it says (RFC 9112 §6.3), and never a second
//!   request smuggled inside the first.
//!
//! The smuggled payload is always a share-management write from the
//! outsider: the policy refuses it (403), so if it ever reaches the upstream
//! the gateway was desynchronized.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An open route (class "other": anyone may use it) whose body the gateway
/// streams to the upstream as it arrives.
const OPEN: &str = "/api/v1/runs/query";
/// A share read route that takes POST: the gateway reads its body (up to
/// `max_public_body_bytes`) before forwarding.
fn share_post() -> String {
    fill("/api/v1/public/{t}/runs/query")
}
fn share_get() -> String {
    fill("/api/v1/public/{t}/run")
}
/// The write that must never be smuggled through.
fn smuggled() -> String {
    fill("DELETE /api/v1/runs/{id}/share HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n")
}

const MAX_HEADER_BYTES: usize = 8192;
const MAX_HEADERS: usize = 32;

/// The test policy, plus `10.0.0.0/8` inside (so that a spoofed forwarding
/// address would grant access if it were believed) and tight head limits.
async fn start() -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.inside = vec!["127.0.0.2/32", "10.0.0.0/8"];
    let toml = format!(
        "{}\n[limits]\nmax_header_bytes = {MAX_HEADER_BYTES}\nmax_headers = {MAX_HEADERS}\nheader_timeout = \"10s\"\n",
        setup.toml()
    );
    let gw = TestGateway::start(&toml).await;
    (up, gw)
}

// ---------------------------------------------------------------------------
// Raw exchange

/// What came back on one raw connection.
#[derive(Debug)]
struct Answer {
    /// The responses in order: status and body.
    responses: Vec<(u16, String)>,
    /// Bytes after the last complete response (should be none).
    trailing: String,
}

impl Answer {
    fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.0).collect()
    }
}

/// Writes `raw` from `from` and reads until the gateway closes the
/// connection. The write runs beside the read: a gateway that answers and
/// closes before reading everything must not block the test. A reset after
/// the answer counts as a close (a server closing with unread input makes
/// the kernel send RST, RFC 9112 §9.6).
async fn exchange(from: IpAddr, gw: SocketAddr, raw: &[u8]) -> Answer {
    let stream = connect(from, gw).await;
    let (mut rd, mut wr) = stream.into_split();
    let raw = raw.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&raw).await;
        // Keep the write half open: a half-close could be taken as the
        // client giving up. Dropping it at the end of the task is fine.
        wr
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    within("the gateway to answer and close", async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading the raw answer: {e}"),
            }
        }
    })
    .await;
    drop(within("the raw write", writer).await);
    parse_responses(&out)
}

/// Splits an HTTP/1.1 byte stream into responses (Content-Length and
/// chunked bodies; every response the gateway sends has one or the other).
fn parse_responses(mut bytes: &[u8]) -> Answer {
    let mut responses = Vec::new();
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let Some(status) = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
        else {
            break;
        };
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
        let mut rest = &bytes[end + 4..];
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let Some(eol) = find(rest, b"\r\n") else {
                    return Answer {
                        responses,
                        trailing: String::from_utf8_lossy(bytes).into_owned(),
                    };
                };
                let size = std::str::from_utf8(&rest[..eol])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .unwrap_or(0);
                rest = &rest[eol + 2..];
                if size == 0 {
                    rest = rest.get(2..).unwrap_or_default();
                    break;
                }
                let take = size.min(rest.len());
                body.extend_from_slice(&rest[..take]);
                rest = rest.get(take + 2..).unwrap_or_default();
            }
            body
        } else {
            let n = if (100..200).contains(&status) || status == 204 || status == 304 {
                0
            } else {
                length.unwrap_or(0)
            };
            let take = n.min(rest.len());
            let body = rest[..take].to_vec();
            rest = &rest[take..];
            body
        };
        responses.push((status, String::from_utf8_lossy(&body).into_owned()));
        bytes = rest;
    }
    Answer {
        responses,
        trailing: String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Assertions

/// The gateway refused: every answer is a 4xx (there may be none: a close
/// without an answer is also a refusal), and nothing follows.
fn assert_refused(what: &str, a: &Answer) {
    assert!(
        a.responses.iter().all(|(s, _)| (400..500).contains(s)),
        "{what}: expected a refusal (4xx or a close), got {a:?}"
    );
    assert!(
        a.trailing.is_empty(),
        "{what}: bytes after the answer: {a:?}"
    );
}

/// `(method, path, body)` of a request the upstream must have received.
type Expected<'a> = (&'a str, &'a str, &'a str);

/// The upstream received exactly `expected`, in order, each framed
/// consistently: no request carries both framings, and a Content-Length is
/// one plain decimal equal to the body it framed.
fn assert_upstream(what: &str, up: &FakeUpstream, expected: &[Expected<'_>]) {
    let got = up.take();
    let seen: Vec<(String, String, String)> = got
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.target.clone(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(m, p, b)| ((*m).to_owned(), (*p).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(seen, want, "{what}: what the upstream received");
    for r in &got {
        let cl = r.header_all("content-length");
        let te = r.header_all("transfer-encoding");
        assert!(
            cl.is_empty() || te.is_empty(),
            "{what}: upstream request with both Content-Length {cl:?} and Transfer-Encoding {te:?}"
        );
        assert!(
            cl.len() <= 1,
            "{what}: upstream request with several Content-Length lines {cl:?}"
        );
        if let Some(v) = cl.first() {
            assert_eq!(
                v,
                &r.body.len().to_string(),
                "{what}: upstream Content-Length is not the plain length of the body"
            );
        }
        assert!(
            te.iter().all(|v| v.eq_ignore_ascii_case("chunked")),
            "{what}: upstream Transfer-Encoding {te:?}"
        );
        assert_eq!(
            r.header("host").as_deref(),
            Some(up.addr.to_string().as_str()),
            "{what}: the upstream must get its own Host"
        );
        assert!(
            r.headers.keys().all(|k| !k.as_str().contains('_')),
            "{what}: a header name with '_' reached the upstream: {:?}",
            r.headers.keys().collect::<Vec<_>>()
        );
    }
}

/// A normal share read on a new connection succeeds and reaches the
/// upstream alone.
async fn assert_still_up(what: &str, gw: &TestGateway, up: &FakeUpstream) {
    let reply = request(INSIDE, gw.addr, "GET", &share_get(), &[], "").await;
    assert_eq!(
        reply.status,
        200,
        "{what}: the gateway must still serve: {}",
        reply.summary()
    );
    assert_upstream(
        &format!("{what}: the follow-up read"),
        up,
        &[("GET", &share_get(), "")],
    );
}

fn post(target: &str, framing: &str, body: &str) -> String {
    format!("POST {target} HTTP/1.1\r\nHost: sharegate.test\r\n{framing}\r\n{body}")
}

// ---------------------------------------------------------------------------
// Message framing (RFC 9112 §6)

/// `Content-Length` and `Transfer-Encoding: chunked` together: hyper takes
/// the chunked framing, drops the Content-Length and closes after answering
/// (RFC 9112 §6.3 item 3), so what follows the chunked body is never read
/// as a request. Both header orders, on a streamed and a buffered route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_normalized_and_the_rest_is_never_a_request() {
    let (up, gw) = start().await;
    for target in [OPEN.to_owned(), share_post()] {
        for framing in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ] {
            let what = format!("CL+TE {framing:?} on {target}");
            // By Content-Length the body is "0\r\n\r\n"; by chunked it is
            // empty and the DELETE would be the next request.
            let raw = post(&target, framing, &format!("0\r\n\r\n{}", smuggled()));
            let from = if target == OPEN { OUTSIDE } else { INSIDE };
            let a = exchange(from, gw.addr, raw.as_bytes()).await;
            assert_eq!(a.statuses(), [200], "{what}: one answer, then close: {a:?}");
            assert!(a.trailing.is_empty(), "{what}: {a:?}");
            assert_upstream(&what, &up, &[("POST", &target, "")]);

            // A chunked body with content: the chunks, not the length, frame it.
            let what = format!("{what} with a body");
            let raw = post(
                &target,
                framing,
                &format!("5\r\nhello\r\n0\r\n\r\n{}", smuggled()),
            );
            let a = exchange(from, gw.addr, raw.as_bytes()).await;
            assert_eq!(a.statuses(), [200], "{what}: {a:?}");
            assert_upstream(&what, &up, &[("POST", &target, "hello")]);
        }
    }
    assert_still_up("CL+TE", &gw, &up).await;
}

/// Two Content-Length lines that disagree: 400 and close (RFC 9112 §6.3
/// item 5). Two that agree are one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_are_refused() {
    let (up, gw) = start().await;
    for framing in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 6\r\nContent-Length: 5\r\n",
        "Content-Length: 0\r\nContent-Length: 5\r\n",
    ] {
        let what = format!("duplicate Content-Length {framing:?}");
        let raw = post(OPEN, framing, &format!("hello{}", smuggled()));
        let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
        assert_eq!(a.statuses(), [400], "{what}: {a:?}");
        assert_upstream(&what, &up, &[]);
    }
    let what = "two equal Content-Length lines";
    let raw = post(
        OPEN,
        "Content-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n",
        "hello",
    );
    let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [200], "{what}: {a:?}");
    assert_upstream(what, &up, &[("POST", OPEN, "hello")]);
    assert_still_up("duplicate Content-Length", &gw, &up).await;
}

/// Content-Length is `1*DIGIT` (RFC 9110 §8.6): a sign, a list, hex are
/// refused. Leading whitespace is the field's optional whitespace (RFC 9110
/// §5.5), not part of the value, so ` 5` is 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_content_length_is_refused() {
    let (up, gw) = start().await;
    for value in ["+5", "5,5", "5, 5", "0x5", "-5", "5 5", "05x", ""] {
        for target in [OPEN.to_owned(), share_post()] {
            let what = format!("Content-Length {value:?} on {target}");
            let raw = post(
                &target,
                &format!("Content-Length: {value}\r\n"),
                &format!("hello{}", smuggled()),
            );
            let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
            assert_eq!(a.statuses(), [400], "{what}: {a:?}");
            assert_upstream(&what, &up, &[]);
        }
    }
    let what = "Content-Length with leading whitespace";
    let raw = post(
        OPEN,
        "Content-Length:   5\r\nConnection: close\r\n",
        "hello",
    );
    let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [200], "{what}: {a:?}");
    assert_upstream(what, &up, &[("POST", OPEN, "hello")]);
    assert_still_up("malformed Content-Length", &gw, &up).await;
}

/// Transfer-Encoding spellings. A request whose final coding is not exactly
/// `chunked` is refused (RFC 9112 §6.3 item 4); surrounding whitespace is
/// optional whitespace and `chunked` is case-insensitive, so those are
/// chunked. The gateway re-frames what it forwards, so the upstream never
/// sees the client's spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_transfer_encoding_is_refused_or_normalized() {
    let (up, gw) = start().await;
    let body = format!("5\r\nhello\r\n0\r\n\r\n{}", smuggled());
    for framing in [
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
        "Transfer-Encoding: chunked;q=1\r\n",
        "Transfer-Encoding: \"chunked\"\r\n",
        // Content-Length is not a fallback for a refused Transfer-Encoding.
        "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n",
    ] {
        for target in [OPEN.to_owned(), share_post()] {
            let what = format!("{framing:?} on {target}");
            let a = exchange(INSIDE, gw.addr, post(&target, framing, &body).as_bytes()).await;
            assert_eq!(a.statuses(), [400], "{what}: {a:?}");
            assert_upstream(&what, &up, &[]);
        }
    }
    for framing in [
        "Transfer-Encoding: chunked \r\n",
        "Transfer-Encoding:\tchunked\r\n",
        "Transfer-Encoding: CHUNKED\r\n",
        "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
    ] {
        for target in [OPEN.to_owned(), share_post()] {
            let what = format!("{framing:?} on {target}");
            // The answer comes, then the smuggled DELETE is read as the
            // next request on the connection: refused for the outsider.
            let a = exchange(OUTSIDE, gw.addr, post(&target, framing, &body).as_bytes()).await;
            if target == OPEN {
                assert_eq!(a.statuses()[0], 200, "{what}: {a:?}");
                assert_upstream(&what, &up, &[("POST", &target, "hello")]);
            } else {
                assert_eq!(a.statuses()[0], 403, "{what}: {a:?}");
                assert_upstream(&what, &up, &[]);
            }
            assert!(
                a.statuses()[1..].iter().all(|s| *s == 403),
                "{what}: the pipelined DELETE must be refused: {a:?}"
            );
        }
    }
    assert_still_up("obfuscated Transfer-Encoding", &gw, &up).await;
}

/// Chunk sizes are `1*HEXDIG` that fit (RFC 9112 §7.1). A bad one is the
/// client's error (400) and never reaches the upstream as a request. On a
/// share route the body is read before forwarding; on a streamed route the
/// upstream may have seen the head of the request, but the gateway aborts
/// its body, so at most that one request, unfinished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_sizes_are_refused() {
    let (up, gw) = start().await;
    for size in [
        "zz",
        "-5",
        "ffffffffffffffffff",
        "10000000000000000",
        "0x5",
        " 5",
    ] {
        let body = format!("{size}\r\nhello\r\n0\r\n\r\n{}", smuggled());
        let framing = "Transfer-Encoding: chunked\r\n";

        let what = format!("chunk size {size:?} on a share route");
        let a = exchange(
            INSIDE,
            gw.addr,
            post(&share_post(), framing, &body).as_bytes(),
        )
        .await;
        eprintln!("{what}: answers {:?}", a.statuses());
        assert_refused(&what, &a);
        assert_upstream(&what, &up, &[]);

        let what = format!("chunk size {size:?} on a streamed route");
        let a = exchange(OUTSIDE, gw.addr, post(OPEN, framing, &body).as_bytes()).await;
        // The client's malformed body is the client's error (4xx), not a
        // failure of the upstream (502).
        assert_refused(&what, &a);
        let got = up.take();
        eprintln!(
            "{what}: answers {:?}, upstream saw {}",
            a.statuses(),
            got.len()
        );
        assert!(
            got.len() <= 1
                && got
                    .iter()
                    .all(|r| r.method == "POST" && r.target == OPEN && !r.body.ends_with(b"hello")),
            "{what}: at most the aborted POST may reach the upstream: {:?}",
            got.iter()
                .map(|r| format!("{} {} {:?}", r.method, r.target, r.body))
                .collect::<Vec<_>>()
        );
    }
    assert_still_up("invalid chunk sizes", &gw, &up).await;
}

// ---------------------------------------------------------------------------
// Header syntax (RFC 9112 §5)

/// Obsolete line folding, whitespace before the colon, bare CR and other
/// broken header lines are refused with 400 (RFC 9112 §5.1, §5.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_header_lines_are_refused() {
    let (up, gw) = start().await;
    let get = share_get();
    let cases: Vec<(&str, String)> = vec![
        (
            "obs-fold",
            format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\r\nX-Note: a\r\n folded: b\r\n\r\n"),
        ),
        (
            "obs-fold with a tab",
            format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\r\nX-Note: a\r\n\tb\r\n\r\n"),
        ),
        (
            "obs-fold continuing Transfer-Encoding",
            post(
                OPEN,
                "Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n",
                "hello",
            ),
        ),
        (
            "whitespace before the colon",
            format!("GET {get} HTTP/1.1\r\nHost : sharegate.test\r\n\r\n"),
        ),
        (
            "whitespace before the colon on Transfer-Encoding",
            post(
                OPEN,
                "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
        ),
        (
            "tab before the colon",
            format!("GET {get} HTTP/1.1\r\nHost\t: sharegate.test\r\n\r\n"),
        ),
        (
            "a line with no colon",
            format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\r\nnocolon\r\n\r\n"),
        ),
        (
            "bare CR",
            format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\rX-Evil: 1\r\n\r\n"),
        ),
        (
            "NUL in a value",
            format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\r\nX-Note: a\0b\r\n\r\n"),
        ),
        (
            "space in the request target",
            format!("GET {get} x HTTP/1.1\r\nHost: sharegate.test\r\n\r\n"),
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            format!(
                "POST {OPEN} HTTP/1.0\r\nHost: sharegate.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
    ];
    for (what, raw) in cases {
        let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
        assert_eq!(a.statuses(), [400], "{what}: {a:?}");
        assert_upstream(what, &up, &[]);
    }
    assert_still_up("broken header lines", &gw, &up).await;
}

/// Bare LF line endings: hyper accepts them (RFC 9112 §2.2 lets a recipient
/// take a lone LF as a line terminator) and the upstream receives a freshly
/// serialized request, so the client's line endings never reach it. A bare
/// LF cannot hide a second request either: framing is decided on the parsed
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_line_endings_are_normalized() {
    let (up, gw) = start().await;
    let get = share_get();

    let what = "bare LF on a share read";
    let raw = format!("GET {get} HTTP/1.1\nHost: sharegate.test\nConnection: close\n\n");
    let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [200], "{what}: {a:?}");
    assert_upstream(what, &up, &[("GET", &get, "")]);

    let what = "bare LF from the outsider";
    let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [403], "{what}: {a:?}");
    assert_upstream(what, &up, &[]);

    // Content-Length covers the smuggled request, written with bare LFs.
    let what = "bare LF smuggling inside a body";
    let inner = fill("DELETE /api/v1/runs/{id}/share HTTP/1.1\nHost: sharegate.test\n\n");
    let raw = format!(
        "POST {OPEN} HTTP/1.1\nHost: sharegate.test\nContent-Length: {}\nConnection: close\n\n{inner}",
        inner.len()
    );
    let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [200], "{what}: {a:?}");
    assert_upstream(what, &up, &[("POST", OPEN, &inner)]);

    assert_still_up("bare LF", &gw, &up).await;
}

/// `X_Forwarded_For` is not `X-Forwarded-For`: from an outsider it grants
/// nothing, and names with `_` never reach the upstream (CGI-style servers
/// fold `_` into `-`). The dashed spelling from an untrusted peer is
/// ignored too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_header_names_grant_nothing_and_never_pass() {
    let (up, gw) = start().await;
    let get = share_get();
    for header in [
        "X_Forwarded_For: 10.1.2.3",
        "X-Forwarded_For: 10.1.2.3",
        "X_Real_IP: 10.1.2.3",
        "X-Forwarded-For: 10.1.2.3",
        "X-Real-IP: 10.1.2.3",
        "Forwarded: for=10.1.2.3",
    ] {
        let what = format!("outsider with {header:?} on a share read");
        let raw = format!(
            "GET {get} HTTP/1.1\r\nHost: sharegate.test\r\n{header}\r\nConnection: close\r\n\r\n"
        );
        let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
        assert_eq!(a.statuses(), [403], "{what}: {a:?}");
        assert!(a.responses[0].1.contains(SHARE_OUTSIDE), "{what}: {a:?}");
        assert_upstream(&what, &up, &[]);

        // On an open route the request passes, without the client's copy.
        let what = format!("outsider with {header:?} on an open route");
        let raw = format!(
            "GET {OPEN} HTTP/1.1\r\nHost: sharegate.test\r\n{header}\r\nConnection: close\r\n\r\n"
        );
        let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
        assert_eq!(a.statuses(), [200], "{what}: {a:?}");
        let r = up.only(&what);
        assert_eq!(r.header_all("x-forwarded-for"), ["127.0.0.3"], "{what}");
        assert_eq!(r.header_all("x-real-ip"), ["127.0.0.3"], "{what}");
        assert!(r.header("forwarded").is_none(), "{what}");
        assert!(
            r.headers.iter().all(|(k, v)| !k.as_str().contains('_')
                && !String::from_utf8_lossy(v.as_bytes()).contains("10.1.2.3")),
            "{what}: the client's address claim reached the upstream: {:?}",
            r.headers
        );
    }
    assert_still_up("underscore headers", &gw, &up).await;
}

/// A head over `limits.max_header_bytes`, or with more than
/// `limits.max_headers` fields, gets 431 (RFC 6585 §5) and nothing reaches
/// the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431() {
    let (up, gw) = start().await;
    let get = share_get();

    let what = "one header over max_header_bytes";
    let raw = format!(
        "GET {get} HTTP/1.1\r\nHost: sharegate.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES + 1)
    );
    let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [431], "{what}: {a:?}");
    assert_upstream(what, &up, &[]);

    let what = "many small headers over max_header_bytes";
    let many: String = (0..20)
        .map(|i| format!("X-A{i}: {}\r\n", "b".repeat(500)))
        .collect();
    let raw = format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\r\n{many}\r\n");
    assert!(raw.len() > MAX_HEADER_BYTES);
    let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [431], "{what}: {a:?}");
    assert_upstream(what, &up, &[]);

    let what = "more fields than max_headers";
    let many: String = (0..MAX_HEADERS).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw = format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\r\n{many}\r\n");
    let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [431], "{what}: {a:?}");
    assert_upstream(what, &up, &[]);

    // At the limit it still works: the limit is the limit, not less.
    let what = "exactly max_headers fields";
    let many: String = (0..MAX_HEADERS - 2)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let raw =
        format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\r\n{many}Connection: close\r\n\r\n");
    let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [200], "{what}: {a:?}");
    assert_upstream(what, &up, &[("GET", &get, "")]);

    assert_still_up("oversized heads", &gw, &up).await;
}

// ---------------------------------------------------------------------------
// Request targets (RFC 9112 §3.2)

/// An absolute-form target naming another host: the gateway is not a
/// forward proxy. The upstream gets its own Host and the checked path;
/// `evil.example` only ever appears in `X-Forwarded-Host`, the header that
/// reports what the client asked for (as a `Host: evil.example` would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_never_redirect_the_upstream() {
    let (up, gw) = start().await;
    let get = share_get();
    let cases = [
        ("absolute-form", format!("GET http://evil.example{get} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n")),
        ("absolute-form with a port", format!("GET http://evil.example:8443{get} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n")),
        ("absolute-form with userinfo-like text", format!("GET http://sharegate.test@evil.example{get} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n")),
        ("absolute-form https", format!("GET https://evil.example{get} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n")),
        // RFC 9112 §3.2.2: with an absolute-form target the Host field is
        // ignored; a disagreeing one changes nothing.
        ("Host disagreeing with the authority", format!("GET http://sharegate.test{get} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")),
        ("absolute-form without Host", format!("GET http://evil.example{get} HTTP/1.1\r\nConnection: close\r\n\r\n")),
    ];
    for (what, raw) in &cases {
        let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
        let got = up.take();
        match a.statuses().as_slice() {
            [200] => {
                assert_eq!(got.len(), 1, "{what}: {a:?}");
                let r = &got[0];
                assert_eq!(
                    (r.method.as_str(), r.target.as_str()),
                    ("GET", get.as_str()),
                    "{what}"
                );
                assert_eq!(r.header("host"), Some(up.addr.to_string()), "{what}");
                for (k, v) in &r.headers {
                    let v = String::from_utf8_lossy(v.as_bytes());
                    assert!(
                        k == "x-forwarded-host" || !v.contains("evil.example"),
                        "{what}: {k}: {v} reached the upstream"
                    );
                }
            }
            s => {
                assert!(s.iter().all(|s| (400..500).contains(s)), "{what}: {a:?}");
                assert!(got.is_empty(), "{what}: refused yet forwarded");
            }
        }
        // From outside, refused whatever the authority names.
        let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
        assert_refused(what, &a);
        assert_upstream(what, &up, &[]);
    }

    // A share-management write aimed at another host is still a
    // share-management write.
    let what = "absolute-form management write from outside";
    let raw = fill("DELETE http://evil.example/api/v1/runs/{id}/share HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [403], "{what}: {a:?}");
    assert_upstream(what, &up, &[]);

    assert_still_up("absolute-form targets", &gw, &up).await;
}

/// The gateway is a reverse proxy, not a tunnel: authority-form targets
/// belong to CONNECT (RFC 9112 §3.2.3) and CONNECT opens a tunnel the
/// policy cannot see into (RFC 9110 §9.3.6), so both are refused whatever
/// the route, and nothing reaches the upstream. Asterisk-form is refused
/// as a non-path target. An absolute-form target with an empty path is
/// `/` (RFC 9112 §3.2.2) and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_authority_form_targets_are_refused() {
    let (up, gw) = start().await;
    let cases = [
        ("authority-form GET", "GET evil.example:443 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_owned()),
        ("authority-form POST", "POST 127.0.0.1:80 HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()),
        ("CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n".to_owned()),
        ("CONNECT to an open route", format!("CONNECT {OPEN} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n")),
        ("CONNECT to a share route", format!("CONNECT {} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n", share_get())),
        ("asterisk-form GET", "GET * HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n".to_owned()),
        ("asterisk-form OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n".to_owned()),
    ];
    for (what, raw) in &cases {
        for from in [OUTSIDE, INSIDE] {
            let what = format!("{what} from {from}");
            let a = exchange(from, gw.addr, raw.as_bytes()).await;
            assert_eq!(a.responses.len(), 1, "{what}: {a:?}");
            assert_refused(&what, &a);
            assert_upstream(&what, &up, &[]);
        }
    }
    let what = "absolute-form with an empty path";
    let raw =
        "GET http://sharegate.test HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n";
    let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [200], "{what}: {a:?}");
    assert_upstream(what, &up, &[("GET", "/", "")]);
    assert_still_up("CONNECT and authority-form", &gw, &up).await;
}

/// Methods are case-sensitive, but an upstream that folds case would run
/// `put` as the `PUT` the policy never judged (share creation while sharing
/// is disabled, a write on a view-only route). Like nginx, the gateway takes
/// methods in capitals (with `_` and `-`) only: anything else is `400`
/// before the policy, and the pipelined request after it is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_not_in_capitals_are_refused() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.share_extra = "sharing = \"disabled\"\n".to_owned();
    let gw = setup.start().await;
    let create = fill("/api/v1/runs/{id}/share");
    for (method, target) in [
        ("put", create.as_str()),
        ("Put", create.as_str()),
        (
            "post",
            "/api/v2/runs/1b4e28ba-2fa1-11d2-883f-0016d3cca427/share",
        ),
        ("delete", &share_get()),
        ("get", &share_get()),
        ("GeT", OPEN),
        ("patch", "/api/v1/orgs/current/info"),
        ("M-search", OPEN),
    ] {
        let what = format!("{method} {target}");
        let raw = format!(
            "{method} {target} HTTP/1.1\r\nHost: sharegate.test\r\nContent-Length: 2\r\n\r\n{{}}\
             GET {OPEN} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n"
        );
        let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
        assert_eq!(a.statuses(), [400, 200], "{what}: {a:?}");
        assert_upstream(&what, &up, &[("GET", OPEN, "")]);
    }
    // Extension methods in capitals pass where the policy lets them.
    for method in ["PROPFIND", "M-SEARCH", "X_CUSTOM"] {
        let raw = format!(
            "{method} {OPEN} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n"
        );
        let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
        assert_eq!(a.statuses(), [200], "{method}: {a:?}");
        assert_upstream(method, &up, &[(method, OPEN, "")]);
    }
}

/// A refused request that asked `Expect: 100-continue` is refused at once,
/// with no `100` inviting a body to be thrown away (RFC 9110 §10.1.1). The
/// connection stays in step: a body the client sends anyway is read as that
/// body (or the connection is closed), never as a request, and what follows
/// it is judged on its own; the upstream sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_that_expects_100_continue_gets_no_100() {
    let (up, gw) = start().await;
    for (from, method, path) in [
        (OUTSIDE, "POST", share_post()),
        (INSIDE, "PUT", share_post()),
        (OUTSIDE, "PUT", fill("/api/v1/runs/{id}/share")),
    ] {
        let what = format!("{method} {path} from {from}");
        let mut s = connect(from, gw.addr).await;
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: sharegate.test\r\nContent-Length: 2\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write the head");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // The refusal comes without the body being sent.
        while find(&answer, b"\r\n\r\n{").is_none() {
            let n = within(&what, s.read(&mut buf)).await.expect("read");
            assert!(n > 0, "{what}: closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        assert!(!text.contains(" 100 "), "{what}: {text}");
        let status: u16 = text[9..12].parse().expect("a status");
        assert!((400..500).contains(&status), "{what}: {text}");
        // The body and a write behind it, sent anyway, go nowhere.
        let _ = s
            .write_all(smuggled().replace("DELETE", "{}DELETE").as_bytes())
            .await;
        let mut rest = Vec::new();
        let _ = within(&what, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => rest.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let rest = parse_responses(&rest);
        // Closed before the body, or the body read as the body and the
        // management write behind it refused (403) on its own.
        assert!(
            rest.statuses().is_empty() || rest.statuses() == [403],
            "{what}: {rest:?}"
        );
        assert!(rest.trailing.is_empty(), "{what}: {rest:?}");
        assert_upstream(&what, &up, &[]);
    }
    assert_still_up("refused with Expect", &gw, &up).await;
}

// ---------------------------------------------------------------------------
// Host names (`server.hosts`)

/// DNS rebinding: a page on the attacker's domain, opened by a browser
/// inside the network, re-points its name at the gateway and reads share
/// pages through that browser. The requests come from inside, so the
/// network check passes; what gives them away is the name they carry. With
/// `server.hosts` set, a request naming any host not listed (in `Host`, in
/// an absolute-form target, or both) is `421` before anything else, from
/// inside as from outside, and the upstream sees nothing; a refusal keeps
/// the connection in step (the pipelined read after it is served). The
/// listed names are served in any case, with a trailing dot, with any port,
/// and a wildcard's subdomains at any depth; `X-Forwarded-Host` is then the
/// name the client gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_server_hosts_are_misdirected() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.server_extra = r#"hosts = ["sharegate.test", "*.corp.example", "127.0.0.1"]"#.to_owned();
    let gw = setup.start().await;
    let get = share_get();
    let port = gw.addr.port();
    let head = |target: &str, fields: &str| {
        format!("GET {target} HTTP/1.1\r\n{fields}Connection: close\r\n\r\n")
    };
    let refused = [
        ("rebinding: the attacker's name", head(&get, "Host: attacker.example\r\n")),
        ("the attacker's name with the gateway's port", head(&get, &format!("Host: attacker.example:{port}\r\n"))),
        ("a listed name as a prefix", head(&get, "Host: sharegate.test.attacker.example\r\n")),
        ("a listed name as a suffix", head(&get, "Host: evilsharegate.test\r\n")),
        ("the wildcard's own domain", head(&get, "Host: corp.example\r\n")),
        ("a lookalike of the wildcard", head(&get, "Host: evilcorp.example\r\n")),
        // A reg-name may hold sub-delims no DNS name does: before the
        // wildcard's suffix they would hand X-Forwarded-Host a list whose
        // first name is the attacker's.
        ("a list ending in a wildcard's subdomain", head(&get, "Host: attacker.example,a.corp.example\r\n")),
        ("sub-delims before a wildcard's suffix", head(&get, "Host: attacker.example;x=%2f.corp.example\r\n")),
        ("an empty label before a wildcard's suffix", head(&get, "Host: a..corp.example\r\n")),
        ("user info before the attacker's name", head(&get, "Host: sharegate.test@attacker.example\r\n")),
        ("a port that is no port", head(&get, "Host: sharegate.test:99999\r\n")),
        ("two Host lines", head(&get, "Host: sharegate.test\r\nHost: attacker.example\r\n")),
        ("no Host", head(&get, "")),
        ("no Host, HTTP/1.0", format!("GET {get} HTTP/1.0\r\n\r\n")),
        ("absolute-form naming the attacker", head(&format!("http://attacker.example{get}"), "Host: sharegate.test\r\n")),
        ("absolute-form naming us, Host the attacker", head(&format!("http://sharegate.test{get}"), "Host: attacker.example\r\n")),
        ("a share-management write under the attacker's name", fill("DELETE /api/v1/runs/{id}/share HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")),
    ];
    for (what, raw) in &refused {
        for from in [INSIDE, OUTSIDE] {
            let what = format!("{what} from {from}");
            let a = exchange(from, gw.addr, raw.as_bytes()).await;
            assert_eq!(a.statuses(), [421], "{what}: {a:?}");
            assert!(
                a.responses[0].1.contains("does not serve that host name"),
                "{what}: {a:?}"
            );
            assert_upstream(&what, &up, &[]);
        }
    }

    let served = [
        ("a listed name", "sharegate.test".to_owned()),
        ("in capitals, fully qualified", "SHAREGATE.TEST.".to_owned()),
        ("with a port", "sharegate.test:8443".to_owned()),
        ("a wildcard's subdomain", "a.b.corp.example".to_owned()),
        ("the address", format!("127.0.0.1:{port}")),
    ];
    for (what, host) in &served {
        let a = exchange(
            INSIDE,
            gw.addr,
            head(&get, &format!("Host: {host}\r\n")).as_bytes(),
        )
        .await;
        assert_eq!(a.statuses(), [200], "{what}: {a:?}");
        let r = up.only(what);
        assert_eq!(r.target, get, "{what}");
        assert_eq!(r.header("host"), Some(up.addr.to_string()), "{what}");
        assert_eq!(r.header("x-forwarded-host"), Some(host.clone()), "{what}");
    }

    // A refusal leaves the connection in step: the read pipelined after it
    // is answered, and is the only request the upstream sees.
    let what = "a read pipelined after a misdirected one";
    let raw = format!(
        "GET {get} HTTP/1.1\r\nHost: attacker.example\r\n\r\n{}",
        head(&get, "Host: sharegate.test\r\n")
    );
    let a = exchange(INSIDE, gw.addr, raw.as_bytes()).await;
    assert_eq!(a.statuses(), [421, 200], "{what}: {a:?}");
    assert_upstream(what, &up, &[("GET", &get, "")]);

    assert_still_up("misdirected hosts", &gw, &up).await;
}

// ---------------------------------------------------------------------------
// Pipelining

/// A refused write followed, in the same TCP write, by an allowed read.
/// Observed: the gateway keeps the connection, answers both in order (the
/// refusal, then the read), and only the read reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_request_after_a_refused_one_is_answered_in_order() {
    let (up, gw) = start().await;
    let get = share_get();
    let read = format!("GET {get} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n");
    let cases = [
        (
            "view-only DELETE on a share route, then a read",
            INSIDE,
            format!("DELETE {get} HTTP/1.1\r\nHost: sharegate.test\r\n\r\n{read}"),
            405,
        ),
        (
            "outsider's share-management DELETE, then a read of an open route",
            OUTSIDE,
            fill("DELETE /api/v1/runs/{id}/share HTTP/1.1\r\nHost: sharegate.test\r\n\r\n")
                + &format!("GET {OPEN} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n"),
            403,
        ),
        (
            "view-only PUT with a body, then a read",
            INSIDE,
            format!("PUT {get} HTTP/1.1\r\nHost: sharegate.test\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}{read}"),
            405,
        ),
    ];
    for (what, from, raw, refusal) in cases {
        let a = exchange(from, gw.addr, raw.as_bytes()).await;
        assert!(a.trailing.is_empty(), "{what}: {a:?}");
        let statuses = a.statuses();
        assert_eq!(statuses[0], refusal, "{what}: {a:?}");
        let expected_path = if from == INSIDE { get.as_str() } else { OPEN };
        match statuses.as_slice() {
            [_, 200] => {
                // The read's answer is the read's: the echo names its path.
                assert!(a.responses[1].1.contains(expected_path), "{what}: {a:?}");
                assert_upstream(what, &up, &[("GET", expected_path, "")]);
            }
            [_] => assert_upstream(what, &up, &[]),
            _ => panic!("{what}: unexpected answers {a:?}"),
        }
        // Document the behaviour this test pins down.
        assert_eq!(statuses, [refusal, 200], "{what}: answered in order");
    }
    assert_still_up("pipelining", &gw, &up).await;
}

/// A second request written inside the body of a refused one: the body is
/// the body (its Content-Length covers the request line), so it is
/// discarded with the refused request or the connection is closed; it is
/// never parsed as a request. Observed: hyper discards the unread body and
/// answers the read that follows it on the connection (refused for the
/// outsider, served for the insider).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggled_in_the_body_of_a_refused_request_never_arrives() {
    let (up, gw) = start().await;
    let inner = smuggled();
    let get = share_get();
    let cases = [
        (
            "outsider's management POST",
            OUTSIDE,
            fill("POST /api/v2/runs/{id}/share HTTP/1.1\r\nHost: sharegate.test\r\n"),
        ),
        (
            "insider's view-only POST on a share page",
            INSIDE,
            fill("POST /public/{t}/r HTTP/1.1\r\nHost: sharegate.test\r\n"),
        ),
        (
            "outsider's share read POST",
            OUTSIDE,
            format!("POST {} HTTP/1.1\r\nHost: sharegate.test\r\n", share_post()),
        ),
        (
            "method override on a share route",
            INSIDE,
            format!(
                "POST {} HTTP/1.1\r\nHost: sharegate.test\r\nX-HTTP-Method-Override: DELETE\r\n",
                share_post()
            ),
        ),
    ];
    for (what, from, head) in cases {
        // Then, in the same write, an insider-style read: if the smuggled
        // DELETE were read as a request, it would come before this one.
        let raw = format!(
            "{head}Content-Length: {}\r\n\r\n{inner}GET {get} HTTP/1.1\r\nHost: sharegate.test\r\nConnection: close\r\n\r\n",
            inner.len()
        );
        let a = exchange(from, gw.addr, raw.as_bytes()).await;
        let statuses = a.statuses();
        eprintln!(
            "{what}: answers {statuses:?}, upstream saw {:?}",
            up.requests()
                .iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>()
        );
        assert!(
            !statuses.is_empty() && (400..500).contains(&statuses[0]),
            "{what}: the first answer is the refusal: {a:?}"
        );
        assert!(
            statuses.len() <= 2,
            "{what}: a third answer means the body was parsed: {a:?}"
        );
        let got = up.take();
        assert!(
            got.iter().all(|r| r.method == "GET" && r.target == get),
            "{what}: only the trailing read may reach the upstream: {:?}",
            got.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>()
        );
        assert!(got.len() <= 1, "{what}");
        if from == OUTSIDE {
            // The trailing read is a share read: refused for the outsider.
            assert!(got.is_empty(), "{what}");
            assert!(statuses[1..].iter().all(|s| *s == 403), "{what}: {a:?}");
        }
    }
    assert_still_up("smuggling in a refused body", &gw, &up).await;
}

// ---------------------------------------------------------------------------
// Protocol upgrades (h2c smuggling)

/// An upgrade is a raw tunnel to the upstream: whatever the client writes
/// after a `101` reaches the upstream unchecked. So only WebSocket, the one
/// upgrade a web app needs, is passed on (on an ordinary route; share routes
/// take none). `Upgrade: h2c` is the classic smuggle: an upstream that
/// speaks h2c would switch, and the client's HTTP/2 requests inside the
/// tunnel would skip every rule. The gateway drops such an `Upgrade` (it is
/// hop-by-hop) and forwards the request as an ordinary one; and a `101` the
/// client did not get to ask for, or naming another protocol than the one
/// asked for, is a bad upstream answer (502), never a tunnel.
///
/// The upstream here answers `101` to anything, as a server that speaks
/// h2c would to an h2c upgrade. After the head, the client writes the
/// share-management DELETE the policy refuses the outsider: it must be
/// read by the gateway as the next request (403), never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_are_tunnelled() {
    let (up, gw) = start().await;
    up.on("/api/v1/ws", Behaviour::UpgradeEcho);
    up.on(
        "/api/v1/ws-h2c",
        custom(|_| async {
            let mut r = http::Response::new(upstream_full(""));
            *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", http::HeaderValue::from_static("upgrade"));
            r.headers_mut()
                .insert("upgrade", http::HeaderValue::from_static("h2c"));
            r
        }),
    );
    // A refused WebSocket handshake: the connection stays HTTP/1.1 (a proxy
    // that tunnelled on the client's request alone, not the upstream's 101,
    // has been broken this way).
    up.on(
        "/api/v1/ws-426",
        custom(|_| async {
            let mut r = http::Response::new(upstream_full("upgrade required"));
            *r.status_mut() = http::StatusCode::UPGRADE_REQUIRED;
            r
        }),
    );
    let h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    let websocket = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        ("an h2c upgrade", "/api/v1/ws", h2c.to_owned(), None, 502),
        (
            "an h2c upgrade in capitals",
            "/api/v1/ws",
            "Connection: upgrade\r\nUpgrade: H2C\r\n".to_owned(),
            None,
            502,
        ),
        (
            "WebSocket offered beside h2c",
            "/api/v1/ws",
            format!("Connection: upgrade\r\nUpgrade: websocket, h2c\r\n{websocket}"),
            None,
            502,
        ),
        (
            "two Upgrade lines",
            "/api/v1/ws",
            format!("Connection: upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n{websocket}"),
            None,
            502,
        ),
        (
            "an upgrade to TLS",
            "/api/v1/ws",
            "Connection: upgrade\r\nUpgrade: TLS/1.2\r\n".to_owned(),
            None,
            502,
        ),
        (
            "a WebSocket upgrade the upstream answers with h2c",
            "/api/v1/ws-h2c",
            format!("Connection: upgrade\r\nUpgrade: websocket\r\n{websocket}"),
            Some("websocket"),
            502,
        ),
        (
            "a WebSocket upgrade the upstream refuses",
            "/api/v1/ws-426",
            format!("Connection: upgrade\r\nUpgrade: WebSocket\r\n{websocket}"),
            Some("websocket"),
            426,
        ),
    ];
    for (what, path, headers, forwarded_upgrade, answer) in cases {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: sharegate.test\r\n{headers}\r\n{}",
            smuggled()
        );
        let a = exchange(OUTSIDE, gw.addr, raw.as_bytes()).await;
        assert_eq!(
            a.statuses(),
            [answer, 403],
            "{what}: no tunnel, the next bytes are a request: {a:?}"
        );
        assert!(a.trailing.is_empty(), "{what}: {a:?}");
        let got = up.take();
        assert_eq!(
            got.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>(),
            [format!("GET {path}")],
            "{what}: what the upstream received"
        );
        assert_eq!(
            got[0].header("upgrade").as_deref(),
            forwarded_upgrade,
            "{what}: the Upgrade the upstream saw"
        );
        assert_eq!(got[0].header("http2-settings"), None, "{what}");
    }
    assert_still_up("upgrades", &gw, &up).await;
}

/// A chunked body's trailer section (RFC 9112 §7.1.2) and chunk extensions
/// (§7.1.1) stay with the gateway: the body is framed anew for the
/// upstream, without extensions and without trailers (no `Trailer` field
/// is forwarded, so hyper sends none). A trailer would otherwise carry past
/// the gateway what it removes from heads: a client address, a forwarded
/// identity header, a path override.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_trailers_and_extensions_never_reach_the_upstream() {
    let (up, gw) = start().await;
    for target in [OPEN.to_owned(), share_post()] {
        let what = format!("trailers on {target}");
        let raw = post(
            &target,
            "Transfer-Encoding: chunked\r\nTrailer: X-Forwarded-For, X-Real-IP, X-Original-URL\r\nConnection: close\r\n",
            &format!(
                "5;ext=\"{}\"\r\nhello\r\n0;last\r\nX-Forwarded-For: 10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\nX-Original-URL: {}\r\n\r\n",
                "a".repeat(64),
                fill("/api/v1/runs/{id}/share"),
            ),
        );
        let from = if target == OPEN { OUTSIDE } else { INSIDE };
        let a = exchange(from, gw.addr, raw.as_bytes()).await;
        assert_eq!(a.statuses(), [200], "{what}: {a:?}");
        let r = up.only(&what);
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("POST", target.as_str()),
            "{what}"
        );
        assert_eq!(r.body.as_ref(), b"hello", "{what}");
        assert!(
            r.trailers.as_ref().is_none_or(http::HeaderMap::is_empty),
            "{what}: {:?}",
            r.trailers
        );
        for (k, v) in r.headers.iter() {
            assert!(!v.as_bytes().starts_with(b"10.9.9.9"), "{what}: {k}: {v:?}");
            assert!(k != "x-original-url" && k != "trailer", "{what}: {k}");
        }
    }
    assert_still_up("chunked trailers", &gw, &up).await;
}
