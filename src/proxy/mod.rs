//! The request pipeline: classify → authorize → prepare → forward → respond.
//!
//! Each stage is a plain function over plain structs, readable top to bottom
//! in [`handle`]. The decisions (classify, authorize) are pure and
//! synchronous; only forwarding awaits. The connection's facts (peer, TLS)
//! arrive in [`Conn`], built once per connection by `server`. This module
//! owns header hygiene in both directions (hop-by-hop removal, forwarding
//! headers) and the access log event; it does not bind sockets or parse
//! config.

mod ranges;
mod share_answer;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::config::Config;
use crate::error::{wants_html, Body, BoxError, RequestError};
use crate::identity::client_cert::ClientCert;
use crate::identity::{Identity, IdentityOutcome};
use crate::identity::{JwtVerifier, RefreshHandle};
use crate::policy::rate::RateLimits;
use crate::policy::{self, network, Grant, METHOD_OVERRIDE_HEADERS};
use crate::route::{PostRule, Route, RouteClass};
use crate::server::stall::Stall;
use crate::state::State;
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics::ClassLabels;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::{self, AccessEvent, Decision};
use crate::tls::{self, TlsError};

type Connector = OneUpstream<hyper_rustls::HttpsConnector<HttpConnector>>;

/// The authority every upstream request is sent to the pool with. The
/// pooled client keys its connections by scheme and authority and hashes
/// that key three times a request (checkout, hand-back, connect), with
/// `std`'s SipHash fed one byte of the authority at a time: about 1,000
/// instructions a hash for `127.0.0.1:18080`, three times that for a
/// cluster service name. A gateway has exactly one upstream (each config
/// snapshot builds its own client), so the key carries nothing; a one-byte
/// authority keeps the hash short and [`OneUpstream`] connects to the real
/// one. `Host` is set from the configured upstream, never from the URI.
const POOL_AUTHORITY: &str = "u";

/// A connector that ignores the pool's destination and always connects to
/// the configured upstream (see [`POOL_AUTHORITY`]).
#[derive(Clone)]
struct OneUpstream<C> {
    inner: C,
    upstream: Uri,
}

impl<C: tower_service::Service<Uri>> tower_service::Service<Uri> for OneUpstream<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _pool_key: Uri) -> Self::Future {
        self.inner.call(self.upstream.clone())
    }
}

/// What the gateway knows about one client connection, built once by the
/// server when the connection is accepted.
#[derive(Debug)]
pub struct Conn {
    /// The client's address as the connection tells it: the TCP peer, or
    /// the source a trusted load balancer gave in a PROXY header.
    pub peer: SocketAddr,
    /// The TCP peer itself (differs from `peer` behind PROXY protocol).
    pub tcp_peer: SocketAddr,
    pub tls: bool,
    /// The mTLS client certificate the handshake verified.
    pub client_cert: Option<ClientCert>,
    /// The listener the connection came in on.
    pub listener: usize,
}

impl Conn {
    /// The client certificate's identity, if the listener's verification
    /// in `gw` accepts the certificate now: it was checked at the
    /// handshake, and a connection kept alive can outlive that check (the
    /// certificate or a CRL expires, a reload revokes it or withdraws its
    /// CA). See [`ClientCert`].
    fn client_cert_in<'a>(&'a self, gw: &Gateway) -> Option<&'a Arc<Identity>> {
        self.client_cert.as_ref()?.identity_under(
            gw.generation,
            gw.client_auth_of(self.listener),
            SystemTime::now(),
        )
    }
}

/// One loaded configuration and everything built from it: the upstream
/// client, TLS config, JWT keys, rate limiters, audit sink. Immutable;
/// a reload builds a new one (see `state`).
pub struct Gateway {
    pub config: Config,
    pub config_hash: String,
    /// Per listener (in `config.listeners` order): its rustls config, or
    /// `None` for plain HTTP.
    pub tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// Per listener, how its TLS config verifies client certificates
    /// (`None`: it does not).
    pub client_auth: Vec<Option<Arc<tls::ClientAuth>>>,
    /// This snapshot's number, unique in the process: what a connection's
    /// client certificate was last judged under (see [`ClientCert`]).
    pub generation: u64,
    /// When the first listener certificate expires (Unix seconds).
    pub tls_expiry: Option<f64>,
    /// The earliest `nextUpdate` of the client CRLs (Unix seconds).
    pub crl_next_update: Option<f64>,
    pub jwt: Option<JwtVerifier>,
    _jwt_refresh: Option<RefreshHandle>,
    limits: RateLimits,
    audit: AuditSink,
    metrics: Arc<Metrics>,
    client: Client<Connector, Body>,
    upstream_scheme: http::uri::Scheme,
    upstream_authority: http::uri::Authority,
    upstream_host: HeaderValue,
    /// `/readyz`'s last look at the upstream (see [`Gateway::upstream_answers`]).
    readiness: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<StatusCode, String>)>>,
}

/// How long `/readyz` waits for the upstream's answer.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one look at the upstream answers `/readyz` probes: probes that
/// arrive within it (a kubelet, a load balancer's several health checkers)
/// share it instead of each sending a request.
pub const READINESS_REUSE: Duration = Duration::from_secs(1);

