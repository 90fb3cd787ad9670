//! `sharegate explain`: what would the gateway do with this request, and
//! why.
//!
//! Runs the server's own stages (route classification, client-IP
//! resolution, identity, `policy::authorize_traced`, the upstream header
//! preparation and the error-to-status mapping) on a request described on
//! the command line, offline: nothing is sent anywhere. A batch file holds
//! one request per line, written as the same arguments, optionally with
//! `--expect STATUS`: the policy regression test a network admin keeps in
//! git. The rate limit is stateful and is not evaluated here.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Serialize;

use crate::cli::emit;
use crate::config::Config;
use crate::error::{wants_html, RequestError};
use crate::identity::IdentityOutcome;
use crate::policy::hosts::HostRefusal;
use crate::policy::{self, network, Check};
use crate::proxy::{self, Conn, Gateway};
use crate::route::RouteClass;

/// One request to explain.
#[derive(Debug, Clone, Parser)]
#[command(no_binary_name = true)]
pub struct RequestArgs {
    /// The client's address (default 127.0.0.1). With --peer, the address a
    /// trusted proxy reports in X-Forwarded-For.
    #[arg(long, value_name = "IP")]
    pub from: Option<IpAddr>,
    /// The TCP peer, when it is not the client (a load balancer or proxy).
    #[arg(long, value_name = "IP")]
    pub peer: Option<IpAddr>,
    /// A request header, "Name: value"; repeatable.
    #[arg(long = "header", short = 'H', value_name = "'K: V'")]
    pub headers: Vec<String>,
    /// A cookie, "name=value"; repeatable.
    #[arg(long = "cookie", value_name = "NAME=VALUE")]
    pub cookies: Vec<String>,
    /// The status the request must get (batch files: a failed expectation
    /// makes the run exit 1).
    #[arg(long, value_name = "STATUS")]
    pub expect: Option<u16>,
    /// The method, e.g. GET.
    pub method: String,
    /// The URL (https://host/path?query) or just the path.
    pub url: String,
}

/// What explain found, as printed (text) or serialized (`--format json`).
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub method: String,
    pub url: String,
    pub peer: IpAddr,
    pub client_ip: Option<IpAddr>,
    pub client_ip_source: String,
    pub route_class: Option<&'static str>,
    pub route_rule: Option<String>,
    pub canonical_path: Option<String>,
    pub share_tokens: Vec<String>,
    pub checks: Vec<Check>,
    pub decision: &'static str,
    pub rule: String,
    pub reason: String,
    pub status: u16,
    pub status_note: String,
    pub upstream: Option<UpstreamPreview>,
    pub expect: Option<u16>,
    pub expectation_met: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamPreview {
    pub method: String,
    pub url: String,
    pub removed_headers: Vec<String>,
    pub set_headers: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Args(String),
}

