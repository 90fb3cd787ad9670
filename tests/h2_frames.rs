//! HTTP/2 abuse in raw frames over TLS (ALPN `h2`) against the real gateway
//! and a recording upstream: connection-specific headers, `:authority`
//! against `host`, request splitting through header values, DATA longer
//! than `content-length`, rapid reset and CONTINUATION floods.
//!
//! The gateway speaks HTTP/1.1 to the upstream, so every HTTP/2 request is
//! a downgrade: whatever HTTP/2 lets through must not become a second
//! HTTP/1.1 request or a misframed body upstream. Each case asserts the
//! stream (or connection) error, that the upstream heard nothing it should
//! not, and that the gateway still serves a new connection.
//!
//! Frames are written by hand (RFC 9113 §4.1) because the point is to send
//! what a correct client library refuses to send.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------
// The gateway over TLS

const MAX_HEADER_BYTES: usize = 16 * 1024;

async fn start_tls(up: &FakeUpstream) -> TlsGateway {
    TlsGateway::start(
        up,
        &format!("[limits]\nmax_header_bytes = {MAX_HEADER_BYTES}\n"),
    )
    .await
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection from `from` that negotiated `h2` by ALPN.
async fn tls_h2(from: IpAddr, gw: &TlsGateway) -> Tls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(gw.roots.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = connect(from, gw.gw.addr).await;
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = within(
        "the TLS handshake",
        TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake with the test certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

fn authority(gw: &TlsGateway) -> String {
    format!("localhost:{}", gw.gw.addr.port())
}

/// A well-formed share read over a new connection, through hyper's own
/// HTTP/2 client: the gateway is still serving.
async fn assert_still_up(what: &str, gw: &TlsGateway, up: &FakeUpstream) {
    let tls = tls_h2(INSIDE, gw).await;
    let (mut sender, conn) = within(
        "the HTTP/2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .uri(format!("https://{}{}", authority(gw), share_get()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = within("the HTTP/2 response", sender.send_request(req))
        .await
        .unwrap_or_else(|e| panic!("{what}: a new connection must be served: {e}"));
    let reply = read_reply(resp).await;
    assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.summary());
    let r = up.only(&format!("{what}: the follow-up read"));
    assert_eq!(r.target, share_get(), "{what}");
}

fn share_get() -> String {
    fill("/api/v1/public/{t}/run")
}

fn share_post() -> String {
    fill("/api/v1/public/{t}/runs/query")
}

// ---------------------------------------------------------------------------
// Frames (RFC 9113 §4.1, §6)

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 0x1;
const CANCEL: u32 = 0x8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24, "frame too long");
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One complete request head: HEADERS with END_HEADERS, and END_STREAM
/// unless a body follows.
fn headers_frame(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &hpack(fields))
}

// ---------------------------------------------------------------------------
// HPACK (RFC 7541), by hand
//
// The encoder writes every field as a "literal header field without
// indexing, new name" (§6.2.2: a 0x00 byte, then the name and the value as
// string literals) and never uses Huffman coding (§5.2, H bit 0). That needs
// no dynamic table and no Huffman table, so it is a few lines anyone can
// check against the RFC, and unlike an HPACK crate it sends whatever it is
// given: upper-case names, `connection`, a `host` that disagrees with
// `:authority`, CR LF in a value.

fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        hpack_literal(&mut out, name.as_bytes(), value.as_bytes());
    }
    out
}

fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_int(out, name.len(), 7, 0x00);
    out.extend_from_slice(name);
    hpack_int(out, value.len(), 7, 0x00);
    out.extend_from_slice(value);
}

