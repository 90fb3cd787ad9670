//! The response side: whether a body is rewritten, the entity headers that
//! change when it is, and the [`RewriteBody`] adaptor that streams it.
//!
//! This file owns the decision (status, `Content-Type`, `Content-Encoding`,
//! the client's `Accept-Encoding`), the header fix-ups that follow from
//! changing the bytes, and the `http_body::Body` that drives decoder,
//! [`StreamRewriter`] and encoder chunk by chunk. It does not rewrite the
//! URL-bearing headers (`headers.rs`; the caller calls
//! [`rewrite_response_headers`](super::rewrite_response_headers) too) and does
//! not know the request method: a caller must not pass the response to a
//! `HEAD` request, whose `Content-Length` describes a body that is not there.
//!
//! Not rewritten, passed through untouched:
//! - `206 Partial Content`: the bytes are a range of the representation and
//!   rewriting them would break the offsets in `Content-Range`; and since a
//!   rewritten body is not byte-range addressable, `Accept-Ranges` is dropped
//!   from rewritten responses so clients do not ask for ranges of it.
//! - 1xx, `204`, `304`: no body.
//! - A `Content-Type` none of whose types is rewritten (see
//!   [`Rules::rewrites_content_types`]: two fields, or a comma list, are
//!   rewritten when any type they name is), and no `Content-Type` at all
//!   (the body may be binary).
//!
//! A rewritten type in a `Content-Encoding` the rewriter cannot read (an
//! unknown token, more than `codec::MAX_STACKED` codings) is not passed on
//! at all: [`rewrite_response`] returns [`Unreadable`] (counted in
//! [`RewriteStats::bodies_unknown_encoding`]) and the caller answers `502`,
//! since clients show such a body raw. Stacked known codings are decoded in
//! turn and the outermost one is served again.
//!
//! Header fix-ups on a rewritten body: `Content-Length` is dropped (the
//! length changes; the body goes out chunked); `ETag` is made weak
//! (`W/"..."`, RFC 9110 §8.8.1: the content is semantically the same, not
//! byte-identical, so conditional requests keep working);
//! `Content-MD5`, `Digest`, `Content-Digest` and `Repr-Digest` are dropped
//! (they cover bytes that changed); `Content-Encoding` is the upstream's
//! coding when the client accepts it, else removed (served identity); and
//! when the upstream body was encoded, `Vary` gains `Accept-Encoding`
//! (RFC 9110 §12.5.5) because the coding served now depends on it.
//!
//! Memory: an upstream chunk is decoded in slices of [`DECODE_SLICE`] bytes
//! and each slice's output is rewritten and handed on before the next slice
//! is decoded, so what is held is one slice's expansion (at most
//! `codec::MAX_DECODED_PER_WRITE`; more is a decompression bomb and an
//! error) plus the rewriter's carry, not the chunk's or the body's.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::body::StreamRewriter;
use super::codec::{accepts, body_coding, BodyCoding, ContentCoding, DecoderStack, Encoder};
use super::{RewriteStats, Rules};

/// Compressed input decoded per step; bounds one step's decoded output.
pub const DECODE_SLICE: usize = 4 * 1024;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a rewritten body failed. The client sees a reset stream; the detail
/// is for the log.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("decoding the {coding}-encoded upstream body failed")]
    Decode {
        coding: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("re-encoding the rewritten body as {coding} failed")]
    Encode {
        coding: &'static str,
        #[source]
        source: io::Error,
    },
}

