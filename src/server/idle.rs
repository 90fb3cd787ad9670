//! Idle connections: HTTP/1.1 ones give hyper's buffers back, HTTP/2 ones
//! are closed after the idle timeout.
//!
//! hyper keeps an 8 KiB read and an 8 KiB write buffer for a connection's
//! whole life, so thousands of idle keep-alive clients (browsers hold them
//! for minutes) would be most of the gateway's memory. Once a connection
//! has waited a whole [`TICK`] for its next request, with no request in
//! flight and nothing left unsent, it is taken apart with hyper's
//! `into_parts` (the socket and any bytes hyper had read ahead) and waits
//! for its next bytes on the socket alone, through a stack buffer; those
//! bytes start a fresh hyper connection on the same socket. nginx does the
//! same with its keep-alive connections. Under load a connection is never
//! quiet for a whole tick, so busy connections are not rebuilt.
//!
//! Written here because hyper has no setting for it. How the gateway knows
//! hyper is waiting for a request head: hyper (re)arms its header timer,
//! through the connection's [`Timer`], exactly when it begins reading a
//! head; [`Watch::begin`], called by the service, says when it stopped. A
//! connection is parked only when all of these hold: hyper is waiting for
//! a head, every response body has been dropped by hyper, hyper's last
//! write was followed by a completed flush (hyper flushes the socket only
//! once its own buffer is empty), and nothing at all was read, written or
//! begun for a whole tick. With hyper 1.12 the first implies the next two
//! (the tests pass without them); they are kept so that a hyper that arms
//! its timer elsewhere can never have a response cut: at worst it parks
//! less.
//!
//! hyper's HTTP/2 server can be neither taken apart nor given an idle
//! timeout, and an idle HTTP/2 connection holds about 30 KiB of h2's
//! buffers; [`close_when_idle`] lets the caller close one gracefully
//! (GOAWAY) once it has had nothing in flight for the idle timeout, as
//! nginx does after `keepalive_timeout`.
//!
//! An HTTP/2 client can also stop taking a response without ever blocking
//! the socket: it opens no flow-control window for the stream (RFC 9113
//! §5.2), so hyper never asks the response body for its next frame and the
//! upstream connection feeding it stays checked out. The socket's write
//! deadline cannot see that; [`client_stalled`] does, from the response
//! bodies (see [`Tracked`]), and the caller closes the connection as it
//! would for a client that stopped reading.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::proxy_protocol::Prefixed;

/// How long a connection stays quiet before hyper's buffers are given
/// back: between one and two ticks after its last activity.
pub const TICK: Duration = Duration::from_millis(250);

/// What a connection's hyper side is doing, shared between the socket
/// wrapper, the timer, the service and the connection's task (which is
/// the only reader).
pub struct Watch {
    /// Bumped by every read, write, request and head wait: a connection is
    /// quiet when it has not moved between two ticks.
    activity: AtomicU32,
    /// Requests begun (parking stays off after a wake-up that found part
    /// of a request head, until the next request begins).
    requests: AtomicU32,
    /// Response bodies hyper has not dropped yet.
    in_flight: AtomicU32,
    /// hyper is waiting for a request head.
    awaiting_head: AtomicBool,
    /// hyper wrote since its last completed flush.
    unflushed: AtomicBool,
    /// HTTP/2: response bodies are watched for a client that makes no room
    /// for them ([`Watch::watch_stalls`]).
    stalls: AtomicBool,
    /// The watched response bodies (dropped ones are pruned as it grows).
    owed: Mutex<Owing>,
    /// What [`Owed`] times count from.
    born: Instant,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            activity: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            awaiting_head: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            stalls: AtomicBool::new(false),
            owed: Mutex::new(Owing::default()),
            born: Instant::now(),
        }
    }
}

/// The response bodies of a watched HTTP/2 connection.
#[derive(Default)]
struct Owing {
    bodies: Vec<Weak<Owed>>,
    /// The length at which dropped bodies are next pruned: about twice the
    /// bodies alive then, so a busy connection neither grows without bound
    /// between checks nor prunes at every request.
    prune_at: usize,
}

/// Since when hyper has owed a response body a poll: from when the body
/// was handed over or last gave a frame, until hyper asks again (it asks
/// at once while the client makes room). 0 while the body is the one
/// waiting (for the upstream), else milliseconds after [`Watch::born`]
/// plus one.
struct Owed {
    since: AtomicU64,
    born: Instant,
}

impl Owed {
    fn owed(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.since.store(ms + 1, Relaxed);
    }

    fn settled(&self) {
        self.since.store(0, Relaxed);
    }
}

impl Watch {
    fn moved(&self) {
        self.activity.fetch_add(1, Relaxed);
    }