/// An integer with an N-bit prefix (§5.1); `high` holds the bits above it.
fn hpack_int(out: &mut Vec<u8>, mut value: usize, prefix: u32, high: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Reads the `:status` of a response header block. The gateway's encoder
/// (the h2 crate) may index, use the dynamic table and Huffman-code values,
/// so this decodes enough of HPACK to follow it: every representation is
/// walked, only `:status` values are decoded, and Huffman decoding knows
/// just the ten digits. `table` is the connection's dynamic table, newest
/// first (`Some(status)` for `:status` entries); eviction is not modelled,
/// which holds while a connection carries a handful of small responses.
fn hpack_status(block: &[u8], table: &mut Vec<Option<u16>>) -> Option<u16> {
    const STATIC_STATUS: [(usize, u16); 7] = [
        (8, 200),
        (9, 204),
        (10, 206),
        (11, 304),
        (12, 400),
        (13, 404),
        (14, 500),
    ];
    let lookup = |table: &Vec<Option<u16>>, idx: usize| -> (bool, Option<u16>) {
        if let Some((_, s)) = STATIC_STATUS.iter().find(|(i, _)| *i == idx) {
            (true, Some(*s))
        } else if idx >= 62 {
            let e = table.get(idx - 62).copied().flatten();
            (e.is_some(), e)
        } else {
            (false, None)
        }
    };
    let mut status = None;
    let mut i = 0;
    while i < block.len() {
        let b = block[i];
        if b & 0x80 != 0 {
            let idx = read_int(block, &mut i, 7)?;
            if let (true, Some(s)) = lookup(table, idx) {
                status = Some(s);
            }
        } else if b & 0x40 != 0 || b & 0xe0 == 0 {
            // With incremental indexing (01), without indexing (0000) or
            // never indexed (0001): a name (index or literal), then a value.
            let incremental = b & 0x40 != 0;
            let idx = read_int(block, &mut i, if incremental { 6 } else { 4 })?;
            let is_status = if idx == 0 {
                read_str(block, &mut i)?.as_deref() == Some(":status")
            } else {
                lookup(table, idx).0
            };
            let value = read_str(block, &mut i)?;
            let s = if is_status {
                value.and_then(|v| v.parse::<u16>().ok())
            } else {
                None
            };
            if is_status {
                status = s.or(status);
            }
            if incremental {
                table.insert(0, s);
            }
        } else {
            // Dynamic table size update (§6.3).
            let size = read_int(block, &mut i, 5)?;
            if size == 0 {
                table.clear();
            }
        }
    }
    status
}

fn read_int(block: &[u8], i: &mut usize, prefix: u32) -> Option<usize> {
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(*block.get(*i)?) & max;
    *i += 1;
    if value < max {
        return Some(value);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*i)?;
        *i += 1;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
}

/// A string literal: `Some(text)` when it is plain or Huffman-coded digits,
/// `None` for any other Huffman-coded text (skipped).
fn read_str(block: &[u8], i: &mut usize) -> Option<Option<String>> {
    let huffman = block.get(*i)? & 0x80 != 0;
    let len = read_int(block, i, 7)?;
    let bytes = block.get(*i..*i + len)?;
    *i += len;
    if !huffman {
        return Some(Some(String::from_utf8_lossy(bytes).into_owned()));
    }
    Some(huffman_digits(bytes))
}

/// Huffman codes of '0'..'9' (RFC 7541 Appendix B): 00000, 00001, 00010
/// (5 bits), then 011001 to 011111 (6 bits); padding is all ones.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |k| (b >> k) & 1))
        .collect();
    let mut out = String::new();
    let mut i = 0;
    let code = |from: usize, n: usize| -> Option<u8> {
        bits.get(from..from + n)
            .map(|b| b.iter().fold(0u8, |a, bit| a << 1 | bit))
    };
    while i < bits.len() {
        let rest = bits.len() - i;
        if rest < 8 && bits[i..].iter().all(|b| *b == 1) {
            break;
        }
        match code(i, 5) {
            Some(c @ 0..=2) => {
                out.push(char::from(b'0' + c));
                i += 5;
            }
            _ => match code(i, 6) {
                Some(c @ 0x19..=0x1f) => {
                    out.push(char::from(b'3' + (c - 0x19)));
                    i += 6;
                }
                _ => return None,
            },
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// A raw HTTP/2 client connection

/// What the server said about one stream, or about the connection.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// Response headers with this `:status`.
    Status(u16),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed (EOF or reset) without a GOAWAY.
    Closed,
}

struct H2<S> {
    io: S,
    buf: Vec<u8>,
    table: Vec<Option<u16>>,
    /// Every frame type received, in order (for failure messages).
    seen: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> H2<S> {
    /// Sends the preface and an empty SETTINGS frame.
    async fn start(mut io: S) -> H2<S> {
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        within("the HTTP/2 preface", io.write_all(&hello))
            .await
            .expect("write the preface");
        H2 {
            io,
            buf: Vec::new(),
            table: Vec::new(),
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        within("an HTTP/2 write", async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
    }

    /// The next frame: (type, flags, stream, payload), or `None` at EOF.
    async fn frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    self.seen.push(head[3]);
                    return Some((head[3], head[4], stream, head[9..].to_vec()));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server decides `stream`'s fate (response headers or
    /// RST_STREAM) or the connection's (GOAWAY, close), acknowledging
    /// SETTINGS on the way.
    async fn outcome(&mut self, stream: u32) -> Event {
        within("the server's verdict on the stream", async {
            while let Some((kind, flags, id, payload)) = self.frame().await {
                match kind {
                    SETTINGS if flags & ACK == 0 => {
                        let _ = self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                    }
                    HEADERS if id == stream => {
                        let status = hpack_status(&payload, &mut self.table);
                        return Event::Status(status.expect("a :status in the response"));
                    }
                    HEADERS => {
                        hpack_status(&payload, &mut self.table);
                    }
                    RST_STREAM if id == stream => return Event::Reset(code(&payload, 0)),
                    GOAWAY => return Event::GoAway(code(&payload, 4)),
                    _ => {}
                }
            }
            Event::Closed
        })
        .await
    }

    /// Reads until the connection ends: the GOAWAY code if one came.
    async fn until_closed(&mut self) -> Event {
        let mut goaway = None;
        within("the server to close the connection", async {
            while let Some((kind, _, _, payload)) = self.frame().await {
                if kind == GOAWAY {
                    goaway = Some(code(&payload, 4));
                }
            }
        })
        .await;
        goaway.map_or(Event::Closed, Event::GoAway)
    }
}

fn code(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The request pseudo-headers for `path` (RFC 9113 §8.3.1).
fn pseudo<'a>(method: &'a str, authority: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
    ]
}

// ---------------------------------------------------------------------------
// Cases

/// HTTP/2 has no connection-specific fields (RFC 9113 §8.2.2): a request
/// carrying one is malformed and gets a stream error (RST_STREAM
/// PROTOCOL_ERROR); `te` is allowed only as `trailers`. Upper-case names
/// and CR/LF/NUL in values are malformed too (§8.2.1): forwarded over
/// HTTP/1.1 they would split the request. Observed: stream errors, after
/// which the connection serves the next stream, except upper-case names,
/// which end the connection (GOAWAY PROTOCOL_ERROR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fields_are_stream_errors_and_never_reach_the_upstream() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let auth = authority(&gw);
    let get = share_get();
    let splitting = format!(
        "x\r\n\r\n{}",
        fill("DELETE /api/v1/runs/{id}/share HTTP/1.1\r\nHost: x\r\n\r\n")
    );
    let cases: Vec<(&str, &str)> = vec![
        ("connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("te", "gzip"),
        ("te", "trailers, gzip"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "h2c"),
        ("X-Upper", "1"),
        ("x-split", &splitting),
        ("x-lf", "a\nb"),
        ("x-nul", "a\0b"),
        ("x bad", "1"),
        ("x-colon:", "1"),
    ];
    for (name, value) in cases {
        let what = format!("HEADERS with {name:?}: {value:?}");
        let mut h2 = H2::start(tls_h2(INSIDE, &gw).await).await;
        let mut fields = pseudo("GET", &auth, &get);
        fields.push((name, value));
        h2.send(&headers_frame(1, &fields, true))
            .await
            .expect("send HEADERS");
        let event = h2.outcome(1).await;
        eprintln!("{what}: {event:?}");
        up.assert_silent(&what);
        if event == Event::GoAway(PROTOCOL_ERROR) {
            // A connection error: the h2 crate treats a few malformations
            // (upper-case names) as fatal to the connection. Acceptable;
            // the next connection is checked at the end.
            continue;
        }
        assert_eq!(event, Event::Reset(PROTOCOL_ERROR), "{what}: {:?}", h2.seen);

        // After a stream error the connection is still good.
        h2.send(&headers_frame(3, &pseudo("GET", &auth, &get), true))
            .await
            .expect("send HEADERS");
        assert_eq!(
            h2.outcome(3).await,
            Event::Status(200),
            "{what}: next stream"
        );
        let r = up.only(&what);
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("GET", get.as_str())
        );
    }

    // `te: trailers` is the one allowed value; it is hop-by-hop, so the
    // upstream does not get it.
    let what = "te: trailers";
    let mut h2 = H2::start(tls_h2(INSIDE, &gw).await).await;
    let mut fields = pseudo("GET", &auth, &get);
    fields.push(("te", "trailers"));
    h2.send(&headers_frame(1, &fields, true))
        .await
        .expect("send HEADERS");
    assert_eq!(h2.outcome(1).await, Event::Status(200), "{what}");
    let r = up.only(what);
    assert!(r.header("te").is_none(), "{what}: te reached the upstream");

    assert_still_up("malformed fields", &gw, &up).await;
}

/// `host` disagreeing with `:authority` (RFC 9113 §8.3.1). Observed: the
/// request is served; the upstream gets its own `Host` and the checked
/// path, and `X-Forwarded-Host` reports `:authority`, never the `host`
/// field. Whatever names the authority, the policy is the same: an outsider
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_and_host_disagreeing_never_redirect_the_upstream() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let auth = authority(&gw);
    let get = share_get();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("host differs from :authority", {
            let mut f = pseudo("GET", &auth, &get);
            f.push(("host", "evil.example"));
            f
        }),
        (
            "host only, no :authority",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", &get),
                ("host", "evil.example"),
            ],
        ),
        ("two host fields", {
            let mut f = pseudo("GET", &auth, &get);
            f.push(("host", &auth));
            f.push(("host", "evil.example"));
            f
        }),
        (
            ":authority with userinfo",
            pseudo("GET", "user@evil.example", &get),
        ),
    ];
    for (what, fields) in &cases {
        let mut h2 = H2::start(tls_h2(INSIDE, &gw).await).await;
        h2.send(&headers_frame(1, fields, true))
            .await
            .expect("send");
        match h2.outcome(1).await {
            Event::Status(200) => {
                let r = up.only(what);
                assert_eq!(r.target, get, "{what}");
                assert_eq!(r.header_all("host"), [up.addr.to_string()], "{what}");
                let xfh = r.header("x-forwarded-host").unwrap_or_default();
                for (k, v) in &r.headers {
                    let v = String::from_utf8_lossy(v.as_bytes());
                    assert!(
                        !v.contains("evil.example") || k == "x-forwarded-host",
                        "{what}: {k}: {v} reached the upstream"
                    );
                }
                eprintln!("{what}: served; X-Forwarded-Host {xfh:?}");
            }
            Event::Status(s) if (400..500).contains(&s) => up.assert_silent(what),
            Event::Reset(_) | Event::GoAway(_) | Event::Closed => up.assert_silent(what),
            e => panic!("{what}: unexpected {e:?}"),
        }

        let mut h2 = H2::start(tls_h2(OUTSIDE, &gw).await).await;
        h2.send(&headers_frame(1, fields, true))
            .await
            .expect("send");
        let e = h2.outcome(1).await;
        assert!(
            matches!(e, Event::Status(403) | Event::Reset(_) | Event::GoAway(_)),
            "{what} from outside: {e:?}"
        );
        up.assert_silent(what);
    }
    // Pinned: the disagreeing `host` is served, and X-Forwarded-Host is the
    // :authority.
    let mut h2 = H2::start(tls_h2(INSIDE, &gw).await).await;
    h2.send(&headers_frame(1, &cases[0].1, true))
        .await
        .expect("send");
    assert_eq!(h2.outcome(1).await, Event::Status(200));
    let r = up.only("host differs from :authority");
    assert_eq!(r.header("x-forwarded-host"), Some(auth.clone()));

    assert_still_up(":authority and host", &gw, &up).await;
}