/// Evaluates one request against `gw`.
pub async fn explain(gw: &Gateway, args: &RequestArgs) -> Result<Explanation, ExplainError> {
    let cfg = &gw.config;
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| ExplainError::Args(format!("{:?} is not an HTTP method", args.method)))?;
    let (scheme_tls, authority, target) = split_url(&args.url)?;
    // The scheme a request arrives in is the listener's: an `https` URL
    // behind a TLS-terminating balancer reaches a plain listener as plain
    // HTTP (default port 80, `X-Forwarded-Proto: http`). The first listener
    // that speaks the URL's scheme is taken, else the first one.
    let listener = scheme_tls
        .and_then(|want| cfg.listeners.iter().position(|l| l.tls.is_some() == want))
        .unwrap_or(0);
    let tls = cfg.listeners.get(listener).is_some_and(|l| l.tls.is_some());
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| ExplainError::Args(format!("header {h:?} is not \"Name: value\"")))?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| ExplainError::Args(format!("{k:?} is not a header name")))?;
        let value = HeaderValue::from_str(v.trim()).map_err(|_| {
            ExplainError::Args(format!("the value of {k:?} is not a valid header value"))
        })?;
        headers.append(name, value);
    }
    if !args.cookies.is_empty() {
        let joined = args.cookies.join("; ");
        let v = HeaderValue::from_str(&joined).map_err(|_| {
            ExplainError::Args(format!("cookies {joined:?} are not a valid header value"))
        })?;
        headers.insert(http::header::COOKIE, v);
    }
    if let Some(a) = &authority {
        if !headers.contains_key(http::header::HOST) {
            if let Ok(v) = HeaderValue::from_str(a) {
                headers.insert(http::header::HOST, v);
            }
        }
    }
    let from = args.from.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let peer = args.peer.unwrap_or(from);
    if args.peer.is_some() && args.from.is_some() && !headers.contains_key("x-forwarded-for") {
        if let Ok(v) = HeaderValue::from_str(&from.to_string()) {
            headers.insert("x-forwarded-for", v);
        }
    }
    let conn = Conn {
        peer: SocketAddr::new(peer, 40000),
        tcp_peer: SocketAddr::new(peer, 40000),
        tls,
        client_cert: None,
        listener,
    };
    let mut ex = Explanation {
        method: method.to_string(),
        url: args.url.clone(),
        peer,
        client_ip: None,
        client_ip_source: String::new(),
        route_class: None,
        route_rule: None,
        canonical_path: None,
        share_tokens: Vec::new(),
        checks: Vec::new(),
        decision: "refused",
        rule: String::new(),
        reason: String::new(),
        status: 0,
        status_note: String::new(),
        upstream: None,
        expect: args.expect,
        expectation_met: None,
    };
    let browser = wants_html(&headers);
    let Some(target) = target else {
        // hyper answers this itself; the gateway never sees the request.
        ex.checks.push(Check {
            check: "request_target",
            outcome: "fail",
            detail: "not a request target HTTP can carry (a byte a URI cannot hold); the HTTP parser answers 400 before any check".to_owned(),
        });
        ex.reason = "request_target".to_owned();
        ex.status = StatusCode::BAD_REQUEST.as_u16();
        ex.status_note = "refused by the HTTP parser".to_owned();
        ex.expectation_met = args.expect.map(|want| want == ex.status);
        return Ok(ex);
    };
    let result = evaluate(
        gw,
        &conn,
        &method,
        &target,
        &headers,
        authority.as_deref(),
        &mut ex,
    )
    .await;
    match result {
        Ok(()) => {
            ex.decision = "allowed";
            ex.status_note = "forwarded: the client gets the upstream's answer".to_owned();
        }
        Err(e) => {
            let login = cfg
                .identity
                .login_url
                .as_ref()
                .filter(|_| browser && method == Method::GET && e.is_unauthenticated());
            ex.reason = e.reason().to_owned();
            if let Some(login) = login {
                ex.status = StatusCode::FOUND.as_u16();
                ex.status_note = format!("redirected to the login page {login}");
            } else {
                ex.status = e.status().as_u16();
                ex.status_note = format!("refused: {}", e.chain());
            }
        }
    }
    ex.expectation_met = args.expect.map(|want| {
        if ex.decision == "allowed" {
            // Allowed requests get whatever the upstream answers; an
            // expectation of 2xx/3xx means "forwarded".
            want < 400
        } else {
            want == ex.status
        }
    });
    Ok(ex)
}