/// Why a valid config could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read upstream.ca_file {path}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream.ca_file {path} holds no usable CA certificate")]
    NoCa { path: String },
    #[error("the system certificate store is unusable: {0}")]
    SystemRoots(String),
    #[error("upstream.url has no host")]
    NoHost,
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("identity: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Identity(Vec<crate::config::Problem>),
    #[error("cannot open audit.file {path}: {source}")]
    Audit {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Gateway {
    /// Builds everything the config names. Loads keys and fetches a JWKS
    /// URL, so this awaits; it binds nothing.
    pub async fn build(config: Config, metrics: Arc<Metrics>) -> Result<Gateway, BuildError> {
        Gateway::replacing(config, metrics, None).await
    }

    /// [`Gateway::build`] on a reload, from the gateway in force: a JWKS
    /// that cannot be fetched right now keeps the key set in force (see
    /// [`JwtVerifier::replacing`]).
    pub async fn replacing(
        mut config: Config,
        metrics: Arc<Metrics>,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, BuildError> {
        if let Some(rw) = &mut config.rewrite {
            // Freshly validated, so this is the only reference.
            if let Some(rules) = Arc::get_mut(&mut rw.rules) {
                rules.set_stats(metrics.rewrite_stats.clone());
            }
        }
        let mut tls = Vec::new();
        let mut client_auth = Vec::new();
        let mut tls_expiry: Option<f64> = None;
        let mut crl_next_update: Option<f64> = None;
        for l in &config.listeners {
            let built = l.tls.as_ref().map(tls::server_config).transpose()?;
            client_auth.push(built.as_ref().and_then(|b| b.client_auth.clone()));
            tls.push(built.map(|b| b.config));
            if let Some(files) = &l.tls {
                if let Some(t) = tls::expiry(&files.cert)? {
                    tls_expiry = Some(tls_expiry.map_or(t, |e| e.min(t)));
                }
                for crl in &files.client_crl {
                    let t = unix_seconds(crl.next_update);
                    crl_next_update = Some(crl_next_update.map_or(t, |e: f64| e.min(t)));
                    if crl.expired_at(SystemTime::now()) {
                        tracing::warn!(
                            file = %crl.path.display(),
                            issuer = %crl.issuer,
                            next_update = %humantime::format_rfc3339_seconds(crl.next_update),
                            "a client CRL has expired: the client certificates it speaks for are refused until a newer CRL is loaded"
                        );
                    }
                }
            }
        }
        let (jwt, refresh) = match &config.identity.jwt {
            Some(settings) => {
                let in_force = previous.and_then(|g| g.jwt.as_ref());
                let v = JwtVerifier::replacing(settings, &config.base_dir, in_force)
                    .await
                    .map_err(BuildError::Identity)?;
                let handle = v.spawn_refresh();
                (Some(v), Some(handle))
            }
            None => (None, None),
        };
        let audit = AuditSink::open(config.audit_file.as_deref(), &metrics.audit_lost).map_err(
            |source| BuildError::Audit {
                path: config
                    .audit_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source,
            },
        )?;
        let client = upstream_client(&config)?;
        let up = &config.upstream;
        let authority = up.url.authority().cloned().ok_or(BuildError::NoHost)?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| BuildError::NoHost)?;
        Ok(Gateway {
            upstream_scheme: up.url.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
            upstream_authority: authority,
            upstream_host: host,
            client,
            limits: RateLimits::new(&config.limits),
            config_hash: config.hash(),
            tls,
            client_auth,
            generation: next_generation(),
            tls_expiry,
            crl_next_update,
            jwt,
            _jwt_refresh: refresh,
            readiness: tokio::sync::Mutex::new(None),
            audit,
            metrics,
            config,
        })
    }

    /// The gateway `explain` evaluates with: the same config and header
    /// logic, but nothing that touches the network or the disk beyond
    /// reading the config's files (no JWKS fetch, no audit file, no TLS).
    /// JWT keys from PEM files, a JWKS file or an HMAC secret are loaded;
    /// with a `jwks_url` tokens cannot be verified offline and `jwt` stays
    /// `None`.
    pub async fn offline(config: Config) -> Result<Gateway, BuildError> {
        let jwt = match &config.identity.jwt {
            Some(settings) if settings.jwks_url.is_none() => Some(
                JwtVerifier::new(settings, &config.base_dir)
                    .await
                    .map_err(BuildError::Identity)?,
            ),
            _ => None,
        };
        let client = upstream_client(&config)?;
        let authority = config
            .upstream
            .url
            .authority()
            .cloned()
            .ok_or(BuildError::NoHost)?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| BuildError::NoHost)?;
        Ok(Gateway {
            upstream_scheme: config
                .upstream
                .url
                .scheme()
                .cloned()
                .unwrap_or(http::uri::Scheme::HTTP),
            upstream_authority: authority,
            upstream_host: host,
            client,
            limits: RateLimits::new(&config.limits),
            config_hash: config.hash(),
            tls: Vec::new(),
            client_auth: Vec::new(),
            generation: next_generation(),
            tls_expiry: None,
            crl_next_update: None,
            jwt,
            _jwt_refresh: None,
            readiness: tokio::sync::Mutex::new(None),
            audit: AuditSink::Log,
            metrics: Arc::new(Metrics::new()),
            config,
        })
    }

    /// True when keys the policy needs are loaded (for `/readyz`).
    pub fn identity_ready(&self) -> bool {
        self.jwt.as_ref().is_none_or(JwtVerifier::ready)
    }

    /// Whether the upstream answers, for `/readyz`: the status of a
    /// `HEAD /` sent through the pooled client that forwards traffic (so
    /// over a kept connection when there is one, with the same DNS, TLS
    /// and CA settings as traffic), or why none came within
    /// [`READINESS_TIMEOUT`].
    ///
    /// Any status counts as an answer: the gateway can reach its upstream,
    /// and an error the upstream gives is its to give (a `503` passes to
    /// clients as it is; taking every gateway out of service for it would
    /// turn the upstream's own error page into refused connections). One
    /// answer serves every probe for [`READINESS_REUSE`]; probes that
    /// arrive while a request is out wait for its answer. Once the
    /// upstream is gone its kept connections close, and the next look
    /// opens a new one, which fails.
    pub async fn upstream_answers(&self) -> Result<StatusCode, String> {
        let mut last = self.readiness.lock().await;
        if let Some((at, answer)) = &*last {
            if at.elapsed() < READINESS_REUSE {
                return answer.clone();
            }
        }
        let answer = self.ask_upstream().await;
        *last = Some((tokio::time::Instant::now(), answer.clone()));
        answer
    }

    async fn ask_upstream(&self) -> Result<StatusCode, String> {
        let uri = http::Uri::builder()
            .scheme(self.upstream_scheme.clone())
            .authority(Authority::from_static(POOL_AUTHORITY))
            .path_and_query("/")
            .build()
            .map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(Method::HEAD)
            .uri(uri)
            .header(header::HOST, self.upstream_host.clone())
            .header(header::USER_AGENT, "sharegate-readyz")
            .body(crate::error::full(bytes::Bytes::new()))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(READINESS_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp.status()),
            Ok(Err(e)) => Err(causes(&e)
                .skip(1)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ")),
            Err(_) => Err(format!("no answer within {READINESS_TIMEOUT:?}")),
        }
    }

    /// How listener `index` verifies client certificates (a listener
    /// beyond the configured ones takes the first one's settings, as in
    /// `server`).
    pub fn client_auth_of(&self, index: usize) -> Option<&tls::ClientAuth> {
        self.client_auth
            .get(index)
            .or_else(|| self.client_auth.first())
            .and_then(Option::as_deref)
    }
}

/// Unix seconds, as the metrics give times.
#[allow(clippy::cast_precision_loss)] // exact for any realistic date
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64)
}

