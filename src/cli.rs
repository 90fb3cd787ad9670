//! The command line: `run`, `check`, `explain`, `certs`, `demo` and
//! `probe`, and the exit codes.
//!
//! Exit status: 0 success (for `run`: stopped by SIGTERM or SIGINT, the
//! drain finished or its grace period ran out); 1 an `explain --batch`
//! expectation failed, or `probe` got no 2xx answer; 64 a config or
//! command-line problem (`EX_USAGE`); 69 a runtime failure such as an
//! address already in use or an unreadable certificate (`EX_UNAVAILABLE`);
//! 130 or 143 (`128 +` SIGINT's or SIGTERM's number) when a second signal
//! cut `run`'s drain short.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use http::Method;

use crate::config::{Config, ConfigError, LogFormat};
use crate::proxy::Gateway;
use crate::route::RouteClass;
use crate::state::{self, State};
use crate::telemetry::metrics::Metrics;
use crate::{demo, server, telemetry};

pub const EXIT_CONFIG: u8 = 64;
pub const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "sharegate",
    version,
    about = "Keeps token-in-path share links inside the network and view-only",
    long_about = "A reverse-proxy gateway for self-hosted LangSmith (or any app with token-in-path share links): share routes answer only clients inside configured networks, shares stay view-only, and refusals are clear.\n\nStart with `sharegate demo`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Log format; overrides `log.format`.
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Validate a config and print the effective route and policy table.
    Check {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show what the gateway would do with a request, and why (offline).
    Explain {
        /// The TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// A file of requests, one per line, in the same argument syntax
        /// (e.g. `--from 10.1.2.3 --expect 403 GET /public/t/r`).
        #[arg(long, value_name = "FILE", conflicts_with = "request")]
        batch: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
        /// [--from IP] [--peer IP] [--header 'K: V']... [--cookie N=V]... [--expect STATUS] METHOD URL
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "REQUEST"
        )]
        request: Vec<String>,
    },
    /// Create a development CA, a server certificate and mTLS client
    /// certificates (for trials and tests; use your PKI in production).
    Certs(crate::certs::CertsArgs),
    /// Ask a running gateway's admin listener whether it is up: exit 0 on a
    /// 2xx answer, 1 otherwise (for container health checks without curl).
    Probe {
        /// The URL to ask (plain HTTP, a loopback or local address).
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: http::Uri,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Run a built-in stand-in LangSmith and the gateway in front of it, and
    /// print a tour of curl commands. Runs until Ctrl-C.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config, log_format } => run(&config, log_format.as_deref()),
        Command::Explain {
            config,
            batch,
            format,
            request,
        } => explain(&config, batch, &format, request),
        Command::Certs(args) => match crate::certs::run(&args) {
            Ok(files) => {
                let mut text = String::new();
                for f in files {
                    let _ = writeln!(text, "wrote {}", f.display());
                }
                text.push_str(&crate::certs::next_steps(&args));
                emit(&text);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sharegate certs: {e}");
                let usage = !matches!(
                    e,
                    crate::certs::CertsError::CreateDir { .. }
                        | crate::certs::CertsError::Write { .. }
                );
                ExitCode::from(if usage { EXIT_CONFIG } else { EXIT_UNAVAILABLE })
            }
        },
        Command::Probe { url, timeout } => probe(&url, timeout),
        Command::Demo { listen } => runtime().map_or_else(
            |code| code,
            |rt| match rt.block_on(demo::run(listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sharegate demo: {e}");
                    ExitCode::from(EXIT_UNAVAILABLE)
                }
            },
        ),
    }
}

/// clap's answer to a command line it could not take: help and version go
/// to stdout with 0; anything else is an argument problem, 64 (clap's own
/// exit status for it would be 2, which no caller expects of this binary).
fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

/// `sharegate probe`: one GET, status 2xx or not.
fn probe(url: &http::Uri, timeout: std::time::Duration) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sharegate probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(async { tokio::time::timeout(timeout, probe_once(url)).await }) {
        Ok(Ok(status)) if status.is_success() => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("sharegate probe: {url} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("sharegate probe: {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("sharegate probe: {url}: no answer within {timeout:?}");
            ExitCode::FAILURE
        }
    }
}