    /// A request begins; the returned guard ends it when dropped (it rides
    /// in the response body, which hyper drops once the body is written).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.awaiting_head.store(false, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        self.moved();
        let owed = self.stalls.load(Relaxed).then(|| {
            let owed = Arc::new(Owed {
                since: AtomicU64::new(0),
                born: self.born,
            });
            let mut owing = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
            if owing.bodies.len() >= owing.prune_at {
                owing.bodies.retain(|w| w.strong_count() > 0);
                owing.prune_at = (owing.bodies.len() * 2).max(64);
            }
            owing.bodies.push(Arc::downgrade(&owed));
            owed
        });
        InFlight(self.clone(), owed)
    }

    /// Watches this connection's response bodies for [`client_stalled`]
    /// (HTTP/2; set before the first request).
    pub fn watch_stalls(&self) {
        self.stalls.store(true, Relaxed);
    }

    /// True when a response body has been owed a poll for `limit`.
    fn stalled(&self, limit: Duration) -> bool {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let mut owing = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
        owing.bodies.retain(|w| w.strong_count() > 0);
        owing.bodies.iter().filter_map(Weak::upgrade).any(|o| {
            let since = o.since.load(Relaxed);
            since != 0 && now.saturating_sub(since - 1) >= limit
        })
    }

    /// Nothing in hyper's hands but a wait for the next request head.
    fn parkable(&self) -> bool {
        self.awaiting_head.load(Relaxed)
            && self.in_flight.load(Relaxed) == 0
            && !self.unflushed.load(Relaxed)
    }
}

/// One request in flight on a watched connection (and, on HTTP/2, its
/// response body's clock).
pub struct InFlight(Arc<Watch>, Option<Arc<Owed>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        self.0.moved();
    }
}

/// A response body that ends its request's [`InFlight`] when hyper drops
/// it, and on HTTP/2 keeps its clock: owed a poll from the moment it is
/// handed to hyper and after each frame it gives, settled while it waits
/// for the upstream.
///
/// On HTTP/2 its data goes to hyper in pieces of at most [`PIECE`]: hyper
/// asks for the next frame only once the client has made room for the
/// last one, so a large chunk from the upstream would leave a slow reader
/// that keeps reading owed for as long as the whole chunk takes. A piece
/// is one DATA frame at the default frame size; a client that cannot take
/// one in `limits.send_timeout` is not reading.
pub struct Tracked<B> {
    body: B,
    request: InFlight,
    /// What is left of a chunk handed on in pieces.
    rest: Bytes,
}

/// The most data an HTTP/2 response body hands hyper at once: the default
/// SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2).
const PIECE: usize = 16 * 1024;

