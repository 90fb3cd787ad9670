//! Streaming content codings: decode an upstream body, re-encode the
//! rewritten one.
//!
//! This file owns the mapping from `Content-Encoding` tokens to codecs
//! (RFC 9110 §8.4.1: gzip, deflate; RFC 7932: br; RFC 8878: zstd), the
//! incremental decoders and encoders, and the `Accept-Encoding` check
//! (RFC 9110 §12.5.3). It does not decide whether a body is rewritten
//! (`response.rs`) and does not look at the bytes it carries.
//!
//! All codecs are driven through their `io::Write` side: compressed input is
//! written, output collects in a `Vec` that the caller takes after each
//! write. The encoder is flushed (a sync flush, not a stream end) after every
//! upstream chunk so a server-sent event is not stuck in a compressor buffer.
//! Levels favor speed: this runs on the request path of every response.

use std::io::{self, Write};

use flate2::write::{DeflateDecoder, GzEncoder, MultiGzDecoder, ZlibDecoder, ZlibEncoder};
use flate2::Compression;

/// A content coding this module can decode and re-encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCoding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl ContentCoding {
    /// The token as sent in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            ContentCoding::Gzip => "gzip",
            ContentCoding::Deflate => "deflate",
            ContentCoding::Brotli => "br",
            ContentCoding::Zstd => "zstd",
        }
    }

    fn from_token(token: &str) -> Option<ContentCoding> {
        match token.to_ascii_lowercase().as_str() {
            // RFC 9110 §8.4.1.3: x-gzip is an alias of gzip.
            "gzip" | "x-gzip" => Some(ContentCoding::Gzip),
            "deflate" => Some(ContentCoding::Deflate),
            "br" => Some(ContentCoding::Brotli),
            "zstd" => Some(ContentCoding::Zstd),
            _ => None,
        }
    }
}

/// What a `Content-Encoding` header says about a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyCoding {
    Identity,
    /// The codings in the order they were applied (RFC 9110 §8.4: listed
    /// in that order, over one or more fields); at most [`MAX_STACKED`].
    Known(Vec<ContentCoding>),
    /// An unknown token, or more than [`MAX_STACKED`] codings: the body
    /// cannot be read here.
    Unsupported(String),
}

/// The most codings one body may carry. Clients decode a stack of them
/// (`gzip, gzip` from an upstream that compresses twice, `br, gzip`), so
/// the rewriter must too; a longer stack is no misconfiguration but an
/// attempt at the decoders.
pub(crate) const MAX_STACKED: usize = 4;

/// Parses every `Content-Encoding` value; `identity` tokens are ignored.
/// Tokens are matched in any case and with any whitespace around them
/// (RFC 9110 §8.4.1: codings are case-insensitive).
pub(crate) fn body_coding<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> BodyCoding {
    let mut codings = Vec::new();
    for v in values {
        let Ok(s) = v.to_str() else {
            return BodyCoding::Unsupported(String::from_utf8_lossy(v.as_bytes()).into_owned());
        };
        for token in s.split(',').map(str::trim) {
            if token.is_empty() || token.eq_ignore_ascii_case("identity") {
                continue;
            }
            match ContentCoding::from_token(token) {
                Some(c) => codings.push(c),
                None => return BodyCoding::Unsupported(token.to_owned()),
            }
        }
    }
    if codings.len() > MAX_STACKED {
        let listed: Vec<&str> = codings.iter().map(|c| c.token()).collect();
        return BodyCoding::Unsupported(listed.join(", "));
    }
    if codings.is_empty() {
        BodyCoding::Identity
    } else {
        BodyCoding::Known(codings)
    }
}

