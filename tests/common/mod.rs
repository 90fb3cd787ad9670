//! Fixtures for the integration tests: a recording fake upstream, the real
//! gateway started on an ephemeral port, and clients bound to a chosen
//! loopback source address.
//!
//! Addresses: `127.0.0.2` is a host inside the company network, `127.0.0.3`
//! one outside it, `127.0.0.4` a trusted load balancer (`127.0.0.5` is a
//! second trusted hop that only ever appears inside `X-Forwarded-For`).
//! Linux routes all of `127.0.0.0/8` to the loopback interface, so a client
//! socket can bind any of them.
//!
//! Nothing here sleeps or uses a fixed port; every wait is bounded by
//! [`WAIT`] so a broken gateway fails a test instead of hanging it.
//!
//! Each test binary uses a different subset of these fixtures.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use sharegate::config::Config;
use sharegate::proxy::Gateway;
use sharegate::state::State;
use sharegate::telemetry::metrics::Metrics;

/// The bound on every wait in these tests. Generous: a loaded two-core CI
/// machine must never trip it, a hung gateway always does.
pub const WAIT: Duration = Duration::from_secs(20);

pub const INSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
pub const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
pub const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));

/// Share tokens and entity ids are UUIDs, as LangSmith mints them.
pub const TOKEN: &str = "6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d";
pub const TOKEN_B: &str = "0b7e4a1c-9d2f-4e3a-8b5c-6d7e8f9a0b1c";
pub const ID: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";

/// Replaces `{t}`, `{t2}` and `{id}` in a route written the way the
/// LangSmith docs write it.
pub fn fill(template: &str) -> String {
    template
        .replace("{t2}", TOKEN_B)
        .replace("{t}", TOKEN)
        .replace("{id}", ID)
}

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------
// Fake upstream

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query, exactly as they arrived.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Fields of a chunked body's trailer section, if any arrived.
    pub trailers: Option<HeaderMap>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// What the fake upstream does for one path.
#[derive(Clone)]
pub enum Behaviour {
    /// `200` with a JSON description of the request (the default).
    Echo,
    /// `200 text/event-stream`; each `Bytes` sent on the paired sender
    /// becomes one body chunk, and dropping the sender ends the stream.
    /// Answers once.
    Sse(Arc<Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>>),
    /// Records the request and never answers.
    Hang,
    /// A fixed answer.
    Respond {
        status: StatusCode,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
    },
    /// `101 Switching Protocols`, then echoes every byte it reads.
    UpgradeEcho,
    /// Whatever the test's handler answers (it sees the recorded request).
    Custom(Handler),
}

/// A response body the fake upstream can send.
pub type UpstreamBody = UnsyncBoxBody<Bytes, Infallible>;

/// A test-written upstream answer for [`Behaviour::Custom`].
pub type Handler = Arc<
    dyn Fn(Recorded) -> std::pin::Pin<Box<dyn Future<Output = Response<UpstreamBody>> + Send>>
        + Send
        + Sync,
>;

/// Wraps an async closure as a [`Behaviour::Custom`].
pub fn custom<F, Fut>(f: F) -> Behaviour
where
    F: Fn(Recorded) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<UpstreamBody>> + Send + 'static,
{
    Behaviour::Custom(Arc::new(move |r| Box::pin(f(r))))
}

/// A whole upstream body.
pub fn upstream_full(body: impl Into<Bytes>) -> UpstreamBody {
    full(body)
}

/// An upstream body sent as one chunk per stream item.
pub fn upstream_stream<S>(chunks: S) -> UpstreamBody
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    use futures_util::StreamExt;
    StreamBody::new(chunks.map(|c| Ok::<_, Infallible>(Frame::data(c)))).boxed_unsync()
}

/// A response with `status`, `headers` (appended in order) and `body`.
pub fn upstream_response(
    status: StatusCode,
    headers: &[(&str, &str)],
    body: UpstreamBody,
) -> Response<UpstreamBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    r
}

type UpBody = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Default)]
struct UpstreamState {
    recorded: Mutex<Vec<Recorded>>,
    behaviours: Mutex<HashMap<String, Behaviour>>,
}