pin_project! {
    /// A response body, rewritten or passed through.
    ///
    /// `Passthrough` hands the upstream frames on unchanged (errors boxed);
    /// `Rewriting` streams them through the rewriter. Trailers pass through.
    #[project = RewriteBodyProj]
    pub enum RewriteBody<B> {
        Passthrough { #[pin] inner: B },
        Rewriting { #[pin] inner: B, pipeline: Box<Pipeline> },
    }
}

impl<B> RewriteBody<B> {
    /// Whether this body is being rewritten.
    pub fn is_rewriting(&self) -> bool {
        matches!(self, RewriteBody::Rewriting { .. })
    }
}

/// Decoder, rewriter and encoder for one body, plus the frames ready to go.
#[derive(Debug)]
pub struct Pipeline {
    rewriter: StreamRewriter,
    decoder: Option<DecoderStack>,
    /// The coding applied last (the outermost): the one served again when
    /// the client accepts it.
    input_coding: Option<ContentCoding>,
    encoder: Option<Encoder>,
    output_coding: Option<ContentCoding>,
    /// Compressed input not yet decoded.
    pending: Bytes,
    ready: VecDeque<Frame<Bytes>>,
    done: bool,
    reported_matches: u64,
    stats: Arc<RewriteStats>,
}

/// Decides whether the body is rewritten; when it is, fixes the entity
/// headers in `parts` and returns the streaming rewriting body. Otherwise
/// the body comes back untouched (as `Passthrough`) and `parts` is unchanged;
/// a body of a rewritten type that cannot be read is an error ([`Unreadable`]).
///
/// `client_accept_encoding` is the request's `Accept-Encoding`; `None` means
/// the request had none (any coding acceptable, RFC 9110 §12.5.3).
///
/// Counting: every rewritten body adds one to
/// [`RewriteStats::bodies_rewritten`], every replaced origin one to
/// [`RewriteStats::body_matches`] (as the body streams), every body skipped
/// as unreadable one to [`RewriteStats::bodies_unknown_encoding`]; read
/// them through [`Rules::stats`].
pub fn rewrite_response<B>(
    rules: &Arc<Rules>,
    parts: &mut http::response::Parts,
    client_accept_encoding: Option<&HeaderValue>,
    body: B,
) -> Result<RewriteBody<B>, Unreadable>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Ok(match plan(rules, parts, client_accept_encoding)? {
        Some(pipeline) => {
            fix_entity_headers(&mut parts.headers, &pipeline);
            RewriteStats::add(&rules.stats.bodies_rewritten, 1);
            RewriteBody::Rewriting {
                inner: body,
                pipeline: Box::new(pipeline),
            }
        }
        None => RewriteBody::Passthrough { inner: body },
    })
}

/// A body of a rewritten type that the rewriter cannot read. Readers can
/// (browsers and curl undo every coding they know and show an unknown one
/// as it is), so passed on it could carry the public origin past the
/// rewrite: the caller answers `502` instead.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("the upstream body of a rewritten type has a content coding the rewriter cannot read: {0:?}")]
    Coding(String),
    #[error("codec setup failed")]
    Codec(#[source] io::Error),
}

fn plan(
    rules: &Arc<Rules>,
    parts: &http::response::Parts,
    accept: Option<&HeaderValue>,
) -> Result<Option<Pipeline>, Unreadable> {
    let status = parts.status;
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::PARTIAL_CONTENT
    {
        return Ok(None);
    }
    if !rules.rewrites_content_types(parts.headers.get_all(CONTENT_TYPE)) {
        return Ok(None);
    }
    let input_codings = match body_coding(parts.headers.get_all(CONTENT_ENCODING).iter()) {
        BodyCoding::Identity => Vec::new(),
        BodyCoding::Known(c) => c,
        BodyCoding::Unsupported(enc) => {
            RewriteStats::add(&rules.stats.bodies_unknown_encoding, 1);
            return Err(Unreadable::Coding(enc));
        }
    };
    let input_coding = input_codings.last().copied();
    let output_coding = input_coding.filter(|c| accepts(accept, *c));
    let decoder = if input_codings.is_empty() {
        None
    } else {
        Some(DecoderStack::new(&input_codings).map_err(Unreadable::Codec)?)
    };
    // Only allocation of a codec context can fail here.
    let encoder = output_coding
        .map(Encoder::new)
        .transpose()
        .map_err(Unreadable::Codec)?;
    Ok(Some(Pipeline {
        rewriter: StreamRewriter::new(Arc::clone(rules)),
        decoder,
        input_coding,
        encoder,
        output_coding,
        pending: Bytes::new(),
        ready: VecDeque::new(),
        done: false,
        reported_matches: 0,
        stats: Arc::clone(&rules.stats),
    }))
}

fn fix_entity_headers(headers: &mut HeaderMap, pipeline: &Pipeline) {
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    for name in ["content-md5", "digest", "content-digest", "repr-digest"] {
        headers.remove(HeaderName::from_static(name));
    }
    if let Some(etag) = headers.get(ETAG) {
        let weak = etag.as_bytes().starts_with(b"W/");
        if !weak {
            let mut v = Vec::with_capacity(etag.len() + 2);
            v.extend_from_slice(b"W/");
            v.extend_from_slice(etag.as_bytes());
            match HeaderValue::from_bytes(&v) {
                Ok(v) => {
                    headers.insert(ETAG, v);
                }
                Err(_) => {
                    headers.remove(ETAG);
                }
            }
        }
    }
    headers.remove(CONTENT_ENCODING);
    if let Some(c) = pipeline.output_coding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(c.token()));
    }
    if pipeline.input_coding.is_some() {
        let listed = headers.get_all(VARY).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"))
            })
        });
        if !listed {
            headers.append(VARY, HeaderValue::from_static("accept-encoding"));
        }
    }
}

