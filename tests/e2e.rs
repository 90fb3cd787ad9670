//! End to end, with the clients people use: the official LangSmith Python
//! SDK, curl over TLS (HTTP/1.1 and HTTP/2), curl from hosts in network
//! namespaces of their own, headless Chromium, and nginx as a caching proxy
//! in front of the gateway. Each test starts the real gateway in front of a
//! stand-in LangSmith (`tests/e2e/standin.rs`, or the suite's recording
//! upstream) that records what reached it, and asserts on what the client
//! saw and on what the upstream received.
//!
//! The external programs are optional where a developer runs `cargo test`
//! (CI installs them all through `.ci/run`): a test whose program is missing,
//! or that lacks the privilege to create network namespaces, says
//! `skipped: ...` on stderr and passes. Every child process has a deadline
//! and is killed with its process group when it passes; nothing waits on a
//! fixed port or a sleep.

mod common;
#[path = "e2e/standin.rs"]
mod standin;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{within, TestGateway, INSIDE, MANAGE_OUTSIDE, OUTSIDE, SHARE_OUTSIDE};
use serde_json::Value;
use standin::{lines, StandIn, CHILD_RUN_ID, DATASET_ID, PAGE_HEADING, PUBLIC_ORIGIN, RUN_ID};
use tokio::net::TcpListener;

/// Share tokens the tests seed in the stand-in (UUIDs, as LangSmith mints).
const RUN_TOKEN: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const DATASET_TOKEN: &str = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9";

/// The deadline of one external program. Generous for a cold Python import
/// or a first Chromium start on a loaded two-core machine; a hung child
/// fails the test instead of hanging it.
const PROGRAM_DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Programs

/// Says why a test did not run, where `cargo test` shows it (libtest
/// captures `eprintln!`, not a direct write to stderr).
fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

/// The file `name` resolves to on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd` to completion within `deadline`, output captured. On the
/// deadline the child's whole process group is killed (Chromium forks
/// helpers) and the test fails naming `what`.
async fn run_program(what: &str, mut cmd: Command, deadline: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // Nothing from the environment may send a client through a proxy.
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pgid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(deadline, waited).await {
        Ok(joined) => joined
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .status();
            panic!("{what} did not finish within {deadline:?}; killed it");
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// Gateway

/// The e2e policy: `inside` networks may read and manage shares, every
/// other route is open to anyone, and links the stand-in mints on its
/// public origin are rewritten to `private_origin`.
fn policy(upstream: &str, listen: SocketAddr, inside: &[&str], private_origin: &str) -> String {
    policy_with(upstream, listen, inside, private_origin, "")
}

fn policy_with(
    upstream: &str,
    listen: SocketAddr,
    inside: &[&str],
    private_origin: &str,
    server_extra: &str,
) -> String {
    let inside: Vec<String> = inside.iter().map(|n| format!("{n:?}")).collect();
    format!(
        r#"
[server]
listen = ["{listen}"]
{server_extra}

[upstream]
url = "{upstream}"
connect_timeout = "5s"
response_timeout = "20s"

[networks]
inside = [{inside}]

[share]
profile = "langsmith"
allow_from = ["inside"]
manage_from = ["inside"]

[default]
allow_from = "any"

[admin]
listen = "off"

[rewrite]
from = ["{PUBLIC_ORIGIN}"]
to = "{private_origin}"
"#,
        inside = inside.join(", "),
    )
}

/// A gateway on `127.0.0.1:0` in front of `up`, with `inside` networks.
async fn gateway(up: &StandIn, inside: &[&str]) -> (TestGateway, String) {
    let listener = within("binding the gateway", TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind the gateway");
    let addr = listener.local_addr().expect("gateway address");
    let origin = format!("http://{addr}");
    let gw = TestGateway::start_on(listener, &policy(&up.url(), addr, inside, &origin)).await;
    (gw, origin)
}

// ---------------------------------------------------------------------------
// The LangSmith Python SDK

/// Runs `tests/e2e/sdk_check.py` and returns its report.
async fn sdk(python: &Path, endpoint: &str, mode: &str, extra: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sdk_check.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args(["--endpoint", endpoint, "--mode", mode])
        .args(["--run-id", RUN_ID, "--dataset-id", DATASET_ID])
        .args(extra)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_program(
        &format!("sdk_check.py --mode {mode}"),
        cmd,
        PROGRAM_DEADLINE,
    )
    .await;
    assert!(
        out.status.success(),
        "sdk_check.py --mode {mode} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    let text = stdout(&out);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "sdk_check.py printed no JSON report ({e}):\n{text}\n{}",
            stderr(&out)
        )
    })
}

/// The result of the SDK call `op` in a report.
fn op<'a>(report: &'a Value, op: &str) -> &'a Value {
    report["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["op"] == op))
        .unwrap_or_else(|| panic!("the report has no {op}: {report}"))
}

fn ok<'a>(report: &'a Value, name: &str) -> &'a Value {
    let r = op(report, name);
    assert_eq!(r["ok"], true, "{name} should succeed from inside: {r}");
    &r["value"]
}