/// A number for a new snapshot, never 0 (a verdict not reached yet).
fn next_generation() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    LAST.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

fn upstream_client(config: &Config) -> Result<Client<Connector, Body>, BuildError> {
    let up = &config.upstream;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &up.ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| BuildError::CaFile {
            path: shown.clone(),
            source,
        })?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
            roots.add(cert).map_err(|_| BuildError::NoCa {
                path: shown.clone(),
            })?;
        }
        if roots.is_empty() {
            return Err(BuildError::NoCa { path: shown });
        }
    } else if up.https {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(BuildError::SystemRoots(
                "no CA certificates found; set upstream.ca_file".to_owned(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::SystemRoots(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(up.connect_timeout));
    http.set_nodelay(true);
    let connector = OneUpstream {
        inner: hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
        upstream: up.url.clone(),
    };
    // Idle upstream connections are kept for reuse, but bounded: a burst of
    // client connections must not leave hundreds of them open afterwards.
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(connector))
}

/// What the pipeline learned about a request, for the access log.
#[derive(Default)]
struct Facts {
    class: Option<RouteClass>,
    client: Option<IpAddr>,
    path: Option<String>,
    token_hashes: Vec<String>,
    rule: String,
    decided_by: &'static str,
    identity: Option<Arc<Identity>>,
}

/// Serves one request. Never fails: every error becomes a response here.
/// The config snapshot is taken once, so the whole request runs under the
/// policy that was in force when it arrived.
pub async fn handle(state: Arc<State>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    let gw = state.gateway();
    let start = Instant::now();
    let method = req.method().clone();
    let browser = wants_html(req.headers());
    let mut facts = Facts::default();
    let return_to = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    let navigation = browser && method == Method::GET;
    let http1 = req.version() < Version::HTTP_2;
    let result = pipeline(&gw, &conn, req, &mut facts).await;
    let (mut resp, decision, error) = match result {
        Ok(resp) => (resp, Decision::Allowed, None),
        Err(e) => {
            let decision = match &e {
                RequestError::UpstreamConnect(_)
                | RequestError::UpstreamTimeout(_)
                | RequestError::Upstream(_)
                | RequestError::UpstreamUnreadable(_)
                | RequestError::UpstreamBody(_) => Decision::Allowed,
                _ => Decision::Refused,
            };
            let mut resp = match &gw.config.identity.login_url {
                Some(login) if navigation && e.is_unauthenticated() => {
                    crate::error::login_redirect(
                        login,
                        &gw.config.identity.login_return_param,
                        &return_to,
                    )
                }
                _ => e.to_response(
                    browser,
                    crate::error::Accepted {
                        bearer: gw.config.identity.jwt.is_some(),
                        client_cert: gw.client_auth_of(conn.listener).is_some(),
                    },
                ),
            };
            if http1 && matches!(e, RequestError::ClientCertificate) {
                // Nothing more will be served on this connection; HTTP/2
                // has no such header (RFC 9113 §8.2.2), its streams are
                // refused one by one.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            (resp, decision, Some(e))
        }
    };
    let class = facts.class;
    if let Some(class) = class {
        share_answer::apply(&gw.config.share_headers, class, resp.headers_mut());
    }
    let event = AccessEvent {
        class: class.map_or("unknown", RouteClass::name),
        client: facts.client,
        peer: conn.peer.ip(),
        method,
        path: facts.path.unwrap_or_else(|| "-".to_owned()),
        token_hashes: facts.token_hashes,
        decision,
        rule: facts.rule,
        decided_by: facts.decided_by,
        identity: facts.identity,
        status: resp.status(),
        error,
        start,
        metrics: gw.metrics.clone(),
        audit: class
            .is_some_and(|c| c != RouteClass::Other)
            .then(|| gw.audit.clone()),
    };
    telemetry::log_on_completion(resp, event)
}

/// Classify and authorize: everything decided before a byte is sent
/// upstream. Returns the route, the client IP and what the credentials
/// amounted to.
async fn decide(
    gw: &Gateway,
    conn: &Conn,
    req: &Request<Incoming>,
    facts: &mut Facts,
) -> Result<(Route, IpAddr, IdentityOutcome), RequestError> {
    let cfg = &gw.config;
    // The connection: where a client certificate is required, one that a
    // new handshake would refuse (revoked, expired, its CA or CRL gone
    // since this connection's handshake) gets nothing on a connection kept
    // alive either.
    if gw
        .client_auth_of(conn.listener)
        .is_some_and(|a| a.mandatory)
        && conn.client_cert_in(gw).is_none()
    {
        facts.rule = "client_cert".to_owned();
        return Err(RequestError::ClientCertificate);
    }
    // classify
    check_method(req.method()).map_err(|(what, _)| RequestError::Malformed(what))?;
    if let Err(e) = cfg
        .policy
        .hosts
        .check(req.uri().authority(), req.headers(), conn.tls)
    {
        facts.rule = crate::policy::hosts::RULE.to_owned();
        return Err(e.into());
    }
    let target = match (req.uri().scheme(), req.uri().path_and_query()) {
        (_, Some(pq)) => pq.as_str(),
        (Some(_), None) => "/",
        (None, None) => return Err(RequestError::Malformed("request target")),
    };
    let route = cfg.routes.classify(req.method(), target)?;
    facts.class = Some(route.class);
    facts.token_hashes = route
        .tokens
        .iter()
        .map(|t| telemetry::token_hash(t))
        .collect();
    // A path token is masked as the path spells it.
    let spelled = route.raw_token.as_slice();
    facts.path = Some(telemetry::mask_tokens_hashed(
        &route.path,
        if spelled.is_empty() {
            &route.tokens
        } else {
            spelled
        },
        &facts.token_hashes,
    ));
    facts.rule.clone_from(&route.rule);

    // authorize
    let client = network::client_ip(
        conn.peer.ip(),
        req.headers(),
        &cfg.policy.trusted_proxies,
        cfg.policy.forwarded_header,
    )?;
    facts.client = Some(client);
    let (_, require, _) = cfg.policy.access(route.class);
    let identity = if require.needs_identity() {
        identify(
            gw.jwt.as_ref(),
            &cfg.identity.claims,
            conn.client_cert_in(gw),
            req.headers(),
        )
        .await
    } else {
        IdentityOutcome::Absent
    };
    facts.identity = identity.identity().cloned();
    let grant = policy::authorize(
        &cfg.policy,
        &route,
        req.method(),
        req.headers(),
        client,
        &identity,
    )
    .map_err(|denial| {
        facts.rule.clone_from(&denial.rule);
        RequestError::Denied {
            denial,
            class: route.class,
        }
    })?;
    facts.rule = grant_rule(&route, &grant);
    facts.decided_by = grant.decided_by;
    if route.class.is_public() {
        let generate_query = route.post == PostRule::GenerateQuery && req.method() == Method::POST;
        gw.limits
            .check(client, generate_query)
            .map_err(|retry_after| {
                gw.metrics
                    .rate_limited
                    .get_or_create(&ClassLabels {
                        class: route.class.name(),
                    })
                    .inc();
                RequestError::RateLimited { retry_after }
            })?;
    }
    Ok((route, client, identity))
}

/// Methods the gateway never forwards, with what to call them and why.
/// A reverse proxy takes origin-form and absolute-form targets only:
/// CONNECT (and its authority-form target, RFC 9112 §3.2.3) would open a
/// tunnel the policy cannot see into (RFC 9110 §9.3.6). Methods are
/// case-sensitive (RFC 9110 §9.1), but upstreams that fold case would run
/// `put` as the `PUT` the policy never judged: nginx's rule, capitals, `_`
/// and `-` only (every registered method fits). `explain` asks the same.
pub(crate) fn check_method(method: &Method) -> Result<(), (&'static str, &'static str)> {
    if method == Method::CONNECT {
        return Err((
            "CONNECT",
            "CONNECT would open a tunnel the policy cannot see into",
        ));
    }
    if !method
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Err((
            "method",
            "a method is written in capitals (A-Z, _ and -): an upstream that folds case would run one the policy never judged",
        ));
    }
    Ok(())
}

/// How long a refused request's small body may take to arrive before the
/// refusal is sent anyway.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and discards the body of a refused request when it is small and
/// declared, so the refusal ends the exchange cleanly: over HTTP/2 an unread
/// body makes the server reset the stream after the response (RFC 9113
/// §8.1), which some clients report as an error instead of showing the
/// refusal. Nothing read here goes anywhere. A client that sent
/// `Expect: 100-continue` is waiting to hear whether to send its body at
/// all: reading would have the `100` sent, inviting a body only to throw it
/// away, so the refusal goes out at once instead (RFC 9110 §10.1.1).
async fn drain(req: Request<Incoming>, max: u64) {
    let expects = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body = req.into_body();
    if body.is_end_stream() || expects {
        return;
    }
    let small = body.size_hint().upper().is_some_and(|n| n <= max);
    if small {
        let _ = tokio::time::timeout(DRAIN_DEADLINE, body.collect()).await;
    }
}

async fn pipeline(
    gw: &Gateway,
    conn: &Conn,
    req: Request<Incoming>,
    facts: &mut Facts,
) -> Result<Response<Body>, RequestError> {
    let cfg = &gw.config;
    let (route, client, identity) = match decide(gw, conn, &req, facts).await {
        Ok(decided) => decided,
        Err(e) => {
            drain(req, cfg.limits.max_public_body_bytes).await;
            return Err(e);
        }
    };

    // prepare → forward → respond
    let upgrade = route.class == RouteClass::Other && is_websocket_upgrade(req.headers());
    let rewrite = cfg.rewrite.as_ref().map(|rw| Rewrite {
        rules: &rw.rules,
        accept_encoding: req.headers().get(header::ACCEPT_ENCODING).cloned(),
        head: req.method() == Method::HEAD,
    });
    let verified = match &identity {
        IdentityOutcome::Verified(id) => Some(&**id),
        _ => None,
    };
    let idle = cfg.limits.body_timeout;
    let (req, progress) = if route.class.is_public() {
        let (parts, body) = limit_body(req, cfg.limits.max_public_body_bytes, idle).await?;
        // Most share requests are bodiless reads: no header lookup for them.
        let overrides = !body.is_empty()
            && crate::route::body_has_method_param(
                parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .map(HeaderValue::as_bytes),
                &body,
            );
        if overrides {
            let denial = policy::Denial::method_override_in_body();
            facts.rule.clone_from(&denial.rule);
            return Err(RequestError::Denied {
                denial,
                class: route.class,
            });
        }
        (Request::from_parts(parts, crate::error::full(body)), None)
    } else if req.body().is_end_stream() {
        (req.map(|b| b.map_err(BoxError::from).boxed_unsync()), None)
    } else {
        let progress = Arc::new(BodyProgress::new());
        let marked = Some(progress.clone());
        let streamed = req.map(|b| IdleBody::new(b, idle, marked).boxed_unsync());
        (streamed, Some(progress))
    };
    let (mut upstream_req, client_upgrade) =
        prepare(gw, conn, client, &route, req, upgrade, verified)?;
    let whole = rewrite
        .as_ref()
        .and_then(|_| ranges::prepare(&mut upstream_req));
    let sent = Instant::now();
    let mut resp = forward(gw, upstream_req, progress.as_deref()).await?;
    if let Some(rw) = rewrite.as_ref().filter(|rw| !rw.head) {
        if ranges::unrewritable_partial(rw.rules, &resp) {
            let again = whole.ok_or(RequestError::UpstreamPartial)?;
            drop(resp);
            tracing::debug!("partial answer of a rewritten type: asking for the whole body");
            resp = forward(gw, again, None).await?;
            if ranges::unrewritable_partial(rw.rules, &resp) {
                return Err(RequestError::UpstreamPartial);
            }
        }
    }
    gw.metrics
        .upstream_seconds
        .get_or_create(&ClassLabels {
            class: route.class.name(),
        })
        .observe(sent.elapsed().as_secs_f64());
    respond(gw, resp, client_upgrade, rewrite).await
}

/// Whether the response is an event stream (`text/event-stream` in any of
/// its `Content-Type` fields).
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_TYPE).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|element| {
            element
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii()
                .eq_ignore_ascii_case(b"text/event-stream")
        })
    })
}

