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
//!   rewritten when any type they name is).
//!
//! A body without a usable type (none, none that parses, `*/*`,
//! `unknown/unknown`) is one readers sniff: browsers render what looks
//! like HTML, API clients read JSON whatever the label. It is rewritten
//! when its first [`SNIFF_BYTES`] decoded bytes hold no binary data byte,
//! and passed on untouched otherwise (an image, an archive).
//!
//! The rewriter reads ASCII-compatible text. A rewritten type in a
//! `Content-Encoding` it cannot read (an unknown token, more than
//! `codec::MAX_STACKED` codings) or labelled with a `charset` that is not
//! ASCII-compatible (UTF-16, UTF-32, EBCDIC) is not passed on at all:
//! [`rewrite_response`] returns [`Unreadable`] (an unknown coding is
//! counted in [`RewriteStats::bodies_unknown_encoding`]) and the caller
//! answers `502`, since clients show an unknown coding raw and decode the
//! charset they are told. A body that starts with a UTF-16 byte order mark
//! (which readers follow over any label) ends in [`RewriteError::Utf16`].
//! Stacked known codings are decoded in turn and the outermost one is
//! served again.
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
    #[error("the upstream body starts with a UTF-16 byte order mark: readers decode it as UTF-16, which the rewriter cannot read")]
    Utf16,
}

/// The first bytes of a body, held until there are enough of them to
/// judge it (or the body ends): two for a byte order mark, [`SNIFF_BYTES`]
/// for a body whose type is to be sniffed.
#[derive(Debug)]
struct Prefix {
    held: Vec<u8>,
    need: usize,
    /// The body has no usable type: it is rewritten only if it reads as
    /// text.
    sniff: bool,
}

/// How much of a body without a usable type is read to tell text from
/// binary data: what browsers look at for the same question (WHATWG MIME
/// Sniffing §7.1 reads up to 1,445 bytes; Chromium and Firefox decide on
/// their first 512 for text against binary).
const SNIFF_BYTES: usize = 512;

