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

use crate::proxy::{self, Conn, Gateway};

/// How long a client may take to finish the TLS handshake.
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
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    acceptor: Option<TlsAcceptor>,
    graceful: &GracefulShutdown,
) {
    let _ = stream.set_nodelay(true);
    let conn = Arc::new(Conn {
        peer,
        tls: acceptor.is_some(),
    });
    let service = service_fn(move |req| {
        let gw = gateway.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(proxy::handle(gw, conn, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    match acceptor {
        None => {
            let fut = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let fut = graceful.watch(fut);
            tokio::spawn(async move {
                if let Err(e) = fut.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        Some(acceptor) => {
            // The handshake runs inside the task so a slow client never
            // holds up the accept loop.
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let fut = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .into_owned();
                if let Err(e) = watcher.watch(fut).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }
}