async fn probe_once(url: &http::Uri) -> Result<http::StatusCode, String> {
    if url.scheme_str() != Some("http") {
        return Err("only http:// URLs (the admin listener speaks plain HTTP)".into());
    }
    let host = url.host().ok_or("the URL names no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map_or(host, |a| a.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "sharegate-probe")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(resp.status())
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    runtime_with(worker_count(0))
}

/// How many threads serve traffic for `server.workers`: the setting when
/// it is above 0, else `TOKIO_WORKER_THREADS` (which tokio itself honours),
/// else the CPUs this process may use (a container's CPU limit counts).
fn worker_count(workers: usize) -> usize {
    if workers > 0 {
        return workers;
    }
    let from_env = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    from_env
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// The runtime for `n` threads (from [`worker_count`]). One thread gets
/// tokio's single-threaded scheduler: every task, the accept loops among
/// them, then runs on the thread that started it, with none of the
/// work-stealing scheduler's cross-thread bookkeeping (about 12% less CPU
/// per proxied request than its one-worker form, measured in the load
/// benchmark).
fn runtime_with(n: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut b = if n == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(n);
        b
    };
    b.enable_all().build().map_err(|e| {
        eprintln!("sharegate: cannot start the runtime: {e}");
        ExitCode::from(EXIT_UNAVAILABLE)
    })
}

fn explain(
    config: &std::path::Path,
    batch: Option<PathBuf>,
    format: &str,
    request: Vec<String>,
) -> ExitCode {
    let request = if request.is_empty() {
        None
    } else {
        match <crate::explain::RequestArgs as Parser>::try_parse_from(&request) {
            Ok(r) => Some(r),
            Err(e) => {
                eprint!("sharegate explain: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::explain::run(
        config,
        request,
        batch,
        format == "json",
    )) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sharegate explain: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn config_failed(e: &ConfigError) -> ExitCode {
    eprint!("sharegate: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            // Warnings go to stderr, as problems do: the table on stdout
            // stays the same for scripts that read it, and the exit
            // status stays 0 (the config is valid).
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            emit(&format!("{}\n{}: OK\n", policy_table(&cfg), path.display()));
            ExitCode::SUCCESS
        }
        Err(e) => config_failed(&e),
    }
}

fn run(path: &std::path::Path, log_format: Option<&str>) -> ExitCode {
    let mut cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_failed(&e),
    };
    if let Some(f) = log_format {
        cfg.log.format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    telemetry::init(&cfg.log);
    let workers = worker_count(cfg.workers);
    let rt = match runtime_with(workers) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let scheduler = match rt.handle().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "single-threaded",
        _ => "multi-threaded",
    };
    tracing::info!(workers, scheduler, "runtime started");
    let served = rt.block_on(serve(cfg, Some(path.to_path_buf())));
    telemetry::output::flush();
    match served {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(second)) => ExitCode::from(second.exit_status()),
        Err(e) => {
            tracing::error!("{e}");
            telemetry::output::flush();
            eprintln!("sharegate: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// Why the gateway could not start once its config was valid.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Build(#[from] crate::proxy::BuildError),
}

/// Binds every configured address, builds the gateway, and serves until
/// SIGINT or SIGTERM, reloading on SIGHUP and on file changes. A second
/// SIGINT or SIGTERM during the drain closes what is left at once and is
/// returned: the caller exits with `128 +` its number.
pub async fn serve(cfg: Config, path: Option<PathBuf>) -> Result<Option<StopSignal>, StartError> {
    let mut signals = Signals::install();
    let hangup = state::Hangup::install();
    // The first signal starts the drain, the second cuts it short. Counted
    // from here on, so that one sent while the gateway is still starting
    // counts too.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel::<StopSignal>();
    let counting = tokio::spawn(async move {
        signals.next().await;
        let _ = first_tx.send(());
        let _ = second_tx.send(signals.next().await);
    });
    let listeners = server::bind(&cfg)
        .await
        .map_err(|(addr, source)| StartError::Bind { addr, source })?;
    for (l, c) in listeners.traffic.iter().zip(&cfg.listeners) {
        if let Ok(a) = l.local_addr() {
            let scheme = if c.tls.is_some() { "https" } else { "http" };
            tracing::info!(address = %a, %scheme, upstream = %cfg.upstream.url, "listening");
        }
    }
    for l in &listeners.redirect {
        if let Ok(a) = l.local_addr() {
            tracing::info!(address = %a, "redirecting plain HTTP to HTTPS");
        }
    }
    if let Some(a) = listeners.admin.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!(address = %a, "admin endpoint: /healthz /readyz /metrics");
    }
    if cfg.policy.hosts.is_any() {
        let private = cfg.rewrite.as_ref().map(|rw| rw.rules.to.host.clone());
        tracing::warn!(
            suggestion = private.map(|h| format!("hosts = [{h:?}]")),
            "server.hosts is empty: a request naming any host is served, so a page on another domain whose name is re-pointed at this address (DNS rebinding) can read shares through a browser inside the network; list the names clients use"
        );
    }
    for w in &cfg.warnings {
        tracing::warn!(key = %w.key, "{}", w.message);
    }
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::build(cfg, metrics.clone()).await?;
    let state = Arc::new(State::new(gateway, metrics.clone(), path));
    let watcher = tokio::spawn(state::watch_with(state.clone(), hangup));
    let shutdown = async {
        let _ = first_rx.await;
    };
    let cut = async move {
        let Ok(signal) = second_rx.await else {
            return std::future::pending().await;
        };
        tracing::warn!(
            signal = signal.name(),
            open_connections = metrics.active_connections.get(),
            exit_status = signal.exit_status(),
            "second signal: drain cut short; closing the remaining connections now"
        );
        signal
    };
    let cut = server::run_or_cut(listeners, state, shutdown, cut).await;
    watcher.abort();
    counting.abort();
    Ok(cut)
}

/// A signal that stops the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The exit status after a second one cut the drain short: `128 +` the
    /// signal's number, what a shell reports for a process the signal
    /// ended (130, 143), so a script or service manager sees that the
    /// stop was forced, not the clean 0 of a finished drain.
    pub fn exit_status(self) -> u8 {
        match self {
            StopSignal::Interrupt => 128 + 2,
            StopSignal::Terminate => 128 + 15,
        }
    }
}

/// SIGINT and SIGTERM, one at a time. The handlers are installed by
/// [`Signals::install`], so a signal that arrives before the first
/// [`Signals::next`] is kept, not lost (nor left to the default action,
/// which would end the process at once). Install it inside the runtime.
pub struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGINT or SIGTERM. Several of one kind that arrive before
    /// this is awaited count as one.
    pub async fn next(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            async fn wait(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = wait(&mut self.int) => StopSignal::Interrupt,
                () = wait(&mut self.term) => StopSignal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            StopSignal::Interrupt
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed
/// when this is called, not when the future is first polled, so a signal
/// that arrives while the gateway is still starting (binding, fetching JWT
/// keys) is not lost and still means a clean exit. Call it inside the
/// runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut signals = Signals::install();
    async move {
        signals.next().await;
    }
}

/// Writes to stdout, ignoring a closed pipe (`sharegate check | head`)
/// instead of panicking as `print!` would.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The effective route and policy table, as `check` prints it.
pub fn policy_table(cfg: &Config) -> String {
    let mut out = String::new();
    let p = &cfg.policy;
    let now = std::time::SystemTime::now();
    for l in &cfg.listeners {
        let scheme = if l.tls.is_some() { "https" } else { "http" };
        let mut notes = Vec::new();
        let mut crl_lines = Vec::new();
        if let Some(t) = &l.tls {
            match t.client_cert {
                crate::config::ClientCertMode::Off => {}
                crate::config::ClientCertMode::Optional => {
                    notes.push("client certificate optional")
                }
                crate::config::ClientCertMode::Required => {
                    notes.push("client certificate required")
                }
            }
            if t.client_cert != crate::config::ClientCertMode::Off {
                notes.push(if t.client_crl.is_empty() {
                    "no client_crl: a certificate is an identity until it expires"
                } else {
                    "revocation checked against client_crl, failing closed: a certificate no CRL speaks for, or whose CRL is past its next update, is refused"
                });
            }
            for c in &t.client_crl {
                let whose = if c.issued_by_client_ca {
                    String::new()
                } else {
                    " (an intermediate CA's: its signature is checked at the handshake, against the intermediate the client sends)".to_owned()
                };
                let state = if c.expired_at(now) {
                    format!(
                        "EXPIRED at {}: every certificate it speaks for is refused until a newer CRL is loaded",
                        humantime::format_rfc3339_seconds(c.next_update)
                    )
                } else {
                    format!(
                        "next update {} (after that, refused until a newer CRL is loaded)",
                        humantime::format_rfc3339_seconds(c.next_update)
                    )
                };
                crl_lines.push(format!(
                    "client crl  {}: {}{whose}, {} revoked, {state}",
                    c.path.display(),
                    c.issuer,
                    c.revoked,
                ));
            }
        }
        if !l.proxy_protocol.from.is_empty() {
            notes.push(if l.proxy_protocol.optional {
                "PROXY protocol optional from its proxies"
            } else {
                "PROXY protocol required from its proxies"
            });
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        let _ = writeln!(out, "listen      {scheme}://{}{notes}", l.addr);
        for line in crl_lines {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = writeln!(
        out,
        "upstream    {} (connect timeout {}, response timeout {})",
        cfg.upstream.url,
        humantime::format_duration(cfg.upstream.connect_timeout),
        humantime::format_duration(cfg.upstream.response_timeout)
    );
    let trusted = if p.trusted_proxies.is_empty() {
        "the TCP peer (no trusted proxies)".to_owned()
    } else {
        let nets: Vec<String> = p
            .trusted_proxies
            .nets()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let header = p.forwarded_header.name();
        format!(
            "rightmost untrusted {header} entry when the peer is in {} (client_ip.header); without that header, the proxy itself",
            nets.join(", ")
        )
    };
    let hosts = if p.hosts.is_any() {
        "any (server.hosts is empty: a request naming any host is served, DNS rebinding included)"
            .to_owned()
    } else {
        format!("{} (any other: 421)", p.hosts.describe().join(", "))
    };
    let _ = writeln!(out, "hosts       {hosts}");
    let _ = writeln!(out, "client ip   {trusted}");
    let cross_site = match (p.cross_site_navigate_only, p.hosts.is_any()) {
        (false, _) => "allowed (share.cross_site = \"allow\")",
        (true, false) => "a browser's cross-site request (Sec-Fetch-Site cross-site, or same-site with an Origin outside server.hosts; without it, an Origin outside server.hosts) to a share or management route: refused (403) unless it opens a page",
        (true, true) => "a browser's cross-site request (Sec-Fetch-Site) to a share or management route: refused (403) unless it opens a page; Origin not compared (server.hosts empty)",
    };
    let _ = writeln!(out, "cross site  {cross_site}");
    let sh = &cfg.share_headers;
    let mut set_on_share = Vec::new();
    if let Some(rp) = sh.referrer_policy.as_ref().and_then(|v| v.to_str().ok()) {
        set_on_share.push(format!("Referrer-Policy: {rp}"));
    }
    if sh.noindex {
        set_on_share.push("X-Robots-Tag: noindex, nofollow".to_owned());
    }
    let share_pages = if set_on_share.is_empty() {
        "the upstream's headers as they are".to_owned()
    } else {
        format!(
            "{} on every answer of a share route",
            set_on_share.join("; ")
        )
    };
    let _ = writeln!(out, "share pages {share_pages}");
    let _ = writeln!(
        out,
        "caching     {}",
        if sh.cache_private {
            "share and management answers marked Cache-Control: private (no shared cache in front keeps one client's answer for another); *-Cache-Control, Surrogate-Control, Edge-Control, X-Accel-Expires removed"
        } else {
            "the upstream's cache headers as they are (share.cache_private = false)"
        }
    );
    let _ = writeln!(
        out,
        "overrides   X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override and ?_method: refused (400) on share routes; elsewhere the headers are stripped (every method passes there anyway)"
    );
    let _ = writeln!(out);
    let class_name = |class: RouteClass| match class {
        RouteClass::Custom(i) => p
            .routes
            .get(i)
            .map_or("custom".to_owned(), |r| format!("custom:{}", r.name)),
        c => c.name().to_owned(),
    };
    let entries = cfg.routes.entries();
    let rows: Vec<(String, RouteClass, String)> = entries
        .into_iter()
        .map(|(pattern, class, post)| {
            let methods = match p.methods(class, post).0 {
                // The org switch is management only for writes; its GET is an
                // ordinary route (every page load reads it).
                None if pattern.ends_with("/orgs/current/info") => {
                    "any but GET HEAD OPTIONS".to_owned()
                }
                None => "any".to_owned(),
                Some(m) => m.iter().map(Method::as_str).collect::<Vec<_>>().join(" "),
            };
            (pattern, class, methods)
        })
        .chain(std::iter::once((
            "(every other path)".to_owned(),
            RouteClass::Other,
            "any".to_owned(),
        )))
        .collect();
    let w_route = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
    let w_class = rows
        .iter()
        .map(|r| class_name(r.1).len())
        .max()
        .unwrap_or(5)
        .max(5);
    let w_methods = rows.iter().map(|r| r.2.len()).max().unwrap_or(7).max(7);
    let _ = writeln!(
        out,
        "{:<w_route$}  {:<w_class$}  {:<w_methods$}  {:<20}  ALLOW FROM",
        "ROUTE", "CLASS", "METHODS", "REQUIRE"
    );
    for (pattern, class, methods) in &rows {
        let (access, require, _) = p.access(*class);
        let _ = writeln!(
            out,
            "{pattern:<w_route$}  {:<w_class$}  {methods:<w_methods$}  {:<20}  {}",
            class_name(*class),
            require.as_str(),
            access.describe()
        );
    }
    out
}