/// `server.hosts` over HTTP/2: `:authority` and every `host` field must
/// name a listed host, or the stream gets `421` and the upstream nothing
/// (the HTTP/1.1 cases are in `protocol_abuse.rs`). The connection goes on
/// serving: a `421` is an answer, not a stream error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorities_outside_server_hosts_are_misdirected() {
    let up = FakeUpstream::start().await;
    let gw = TlsGateway::start_with(&up, r#"hosts = ["localhost"]"#, "").await;
    let auth = authority(&gw);
    let get = share_get();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            ":authority the attacker's",
            pseudo("GET", "attacker.example", &get),
        ),
        ("host the attacker's", {
            let mut f = pseudo("GET", &auth, &get);
            f.push(("host", "attacker.example"));
            f
        }),
        (
            "no :authority, host the attacker's",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", &get),
                ("host", "attacker.example"),
            ],
        ),
        (
            ":authority with user info",
            pseudo("GET", "localhost@attacker.example", &get),
        ),
    ];
    let mut h2 = H2::start(tls_h2(INSIDE, &gw).await).await;
    let mut stream = 1;
    for (what, fields) in &cases {
        h2.send(&headers_frame(stream, fields, true))
            .await
            .expect("send");
        assert_eq!(h2.outcome(stream).await, Event::Status(421), "{what}");
        up.assert_silent(what);
        stream += 2;
    }
    h2.send(&headers_frame(stream, &pseudo("GET", &auth, &get), true))
        .await
        .expect("send");
    assert_eq!(h2.outcome(stream).await, Event::Status(200));
    let r = up.only("the listed host");
    assert_eq!(r.header("x-forwarded-host"), Some(auth.clone()));
    assert_still_up("misdirected authorities", &gw, &up).await;
}

