//! A stand-in LangSmith for the end-to-end tests: the share routes the
//! official Python SDK calls (`share_run`, `read_run_shared_link`,
//! `read_shared_run`, `list_shared_runs`, `share_dataset`,
//! `read_shared_dataset`, `unshare_run`, `unshare_dataset`), with real state
//! (what is shared under which token), and the share page as HTML.
//!
//! The shapes follow the SDK's `client.py`: `PUT /api/v1/runs/{id}/share`
//! takes `{"run_id", "share_token"}` and answers `{"run_id", "share_token"}`;
//! `GET` on it answers that or `null`; `GET /api/v1/public/{t}/run` answers a
//! run; `POST /api/v1/public/{t}/runs/query` answers `{"runs": [...],
//! "cursors": {...}}`; `PUT /api/v1/datasets/{id}/share` mints the token;
//! `GET /api/v1/public/{t}/datasets` answers a dataset. Unknown tokens and
//! ids are 404 `{"detail": ...}`, as LangSmith answers them.
//!
//! It records every request before answering, so a test asserts on what
//! reached the upstream (a refused request must not reach it at all). It
//! does not test the gateway by itself; `tests/common` has the generic
//! recording upstream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The run and dataset the stand-in holds (ids are UUIDs, as LangSmith's).
pub const RUN_ID: &str = "5c0f7f4e-2b1a-4d3c-9e8f-7a6b5c4d3e2f";
pub const CHILD_RUN_ID: &str = "6d1a8b5f-3c2b-4e4d-8f9a-8b7c6d5e4f3a";
pub const DATASET_ID: &str = "7e2b9c60-4d3c-4f5e-9a0b-9c8d7e6f5a4b";
/// Where the stand-in says its app lives: LangSmith mints absolute links on
/// its configured (public) origin; the gateway rewrites them.
pub const PUBLIC_ORIGIN: &str = "https://smith.example.com";
/// Text of the share page, for checking that a browser rendered it.
pub const PAGE_HEADING: &str = "Shared run: customer question";

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query, exactly as they arrived.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Inner {
    seen: Mutex<Vec<Seen>>,
    /// run id -> share token, dataset id -> share token.
    run_shares: Mutex<HashMap<String, String>>,
    dataset_shares: Mutex<HashMap<String, String>>,
}

pub struct StandIn {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

impl StandIn {
    /// Serves HTTP/1.1 on `127.0.0.1:0`.
    pub async fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in LangSmith");
        let addr = listener.local_addr().expect("stand-in address");
        let inner = Arc::new(Inner::default());
        tokio::spawn(serve(listener, inner.clone()));
        StandIn { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shares the run under `token`, as if its owner had done it earlier.
    pub fn seed_run_share(&self, token: &str) {
        self.inner
            .run_shares
            .lock()
            .unwrap()
            .insert(RUN_ID.to_owned(), token.to_owned());
    }

    /// Shares the dataset under `token`, as if its owner had done it earlier.
    pub fn seed_dataset_share(&self, token: &str) {
        self.inner
            .dataset_shares
            .lock()
            .unwrap()
            .insert(DATASET_ID.to_owned(), token.to_owned());
    }

    pub fn run_share(&self) -> Option<String> {
        self.inner.run_shares.lock().unwrap().get(RUN_ID).cloned()
    }

    pub fn dataset_share(&self) -> Option<String> {
        self.inner
            .dataset_shares
            .lock()
            .unwrap()
            .get(DATASET_ID)
            .cloned()
    }

    /// Every request received since the last `take`, clearing the record.
    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.inner.seen.lock().unwrap())
    }
}

/// `METHOD target` of each request, for assertions and failure messages.
pub fn lines(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect()
}

async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(inner.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned());
    let seen = Seen {
        method: parts.method.clone(),
        target,
        headers: parts.headers,
        body,
    };
    inner.seen.lock().unwrap().push(seen.clone());
    Ok(route(&inner, &seen))
}

