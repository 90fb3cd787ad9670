//! Listeners: accept loop, TLS handshake, HTTP/1.1 and HTTP/2 serving, and
//! graceful shutdown.
//!
//! [`run`] takes listeners the caller has bound (so tests own their sockets
//! and can use port 0) and a shutdown future. Each accepted connection gets
//! its [`Conn`] facts once, then every request on it goes to
//! `proxy::handle`. This module knows nothing of policy.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::identity::client_cert;
use crate::proxy::{self, Conn, Gateway};

pub mod proxy_protocol;
use proxy_protocol::{read_header, Prefixed, ProxyHeader};

/// How long a client may take to send its PROXY header and finish the TLS
/// handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may run after shutdown begins.
const GRACE: Duration = Duration::from_secs(30);

/// Binds one configured address. IPv6 wildcard listeners keep the OS's
/// dual-stack default, so `[::]:8443` also takes IPv4 clients (seen as
/// IPv4-mapped addresses, which the policy canonicalizes).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish (up to a grace period).
pub async fn run(
    listeners: Vec<TcpListener>,
    gateway: Arc<Gateway>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    for listener in listeners {
        let gw = gateway.clone();
        let acceptor = acceptor.clone();
        let graceful = graceful.clone();
        let mut stop = stop_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.recv() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            serve(stream, peer, gw.clone(), acceptor.clone(), &graceful);
                        }
                        Err(e) => {
                            // Out of descriptors or similar: back off briefly
                            // instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    let _ = stop_tx.send(());
    for t in tasks {
        let _ = t.await;
    }
    match Arc::try_unwrap(graceful) {
        Ok(g) => {
            if tokio::time::timeout(GRACE, g.shutdown()).await.is_err() {
                tracing::warn!("grace period over; closing remaining connections");
            }
        }
        Err(_) => tracing::warn!("connections still registered; closing"),
    }
}

fn serve(
    stream: TcpStream,
    tcp_peer: SocketAddr,
    gateway: Arc<Gateway>,
    acceptor: Option<TlsAcceptor>,
    graceful: &GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let watcher = graceful.watcher();
    // Everything before HTTP (PROXY header, TLS handshake) runs inside the
    // task under one deadline, so a slow client never holds up the accept
    // loop.
    tokio::spawn(async move {
        let start = accept(stream, tcp_peer, &gateway, acceptor);
        let accepted = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start).await {
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
        let (io, conn) = accepted;
        let conn = Arc::new(conn);
        let peer = conn.peer;
        let service = service_fn(move |req| {
            let gw = gateway.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(proxy::handle(gw, conn, req).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let result = match io {
            Io::Plain(s) => {
                let c = builder.serve_connection_with_upgrades(TokioIo::new(s), service);
                watcher.watch(c.into_owned()).await
            }
            Io::Tls(s) => {
                let c = builder.serve_connection_with_upgrades(TokioIo::new(*s), service);
                watcher.watch(c.into_owned()).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}

type Stream = Prefixed<TcpStream>;

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
    acceptor: Option<TlsAcceptor>,
) -> Result<(Io, Conn), String> {
    let pp = &gateway.config.proxy_protocol;
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
            },
        )),
        Some(acceptor) => {
            let tls = acceptor
                .accept(stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| client_cert::identity(leaf.as_ref()));
            Ok((
                Io::Tls(Box::new(tls)),
                Conn {
                    peer,
                    tcp_peer,
                    tls: true,
                    client_cert,
                },
            ))
        }
    }
}