async fn evaluate(
    gw: &Gateway,
    conn: &Conn,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    authority: Option<&str>,
    ex: &mut Explanation,
) -> Result<(), RequestError> {
    let cfg = &gw.config;
    if let Err((what, why)) = crate::proxy::check_method(method) {
        ex.checks.push(Check {
            check: "method_syntax",
            outcome: "fail",
            detail: why.to_owned(),
        });
        return Err(RequestError::Malformed(what));
    }
    let named = authority.and_then(|a| a.parse::<http::uri::Authority>().ok());
    match cfg.policy.hosts.check(named.as_ref(), headers, conn.tls) {
        Ok(()) => ex.checks.push(Check {
            check: "host",
            outcome: "pass",
            detail: if cfg.policy.hosts.is_any() {
                "any host is served (server.hosts is empty)".to_owned()
            } else {
                "in server.hosts".to_owned()
            },
        }),
        // A bare path names no host, but a real request always does
        // (HTTP/1.1 `Host`, HTTP/2 `:authority`): not a refusal here.
        Err(HostRefusal::Missing) => ex.checks.push(Check {
            check: "host",
            outcome: "skip",
            detail: "no host given; a full URL or -H 'Host: NAME' checks it against server.hosts"
                .to_owned(),
        }),
        Err(e) => {
            ex.checks.push(Check {
                check: "host",
                outcome: "fail",
                detail: e.to_string(),
            });
            ex.rule = crate::policy::hosts::RULE.to_owned();
            return Err(e.into());
        }
    }
    let route = match cfg.routes.classify(method, target) {
        Ok(r) => r,
        Err(e) => {
            ex.checks.push(Check {
                check: "path",
                outcome: "fail",
                detail: format!("{e}"),
            });
            return Err(e.into());
        }
    };
    ex.checks.push(Check {
        check: "path",
        outcome: "pass",
        detail: "unambiguous".to_owned(),
    });
    ex.route_class = Some(match route.class {
        RouteClass::Custom(i) => cfg.policy.routes.get(i).map_or("custom", |_| "custom"),
        c => c.name(),
    });
    ex.route_rule = Some(if route.rule.is_empty() {
        "(every other path)".to_owned()
    } else {
        route.rule.clone()
    });
    ex.canonical_path = Some(route.path.clone());
    ex.share_tokens = route.tokens.clone();

    let trusted = cfg.policy.trusted_proxies.contains(conn.peer.ip());
    let client = network::client_ip(
        conn.peer.ip(),
        headers,
        &cfg.policy.trusted_proxies,
        cfg.policy.forwarded_header,
    )?;
    ex.client_ip = Some(client);
    ex.client_ip_source = if trusted {
        format!(
            "the peer {} is a trusted proxy: its forwarding headers are walked right to left",
            conn.peer.ip()
        )
    } else if headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded") {
        format!(
            "the TCP peer; forwarding headers ignored ({} is not in client_ip.trusted_proxies)",
            conn.peer.ip()
        )
    } else {
        "the TCP peer".to_owned()
    };

    let (_, require, _) = cfg.policy.access(route.class);
    let identity = if require.needs_identity() {
        if cfg.identity.jwt.is_some() && gw.jwt.is_none() {
            IdentityOutcome::Invalid {
                reason: "keys_not_available_offline",
            }
        } else {
            proxy::identify(gw.jwt.as_ref(), &cfg.identity.claims, None, headers).await
        }
    } else {
        IdentityOutcome::Absent
    };
    let grant = policy::authorize_traced(
        &cfg.policy,
        &route,
        method,
        headers,
        client,
        &identity,
        Some(&mut ex.checks),
    )
    .map_err(|denial| {
        ex.rule.clone_from(&denial.rule);
        RequestError::Denied {
            denial,
            class: route.class,
        }
    })?;
    ex.rule = format!("{} (decided by {})", grant.rule, grant.decided_by);
    ex.checks.push(Check {
        check: "rate_limit",
        outcome: "skip",
        detail: "stateful; not evaluated offline".to_owned(),
    });

    let verified = match &identity {
        IdentityOutcome::Verified(id) => Some(&**id),
        _ => None,
    };
    let out = proxy::upstream_headers(
        gw,
        conn,
        client,
        headers.clone(),
        authority,
        false,
        verified,
    );
    let removed: Vec<String> = headers
        .keys()
        .filter(|k| !out.contains_key(*k))
        .map(|k| k.as_str().to_owned())
        .collect();
    let set: Vec<(String, String)> = out
        .iter()
        .filter(|(k, v)| !headers.get_all(*k).iter().any(|old| old == *v))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or("(binary)").to_owned(),
            )
        })
        .collect();
    ex.upstream = Some(UpstreamPreview {
        method: method.to_string(),
        url: proxy::upstream_uri(gw, &route)?.to_string(),
        removed_headers: removed,
        set_headers: set,
    });
    Ok(())
}

/// The URL's scheme (`Some(true)` for https, `None` for a bare path), its
/// authority, and the request target as the server's HTTP parser hands it
/// on: the same `http::Uri` reading, so a fragment is dropped as it is for
/// a real request; `None` when that parser refuses the target (a byte a
/// URI cannot hold), which the server answers with 400 before any check.
type SplitUrl = (Option<bool>, Option<String>, Option<String>);

fn split_url(url: &str) -> Result<SplitUrl, ExplainError> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let scheme = if url.starts_with('/') {
        None
    } else if lower.starts_with("https://") {
        Some(true)
    } else if lower.starts_with("http://") {
        Some(false)
    } else {
        return Err(ExplainError::Args(format!(
            "{url:?}: use an http(s) URL or a path starting with /"
        )));
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Ok((scheme, None, None));
    };
    let target = match (uri.scheme(), uri.path_and_query()) {
        (_, Some(pq)) => pq.as_str(),
        _ => "/",
    };
    Ok((
        scheme,
        uri.authority().map(|a| a.as_str().to_owned()),
        Some(target.to_owned()),
    ))
}