/// Reads a share route's request body up to the limit before anything is
/// forwarded, so an oversized body is refused (413) without the upstream
/// seeing any of it. Share routes only take small JSON queries.
async fn limit_body(
    req: Request<Incoming>,
    max: u64,
    idle: Duration,
) -> Result<(http::request::Parts, bytes::Bytes), RequestError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(RequestError::PayloadTooLarge);
    }
    let (parts, body) = req.into_parts();
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let bytes = http_body_util::Limited::new(IdleBody::new(body, idle, None), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                RequestError::PayloadTooLarge
            } else if let Some(stalled) = stalled(&*e) {
                RequestError::BodyTimeout(stalled)
            } else {
                RequestError::BodyRead(e)
            }
        })?
        .to_bytes();
    Ok((parts, bytes))
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyStalled`] once the client has
    /// sent nothing for `limits.body_timeout` while the gateway waits for
    /// it (nginx's `client_body_timeout`). Without it a body trickled in, a
    /// byte a minute, holds its connection for ever, and on a share route
    /// the request too, since its body is read whole before it is
    /// forwarded. The body is always polled before the timer, so bytes that
    /// have arrived are never refused for a deadline that passed while
    /// nobody was reading (an upstream slow to take them).
    struct IdleBody {
        #[pin]
        inner: Incoming,
        stall: Stall,
        // Marked at each chunk handed on (a streamed body).
        progress: Option<Arc<BodyProgress>>,
    }
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration, progress: Option<Arc<BodyProgress>>) -> IdleBody {
        IdleBody {
            inner,
            stall: Stall::new(idle),
            progress,
        }
    }
}

/// When a streamed request body last moved on towards the upstream: the
/// response timeout counts from then, so an upload is never cut for taking
/// long while it moves (hyper polls the body only when the upstream
/// connection can take more, so a chunk handed on is the upstream taking
/// the one before).
struct BodyProgress {
    start: tokio::time::Instant,
    /// Milliseconds after `start`.
    last: std::sync::atomic::AtomicU64,
}

impl BodyProgress {
    fn new() -> BodyProgress {
        BodyProgress {
            start: tokio::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        let ms = self.last.load(std::sync::atomic::Ordering::Relaxed);
        self.start + Duration::from_millis(ms)
    }
}

/// The client stopped sending a request body (`limits.body_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes for {0:?}")]
struct BodyStalled(Duration);