/// Whether the client's `Accept-Encoding` allows `coding`. No header at all
/// means any coding is acceptable (RFC 9110 §12.5.3); `q=0` refuses; `*`
/// covers codings not listed.
pub(crate) fn accepts(accept_encoding: Option<&http::HeaderValue>, coding: ContentCoding) -> bool {
    let Some(value) = accept_encoding else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut star = None;
    for item in value.split(',') {
        let mut params = item.split(';');
        let name = params.next().unwrap_or("").trim();
        let q_ok = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .is_none_or(|(_, q)| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
        let named = ContentCoding::from_token(name);
        if named == Some(coding) {
            return q_ok;
        }
        if name == "*" {
            star = Some(q_ok);
        }
    }
    star.unwrap_or(false)
}

/// An incremental decoder.
pub(crate) enum Decoder {
    Gzip(Box<MultiGzDecoder<Capped>>),
    /// HTTP "deflate" is zlib (RFC 9110 §8.4.1.2), but some servers send raw
    /// deflate; the first two bytes tell which (RFC 1950 §2.2 header check).
    DeflateSniff(Vec<u8>),
    Zlib(Box<ZlibDecoder<Capped>>),
    RawDeflate(Box<DeflateDecoder<Capped>>),
    Brotli(Box<brotli::DecompressorWriter<Capped>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Capped>>),
}

/// The most one write to a decoder may produce: 4,096 times a
/// [`DECODE_SLICE`](super::response::DECODE_SLICE) of input. deflate cannot
/// expand more than about 1,032 times, and real text does not come near
/// this with brotli or zstd either; a body that does is a decompression
/// bomb (a few bytes of brotli can ask for gigabytes), refused with an
/// error before it takes the gateway's memory.
pub(crate) const MAX_DECODED_PER_WRITE: usize = 16 * 1024 * 1024;

/// The decoders' output: a `Vec` that refuses to grow past
/// [`MAX_DECODED_PER_WRITE`] (the caller empties it after each write).
#[derive(Default)]
pub(crate) struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > MAX_DECODED_PER_WRITE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the compressed body expands more than 4,096 times (a decompression bomb)",
            ));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

const BROTLI_BUFFER: usize = 16 * 1024;

impl Decoder {
    pub(crate) fn new(coding: ContentCoding) -> io::Result<Decoder> {
        Ok(match coding {
            ContentCoding::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(Capped::default()))),
            ContentCoding::Deflate => Decoder::DeflateSniff(Vec::new()),
            ContentCoding::Brotli => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(
                Capped::default(),
                BROTLI_BUFFER,
            ))),
            ContentCoding::Zstd => Decoder::Zstd(Box::new(zstd::stream::write::Decoder::new(
                Capped::default(),
            )?)),
        })
    }

    /// Decodes `input`, appending the decoded bytes to `out`.
    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if let Decoder::DeflateSniff(head) = self {
            head.extend_from_slice(input);
            if head.len() < 2 {
                return Ok(());
            }
            let head = std::mem::take(head);
            let zlib =
                head[0] & 0x0f == 8 && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
            *self = if zlib {
                Decoder::Zlib(Box::new(ZlibDecoder::new(Capped::default())))
            } else {
                Decoder::RawDeflate(Box::new(DeflateDecoder::new(Capped::default())))
            };
            return self.write(&head, out);
        }
        match self {
            Decoder::DeflateSniff(_) => {}
            Decoder::Gzip(d) => drain(d.as_mut(), input, out, |d| &mut d.get_mut().0)?,
            Decoder::Zlib(d) => drain(d.as_mut(), input, out, |d| &mut d.get_mut().0)?,
            Decoder::RawDeflate(d) => drain(d.as_mut(), input, out, |d| &mut d.get_mut().0)?,
            Decoder::Brotli(d) => drain(d.as_mut(), input, out, |d| &mut d.get_mut().0)?,
            Decoder::Zstd(d) => drain(d.as_mut(), input, out, |d| &mut d.get_mut().0)?,
        }
        Ok(())
    }

    /// Ends the stream; an incomplete stream is an error, not a short body.
    pub(crate) fn finish(self, out: &mut Vec<u8>) -> io::Result<()> {
        let truncated =
            || io::Error::new(io::ErrorKind::UnexpectedEof, "compressed body ended early");
        match self {
            Decoder::DeflateSniff(head) if head.is_empty() => {}
            Decoder::DeflateSniff(_) => return Err(truncated()),
            Decoder::Gzip(d) => out.extend(d.finish()?.0),
            Decoder::Zlib(d) => out.extend(d.finish()?.0),
            Decoder::RawDeflate(d) => out.extend(d.finish()?.0),
            Decoder::Brotli(d) => out.extend(d.into_inner().map_err(|_| truncated())?.0),
            // zstd's `finish` reports a frame left incomplete.
            Decoder::Zstd(d) => out.extend(d.finish()?.0),
        }
        Ok(())
    }
}