/// An HTTP/1.1 server on `127.0.0.1:0` that records every request it
/// receives before answering it.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake upstream");
        let addr = listener.local_addr().expect("fake upstream address");
        let state = Arc::new(UpstreamState::default());
        tokio::spawn(serve_upstream(listener, state.clone()));
        FakeUpstream { addr, state }
    }

    /// The value for `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets what the upstream does for requests whose path (without query)
    /// is `path`.
    pub fn on(&self, path: &str, behaviour: Behaviour) {
        self.state
            .behaviours
            .lock()
            .unwrap()
            .insert(path.to_owned(), behaviour);
    }

    /// Makes `path` an event stream whose chunks the test releases.
    pub fn sse(&self, path: &str) -> mpsc::UnboundedSender<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.on(path, Behaviour::Sse(Arc::new(Mutex::new(Some(rx)))));
        tx
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// Every request received so far, clearing the record.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.state.recorded.lock().unwrap())
    }

    /// Fails unless nothing reached the upstream since the last `take`.
    pub fn assert_silent(&self, what: &str) {
        let got = self.take();
        assert!(
            got.is_empty(),
            "{what}: the upstream must not be reached, but it received {:?}",
            got.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>()
        );
    }

    /// The one request received since the last `take`.
    pub fn only(&self, what: &str) -> Recorded {
        let mut got = self.take();
        assert_eq!(
            got.len(),
            1,
            "{what}: expected exactly one upstream request, got {:?}",
            got.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>()
        );
        got.remove(0)
    }
}