impl http_body::Body for IdleBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            this.stall.progressed();
            if let Some(p) = this.progress {
                p.mark();
            }
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        match this.stall.poll_expired(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(this.stall.limit()))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How long the body had stalled, when `e` (or what caused it) is
/// [`BodyStalled`].
fn stalled(e: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    causes(e).find_map(|c| c.downcast_ref::<BodyStalled>().map(|s| s.0))
}

/// What the request's credentials amount to: a JWT from the configured
/// sources, else a verified client certificate; then the claim
/// requirements. A token that is present but invalid decides: it is never
/// passed over for a weaker credential.
pub(crate) async fn identify(
    jwt: Option<&JwtVerifier>,
    claims: &crate::identity::ClaimRules,
    client_cert: Option<&Arc<Identity>>,
    headers: &HeaderMap,
) -> IdentityOutcome {
    let check = |id: Arc<Identity>| match claims.check(&id) {
        Ok(()) => IdentityOutcome::Verified(id),
        Err(f) => IdentityOutcome::Rejected {
            claim: f.claim().to_owned(),
            identity: id,
        },
    };
    if let Some(v) = jwt {
        match v.verify(headers).await {
            Ok(Some(id)) => return check(id),
            Ok(None) => {}
            Err(e) => return IdentityOutcome::Invalid { reason: e.reason() },
        }
    }
    match client_cert {
        Some(id) => check(id.clone()),
        None => IdentityOutcome::Absent,
    }
}