/// Asserts that `name` raised the SDK's error for an HTTP `status` whose
/// `{"detail": ...}` is the gateway's refusal `detail`.
fn refused(report: &Value, name: &str, status: u16, detail: &str) {
    let r = op(report, name);
    assert_eq!(r["ok"], false, "{name} must fail from outside: {r}");
    assert_eq!(r["status"], status, "{name}: {r}");
    assert_eq!(r["detail"], detail, "{name}: {r}");
    // A 403 is not a 401 or a 404 to the SDK: it raises its generic
    // LangSmithError, whose message names the call.
    assert_eq!(r["error"], "LangSmithError", "{name}: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langsmith_sdk_shares_inside_and_is_refused_outside() {
    const TEST: &str = "langsmith_sdk";
    let Some(python) = on_path("python3") else {
        skipped(
            TEST,
            "python3 is not on PATH (CI installs it through .ci/run)",
        );
        return;
    };
    let mut probe = Command::new(&python);
    probe.args(["-c", "import langsmith"]);
    let probed = run_program("python3 -c 'import langsmith'", probe, PROGRAM_DEADLINE).await;
    if !probed.status.success() {
        skipped(
            TEST,
            "the langsmith package is not installed (pip install langsmith; CI does)",
        );
        return;
    }

    let up = StandIn::start().await;
    let (_gw, endpoint) = gateway(&up, &["127.0.0.2/32"]).await;

    // Inside (127.0.0.2): the owner's whole share lifecycle works.
    let report = sdk(&python, &endpoint, "inside", &[]).await;
    assert_eq!(report["source"], INSIDE.to_string(), "{report}");
    let url = ok(&report, "share_run")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The SDK sends the token it wants (a fresh UUID) and builds the link
    // from the one the upstream answered with.
    let token = url
        .strip_prefix(&format!("{endpoint}/public/"))
        .and_then(|rest| rest.strip_suffix("/r"))
        .unwrap_or_else(|| panic!("share_run's link names the gateway: {url}"))
        .to_owned();
    assert_eq!(token.len(), 36, "a UUID share token: {url}");
    assert_eq!(
        ok(&report, "read_run_shared_link"),
        &Value::from(url.clone())
    );
    assert_eq!(ok(&report, "run_is_shared"), true);
    let run = ok(&report, "read_shared_run");
    assert_eq!(run["id"], RUN_ID);
    assert_eq!(run["name"], "answer");
    // The run named its share page on the public origin; the SDK got the
    // private one.
    assert_eq!(
        run["outputs"]["link"],
        format!("{endpoint}/public/{token}/r"),
        "the link in the run's outputs must be rewritten: {run}"
    );
    let listed = ok(&report, "list_shared_runs");
    let ids: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [RUN_ID, CHILD_RUN_ID], "{listed}");
    let ds = ok(&report, "share_dataset");
    let dtoken = ds["share_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(dtoken.len(), 36, "a UUID share token: {ds}");
    assert_eq!(ds["url"], format!("{endpoint}/public/{dtoken}/d"));
    let dataset = ok(&report, "read_shared_dataset");
    assert_eq!(dataset["id"], DATASET_ID);
    assert_eq!(dataset["name"], "support-questions");
    assert!(ok(&report, "unshare_run").is_null());
    assert_eq!(ok(&report, "run_is_shared_after_unshare"), false);
    let gone = op(&report, "read_shared_run_after_unshare");
    assert_eq!(gone["error"], "LangSmithNotFoundError", "{gone}");
    assert!(ok(&report, "unshare_dataset").is_null());
    let gone = op(&report, "read_shared_dataset_after_unshare");
    assert_eq!(gone["error"], "LangSmithNotFoundError", "{gone}");
    assert_eq!(up.run_share(), None, "unshare_run reached the stand-in");
    assert_eq!(
        up.dataset_share(),
        None,
        "unshare_dataset reached the stand-in"
    );

    // What reached the stand-in: exactly the SDK's calls, in order, each
    // from the inside address as the gateway saw it.
    let seen = up.take();
    let expected = [
        format!("PUT /api/v1/runs/{RUN_ID}/share"),
        format!("GET /api/v1/runs/{RUN_ID}/share"),
        format!("GET /api/v1/runs/{RUN_ID}/share"),
        format!("GET /api/v1/public/{token}/run"),
        format!("POST /api/v1/public/{token}/runs/query"),
        format!("PUT /api/v1/datasets/{DATASET_ID}/share"),
        format!("GET /api/v1/public/{dtoken}/datasets"),
        format!("DELETE /api/v1/runs/{RUN_ID}/share"),
        format!("GET /api/v1/runs/{RUN_ID}/share"),
        format!("GET /api/v1/public/{token}/run"),
        format!("DELETE /api/v1/datasets/{DATASET_ID}/share"),
        format!("GET /api/v1/public/{dtoken}/datasets"),
    ];
    assert_eq!(lines(&seen), expected);
    for s in &seen {
        assert_eq!(
            s.header("x-forwarded-for").as_deref(),
            Some("127.0.0.2"),
            "{} {}",
            s.method,
            s.target
        );
        assert!(
            s.header("user-agent")
                .is_some_and(|ua| ua.starts_with("langsmith-py/")),
            "{:?}",
            s.header("user-agent")
        );
    }
    let put = &seen[0];
    assert_eq!(put.json()["run_id"], RUN_ID);
    assert_eq!(put.json()["share_token"], token.as_str());

    // Outside (127.0.0.3): shares that exist upstream stay unreadable, and
    // none can be created or revoked. Nothing reaches the stand-in.
    up.seed_run_share(RUN_TOKEN);
    up.seed_dataset_share(DATASET_TOKEN);
    let report = sdk(
        &python,
        &endpoint,
        "outside",
        &["--run-token", RUN_TOKEN, "--dataset-token", DATASET_TOKEN],
    )
    .await;
    assert_eq!(report["source"], OUTSIDE.to_string(), "{report}");
    for read in ["read_shared_run", "list_shared_runs", "read_shared_dataset"] {
        refused(&report, read, 403, SHARE_OUTSIDE);
    }
    for manage in [
        "read_run_shared_link",
        "share_run",
        "share_dataset",
        "unshare_run",
        "unshare_dataset",
    ] {
        refused(&report, manage, 403, MANAGE_OUTSIDE);
    }
    let seen = up.take();
    assert!(
        seen.is_empty(),
        "nothing from outside may reach the upstream, but it received {:?}",
        lines(&seen)
    );
    assert_eq!(up.run_share().as_deref(), Some(RUN_TOKEN));
    assert_eq!(up.dataset_share().as_deref(), Some(DATASET_TOKEN));
}

// ---------------------------------------------------------------------------
// curl over TLS

/// What curl reported for one request.
#[derive(Debug)]
struct Curled {
    /// curl's exit status (0: a response arrived, whatever its status).
    exit: i32,
    status: u16,
    http_version: String,
    body: String,
    stderr: String,
}

const WRITE_OUT_MARK: &str = "\n@@sharegate-e2e ";

/// Runs curl with `args` (plus deadlines, no proxy, and a write-out line
/// naming the status and the HTTP version). `netns`: run it in that
/// network namespace.
async fn curl(netns: Option<&str>, args: &[&str]) -> Curled {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    cmd.args([
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--connect-timeout",
        "10",
        "--max-time",
        "20",
        "--write-out",
    ])
    .arg(format!("{WRITE_OUT_MARK}%{{http_code}} %{{http_version}}"))
    .args(args);
    let out = run_program(&format!("curl {}", args.join(" ")), cmd, PROGRAM_DEADLINE).await;
    let text = stdout(&out);
    let (body, tail) = text.rsplit_once(WRITE_OUT_MARK).unwrap_or((&text, "0 0"));
    let mut tail = tail.split_whitespace();
    Curled {
        exit: out.status.code().unwrap_or(-1),
        status: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: tail.next().unwrap_or_default().to_owned(),
        body: body.to_owned(),
        stderr: stderr(&out),
    }
}

fn detail_of(c: &Curled) -> String {
    serde_json::from_str::<Value>(&c.body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| c.body.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_tls_http1_and_http2_inside_and_outside() {
    const TEST: &str = "curl_tls";
    if on_path("curl").is_none() {
        skipped(TEST, "curl is not on PATH (CI installs it through .ci/run)");
        return;
    }
    // A development CA and a server certificate it signed, from the same
    // code as `sharegate certs`.
    let dir = tempfile::tempdir().expect("temporary directory");
    let args = sharegate::certs::CertsArgs {
        dir: dir.path().to_path_buf(),
        names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        ..Default::default()
    };
    sharegate::certs::run(&args).unwrap_or_else(|e| panic!("sharegate certs: {e}"));
    let ca = dir.path().join("ca.crt");
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");

    let up = StandIn::start().await;
    up.seed_run_share(RUN_TOKEN);
    let listener = within("binding the gateway", TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind the gateway");
    let addr = listener.local_addr().expect("gateway address");
    let origin = format!("https://{addr}");
    let toml = policy_with(
        &up.url(),
        addr,
        &["127.0.0.2/32"],
        &origin,
        &format!("tls_cert = {cert:?}\ntls_key = {key:?}"),
    );
    let _gw = TestGateway::start_on(listener, &toml).await;

    let ca = ca.to_str().expect("a UTF-8 temporary path");
    let run_url = format!("{origin}/api/v1/public/{RUN_TOKEN}/run");
    let page_url = format!("{origin}/public/{RUN_TOKEN}/r");
    let share_url = format!("{origin}/api/v1/runs/{RUN_ID}/share");
    let inside = INSIDE.to_string();
    let outside = OUTSIDE.to_string();

    // Without the CA, curl must not trust the gateway: the handshake is
    // really verified against the generated CA below.
    let untrusted = curl(None, &["--interface", &inside, &run_url]).await;
    assert_eq!(untrusted.exit, 60, "curl without --cacert: {untrusted:?}");
    assert!(
        untrusted.stderr.contains("certificate"),
        "curl names the certificate problem: {untrusted:?}"
    );
    assert!(up.take().is_empty());

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        // Inside: the shared run, over the protocol asked for, its link
        // rewritten to the private (https) origin.
        let c = curl(
            None,
            &["--cacert", ca, flag, "--interface", &inside, &run_url],
        )
        .await;
        assert_eq!((c.exit, c.status), (0, 200), "inside {flag}: {c:?}");
        assert_eq!(c.http_version, version, "inside {flag}: {c:?}");
        let run: Value = serde_json::from_str(&c.body).expect("the run as JSON");
        assert_eq!(run["id"], RUN_ID);
        assert_eq!(
            run["outputs"]["link"],
            format!("{origin}/public/{RUN_TOKEN}/r")
        );
        let got = up.take();
        assert_eq!(
            lines(&got),
            [format!("GET /api/v1/public/{RUN_TOKEN}/run")],
            "inside {flag}"
        );
        assert_eq!(
            got[0].header("x-forwarded-for").as_deref(),
            Some("127.0.0.2")
        );
        assert_eq!(got[0].header("x-forwarded-proto").as_deref(), Some("https"));

        // Outside: refused with the reason, over the same protocol, and
        // nothing reaches the upstream: not the read, not the page, not a
        // share being created.
        let c = curl(
            None,
            &["--cacert", ca, flag, "--interface", &outside, &run_url],
        )
        .await;
        assert_eq!((c.exit, c.status), (0, 403), "outside {flag}: {c:?}");
        assert_eq!(c.http_version, version, "outside {flag}: {c:?}");
        assert_eq!(detail_of(&c), SHARE_OUTSIDE, "outside {flag}");
        let c = curl(
            None,
            &[
                "--cacert",
                ca,
                flag,
                "--interface",
                &outside,
                "-H",
                "Accept: text/html",
                &page_url,
            ],
        )
        .await;
        assert_eq!((c.status, c.http_version.as_str()), (403, version), "{c:?}");
        assert!(c.body.contains(SHARE_OUTSIDE), "the refusal page: {c:?}");
        // Creating a share. Over HTTP/2 without a body: the gateway refuses
        // before the body arrives and then resets the stream with NO_ERROR
        // (RFC 9113 section 8.1), which curl 7.88 (Debian 12) sometimes
        // reports as error 92 instead of showing the 403 it received.
        let body = format!(r#"{{"run_id":"{RUN_ID}"}}"#);
        let mut put = vec!["--cacert", ca, flag, "--interface", &outside, "-X", "PUT"];
        if version == "1.1" {
            put.extend(["-H", "Content-Type: application/json", "--data", &body]);
        }
        put.push(&share_url);
        let c = curl(None, &put).await;
        assert_eq!((c.status, c.http_version.as_str()), (403, version), "{c:?}");
        assert_eq!(detail_of(&c), MANAGE_OUTSIDE);
        let got = up.take();
        assert!(
            got.is_empty(),
            "outside {flag} reached the upstream: {:?}",
            lines(&got)
        );
    }
    assert_eq!(up.run_share().as_deref(), Some(RUN_TOKEN));
}

// ---------------------------------------------------------------------------
// Network namespaces

/// Two hosts of their own, each in a network namespace joined to this one
/// by a veth pair: "inside" on 10.200.N.0/24, "outside" on 10.200.N+1.0/24
/// (N from the process id, so that concurrent runs do not collide). The
/// addresses exist only on these links. Dropping the guard deletes the
/// namespaces and links, also when a test fails.
struct Hosts {
    inside_ns: String,
    outside_ns: String,
    links: Vec<String>,
    /// Addresses: (root side, host side) for inside and outside.
    inside: (Ipv4Addr, Ipv4Addr),
    outside: (Ipv4Addr, Ipv4Addr),
    inside_net: String,
}

/// `ip ARGS`, which must succeed.
async fn ip(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = run_program(&format!("ip {}", args.join(" ")), cmd, PROGRAM_DEADLINE).await;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), stderr(&out).trim()))
    }
}

