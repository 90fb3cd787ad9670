//! `sharegate demo`: a newcomer's first run.
//!
//! Starts, on loopback, a stand-in upstream that answers a few
//! LangSmith-shaped routes (a shared run as JSON, a share page as HTML, an
//! SSE stream, a write route that would succeed if it were reached), and the
//! real gateway in front of it with a demo policy in which 127.0.0.1 is the
//! office network and every other address is outside, and share URLs the
//! stand-in mints on its public origin are rewritten to the gateway's. Then it prints a tour
//! of curl commands. The stand-in is not a test double for the gateway's own
//! tests; those record what the upstream received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::{full, Body, BoxError};
use crate::proxy::Gateway;
use crate::state::State;
use crate::telemetry::metrics::Metrics;

/// A share token as LangSmith mints them (a UUID).
pub const DEMO_TOKEN: &str = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d90";

/// The demo policy; `{upstream}` is the stand-in's address, `{listen}` the
/// gateway's and `{host}` its IP as a `Host` names it.
pub const DEMO_CONFIG: &str = r#"
[server]
listen = ["{listen}"]
hosts = ["{host}", "localhost"]

[upstream]
url = "http://{upstream}"
connect_timeout = "2s"
response_timeout = "30s"

[networks]
office = ["127.0.0.1/32", "::1/128"]

[share]
profile = "langsmith"
allow_from = ["office"]
manage_from = ["office"]
allow_generate_query = false

[default]
allow_from = "any"

[admin]
listen = "off"

[rewrite]
from = ["https://smith.example.com"]
to = "http://{listen}"
"#;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on {addr}: {source} (pick another with --listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the demo config is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Start(#[from] crate::proxy::BuildError),
}

pub async fn run(listen: SocketAddr) -> Result<(), DemoError> {
    let up = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| DemoError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
    let up_addr = up.local_addr().map_err(|source| DemoError::Bind {
        addr: listen,
        source,
    })?;
    tokio::spawn(serve_upstream(up));

    let gw_listener = TcpListener::bind(listen)
        .await
        .map_err(|source| DemoError::Bind {
            addr: listen,
            source,
        })?;
    // With `--listen 127.0.0.1:0` the OS picks the port; the tour and the
    // rewrite target name the address actually bound.
    let listen = gw_listener.local_addr().map_err(|source| DemoError::Bind {
        addr: listen,
        source,
    })?;
    let host = match listen.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let text = DEMO_CONFIG
        .replace("{upstream}", &up_addr.to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{host}", &host);
    let cfg = Config::from_toml(&text, std::path::Path::new("."))?;
    crate::telemetry::init(&cfg.log);
    let table = crate::cli::policy_table(&cfg);
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::build(cfg, metrics.clone()).await?;
    let state = Arc::new(State::new(gateway, metrics, None));
    crate::cli::emit(&format!("{}\n", tour(listen, up_addr, &table)));
    crate::server::run(vec![gw_listener], state, crate::cli::shutdown_signal()).await;
    crate::telemetry::output::flush();
    Ok(())
}

fn tour(gw: SocketAddr, up: SocketAddr, table: &str) -> String {
    let t = DEMO_TOKEN;
    format!(
        r#"sharegate demo
  gateway   http://{gw}   (this process; access log below)
  upstream  http://{up}   (a stand-in LangSmith)
  policy    127.0.0.1 is the office network; any other address, such as 127.0.0.2, is outside.

Try these in another terminal:

  # 1. Inside: a shared run, as JSON. Allowed. The upstream minted its
  #    share_url on its public origin (https://smith.example.com); the
  #    gateway rewrote it to the private one.
  curl -s http://{gw}/api/v1/public/{t}/run

  # 2. Inside: a POST that is a read (runs/query). Allowed.
  curl -s -X POST -H 'Content-Type: application/json' -d '{{"limit": 2}}' http://{gw}/api/v1/public/{t}/runs/query

  # 3. Inside: a stream. Events arrive one by one, as the upstream sends them.
  curl -sN -X POST -H 'Accept: text/event-stream' http://{gw}/api/v2/public/{t}/runs/query

  # 4. Inside: a write on a share route. Refused (405) before it reaches the upstream.
  curl -si -X DELETE http://{gw}/api/v1/public/{t}/run

  # 5. Inside: smuggling the write as a read. Refused (400).
  curl -si -X POST -H 'X-HTTP-Method-Override: DELETE' http://{gw}/api/v1/public/{t}/runs/query

  # 6. Inside: a path trick. Refused (400).
  curl -si --path-as-is 'http://{gw}/api/v1/public/{t}/..%2f..%2fruns/1/share'

  # 7. Outside (from 127.0.0.2): the same read. Refused (403).
  curl -si --interface 127.0.0.2 http://{gw}/api/v1/public/{t}/run

  # 8. Outside, as a browser: the share page explains why.
  curl -s --interface 127.0.0.2 -H 'Accept: text/html' http://{gw}/public/{t}/r

  # 9. Outside: creating a share. Refused (403).
  curl -si --interface 127.0.0.2 -X PUT http://{gw}/api/v1/runs/1/share

  # 10. Inside, but under another host name: what a browser inside the
  #     network sends when an outside page re-points its name at the gateway
  #     (DNS rebinding). Refused (421): the gateway answers only to its names.
  curl -si -H 'Host: attacker.example' http://{gw}/api/v1/public/{t}/run

The policy in force (what `sharegate check --config FILE` prints):

{table}
Ctrl-C stops the demo.
"#
    )
}

async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(upstream))
                .await;
        });
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The stand-in LangSmith.
async fn upstream(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let sse = req
        .headers()
        .get(http::header::ACCEPT)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let segs: Vec<&str> = path.split('/').collect();
    let resp = match (method.clone(), segs.as_slice()) {
        (Method::GET, ["", "public", token, "r"]) => {
            let mut r = Response::new(full(format!(
                "<!doctype html><html><head><title>Shared run</title></head><body><h1>Shared run</h1><p>Token {token}: a chain that answered a customer question.</p></body></html>\n"
            )));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        (Method::POST, ["", "api", "v2", "public", _, "runs", "query"]) if sse => sse_stream(),
        (Method::POST, ["", "api", _, "public", _, "runs", "query"]) => json(
            StatusCode::OK,
            serde_json::json!({"runs": [{"id": "run-1", "name": "answer"}, {"id": "run-2", "name": "retrieve"}]}),
        ),
        (Method::GET, ["", "api", "v1", "public", token, "run"]) => json(
            StatusCode::OK,
            serde_json::json!({"id": "run-1", "name": "answer", "share_token": token, "share_url": format!("https://smith.example.com/public/{token}/r"), "inputs": {"question": "Where is my order?"}, "outputs": {"answer": "It ships today."}}),
        ),
        (m, _) if m != Method::GET && m != Method::HEAD => json(
            StatusCode::OK,
            serde_json::json!({"detail": format!("the upstream accepted a {m}: this is the write sharegate must stop")}),
        ),
        _ => json(
            StatusCode::OK,
            serde_json::json!({"detail": "stand-in LangSmith", "path": path}),
        ),
    };
    Ok(resp)
}

/// Three events, half a second apart, so the tour shows them arriving one
/// by one.
fn sse_stream() -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    tokio::spawn(async move {
        for i in 1..=3 {
            let ev = format!("event: run\ndata: {{\"id\": \"run-{i}\"}}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(
                b"event: end\ndata: {}\n\n",
            ))))
            .await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r
}
