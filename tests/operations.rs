//! Production behaviour: hot reload (file watch and direct), refused
//! reloads, certificate rotation, the admin listener and its metrics, the
//! audit file, header and body limits, slowloris, rate limits, graceful
//! shutdown (in-process and the real binary under SIGTERM), edge
//! revocation, the sharing switch, and the HTTP→HTTPS redirect listener.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use sharegate::server::Listeners;
use sharegate::state::{ReloadError, State};
use sharegate::telemetry::metrics::ResultLabels;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, Notify};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// A second inside host, for "another client is still served".
const INSIDE_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
const REVOKED: &str = "This shared link has been revoked.";
const SHARING_OFF: &str = "Creating new shared links is disabled on this gateway.";

/// A gateway started from a config file, as `sharegate run` starts it.
struct Ops {
    gw: TestGateway,
    state: Arc<State>,
    path: PathBuf,
    admin: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

async fn from_file(toml: &str, with_admin: bool) -> Ops {
    let dir = tempfile::tempdir().expect("temporary directory");
    from_file_in(dir, toml, with_admin).await
}

async fn from_file_in(dir: tempfile::TempDir, toml: &str, with_admin: bool) -> Ops {
    let path = dir.path().join("sharegate.toml");
    std::fs::write(&path, toml).expect("write the config file");
    let state = state_from_file(&path).await;
    let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = match with_admin {
        true => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin")),
        false => None,
    };
    let admin_addr = admin
        .as_ref()
        .map(|l| l.local_addr().expect("admin address"));
    let gw = TestGateway::serve(
        Listeners {
            traffic: vec![traffic],
            redirect: Vec::new(),
            admin,
        },
        state.clone(),
    );
    Ops {
        gw,
        state,
        path,
        admin: admin_addr,
        _dir: dir,
    }
}

fn reloads(state: &State, result: &'static str) -> u64 {
    state
        .metrics
        .reloads
        .get_or_create(&ResultLabels { result })
        .get()
}

async fn share_get(from: IpAddr, gw: SocketAddr, token: &str) -> Reply {
    let path = format!("/public/{token}/r");
    request(from, gw, "GET", &path, &[], "").await
}

// ---------------------------------------------------------------------------
// Reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_switches_once_and_never_back() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.extra = "[reload]\ninterval = \"50ms\"\n".to_owned();
    let allowing = setup.toml();
    setup.inside = vec!["10.9.9.9/32"];
    let refusing = setup.toml();
    let ops = from_file(&allowing, false).await;
    let watcher = tokio::spawn(sharegate::state::watch(ops.state.clone()));

    // Handshake with the watcher: touch the file until it has reloaded
    // once, so that the switch below cannot race the watcher's start. A
    // change is loaded once it has stayed put for a whole interval, so the
    // file is touched every tenth check (200 ms, four intervals), not at
    // every one.
    let mut n = 0;
    eventually("the file watcher to reload a touched config", || {
        n += 1;
        if n % 10 == 1 {
            replace_file(
                &ops.path,
                format!("{allowing}\n# touched {n:0>width$}\n", width = n),
            );
        }
        let done = reloads(&ops.state, "success") >= 1;
        async move { done.then_some(()) }
    })
    .await;

    const N: usize = 400;
    let start = tokio::time::Instant::now();
    let (mut allowed, mut refused) = (0usize, 0usize);
    let mut i = 0usize;
    loop {
        if i == 40 {
            replace_file(&ops.path, &refusing);
        }
        let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
        match r.status {
            StatusCode::OK => {
                assert_eq!(
                    refused, 0,
                    "request {i} was allowed after the refusing config was seen"
                );
                allowed += 1;
            }
            StatusCode::FORBIDDEN => {
                assert_eq!(detail(&r), SHARE_OUTSIDE, "request {i}");
                refused += 1;
            }
            other => panic!(
                "request {i}: neither allowed nor refused: {other} {}",
                r.summary()
            ),
        }
        i += 1;
        if i >= N && refused >= 20 {
            break;
        }
        assert!(
            refused > 0 || start.elapsed() < WAIT,
            "the refusing config was not picked up within {WAIT:?}"
        );
    }
    assert!(
        allowed >= 40,
        "the first 40 requests ran under the old config"
    );
    assert_eq!(
        up.take().len(),
        allowed,
        "the upstream saw exactly the allowed requests"
    );
    assert_eq!(reloads(&ops.state, "failure"), 0);
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_keeps_the_old_policy_and_is_counted() {
    let up = FakeUpstream::start().await;
    let setup = Setup::new(&up);
    let good = setup.toml();
    let ops = from_file(&good, true).await;
    let admin = ops.admin.expect("admin listener");

    let cases = [
        ("not TOML", "[server\nlisten = ".to_owned()),
        (
            "an invalid value",
            good.replace("profile = \"langsmith\"", "profile = \"nope\""),
        ),
        (
            "an unknown key",
            format!("{good}\n[limits]\nmax_conections = 3\n"),
        ),
    ];
    for (k, (what, text)) in cases.iter().enumerate() {
        replace_file(&ops.path, text);
        let got = ops.state.reload().await;
        assert!(
            matches!(got, Err(ReloadError::Config(_))),
            "{what}: {got:?}"
        );
        let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: the old policy serves");
        up.only(what);
        let r = share_get(OUTSIDE, ops.gw.addr, TOKEN).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{what}: the old policy refuses"
        );
        up.assert_silent(what);
        let metrics = request(LOCAL, admin, "GET", "/metrics", &[], "").await;
        let want = (k + 1) as f64;
        assert_eq!(
            metric(
                &metrics.text(),
                "sharegate_config_reloads_total",
                &[("result", "failure")]
            ),
            Some(want),
            "{what}"
        );
    }

    // Listener addresses are bound once: a changed one is refused.
    replace_file(
        &ops.path,
        good.replace("listen = [\"127.0.0.1:0\"]", "listen = [\"127.0.0.1:1\"]"),
    );
    match ops.state.reload().await {
        Err(e @ ReloadError::Listeners(_)) => {
            assert!(e.to_string().contains("server.listen"), "{e}")
        }
        other => panic!("a changed listen address must be refused, got {other:?}"),
    }
    assert_eq!(reloads(&ops.state, "failure"), 4);