const NETNS_PREFIX: &str = "sharegate-e2e-";

impl Hosts {
    /// Creates both hosts; `Err` when this process may not (the caller
    /// skips), a panic when setup fails half-way for another reason.
    async fn create() -> Result<Hosts, String> {
        if !is_root() {
            return Err("not running as root".to_owned());
        }
        if on_path("ip").is_none() {
            return Err("ip (iproute2) is not on PATH".to_owned());
        }
        remove_stale_namespaces().await;
        let pid = std::process::id();
        let n = u8::try_from(2 * (pid % 100) + 10).unwrap_or(10);
        let mut hosts = Hosts {
            inside_ns: format!("{NETNS_PREFIX}{pid}-in"),
            outside_ns: format!("{NETNS_PREFIX}{pid}-out"),
            links: Vec::new(),
            inside: (Ipv4Addr::new(10, 200, n, 1), Ipv4Addr::new(10, 200, n, 2)),
            outside: (
                Ipv4Addr::new(10, 200, n + 1, 1),
                Ipv4Addr::new(10, 200, n + 1, 2),
            ),
            inside_net: format!("10.200.{n}.0/24"),
        };
        // The first namespace tells whether we may create them at all.
        ip(&["netns", "add", &hosts.inside_ns]).await?;
        let setup = async {
            ip(&["netns", "add", &hosts.outside_ns]).await?;
            for (ns, (root_addr, host_addr), tag) in [
                (hosts.inside_ns.clone(), hosts.inside, "i"),
                (hosts.outside_ns.clone(), hosts.outside, "o"),
            ] {
                // Interface names are at most 15 bytes: "sg" + tag + pid.
                let root_if = format!("sg{tag}{pid}");
                let host_if = format!("sg{tag}{pid}h");
                ip(&[
                    "link", "add", &root_if, "type", "veth", "peer", "name", &host_if, "netns", &ns,
                ])
                .await?;
                hosts.links.push(root_if.clone());
                ip(&["addr", "add", &format!("{root_addr}/24"), "dev", &root_if]).await?;
                ip(&["link", "set", &root_if, "up"]).await?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{host_addr}/24"),
                    "dev",
                    &host_if,
                ])
                .await?;
                ip(&["-n", &ns, "link", "set", &host_if, "up"]).await?;
                ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
            }
            // The outside host reaches the gateway's address through its
            // own link into this namespace.
            ip(&[
                "-n",
                &hosts.outside_ns,
                "route",
                "add",
                &hosts.inside_net,
                "via",
                &hosts.outside.0.to_string(),
            ])
            .await
        };
        if let Err(e) = setup.await {
            drop(hosts);
            panic!("setting up the network namespaces failed: {e}");
        }
        Ok(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Synchronous on purpose: this also runs while a failed test
        // unwinds. Deleting a namespace deletes its end of each veth pair,
        // and with it the pair; the links are deleted too in case a
        // namespace was not made.
        for ns in [&self.inside_ns, &self.outside_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        for link in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Deletes namespaces a killed earlier run left behind (its process is
/// gone, or its process id is ours now), and their links.
async fn remove_stale_namespaces() {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "list"]);
    let out = run_program("ip netns list", cmd, PROGRAM_DEADLINE).await;
    for line in stdout(&out).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]).await;
            for tag in ["i", "o"] {
                let _ = ip(&["link", "del", &format!("sg{tag}{pid}")]).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_namespaces_inside_host_reads_outside_host_is_refused() {
    const TEST: &str = "network_namespaces";
    if on_path("curl").is_none() {
        skipped(TEST, "curl is not on PATH (CI installs it through .ci/run)");
        return;
    }
    let hosts = match Hosts::create().await {
        Ok(h) => h,
        Err(why) => {
            skipped(
                TEST,
                &format!("cannot create network namespaces ({why}); CI runs this as root"),
            );
            return;
        }
    };

    let up = StandIn::start().await;
    up.seed_run_share(RUN_TOKEN);
    // The gateway listens on its address on the inside link; its policy
    // names the inside subnet.
    let bind = SocketAddr::new(IpAddr::V4(hosts.inside.0), 0);
    let listener = within("binding the gateway", TcpListener::bind(bind))
        .await
        .unwrap_or_else(|e| panic!("bind the gateway to {bind}: {e}"));
    let addr = listener.local_addr().expect("gateway address");
    let origin = format!("http://{addr}");
    let toml = policy(&up.url(), addr, &[hosts.inside_net.as_str()], &origin);
    let _gw = TestGateway::start_on(listener, &toml).await;
    let run_url = format!("{origin}/api/v1/public/{RUN_TOKEN}/run");
    let page_url = format!("{origin}/public/{RUN_TOKEN}/r");
    let share_url = format!("{origin}/api/v1/runs/{RUN_ID}/share");

    // The inside host reads the share; the upstream sees its address.
    let c = curl(Some(&hosts.inside_ns), &[&run_url]).await;
    assert_eq!((c.exit, c.status), (0, 200), "inside host: {c:?}");
    let run: Value = serde_json::from_str(&c.body).expect("the run as JSON");
    assert_eq!(
        run["outputs"]["link"],
        format!("{origin}/public/{RUN_TOKEN}/r")
    );
    let got = up.take();
    assert_eq!(lines(&got), [format!("GET /api/v1/public/{RUN_TOKEN}/run")]);
    assert_eq!(
        got[0].header("x-forwarded-for"),
        Some(hosts.inside.1.to_string())
    );
    let c = curl(
        Some(&hosts.inside_ns),
        &["-H", "Accept: text/html", &page_url],
    )
    .await;
    assert_eq!(c.status, 200, "inside host, share page: {c:?}");
    assert!(c.body.contains(PAGE_HEADING), "{c:?}");
    up.take();

    // The outside host: the read, the page, the read claiming to be
    // forwarded for the inside host (no trusted proxies: ignored), and
    // creating a share are all refused before the upstream.
    let c = curl(Some(&hosts.outside_ns), &[&run_url]).await;
    assert_eq!((c.exit, c.status), (0, 403), "outside host: {c:?}");
    assert_eq!(detail_of(&c), SHARE_OUTSIDE);
    let c = curl(
        Some(&hosts.outside_ns),
        &["-H", "Accept: text/html", &page_url],
    )
    .await;
    assert_eq!(c.status, 403, "{c:?}");
    assert!(c.body.contains(SHARE_OUTSIDE), "the refusal page: {c:?}");
    let spoof = format!("X-Forwarded-For: {}", hosts.inside.1);
    let c = curl(Some(&hosts.outside_ns), &["-H", &spoof, &run_url]).await;
    assert_eq!(c.status, 403, "a spoofed X-Forwarded-For: {c:?}");
    let c = curl(
        Some(&hosts.outside_ns),
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data",
            "{}",
            &share_url,
        ],
    )
    .await;
    assert_eq!(c.status, 403, "{c:?}");
    assert_eq!(detail_of(&c), MANAGE_OUTSIDE);
    let got = up.take();
    assert!(
        got.is_empty(),
        "the outside host reached the upstream: {:?}",
        lines(&got)
    );
    drop(hosts);
}

