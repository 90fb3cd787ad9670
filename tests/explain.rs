//! `sharegate explain` answers as the server does: the same request, sent
//! to a real gateway on loopback and described to the binary with the same
//! config file, gets the same decision, status and upstream request.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The binary with a clean environment (no `SHAREGATE__*` from the caller).
fn sharegate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sharegate"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SHAREGATE") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `explain --format json` of one request from the inside host.
fn explain(config: &Path, url: &str) -> serde_json::Value {
    let out = sharegate()
        .args(["explain", "--format", "json", "--config"])
        .arg(config)
        .args(["--from", &INSIDE.to_string(), "GET", url])
        .output()
        .expect("run sharegate explain");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{url}: {e}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// What the server did with a raw HTTP/1.1 request from the inside host:
/// the status and the request the upstream received, if any.
async fn served(
    gw: &TestGateway,
    up: &FakeUpstream,
    target: &str,
    host: &str,
) -> (u16, Option<Recorded>) {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let answer = raw_request(INSIDE, gw.addr, &raw).await;
    (raw_status(&answer), up.take().into_iter().next())
}

/// The request target as the client wrote it goes through hyper's parser
/// before the gateway's checks (which drops a fragment and refuses bytes a
/// URI cannot hold), and the scheme a listener speaks is the listener's,
/// whatever a URL given to `explain` says: a plain listener behind a
/// TLS-terminating balancer sees `Host: name` at port 80 and sends
/// `X-Forwarded-Proto: http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_answers_as_the_server_for_the_same_request() {
    let up = FakeUpstream::start().await;
    let mut setup = Setup::new(&up);
    setup.server_extra = "hosts = [\"sharegate.test:443\", \"localhost\"]".to_owned();
    let dir = tempfile::tempdir().expect("temporary directory");
    let (gw, path) = TestGateway::from_file(dir.path(), &setup.toml()).await;
    let share = fill("/public/{t}/r");

    for (target, host, url) in [
        (
            format!("{share}#/../../api/v1/runs/x/share"),
            "localhost",
            format!("{share}#/../../api/v1/runs/x/share"),
        ),
        (
            format!("{share}?q=<b>"),
            "localhost",
            format!("{share}?q=<b>"),
        ),
        (
            share.clone(),
            "sharegate.test",
            format!("https://sharegate.test{share}"),
        ),
        (
            share.clone(),
            "sharegate.test:443",
            format!("https://sharegate.test:443{share}"),
        ),
    ] {
        let (status, reached) = served(&gw, &up, &target, host).await;
        let ex = explain(&path, &url);
        let what = format!("{url}: the server answered {status}; explain said {ex}");
        match reached {
            Some(seen) => {
                assert_eq!(ex["decision"], "allowed", "{what}");
                let want = format!("{}{}", up.url(), seen.target);
                assert_eq!(ex["upstream"]["url"], want.as_str(), "{what}");
                let proto = ex["upstream"]["set_headers"]
                    .as_array()
                    .and_then(|h| h.iter().find(|kv| kv[0] == "x-forwarded-proto"))
                    .map(|kv| kv[1].clone());
                assert_eq!(
                    proto.as_ref().and_then(|p| p.as_str()),
                    seen.header("x-forwarded-proto").as_deref(),
                    "{what}"
                );
            }
            None => {
                assert_eq!(ex["decision"], "refused", "{what}");
                assert_eq!(ex["status"], status, "{what}");
            }
        }
    }
}
