//! Request errors and their single mapping to HTTP responses.
//!
//! Every way a request can fail is one variant of [`RequestError`]; one
//! `match` turns it into a status, and who caused it decides the class
//! (client 4xx, upstream 502/504). Clients get a short standard reason, as
//! JSON shaped like LangSmith's own errors (`{"detail": ...}`), or a small
//! HTML page when a browser navigates; the detail goes to the access log
//! once, from `Display` and `source()`. This module does not decide policy.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::policy::hosts::HostRefusal;
use crate::policy::network::ForwardedError;
use crate::policy::{Denial, DenialKind};
use crate::route::{PathError, RouteClass};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Everything that stops a request from being answered by the upstream.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("ambiguous path")]
    Path(#[from] PathError),
    #[error("client address unknown")]
    Forwarded(#[from] ForwardedError),
    #[error("refused by {}: {}", .denial.rule, .denial.kind.reason())]
    Denied { denial: Denial, class: RouteClass },
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A connection on a listener that requires a client certificate whose
    /// certificate the listener no longer accepts (revoked, expired, its
    /// CA withdrawn or its CRL expired since the handshake).
    #[error("the connection's client certificate is no longer accepted")]
    ClientCertificate,
    /// The request names a host outside `server.hosts`.
    #[error("misdirected request")]
    Misdirected(#[from] HostRefusal),
    #[error("rate limit exceeded; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("request body over limits.max_public_body_bytes")]
    PayloadTooLarge,
    #[error("cannot read the request body")]
    BodyRead(#[source] BoxError),
    #[error("the client sent no request body bytes for {0:?}")]
    BodyTimeout(Duration),
    #[error("upstream unreachable")]
    UpstreamConnect(#[source] BoxError),
    #[error("upstream sent no response headers within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("upstream failed")]
    Upstream(#[source] BoxError),
    /// A `101` the gateway did not ask for: to a request that was not a
    /// WebSocket upgrade (any other `Upgrade` is dropped on the way), or
    /// switching to another protocol. Never made a tunnel.
    #[error("upstream switched protocols without a WebSocket upgrade to switch to")]
    UpstreamSwitched,
    /// A `206` of a type the rewriter rewrites, which it cannot (see
    /// `proxy::ranges`): never passed on.
    #[error("upstream sent a partial body of a rewritten type where a whole one was needed")]
    UpstreamPartial,
    /// A body of a rewritten type the rewriter cannot read (an unknown
    /// content coding, a `charset` that is not ASCII-compatible): passed
    /// on, it could carry the public origin.
    #[error("upstream body cannot be rewritten")]
    UpstreamUnreadable(#[source] crate::rewrite::Unreadable),
    /// The response body failed after its head had gone out (the upstream
    /// hung up mid-body, a compressed body did not decode): the client's
    /// connection or stream is cut, and this is only logged.
    #[error("response body cut off")]
    UpstreamBody(#[source] BoxError),
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Path(_)
            | RequestError::Forwarded(_)
            | RequestError::Malformed(_)
            | RequestError::BodyRead(_) => StatusCode::BAD_REQUEST,
            RequestError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            RequestError::ClientCertificate => StatusCode::FORBIDDEN,
            RequestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            RequestError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            RequestError::Denied { denial, .. } => match denial.kind {
                DenialKind::Network { .. } => StatusCode::FORBIDDEN,
                DenialKind::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
                DenialKind::MethodOverride => StatusCode::BAD_REQUEST,
                DenialKind::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
                DenialKind::Identity { .. }
                | DenialKind::SharingDisabled
                | DenialKind::CrossSite => StatusCode::FORBIDDEN,
                DenialKind::Revoked => StatusCode::NOT_FOUND,
            },
            RequestError::UpstreamConnect(_)
            | RequestError::Upstream(_)
            | RequestError::UpstreamSwitched
            | RequestError::UpstreamPartial
            | RequestError::UpstreamUnreadable(_)
            | RequestError::UpstreamBody(_) => StatusCode::BAD_GATEWAY,
            RequestError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The error and every cause under it, `: `-separated: the detail the
    /// log and `explain` give (each level's own message says only its own
    /// part, so nothing repeats).
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    }

    /// Stable snake_case code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Path(e) => e.reason(),
            RequestError::Forwarded(_) => "forwarded_header",
            RequestError::Denied { denial, .. } => denial.kind.reason(),
            RequestError::Malformed(_) => "malformed",
            RequestError::Misdirected(_) => "misdirected_host",
            RequestError::ClientCertificate => "client_certificate",
            RequestError::RateLimited { .. } => "rate_limited",
            RequestError::PayloadTooLarge => "payload_too_large",
            RequestError::BodyRead(_) => "body_read",
            RequestError::BodyTimeout(_) => "body_timeout",
            RequestError::UpstreamConnect(_) => "upstream_connect",
            RequestError::UpstreamTimeout(_) => "upstream_timeout",
            RequestError::Upstream(_) => "upstream_error",
            RequestError::UpstreamSwitched => "upstream_switched_protocols",
            RequestError::UpstreamPartial => "upstream_partial_content",
            RequestError::UpstreamUnreadable(_) => "upstream_unreadable_body",
            RequestError::UpstreamBody(_) => "upstream_body",
        }
    }

    /// What the client reads: short, standard, with no internal detail.
    fn detail(&self) -> &'static str {
        match self {
            RequestError::Path(_) => "Bad request: the path is ambiguous.",
            RequestError::Forwarded(_) => {
                "Bad request: the client address could not be determined."
            }
            RequestError::Malformed(_) | RequestError::BodyRead(_) => "Bad request.",
            RequestError::Misdirected(_) => {
                "Misdirected request: this gateway does not serve that host name."
            }
            RequestError::ClientCertificate => {
                "Your client certificate is no longer accepted: connect again with a valid one."
            }
            RequestError::RateLimited { .. } => "Too many requests: slow down and retry shortly.",
            RequestError::PayloadTooLarge => "Request body too large for a shared link.",
            RequestError::BodyTimeout(_) => "Request timeout: the request body stopped arriving.",
            RequestError::Denied { denial, class } => match (&denial.kind, class) {
                (DenialKind::Network { .. }, RouteClass::ShareManage) => {
                    "Share management is available only on the company network."
                }
                (DenialKind::Network { .. }, RouteClass::Other) => {
                    "Access from your network is not allowed."
                }
                (DenialKind::Network { .. }, _) => {
                    "This shared link opens only on the company network."
                }
                (DenialKind::Method { .. }, _) => "Method not allowed: shared links are view-only.",
                (DenialKind::MethodOverride, _) => {
                    "Bad request: method overrides are not accepted on shared links."
                }
                (DenialKind::Unauthenticated { .. }, _) => {
                    "Sign in to open this link: a valid company identity is required."
                }
                (DenialKind::Identity { .. }, _) => {
                    "Your account is not allowed to open this link."
                }
                (DenialKind::Revoked, _) => "This shared link has been revoked.",
                (DenialKind::CrossSite, _) => {
                    "Cross-site requests to shared links are refused: open the link itself."
                }
                (DenialKind::SharingDisabled, _) => {
                    "Creating new shared links is disabled on this gateway."
                }
            },
            RequestError::UpstreamConnect(_)
            | RequestError::Upstream(_)
            | RequestError::UpstreamSwitched
            | RequestError::UpstreamPartial
            | RequestError::UpstreamUnreadable(_)
            | RequestError::UpstreamBody(_) => "Bad gateway.",
            RequestError::UpstreamTimeout(_) => "Gateway timeout.",
        }
    }

    /// The one place an error becomes a response. `browser` selects the HTML
    /// page (for a navigation, `Accept: text/html`) over JSON; `accepted`
    /// says which credentials a `401`'s challenges name.
    pub fn to_response(&self, browser: bool, accepted: Accepted) -> Response<Body> {
        let status = self.status();
        let detail = self.detail();
        let (ctype, body) = if browser {
            // The network hint, where the network could be what is missing.
            let hint =
                status == StatusCode::FORBIDDEN && !matches!(self, RequestError::ClientCertificate);
            ("text/html; charset=utf-8", html_page(status, detail, hint))
        } else {
            (
                "application/json",
                serde_json::json!({ "detail": detail }).to_string(),
            )
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let RequestError::RateLimited { retry_after } = self {
            // RFC 9110 §10.2.3: whole seconds, rounded up so a client that
            // obeys it is not refused again.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            h.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let RequestError::Denied { denial, .. } = self {
            match &denial.kind {
                DenialKind::Method { allow } => {
                    let list: Vec<&str> = allow.iter().map(|m| m.as_str()).collect();
                    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                        h.insert(ALLOW, v);
                    }
                }
                DenialKind::Unauthenticated { reason } => {
                    for challenge in accepted.challenges(reason) {
                        h.append(WWW_AUTHENTICATE, challenge);
                    }
                }
                _ => {}
            }
        }
        resp
    }

    /// True for a refusal that a sign-in could turn into an answer.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            RequestError::Denied { denial, .. }
                if matches!(denial.kind, DenialKind::Unauthenticated { .. })
        )
    }
}

/// The credentials the gateway takes for a request, which a `401` names in
/// its `WWW-Authenticate` challenges (RFC 9110 §11.6.1: a `401` carries at
/// least one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    /// A JWT (`[identity.jwt]`): a bearer token.
    pub bearer: bool,
    /// A client certificate on the request's listener (`client_ca` with
    /// `client_cert` optional or required).
    pub client_cert: bool,
}