// ---------------------------------------------------------------------------
// Headless Chromium

/// Where screenshots are kept after the run.
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-screenshots")
}

/// No host resolves but the loopback address the gateways are on (the rule
/// covers IP literals too): nothing else may be fetched.
const ONLY_LOOPBACK: &str = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1";

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or
/// `--screenshot=FILE`) and a profile of its own.
async fn chromium(chromium: &Path, action: &str, url: &str) -> Output {
    chromium_with(chromium, ONLY_LOOPBACK, &[], action, url).await
}

/// [`chromium`] with its host resolver rules and extra switches.
async fn chromium_with(
    chromium: &Path,
    resolver_rules: &str,
    extra: &[&str],
    action: &str,
    url: &str,
) -> Output {
    let profile = tempfile::tempdir().expect("a Chromium profile directory");
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-proxy-server",
        "--window-size=1024,768",
    ])
    .arg(format!("--host-resolver-rules={resolver_rules}"))
    .args(extra)
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(action)
    .arg(url);
    let out = run_program(&format!("chromium {action} {url}"), cmd, PROGRAM_DEADLINE).await;
    assert!(
        out.status.success(),
        "chromium {action} {url} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    out
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000,
        "{} is not a screenshot ({} bytes)",
        path.display(),
        bytes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_share_inside_and_the_refusal_outside() {
    const TEST: &str = "chromium";
    let Some(browser) = on_path("chromium") else {
        skipped(
            TEST,
            "chromium is not on PATH (CI installs it through .ci/run)",
        );
        return;
    };
    // Chromium cannot choose its source address, so it is 127.0.0.1 for
    // both views: one gateway counts 127.0.0.1 as inside, the other only
    // 127.0.0.2 (127.0.0.1 is then outside). Each has a stand-in of its own,
    // so what reached which upstream is unambiguous.
    let up_in = StandIn::start().await;
    let up_out = StandIn::start().await;
    up_in.seed_run_share(RUN_TOKEN);
    up_out.seed_run_share(RUN_TOKEN);
    let (_gw_in, origin_in) = gateway(&up_in, &["127.0.0.1/32"]).await;
    let (_gw_out, origin_out) = gateway(&up_out, &["127.0.0.2/32"]).await;
    let page_in = format!("{origin_in}/public/{RUN_TOKEN}/r");
    let page_out = format!("{origin_out}/public/{RUN_TOKEN}/r");

    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).unwrap_or_else(|e| panic!("create {}: {e}", shots.display()));
    let shot_in = shots.join("share-inside.png");
    let shot_out = shots.join("share-outside.png");
    for s in [&shot_in, &shot_out] {
        let _ = std::fs::remove_file(s);
    }
    let shot_in_arg = format!("--screenshot={}", shot_in.display());
    let shot_out_arg = format!("--screenshot={}", shot_out.display());
    let (dom_in, dom_out, _, _) = tokio::join!(
        chromium(&browser, "--dump-dom", &page_in),
        chromium(&browser, "--dump-dom", &page_out),
        chromium(&browser, &shot_in_arg, &page_in),
        chromium(&browser, &shot_out_arg, &page_out),
    );

    // Inside: the stand-in's page, its permalink rewritten to the gateway.
    let dom = stdout(&dom_in);
    assert!(dom.contains(PAGE_HEADING), "inside, the share page: {dom}");
    assert!(
        dom.contains(&format!("href=\"{page_in}\"")),
        "the permalink must point at the private origin: {dom}"
    );
    assert!(!dom.contains(PUBLIC_ORIGIN), "{dom}");
    assert!(!dom.contains(SHARE_OUTSIDE), "{dom}");
    // Outside: the friendly refusal page, and no trace of the share.
    let dom = stdout(&dom_out);
    assert!(
        dom.contains(SHARE_OUTSIDE),
        "outside, the refusal page: {dom}"
    );
    assert!(dom.contains("Connect to the company network"), "{dom}");
    assert!(!dom.contains(PAGE_HEADING), "{dom}");
    assert_png(&shot_in);
    assert_png(&shot_out);
    let _ = writeln!(
        std::io::stderr(),
        "chromium screenshots: {} {}",
        shot_in.display(),
        shot_out.display()
    );

    // The share page reached the inside view's upstream (once per
    // Chromium run; a favicon request may come along), never the outside
    // view's.
    let page_path = format!("GET /public/{RUN_TOKEN}/r");
    let seen_in = lines(&up_in.take());
    assert_eq!(
        seen_in.iter().filter(|l| **l == page_path).count(),
        2,
        "{seen_in:?}"
    );
    let seen_out = lines(&up_out.take());
    assert!(
        !seen_out.iter().any(|l| l.contains("/public/")),
        "the outside view reached the upstream: {seen_out:?}"
    );
}