/// The decoders of a stack of codings, the last applied first. Each
/// stage's output of one write goes to the next stage in one write, so
/// every stage is held to [`MAX_DECODED_PER_WRITE`]: an outer coding of
/// compressed data barely expands (compressed bytes do not compress
/// again), so only a bomb reaches the cap.
#[derive(Debug)]
pub(crate) struct DecoderStack {
    stages: Vec<(ContentCoding, Decoder)>,
}

/// A stage of a [`DecoderStack`] failed: its coding and why.
pub(crate) type StageError = (ContentCoding, io::Error);

impl DecoderStack {
    /// Decoders for `codings`, given in the order they were applied.
    pub(crate) fn new(codings: &[ContentCoding]) -> io::Result<DecoderStack> {
        let stages = codings
            .iter()
            .rev()
            .map(|c| Decoder::new(*c).map(|d| (*c, d)))
            .collect::<io::Result<_>>()?;
        Ok(DecoderStack { stages })
    }

    /// Decodes `input` through every stage, appending the result to `out`.
    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), StageError> {
        let Some(((coding, first), rest)) = self.stages.split_first_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        if rest.is_empty() {
            return first.write(input, out).map_err(|e| (*coding, e));
        }
        let mut carry = Vec::new();
        first.write(input, &mut carry).map_err(|e| (*coding, e))?;
        for (coding, stage) in rest {
            if carry.is_empty() {
                return Ok(());
            }
            let mut next = Vec::new();
            stage.write(&carry, &mut next).map_err(|e| (*coding, e))?;
            carry = next;
        }
        out.append(&mut carry);
        Ok(())
    }

    /// Ends every stage in turn, each one's last output going through the
    /// stages after it; an incomplete stream at any stage is an error.
    pub(crate) fn finish(self, out: &mut Vec<u8>) -> Result<(), StageError> {
        let mut carry = Vec::new();
        for (coding, mut stage) in self.stages {
            let mut next = Vec::new();
            if !carry.is_empty() {
                stage.write(&carry, &mut next).map_err(|e| (coding, e))?;
            }
            stage.finish(&mut next).map_err(|e| (coding, e))?;
            carry = next;
        }
        out.append(&mut carry);
        Ok(())
    }
}

/// Writes all of `input`, then moves the produced bytes to `out`. The
/// flush matters: the write-side decoders keep their last output in an
/// internal buffer until the next write, which would delay an event.
fn drain<W: Write>(
    w: &mut W,
    input: &[u8],
    out: &mut Vec<u8>,
    inner: impl Fn(&mut W) -> &mut Vec<u8>,
) -> io::Result<()> {
    w.write_all(input)?;
    w.flush()?;
    out.append(inner(w));
    Ok(())
}

/// An incremental encoder.
pub(crate) enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Deflate(ZlibEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoder")
    }
}