/// DATA beyond the declared `content-length` (RFC 9113 §8.1.1): malformed,
/// a stream error. Forwarded as HTTP/1.1 with that Content-Length, the
/// excess would be the start of the next request. On a share route the
/// body is read before forwarding, so the upstream hears nothing; on a
/// streamed route it may have seen the head, but never the excess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_content_length_is_a_stream_error() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let auth = authority(&gw);
    let smuggled = fill("DELETE /api/v1/runs/{id}/share HTTP/1.1\r\nHost: x\r\n\r\n");
    for path in [share_post(), "/api/v1/runs/query".to_owned()] {
        for (declared, body) in [
            ("5", format!("hello{smuggled}")),
            ("0", smuggled.clone()),
            ("500", "short".to_owned()),
        ] {
            let what = format!(
                "content-length {declared} with {} bytes on {path}",
                body.len()
            );
            let mut h2 = H2::start(tls_h2(INSIDE, &gw).await).await;
            let mut fields = pseudo("POST", &auth, &path);
            fields.push(("content-length", declared));
            let mut bytes = headers_frame(1, &fields, false);
            bytes.extend(frame(DATA, END_STREAM, 1, body.as_bytes()));
            h2.send(&bytes).await.expect("send");
            let e = h2.outcome(1).await;
            let got = up.requests();
            eprintln!("{what}: {e:?}, upstream saw {}", got.len());
            assert!(
                matches!(e, Event::Reset(PROTOCOL_ERROR) | Event::Status(400)),
                "{what}: {e:?} {:?}",
                h2.seen
            );
            let got = up.take();
            assert!(
                got.iter().all(|r| r.method == "POST"
                    && r.target == path
                    && !r.body.ends_with(body.as_bytes())),
                "{what}: {:?}",
                got.iter()
                    .map(|r| format!("{} {} {:?}", r.method, r.target, r.body))
                    .collect::<Vec<_>>()
            );
            if path == share_post() {
                assert!(
                    got.is_empty(),
                    "{what}: a buffered share route forwards nothing"
                );
            }
        }
    }
    assert_still_up("content-length mismatch", &gw, &up).await;
}