fn grant_rule(route: &Route, grant: &Grant) -> String {
    if route.rule.is_empty() {
        grant.rule.clone()
    } else {
        // Built by hand: `format!` cost ten times as much, on every request.
        let mut rule = String::with_capacity(grant.rule.len() + route.rule.len() + 3);
        rule.push_str(&grant.rule);
        rule.push_str(" (");
        rule.push_str(&route.rule);
        rule.push(')');
        rule
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, RFC 9112 §9.6) plus the old
/// `Proxy-Connection`; they describe one connection and never cross a proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Forwarding headers the gateway sets itself; client copies are dropped
/// unless the peer is a trusted proxy (whose `X-Forwarded-For` we extend).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDING_HEADERS: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REAL_IP,
    header::FORWARDED,
];
/// Other fields that name the client's address, which frameworks and
/// "client IP" helpers read before or instead of `X-Forwarded-For`: Rack
/// and Rails `Client-IP`, common PHP code `X-Client-IP`,
/// `X-Cluster-Client-IP`, `X-Forwarded` and `Forwarded-For`, the npm
/// `request-ip` list with the CDN fields. The gateway is the one that says
/// who the client is; a client's copy of any of them would say otherwise.
const CLIENT_ADDRESS_HEADERS: [HeaderName; 15] = [
    HeaderName::from_static("client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("cf-connecting-ipv6"),
    HeaderName::from_static("cf-pseudo-ipv4"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("do-connecting-ip"),
    HeaderName::from_static("x-appengine-user-ip"),
    HeaderName::from_static("x-forwarded"),
    HeaderName::from_static("forwarded-for"),
    HeaderName::from_static("x-originating-ip"),
    HeaderName::from_static("x-remote-ip"),
    HeaderName::from_static("x-remote-addr"),
];
const PATH_OVERRIDE_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// A WebSocket upgrade: `Connection: upgrade` and one `Upgrade` line naming
/// exactly `websocket`. The only upgrade passed on: after a `101` the
/// client's bytes reach the upstream unchecked, so an upgrade to a protocol
/// the upstream may also speak for requests (`h2c`: "h2c smuggling") would
/// let them past every rule. Any other `Upgrade` is dropped as hop-by-hop
/// and the request goes on as an ordinary one.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    connection_has(headers, "upgrade") && upgrade_is_websocket(headers)
}

fn upgrade_is_websocket(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"),
        _ => false,
    }
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    drop_headers(headers, |_| false);
}

/// Removes the hop-by-hop headers (those listed in `Connection` too) and
/// every header `also` picks. One pass over the names present (cheap
/// comparisons), then one removal per name found: a message carries a
/// handful of headers, and hashed removals of the dozen absent names this
/// guards against cost more than the rest of the header work.
fn drop_headers(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| *k == header::UPGRADE || HOP_BY_HOP.contains(k) || also(k))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
    );
    for name in doomed {
        headers.remove(name);
    }
}

type OnUpgrade = Option<hyper::upgrade::OnUpgrade>;

/// Builds the upstream request: the checked path, the request's own body
/// (streamed), and headers cleaned by [`upstream_headers`].
fn prepare(
    gw: &Gateway,
    conn: &Conn,
    client: IpAddr,
    route: &Route,
    mut req: Request<Body>,
    upgrade: bool,
    identity: Option<&Identity>,
) -> Result<(Request<Body>, OnUpgrade), RequestError> {
    let client_host = req.uri().authority().map(|a| a.as_str().to_owned());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let headers = upstream_headers(
        gw,
        conn,
        client,
        parts.headers,
        client_host.as_deref(),
        upgrade,
        identity,
    );
    let mut out = Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = target_uri(gw, route, Authority::from_static(POOL_AUTHORITY))?;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers;
    Ok((out, on_upgrade))
}