impl Accepted {
    /// The challenges for a `401` whose `reason` is `missing_credentials`
    /// (nothing presented) or why a token was refused.
    ///
    /// - A JWT: `Bearer realm="sharegate"` (RFC 6750 §3), with
    ///   `error="invalid_token"` when a token was presented and refused.
    /// - A client certificate: `ClientCertificate realm="sharegate"`. No
    ///   registered HTTP scheme stands for a TLS client certificate (the
    ///   IANA registry has none; `ClientCertificate` is the name an expired
    ///   2014 IETF draft proposed for exactly this, draft-thomson-httpbis-
    ///   catch). A `Bearer` challenge would invite a token this gateway
    ///   cannot take, and leaving the header out breaks RFC 9110 §11.6.1
    ///   (Kong's mtls-auth does: a bare `401`); nginx and Apache sidestep
    ///   the question with `400` (nginx's `496`) or `403`, but the status
    ///   stays `401` here because a credential, the certificate, is what
    ///   is missing. Clients skip a scheme they do not know, so a browser
    ///   shows the page's explanation instead of a password prompt, and a
    ///   script is not led to send a token.
    /// - Both (a JWT, and certificates on this listener): both challenges,
    ///   as two header lines, the token's first.
    ///
    /// With neither (certificates only on another listener, and no JWT)
    /// the certificate challenge is still the one that names what the
    /// gateway takes.
    pub fn challenges(self, reason: &str) -> impl Iterator<Item = HeaderValue> {
        let bearer = self.bearer.then(|| {
            HeaderValue::from_static(if reason == "missing_credentials" {
                "Bearer realm=\"sharegate\""
            } else {
                "Bearer realm=\"sharegate\", error=\"invalid_token\""
            })
        });
        let cert = (self.client_cert || !self.bearer)
            .then(|| HeaderValue::from_static("ClientCertificate realm=\"sharegate\""));
        bearer.into_iter().chain(cert)
    }
}

