//! A deadline on a connection's opening bytes.
//!
//! hyper-util's automatic HTTP/1-or-2 server first reads up to the 24 bytes
//! of HTTP/2's preface to pick the protocol, before hyper (and its header
//! timer) is involved, and waits for them without any deadline: a client
//! that connects and sends nothing, or a few bytes of the preface, would
//! hold a connection slot for ever (a slowloris that needs no bytes at all;
//! `max_connections` of them lock everyone out). [`Opening`] fails the read
//! with `TimedOut` when that detection has not ended within the limit. It
//! stands down as soon as the detection ends, as hyper-util's does: at the
//! first byte that is not the preface's (HTTP/1, whose head hyper's own
//! `header_read_timeout` bounds from there) or once the whole preface has
//! arrived (HTTP/2). A request being served is never cut by it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct Opening<S> {
    inner: S,
    /// `None` once the protocol detection is over.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How many bytes matched the preface so far.
    seen: usize,
}

impl<S> Opening<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Opening {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            seen: 0,
        }
    }

    /// Notes bytes that arrived; the deadline ends with the detection.
    fn arrived(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if H2_PREFACE.get(self.seen) != Some(&b) {
                self.deadline = None;
                return;
            }
            self.seen += 1;
            if self.seen == H2_PREFACE.len() {
                self.deadline = None;
                return;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Opening<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.deadline.is_some() {
                    let new = buf.filled().get(before..).unwrap_or_default();
                    this.arrived(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request began within limits.header_timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

write_through!(Opening);