/// The upstream URI: the upstream's origin, the canonical (checked) path and
/// the query as the client sent it.
pub(crate) fn upstream_uri(gw: &Gateway, route: &Route) -> Result<Uri, RequestError> {
    target_uri(gw, route, gw.upstream_authority.clone())
}

/// [`upstream_uri`] under another authority (the pool's, when sent).
fn target_uri(gw: &Gateway, route: &Route, authority: Authority) -> Result<Uri, RequestError> {
    let mut pq = route.path.clone();
    if let Some(q) = &route.query {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::builder()
        .scheme(gw.upstream_scheme.clone())
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|_| RequestError::Malformed("request target"))
}

/// The headers the upstream receives: hop-by-hop headers and `_` names
/// dropped, method overrides stripped, forwarding headers set from what the
/// gateway itself determined, identity headers ours alone, `Host` the
/// upstream's. Pure, so `explain` shows exactly what the server sends.
pub(crate) fn upstream_headers(
    gw: &Gateway,
    conn: &Conn,
    client: IpAddr,
    mut headers: HeaderMap,
    authority: Option<&str>,
    upgrade: bool,
    identity: Option<&Identity>,
) -> HeaderMap {
    let client_host = authority.map(str::to_owned).or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    // Checked by `is_websocket_upgrade`; sent in its one spelling.
    let upgrade_value = upgrade.then(|| HeaderValue::from_static("websocket"));
    let peer = conn.peer.ip().to_canonical();
    let policy = &gw.config.policy;
    let mut client_text = Vec::with_capacity(40);
    crate::telemetry::line::write_ip(&mut client_text, client);
    // A trusted proxy's X-Forwarded-For chain is passed on from the client
    // the walk found, extended by the peer, when that is the header the
    // proxies tell the client in. Whatever lies left of that client was
    // written by the client, and an upstream reading the first entry would
    // take it for the client; anything else a client wrote is replaced.
    let chain = if policy.forwarded_header == network::ForwardedHeader::XForwardedFor {
        network::forwarded_chain(
            peer,
            &headers,
            &policy.trusted_proxies,
            policy.forwarded_header,
        )
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    let xff = if chain.is_empty() {
        client_text.clone()
    } else {
        let mut xff = Vec::with_capacity(40 * (chain.len() + 1));
        for hop in chain.iter().chain([&peer]) {
            if !xff.is_empty() {
                xff.extend_from_slice(b", ");
            }
            crate::telemetry::line::write_ip(&mut xff, *hop);
        }
        xff
    };
    let forward_claims = &gw.config.identity.forward_claims;
    drop_headers(&mut headers, |k| {
        // Header names with '_': CGI-style servers (WSGI, PHP) fold '_'
        // and '-' together, so `X_Forwarded_For` could stand in for the
        // header we set.
        k.as_str().contains('_')
            // On share routes a method override is refused by policy;
            // elsewhere it is stripped so that no upstream acts on it.
            || METHOD_OVERRIDE_HEADERS.contains(k)
            // Forwarding headers are the gateway's own, and so is every
            // other `X-Forwarded-*` (`-Prefix`, `-Port`, `-Server`, ...),
            // from which frameworks build links and redirects.
            || FORWARDING_HEADERS.contains(k)
            || k.as_str().starts_with("x-forwarded-")
            || CLIENT_ADDRESS_HEADERS.contains(k)
            // Headers some frameworks route by instead of the path
            // (Symfony, Zend, IIS): the path checked must be the path used.
            || PATH_OVERRIDE_HEADERS.contains(k)
            // Identity headers are ours alone: client copies never pass.
            || forward_claims.iter().any(|(_, name)| name == k)
            // hyper has answered `100-continue` already (on a share route
            // the body is read whole before forwarding); passed on, it
            // would have the upstream answer an expectation the body
            // right behind it no longer waits for (the Expect desync).
            || k == header::EXPECT
    });
    // RFC 9113 §8.2.3: an HTTP/2 client may send `cookie` as several
    // fields; they are joined with "; " before the request goes on over
    // HTTP/1.1, where an upstream reading one Cookie line would lose the
    // rest.
    let joined_cookies = {
        let mut cookies = headers.get_all(header::COOKIE).iter();
        match (cookies.next(), cookies.next()) {
            (Some(_), Some(_)) => Some(
                headers
                    .get_all(header::COOKIE)
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect::<Vec<_>>()
                    .join(&b"; "[..]),
            ),
            _ => None,
        }
    };
    let set = |h: &mut HeaderMap, name: &HeaderName, v: &[u8]| {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            h.insert(name.clone(), v);
        }
    };
    if let Some(v) = joined_cookies {
        set(&mut headers, &header::COOKIE, &v);
    }
    set(&mut headers, &X_FORWARDED_FOR, &xff);
    set(&mut headers, &X_REAL_IP, &client_text);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    if let Some(h) = &client_host {
        set(&mut headers, &X_FORWARDED_HOST, h.as_bytes());
    }
    for (claim, name) in forward_claims {
        let value = identity
            .and_then(|id| id.claims.get(claim))
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            });
        if let Some(v) = value {
            set(&mut headers, name, v.as_bytes());
        }
    }
    headers.insert(header::HOST, gw.upstream_host.clone());
    // The browser names the private origin; an upstream that checks
    // Origin/Referer (CSRF, CORS) expects the public one it was set up with.
    if let Some(rw) = gw.config.rewrite.as_ref().filter(|rw| rw.request_origin) {
        for name in [header::ORIGIN, header::REFERER] {
            if let Some(mapped) = headers
                .get(&name)
                .and_then(|v| rw.rules.reverse_request_origin(v))
            {
                headers.insert(name, mapped);
            }
        }
    }
    if let Some(u) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
    headers
}