/// A page on another site, opened by a browser inside the network, tries to
/// read a share through that browser: `fetch` and an `<img>` of the share
/// API, and the share page in an `<iframe>`. Real Chromium marks them
/// `Sec-Fetch-Site: cross-site`; the gateway refuses the two that open no
/// page before the upstream, so neither reaches it (a CORS error alone would
/// still let the request through), and lets the framed page (a navigation)
/// load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_cannot_read_a_share_for_a_page_on_another_site() {
    read_attempt_from_another_page("chromium cross-site", None, "attacker.test").await;
}

/// The same from a page on another host of the gateway's own site
/// (`uploads.corp.localhost` next to `langsmith.corp.localhost`: user content, a DNS
/// name taken over). Chromium marks its requests `same-site`, which alone
/// would pass; with `server.hosts` set, an `Origin` outside it is judged as
/// cross-site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_cannot_read_a_share_for_a_page_on_a_sibling_host() {
    read_attempt_from_another_page(
        "chromium same-site",
        Some("langsmith.corp.localhost"),
        "uploads.corp.localhost",
    )
    .await;
}

/// Serves a page on `page_host` that fetches the share API, shows it in an
/// `<img>` and frames the share page, all on the gateway (named
/// `gateway_host`, its one `server.hosts` entry, or by its address); opens
/// it in Chromium and checks that only the framed page reached the
/// upstream.
async fn read_attempt_from_another_page(test: &str, gateway_host: Option<&str>, page_host: &str) {
    let Some(browser) = on_path("chromium") else {
        skipped(
            test,
            "chromium is not on PATH (CI installs it through .ci/run)",
        );
        return;
    };
    let up = StandIn::start().await;
    up.seed_run_share(RUN_TOKEN);
    let listener = within("binding the gateway", TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind the gateway");
    let addr = listener.local_addr().expect("gateway address");
    let (origin, hosts) = match gateway_host {
        Some(h) => (
            format!("http://{h}:{}", addr.port()),
            format!("hosts = [{h:?}]"),
        ),
        None => (format!("http://{addr}"), String::new()),
    };
    let config = policy_with(&up.url(), addr, &["127.0.0.1/32"], &origin, &hosts);
    let _gw = TestGateway::start_on(listener, &config).await;
    let api = format!("{origin}/api/v1/public/{RUN_TOKEN}/run");
    let page = format!("{origin}/public/{RUN_TOKEN}/r");
    // The other page's host resolves to loopback for this browser only. The
    // page writes what the fetch got into the document.
    let attacker = common::FakeUpstream::start().await;
    let html = format!(
        "<!doctype html><html><body><p id=\"result\">pending</p>\
<img src=\"{api}\"><iframe src=\"{page}\"></iframe>\
<script>fetch(\"{api}\").then(r => r.text()).then(\
t => {{ document.getElementById('result').textContent = 'read: ' + t; }},\
e => {{ document.getElementById('result').textContent = 'blocked: ' + e; }});</script>\
</body></html>"
    );
    attacker.on(
        "/",
        common::custom(move |_| {
            let html = html.clone();
            async move {
                common::upstream_response(
                    http::StatusCode::OK,
                    &[("content-type", "text/html")],
                    common::upstream_full(html),
                )
            }
        }),
    );
    let attacker_page = format!("http://{page_host}:{}/", attacker.addr.port());
    let mut rules = format!("MAP {page_host} 127.0.0.1, ");
    if let Some(h) = gateway_host {
        rules.push_str(&format!("MAP {h} 127.0.0.1, "));
    }
    rules.push_str(ONLY_LOOPBACK);
    let out = chromium_with(
        &browser,
        &rules,
        // Let the fetch and the frame finish before the DOM is dumped.
        &["--virtual-time-budget=10000"],
        "--dump-dom",
        &attacker_page,
    )
    .await;
    let dom = stdout(&out);
    assert!(
        dom.contains("<p id=\"result\">blocked: "),
        "{test}: the fetch must fail: {dom}"
    );
    assert!(
        attacker.requests().iter().any(|r| r.target == "/"),
        "{test}: the other page was loaded"
    );

    let seen = lines(&up.take());
    assert!(
        !seen.iter().any(|l| l.contains("/api/v1/public/")),
        "{test}: a read of the share API from another page reached the upstream: {seen:?}"
    );
    assert!(
        seen.contains(&format!("GET /public/{RUN_TOKEN}/r")),
        "{test}: the framed share page (a navigation) loads: {seen:?}"
    );
}

// ---------------------------------------------------------------------------
// nginx around the gateway

/// nginx on a port of its own with `server` (directives) in its one server
/// block, and a cache zone `shared` it may use. Stopped (with its workers)
/// on drop.
struct Nginx {
    addr: SocketAddr,
    pid_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `None` when no nginx is installed.
    async fn start(server: &str) -> Option<Nginx> {
        let nginx = on_path("nginx").or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/nginx");
            sbin.is_file().then_some(sbin)
        })?;
        let dir = tempfile::tempdir().expect("an nginx prefix directory");
        // nginx takes a port number, not a bound socket: ask the kernel for
        // a free one, and take another if it was taken again before nginx
        // bound it.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let conf = dir.path().join("nginx.conf");
            let pid_file = dir.path().join("nginx.pid");
            let prefix = dir.path().display();
            // `user root` only matters when the tests run as root (as in
            // CI): the workers must write the cache inside this
            // directory. nginx ignores it, with a warning, otherwise.
            std::fs::write(
                &conf,
                format!(
                    r#"user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    proxy_cache_path {prefix}/cache keys_zone=shared:1m;
    server {{
        listen {addr};
{server}
    }}
}}
"#
                ),
            )
            .expect("write nginx.conf");
            // Without `daemon off` nginx returns once it has bound its
            // listener and forked: then it is ready to accept.
            let mut cmd = Command::new(&nginx);
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .args(["-e", "stderr"]);
            let out = run_program("nginx", cmd, PROGRAM_DEADLINE).await;
            if out.status.success() {
                return Some(Nginx {
                    addr,
                    pid_file,
                    _dir: dir,
                });
            }
            let err = stderr(&out);
            assert!(
                err.contains("Address already in use"),
                "nginx failed to start ({}):\n{err}",
                out.status
            );
        }
        panic!("nginx found no free port in five tries");
    }

    /// nginx with `proxy_cache` in front of a gateway, as a caching load
    /// balancer or ingress would be: it tells the gateway the client's
    /// address in `X-Forwarded-For` from `127.0.0.4` (a trusted proxy in
    /// [`Setup`]), and caches what the answers let it cache.
    async fn cache_in_front(gateway: SocketAddr) -> Option<Nginx> {
        Nginx::start(&format!(
            r#"        location / {{
            proxy_pass http://{gateway};
            proxy_http_version 1.1;
            proxy_bind 127.0.0.4;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_cache shared;
            add_header X-Cache-Status $upstream_cache_status always;
        }}"#
        ))
        .await
    }

    /// LangSmith's frontend as its helm chart configures it (the `location`
    /// blocks of `frontend/config-map.yaml`, unanchored regular expressions
    /// and rewrites as written there), with `backend` standing in for the
    /// API servers and a fixed page for the single-page app.
    async fn langsmith_frontend(backend: SocketAddr) -> Option<Nginx> {
        let pass = format!(
            "proxy_set_header Connection ''; proxy_http_version 1.1; proxy_pass http://{backend};"
        );
        Nginx::start(&format!(
            r#"        location / {{ return 200 "the single-page app\n"; }}
        location ~ /api/v1/auth {{ rewrite /api/v1/(.*) /$1 break; {pass} }}
        location ~ /api/public/download {{ {pass} }}
        location ~ /api/v1 {{ {pass} }}
        location ~ /api {{ rewrite /api/(.*) /api/v1/$1 break; {pass} }}"#
        ))
        .await
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its workers on TERM.
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill")
                .args(["-s", "TERM", pid.trim()])
                .status();
        }
    }
}