impl Encoder {
    pub(crate) fn new(coding: ContentCoding) -> io::Result<Encoder> {
        Ok(match coding {
            ContentCoding::Gzip => Encoder::Gzip(GzEncoder::new(Vec::new(), Compression::new(4))),
            ContentCoding::Deflate => {
                Encoder::Deflate(ZlibEncoder::new(Vec::new(), Compression::new(4)))
            }
            // Quality 4, 4 MiB window: a fraction of quality 11's cost, and
            // most of the ratio on JSON.
            ContentCoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                4,
                22,
            ))),
            ContentCoding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
        })
    }

    pub(crate) fn write(&mut self, input: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(input),
            Encoder::Deflate(e) => e.write_all(input),
            Encoder::Brotli(e) => e.write_all(input),
            Encoder::Zstd(e) => e.write_all(input),
        }
    }

    /// Flushes what was written so far and takes the encoded bytes.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => {
                e.flush()?;
                out.append(e.get_mut());
            }
            Encoder::Deflate(e) => {
                e.flush()?;
                out.append(e.get_mut());
            }
            Encoder::Brotli(e) => {
                e.flush()?;
                out.append(e.get_mut());
            }
            Encoder::Zstd(e) => {
                e.flush()?;
                out.append(e.get_mut());
            }
        }
        Ok(())
    }

    /// Takes encoded bytes without forcing a flush.
    pub(crate) fn take(&mut self, out: &mut Vec<u8>) {
        match self {
            Encoder::Gzip(e) => out.append(e.get_mut()),
            Encoder::Deflate(e) => out.append(e.get_mut()),
            Encoder::Brotli(e) => out.append(e.get_mut()),
            Encoder::Zstd(e) => out.append(e.get_mut()),
        }
    }

    /// Ends the stream (trailer, checksum) and takes the rest.
    pub(crate) fn finish(self, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => out.extend(e.finish()?),
            Encoder::Deflate(e) => out.extend(e.finish()?),
            Encoder::Brotli(e) => out.extend(e.into_inner()),
            Encoder::Zstd(e) => out.extend(e.finish()?),
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;

    /// One-shot encode, for tests.
    pub(crate) fn encode(coding: ContentCoding, data: &[u8]) -> Vec<u8> {
        let mut e = Encoder::new(coding).unwrap();
        e.write(data).unwrap();
        let mut out = Vec::new();
        e.finish(&mut out).unwrap();
        out
    }

    /// One-shot decode, for tests.
    pub(crate) fn decode(coding: ContentCoding, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut d = Decoder::new(coding)?;
        let mut out = Vec::new();
        d.write(data, &mut out)?;
        d.finish(&mut out)?;
        Ok(out)
    }

    const ALL: [ContentCoding; 4] = [
        ContentCoding::Gzip,
        ContentCoding::Deflate,
        ContentCoding::Brotli,
        ContentCoding::Zstd,
    ];

    #[test]
    fn a_decompression_bomb_is_refused_at_the_cap() {
        // 64 MiB of zeros is a few KiB of brotli or zstd: one write of it
        // would expand over 10,000 times.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        for coding in [ContentCoding::Brotli, ContentCoding::Zstd] {
            let bomb = encode(coding, &zeros);
            assert!(bomb.len() < 16 * 1024, "{coding:?}: {} bytes", bomb.len());
            let mut d = Decoder::new(coding).unwrap();
            let mut out = Vec::new();
            let e = d.write(&bomb, &mut out).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{coding:?}");
            assert!(e.to_string().contains("decompression bomb"), "{e}");
            assert!(out.len() <= MAX_DECODED_PER_WRITE);
        }
        // deflate at its densest (about 1,032 times) stays under the cap
        // slice by slice, however long the body.
        let dense = encode(ContentCoding::Gzip, &zeros);
        let mut d = Decoder::new(ContentCoding::Gzip).unwrap();
        let mut total = 0;
        for slice in dense.chunks(crate::rewrite::response::DECODE_SLICE) {
            let mut out = Vec::new();
            d.write(slice, &mut out).unwrap();
            total += out.len();
        }
        let mut out = Vec::new();
        d.finish(&mut out).unwrap();
        assert_eq!(total + out.len(), zeros.len());
    }

    #[test]
    fn round_trip_each_coding_byte_by_byte() {
        let data: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect();
        for c in ALL {
            let enc = encode(c, &data);
            let mut d = Decoder::new(c).unwrap();
            let mut out = Vec::new();
            for b in enc.chunks(7) {
                d.write(b, &mut out).unwrap();
            }
            d.finish(&mut out).unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }

    #[test]
    fn raw_deflate_accepted() {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
        e.write_all(b"hello raw deflate").unwrap();
        let raw = e.finish().unwrap();
        assert_eq!(
            decode(ContentCoding::Deflate, &raw).unwrap(),
            b"hello raw deflate"
        );
    }

    #[test]
    fn corrupt_and_truncated_are_errors() {
        let data = b"some body that compresses a bit a bit a bit".repeat(50);
        for c in ALL {
            let enc = encode(c, &data);
            assert!(decode(c, &enc[..enc.len() / 2]).is_err(), "truncated {c:?}");
            let mut bad = enc.clone();
            for b in bad.iter_mut().skip(4).take(16) {
                *b ^= 0x5a;
            }
            assert!(
                decode(c, &bad).map_or(true, |out| out != data),
                "corrupt {c:?}"
            );
        }
    }

    #[test]
    fn flush_emits_decodable_prefix() {
        for c in ALL {
            let mut e = Encoder::new(c).unwrap();
            e.write(b"data: one\n\n").unwrap();
            let mut first = Vec::new();
            e.flush(&mut first).unwrap();
            let mut d = Decoder::new(c).unwrap();
            let mut out = Vec::new();
            d.write(&first, &mut out).unwrap();
            assert_eq!(out, b"data: one\n\n", "{c:?}");
        }
    }

    #[test]
    fn content_encoding_parsing() {
        use ContentCoding::{Brotli, Gzip};
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(body_coding([].iter()), BodyCoding::Identity);
        assert_eq!(body_coding([v("identity")].iter()), BodyCoding::Identity);
        assert_eq!(
            body_coding([v(" , identity,")].iter()),
            BodyCoding::Identity
        );
        assert_eq!(
            body_coding([v("GZIP")].iter()),
            BodyCoding::Known(vec![Gzip])
        );
        assert_eq!(
            body_coding([v("x-gzip")].iter()),
            BodyCoding::Known(vec![Gzip])
        );
        // Stacked, in the order applied, over one field or several.
        assert_eq!(
            body_coding([v("br , gzip")].iter()),
            BodyCoding::Known(vec![Brotli, Gzip])
        );
        assert_eq!(
            body_coding([v("gzip"), v("identity, gzip")].iter()),
            BodyCoding::Known(vec![Gzip, Gzip])
        );
        for unreadable in ["compress", "gzip, x-custom", "gzip,gzip,gzip,gzip,gzip"] {
            assert!(
                matches!(
                    body_coding([v(unreadable)].iter()),
                    BodyCoding::Unsupported(_)
                ),
                "{unreadable}"
            );
        }
    }

    #[test]
    fn a_stack_decodes_each_coding_in_turn_and_refuses_a_bomb_inside() {
        use ContentCoding::{Brotli, Gzip, Zstd};
        let data = b"{\"url\":\"https://smith.example.com/x\"}".repeat(500);
        let twice = encode(Gzip, &encode(Brotli, &data));
        let mut d = DecoderStack::new(&[Brotli, Gzip]).unwrap();
        let mut out = Vec::new();
        for slice in twice.chunks(5) {
            d.write(slice, &mut out).unwrap();
        }
        d.finish(&mut out).unwrap();
        assert_eq!(out, data);
        // Truncated at the inner stage: an error naming that coding.
        let inner = encode(Brotli, &data);
        let cut = encode(Gzip, &inner[..inner.len() / 2]);
        let mut d = DecoderStack::new(&[Brotli, Gzip]).unwrap();
        let mut out = Vec::new();
        d.write(&cut, &mut out).unwrap();
        assert_eq!(d.finish(&mut out).unwrap_err().0, Brotli);
        // A bomb under a harmless outer coding is still refused at the cap.
        let bomb = encode(Gzip, &encode(Zstd, &vec![0u8; 64 * 1024 * 1024]));
        let mut d = DecoderStack::new(&[Zstd, Gzip]).unwrap();
        let mut out = Vec::new();
        let e = d.write(&bomb, &mut out).unwrap_err();
        assert_eq!(e.0, Zstd);
        assert!(e.1.to_string().contains("decompression bomb"), "{}", e.1);
    }

    #[test]
    fn accept_encoding() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(accepts(None, ContentCoding::Brotli));
        assert!(accepts(
            Some(&v("gzip, deflate, br, zstd")),
            ContentCoding::Zstd
        ));
        assert!(!accepts(Some(&v("gzip, deflate")), ContentCoding::Brotli));
        assert!(!accepts(Some(&v("br;q=0, *")), ContentCoding::Brotli));
        assert!(accepts(Some(&v("*")), ContentCoding::Gzip));
        assert!(!accepts(Some(&v("*;q=0")), ContentCoding::Gzip));
        assert!(!accepts(Some(&v("identity")), ContentCoding::Gzip));
        assert!(accepts(Some(&v("GZIP;Q=0.5")), ContentCoding::Gzip));
    }
}
