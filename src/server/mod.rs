//! Listeners: accept loop, TLS handshake, HTTP/1.1 and HTTP/2 serving, idle
//! connections (`idle`: parked or closed), clients that stop reading or
//! sending (`stall`), and graceful shutdown.
//!
//! [`run`] takes listeners the caller has bound (so tests own their sockets
//! and can use port 0) and a shutdown future. Each accepted connection gets
//! its [`Conn`] facts once, then every request on it goes to
//! `proxy::handle`. This module knows nothing of policy.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Limits};
use crate::error::full;
use crate::identity::client_cert::ClientCert;
use crate::proxy::{self, Conn, Gateway};
use crate::state::State;

/// `AsyncWrite` for a wrapper that only watches or replays reads: every
/// write goes to its `inner` stream as is.
macro_rules! write_through {
    ($ty:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

mod idle;
mod opening;
pub mod proxy_protocol;
pub(crate) mod stall;
use opening::{sniff, Version};
use proxy_protocol::{read_header, Prefixed, ProxyHeader};

/// Every socket the gateway serves.
pub struct Listeners {
    /// Share traffic (TLS when configured).
    pub traffic: Vec<TcpListener>,
    /// Plain HTTP that only redirects to HTTPS.
    pub redirect: Vec<TcpListener>,
    /// Health, readiness, metrics.
    pub admin: Option<TcpListener>,
}

impl From<Vec<TcpListener>> for Listeners {
    fn from(traffic: Vec<TcpListener>) -> Self {
        Listeners {
            traffic,
            redirect: Vec::new(),
            admin: None,
        }
    }
}

/// Binds every address the config names, or says which one failed.
pub async fn bind(cfg: &Config) -> Result<Listeners, (SocketAddr, std::io::Error)> {
    let mut l = Listeners {
        traffic: Vec::new(),
        redirect: Vec::new(),
        admin: None,
    };
    for c in &cfg.listeners {
        let a = c.addr;
        l.traffic
            .push(TcpListener::bind(a).await.map_err(|e| (a, e))?);
    }
    for a in &cfg.redirect_listen {
        l.redirect
            .push(TcpListener::bind(a).await.map_err(|e| (*a, e))?);
    }
    if let Some(a) = cfg.admin_listen {
        l.admin = Some(TcpListener::bind(a).await.map_err(|e| (a, e))?);
    }
    Ok(l)
}

/// Connections the redirect listener holds at once. Each gets one `308` and
/// is closed (`Connection: close`), so the limit is reached only by clients
/// that send nothing; it keeps them from taking the descriptors the traffic
/// listeners need (`limits.max_connections` counts those alone).
pub const REDIRECT_CONNECTIONS: usize = 1024;
/// Connections the admin listener holds at once: probes and scrapers.
pub const ADMIN_CONNECTIONS: usize = 64;

/// What a listener serves; `Traffic` carries the listener's index in
/// `config.listeners` (its TLS and PROXY settings).
#[derive(Clone, Copy)]
enum Kind {
    Traffic(usize),
    Redirect,
    Admin,
}

/// Serves until `shutdown` resolves; then stops accepting, lets in-flight
/// requests finish within `server.shutdown_grace`, and closes what is left.
/// IPv6 wildcard listeners keep the OS's dual-stack default, so `[::]:8443`
/// also takes IPv4 clients (as IPv4-mapped addresses, which the policy
/// canonicalizes).
pub async fn run(
    listeners: impl Into<Listeners>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    run_or_cut(listeners, state, shutdown, std::future::pending::<()>()).await;
}

/// [`run`], with a way to end the drain early: when `cut` resolves while
/// in-flight requests are still draining (an operator's second signal),
/// what is left is closed at once, as when the grace period is over, and
/// `cut`'s output is returned. `None`: the drain ended by itself (every
/// connection finished, or the grace period ran out).
///
/// `cut` is polled only once `shutdown` has resolved, and one that is ready
/// by then cuts the drain before it begins.
pub async fn run_or_cut<T>(
    listeners: impl Into<Listeners>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    cut: impl Future<Output = T>,
) -> Option<T> {
    let listeners = listeners.into();
    // Every connection task holds a clone of `live`; when the last one is
    // gone, `drained` yields `None`.
    let (live, mut drained) = mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (hard_tx, hard_rx) = watch::channel(false);
    let limits = state.gateway().config.limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let redirect_slots = Arc::new(Semaphore::new(REDIRECT_CONNECTIONS));
    let admin_slots = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    let all = listeners
        .traffic
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, Kind::Traffic(i)))
        .chain(listeners.redirect.into_iter().map(|l| (l, Kind::Redirect)))
        .chain(listeners.admin.into_iter().map(|l| (l, Kind::Admin)));
    let mut loops = Vec::new();
    for (listener, kind) in all {
        let ctx = AcceptCtx {
            state: state.clone(),
            stop: stop_rx.clone(),
            hard_stop: hard_rx.clone(),
            live: live.clone(),
            slots: match kind {
                Kind::Traffic(_) => slots.clone(),
                Kind::Redirect => redirect_slots.clone(),
                Kind::Admin => admin_slots.clone(),
            },
            kind,
        };
        loops.push(tokio::spawn(accept_loop(listener, ctx)));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let grace = state.gateway().config.shutdown_grace;
    drop(live);
    // `cut` comes first: once it is ready the drain is over, even when the
    // last connection happens to finish at the same moment.
    tokio::select! {
        biased;
        t = cut => {
            let _ = hard_tx.send(true);
            Some(t)
        }
        drained = tokio::time::timeout(grace, drained.recv()) => {
            if drained.is_err() {
                tracing::warn!(
                    ?grace,
                    "grace period over; closing the remaining connections"
                );
                let _ = hard_tx.send(true);
            }
            None
        }
    }
}

#[derive(Clone)]
struct AcceptCtx {
    state: Arc<State>,
    stop: watch::Receiver<bool>,
    hard_stop: watch::Receiver<bool>,
    live: mpsc::Sender<()>,
    slots: Arc<Semaphore>,
    kind: Kind,
}

/// What one connection task needs.
struct ConnCtx {
    state: Arc<State>,
    /// Held while the connection lives (see `run`).
    _live: mpsc::Sender<()>,
    stop: watch::Receiver<bool>,
    hard_stop: watch::Receiver<bool>,
    kind: Kind,
}

async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
    let mut stop = ctx.stop.clone();
    loop {
        // A connection slot first: at the limit, new connections wait in
        // the kernel's backlog instead of being accepted and starved.
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            p = ctx.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = ConnCtx {
                    state: ctx.state.clone(),
                    _live: ctx.live.clone(),
                    stop: ctx.stop.clone(),
                    hard_stop: ctx.hard_stop.clone(),
                    kind: ctx.kind,
                };
                tokio::spawn(async move {
                    let _permit = permit;
                    connection(stream, peer, ctx).await;
                });
            }
            Err(e) => {
                // Out of descriptors or similar: back off briefly instead of
                // spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection in the active gauge while it lives.
struct Active(Arc<State>);

impl Active {
    fn new(state: &Arc<State>) -> Active {
        state.metrics.connections.inc();
        state.metrics.active_connections.inc();
        Active(state.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.metrics.active_connections.dec();
    }
}

/// hyper's HTTP/1.1 server settings.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        // hyper runs this timer whenever it waits for a request head, so it
        // bounds both a slow header (slowloris) and an idle keep-alive.
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    b
}

/// A traffic listener's HTTP/1.1 settings, with idle parking (`idle`).
fn http1_settings(limits: &Limits, state: &State) -> idle::Http1 {
    idle::Http1 {
        builder: http1_builder(limits),
        idle_timeout: limits.header_timeout,
        parked: state.metrics.parked_connections.clone(),
    }
}

/// hyper's HTTP/2 server settings.
fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid-reset (CVE-2023-44487) bound.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// HTTP/1.1 on an admin or redirect connection (no parking: probes and
/// browsers on plain HTTP), its state built inside the caller's box.
async fn serve_plain_http1<S>(
    stream: TcpStream,
    service: S,
    limits: &Limits,
    stop: watch::Receiver<bool>,
    hard: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A client that stops reading is let go as on traffic listeners.
    let stream = stall::SendDeadline::new(stream, limits.send_timeout);
    let conn = http1_builder(limits).serve_connection(TokioIo::new(stream), service);
    let never_idle = std::future::pending();
    serve(conn, |c| c.graceful_shutdown(), never_idle, stop, hard).await
}

/// HTTP/2 on `io` (its connection state built inside the caller's box),
/// closed gracefully once idle for `limits.header_timeout`, and at once
/// when a response has waited `limits.send_timeout` for the client to make
/// room for it (`idle`).
async fn serve_http2<I, S>(
    io: I,
    service: S,
    watch: Arc<idle::Watch>,
    limits: &Limits,
    stop: watch::Receiver<bool>,
    hard: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    watch.watch_stalls();
    let conn = http2_builder(limits).serve_connection(TokioIo::new(io), service);
    let idle = idle::close_when_idle(&watch, limits.header_timeout);
    let served = serve(conn, |c| c.graceful_shutdown(), idle, stop, hard);
    // A stream the client makes no room for (`idle::client_stalled`) is a
    // client that stopped reading: the connection is closed, as the
    // socket's write deadline closes one whose writes wait, and the
    // upstream responses feeding it are dropped.
    tokio::select! {
        r = served => r,
        () = idle::client_stalled(&watch, limits.send_timeout) => {
            tracing::info!(
                limit = ?limits.send_timeout,
                "an HTTP/2 client made no room for a response (limits.send_timeout); connection closed"
            );
            Ok(())
        }
    }
}

/// Runs `conn` to its end; on shutdown, or once `idle` completes, `drain`s
/// it (hyper's `graceful_shutdown`: in-flight requests finish, no new ones
/// start), and on a hard stop (the grace period is over) drops it.
///
/// Callers box this future: the connection task then holds a pointer, and
/// each connection pays only for its own protocol's state (a plain HTTP/1.1
/// connection does not carry room for a TLS or HTTP/2 one), about 4 KiB
/// less per idle connection.
async fn serve<C, F, D>(
    conn: C,
    drain: F,
    idle: D,
    mut stop: watch::Receiver<bool>,
    mut hard: watch::Receiver<bool>,
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
    F: FnOnce(Pin<&mut C>),
    D: Future<Output = ()>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        () = idle => drain(conn.as_mut()),
        _ = stop.wait_for(|s| *s) => drain(conn.as_mut()),
        _ = hard.wait_for(|s| *s) => return Ok(()),
    }
    tokio::select! {
        r = conn => r,
        _ = hard.wait_for(|s| *s) => Ok(()),
    }
}

async fn connection(stream: TcpStream, tcp_peer: SocketAddr, ctx: ConnCtx) {
    let _ = stream.set_nodelay(true);
    let _active = Active::new(&ctx.state);
    let gateway = ctx.state.gateway();
    let limits = gateway.config.limits.clone();
    let (stop, hard) = (ctx.stop, ctx.hard_stop);
    // Admin and redirect listeners speak HTTP/1.1 (probes, scrapers,
    // browsers on plain HTTP).
    let result = match ctx.kind {
        Kind::Admin => {
            let state = ctx.state.clone();
            let service = service_fn(move |req| crate::admin::handle(state.clone(), req));
            Box::pin(serve_plain_http1(stream, service, &limits, stop, hard)).await
        }
        Kind::Redirect => {
            let https_port = gateway
                .config
                .listeners
                .iter()
                .find(|l| l.tls.is_some())
                .map_or(443, |l| l.addr.port());
            let hosts = gateway.config.policy.hosts.clone();
            let service = service_fn(move |req: http::Request<Incoming>| {
                let mut r = redirect(&req, https_port, &hosts);
                // The client goes on to the HTTPS listener (or is refused):
                // nothing to keep the connection for.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                std::future::ready(Ok::<_, Infallible>(r))
            });
            Box::pin(serve_plain_http1(stream, service, &limits, stop, hard)).await
        }
        Kind::Traffic(index) => {
            // PROXY header and TLS handshake run under one deadline. Boxed,
            // like the serving below: the handshake's state is large and
            // would otherwise stay sized into the task for its whole life.
            let start = Box::pin(accept(stream, tcp_peer, &gateway, index));
            let accepted = match tokio::time::timeout(limits.handshake_timeout, start).await {
                Ok(Ok(a)) => a,
                Ok(Err(reason)) => {
                    tracing::info!(peer = %tcp_peer, %reason, "connection refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %tcp_peer, "connection set-up timed out");
                    return;
                }
            };
            drop(gateway);
            let (io, conn) = accepted;
            let conn = Arc::new(conn);
            let peer = conn.peer;
            let state = ctx.state.clone();
            // Connections are watched so that an idle HTTP/1.1 one gives
            // hyper's buffers back and an idle HTTP/2 one is closed (`idle`).
            let watch = Arc::new(idle::Watch::default());
            let service_watch = watch.clone();
            let service = service_fn(move |req| {
                let state = state.clone();
                let conn = conn.clone();
                let request = service_watch.begin();
                // Boxed: hyper keeps a slot the size of this future in every
                // connection for its whole life, idle or not; a box is a
                // pointer there and the request's state lives only as long
                // as the request (3.5 KiB less per idle connection).
                let handling = Box::pin(proxy::handle(state, conn, req));
                async move {
                    let response = handling.await;
                    Ok::<_, Infallible>(response.map(|b| idle::Tracked::new(b, request)))
                }
            });
            // The HTTP version: on TLS what ALPN agreed (RFC 9113 §3.3: no
            // HTTP/2 without it); on cleartext the opening bytes (HTTP/2 by
            // prior knowledge, else HTTP/1.1).
            let limit = limits.header_timeout;
            match io {
                Io::Plain(s) => match Box::pin(opening(s, limit, peer, stop.clone())).await {
                    None => return,
                    Some((Version::Http1, s)) => {
                        let settings = http1_settings(&limits, &ctx.state);
                        Box::pin(idle::serve_http1(s, service, watch, settings, stop, hard)).await
                    }
                    Some((Version::Http2, s)) => {
                        Box::pin(serve_http2(s, service, watch, &limits, stop, hard)).await
                    }
                },
                Io::Tls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                    // Waits for the preface under the deadline; a client
                    // that sends something else gets hyper's HTTP/2 error.
                    let s = Prefixed::new(Vec::new(), s);
                    match Box::pin(opening(s, limit, peer, stop.clone())).await {
                        None => return,
                        Some((_, s)) => {
                            Box::pin(serve_http2(s, service, watch, &limits, stop, hard)).await
                        }
                    }
                }
                Io::Tls(s) => {
                    let s = Prefixed::new(Vec::new(), s);
                    let settings = http1_settings(&limits, &ctx.state);
                    Box::pin(idle::serve_http1(s, service, watch, settings, stop, hard)).await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %tcp_peer, error = %e, "connection ended with an error");
    }
}

/// The connection's HTTP version from its opening bytes, awaited within
/// `limit` (no hyper timer runs before them); `None` when the client
/// closed or stayed silent, or the gateway began shutting down first (no
/// request is in flight yet, so there is nothing to drain).
async fn opening<S: tokio::io::AsyncRead + Unpin>(
    mut s: Prefixed<S>,
    limit: Duration,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Option<(Version, Prefixed<S>)> {
    let sniffed = tokio::select! {
        r = tokio::time::timeout(limit, sniff(&mut s)) => r,
        _ = stop.wait_for(|s| *s) => return None,
    };
    match sniffed {
        Ok(Ok(v)) => Some((v, s)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection closed before a request");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no request began within limits.header_timeout");
            None
        }
    }
}

/// `308` to the same host and path on the HTTPS listener; `421` for a host
/// outside `server.hosts` (a redirect would send the browser on under a
/// name that is not ours).
fn redirect<B>(
    req: &http::Request<B>,
    https_port: u16,
    hosts: &crate::policy::Hosts,
) -> Response<crate::error::Body> {
    if let Err(e) = hosts.check(req.uri().authority(), req.headers(), false) {
        tracing::info!(reason = %e, "redirect refused");
        let mut r = Response::new(full(
            "misdirected request: this gateway does not serve that host name\n",
        ));
        *r.status_mut() = StatusCode::MISDIRECTED_REQUEST;
        return r;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let Some(host) = host else {
        let mut r = Response::new(full("a Host header is required\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{}{port}{pq}", host.host());
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

type Stream = Prefixed<stall::SendDeadline<TcpStream>>;

enum Io {
    Plain(Stream),
    Tls(Box<tokio_rustls::server::TlsStream<Stream>>),
}

/// PROXY header (when configured), then TLS (when configured), then the
/// connection's facts.
async fn accept(
    stream: TcpStream,
    tcp_peer: SocketAddr,
    gateway: &Gateway,
    index: usize,
) -> Result<(Io, Conn), String> {
    // A listener handed to `run` beyond the configured ones (tests) takes
    // the first listener's settings.
    let listener = gateway
        .config
        .listeners
        .get(index)
        .or_else(|| gateway.config.listeners.first())
        .ok_or("no listener is configured")?;
    let acceptor = gateway
        .tls
        .get(index)
        .or_else(|| gateway.tls.first())
        .cloned()
        .flatten()
        .map(TlsAcceptor::from);
    let stream = stall::SendDeadline::new(stream, gateway.config.limits.send_timeout);
    let pp = &listener.proxy_protocol;
    let (peer, stream) = if pp.from.is_empty() {
        (tcp_peer, Prefixed::new(Vec::new(), stream))
    } else {
        let trusted = pp.from.contains(tcp_peer.ip());
        let (header, stream) = read_header(stream).await.map_err(|e| e.to_string())?;
        match header {
            ProxyHeader::Proxied(_) | ProxyHeader::Local if !trusted => {
                return Err("PROXY header from a peer not in server.proxy_protocol_from".into())
            }
            ProxyHeader::Proxied(addr) => (addr, stream),
            ProxyHeader::Local => (tcp_peer, stream),
            ProxyHeader::Absent if trusted && !pp.optional => {
                return Err("no PROXY header from a peer in server.proxy_protocol_from".into())
            }
            ProxyHeader::Absent => (tcp_peer, stream),
        }
    };
    match acceptor {
        None => Ok((
            Io::Plain(stream),
            Conn {
                peer,
                tcp_peer,
                tls: false,
                client_cert: None,
                listener: index,
            },
        )),
        Some(acceptor) => {
            let tls = acceptor
                .accept(stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let client_cert = client_certificate(tls.get_ref().1, gateway, index)?;
            Ok((
                Io::Tls(Box::new(tls)),
                Conn {
                    peer,
                    tcp_peer,
                    tls: true,
                    client_cert,
                    listener: index,
                },
            ))
        }
    }
}

/// The client certificate of a connection just accepted, judged under the
/// snapshot whose TLS config accepted it.
///
/// A full handshake verified the chain a moment ago. A resumed one did
/// not: rustls hands back the chain of the session it resumes (TLS 1.2
/// session ID or TLS 1.3 ticket) as it was, and that session may predate
/// the certificate's expiry or a CRL's. Such a chain is verified now, and
/// a connection that a full handshake would refuse is refused (the client
/// can connect again and present its certificate anew).
fn client_certificate(
    tls: &rustls::ServerConnection,
    gateway: &Gateway,
    index: usize,
) -> Result<Option<ClientCert>, String> {
    let Some(cert) = tls.peer_certificates().and_then(ClientCert::new) else {
        return Ok(None);
    };
    let Some(auth) = gateway.client_auth_of(index) else {
        return Ok(None);
    };
    let now = std::time::SystemTime::now();
    if tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        if cert
            .identity_under(gateway.generation, Some(auth), now)
            .is_none()
        {
            return Err("TLS session resumed with a client certificate the listener no longer accepts (expired, revoked, or its CRL expired)".into());
        }
        return Ok(Some(cert));
    }
    Ok(Some(cert.accepted(gateway.generation, auth, now)))
}