/// Sends the request and waits for the response head: at most
/// `upstream.response_timeout` from the sending or, for a streamed body,
/// from the last chunk of it the upstream took.
async fn forward(
    gw: &Gateway,
    req: Request<Body>,
    progress: Option<&BodyProgress>,
) -> Result<Response<Incoming>, RequestError> {
    let limit = gw.config.upstream.response_timeout;
    let sent = tokio::time::Instant::now();
    let response = gw.client.request(req);
    tokio::pin!(response);
    let answered = loop {
        let from = progress.map_or(sent, |p| p.last().max(sent));
        match tokio::time::timeout_at(from + limit, &mut response).await {
            Ok(answered) => break answered,
            // The body moved on during the wait: count from then.
            Err(_) if progress.is_some_and(|p| p.last() > from) => {}
            Err(_) => return Err(RequestError::UpstreamTimeout(limit)),
        }
    };
    match answered {
        Err(e) if e.is_connect() => Err(RequestError::UpstreamConnect(Box::new(e))),
        Err(e) => Err(match stalled(&e) {
            Some(idle) => RequestError::BodyTimeout(idle),
            None if client_body_failed(&e) => RequestError::BodyRead(Box::new(e)),
            None => RequestError::Upstream(Box::new(e)),
        }),
        Ok(resp) => Ok(resp),
    }
}

/// True when forwarding failed because the client's own request body did
/// (a malformed chunk, a connection cut mid-body): hyper reports the body
/// stream's error as a user error. That is the client's fault (400), not
/// the upstream's (502).
fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).any(|c| {
        c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
    })
}

/// `e` and the chain of errors that caused it.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |c| c.source())
}

/// How the response is to be rewritten: the rules, the client's
/// `Accept-Encoding`, and whether the request was a `HEAD` (no body).
struct Rewrite<'a> {
    rules: &'a Arc<crate::rewrite::Rules>,
    accept_encoding: Option<HeaderValue>,
    head: bool,
}

/// Cleans the upstream's response for the client: hop-by-hop headers
/// dropped, redirects naming the upstream's own origin mapped back, and
/// rewritten when configured. A `101` to a WebSocket upgrade gets the same
/// header treatment and hands both connections over to a byte pipe; any
/// other `101` is refused.
///
/// A rewritten body's first frame is read before the head goes out
/// (event streams excepted, whose head must not wait for an event): a body
/// that fails at once (labelled gzip but not gzip, a bomb in its first
/// bytes, a UTF-16 byte order mark) is then a `502` the client can read,
/// not a connection closed with no answer.
async fn respond(
    gw: &Gateway,
    mut resp: Response<Incoming>,
    client_upgrade: OnUpgrade,
    rewrite: Option<Rewrite<'_>>,
) -> Result<Response<Body>, RequestError> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(client_side) = client_upgrade.filter(|_| upgrade_is_websocket(resp.headers()))
        else {
            return Err(RequestError::UpstreamSwitched);
        };
        let upstream_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(u)) = (client_side.await, upstream_side.await) {
                let mut c = TokioIo::new(c);
                let mut u = TokioIo::new(u);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let upstream = crate::rewrite::UpstreamOrigin::new(&gw.upstream_scheme, &gw.upstream_authority);
    let rules = rewrite.as_ref().map(|rw| rw.rules);
    crate::rewrite::rewrite_response_headers(rules, Some(upstream), &mut parts.headers);
    let passed = |parts, body: Incoming| {
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ))
    };
    if switching {
        // The upgrade's own hop-by-hop headers (RFC 9110 §7.8), as checked.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return passed(parts, body);
    }
    match rewrite {
        None => passed(parts, body),
        Some(rw) if rw.head => passed(parts, body),
        Some(rw) => {
            let body = crate::rewrite::rewrite_response(
                rw.rules,
                &mut parts,
                rw.accept_encoding.as_ref(),
                body,
            )
            .map_err(RequestError::UpstreamUnreadable)?;
            let mut body = body;
            if body.is_rewriting() {
                // Most answers arrive with their head: one poll takes the
                // first frame without arming a timer. An event stream that
                // has sent nothing yet is not waited for.
                let first = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(std::pin::Pin::new(&mut body).poll_frame(cx))
                })
                .await;
                let first = match first {
                    std::task::Poll::Ready(first) => Some(first),
                    std::task::Poll::Pending if is_event_stream(&parts.headers) => None,
                    std::task::Poll::Pending => {
                        let limit = gw.config.upstream.response_timeout;
                        match tokio::time::timeout(limit, body.frame()).await {
                            Err(_) => return Err(RequestError::UpstreamTimeout(limit)),
                            Ok(first) => Some(first),
                        }
                    }
                };
                match first {
                    Some(Some(Err(e))) => return Err(RequestError::UpstreamBody(e)),
                    Some(Some(Ok(frame))) => body.unread(frame),
                    Some(None) | None => {}
                }
            }
            let body = crate::rewrite::rewrite_trailers(rw.rules, body);
            Ok(Response::from_parts(parts, body.boxed_unsync()))
        }
    }
}