/// The share answers are cacheable as the upstream sends them (`public,
/// max-age`, or nginx's own `X-Accel-Expires`), and a cache sits in front of
/// the gateway. With `share.cache_private = false`, an insider's read fills
/// the cache and the next outsider gets the share from it, never reaching
/// the gateway: the hole is real. By default the gateway's answers are
/// private, so the cache keeps nothing: the outsider reaches the gateway
/// and is refused, and the insider's next read goes to the upstream again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_in_front_never_hands_an_insiders_share_to_an_outsider() {
    use common::{fill, request, Behaviour, FakeUpstream, Setup};
    use http::StatusCode;
    const TEST: &str = "nginx cache in front";
    let up = FakeUpstream::start().await;
    let cacheable = |how: (&'static str, &'static str)| Behaviour::Respond {
        status: StatusCode::OK,
        headers: vec![("content-type", "application/json"), how],
        body: "{\"name\": \"the shared run\"}",
    };
    let by_cache_control = fill("/api/v1/public/{t}/run");
    let by_accel_expires = fill("/api/v2/public/{t}/runs/query");
    up.on(
        &by_cache_control,
        cacheable(("cache-control", "public, max-age=600")),
    );
    up.on(&by_accel_expires, cacheable(("x-accel-expires", "600")));
    let paths = [by_cache_control.as_str(), by_accel_expires.as_str()];

    let mut setup = Setup::new(&up);
    setup.share_extra = "cache_private = false\n".to_owned();
    let gw = setup.start().await;
    let Some(cache) = Nginx::cache_in_front(gw.addr).await else {
        skipped(
            TEST,
            "nginx is not on PATH (CI installs it through .ci/run)",
        );
        return;
    };
    for path in paths {
        let r = request(INSIDE, cache.addr, "GET", path, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.summary());
        up.only("the insider's read");
        let r = request(OUTSIDE, cache.addr, "GET", path, &[], "").await;
        assert_eq!(
            (r.status, r.header("x-cache-status").as_deref()),
            (StatusCode::OK, Some("HIT")),
            "{path}: with the key off, the outsider gets the share from the cache: {}",
            r.summary()
        );
        up.assert_silent("the outsider's read, served by the cache");
    }
    drop(cache);

    let gw = Setup::new(&up).start().await;
    let cache = Nginx::cache_in_front(gw.addr)
        .await
        .expect("nginx started before");
    for path in paths {
        let r = request(INSIDE, cache.addr, "GET", path, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.summary());
        up.only("the insider's read");
        let r = request(OUTSIDE, cache.addr, "GET", path, &[], "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.summary());
        assert_eq!(common::detail(&r), SHARE_OUTSIDE);
        up.assert_silent("the outsider's read");
        let r = request(INSIDE, cache.addr, "GET", path, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.summary());
        up.only("the insider's next read reaches the upstream too");
        let cache_control = r.header("cache-control").unwrap_or_default();
        assert!(cache_control.starts_with("private"), "{cache_control}");
        assert_eq!(r.header("x-accel-expires"), None);
    }
}