/// A redirect to the login page, carrying where to come back to. The
/// return target is only ever a local path: anything that a browser could
/// read as another origin (`//evil`, `/\\evil`, `https://evil`, control
/// characters) becomes `/`, so the login service can never be turned into
/// an open redirect by a crafted link.
pub fn login_redirect(login: &http::Uri, param: &str, return_to: &str) -> Response<Body> {
    let target = safe_return_path(return_to);
    let encoded = percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC);
    let sep = if login.query().is_some() { '&' } else { '?' };
    let location = format!("{login}{sep}{param}={encoded}");
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `path` when it is unambiguously a path on this origin, else `/`.
pub fn safe_return_path(path: &str) -> &str {
    let b = path.as_bytes();
    let local = b.first() == Some(&b'/')
        && !matches!(b.get(1), Some(b'/' | b'\\'))
        && !path.contains('\\')
        && !b.iter().any(|c| c.is_ascii_control() || *c == b' ');
    if local {
        path
    } else {
        "/"
    }
}

/// True when the client is a browser navigating (it prefers HTML).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn html_page(status: StatusCode, detail: &str, network_hint: bool) -> String {
    let title = status.canonical_reason().unwrap_or("Refused");
    let hint = if network_hint {
        "<p>Connect to the company network or VPN, then open the link again. If you think you should have access, contact your administrator.</p>"
    } else {
        ""
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}h1{{font-size:1.4rem}}</style></head>\
<body><h1>{detail}</h1>{hint}<p><small>{code} {title}</small></p></body></html>\n",
        code = status.as_u16(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn denied(kind: DenialKind, class: RouteClass) -> RequestError {
        RequestError::Denied {
            denial: Denial {
                kind,
                rule: "r".into(),
            },
            class,
        }
    }

    async fn body_text(resp: Response<Body>) -> String {
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn statuses_and_bodies() {
        let e = denied(
            DenialKind::Network {
                client: "127.0.0.2".parse().unwrap(),
            },
            RouteClass::SharePage,
        );
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let r = e.to_response(false, Accepted::default());
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            body_text(r).await,
            r#"{"detail":"This shared link opens only on the company network."}"#
        );
        let r = e.to_response(true, Accepted::default());
        let t = body_text(r).await;
        assert!(t.contains("opens only on the company network"), "{t}");
        assert!(t.contains("403 Forbidden"));

        let e = denied(
            DenialKind::Method {
                allow: vec![Method::GET, Method::HEAD],
            },
            RouteClass::PublicApi,
        );
        let r = e.to_response(false, Accepted::default());
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");

        assert_eq!(
            denied(DenialKind::MethodOverride, RouteClass::PublicApi).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            RequestError::UpstreamTimeout(Duration::from_secs(1)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        let e = RequestError::from(HostRefusal::NotListed("attacker.example".to_owned()));
        assert_eq!(e.status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(e.reason(), "misdirected_host");
        // The log's detail names each cause once.
        assert_eq!(
            e.chain(),
            "misdirected request: the host \"attacker.example\" is not in server.hosts"
        );
        assert_eq!(
            body_text(e.to_response(false, Accepted::default())).await,
            r#"{"detail":"Misdirected request: this gateway does not serve that host name."}"#
        );
        // A client certificate no longer accepted: no network hint, which
        // would send its holder after the wrong cause.
        let e = RequestError::ClientCertificate;
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.reason(), "client_certificate");
        let t = body_text(e.to_response(true, Accepted::default())).await;
        assert!(
            t.contains("client certificate is no longer accepted"),
            "{t}"
        );
        assert!(!t.contains("company network"), "{t}");
        let e = RequestError::UpstreamConnect("connection refused 10.1.2.3:80".into());
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let t = body_text(e.to_response(false, Accepted::default())).await;
        assert!(!t.contains("10.1.2.3"), "no internal detail: {t}");
    }

    #[test]
    fn a_401_challenges_for_what_the_gateway_takes() {
        let lines = |bearer, client_cert, reason| {
            let e = denied(
                DenialKind::Unauthenticated { reason },
                RouteClass::SharePage,
            );
            let r = e.to_response(
                false,
                Accepted {
                    bearer,
                    client_cert,
                },
            );
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            r.headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let bearer = "Bearer realm=\"sharegate\"";
        let refused = "Bearer realm=\"sharegate\", error=\"invalid_token\"";
        let cert = "ClientCertificate realm=\"sharegate\"";
        assert_eq!(lines(true, false, "missing_credentials"), [bearer]);
        assert_eq!(lines(true, false, "expired"), [refused]);
        assert_eq!(lines(false, true, "missing_credentials"), [cert]);
        assert_eq!(lines(true, true, "missing_credentials"), [bearer, cert]);
        assert_eq!(lines(true, true, "bad_signature"), [refused, cert]);
        // Certificates on another listener only: still the one challenge
        // that names what the gateway takes (a 401 always carries one).
        assert_eq!(lines(false, false, "missing_credentials"), [cert]);
        // Other refusals carry none.
        let e = denied(
            DenialKind::Network {
                client: "192.0.2.7".parse().unwrap(),
            },
            RouteClass::SharePage,
        );
        let r = e.to_response(
            false,
            Accepted {
                bearer: true,
                client_cert: true,
            },
        );
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn login_return_path_cannot_leave_the_origin() {
        for evil in [
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "evil.example",
            "/\tevil",
            "/ok\\..\\x",
            "",
        ] {
            assert_eq!(safe_return_path(evil), "/", "{evil:?}");
        }
        assert_eq!(safe_return_path("/public/t/r?x=1"), "/public/t/r?x=1");
        let login: http::Uri = "https://sso.example.com/login?app=ls".parse().unwrap();
        let r = login_redirect(&login, "rd", "//evil.example");
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(
            r.headers()[LOCATION],
            "https://sso.example.com/login?app=ls&rd=%2F"
        );
        let r = login_redirect(&login, "rd", "/public/t/r");
        assert_eq!(
            r.headers()[LOCATION],
            "https://sso.example.com/login?app=ls&rd=%2Fpublic%2Ft%2Fr"
        );
    }

    #[test]
    fn browser_detection() {
        let mut h = HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(wants_html(&h));
    }
}