/// A "binary data byte" (WHATWG MIME Sniffing §3): a control byte that
/// text does not hold. Tab, line feed, form feed, carriage return and
/// escape are text.
fn is_binary_byte(b: u8) -> bool {
    matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f)
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

    /// Puts a frame read from a rewriting body back in front of the rest
    /// (the caller read it before sending the head). Only a rewriting body
    /// may be read ahead: a passed-through one has nowhere to keep it.
    pub(crate) fn unread(&mut self, frame: Frame<Bytes>) {
        if let RewriteBody::Rewriting { pipeline, .. } = self {
            pipeline.ready.push_front(frame);
        }
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
    /// Whether any compressed input arrived: an empty body labelled with a
    /// coding holds no stream to end (clients read it as empty).
    compressed_input: bool,
    /// The body's first bytes, until they have been judged.
    prefix: Option<Prefix>,
    /// Judged binary: passed on without being rewritten.
    bypass: bool,
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
/// as it is; they decode the charset they are told), so passed on it could
/// carry the public origin past the rewrite: the caller answers `502`
/// instead.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("the upstream body of a rewritten type has a content coding the rewriter cannot read: {0:?}")]
    Coding(String),
    #[error("the upstream body of a rewritten type is in a character encoding the rewriter cannot read: charset={0:?}")]
    Charset(String),
    #[error("codec setup failed")]
    Codec(#[source] io::Error),
}

/// Whether readers decide a body's type by sniffing it: it has no
/// `Content-Type`, none that parses, or the one they take is `*/*` (which
/// Fetch's "extract a MIME type" skips), `unknown/unknown` or
/// `application/unknown` (WHATWG MIME Sniffing §7). Browsers then render
/// a page that looks like HTML, and API clients read JSON whatever the
/// type says.
fn sniffed_type<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> bool {
    let mut taken: Option<&[u8]> = None;
    for v in values {
        for element in v.as_bytes().split(|b| *b == b',') {
            let essence = element
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            let valid = essence
                .iter()
                .position(|b| *b == b'/')
                .is_some_and(|slash| {
                    let (kind, sub) = (&essence[..slash], &essence[slash + 1..]);
                    !kind.is_empty()
                        && !sub.is_empty()
                        && kind.iter().chain(sub).all(|b| is_token_byte(*b))
                });
            if valid && essence != b"*/*" {
                taken = Some(essence);
            }
        }
    }
    taken.is_none_or(|t| {
        t.eq_ignore_ascii_case(b"unknown/unknown") || t.eq_ignore_ascii_case(b"application/unknown")
    })
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The first `charset` named in the `Content-Type` fields that is not
/// ASCII-compatible: the public origin is then not spelled in the bytes
/// the rewriter matches, yet a reader that decodes the label finds it.
/// UTF-16 is the one browsers support (WHATWG Encoding's labels for it);
/// UTF-32, UCS, UTF-7 and the EBCDIC code pages are decoded by API clients
/// (Python's codecs know them all).
fn unreadable_charset<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<String> {
    const PREFIXES: [&str; 9] = [
        "utf-16",
        "utf16",
        "utf-32",
        "utf32",
        "ucs",
        "unicode",
        "iso-10646",
        "utf-7",
        "utf7",
    ];
    const EBCDIC: [&str; 7] = ["037", "273", "424", "500", "875", "1026", "1140"];
    values
        .flat_map(|v| v.as_bytes().split(|b| *b == b',' || *b == b';'))
        .filter_map(|param| {
            let param = std::str::from_utf8(param).ok()?;
            let (name, value) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
        })
        .find(|label| {
            // `unicode-1-1-utf-8` and its kin are UTF-8.
            if label.contains("utf-8") || label.contains("utf8") {
                return false;
            }
            let bare = label
                .strip_prefix("x-")
                .or_else(|| label.strip_prefix("cs"))
                .unwrap_or(label);
            PREFIXES.iter().any(|p| bare.starts_with(p))
                || bare.starts_with("ebcdic")
                || ["cp", "ibm", "ibm-", "cp-"]
                    .iter()
                    .any(|p| bare.strip_prefix(p).is_some_and(|n| EBCDIC.contains(&n)))
        })
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
    let types = parts.headers.get_all(CONTENT_TYPE);
    let sniff = if rules.rewrites_content_types(types.iter()) {
        if let Some(label) = unreadable_charset(types.iter()) {
            return Err(Unreadable::Charset(label));
        }
        false
    } else if sniffed_type(types.iter())
        // An empty body (a redirect, a bare 200) keeps its framing.
        && parts.headers.get(CONTENT_LENGTH).is_none_or(|l| l != "0")
    {
        true
    } else {
        return Ok(None);
    };
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
        compressed_input: false,
        prefix: Some(Prefix {
            held: Vec::new(),
            need: if sniff { SNIFF_BYTES } else { 2 },
            sniff,
        }),
        bypass: false,
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
            self.compressed_input |= !data.is_empty();
            self.pending = data;
            return self.step();
        }
        // A rewritten chunk is about two segments per match plus one; room
        // for a typical small body's worth avoids regrowing the Vec.
        let mut segs = Vec::with_capacity(32);
        self.feed(data, false, &mut segs)?;
        self.emit(segs, false)
    }

    /// The last chunk of an uncompressed body: rewritten and ended in one
    /// pass.
    fn on_last_data(&mut self, data: Bytes) -> Result<(), RewriteError> {
        let mut segs = Vec::with_capacity(32);
        self.feed(data, true, &mut segs)?;
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
            self.feed(Bytes::from(decoded), false, &mut segs)?;
        }
        let chunk_done = self.pending.is_empty();
        self.emit(segs, chunk_done)
    }

    fn on_end(&mut self) -> Result<(), RewriteError> {
        let mut decoded = Vec::new();
        if let Some(d) = self.decoder.take().filter(|_| self.compressed_input) {
            d.finish(&mut decoded).map_err(Pipeline::decode_err)?;
        }
        let mut segs = Vec::new();
        self.feed(Bytes::from(decoded), true, &mut segs)?;
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

    /// Hands decoded bytes to the rewriter (or, for a body judged binary,
    /// straight on), after the first bytes of the body have been held until
    /// there are enough of them to judge ([`Prefix`]).
    fn feed(&mut self, data: Bytes, last: bool, segs: &mut Vec<Bytes>) -> Result<(), RewriteError> {
        let data = match self.prefix.take() {
            None => data,
            Some(mut prefix) => {
                let whole = if prefix.held.is_empty() {
                    data
                } else {
                    prefix.held.extend_from_slice(&data);
                    Bytes::from(std::mem::take(&mut prefix.held))
                };
                if whole.len() < prefix.need && !last {
                    prefix.held = whole.into();
                    self.prefix = Some(prefix);
                    return Ok(());
                }
                self.judge(&prefix, &whole)?;
                whole
            }
        };
        if self.bypass {
            if !data.is_empty() {
                segs.push(data);
            }
        } else if last {
            self.rewriter.push_last(data, segs);
        } else {
            self.rewriter.push(data, segs);
        }
        Ok(())
    }

    /// Judges a body by its first bytes: a UTF-16 byte order mark, which
    /// readers follow before any label (WHATWG Encoding, "decode"), is an
    /// error; a body whose type was to be sniffed and that starts as binary
    /// data is passed on untouched.
    fn judge(&mut self, prefix: &Prefix, first: &[u8]) -> Result<(), RewriteError> {
        if first.starts_with(b"\xfe\xff") || first.starts_with(b"\xff\xfe") {
            return Err(RewriteError::Utf16);
        }
        if prefix.sniff {
            let head = first.get(..SNIFF_BYTES).unwrap_or(first);
            self.bypass = head.iter().any(|b| is_binary_byte(*b));
        }
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
            // No type: sniffed by readers, and it reads as text.
            (&[], true),
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

    #[test]
    fn types_readers_sniff() {
        let sniffed = |values: &[&'static str]| {
            let v: Vec<HeaderValue> = values.iter().map(|s| HeaderValue::from_static(s)).collect();
            sniffed_type(v.iter())
        };
        for values in [
            &[][..],
            &["html"],
            &["text/html garbage"],
            &["*/*"],
            &["Unknown/Unknown"],
            &["application/unknown; charset=utf-8"],
            &["image/png", "unknown/unknown"],
            &["/json", "text/"],
        ] {
            assert!(sniffed(values), "{values:?}");
        }
        for values in [
            &["image/png"][..],
            &["application/octet-stream"],
            &["unknown/unknown, image/png"],
            // Fetch skips `*/*` and takes the type before it.
            &["image/png, */*"],
            &["image/png", "html"],
        ] {
            assert!(!sniffed(values), "{values:?}");
        }
    }

    #[test]
    fn charsets_the_rewriter_cannot_read() {
        let label =
            |value: &'static str| unreadable_charset([HeaderValue::from_static(value)].iter());
        for value in [
            "text/html; charset=utf-16",
            "text/html;charset=\"UTF-16BE\"",
            "application/json; charset=utf-32le",
            "text/plain; charset=UCS-2",
            "text/html; charset=csUnicode",
            "text/html; charset=unicodeFFFE",
            "text/html; charset=iso-10646-ucs-2",
            "text/html; charset=utf-7",
            "text/plain; charset=cp037",
            "text/plain; charset=IBM500",
            "text/plain; charset=x-utf-16le",
            "text/html, application/json; charset=utf-16",
        ] {
            assert!(label(value).is_some(), "{value}");
        }
        for value in [
            "text/html",
            "text/html; charset=utf-8",
            "text/html; charset=unicode-1-1-utf-8",
            "text/html; charset=iso-8859-1",
            "text/html; charset=windows-1252",
            "text/html; charset=shift_jis",
            "text/plain; charset=cp1252",
            "text/plain; charset=ibm866",
        ] {
            assert_eq!(label(value), None, "{value}");
        }
    }

    #[tokio::test]
    async fn first_bytes_are_judged_however_the_body_is_split() {
        let text = format!("<html><a href=\"{PUBLIC}/x\">{}</a>", "y".repeat(600));
        let mut binary = b"GIF89a\x01\x00".to_vec();
        binary.extend_from_slice(text.as_bytes());
        let mut bom = b"\xff\xfe".to_vec();
        bom.extend_from_slice(text.as_bytes());
        for size in [1, 2, 3, 511, 512, 513, 4096] {
            let r = rules();
            // No type: text is rewritten, binary data passes as it is.
            let mut p = parts("text/plain", None);
            p.headers.remove(CONTENT_TYPE);
            let body = rewrite_response(&r, &mut p, None, frames(text.as_bytes(), size)).unwrap();
            let (out, _) = collect(body).await.unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                text.replace(PUBLIC, PRIVATE),
                "{size}"
            );
            let mut p = parts("text/plain", None);
            p.headers.remove(CONTENT_TYPE);
            let body = rewrite_response(&r, &mut p, None, frames(&binary, size)).unwrap();
            let (out, _) = collect(body).await.unwrap();
            assert_eq!(out, binary, "{size}");
            // A UTF-16 byte order mark is an error, typed or not.
            for typed in [true, false] {
                let mut p = parts("text/html", None);
                if !typed {
                    p.headers.remove(CONTENT_TYPE);
                }
                let body = rewrite_response(&r, &mut p, None, frames(&bom, size)).unwrap();
                let e = collect(body).await.unwrap_err();
                assert!(e.to_string().contains("UTF-16"), "{size}: {e}");
            }
        }
        // An empty body without a type is left as it is, length and all.
        let r = rules();
        let mut p = parts("text/plain", None);
        p.headers.remove(CONTENT_TYPE);
        p.headers
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let body = rewrite_response(&r, &mut p, None, frames(b"", 1)).unwrap();
        assert!(!body.is_rewriting());
        assert_eq!(p.headers[CONTENT_LENGTH], "0");
        // A body shorter than the judgement needs is judged at its end.
        for short in [&b"h"[..], b"", b"\x00"] {
            let r = rules();
            let mut p = parts("text/plain", None);
            p.headers.remove(CONTENT_TYPE);
            let body = rewrite_response(&r, &mut p, None, frames(short, 1)).unwrap();
            assert_eq!(collect(body).await.unwrap().0, short);
        }
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