/// Behind the gateway, LangSmith's frontend as its helm chart sets it up:
/// it sends `/api/...` anywhere in a path to the API, and the deprecated
/// `/api/X` to `/api/v1/X`. An outsider's share read and share management
/// spelled that way (`/x/api/public/T/run`, `/api/runs/ID/share`, ...) are
/// refused like their usual spelling and never reach the API; from inside,
/// the aliases work (they are real routes) and the deeper spellings are
/// refused as ambiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langsmiths_frontend_cannot_be_used_to_reach_shares_under_another_path() {
    use common::{fill, request, FakeUpstream, Setup};
    use http::StatusCode;
    const TEST: &str = "nginx as LangSmith's frontend";
    let backend = FakeUpstream::start().await;
    let Some(frontend) = Nginx::langsmith_frontend(backend.addr).await else {
        skipped(
            TEST,
            "nginx is not on PATH (CI installs it through .ci/run)",
        );
        return;
    };
    let gw = Setup::with_url(format!("http://{}", frontend.addr))
        .start()
        .await;
    let refused = [
        // (method, what the client sends, what the API would have received)
        ("GET", "/x/api/public/{t}/run", "/api/v1/public/{t}/run"),
        ("DELETE", "/x/api/public/{t}/run", "/api/v1/public/{t}/run"),
        (
            "GET",
            "/public/{t}/api/workspaces/current/shared",
            "/api/v1/workspaces/current/shared",
        ),
        ("PUT", "/x/api/runs/{id}/share", "/api/v1/runs/{id}/share"),
        ("PUT", "/api/runs/{id}/share", "/api/v1/runs/{id}/share"),
        (
            "DELETE",
            "/api/datasets/{id}/share",
            "/api/v1/datasets/{id}/share",
        ),
        (
            "GET",
            "/api/workspaces/current/shared",
            "/api/v1/workspaces/current/shared",
        ),
        (
            "PATCH",
            "/api/orgs/current/info",
            "/api/v1/orgs/current/info",
        ),
    ];
    for (method, sent, reached) in refused {
        let (sent, reached) = (fill(sent), fill(reached));
        let r = request(OUTSIDE, gw.addr, method, &sent, &[], "{}").await;
        assert!(
            matches!(r.status, StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN),
            "{method} {sent} from outside: {}",
            r.summary()
        );
        backend.assert_silent(&format!("{method} {sent} (the API would see {reached})"));
    }
    // From inside: an alias is the route it stands for, and reaches it; a
    // deeper spelling is refused whoever sends it.
    let r = request(
        INSIDE,
        gw.addr,
        "GET",
        "/api/workspaces/current/shared",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    assert_eq!(
        backend.only("the Shared URLs list by its old name").target,
        "/api/v1/workspaces/current/shared"
    );
    let deeper = fill("/x/api/public/{t}/run");
    let r = request(INSIDE, gw.addr, "GET", &deeper, &[], "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.summary());
    backend.assert_silent("a deeper spelling from inside");
    // The usual spelling, through the same frontend.
    let read = fill("/api/v1/public/{t}/run");
    let r = request(INSIDE, gw.addr, "GET", &read, &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.summary());
    assert_eq!(backend.only("a share read from inside").target, read);
    let r = request(OUTSIDE, gw.addr, "GET", "/o/any/projects", &[], "").await;
    assert_eq!(r.text(), "the single-page app\n");
    backend.assert_silent("the single-page app is the frontend's");
}
