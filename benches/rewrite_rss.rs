//! Peak memory of a streaming rewrite: generates a JSON body of the given
//! size on the fly (a public URL about every 4 KiB), streams it through the
//! rewriter in 16 KiB chunks, and prints the peak resident set size (VmHWM
//! from /proc/self/status). Run it once per size; flat figures across sizes
//! mean memory does not grow with the body.
//!
//!     cargo bench --bench rewrite_rss -- 1 plain
//!     cargo bench --bench rewrite_rss -- 256 gzip
//!
//! `plain` drives `StreamRewriter` directly; `gzip` drives the whole
//! `RewriteBody` adaptor on a gzip upstream body, re-encoded as gzip.

use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::noop_waker_ref;

use bytes::Bytes;
use http_body::{Body, Frame};
use sharegate::rewrite::{rewrite_response, Origin, RewriteOptions, Rules, StreamRewriter};

const CHUNK: usize = 16 << 10;

/// Produces the body chunk by chunk; never holds more than one chunk.
struct Generator {
    left: usize,
    record: u64,
    line: Vec<u8>,
}

impl Generator {
    fn new(size: usize) -> Self {
        Generator {
            left: size,
            record: 0,
            line: Vec::new(),
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let want = CHUNK.min(self.left);
        while self.line.len() < want {
            let url = if self.record & 3 == 0 {
                "https://smith.langchain.com"
            } else {
                "https://api.openai.com"
            };
            let _ = write!(
                self.line,
                "{{\"id\":{},\"url\":\"{url}/public/{:08x}/r\",\"text\":\"{}\"}},",
                self.record,
                self.record,
                "the quick brown fox jumps over the lazy dog; ".repeat(18)
            );
            self.record += 1;
        }
        let rest = self.line.split_off(want);
        let chunk = std::mem::replace(&mut self.line, rest);
        self.left -= want;
        Some(Bytes::from(chunk))
    }
}

/// The generated body, gzip-encoded as it is produced.
struct GzipUpstream {
    gen: Generator,
    enc: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl Body for GzipUpstream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let Some(enc) = this.enc.as_mut() else {
            return Poll::Ready(None);
        };
        match this.gen.next_chunk() {
            Some(chunk) => {
                let _ = enc.write_all(&chunk);
                let _ = enc.flush();
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(std::mem::take(
                    enc.get_mut(),
                ))))))
            }
            None => {
                let out = this
                    .enc
                    .take()
                    .and_then(|e| e.finish().ok())
                    .unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
            }
        }
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mode = args.next().unwrap_or_else(|| "plain".into());
    let rules = Arc::new(
        Rules::new(
            vec![Origin::parse("https://smith.langchain.com").unwrap()],
            Origin::parse("https://smith.internal.example").unwrap(),
            RewriteOptions::default(),
        )
        .unwrap(),
    );
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let start = std::time::Instant::now();
    let matches = match mode.as_str() {
        "plain" => {
            let mut gen = Generator::new(mib << 20);
            let mut r = StreamRewriter::new(Arc::clone(&rules));
            let mut out = Vec::new();
            while let Some(chunk) = gen.next_chunk() {
                bytes_in += chunk.len() as u64;
                r.push(chunk, &mut out);
                bytes_out += out.drain(..).map(|b| b.len() as u64).sum::<u64>();
            }
            r.finish(&mut out);
            bytes_out += out.drain(..).map(|b| b.len() as u64).sum::<u64>();
            r.matches()
        }
        "gzip" => {
            let upstream = GzipUpstream {
                gen: Generator::new(mib << 20),
                enc: Some(flate2::write::GzEncoder::new(
                    Vec::new(),
                    flate2::Compression::fast(),
                )),
            };
            let (mut parts, ()) = http::Response::builder()
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(())
                .unwrap()
                .into_parts();
            let accept = http::HeaderValue::from_static("gzip");
            let mut body = rewrite_response(&rules, &mut parts, Some(&accept), upstream)
                .expect("a gzip body is readable");
            let mut cx = Context::from_waker(noop_waker_ref());
            while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
                let data = frame
                    .expect("generated body decodes")
                    .into_data()
                    .unwrap_or_default();
                bytes_out += data.len() as u64;
            }
            bytes_in = (mib << 20) as u64;
            rules
                .stats()
                .body_matches
                .load(std::sync::atomic::Ordering::Relaxed)
        }
        other => panic!("unknown mode {other}: use plain or gzip"),
    };
    println!(
        "mode={mode} body={mib} MiB in={bytes_in} out={bytes_out} matches={matches} time={:.2?} VmHWM={} KiB",
        start.elapsed(),
        vm_hwm_kib()
    );
}