    // A good file reloads again.
    replace_file(&ops.path, &good);
    ops.state.reload().await.expect("the good config reloads");
    assert_eq!(reloads(&ops.state, "success"), 1);
    let metrics = request(LOCAL, admin, "GET", "/metrics", &[], "").await;
    assert_eq!(
        metric(
            &metrics.text(),
            "sharegate_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_listener_certificate() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let names = vec!["localhost".to_owned()];
    let first = rcgen::generate_simple_self_signed(names.clone()).expect("certificate");
    let second = rcgen::generate_simple_self_signed(names).expect("certificate");
    std::fs::write(&cert, first.cert.pem()).expect("write");
    std::fs::write(&key, first.signing_key.serialize_pem()).expect("write");
    let mut setup = Setup::new(&up);
    setup.server_extra = format!("tls_cert = {cert:?}\ntls_key = {key:?}\n");
    let ops = from_file_in(dir, &setup.toml(), false).await;
    let client = tls_client_config(&[first.cert.der().clone(), second.cert.der().clone()], None);
    let presented = || async {
        let tls = tls_connect_from(INSIDE, ops.gw.addr, client.clone(), "localhost")
            .await
            .expect("TLS handshake");
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("a server certificate")
            .to_vec();
        let r = exchange_on(
            tls,
            build(ops.gw.addr, "GET", &fill("/public/{t}/r"), &[], ""),
        )
        .await
        .expect("a request over TLS");
        assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
        der
    };
    assert_eq!(presented().await, first.cert.der().to_vec());
    up.only("before the rotation");

    replace_file(&key, second.signing_key.serialize_pem());
    replace_file(&cert, second.cert.pem());
    ops.state
        .reload()
        .await
        .expect("reload with the new certificate");
    assert_eq!(
        presented().await,
        second.cert.der().to_vec(),
        "a new connection after the reload presents the new certificate"
    );
    up.only("after the rotation");
}

// ---------------------------------------------------------------------------
// Admin and metrics

/// Every sample of the Prometheus text: (name, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().expect("a sample value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label=value");
            map.insert(k.to_owned(), v.trim_matches('"').to_owned());
        }
        out.push((name.to_owned(), map, value));
    }
    out
}

/// The value of the one sample of `name` whose labels include `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_reports_health_readiness_and_request_counters() {
    let up = FakeUpstream::start().await;
    let ops = from_file(&Setup::new(&up).toml(), true).await;
    let admin = ops.admin.expect("admin listener");

    let r = request(LOCAL, admin, "GET", "/healthz", &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    let r = request(LOCAL, admin, "GET", "/readyz", &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    assert_readiness_look(&up.only("a readiness probe"));
    let r = request(LOCAL, admin, "GET", &fill("/public/{t}/r"), &[], "").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the admin port serves no shares"
    );
    up.assert_silent("health checks and the admin port");

    let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::OK);
    up.only("the allowed request");
    let r = share_get(OUTSIDE, ops.gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    up.assert_silent("the refused request");

    let allowed = [
        ("class", "share_page"),
        ("decision", "allowed"),
        ("reason", ""),
        ("status", "200"),
    ];
    let refused = [
        ("class", "share_page"),
        ("decision", "refused"),
        ("reason", "network"),
        ("status", "403"),
    ];
    // The access event is counted when the response body is done, which
    // can trail the client's read by a moment.
    let text = eventually("both requests to be counted", || async {
        let text = request(LOCAL, admin, "GET", "/metrics", &[], "")
            .await
            .text();
        let a = metric(&text, "sharegate_requests_total", &allowed);
        let r = metric(&text, "sharegate_requests_total", &refused);
        (a == Some(1.0) && r == Some(1.0)).then_some(text)
    })
    .await;
    for (name, labels, _) in samples(&text) {
        for (k, v) in &labels {
            let what = format!("{name}{{{k}={v:?}}}");
            assert!(!v.contains('/'), "{what}: a label value holds a path");
            assert!(!v.contains(TOKEN), "{what}: a label value holds a token");
            assert!(
                v.parse::<IpAddr>().is_err(),
                "{what}: a label value is an IP"
            );
            assert!(!v.contains("127.0.0."), "{what}: a label value holds an IP");
        }
    }
}

/// The README's metrics table is what operators build dashboards from:
/// every metric it names is exposed, and every metric exposed is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_are_the_ones_the_readme_documents() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read the README");
    let table = readme
        .split_once("**Metrics**")
        .and_then(|(_, rest)| rest.split_once("**Access log.**"))
        .map(|(table, _)| table)
        .expect("the README's metrics table");
    let documented: BTreeSet<String> = table
        .split('`')
        .filter(|w| w.starts_with("sharegate_"))
        .map(|w| w.trim_end_matches("_total").to_owned())
        .collect();
    assert!(documented.len() > 10, "{documented:?}");

    let up = FakeUpstream::start().await;
    let ops = from_file(&Setup::new(&up).toml(), true).await;
    let admin = ops.admin.expect("admin listener");
    let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    let text = request(LOCAL, admin, "GET", "/metrics", &[], "")
        .await
        .text();
    let exposed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&exposed).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "exposed but not in the README: {undocumented:?}; in the README but not exposed: {missing:?}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_upstream_is_down() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let ops = from_file(
        &Setup::with_url(format!("http://127.0.0.1:{port}")).toml(),
        true,
    )
    .await;
    let admin = ops.admin.expect("admin listener");
    let r = request(LOCAL, admin, "GET", "/readyz", &[], "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.summary());
    assert!(
        r.text().starts_with(&format!(
            "not ready: upstream http://127.0.0.1:{port}/ did not answer: tcp connect error: "
        )),
        "{}",
        r.summary()
    );
    let r = request(LOCAL, admin, "GET", "/healthz", &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "alive even when not ready");
    let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.summary());
}