/// The human-readable report of one request.
pub fn render(ex: &Explanation) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "request     {} {}", ex.method, ex.url);
    let client = ex
        .client_ip
        .map_or("(undetermined)".to_owned(), |c| c.to_string());
    let _ = writeln!(
        o,
        "client ip   {client}  ({})",
        if ex.client_ip_source.is_empty() {
            "-"
        } else {
            &ex.client_ip_source
        }
    );
    if let (Some(class), Some(rule), Some(path)) =
        (ex.route_class, &ex.route_rule, &ex.canonical_path)
    {
        let _ = writeln!(o, "route       {class}  matched {rule}");
        let _ = writeln!(o, "canonical   {path}");
    }
    if !ex.share_tokens.is_empty() {
        let hashes: Vec<String> = ex
            .share_tokens
            .iter()
            .map(|t| crate::telemetry::token_hash(t))
            .collect();
        let _ = writeln!(
            o,
            "share token {} (logged as {})",
            ex.share_tokens.join(", "),
            hashes.join(", ")
        );
    }
    let _ = writeln!(o, "checks");
    for (i, c) in ex.checks.iter().enumerate() {
        let _ = writeln!(
            o,
            " {:>2}. {:<16} {:<5} {}",
            i + 1,
            c.check,
            c.outcome,
            c.detail
        );
    }
    let _ = writeln!(o, "decision    {}  {}", ex.decision, ex.rule);
    if ex.decision == "allowed" {
        let _ = writeln!(o, "status      {}", ex.status_note);
    } else {
        let _ = writeln!(o, "status      {}  {}", ex.status, ex.status_note);
    }
    if let Some(up) = &ex.upstream {
        let _ = writeln!(o, "upstream    {} {}", up.method, up.url);
        for r in &up.removed_headers {
            let _ = writeln!(o, "  - {r}");
        }
        for (k, v) in &up.set_headers {
            let _ = writeln!(o, "  + {k}: {v}");
        }
    }
    if let Some(met) = ex.expectation_met {
        let _ = writeln!(
            o,
            "expect      {} {}",
            ex.expect.unwrap_or(0),
            if met { "ok" } else { "FAILED" }
        );
    }
    o
}

/// One table row per request, for batch files.
pub fn render_table(rows: &[Explanation]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<7} {:<52} {:<16} {:<17} {:<7} {:<9} {:<8} RULE",
        "METHOD", "URL", "CLIENT", "CLASS", "STATUS", "DECISION", "EXPECT"
    );
    for ex in rows {
        let status = if ex.decision == "allowed" {
            "fwd".to_owned()
        } else {
            ex.status.to_string()
        };
        let expect = match (ex.expect, ex.expectation_met) {
            (Some(e), Some(true)) => format!("{e} ok"),
            (Some(e), _) => format!("{e} FAIL"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            o,
            "{:<7} {:<52} {:<16} {:<17} {:<7} {:<9} {:<8} {}",
            ex.method,
            ex.url,
            ex.client_ip.map_or("-".to_owned(), |c| c.to_string()),
            ex.route_class.unwrap_or("-"),
            status,
            ex.decision,
            expect,
            if ex.rule.is_empty() {
                &ex.reason
            } else {
                &ex.rule
            }
        );
    }
    o
}

/// Parses a batch file: one request per line in the same argument syntax
/// as the command line (shell-style quoting); `#` starts a comment. A byte
/// order mark (editors on Windows write one) is not part of the first
/// line. Each request comes with its line number.
pub fn parse_batch(text: &str) -> Result<Vec<(usize, RequestArgs)>, ExplainError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words = shlex::split(line)
            .ok_or_else(|| ExplainError::Args(format!("line {}: unbalanced quotes", n + 1)))?;
        let args = RequestArgs::try_parse_from(words)
            .map_err(|e| ExplainError::Args(format!("line {}: {}", n + 1, clap_problem(&e))))?;
        out.push((n + 1, args));
    }
    Ok(out)
}

/// clap's message on one line, without its usage hint (which names the
/// command line, not the batch file): "error: the following required
/// arguments were not provided: <METHOD> <URL>".
fn clap_problem(e: &clap::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `explain` command.
pub async fn run(
    config: &std::path::Path,
    request: Option<RequestArgs>,
    batch: Option<PathBuf>,
    json: bool,
) -> Result<bool, String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let gw = Gateway::offline(cfg).await.map_err(|e| e.to_string())?;
    // One request on the command line gets the full report; a batch file
    // a table (a JSON array), however many lines it has.
    let single = request.is_some();
    let requests = match (request, batch) {
        (Some(r), None) => vec![(None, r)],
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            parse_batch(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .into_iter()
                .map(|(line, r)| (Some((path.display().to_string(), line)), r))
                .collect()
        }
        _ => return Err("give either METHOD URL or --batch FILE".to_owned()),
    };
    let mut results = Vec::new();
    for (at, r) in &requests {
        results.push(explain(&gw, r).await.map_err(|e| match at {
            Some((file, line)) => format!("{file}: line {line}: {e}"),
            None => e.to_string(),
        })?);
    }
    let all_met = results.iter().all(|r| r.expectation_met != Some(false));
    if json {
        let v = if single {
            serde_json::to_string_pretty(&results[0])
        } else {
            serde_json::to_string_pretty(&results)
        };
        emit(&format!("{}\n", v.map_err(|e| e.to_string())?));
    } else if single {
        emit(&render(&results[0]));
    } else {
        emit(&render_table(&results));
    }
    Ok(all_met)
}