impl Pipeline {
    fn decode_err((coding, source): (ContentCoding, io::Error)) -> RewriteError {
        RewriteError::Decode {
            coding: coding.token(),
            source,
        }
    }

    fn encode_err(&self, source: io::Error) -> RewriteError {
        RewriteError::Encode {
            coding: self.output_coding.map_or("identity", ContentCoding::token),
            source,
        }
    }

    fn on_data(&mut self, data: Bytes) -> Result<(), RewriteError> {
        if self.decoder.is_some() {
            self.pending = data;
            return self.step();
        }
        // A rewritten chunk is about two segments per match plus one; room
        // for a typical small body's worth avoids regrowing the Vec.
        let mut segs = Vec::with_capacity(32);
        self.rewriter.push(data, &mut segs);
        self.emit(segs, false)
    }

    /// The last chunk of an uncompressed body: rewritten and ended in one
    /// pass.
    fn on_last_data(&mut self, data: Bytes) -> Result<(), RewriteError> {
        let mut segs = Vec::with_capacity(32);
        self.rewriter.push_last(data, &mut segs);
        self.emit(segs, false)?;
        self.done = true;
        Ok(())
    }

    /// Decodes one slice of the pending compressed input and sends its
    /// rewritten output on; at the end of the chunk the encoder is flushed so
    /// the client gets everything this chunk carried.
    fn step(&mut self) -> Result<(), RewriteError> {
        let n = self.pending.len().min(DECODE_SLICE);
        let slice = self.pending.split_to(n);
        let mut decoded = Vec::new();
        if let Some(d) = self.decoder.as_mut() {
            d.write(&slice, &mut decoded)
                .map_err(Pipeline::decode_err)?;
        }
        let mut segs = Vec::new();
        if !decoded.is_empty() {
            self.rewriter.push(Bytes::from(decoded), &mut segs);
        }
        let chunk_done = self.pending.is_empty();
        self.emit(segs, chunk_done)
    }

    fn on_end(&mut self) -> Result<(), RewriteError> {
        let mut decoded = Vec::new();
        if let Some(d) = self.decoder.take() {
            d.finish(&mut decoded).map_err(Pipeline::decode_err)?;
        }
        let mut segs = Vec::new();
        if !decoded.is_empty() {
            self.rewriter.push(Bytes::from(decoded), &mut segs);
        }
        self.rewriter.finish(&mut segs);
        self.emit(segs, false)?;
        if let Some(e) = self.encoder.take() {
            let mut out = Vec::new();
            if let Err(err) = e.finish(&mut out) {
                return Err(self.encode_err(err));
            }
            self.queue(Bytes::from(out));
        }
        self.done = true;
        Ok(())
    }

    /// Sends rewritten segments on: through the encoder, or joined into one
    /// frame per upstream chunk (a frame per segment would multiply frames).
    fn emit(&mut self, segs: Vec<Bytes>, flush: bool) -> Result<(), RewriteError> {
        let matches = self.rewriter.matches();
        RewriteStats::add(&self.stats.body_matches, matches - self.reported_matches);
        self.reported_matches = matches;
        let Some(enc) = self.encoder.as_mut() else {
            let frame = match segs.len() {
                0 => return Ok(()),
                1 => segs.into_iter().next().unwrap_or_default(),
                _ => {
                    let mut joined = BytesMut::with_capacity(segs.iter().map(Bytes::len).sum());
                    for s in &segs {
                        joined.extend_from_slice(s);
                    }
                    joined.freeze()
                }
            };
            self.queue(frame);
            return Ok(());
        };
        let mut out = Vec::new();
        let result = segs.iter().try_for_each(|s| enc.write(s)).and_then(|()| {
            if flush {
                enc.flush(&mut out)
            } else {
                enc.take(&mut out);
                Ok(())
            }
        });
        if let Err(e) = result {
            return Err(self.encode_err(e));
        }
        self.queue(Bytes::from(out));
        Ok(())
    }