/// An upstream that counts its connections and the requests on them,
/// answers every request with `status`, and can be stopped: its listener
/// closed and every connection dropped, as when the process is gone.
struct CountingUpstream {
    addr: SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl CountingUpstream {
    async fn start(status: u16) -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), requests.clone());
        let server = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let seen = seen.clone();
                // Aborting the server aborts these with it.
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<_>| {
                        seen.lock().expect("requests").push(format!(
                            "{} {}",
                            req.method(),
                            req.uri()
                        ));
                        let mut r = http::Response::new(http_body_util::Empty::<Bytes>::new());
                        *r.status_mut() = StatusCode::from_u16(status).expect("a status");
                        async move { Ok::<_, std::convert::Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingUpstream {
            addr,
            connections,
            requests,
            server,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

/// `/readyz` asks the upstream through the gateway's own pooled client, as
/// traffic reaches it: one kept connection serves probe after probe (no
/// connection opened and dropped per probe), probes that arrive together
/// share one answer, any HTTP answer is ready (a 503 is the upstream's to
/// give its clients; the gateway can reach it), and once the upstream is
/// gone the next probe says not ready, naming the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_asks_the_upstream_over_the_pooled_client() {
    let up = CountingUpstream::start(503).await;
    let ops = from_file(&Setup::with_url(format!("http://{}", up.addr)).toml(), true).await;
    let admin = ops.admin.expect("admin listener");
    let together = futures_util::future::join_all(
        (0..3).map(|_| request(LOCAL, admin, "GET", "/readyz", &[], "")),
    )
    .await;
    for r in &together {
        assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
        assert!(
            r.text().contains("upstream answered HEAD / with 503"),
            "{}",
            r.summary()
        );
    }
    assert_eq!(
        up.requests(),
        ["HEAD /"],
        "probes together share one answer"
    );
    // A later probe asks again, over the same connection.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = request(LOCAL, admin, "GET", "/readyz", &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    assert_eq!(up.requests(), ["HEAD /", "HEAD /"]);
    assert_eq!(up.connections(), 1, "the pooled connection is reused");

    up.server.abort();
    let r = eventually(
        "readyz to say not ready once the upstream is gone",
        || async {
            let r = request(LOCAL, admin, "GET", "/readyz", &[], "").await;
            (r.status == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
        },
    )
    .await;
    assert!(
        r.text()
            .starts_with(&format!("not ready: upstream http://{}", up.addr)),
        "{}",
        r.summary()
    );
    assert!(r.text().contains("refused"), "{}", r.summary());
}

// ---------------------------------------------------------------------------
// Audit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_file_records_share_requests_without_tokens() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("audit.jsonl");
    let mut setup = Setup::new(&up);
    setup.extra = format!("[audit]\nfile = {file:?}\n");
    let gw = setup.start().await;

    let r = request(INSIDE, gw.addr, "GET", "/api/v1/info", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    up.only("an ordinary route");
    let r = share_get(INSIDE, gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::OK);
    up.only("the allowed share");
    let r = share_get(OUTSIDE, gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    up.assert_silent("the refused share");

    let text = eventually("two audit lines", || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        async move { (text.lines().count() >= 2).then_some(text) }
    })
    .await;
    assert!(
        !text.contains(TOKEN),
        "a clear token in the audit file: {text}"
    );
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(events.len(), 2, "only share requests are audited: {text}");
    let hash = sharegate::telemetry::token_hash(TOKEN);
    for e in &events {
        for field in [
            "v",
            "time",
            "event",
            "class",
            "token_hashes",
            "client_ip",
            "method",
            "path",
            "identity",
            "decision",
            "rule",
            "reason",
            "status",
        ] {
            assert!(e.get(field).is_some(), "audit event without {field}: {e}");
        }
        assert_eq!(e["v"], 1);
        assert_eq!(e["class"], "share_page");
        assert_eq!(e["method"], "GET");
        assert_eq!(e["token_hashes"], serde_json::json!([hash]));
        let path = e["path"].as_str().expect("path");
        assert!(path.starts_with("/public/{tok:"), "{path}");
    }
    let find = |decision: &str| {
        events
            .iter()
            .find(|e| e["decision"] == decision)
            .unwrap_or_else(|| panic!("no {decision} event in {text}"))
    };
    let a = find("allowed");
    assert_eq!(a["status"], 200);
    assert_eq!(a["client_ip"], "127.0.0.2");
    assert_eq!(a["reason"], "");
    let r = find("refused");
    assert_eq!(r["status"], 403);
    assert_eq!(r["client_ip"], "127.0.0.3");
    assert_eq!(r["reason"], "network");
}

/// `sharegate probe` (the container health check without curl): exit 0
/// for a 2xx answer from the admin listener, 1 with the reason otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_zero_only_for_a_2xx_answer() {
    let up = FakeUpstream::start().await;
    let ops = from_file(&Setup::new(&up).toml(), true).await;
    let admin = ops.admin.expect("admin listener");
    let closed = {
        // Bound and closed again: nothing listens there (an address no
        // other test uses).
        let l = std::net::TcpListener::bind("127.0.0.77:0").expect("bind");
        l.local_addr().expect("address")
    };
    let cases = [
        (format!("http://{admin}/healthz"), true, ""),
        (format!("http://{admin}/readyz"), true, ""),
        (format!("http://{admin}/nope"), false, "404"),
        (format!("http://{closed}/healthz"), false, "connect"),
        (format!("https://{admin}/healthz"), false, "only http://"),
    ];
    for (url, ok, says) in cases {
        let out = tokio::task::spawn_blocking({
            let url = url.clone();
            move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_sharegate"))
                    .args(["probe", "--timeout", "10s", "--url", &url])
                    .output()
                    .expect("run sharegate probe")
            }
        });
        let out = within("sharegate probe", out).await.expect("probe task");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{url}: {stderr}");
        if !ok {
            assert_eq!(out.status.code(), Some(1), "{url}");
            assert!(stderr.contains(says), "{url}: {stderr}");
        }
    }
    // Only `/readyz`'s own look at the upstream reached it.
    let seen = up.take();
    assert!(!seen.is_empty());
    for r in &seen {
        assert_readiness_look(r);
    }
}

/// `/readyz`'s request to the upstream: `HEAD /`, named as the gateway's,
/// carrying nothing of any client's.
fn assert_readiness_look(r: &Recorded) {
    assert_eq!((r.method.as_str(), r.target.as_str()), ("HEAD", "/"));
    assert_eq!(r.header("user-agent").as_deref(), Some("sharegate-readyz"));
    assert!(r.header("x-forwarded-for").is_none(), "{:?}", r.headers);
    assert!(r.body.is_empty());
}

// ---------------------------------------------------------------------------
// Limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_is_cut_off_while_others_are_served() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nheader_timeout = \"1s\"\n".to_owned();
    let gw = setup.start().await;
    let share = fill("/public/{t}/r");
    let head = format!(
        "GET {share} HTTP/1.1\r\nHost: gateway.corp.example\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(200)
    );
    let (mut rd, mut wr) = connect(INSIDE, gw.addr).await.into_split();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    });
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    let mut served = 0;
    for byte in head.as_bytes() {
        if reader.is_finished() || wr.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        // Meanwhile an ordinary client is served.
        let r = request(INSIDE, gw.addr, "GET", &share, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
        served += 1;
        assert!(
            start.elapsed() < WAIT,
            "the slow client was not cut off within {WAIT:?}"
        );
        // Pacing the attacker, not waiting for readiness.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = within("the slow connection to close", reader)
        .await
        .expect("reader task");
    assert!(
        sent < head.len(),
        "the whole slow header was accepted ({sent} bytes)"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || raw_status(&answer) == 408,
        "the slow client gets nothing or a 408: {answer:?}"
    );
    assert!(served > 0);
    let seen = up.take();
    assert_eq!(seen.len(), served, "only the ordinary requests arrived");
    assert!(seen.iter().all(|r| r.header("x-padding").is_none()));
}

/// Before hyper reads a head, the gateway reads the opening bytes to tell
/// HTTP/1 from HTTP/2, when no hyper timer runs yet: a client that sends
/// nothing (or part of the HTTP/2 preface) must still be let go after
/// `header_timeout`, while a request already under way is never cut by it.
/// A request body that stops arriving (slow POST, "R-U-Dead-Yet") is cut
/// off after `limits.body_timeout` of silence with a 408, on a share route
/// (whose body is read whole before forwarding: the upstream sees nothing)
/// and on an ordinary route (streamed: the upstream never gets the body
/// whole). A body that keeps coming, however slowly, is not: the timeout
/// is between reads, not for the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut_off_with_408() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nbody_timeout = \"2s\"\n".to_owned();
    let gw = setup.start().await;
    // The streamed request's upstream side ends when the gateway gives up
    // on the body; the handler says how much of it arrived.
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<usize>();
    up.on(
        "/api/v1/runs/query",
        custom(move |r| {
            let _ = ended_tx.send(r.body.len());
            async { http::Response::new(upstream_full("")) }
        }),
    );
    let share = fill("/api/v1/public/{t}/runs/query");
    for target in [share.as_str(), "/api/v1/runs/query"] {
        // The head and part of the body, then nothing more, with the
        // connection kept open: the gateway answers and closes.
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: gateway.corp.example\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"limit\":"
        );
        let answer = raw_exchange(INSIDE, gw.addr, head.as_bytes()).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(raw_status(&answer), 408, "{target}: {answer:?}");
        if target == share {
            up.assert_silent(target);
        } else {
            let got = within("the upstream's side to end", ended.recv())
                .await
                .expect("the upstream handler ran");
            assert!(got < 100, "{target}: the upstream got the whole body");
            assert_eq!(up.take().len(), 1, "{target}");
        }
    }
    // A body trickled a byte at a time, each well inside the timeout, for
    // longer than the timeout in all, is taken whole.
    let body = r#"{"limit":1}"#;
    let (mut rd, mut wr) = connect(INSIDE, gw.addr).await.into_split();
    let head = format!(
        "POST {share} HTTP/1.1\r\nHost: gateway.corp.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    wr.write_all(head.as_bytes()).await.expect("write the head");
    for byte in body.as_bytes() {
        // Pacing the client (11 bytes over about 2.75 s), not waiting for
        // readiness.
        tokio::time::sleep(Duration::from_millis(250)).await;
        wr.write_all(&[*byte]).await.expect("write a body byte");
    }
    let mut answer = Vec::new();
    within("the trickled request's answer", rd.read_to_end(&mut answer))
        .await
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(raw_status(&answer), 200, "{answer:?}");
    let r = up.only("the trickled request");
    assert_eq!(r.body, body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_starts_a_request_is_closed() {
    let up = FakeUpstream::start().await;
    let slow = fill("/public/{t}/r");
    up.on(
        &slow,
        custom(|_| async {
            // The upstream thinks for longer than the header timeout.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            upstream_response(StatusCode::OK, &[], upstream_full("slow but sure"))
        }),
    );
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nheader_timeout = \"1s\"\n".to_owned();
    let gw = setup.start().await;
    for (what, opening) in [
        ("nothing at all", &b""[..]),
        ("part of the HTTP/2 preface", &b"PRI * HTTP/2.0\r\n"[..]),
    ] {
        let mut s = connect(INSIDE, gw.addr).await;
        s.write_all(opening).await.expect("write");
        let mut out = Vec::new();
        let read = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{what}: the connection was still open after {WAIT:?}"
        );
    }
    up.assert_silent("silent connections");
    // A request sent promptly is answered even though the answer takes
    // longer than the header timeout, on a fresh and on a reused connection.
    let raw = format!("GET {slow} HTTP/1.1\r\nHost: gateway.corp.example\r\n\r\n");
    let mut s = connect(INSIDE, gw.addr).await;
    for round in 0..2 {
        s.write_all(raw.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("slow but sure") {
            let n = within("the slow answer", s.read(&mut buf))
                .await
                .expect("read");
            assert!(n > 0, "round {round}: closed before the answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(raw_status(&String::from_utf8_lossy(&got)), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_are_431() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nmax_headers = 10\nmax_header_bytes = 8192\n".to_owned();
    let gw = setup.start().await;
    let share = fill("/public/{t}/r");
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "b".repeat(20_000));
    for (what, headers) in [("30 headers", many), ("a 20 kB header", big)] {
        let raw = format!(
            "GET {share} HTTP/1.1\r\nHost: gateway.corp.example\r\n{headers}Connection: close\r\n\r\n"
        );
        let answer = raw_request(INSIDE, gw.addr, &raw).await;
        assert_eq!(raw_status(&answer), 431, "{what}: {answer}");
        up.assert_silent(what);
    }
    let r = request(INSIDE, gw.addr, "GET", &share, &[("x-one", "1")], "").await;
    assert_eq!(r.status, StatusCode::OK, "a normal request still passes");
    up.only("a normal request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_on_a_share_read_is_413_before_the_upstream() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nmax_public_body_bytes = 1024\n".to_owned();
    let gw = setup.start().await;
    let query = fill("/api/v1/public/{t}/runs/query");
    let json = ("content-type", "application/json");

    let small = format!("{{\"filter\": \"{}\"}}", "s".repeat(500));
    let r = request(INSIDE, gw.addr, "POST", &query, &[json], &small).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    assert_eq!(up.only("a small query").body, small.as_bytes());

    let big = format!("{{\"filter\": \"{}\"}}", "x".repeat(4096));
    let r = request(INSIDE, gw.addr, "POST", &query, &[json], &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.summary());
    assert_eq!(detail(&r), "Request body too large for a shared link.");
    up.assert_silent("a body over the limit, with Content-Length");

    let chunk = "y".repeat(1000);
    let chunks: String = (0..4)
        .map(|_| format!("{:x}\r\n{chunk}\r\n", chunk.len()))
        .collect();
    let raw = format!(
        "POST {query} HTTP/1.1\r\nHost: gateway.corp.example\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunks}0\r\n\r\n"
    );
    let answer = raw_request(INSIDE, gw.addr, &raw).await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    up.assert_silent("a body over the limit, chunked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_share_rate_limit_is_per_client_and_follows_reloads() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.inside = vec!["127.0.0.2/32", "127.0.0.6/32", "2001:db8::/32"];
    setup.extra = "[limits]\nshare_rate = \"3/min\"\n".to_owned();
    let ops = from_file(&setup.toml(), false).await;

    for i in 0..3 {
        let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.summary());
    }
    assert_eq!(up.take().len(), 3);
    let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.summary());
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    up.assert_silent("the fourth request");

    let r = share_get(INSIDE_2, ops.gw.addr, TOKEN).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "another client has its own budget"
    );
    up.only("another client");

    // IPv6 clients (here behind the trusted proxy) are counted by their
    // /64: a host given a /64 cannot take a fresh budget per address.
    let via_proxy = |client: &'static str| {
        let addr = ops.gw.addr;
        async move {
            request(
                PROXY,
                addr,
                "GET",
                &fill("/api/v1/public/{t}/run"),
                &[("X-Forwarded-For", client)],
                "",
            )
            .await
            .status
        }
    };
    for client in ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2::c"] {
        assert_eq!(via_proxy(client).await, StatusCode::OK, "{client}");
    }
    assert_eq!(
        via_proxy("2001:db8:1:2::d").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a fourth address of the same /64"
    );
    assert_eq!(
        via_proxy("2001:db8:1:3::a").await,
        StatusCode::OK,
        "the next /64"
    );
    assert_eq!(up.take().len(), 4);

    // A new limit after a reload serves the throttled client again.
    setup.extra = "[limits]\nshare_rate = \"60/min\"\n".to_owned();
    replace_file(&ops.path, setup.toml());
    ops.state.reload().await.expect("reload with a new rate");
    let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("after the reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generate_query_limit_is_its_own_budget_and_is_counted() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.allow_generate_query = true;
    setup.extra =
        "[limits]\nshare_rate = \"100/min\"\ngenerate_query_rate = \"2/min\"\n".to_owned();
    let ops = from_file(&setup.toml(), true).await;
    let admin = ops.admin.expect("admin listener");
    let generate = fill("/api/v1/public/{t}/datasets/runs/generate-query");
    let ask = || {
        request(
            INSIDE,
            ops.gw.addr,
            "POST",
            &generate,
            &[],
            r#"{"query":"errors"}"#,
        )
    };

    for i in 0..2 {
        let r = ask().await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.summary());
    }
    assert_eq!(up.take().len(), 2);
    let r = ask().await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.summary());
    assert!(r.header("retry-after").is_some(), "{}", r.summary());
    up.assert_silent("the third generate-query");

    // Share reads keep their own, larger budget.
    let r = share_get(INSIDE, ops.gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("a share read after the generate-query limit");

    let limited = [("class", "public_api")];
    eventually("the refusal to be counted", || async {
        let text = request(LOCAL, admin, "GET", "/metrics", &[], "")
            .await
            .text();
        (metric(&text, "sharegate_rate_limited_total", &limited) == Some(1.0)).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// Shutdown

/// Tries to open a connection; `true` once the gateway refuses it.
async fn refused(to: SocketAddr) -> bool {
    let socket = TcpSocket::new_v4().expect("socket");
    match tokio::time::timeout(WAIT, socket.connect(to)).await {
        Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let up = FakeUpstream::start().await;
    let release = Arc::new(Notify::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let gate = release.clone();
    up.on(
        "/api/v1/slow",
        custom(move |_| {
            let gate = gate.clone();
            let arrived = arrived_tx.clone();
            async move {
                let _ = arrived.send(());
                gate.notified().await;
                upstream_response(StatusCode::OK, &[], upstream_full("finally"))
            }
        }),
    );
    let mut gw = Setup::new(&up).start().await;
    let addr = gw.addr;
    let slow =
        tokio::spawn(async move { request(INSIDE, addr, "GET", "/api/v1/slow", &[], "").await });
    within("the slow request to reach the upstream", arrived.recv())
        .await
        .expect("arrived");

    gw.begin_shutdown();
    eventually("new connections to be refused", || {
        refused(addr).then_some_async()
    })
    .await;

    release.notify_one();
    let r = within("the in-flight request", slow)
        .await
        .expect("client task");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "finally");
    assert_eq!(
        up.take().len(),
        1,
        "only the in-flight request reached the upstream"
    );
    gw.stopped().await;
}

/// A connection that has not begun a request when shutdown starts has
/// nothing in flight: it is closed at once, not held for the grace period
/// (or for `header_timeout`, both far longer than this test waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_that_never_began_a_request() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.server_extra = "shutdown_grace = \"600s\"\n".to_owned();
    setup.extra = "[limits]\nheader_timeout = \"600s\"\n".to_owned();
    let Ops {
        mut gw,
        state,
        _dir,
        ..
    } = from_file(&setup.toml(), false).await;
    let mut silent = connect(INSIDE, gw.addr).await;
    // Part of the HTTP/2 preface: still telling its version.
    silent
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    eventually("the silent connection to be accepted", || {
        let open = state.metrics.active_connections.get();
        async move { (open == 1).then_some(()) }
    })
    .await;
    gw.begin_shutdown();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, silent.read_to_end(&mut out)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection was still open {WAIT:?} into the shutdown"
    );
    gw.stopped().await;
    up.assert_silent("a connection that never began a request");
}

/// `Option` from a `bool` future, for [`eventually`].
trait ThenSomeAsync {
    fn then_some_async(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<()>> + Send>>;
}

impl<F: std::future::Future<Output = bool> + Send + 'static> ThenSomeAsync for F {
    fn then_some_async(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<()>> + Send>> {
        Box::pin(async move { self.await.then_some(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_ends_a_never_ending_stream() {
    let up = FakeUpstream::start().await;
    let events = up.sse("/api/v1/events");
    let mut setup = Setup::new(&up);
    setup.server_extra = "shutdown_grace = \"500ms\"\n".to_owned();
    let mut gw = setup.start().await;
    let resp = send(INSIDE, gw.addr, events_get(gw.addr, "/api/v1/events")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    events
        .send(Bytes::from_static(b"data: one\n\n"))
        .expect("send");
    let first = within("the first event", body.frame())
        .await
        .expect("a frame")
        .expect("a data frame");
    assert_eq!(
        first.into_data().ok(),
        Some(Bytes::from_static(b"data: one\n\n"))
    );

    gw.begin_shutdown();
    // The stream never ends on its own (`events` stays open); the gateway
    // closes it when the grace period is over.
    loop {
        match within("the gateway to close the stream", body.frame()).await {
            None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    gw.stopped().await;
    assert_eq!(up.take().len(), 1);
    drop(events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_0_on_sigterm() {
    serve_then_sigterm("workers = 2", None, (2, "multi-threaded")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_runs_the_single_threaded_scheduler() {
    serve_then_sigterm("workers = 1", None, (1, "single-threaded")).await;
    // `workers = 0` takes tokio's own variable before the CPU count.
    serve_then_sigterm("workers = 0", Some("1"), (1, "single-threaded")).await;
    serve_then_sigterm("workers = 0", Some("3"), (3, "multi-threaded")).await;
}

/// A second SIGTERM during the drain stops at once, as a second Ctrl-C
/// does: the never-ending stream in flight is closed, the process logs that
/// the drain was cut short and exits 143 (128 + SIGTERM) long before the
/// ten-minute grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_drain_short() {
    second_signal_cuts_the_drain_short("TERM", "SIGTERM", 143).await;
}

/// The same with Ctrl-C after a SIGTERM: 130 (128 + SIGINT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigint_during_the_drain_cuts_it_short() {
    second_signal_cuts_the_drain_short("INT", "SIGINT", 130).await;
}

/// The real binary with a never-ending event stream in flight: SIGTERM
/// starts the drain (the stream goes on), then `second` ends it.
async fn second_signal_cuts_the_drain_short(second: &str, name: &str, status: i32) {
    let up = FakeUpstream::start().await;
    let events = up.sse("/api/v1/events");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sharegate.toml");
    let mut setup = Setup::new(&up);
    setup.server_extra = "shutdown_grace = \"600s\"\n".to_owned();
    setup.extra =
        "[admin]\nlisten = \"off\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n".to_owned();
    std::fs::write(&path, setup.toml()).expect("write the config");
    let mut gateway = RunningBinary::start(&path, None);
    let addr = gateway.until_listening(|_| {}).await;
    let resp = send(LOCAL, addr, events_get(addr, "/api/v1/events")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    events
        .send(Bytes::from_static(b"data: one\n\n"))
        .expect("send");
    within("the first event", body.frame())
        .await
        .expect("a frame")
        .expect("a data frame");

    gateway.signal("TERM");
    gateway.until_message("shutting down").await;
    // The drain goes on: the stream is still open.
    events
        .send(Bytes::from_static(b"data: two\n\n"))
        .expect("send");
    let during = within("the second event, during the drain", body.frame())
        .await
        .expect("a frame")
        .expect("a data frame");
    assert_eq!(
        during.into_data().ok(),
        Some(Bytes::from_static(b"data: two\n\n"))
    );

    gateway.signal(second);
    let cut = gateway.until_message("drain cut short").await;
    assert_eq!(cut["signal"], name, "{cut}");
    assert_eq!(cut["open_connections"], 1, "{cut}");
    let exit = gateway.wait().await;
    assert_eq!(exit.code(), Some(status), "exit status {exit:?}");
    loop {
        match within("the stream to be closed", body.frame()).await {
            None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    drop(events);
}

/// Runs the real binary with `server_extra` (and `TOKIO_WORKER_THREADS`
/// when given), checks the runtime it reports starting, serves a request
/// through it and stops it with SIGTERM: exit status 0, port closed.
async fn serve_then_sigterm(
    server_extra: &str,
    tokio_workers: Option<&str>,
    (workers, scheduler): (u64, &str),
) {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sharegate.toml");
    let mut setup = Setup::new(&up);
    server_extra.clone_into(&mut setup.server_extra);
    setup.extra =
        "[admin]\nlisten = \"off\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n".to_owned();
    std::fs::write(&path, setup.toml()).expect("write the config");
    let mut gateway = RunningBinary::start(&path, tokio_workers);
    let mut runtime = None;
    let addr = gateway
        .until_listening(|event| {
            if event["message"] == "runtime started" {
                runtime = Some((event["workers"].as_u64(), event["scheduler"].clone()));
            }
        })
        .await;
    assert_eq!(
        runtime,
        Some((Some(workers), serde_json::json!(scheduler))),
        "the runtime the gateway reported starting ({server_extra}, TOKIO_WORKER_THREADS {tokio_workers:?})"
    );
    // Serving a request shows the server loop (and its signal handler) runs.
    let r = request(LOCAL, addr, "GET", "/api/v1/info", &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("a request through the binary");

    let exit = gateway.stop().await;
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    assert!(refused(addr).await, "nothing listens after the exit");
}

/// A real `sharegate run --config PATH` with JSON log lines on standard
/// error, killed if the test ends before it has exited.
struct RunningBinary {
    child: Option<std::process::Child>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl RunningBinary {
    /// Starts it, with `TOKIO_WORKER_THREADS` set to `tokio_workers` (or
    /// unset).
    fn start(config: &std::path::Path, tokio_workers: Option<&str>) -> RunningBinary {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sharegate"));
        match tokio_workers {
            Some(n) => command.env("TOKIO_WORKER_THREADS", n),
            None => command.env_remove("TOKIO_WORKER_THREADS"),
        };
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start sharegate run");
        let stderr = child.stderr.take().expect("stderr");
        let (lines_tx, lines) = mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines_tx.send(line);
            }
        });
        RunningBinary {
            child: Some(child),
            lines,
        }
    }

    /// Reads its log events (each also shown to `seen`) until the one that
    /// names the address it listens on.
    async fn until_listening(&mut self, mut seen: impl FnMut(&serde_json::Value)) -> SocketAddr {
        loop {
            let line = within("the gateway to log its address", self.lines.recv())
                .await
                .expect("the gateway exited before listening");
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            seen(&event);
            if event["message"] == "listening" {
                return event["address"]
                    .as_str()
                    .expect("address field")
                    .parse()
                    .expect("a socket address");
            }
        }
    }

    /// `kill -NAME` to the process.
    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("a running gateway").id();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Reads its log events until one whose message contains `text`, and
    /// returns it.
    async fn until_message(&mut self, text: &str) -> serde_json::Value {
        loop {
            let line = within(&format!("the gateway to log {text:?}"), self.lines.recv())
                .await
                .unwrap_or_else(|| panic!("the gateway exited before logging {text:?}"));
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"].as_str().is_some_and(|m| m.contains(text)) {
                return event;
            }
        }
    }

    /// SIGTERM, and its exit status once it has exited.
    async fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait().await
    }

    /// Its exit status once it has exited (within [`WAIT`]).
    async fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running gateway");
        within(
            "the gateway to exit",
            tokio::task::spawn_blocking(move || child.wait()),
        )
        .await
        .expect("wait task")
        .expect("wait for the child")
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Edge controls

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_404_and_a_reload_revokes_at_once() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.share_extra = format!("revoked_tokens = [{TOKEN:?}]\n");
    let ops = from_file(&setup.toml(), false).await;

    for path in [
        fill("/public/{t}/r"),
        fill("/api/v1/public/{t}/runs/{id}"),
        fill("/api/v2/public/{t}/runs/query"),
    ] {
        let method = if path.ends_with("query") {
            "POST"
        } else {
            "GET"
        };
        let r = request(INSIDE, ops.gw.addr, method, &path, &[], "{}").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.summary());
        assert_eq!(r.json(), serde_json::json!({ "detail": REVOKED }), "{path}");
        up.assert_silent(&path);
    }
    let r = share_get(INSIDE, ops.gw.addr, TOKEN_B).await;
    assert_eq!(r.status, StatusCode::OK, "another token still opens");
    up.only("another token");

    setup.share_extra = format!("revoked_tokens = [{TOKEN:?}, {TOKEN_B:?}]\n");
    replace_file(&ops.path, setup.toml());
    ops.state
        .reload()
        .await
        .expect("reload with a new revocation");
    let r = share_get(INSIDE, ops.gw.addr, TOKEN_B).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.summary());
    assert_eq!(detail(&r), REVOKED);
    up.assert_silent("the newly revoked token");
}

/// Share tokens are UUIDs, which the services behind LangSmith read in any
/// case, with or without hyphens or braces: a revoked share stays revoked
/// in every spelling, on every public class and in `?share_tokens=`, and an
/// entry written in capitals revokes the token as it was minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_in_every_spelling_of_its_uuid() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.share_extra = format!(
        "revoked_tokens = [{TOKEN:?}, {:?}]\n",
        TOKEN_B.to_uppercase()
    );
    let gw = setup.start().await;
    let upper = TOKEN.to_uppercase();
    let simple = TOKEN.replace('-', "");
    for path in [
        format!("/public/{upper}/r"),
        format!("/api/v1/public/{upper}/run"),
        format!("/api/v1/public/{simple}/run"),
        format!("/api/v1/public/%7B{TOKEN}%7D/run"),
        format!("/api/v2/public/threads/{upper}/messages"),
        format!("/api/v1/public/datasets/sessions-bulk?share_tokens={upper}"),
        format!("/api/v1/public/datasets/sessions-bulk?share_tokens=x,urn:uuid:{simple}"),
        format!("/public/{TOKEN_B}/r"),
    ] {
        let r = request(INSIDE, gw.addr, "GET", &path, &[], "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.summary());
        assert_eq!(detail(&r), REVOKED, "{path}");
        up.assert_silent(&path);
    }
    // Another share, in capitals, still opens.
    let other = "0b2e6c1a-7d3f-4e59-8a12-3c4d5e6f7a8b".to_uppercase();
    let r = request(
        INSIDE,
        gw.addr,
        "GET",
        &format!("/public/{other}/r"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("another share");
}

/// `server.hosts` is part of the policy a reload swaps: a name added is
/// served at once, and emptying the list serves any name again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_hosts_follow_reloads() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.server_extra = "hosts = [\"sharegate.test\"]\n".to_owned();
    let ops = from_file(&setup.toml(), false).await;
    let path = fill("/public/{t}/r");
    let get = |host: &'static str| {
        let path = path.clone();
        async move { request(INSIDE, ops.gw.addr, "GET", &path, &[("host", host)], "").await }
    };
    assert_eq!(get("sharegate.test").await.status, StatusCode::OK);
    up.only("a listed name");
    let r = get("other.example").await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.summary());
    up.assert_silent("a name not listed yet");

    for (hosts, what) in [
        (
            "hosts = [\"sharegate.test\", \"other.example\"]\n",
            "a name added",
        ),
        ("", "the list emptied"),
    ] {
        setup.server_extra = hosts.to_owned();
        replace_file(&ops.path, setup.toml());
        ops.state.reload().await.expect("reload");
        let r = get("other.example").await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.summary());
        assert_eq!(
            up.only(what).header("x-forwarded-host").as_deref(),
            Some("other.example")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_disabled_refuses_new_shares_only() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.share_extra = "sharing = \"disabled\"\n".to_owned();
    let gw = setup.start().await;
    for (method, path) in [
        ("PUT", "/api/v1/runs/{id}/share"),
        ("POST", "/api/v2/runs/{id}/share"),
        ("PUT", "/api/v1/datasets/{id}/share"),
        ("POST", "/api/v2/threads/{id}/share"),
    ] {
        let path = fill(path);
        let r = request(INSIDE, gw.addr, method, &path, &[], "{}").await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.summary()
        );
        assert_eq!(detail(&r), SHARING_OFF, "{method} {path}");
        up.assert_silent(&format!("{method} {path}"));
    }
    for (method, path, body) in [
        ("GET", "/api/v1/runs/{id}/share", ""),
        ("DELETE", "/api/v1/runs/{id}/share", ""),
        ("GET", "/api/v2/runs/{id}/share", ""),
        ("GET", "/api/v1/workspaces/current/shared", ""),
        (
            "DELETE",
            "/api/v1/workspaces/current/shared",
            "{\"share_tokens\": [\"6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d\"]}",
        ),
    ] {
        let path = fill(path);
        let r = request(INSIDE, gw.addr, method, &path, &[], body).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.summary());
        let seen = up.only(&format!("{method} {path}"));
        assert_eq!(
            (seen.method.as_str(), seen.target.as_str()),
            (method, path.as_str())
        );
        assert_eq!(seen.body, body.as_bytes());
    }
    // The share pages themselves still open.
    let r = share_get(INSIDE, gw.addr, TOKEN).await;
    assert_eq!(r.status, StatusCode::OK);
    up.only("reading a share");
}

/// The admin listener lets a client that stops reading go after
/// `limits.send_timeout`, as the traffic listeners do: requests pipelined
/// without reading a single answer fill the buffers, the gateway's writes
/// wait, and the connection is closed (the client's next write fails)
/// instead of held for as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_client_that_stops_reading_is_let_go() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.extra = "[limits]\nsend_timeout = \"1s\"\n".to_owned();
    let ops = from_file(&setup.toml(), true).await;
    let admin = ops.admin.expect("admin listener");
    let client = connect(LOCAL, admin).await;
    let (_rd, mut wr) = client.into_split();
    let batch = b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n".repeat(256);
    let written = within(
        "the gateway to close on a client that reads nothing",
        async {
            let mut written = 0usize;
            while wr.write_all(&batch).await.is_ok() {
                written += batch.len();
            }
            written
        },
    )
    .await;
    assert!(written > 0, "the first requests were taken");
}

// ---------------------------------------------------------------------------
// HTTP → HTTPS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_listener_sends_308_to_https_and_forwards_nothing() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let issued =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    std::fs::write(&cert, issued.cert.pem()).expect("write");
    std::fs::write(&key, issued.signing_key.serialize_pem()).expect("write");
    let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let redirect = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let https = traffic.local_addr().expect("address");
    let plain = redirect.local_addr().expect("address");
    let mut setup = Setup::new(&up);
    setup.server_extra =
        format!("tls_cert = {cert:?}\ntls_key = {key:?}\nredirect_listen = [\"{plain}\"]\nhosts = [\"gateway.corp.example\"]\n");
    // The config names the addresses the test bound.
    let toml = setup.toml().replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"{https}\"]"),
    );
    let path = dir.path().join("sharegate.toml");
    std::fs::write(&path, toml).expect("write the config");
    let state = state_from_file(&path).await;
    let _gw = TestGateway::serve(
        Listeners {
            traffic: vec![traffic],
            redirect: vec![redirect],
            admin: None,
        },
        state,
    );

    let target = fill("/public/{t}/r?x=1");
    for method in ["GET", "POST"] {
        let r = request(
            INSIDE,
            plain,
            method,
            &target,
            &[("host", &format!("gateway.corp.example:{}", plain.port()))],
            "",
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::PERMANENT_REDIRECT,
            "{method}: {}",
            r.summary()
        );
        assert_eq!(
            r.header("location").as_deref(),
            Some(format!("https://gateway.corp.example:{}{target}", https.port()).as_str()),
            "{method}"
        );
        up.assert_silent(method);
    }

    // A name outside server.hosts is not sent on to HTTPS under that name.
    let r = request(
        INSIDE,
        plain,
        "GET",
        &target,
        &[("host", "attacker.example")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.summary());
    assert_eq!(r.header("location"), None);
    up.assert_silent("a misdirected redirect");

    // Nothing keeps a redirect's connection: the listener closes it after
    // the answer (the raw read ends only at the close).
    let answer = raw_request(
        OUTSIDE,
        plain,
        "GET / HTTP/1.1\r\nHost: gateway.corp.example\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 308, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

/// The admin and redirect listeners hold a bounded number of connections
/// of their own (`limits.max_connections` counts the traffic listeners'
/// alone): idle connections to them wait in the kernel's backlog past the
/// bound, and take no more descriptors from the traffic listeners, which go
/// on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_admin_listener_are_bounded() {
    let up = FakeUpstream::start().await;
    let traffic = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_addr = admin.local_addr().expect("address");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sharegate.toml");
    std::fs::write(&path, Setup::new(&up).toml()).expect("write the config");
    let state = state_from_file(&path).await;
    let gw = TestGateway::serve(
        Listeners {
            traffic: vec![traffic],
            redirect: Vec::new(),
            admin: Some(admin),
        },
        state,
    );
    let cap = sharegate::server::ADMIN_CONNECTIONS;
    let mut held = Vec::new();
    for _ in 0..cap + 20 {
        held.push(connect(OUTSIDE, admin_addr).await);
    }
    let active = || gw.state.metrics.active_connections.get();
    eventually("the admin listener to take its connections", || {
        let n = active();
        async move { (n >= i64::try_from(cap).unwrap()).then_some(()) }
    })
    .await;
    for i in 0..20 {
        let r = request(INSIDE, gw.addr, "GET", "/api/v1/info", &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
        up.only("a traffic request beside the flood");
        let n = active();
        // Traffic connections just closed may still be counted for a
        // moment; the 20 idle ones past the bound must never be.
        assert!(
            n <= i64::try_from(cap).unwrap() + 10,
            "round {i}: {n} connections open, over the admin listener's {cap} and a few requests"
        );
    }
    drop(held);
    let answer = raw_request(
        INSIDE,
        admin_addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

/// The admin listener serves reads only; its `405` says which methods it
/// takes (RFC 9110 §15.5.6: `Allow` is required on a 405), as every other
/// refusal of a method does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_refuses_writes_with_allow() {
    let up = FakeUpstream::start().await;
    let ops = from_file(&Setup::new(&up).toml(), true).await;
    let admin = ops.admin.expect("admin listener");
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = request(LOCAL, admin, method, "/healthz", &[], "").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"), "{method}");
    }
    up.assert_silent("the admin listener forwards nothing");
}

/// A SIGHUP that arrives while the gateway is still starting (here: while
/// it waits for its JWKS URL, as it may for `jwt.jwks_timeout`) must not
/// end the process, as SIGHUP's default action would: `systemctl reload`
/// or a log rotation's signal can come at any moment. It is taken as a
/// reload once the gateway is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_while_starting_does_not_kill_the_gateway() {
    const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;
    let up = FakeUpstream::start().await;
    let idp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the IdP");
    let idp_addr = idp.local_addr().expect("IdP address");
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sharegate.toml");
    let mut setup = Setup::new(&up);
    setup.extra = format!(
        "[admin]\nlisten = \"off\"\n\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n[identity.jwt]\nsources = [\"bearer\"]\nalgorithms = [\"ES256\"]\nissuers = [\"https://idp.test\"]\naudiences = [\"sharegate\"]\njwks_url = \"http://{idp_addr}/jwks\"\n"
    );
    std::fs::write(&path, setup.toml()).expect("write the config");
    let mut gateway = RunningBinary::start(&path, None);
    let addr = gateway.until_listening(|_| {}).await;
    async fn answer_jwks(mut conn: tokio::net::TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{JWKS}",
            JWKS.len()
        );
        let _ = conn.write_all(reply.as_bytes()).await;
    }
    // The gateway is fetching its keys: it is still starting.
    let (first, _) = within("the JWKS fetch at start", idp.accept())
        .await
        .expect("accept the JWKS fetch");
    gateway.signal("HUP");
    answer_jwks(first).await;
    // Later fetches (the reload the signal asked for) get the same keys.
    let idp_task = tokio::spawn(async move {
        while let Ok((conn, _)) = idp.accept().await {
            tokio::spawn(answer_jwks(conn));
        }
    });

    let r = request(LOCAL, addr, "GET", "/api/v1/info", &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    up.only("a request after the SIGHUP");

    let exit = gateway.stop().await;
    idp_task.abort();
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
}
