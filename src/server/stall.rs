//! A deadline on writes to a client that has stopped reading (nginx's
//! `send_timeout`): without it a client that asks for a large or endless
//! response and then reads nothing holds its connection, and the upstream
//! connection feeding it, for as long as it likes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long something has been waiting: counted from the first `Pending`
/// after the last progress, checked on each poll. Shared by the client
/// socket's writes (`limits.send_timeout`, [`SendDeadline`]) and request
/// bodies (`limits.body_timeout`). The timer is made the first time
/// something has to wait, so what never waits carries no timer; after that
/// it is not moved at every wait (a large response waits on the socket
/// hundreds of times): one set for an earlier wait fires early and is then
/// moved on to the current wait's deadline.
pub(crate) struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// When the current wait began; `None` while things move.
    since: Option<Instant>,
}

impl Stall {
    pub(crate) fn new(limit: Duration) -> Self {
        Stall {
            limit,
            timer: None,
            since: None,
        }
    }

    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// Progress was made: the next wait starts a new count.
    pub(crate) fn progressed(&mut self) {
        self.since = None;
    }

    /// Nothing could be done on this poll: `Ready` once the wait has lasted
    /// `limit` (the task is woken then).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let since = *self.since.get_or_insert_with(Instant::now);
        let deadline = since + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if timer.deadline() >= deadline {
                return Poll::Ready(());
            }
            // Set for an earlier wait: move it on, and poll again so that
            // it wakes this task.
            timer.as_mut().reset(deadline);
        }
    }
}

/// A client socket whose writes fail with `TimedOut` once one has waited
/// `limit` for the client to make room. The wait is per write, not for the
/// whole response: a slow reader that keeps reading is never cut.
pub struct SendDeadline<S> {
    inner: S,
    stall: Stall,
}

impl<S> SendDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        SendDeadline {
            inner,
            stall: Stall::new(limit),
        }
    }

    /// Passes a finished write through, or counts an unfinished one's wait.
    fn settle<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stall.progressed();
            return r;
        }
        match self.stall.poll_expired(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {:?} (limits.send_timeout)",
                    self.stall.limit()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.settle(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.settle(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.settle(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_makes_room_for_times_out() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut s = SendDeadline::new(ours, Duration::from_secs(60));
        // Fills the pipe, then waits; the paused clock jumps to the deadline.
        let err = s.write_all(&[7u8; 256]).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let mut first = Vec::new();
        drop(s);
        theirs.read_to_end(&mut first).await.expect("read");
        assert_eq!(first.len(), 64, "what fitted before the wait");
        // A reader that keeps making room is never cut, however long the
        // whole takes.
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut s = SendDeadline::new(ours, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                match theirs.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        });
        s.write_all(&[1u8; 256]).await.expect("written");
        drop(s);
        assert_eq!(reader.await.expect("reader").len(), 256);
    }
}