/// Rapid reset (CVE-2023-44487): 2000 streams opened and cancelled at once.
/// The gateway bounds the resets it absorbs (GOAWAY ENHANCE_YOUR_CALM is
/// the expected answer), forwards only the reads it had accepted, and
/// serves the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_bounded_and_the_gateway_stays_up() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let auth = authority(&gw);
    let get = share_get();
    let tls = tls_h2(INSIDE, &gw).await;
    let (rd, wr) = tokio::io::split(tls);
    // Read while writing, so the server's replies never block it.
    let reader = tokio::spawn(async move {
        let mut h2 = H2 {
            io: ReadOnly(rd),
            buf: Vec::new(),
            table: Vec::new(),
            seen: Vec::new(),
        };
        h2.until_closed().await
    });
    let mut wr = wr;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    let block = hpack(&pseudo("GET", &auth, &get));
    let mut queued = 0u32;
    let mut batch = hello;
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        if batch.len() > 32 * 1024 || i == 1999 {
            if within("a rapid-reset write", wr.write_all(&batch))
                .await
                .is_err()
            {
                break;
            }
            batch.clear();
        }
        queued = i + 1;
    }
    let _ = within("the final flush", wr.flush()).await;
    // If the gateway absorbed every reset, close our side so it ends.
    let _ = within("closing our side", wr.shutdown()).await;
    let end = within("the rapid-reset connection to end", reader)
        .await
        .expect("reader task");
    eprintln!(
        "rapid reset: wrote {queued} HEADERS+RST_STREAM pairs, connection ended with {end:?}"
    );
    assert!(
        matches!(end, Event::GoAway(_) | Event::Closed),
        "rapid reset: {end:?}"
    );
    let got = up.take();
    assert!(
        got.len() <= 2000,
        "rapid reset: {} upstream requests",
        got.len()
    );
    assert!(
        got.iter().all(|r| r.method == "GET" && r.target == get),
        "rapid reset: only the read may reach the upstream"
    );
    eprintln!("rapid reset: {} reads reached the upstream", got.len());
    assert_still_up("rapid reset", &gw, &up).await;
}

/// CONTINUATION flood (CVE-2024-27316 class): a HEADERS frame without
/// END_HEADERS followed by CONTINUATION frames far past
/// `limits.max_header_bytes`, and separately thousands of empty ones. The
/// gateway must end the connection with an error instead of buffering, and
/// serve the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_closes_the_connection() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let auth = authority(&gw);
    let get = share_get();
    let rss_before = rss_kib();

    let pad = "p".repeat(1000);
    let mut fragment = Vec::new();
    for _ in 0..15 {
        hpack_literal(&mut fragment, b"x-flood", pad.as_bytes());
    }
    let floods: Vec<(&str, Vec<u8>, usize)> = vec![
        // 15 kB per frame; 400 frames = 40x max_header_bytes.
        ("large CONTINUATION frames", fragment, 400),
        ("empty CONTINUATION frames", Vec::new(), 20_000),
    ];
    for (what, payload, count) in floods {
        let tls = tls_h2(INSIDE, &gw).await;
        let (rd, mut wr) = tokio::io::split(tls);
        let reader = tokio::spawn(async move {
            let mut h2 = H2 {
                io: ReadOnly(rd),
                buf: Vec::new(),
                table: Vec::new(),
                seen: Vec::new(),
            };
            h2.until_closed().await
        });
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(
            HEADERS,
            END_STREAM,
            1,
            &hpack(&pseudo("GET", &auth, &get)),
        ));
        let mut written = 0usize;
        let mut batch = bytes;
        for _ in 0..count {
            batch.extend(frame(CONTINUATION, 0, 1, &payload));
            if batch.len() > 64 * 1024 {
                if within(what, wr.write_all(&batch)).await.is_err() {
                    break;
                }
                written += batch.len();
                batch.clear();
            }
        }
        if !batch.is_empty() && within(what, wr.write_all(&batch)).await.is_ok() {
            written += batch.len();
        }
        let _ = within(what, wr.shutdown()).await;
        let end = within("the flooded connection to end", reader)
            .await
            .expect("reader task");
        eprintln!("{what}: wrote {written} bytes, connection ended with {end:?}");
        assert!(
            matches!(end, Event::GoAway(code) if code != 0),
            "{what}: the gateway must end the connection with an error: {end:?}"
        );
        up.assert_silent(what);
    }
    let rss_after = rss_kib();
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "CONTINUATION flood: resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_still_up("CONTINUATION flood", &gw, &up).await;
}