fn route(inner: &Inner, req: &Seen) -> Response<Body> {
    let path = req.target.split('?').next().unwrap_or_default().to_owned();
    let segs: Vec<&str> = path.split('/').collect();
    let m = &req.method;
    match segs.as_slice() {
        ["", "api", "v1", "runs", id, "share"] => {
            let mut shares = inner.run_shares.lock().unwrap();
            if *id != RUN_ID {
                return not_found("Run not found");
            }
            match *m {
                Method::PUT => {
                    let body = req.json();
                    let token = body
                        .get("share_token")
                        .and_then(|t| t.as_str())
                        .map_or_else(new_token, str::to_owned);
                    let token = shares.entry(RUN_ID.to_owned()).or_insert(token).clone();
                    json(
                        StatusCode::OK,
                        serde_json::json!({"run_id": RUN_ID, "share_token": token}),
                    )
                }
                Method::GET => match shares.get(RUN_ID) {
                    Some(t) => json(
                        StatusCode::OK,
                        serde_json::json!({"run_id": RUN_ID, "share_token": t}),
                    ),
                    None => json(StatusCode::OK, serde_json::Value::Null),
                },
                Method::DELETE => {
                    shares.remove(RUN_ID);
                    json(StatusCode::OK, serde_json::json!({}))
                }
                _ => method_not_allowed(),
            }
        }
        ["", "api", "v1", "datasets", id, "share"] => {
            let mut shares = inner.dataset_shares.lock().unwrap();
            if *id != DATASET_ID {
                return not_found("Dataset not found");
            }
            match *m {
                Method::PUT => {
                    let token = shares
                        .entry(DATASET_ID.to_owned())
                        .or_insert_with(new_token)
                        .clone();
                    json(
                        StatusCode::OK,
                        serde_json::json!({"dataset_id": DATASET_ID, "share_token": token}),
                    )
                }
                Method::GET => match shares.get(DATASET_ID) {
                    Some(t) => json(
                        StatusCode::OK,
                        serde_json::json!({"dataset_id": DATASET_ID, "share_token": t}),
                    ),
                    None => json(StatusCode::OK, serde_json::Value::Null),
                },
                Method::DELETE => {
                    shares.remove(DATASET_ID);
                    json(StatusCode::OK, serde_json::json!({}))
                }
                _ => method_not_allowed(),
            }
        }
        ["", "api", "v1", "public", token, "run"] if *m == Method::GET => {
            if shared_run(inner, token) {
                json(StatusCode::OK, run(RUN_ID, token))
            } else {
                not_found("Shared run not found")
            }
        }
        ["", "api", "v1", "public", token, "runs", "query"] if *m == Method::POST => {
            if !shared_run(inner, token) {
                return not_found("Shared run not found");
            }
            let wanted: Option<Vec<String>> = req.json().get("id").and_then(|ids| {
                ids.as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
            });
            let runs: Vec<serde_json::Value> = [RUN_ID, CHILD_RUN_ID]
                .iter()
                .filter(|id| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == *id)))
                .map(|id| run(id, token))
                .collect();
            json(
                StatusCode::OK,
                serde_json::json!({"runs": runs, "cursors": {"next": null}}),
            )
        }
        ["", "api", "v1", "public", token, "datasets"] if *m == Method::GET => {
            let shared = inner
                .dataset_shares
                .lock()
                .unwrap()
                .values()
                .any(|t| t == token);
            if shared {
                json(
                    StatusCode::OK,
                    serde_json::json!({
                        "id": DATASET_ID,
                        "name": "support-questions",
                        "description": format!("Shared at {PUBLIC_ORIGIN}/public/{token}/d"),
                        "data_type": "kv",
                        "created_at": "2025-01-02T03:04:05.000000+00:00",
                        "example_count": 2,
                    }),
                )
            } else {
                not_found("Shared dataset not found")
            }
        }
        ["", "public", token, "r"] if *m == Method::GET => {
            if shared_run(inner, token) {
                html(
                    StatusCode::OK,
                    format!(
                        "<!doctype html><html><head><meta charset=\"utf-8\"><title>LangSmith</title></head>\
<body><h1>{PAGE_HEADING}</h1><p id=\"answer\">The order ships today.</p>\
<p><a id=\"self\" href=\"{PUBLIC_ORIGIN}/public/{token}/r\">Permalink</a></p></body></html>\n"
                    ),
                )
            } else {
                html(
                    StatusCode::NOT_FOUND,
                    "<!doctype html><html><body><h1>Not found</h1></body></html>\n".to_owned(),
                )
            }
        }
        _ => not_found("stand-in LangSmith: no such route"),
    }
}

fn shared_run(inner: &Inner, token: &str) -> bool {
    inner
        .run_shares
        .lock()
        .unwrap()
        .get(RUN_ID)
        .is_some_and(|t| t == token)
}

fn run(id: &str, token: &str) -> serde_json::Value {
    let child = id == CHILD_RUN_ID;
    serde_json::json!({
        "id": id,
        "trace_id": RUN_ID,
        "parent_run_id": if child { serde_json::Value::from(RUN_ID) } else { serde_json::Value::Null },
        "name": if child { "retrieve" } else { "answer" },
        "run_type": if child { "retriever" } else { "chain" },
        "start_time": "2025-01-02T03:04:05.000000",
        "end_time": "2025-01-02T03:04:06.000000",
        "inputs": {"question": "Where is my order?"},
        "outputs": {
            "answer": "It ships today.",
            "link": format!("{PUBLIC_ORIGIN}/public/{token}/r"),
        },
        "extra": {},
    })
}

/// A fresh share token, shaped like a UUID v4.
fn new_token() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6] & 0x0f, b[7],
        8 | (b[8] & 0x03), b[8] >> 4, b[9],
        b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut r = Response::new(full(page));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn not_found(detail: &str) -> Response<Body> {
    json(StatusCode::NOT_FOUND, serde_json::json!({"detail": detail}))
}

fn method_not_allowed() -> Response<Body> {
    json(
        StatusCode::METHOD_NOT_ALLOWED,
        serde_json::json!({"detail": "Method Not Allowed"}),
    )
}