impl<B> Tracked<B> {
    pub fn new(body: B, request: InFlight) -> Self {
        if let Some(owed) = &request.1 {
            owed.owed();
        }
        Tracked {
            body,
            request,
            rest: Bytes::new(),
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(owed) = &this.request.1 else {
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        if !this.rest.is_empty() {
            owed.owed();
            let piece = this.rest.split_to(this.rest.len().min(PIECE));
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                owed.owed();
                match frame.into_data() {
                    Ok(mut data) if data.len() > PIECE => {
                        this.rest = data.split_off(PIECE);
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            r => {
                owed.settled();
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.len() as u64;
        let inner = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

/// hyper's timer for a watched connection: tokio's, noting each time
/// hyper arms the header timer (it begins waiting for a request head).
struct HeadTimer(Arc<Watch>);

impl HeadTimer {
    fn awaiting(&self) {
        self.0.awaiting_head.store(true, Relaxed);
        self.0.moved();
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.awaiting();
        TokioTimer::new().sleep_until(deadline)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        self.awaiting();
        TokioTimer::new().reset(sleep, new_deadline);
    }

    fn now(&self) -> Instant {
        TokioTimer::new().now()
    }
}

/// The socket as hyper sees it: every byte moved is activity, and a write
/// leaves the connection unflushed until a flush completes.
struct Watched<S> {
    inner: Prefixed<S>,
    watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.watch.moved();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.watch.unflushed.store(false, Relaxed);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Watched<S> {
    fn wrote(&self) {
        self.watch.unflushed.store(true, Relaxed);
        self.watch.moved();
    }
}

/// How a watched HTTP/1.1 connection is served.
pub struct Http1 {
    /// hyper's settings (the timer is replaced with the connection's own).
    pub builder: http1::Builder,
    /// The longest wait for a request head, as hyper's header timer bounds
    /// it while hyper holds the connection.
    pub idle_timeout: Duration,
    /// Counts the connections parked right now.
    pub parked: Gauge,
}

/// Counts one parked connection while it lives.
struct Parked(Gauge);

impl Parked {
    fn new(gauge: &Gauge) -> Parked {
        gauge.inc();
        Parked(gauge.clone())
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves HTTP/1.1 on `io` until the client leaves, a timeout, an upgrade
/// or shutdown, parking the connection whenever it goes quiet (module
/// docs). `service` must pass its requests through `watch.begin()`.
pub async fn serve_http1<S, Svc>(
    io: Prefixed<S>,
    service: Svc,
    watch: Arc<Watch>,
    settings: Http1,
    mut stop: watch::Receiver<bool>,
    mut hard: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    Svc: HttpService<Incoming> + Unpin,
    Svc::ResBody: 'static,
    <Svc::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Http1 {
        mut builder,
        idle_timeout,
        parked,
    } = settings;
    builder.timer(HeadTimer(watch.clone()));
    let mut io = Watched {
        inner: io,
        watch: watch.clone(),
    };
    let mut service = service;
    // Off after a wake-up that found only part of a request head: hyper's
    // header timer then runs its full course, not restarted by parking.
    let mut may_park = true;
    loop {
        // Boxed, so that a parked connection does not keep room for
        // hyper's connection state in its task.
        let mut conn = Box::new(
            builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        let mut draining = false;
        let mut seen = watch.activity.load(Relaxed);
        let mut requests = watch.requests.load(Relaxed);
        let mut quiet_since = tokio::time::Instant::now();
        let tick = tokio::time::sleep(TICK);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                r = &mut conn => return r,
                () = tick.as_mut() => {
                    let now = watch.activity.load(Relaxed);
                    let begun = watch.requests.load(Relaxed);
                    if begun != requests {
                        requests = begun;
                        may_park = true;
                    }
                    if now == seen && may_park && !draining && watch.parkable() {
                        break;
                    }
                    if now != seen {
                        seen = now;
                        quiet_since = tokio::time::Instant::now();
                    }
                    tick.as_mut().reset(tokio::time::Instant::now() + TICK);
                }
                _ = stop.wait_for(|s| *s), if !draining => {
                    Pin::new(&mut *conn).graceful_shutdown();
                    draining = true;
                }
                _ = hard.wait_for(|s| *s) => return Ok(()),
            }
        }
        // Parked: hyper's state goes, the socket and the bytes hyper read
        // ahead stay. (`None` only after an upgrade, which ends the loop
        // above first.)
        // The box is freed here (its binding ends), not at the end of the
        // loop: a parked connection keeps none of hyper's state.
        let parts = {
            let conn = conn;
            (*conn).into_parts()
        };
        let Some(parts) = parts else {
            return Ok(());
        };
        io = parts.io.into_inner();
        service = parts.service;
        // Dropped here, not at the end of the loop: it holds hyper's
        // whole read buffer.
        let read_ahead = parts.read_buf;
        if !read_ahead.is_empty() {
            io.inner.unread(&read_ahead);
            may_park = false;
            continue;
        }
        drop(read_ahead);
        let deadline = quiet_since + idle_timeout;
        let _parked = Parked::new(&parked);
        tokio::select! {
            r = tokio::time::timeout_at(deadline, io.inner.read_ahead(8192)) => match r {
                Ok(Ok(n)) if n > 0 => {}
                // Idle past the timeout, closed, or failed: as hyper would.
                _ => return Ok(()),
            },
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// Completes once a connection has had no request in flight, and begun
/// none, for `idle_timeout` (checked every quarter of it, so it completes
/// within 1.25 × `idle_timeout` of the last activity). For HTTP/2, whose
/// service passes its requests through `watch.begin()` too.
pub async fn close_when_idle(watch: &Watch, idle_timeout: Duration) {
    let every = (idle_timeout / 4).max(Duration::from_millis(10));
    let mut requests = watch.requests.load(Relaxed);
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let now = tokio::time::Instant::now();
        let begun = watch.requests.load(Relaxed);
        if begun != requests || watch.in_flight.load(Relaxed) > 0 {
            requests = begun;
            quiet_since = now;
        } else if now - quiet_since >= idle_timeout {
            return;
        }
    }
}

/// Completes once a response body on the connection has been owed a poll
/// for `limit` (`limits.send_timeout`; checked every quarter of it): hyper
/// holds a frame it cannot send because the HTTP/2 client opened no
/// window for it, or the socket took nothing. A body waiting for the
/// upstream (a quiet event stream) is never owed. For connections whose
/// [`Watch::watch_stalls`] is set.
pub async fn client_stalled(watch: &Watch, limit: Duration) {
    let every = (limit / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        if watch.stalled(limit) {
            return;
        }
    }
}