    fn queue(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.ready.push_back(Frame::data(data));
        }
    }
}

impl<B> Body for RewriteBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (mut inner, p) = match self.project() {
            RewriteBodyProj::Passthrough { inner } => {
                return inner.poll_frame(cx).map_err(Into::into);
            }
            RewriteBodyProj::Rewriting { inner, pipeline } => (inner, pipeline),
        };
        loop {
            if let Some(frame) = p.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if p.done {
                return Poll::Ready(None);
            }
            let step = if !p.pending.is_empty() {
                p.step()
            } else {
                match ready!(inner.as_mut().poll_frame(cx)) {
                    None => p.on_end(),
                    Some(Err(e)) => {
                        p.done = true;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        // The upstream's last bytes (its length is reached):
                        // end here rather than wait for one more poll.
                        Ok(data) if p.decoder.is_none() && inner.is_end_stream() => {
                            p.on_last_data(data)
                        }
                        Ok(data) => p.on_data(data),
                        Err(frame) => match frame.into_trailers() {
                            // Trailers end the body: finish, then send them.
                            Ok(trailers) => p
                                .on_end()
                                .map(|()| p.ready.push_back(Frame::trailers(trailers))),
                            Err(_) => Ok(()),
                        },
                    },
                }
            };
            if let Err(e) = step {
                p.done = true;
                p.ready.clear();
                return Poll::Ready(Some(Err(Box::new(e))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RewriteBody::Passthrough { inner } => inner.is_end_stream(),
            RewriteBody::Rewriting { pipeline, .. } => pipeline.done && pipeline.ready.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RewriteBody::Passthrough { inner } => inner.size_hint(),
            RewriteBody::Rewriting { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::task::noop_waker_ref;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::rewrite::body::tests::rules;
    use crate::rewrite::codec::tests::{decode, encode};
    use crate::rewrite::codec::Decoder;

    const PUBLIC: &str = "https://smith.langchain.com";
    const PRIVATE: &str = "https://smith.internal.example";

    fn json_body(n: usize) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"id\":{i},\"share_url\":\"{PUBLIC}/public/{i}/r\",\"pad\":\"{}\"}}\n",
                    "x".repeat(i % 50)
                )
            })
            .collect()
    }

    fn parts(content_type: &str, encoding: Option<&str>) -> http::response::Parts {
        let mut b = http::Response::builder()
            .status(200)
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, "123")
            .header(ETAG, "\"abc\"")
            .header("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ==")
            .header(ACCEPT_RANGES, "bytes");
        if let Some(e) = encoding {
            b = b.header(CONTENT_ENCODING, e);
        }
        b.body(()).unwrap().into_parts().0
    }

    type Frames = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn frames(data: &[u8], size: usize) -> Frames {
        let v: Vec<_> = data
            .chunks(size.max(1))
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(v))
    }

    async fn collect<B: Body<Data = Bytes, Error = BoxError>>(
        b: B,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), BoxError> {
        let c = b.collect().await?;
        let trailers = c.trailers().cloned();
        Ok((c.to_bytes().to_vec(), trailers))
    }

    #[tokio::test]
    async fn each_coding_round_trips() {
        let plain = json_body(3000);
        let expected = plain.replace(PUBLIC, PRIVATE);
        for c in [
            ContentCoding::Gzip,
            ContentCoding::Deflate,
            ContentCoding::Brotli,
            ContentCoding::Zstd,
        ] {
            let r = rules();
            let enc = encode(c, plain.as_bytes());
            // Client accepts the coding: same coding back.
            let mut p = parts("application/json; charset=utf-8", Some(c.token()));
            let accept = HeaderValue::from_static("gzip, deflate, br, zstd");
            let body = rewrite_response(&r, &mut p, Some(&accept), frames(&enc, 1000)).unwrap();
            assert!(body.is_rewriting());
            assert_eq!(p.headers[CONTENT_ENCODING], c.token());
            assert_eq!(p.headers[VARY], "accept-encoding");
            let (out, _) = collect(body).await.unwrap();
            assert_eq!(
                String::from_utf8(decode(c, &out).unwrap()).unwrap(),
                expected,
                "{c:?}"
            );
            // Client does not accept it: served identity.
            let mut p = parts("application/json", Some(c.token()));
            let accept = HeaderValue::from_static("identity");
            let body = rewrite_response(&r, &mut p, Some(&accept), frames(&enc, 777)).unwrap();
            assert!(p.headers.get(CONTENT_ENCODING).is_none());
            let (out, _) = collect(body).await.unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{c:?} identity");
            assert_eq!(r.stats().body_matches.load(Ordering::Relaxed), 6000);
        }
    }

    #[tokio::test]
    async fn entity_headers_fixed() {
        let r = rules();
        let mut p = parts("text/html", None);
        let _ = rewrite_response(&r, &mut p, None, frames(b"x", 1)).unwrap();
        let h = &p.headers;
        assert!(h.get(CONTENT_LENGTH).is_none());
        assert!(h.get("content-md5").is_none());
        assert!(h.get(ACCEPT_RANGES).is_none());
        assert_eq!(h[ETAG], "W/\"abc\"");
        assert!(
            h.get(VARY).is_none(),
            "identity upstream: the output does not vary"
        );
        assert_eq!(r.stats().bodies_rewritten.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn multi_frame_body_with_trailers() {
        let r = rules();
        let mut p = parts("text/plain", None);
        let input = format!("a {PUBLIC}/x b {PUBLIC}");
        let mut v: Vec<Result<Frame<Bytes>, Infallible>> = input
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        v.push(Ok(Frame::trailers(t)));
        let body = rewrite_response(
            &r,
            &mut p,
            None,
            StreamBody::new(futures_util::stream::iter(v)),
        )
        .unwrap();
        let (out, trailers) = collect(body).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("a {PRIVATE}/x b {PRIVATE}")
        );
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn not_rewritten_cases_pass_through() {
        let r = rules();
        let input = format!("{PUBLIC}/x");
        let cases: [(u16, &str, Option<&str>); 3] = [
            (200, "image/png", None),
            (206, "application/json", None),
            // Not read, since the type is not rewritten.
            (200, "image/png", Some("compress")),
        ];
        for (status, ct, enc) in cases {
            let mut p = parts(ct, enc);
            p.status = StatusCode::from_u16(status).unwrap();
            let before = p.headers.clone();
            let body = rewrite_response(&r, &mut p, None, frames(input.as_bytes(), 3)).unwrap();
            assert!(!body.is_rewriting());
            assert_eq!(p.headers, before);
            let (out, _) = collect(body).await.unwrap();
            assert_eq!(out, input.as_bytes());
        }
        assert_eq!(r.stats().bodies_unknown_encoding.load(Ordering::Relaxed), 0);
        assert_eq!(r.stats().bodies_rewritten.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_rewritten_type_in_an_unknown_coding_is_unreadable() {
        let r = rules();
        for enc in ["compress", "gzip, x-custom", "gzip, gzip, gzip, gzip, gzip"] {
            let mut p = parts("application/json", Some(enc));
            let before = p.headers.clone();
            let got = rewrite_response(&r, &mut p, None, frames(b"{}", 1));
            assert!(matches!(got, Err(Unreadable::Coding(_))), "{enc}");
            assert_eq!(p.headers, before);
        }
        assert_eq!(r.stats().bodies_unknown_encoding.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn stacked_codings_are_decoded_and_the_outer_one_served_again() {
        let r = rules();
        let plain = json_body(200);
        let enc = encode(
            ContentCoding::Gzip,
            &encode(ContentCoding::Brotli, plain.as_bytes()),
        );
        let mut p = parts("application/json", Some("br, gzip"));
        let body = rewrite_response(&r, &mut p, None, frames(&enc, 100)).unwrap();
        assert_eq!(p.headers[CONTENT_ENCODING], "gzip");
        let (out, _) = collect(body).await.unwrap();
        let got = decode(ContentCoding::Gzip, &out).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            plain.replace(PUBLIC, PRIVATE)
        );
    }

    #[tokio::test]
    async fn json_of_every_spelling_and_any_of_two_types_is_rewritten() {
        let r = rules();
        let input = format!("{{\"u\":\"{PUBLIC}/x\"}}");
        let cases: [(&[&str], bool); 6] = [
            (&["application/problem+json"], true),
            (&["application/vnd.api+json; charset=utf-8"], true),
            (&["application/x-ndjson"], true),
            (&["application/octet-stream", "text/html"], true),
            (&["image/png", "application/octet-stream"], false),
            (&[], false),
        ];
        for (types, rewritten) in cases {
            let mut p = parts("text/plain", None);
            p.headers.remove(CONTENT_TYPE);
            for t in types {
                p.headers.append(CONTENT_TYPE, HeaderValue::from_static(t));
            }
            let body = rewrite_response(&r, &mut p, None, frames(input.as_bytes(), 7)).unwrap();
            assert_eq!(body.is_rewriting(), rewritten, "{types:?}");
            let (out, _) = collect(body).await.unwrap();
            let want = if rewritten {
                input.replace(PUBLIC, PRIVATE)
            } else {
                input.clone()
            };
            assert_eq!(String::from_utf8(out).unwrap(), want, "{types:?}");
        }
    }

    #[tokio::test]
    async fn corrupt_compressed_body_errors() {
        let r = rules();
        let mut enc = encode(ContentCoding::Gzip, json_body(100).as_bytes());
        let mid = enc.len() / 2;
        for b in &mut enc[20..mid] {
            *b = !*b;
        }
        let mut p = parts("application/json", Some("gzip"));
        let body = rewrite_response(&r, &mut p, None, frames(&enc, 64)).unwrap();
        assert!(collect(body).await.is_err());
        // Truncated: an error at the end, not a silently short body.
        let enc = encode(ContentCoding::Zstd, json_body(100).as_bytes());
        let mut p = parts("application/json", Some("zstd"));
        let body = rewrite_response(&r, &mut p, None, frames(&enc[..enc.len() - 3], 64)).unwrap();
        assert!(collect(body).await.is_err());
    }

    /// A body fed by the test: `Pending` until the test pushes a frame.
    #[derive(Clone, Default)]
    struct Fed(Arc<Mutex<VecDeque<Option<Bytes>>>>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.0.lock().unwrap().pop_front() {
                None => Poll::Pending,
                Some(None) => Poll::Ready(None),
                Some(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            }
        }
    }

    fn poll_data<B: Body<Data = Bytes, Error = BoxError> + Unpin>(
        b: &mut B,
    ) -> Poll<Option<Vec<u8>>> {
        let mut cx = Context::from_waker(noop_waker_ref());
        Pin::new(b)
            .poll_frame(&mut cx)
            .map(|f| f.map(|f| f.unwrap().into_data().unwrap().to_vec()))
    }

    #[test]
    fn sse_events_flow_out_one_by_one() {
        let codings = [
            ContentCoding::Gzip,
            ContentCoding::Deflate,
            ContentCoding::Brotli,
            ContentCoding::Zstd,
        ];
        for coding in std::iter::once(None).chain(codings.map(Some)) {
            let r = rules();
            let fed = Fed::default();
            let mut p = parts("text/event-stream", coding.map(ContentCoding::token));
            let mut body = rewrite_response(&r, &mut p, None, fed.clone()).unwrap();
            let mut upstream = coding.map(|c| Encoder::new(c).unwrap());
            let mut client = coding.map(|c| Decoder::new(c).unwrap());
            for i in 0..3 {
                let event = format!("data: {{\"url\":\"{PUBLIC}/public/{i}/r\"}}\n\n");
                let wire = match upstream.as_mut() {
                    Some(e) => {
                        e.write(event.as_bytes()).unwrap();
                        let mut out = Vec::new();
                        e.flush(&mut out).unwrap();
                        out
                    }
                    None => event.clone().into_bytes(),
                };
                fed.0.lock().unwrap().push_back(Some(Bytes::from(wire)));
                let mut got = Vec::new();
                while let Poll::Ready(Some(bytes)) = poll_data(&mut body) {
                    match client.as_mut() {
                        Some(d) => d.write(&bytes, &mut got).unwrap(),
                        None => got.extend(bytes),
                    }
                }
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    event.replace(PUBLIC, PRIVATE),
                    "{coding:?} event {i}"
                );
            }
            if let Some(e) = upstream.take() {
                let mut out = Vec::new();
                e.finish(&mut out).unwrap();
                fed.0.lock().unwrap().push_back(Some(Bytes::from(out)));
            }
            fed.0.lock().unwrap().push_back(None);
            let mut tail = Vec::new();
            while let Poll::Ready(Some(bytes)) = poll_data(&mut body) {
                tail.extend(bytes);
            }
            if let Some(mut d) = client.take() {
                let mut rest = Vec::new();
                d.write(&tail, &mut rest).unwrap();
                d.finish(&mut rest).unwrap();
                assert!(rest.is_empty());
            }
            assert!(body.is_end_stream());
        }
    }
}