/// The plain listener and HTTP/2 with prior knowledge (RFC 9113 §3.3).
/// Observed: hyper-util's automatic server reads the preface and serves
/// HTTP/2 in cleartext, so every case above is reachable without TLS too.
/// The policy holds the same over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prior_knowledge_cleartext_http2_holds_the_same_policy() {
    let up = FakeUpstream::start().await;
    let gw = Setup::new(&up).start().await;
    let auth = gw.addr.to_string();
    let get = share_get();

    let mut h2 = H2::start(connect(INSIDE, gw.addr).await).await;
    let served = match tokio::time::timeout(Duration::from_secs(5), h2.frame()).await {
        Ok(Some((kind, ..))) => kind == SETTINGS,
        _ => false,
    };
    eprintln!("prior-knowledge h2c on the plain listener: served = {served}");
    if !served {
        up.assert_silent("h2c refused");
        return;
    }
    let mut fields = pseudo("GET", &auth, &get);
    fields[1] = (":scheme", "http");
    h2.send(&headers_frame(1, &fields, true))
        .await
        .expect("send");
    assert_eq!(h2.outcome(1).await, Event::Status(200));
    up.only("h2c share read from inside");

    let mut bad = fields.clone();
    bad.push(("transfer-encoding", "chunked"));
    h2.send(&headers_frame(3, &bad, true)).await.expect("send");
    assert_eq!(h2.outcome(3).await, Event::Reset(PROTOCOL_ERROR));
    up.assert_silent("h2c with transfer-encoding");

    let mut out = H2::start(connect(OUTSIDE, gw.addr).await).await;
    out.send(&headers_frame(1, &fields, true))
        .await
        .expect("send");
    assert_eq!(out.outcome(1).await, Event::Status(403));
    up.assert_silent("h2c share read from outside");

    let mut ping = frame(PING, 0, 0, &[0; 8]);
    ping.extend(frame(GOAWAY, 0, 0, &[0; 8]));
    let _ = out.send(&ping).await;
}

/// The read half of a split stream, usable where [`H2`] wants a full
/// stream: it only ever reads, so writes are refused.
struct ReadOnly<R>(R);

impl<R: AsyncRead + Unpin> AsyncRead for ReadOnly<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ReadOnly<R> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::Unsupported.into()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// This process's resident set (the gateway runs in it), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CONNECT over HTTP/2 (RFC 9113 §8.5: `:method` and `:authority` only)
/// asks for a tunnel the policy cannot see into: refused, and nothing
/// reaches the upstream, from inside or out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_over_h2_is_refused() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let upstream_authority = up.addr.to_string();
    for (what, authority) in [
        ("CONNECT to another host", "evil.example:443"),
        (
            "CONNECT to the upstream's address",
            upstream_authority.as_str(),
        ),
    ] {
        for from in [INSIDE, OUTSIDE] {
            let what = format!("{what} from {from}");
            let mut h2 = H2::start(tls_h2(from, &gw).await).await;
            let fields = [(":method", "CONNECT"), (":authority", authority)];
            h2.send(&headers_frame(1, &fields, false))
                .await
                .expect("send");
            let e = h2.outcome(1).await;
            eprintln!("{what}: {e:?}");
            assert!(
                matches!(
                    e,
                    Event::Status(400..=499) | Event::Reset(_) | Event::GoAway(_)
                ),
                "{what}: {e:?}"
            );
            up.assert_silent(&what);
        }
    }
    assert_still_up("CONNECT over h2", &gw, &up).await;
}