async fn serve_upstream(listener: TcpListener, state: Arc<UpstreamState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| upstream_answer(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn upstream_answer(
    state: Arc<UpstreamState>,
    mut req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let behaviour = state
        .behaviours
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Behaviour::Echo);
    let on_upgrade =
        matches!(behaviour, Behaviour::UpgradeEcho).then(|| hyper::upgrade::on(&mut req));

    let (parts, body) = req.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers)
        }
        Err(_) => (Bytes::new(), None),
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned());
    let record = Recorded {
        method: parts.method,
        target,
        headers: parts.headers,
        body,
        trailers,
    };
    state.recorded.lock().unwrap().push(record.clone());

    let resp = match behaviour {
        Behaviour::Custom(handler) => handler(record.clone()).await,
        Behaviour::Echo => {
            let mut headers = serde_json::Map::new();
            for (k, v) in &record.headers {
                headers.insert(
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                );
            }
            let echo = serde_json::json!({
                "method": record.method.as_str(),
                "target": record.target,
                "headers": headers,
                "body": String::from_utf8_lossy(&record.body),
            });
            let mut r = Response::new(full(echo.to_string()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Behaviour::Sse(slot) => match slot.lock().unwrap().take() {
            Some(rx) => {
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
                });
                let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                r.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache"),
                );
                r
            }
            None => {
                let mut r = Response::new(full("event stream already used"));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        },
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Respond {
            status,
            headers,
            body,
        } => {
            let mut r = Response::new(full(body));
            *r.status_mut() = status;
            for (k, v) in headers {
                r.headers_mut()
                    .append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            r
        }
        Behaviour::UpgradeEcho => {
            if let Some(on_upgrade) = on_upgrade {
                tokio::spawn(async move {
                    let Ok(upgraded) = on_upgrade.await else {
                        return;
                    };
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            r.headers_mut()
                .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
            r
        }
    };
    Ok(resp)
}

fn full(body: impl Into<Bytes>) -> UpBody {
    Full::new(body.into()).boxed_unsync()
}

// ---------------------------------------------------------------------------
// Gateway

/// Parses a test config; relative paths are taken from the current folder.
pub fn config(toml: &str) -> Config {
    Config::from_toml(toml, Path::new("."))
        .unwrap_or_else(|e| panic!("the test config is invalid: {e}"))
}

/// The test policy: `inside` networks admit share reads and management,
/// every other route is open to anyone.
pub struct Setup {
    pub upstream: String,
    pub inside: Vec<&'static str>,
    pub response_timeout: &'static str,
    pub allow_generate_query: bool,
    /// Extra lines for the `[server]` table (e.g. `tls_cert = ...`).
    pub server_extra: String,
    /// Extra lines for the `[share]` table (e.g. `require = "identity"`).
    pub share_extra: String,
    /// Extra lines for the `[default]` table (e.g. `require = "identity"`).
    pub default_extra: String,
    /// Extra lines for the `[client_ip]` table (e.g. `header = "forwarded"`).
    pub client_ip_extra: String,
    /// Whole tables appended at the end (e.g. `[identity.jwt]`, `[limits]`).
    pub extra: String,
}

impl Setup {
    pub fn new(upstream: &FakeUpstream) -> Setup {
        Setup::with_url(upstream.url())
    }

    pub fn with_url(url: String) -> Setup {
        Setup {
            upstream: url,
            inside: vec!["127.0.0.2/32"],
            response_timeout: "20s",
            allow_generate_query: false,
            server_extra: String::new(),
            share_extra: String::new(),
            default_extra: String::new(),
            client_ip_extra: String::new(),
            extra: String::new(),
        }
    }

    pub fn toml(&self) -> String {
        let inside: Vec<String> = self.inside.iter().map(|n| format!("{n:?}")).collect();
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
{server_extra}

[upstream]
url = "{url}"
connect_timeout = "5s"
response_timeout = "{response_timeout}"

[networks]
inside = [{inside}]

[client_ip]
trusted_proxies = ["127.0.0.4/32", "127.0.0.5/32"]
{client_ip_extra}

[share]
profile = "langsmith"
allow_from = ["inside"]
manage_from = ["inside"]
allow_generate_query = {generate}
{share_extra}

[default]
allow_from = "any"
{default_extra}

{extra}
"#,
            url = self.upstream,
            response_timeout = self.response_timeout,
            inside = inside.join(", "),
            generate = self.allow_generate_query,
            server_extra = self.server_extra,
            share_extra = self.share_extra,
            default_extra = self.default_extra,
            client_ip_extra = self.client_ip_extra,
            extra = self.extra,
        )
    }

    pub async fn start(&self) -> TestGateway {
        TestGateway::start(&self.toml()).await
    }
}

/// The real gateway (`server::run`) serving on a listener the test bound.
/// Dropping it begins shutdown.
pub struct TestGateway {
    /// Where a client connects (loopback even for a wildcard listener).
    pub addr: SocketAddr,
    /// Its state, for metrics.
    pub state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Plain HTTP on `127.0.0.1:0`.
    pub async fn start(toml: &str) -> TestGateway {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        TestGateway::start_on(listener, toml).await
    }

    /// Serves `toml`'s policy (and its TLS files, if it names them) on a
    /// listener the test bound.
    pub async fn start_on(listener: TcpListener, toml: &str) -> TestGateway {
        let cfg = config(toml);
        let metrics = Arc::new(Metrics::new());
        let gateway = within("the gateway to build", Gateway::build(cfg, metrics.clone()))
            .await
            .unwrap_or_else(|e| panic!("build the gateway: {e}"));
        let state = Arc::new(State::new(gateway, metrics, None));
        let local = listener.local_addr().expect("gateway address");
        let ip = match local.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            // A dual-stack wildcard listener: reach it over IPv4 so that the
            // peer is seen as an IPv4-mapped IPv6 address.
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sharegate::server::run(
            vec![listener],
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestGateway {
            addr: SocketAddr::new(ip, local.port()),
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting; in-flight requests continue.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until `server::run` has returned.
    pub async fn stopped(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            within("the gateway to finish shutting down", task)
                .await
                .expect("server::run panicked");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

// ---------------------------------------------------------------------------
// Clients

/// A TCP connection to `to` from the source address `from`.
pub async fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .expect("client socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("bind the client to {from}: {e}"));
    within("the TCP connection to the gateway", socket.connect(to))
        .await
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"))
}

/// An HTTP/1.1 client on one fresh connection from `from` (kept alive
/// between requests; upgrades allowed).
pub async fn http1_client(
    from: IpAddr,
    gw: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = connect(from, gw).await;
    let (sender, conn) = within(
        "the HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// Sends one HTTP/1.1 request on a fresh connection from `from` and returns
/// the response with its body still streaming.
pub async fn send(from: IpAddr, gw: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let mut sender = http1_client(from, gw).await;
    within("the gateway's response headers", sender.send_request(req))
        .await
        .expect("send the request")
}

/// A response with its body read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// One line for failure messages (the body cut short).
    pub fn summary(&self) -> String {
        let text = self.text();
        let cut: String = text.chars().take(120).collect();
        let more = if cut.len() < text.len() { "..." } else { "" };
        format!("{} {cut}{more}", self.status)
    }
}

pub async fn read_reply(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = within("the response body", body.collect())
        .await
        .expect("read the response body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Builds a request with a `Host` header naming the gateway (unless one is
/// given). `target` is sent as written.
pub fn build(
    gw: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(target)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_else(|e| panic!("cannot build a request for {target:?}: {e}"));
    let h = req.headers_mut();
    for (k, v) in headers {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    if !h.contains_key(http::header::HOST) {
        h.insert(
            http::header::HOST,
            HeaderValue::from_str(&gw.to_string()).expect("host"),
        );
    }
    req
}

/// A GET of an event stream at `path` (see [`FakeUpstream::sse`]).
pub fn events_get(gw: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    build(gw, "GET", path, &[("accept", "text/event-stream")], "")
}

/// One request from `from` to the gateway, body read to the end.
pub async fn request(
    from: IpAddr,
    gw: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    read_reply(send(from, gw, build(gw, method, target, headers, body)).await).await
}

/// Writes `raw` (a complete HTTP/1.1 request, sent byte for byte) and
/// returns everything the gateway answered until it closed the connection.
/// For request targets a well-behaved client library would not send.
pub async fn raw_request(from: IpAddr, gw: SocketAddr, raw: &str) -> String {
    let mut stream = connect(from, gw).await;
    within("writing the raw request", stream.write_all(raw.as_bytes()))
        .await
        .expect("write the raw request");
    let mut out = Vec::new();
    within(
        "the gateway to answer and close",
        stream.read_to_end(&mut out),
    )
    .await
    .expect("read the raw answer");
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 answer (0 if there is none).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON refusal bodies the gateway sends, by cause.
pub const SHARE_OUTSIDE: &str = "This shared link opens only on the company network.";
pub const MANAGE_OUTSIDE: &str = "Share management is available only on the company network.";
pub const VIEW_ONLY: &str = "Method not allowed: shared links are view-only.";
pub const OVERRIDE: &str = "Bad request: method overrides are not accepted on shared links.";
pub const AMBIGUOUS: &str = "Bad request: the path is ambiguous.";

/// The detail string of a `{"detail": ...}` refusal, or the whole body.
pub fn detail(reply: &Reply) -> String {
    serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| reply.text())
}

/// The IPv6 loopback, for tests that need a native IPv6 client.
pub const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

// ---------------------------------------------------------------------------
// Gateways built from a config file, polling, TLS clients, raw bytes

impl TestGateway {
    /// Serves `listeners` (traffic first; admin and redirect when given)
    /// with a state the test built, e.g. with [`state_from_file`], so that
    /// it can reload it and read its metrics.
    pub fn serve(listeners: sharegate::server::Listeners, state: Arc<State>) -> TestGateway {
        let local = listeners
            .traffic
            .first()
            .expect("a traffic listener")
            .local_addr()
            .expect("gateway address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sharegate::server::run(
            listeners,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestGateway {
            addr: local,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl TestGateway {
    /// Writes `toml` to `sharegate.toml` in `dir` and serves it on
    /// `127.0.0.1:0`, as `sharegate run --config` would: `gw.state.reload()`
    /// reads the file again. Returns the file's path for the test to edit.
    pub async fn from_file(dir: &Path, toml: &str) -> (TestGateway, std::path::PathBuf) {
        let path = dir.join("sharegate.toml");
        std::fs::write(&path, toml).expect("write the config");
        let state = state_from_file(&path).await;
        let traffic = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        let listeners = sharegate::server::Listeners {
            traffic: vec![traffic],
            redirect: Vec::new(),
            admin: None,
        };
        (TestGateway::serve(listeners, state), path)
    }
}

/// The gateway state `sharegate run --config path` builds: loaded from the
/// file, so [`State::reload`] reads the file again.
pub async fn state_from_file(path: &Path) -> Arc<State> {
    let cfg = Config::load(path).unwrap_or_else(|e| panic!("the test config is invalid: {e}"));
    let metrics = Arc::new(Metrics::new());
    let gateway = within("the gateway to build", Gateway::build(cfg, metrics.clone()))
        .await
        .unwrap_or_else(|e| panic!("build the gateway: {e}"));
    Arc::new(State::new(gateway, metrics, Some(path.to_path_buf())))
}

/// Replaces a file in one step (written aside, then renamed over it), so a
/// reader never sees half of it.
pub fn replace_file(path: &Path, contents: impl AsRef<[u8]>) {
    let aside = path.with_extension("partial");
    std::fs::write(&aside, contents).expect("write the replacement file");
    std::fs::rename(&aside, path).expect("move the replacement file into place");
}

/// Polls `check` until it yields a value, failing the test after [`WAIT`].
/// For conditions that become true eventually (a reload, a file written by
/// another thread), never for readiness.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every certificate in a PEM file.
pub fn pem_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

/// The private key in a PEM file.
pub fn pem_key(path: &Path) -> rustls::pki_types::PrivateKeyDer<'static> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    rustls_pemfile::private_key(&mut pem.as_slice())
        .expect("PEM private key")
        .expect("a private key in the file")
}

/// A client TLS config trusting `roots`, presenting `client` (chain, key)
/// when given, offering HTTP/1.1.
pub fn tls_client_config(
    roots: &[rustls::pki_types::CertificateDer<'static>],
    client: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.clone()).expect("trust the test certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(store);
    let mut cfg = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A TLS connection from `from` to `to`; the handshake's error is returned,
/// not a panic, for tests where it is meant to fail.
pub async fn tls_connect_from(
    from: IpAddr,
    to: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect(from, to).await;
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("server name");
    within(
        "the TLS handshake",
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
}

/// An HTTP/1.1 connection over TLS from [`OUTSIDE`], kept open for several
/// requests (rustls checks a client certificate at the handshake only).
pub struct KeptConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    gw: SocketAddr,
}

impl KeptConnection {
    pub async fn open(gw: SocketAddr, client: Arc<rustls::ClientConfig>) -> Self {
        let tls = tls_connect_from(OUTSIDE, gw, client, "localhost")
            .await
            .expect("the client's handshake");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 over the TLS connection");
        tokio::spawn(connection);
        KeptConnection { sender, gw }
    }

    /// `GET target` on this connection, which must still be open.
    pub async fn get(&mut self, target: &str, what: &str) -> Reply {
        self.try_get(target, what)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// `GET target` on this connection; `Err` when it has been closed.
    pub async fn try_get(&mut self, target: &str, what: &str) -> Result<Reply, String> {
        within(what, self.sender.ready())
            .await
            .map_err(|e| format!("the kept connection is closed: {e}"))?;
        let request = build(self.gw, "GET", target, &[], "");
        let sent = within(what, self.sender.send_request(request)).await;
        Ok(read_reply(sent.map_err(|e| format!("the kept connection failed: {e}"))?).await)
    }
}

/// One HTTP/1.1 request on `io`, body read to the end; any failure (the
/// peer closing, a TLS alert) is returned as text.
pub async fn exchange_on<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<Reply, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = within(
        "the HTTP/1.1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = within("the gateway's response headers", sender.send_request(req))
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = within("the response body", body.collect())
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Writes `bytes` on a fresh connection from `from` and returns everything
/// read until the gateway closed it (a reset counts as closed). Write
/// errors are ignored: a gateway that hangs up early is what some tests
/// expect.
pub async fn raw_exchange(from: IpAddr, gw: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect(from, gw).await;
    let _ = within("writing raw bytes", stream.write_all(bytes)).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within("the gateway to answer or close", stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// A gateway serving TLS with a fresh self-signed certificate for
/// `localhost` and `127.0.0.1`, and a trust store holding just that
/// certificate.
pub struct TlsGateway {
    pub gw: TestGateway,
    pub roots: Arc<rustls::RootCertStore>,
    /// The config it serves.
    pub toml: String,
    _dir: tempfile::TempDir,
}

impl TlsGateway {
    /// The test policy over TLS; `extra` is appended to the config (for
    /// example a `[limits]` table).
    pub async fn start(up: &FakeUpstream, extra: &str) -> TlsGateway {
        TlsGateway::start_with(up, "", extra).await
    }

    /// As [`start`](Self::start), with `server_extra` added to `[server]`.
    pub async fn start_with(up: &FakeUpstream, server_extra: &str, extra: &str) -> TlsGateway {
        let issued = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("generate a certificate");
        let dir = tempfile::tempdir().expect("temporary directory");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, issued.cert.pem()).expect("write the certificate");
        std::fs::write(&key, issued.signing_key.serialize_pem()).expect("write the key");
        let mut setup = Setup::new(up);
        setup.server_extra = format!("tls_cert = {cert:?}\ntls_key = {key:?}\n{server_extra}\n");
        let toml = format!("{}\n{extra}", setup.toml());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                issued.cert.der().to_vec(),
            ))
            .expect("trust the test certificate");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gw = TestGateway::start_on(listener, &toml).await;
        TlsGateway {
            gw,
            roots: Arc::new(roots),
            toml,
            _dir: dir,
        }
    }
}
