//! The admin listener: `/healthz`, `/readyz` and `/metrics`, on its own
//! address (loopback by default) so that probes and scrapes never share a
//! port, or a policy, with share traffic.
//!
//! `/healthz` says the process is serving. `/readyz` says the config is
//! loaded, the JWT keys (when configured) are loaded, and the upstream
//! answers an HTTP request sent through the pooled client that forwards
//! traffic (`Gateway::upstream_answers`). `/metrics` is Prometheus text.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::error::{full, Body};
use crate::state::State;

pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        // RFC 9110 §15.5.6: a 405 names the methods the resource takes.
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let resp = match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(&state).await,
        "/metrics" => {
            let mut r = text(StatusCode::OK, state.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz or /metrics\n",
        ),
    };
    Ok(resp)
}

async fn readyz(state: &State) -> Response<Body> {
    let gw = state.gateway();
    if !gw.identity_ready() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: JWT keys not loaded\n",
        );
    }
    let url = &gw.config.upstream.url;
    match gw.upstream_answers().await {
        Ok(status) => text(
            StatusCode::OK,
            format!(
                "ready: config {} loaded; upstream answered HEAD / with {}\n",
                gw.config_hash,
                status.as_u16()
            ),
        ),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: upstream {url} did not answer: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