/// HTTP/2 flow control (RFC 9113 §5.2): a client that never opens its
/// window (SETTINGS_INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE) gets the
/// response head, and the body waits in the gateway. The socket stays
/// writable, so the write deadline on it never fires; without a deadline
/// on the stream itself such a client holds the upstream connection
/// feeding it (one per stream, a hundred streams per connection) for as
/// long as it likes, answering PINGs. After `limits.send_timeout` with no
/// room made the gateway lets it go and the upstream sees its response
/// dropped. A client that makes room is never cut, however quiet its
/// stream: the wait is for the client, not for the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_opens_its_window_is_let_go() {
    let up = FakeUpstream::start().await;
    let stalled = up.sse("/api/v1/stalled");
    let quiet = up.sse("/api/v1/quiet");
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nsend_timeout = \"1s\"\n".to_owned();
    let gw = setup.start().await;
    let auth = gw.addr.to_string();

    let mut io = connect(INSIDE, gw.addr).await;
    let mut hello = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0: no stream may carry DATA.
    hello.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]));
    within("the HTTP/2 preface", io.write_all(&hello))
        .await
        .expect("write the preface");
    let mut h2 = H2 {
        io,
        buf: Vec::new(),
        table: Vec::new(),
        seen: Vec::new(),
    };
    let mut fields = pseudo("GET", &auth, "/api/v1/stalled");
    fields[1] = (":scheme", "http");
    h2.send(&headers_frame(1, &fields, true))
        .await
        .expect("send HEADERS");
    assert_eq!(h2.outcome(1).await, Event::Status(200));
    for _ in 0..4 {
        let _ = stalled.send(Bytes::from_static(b"data: waiting for room\n\n"));
    }
    // The client keeps the connection alive (it reads and would answer
    // PINGs) but never makes room.
    let reader = tokio::spawn(async move {
        while let Some((kind, flags, _, payload)) = h2.frame().await {
            if kind == PING && flags & ACK == 0 {
                let _ = h2.send(&frame(PING, ACK, 0, &payload)).await;
            }
        }
    });
    within(
        "the gateway to give up on the stalled stream and drop the upstream response",
        stalled.closed(),
    )
    .await;
    reader.abort();
    up.only("the stalled stream's request");

    // A stream the client makes room for, quiet for longer than the send
    // timeout, is kept.
    let mut h2 = H2::start(connect(INSIDE, gw.addr).await).await;
    let mut fields = pseudo("GET", &auth, "/api/v1/quiet");
    fields[1] = (":scheme", "http");
    h2.send(&headers_frame(1, &fields, true))
        .await
        .expect("send HEADERS");
    assert_eq!(h2.outcome(1).await, Event::Status(200));
    // Letting time pass, not waiting for readiness: three send timeouts
    // with nothing to send.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!quiet.is_closed(), "a quiet stream was cut");
    quiet
        .send(Bytes::from_static(b"data: still here\n\n"))
        .expect("the quiet stream is still open");
    let got = within("the late event", async {
        let mut seen = Vec::new();
        while let Some((kind, _, id, payload)) = h2.frame().await {
            if kind == DATA && id == 1 {
                seen.extend_from_slice(&payload);
                if seen.ends_with(b"\n\n") {
                    break;
                }
            }
        }
        seen
    })
    .await;
    assert_eq!(got, b"data: still here\n\n");
    up.only("the quiet stream's request");
}

/// Pseudo-header tricks (RFC 9113 §8.3): a `:path` that is empty, `*`,
/// relative, absolute, or carries a fragment; duplicated pseudo-headers,
/// one after a regular field, an unknown one, `:status` in a request; a
/// `:scheme` other than the listener's; extended CONNECT (RFC 8441,
/// `:protocol`, never enabled: the gateway sends no
/// SETTINGS_ENABLE_CONNECT_PROTOCOL) and `:protocol` on a GET. Each is a
/// stream error, a refusal, or served as exactly the path that was checked
/// (a fragment is no part of the request target); nothing else reaches the
/// upstream, and the connection serves its next stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudo_header_tricks_are_refused_or_served_as_checked() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let auth = authority(&gw);
    let get = share_get();
    let manage = fill("/api/v1/runs/{id}/share");
    let absolute = format!("https://{auth}{manage}");
    let relative = manage.trim_start_matches('/').to_owned();
    let fragment = format!("{get}#/../../../runs/{}/share", ID);
    let with_path = |path: &str| {
        vec![
            (":method".to_owned(), "GET".to_owned()),
            (":scheme".to_owned(), "https".to_owned()),
            (":authority".to_owned(), auth.clone()),
            (":path".to_owned(), path.to_owned()),
        ]
    };
    let plus = |mut f: Vec<(String, String)>, k: &str, v: &str| {
        f.push((k.to_owned(), v.to_owned()));
        f
    };
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        (":path empty", with_path("")),
        (":path *", with_path("*")),
        (":path relative", with_path(&relative)),
        (":path absolute", with_path(&absolute)),
        (":path with a fragment", with_path(&fragment)),
        ("two :path", plus(with_path(&get), ":path", &manage)),
        ("two :method", plus(with_path(&get), ":method", "DELETE")),
        ("pseudo-header after a regular field", {
            let f = plus(with_path(&get), "accept", "*/*");
            plus(f, ":method", "DELETE")
        }),
        ("unknown pseudo-header", plus(with_path(&get), ":foo", "1")),
        (
            ":status in a request",
            plus(with_path(&get), ":status", "200"),
        ),
        (
            ":protocol on GET",
            plus(with_path(&get), ":protocol", "websocket"),
        ),
        ("extended CONNECT", {
            let mut f = with_path(&get);
            f[0].1 = "CONNECT".to_owned();
            plus(f, ":protocol", "websocket")
        }),
        (":scheme gopher", {
            let mut f = with_path(&get);
            f[1].1 = "gopher".to_owned();
            f
        }),
        (":scheme http on TLS", {
            let mut f = with_path(&get);
            f[1].1 = "http".to_owned();
            f
        }),
    ];
    for (what, fields) in &cases {
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut h2 = H2::start(tls_h2(INSIDE, &gw).await).await;
        h2.send(&headers_frame(1, &fields, true))
            .await
            .expect("send HEADERS");
        let event = h2.outcome(1).await;
        eprintln!("{what}: {event:?}");
        match event {
            Event::Status(200) => {
                let r = up.only(what);
                assert_eq!(
                    (r.method.as_str(), r.target.as_str()),
                    ("GET", get.as_str()),
                    "{what}"
                );
                assert_eq!(
                    r.header("x-forwarded-proto").as_deref(),
                    Some("https"),
                    "{what}"
                );
            }
            Event::Status(400..=499) | Event::Reset(PROTOCOL_ERROR) => up.assert_silent(what),
            Event::GoAway(PROTOCOL_ERROR) => {
                up.assert_silent(what);
                continue;
            }
            e => panic!("{what}: unexpected {e:?} {:?}", h2.seen),
        }
        h2.send(&headers_frame(3, &pseudo("GET", &auth, &get), true))
            .await
            .expect("send HEADERS");
        assert_eq!(
            h2.outcome(3).await,
            Event::Status(200),
            "{what}: next stream"
        );
        up.only(&format!("{what}: the next stream"));
    }
    assert_still_up("pseudo-header tricks", &gw, &up).await;
}

