//! Range requests when bodies are rewritten.
//!
//! A `206` carries a slice of the representation. The rewriter cannot
//! rewrite a slice (a URL may be cut at either end of it, and a rewritten
//! slice no longer sits at the offsets `Content-Range` gives), and passing
//! it on untouched would hand the client the public origin: `Range:
//! bytes=0-` on any page or API answer would be a way around the rewrite.
//! So, when `[rewrite]` is on:
//! - a `GET` without a body keeps its `Range` (binary answers, media and
//!   downloads, keep seeking and resuming). When the answer is a partial
//!   body the rewriter would rewrite (a type in `rewrite.content_types`, or
//!   `multipart/byteranges`, whose parts name their types inside the body),
//!   it is dropped unread and the request is sent once more without `Range`
//!   and `If-Range`: the client gets the whole representation, rewritten,
//!   as a `200` (a server may always ignore `Range`, RFC 9110 §14.2);
//! - every other request loses `Range` and `If-Range` before it is
//!   forwarded: they are defined for `GET` only (RFC 9110 §14.2), and a
//!   request with a body cannot be sent twice. A `HEAD` keeps them (no body
//!   comes back);
//! - a partial body of such a type that arrives all the same (to the
//!   request sent again, or to one that never asked for a range) is refused
//!   with `502`; none of it reaches the client.
//!
//! This file does not rewrite anything; `rewrite::response` passes every
//! `206` through, so what reaches it has been decided here.

use http::header;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body as _;

use crate::error::{full, Body};
use crate::rewrite::Rules;

/// Readies `req` for forwarding under the rewriter; returns the request to
/// send instead of it when its answer turns out to be a partial body that
/// cannot be rewritten ([`unrewritable_partial`]), if it can be sent again.
pub(super) fn prepare(req: &mut Request<Body>) -> Option<Request<Body>> {
    // `If-Range` alone is ignored (RFC 9110 §13.1.5): only `Range` asks.
    if !req.headers().contains_key(header::RANGE) || req.method() == Method::HEAD {
        return None;
    }
    if req.method() != Method::GET || !req.body().is_end_stream() {
        drop_range(req.headers_mut());
        return None;
    }
    let mut again = Request::new(full(bytes::Bytes::new()));
    *again.method_mut() = Method::GET;
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    drop_range(again.headers_mut());
    Some(again)
}

fn drop_range(headers: &mut HeaderMap) {
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
}

/// Whether `resp` is a partial body of a type the rewriter would rewrite
/// (or a multipart one, which may hold such parts).
pub(super) fn unrewritable_partial<B>(rules: &Rules, resp: &Response<B>) -> bool {
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        return false;
    }
    // Every field and comma-separated element counts, as for a whole body
    // (a browser reads the last type named).
    let types = resp.headers().get_all(header::CONTENT_TYPE);
    rules.rewrites_content_types(types.iter())
        || types.iter().any(|v| {
            v.as_bytes().split(|b| *b == b',').any(|element| {
                let essence = element
                    .split(|b| *b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                // Not a type anyone could list, nor one to vouch for.
                essence.eq_ignore_ascii_case(b"multipart/byteranges")
                    || std::str::from_utf8(essence).is_err()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::{Origin, RewriteOptions};
    use http::HeaderValue;

    fn rules() -> Rules {
        Rules::new(
            vec![Origin::parse("https://smith.example.com").unwrap()],
            Origin::parse("https://langsmith.corp.example").unwrap(),
            RewriteOptions::default(),
        )
        .unwrap()
    }

    fn req(method: Method, headers: &[(&str, &str)], body: &'static str) -> Request<Body> {
        let mut r = Request::new(full(body));
        *r.method_mut() = method;
        *r.uri_mut() = "http://up.internal/api/v1/public/t/run?x=1"
            .parse()
            .unwrap();
        for (k, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn a_bodyless_get_keeps_its_range_and_has_a_whole_request_ready() {
        let mut r = req(
            Method::GET,
            &[
                ("range", "bytes=0-99"),
                ("if-range", "\"v1\""),
                ("accept", "application/json"),
            ],
            "",
        );
        let again = prepare(&mut r).expect("a GET can be sent again");
        assert_eq!(r.headers()["range"], "bytes=0-99");
        assert_eq!(r.headers()["if-range"], "\"v1\"");
        assert_eq!(again.method(), Method::GET);
        assert_eq!(again.uri(), r.uri());
        assert!(again.headers().get("range").is_none());
        assert!(again.headers().get("if-range").is_none());
        assert_eq!(again.headers()["accept"], "application/json");
        assert!(again.body().is_end_stream());
    }

    #[test]
    fn other_requests_lose_range_before_forwarding() {
        for (method, body) in [
            (Method::POST, ""),
            (Method::PUT, "{}"),
            (Method::GET, "a body"),
            (Method::OPTIONS, ""),
        ] {
            let mut r = req(
                method.clone(),
                &[("range", "bytes=0-"), ("if-range", "x")],
                body,
            );
            assert!(prepare(&mut r).is_none(), "{method} {body:?}");
            assert!(r.headers().get("range").is_none(), "{method} {body:?}");
            assert!(r.headers().get("if-range").is_none(), "{method} {body:?}");
        }
        // Only If-Range: ignored by every server (RFC 9110 §13.1.5), and
        // left for the upstream to ignore.
        let mut r = req(Method::GET, &[("if-range", "x")], "");
        assert!(prepare(&mut r).is_none());
    }

    #[test]
    fn head_and_rangeless_requests_are_left_alone() {
        let mut r = req(Method::HEAD, &[("range", "bytes=0-")], "");
        assert!(prepare(&mut r).is_none());
        assert_eq!(r.headers()["range"], "bytes=0-");
        let mut r = req(Method::GET, &[("accept", "*/*")], "");
        assert!(prepare(&mut r).is_none());
        assert_eq!(r.headers().len(), 1);
    }

    fn resp(status: u16, ctype: Option<&[u8]>) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(c) = ctype {
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_bytes(c).unwrap());
        }
        r
    }

    #[test]
    fn partial_bodies_of_rewritten_types_are_caught() {
        let rules = rules();
        for ctype in [
            &b"application/json"[..],
            b"Application/JSON; charset=utf-8",
            b"text/html;charset=utf-8",
            b" text/event-stream ",
            b"multipart/byteranges; boundary=3d6b6a416f9b5",
            b"MULTIPART/BYTERANGES",
            b"text/\xe9",
        ] {
            assert!(
                unrewritable_partial(&rules, &resp(206, Some(ctype))),
                "{}",
                String::from_utf8_lossy(ctype)
            );
        }
        for ctype in [
            &b"image/png"[..],
            b"application/octet-stream",
            b"audio/mpeg",
        ] {
            assert!(!unrewritable_partial(&rules, &resp(206, Some(ctype))));
        }
        assert!(!unrewritable_partial(&rules, &resp(206, None)));
        // Two fields, or a list: any rewritten type counts.
        let mut two = resp(206, Some(b"application/octet-stream"));
        two.headers_mut()
            .append(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(unrewritable_partial(&rules, &two));
        assert!(unrewritable_partial(
            &rules,
            &resp(206, Some(b"image/png, application/problem+json"))
        ));
        assert!(!unrewritable_partial(
            &rules,
            &resp(200, Some(b"application/json"))
        ));
        assert!(!unrewritable_partial(
            &rules,
            &resp(416, Some(b"application/json"))
        ));
    }
}