/// Request trailers (RFC 9110 §6.5) are never forwarded: the upstream is
/// spoken to without a `Trailer` field, so hyper sends none, and a share
/// route's body is read whole, trailers dropped. A trailer would otherwise
/// carry what the gateway removes from heads (`X-Forwarded-For`, a
/// forwarded identity header) past it, to an upstream that merges
/// trailers into its headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_the_upstream() {
    let up = FakeUpstream::start().await;
    let gw = start_tls(&up).await;
    let auth = authority(&gw);
    for path in [share_post(), "/api/v1/runs/query".to_owned()] {
        let what = format!("trailers on {path}");
        let mut h2 = H2::start(tls_h2(INSIDE, &gw).await).await;
        let mut fields = pseudo("POST", &auth, &path);
        fields.push(("te", "trailers"));
        fields.push(("trailer", "x-forwarded-for, x-real-ip, x-sharegate-email"));
        let mut bytes = headers_frame(1, &fields, false);
        bytes.extend(frame(DATA, 0, 1, b"{}"));
        bytes.extend(headers_frame(
            1,
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
                ("x-sharegate-email", "admin@corp.example"),
            ],
            true,
        ));
        h2.send(&bytes).await.expect("send");
        assert_eq!(h2.outcome(1).await, Event::Status(200), "{what}");
        let r = up.only(&what);
        assert_eq!(r.body.as_ref(), b"{}", "{what}");
        assert!(
            r.trailers.as_ref().is_none_or(http::HeaderMap::is_empty),
            "{what}: {:?}",
            r.trailers
        );
        for (k, v) in r.headers.iter().chain(r.trailers.iter().flatten()) {
            assert!(!v.as_bytes().starts_with(b"6.6.6.6"), "{what}: {k}: {v:?}");
            assert_ne!(k, "x-sharegate-email", "{what}");
        }
    }
}

/// The other side of the stalled-window rule: an HTTP/2 client that reads
/// slowly but steadily (a small window, opened a little at a time) gets
/// the whole of a large response, however long it takes in all, even when
/// the upstream hands the gateway chunks larger than the client makes room
/// for within `limits.send_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_http2_reader_that_keeps_reading_is_never_cut() {
    const SIZE: usize = 128 * 1024;
    const STEP: u32 = 8 * 1024;
    let up = FakeUpstream::start().await;
    up.on(
        "/api/v1/large",
        custom(|_| async {
            upstream_response(
                StatusCode::OK,
                &[("content-type", "application/octet-stream")],
                upstream_full(vec![b'x'; SIZE]),
            )
        }),
    );
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nsend_timeout = \"1s\"\n".to_owned();
    let gw = setup.start().await;
    let auth = gw.addr.to_string();

    let (rd, mut wr) = tokio::io::split(connect(INSIDE, gw.addr).await);
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0x20, 0]));
    let mut fields = pseudo("GET", &auth, "/api/v1/large");
    fields[1] = (":scheme", "http");
    hello.extend(headers_frame(1, &fields, true));
    within("the request", wr.write_all(&hello))
        .await
        .expect("write the request");
    let reader = tokio::spawn(async move {
        let mut h2 = H2 {
            io: ReadOnly(rd),
            buf: Vec::new(),
            table: Vec::new(),
            seen: Vec::new(),
        };
        let mut got = 0usize;
        while let Some((kind, flags, id, payload)) = h2.frame().await {
            if kind == DATA && id == 1 {
                got += payload.len();
                if flags & END_STREAM != 0 {
                    break;
                }
            }
        }
        got
    });
    // 8 KiB of room every quarter second: 32 KiB/s, four seconds in all.
    let mut ticks = 0;
    while !reader.is_finished() && ticks < 200 {
        // Pacing the reader, not waiting for readiness.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut room = frame(WINDOW_UPDATE, 0, 0, &STEP.to_be_bytes());
        room.extend(frame(WINDOW_UPDATE, 0, 1, &STEP.to_be_bytes()));
        if wr.write_all(&room).await.is_err() {
            break;
        }
        ticks += 1;
    }
    let got = within("the response", reader).await.expect("reader task");
    assert_eq!(got, SIZE, "the slow reader got all of it");
    up.only("the large read");
}
