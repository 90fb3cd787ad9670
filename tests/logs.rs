//! The log stream of a real `sharegate run` process: the access and audit
//! lines of a share read, in text and in JSON, reach standard error through
//! the buffered output (on its flush beat while running, and all of it at
//! exit), and carry the token only as a hash.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{FakeUpstream, Setup};

const TOKEN: &str = "6f1d2c3b-0000-4000-8000-123456789abc";

/// Kills the gateway when the test ends early, however it ends.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sharegate run` and waits (on the log's flush beat, not on an
/// exit) for the line that names its address.
fn start(
    config: &std::path::Path,
    format: &str,
) -> (Gateway, std::net::SocketAddr, BufReader<ChildStderr>) {
    let child = Command::new(env!("CARGO_BIN_EXE_sharegate"))
        .args(["run", "--config"])
        .arg(config)
        .args(["--log-format", format])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sharegate run");
    let mut gw = Gateway(child);
    let mut stderr = BufReader::new(gw.0.stderr.take().expect("stderr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            match stderr.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.contains("listening") => {
                    let _ = tx.send((line.clone(), stderr));
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    let (line, stderr) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no address logged; exit: {:?}", gw.0.try_wait()));
    let addr = line
        .split(['=', '"', ' '])
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (gw, addr, stderr)
}

fn signal(gw: &Gateway, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &gw.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name}");
}

/// A config for `upstream` with the admin listener off (tests run side by
/// side), written to a fresh directory.
fn setup(upstream: &FakeUpstream) -> Setup {
    let mut setup = Setup::new(upstream);
    setup.extra = "[admin]\nlisten = \"off\"\n".to_owned();
    setup
}

fn write_config(setup: &Setup) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("sharegate.toml");
    std::fs::write(&config, setup.toml()).expect("write the config");
    (dir, config)
}

/// Reads the log until what it has read so far satisfies `done` (or the
/// stream ends); gives back what it read and the rest of the stream.
fn read_until(
    mut stderr: BufReader<ChildStderr>,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> (String, BufReader<ChildStderr>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut seen = String::new();
        loop {
            line.clear();
            match stderr.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => seen.push_str(&line),
            }
            if done(&seen) {
                break;
            }
        }
        let _ = tx.send((seen, stderr));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the awaited log lines")
}

/// SIGTERM, then everything the process wrote until it exited.
fn stop(mut gw: Gateway, mut stderr: BufReader<ChildStderr>) -> String {
    signal(&gw, "TERM");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    let rest = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway exited after SIGTERM");
    let code = gw.0.wait().expect("wait for the gateway");
    assert!(code.success(), "exit status {code}: {rest}");
    rest
}

/// One allowed and one refused share read; `hosts` sets `server.hosts`
/// to the names the test client uses.
async fn one_share_read(format: &str, hosts: bool) -> String {
    let upstream = FakeUpstream::start().await;
    let mut setup = setup(&upstream);
    if hosts {
        setup.server_extra = "hosts = [\"127.0.0.1\"]\n".to_owned();
    }
    let (_dir, config) = write_config(&setup);
    let (gw, addr, stderr) = start(&config, format);
    let inside = "127.0.0.2".parse().unwrap();
    let r = common::request(
        inside,
        addr,
        "GET",
        &format!("/api/v1/public/{TOKEN}/runs/abc"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.summary());
    let outside = "127.0.0.3".parse().unwrap();
    let r = common::request(outside, addr, "GET", &format!("/public/{TOKEN}/r"), &[], "").await;
    assert_eq!(r.status, 403, "{}", r.summary());
    let log = stop(gw, stderr);
    assert!(!log.contains(TOKEN), "a clear token in the log:\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_of_a_share_read() {
    let log = one_share_read("text", false).await;
    // Without server.hosts the start-up warns of DNS rebinding.
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("server.hosts is empty")),
        "{log}"
    );
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" INFO sharegate::access: request "))
        .collect();
    assert_eq!(access.len(), 2, "{log}");
    let allowed = access[0];
    for field in [
        "class=public_api",
        "client=127.0.0.2",
        "method=GET",
        "path=/api/v1/public/{tok:",
        "decision=allowed",
        "rule=\"share.allow_from (/api/v1/public/{token}/**)\"",
        "decided_by=network",
        "reason=\"\"",
        "status=200",
        "complete=true",
        "duration_ms=",
    ] {
        assert!(allowed.contains(field), "{field} missing from {allowed}");
    }
    let refused = access[1];
    for field in [
        "class=share_page",
        "client=127.0.0.3",
        "decision=refused",
        "status=403",
    ] {
        assert!(refused.contains(field), "{field} missing from {refused}");
    }
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| l.split_once(" INFO sharegate::audit: "))
        .map(|(_, json)| serde_json::from_str(json).expect("an audit line is JSON"))
        .collect();
    assert_eq!(audit.len(), 2, "{log}");
    assert_eq!(audit[0]["v"], 1);
    assert_eq!(audit[0]["decision"], "allowed");
    assert_eq!(audit[1]["decision"], "refused");
    assert_eq!(audit[1]["client_ip"], "127.0.0.3");
    // The last lines of the process made it out too.
    assert!(log.contains("shutting down"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_of_a_share_read() {
    let log = one_share_read("json", true).await;
    assert!(!log.contains("server.hosts is empty"), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "sharegate::access")
        .collect();
    assert_eq!(access.len(), 2, "{log}");
    let a = access[0];
    assert_eq!(a["level"], "INFO");
    assert_eq!(a["message"], "request");
    assert_eq!(a["class"], "public_api");
    assert_eq!(a["client"], "127.0.0.2");
    assert_eq!(a["status"], 200);
    assert_eq!(a["complete"], true);
    assert!(a["duration_ms"].is_f64(), "{a}");
    assert!(
        a["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{a}"
    );
    assert!(a.get("peer").is_none() && a.get("subject").is_none(), "{a}");
    let audit: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "sharegate::audit")
        .map(|l| serde_json::from_str(l["message"].as_str().expect("a message")).expect("JSON"))
        .collect();
    assert_eq!(audit.len(), 2, "{log}");
    assert_eq!(audit[0]["event"], "share_access");
    assert_eq!(audit[1]["status"], 403);
}

/// A reload cannot change the log setup (one subscriber per process) or the
/// connection limit (one semaphore sized at start): it says so rather than
/// ignoring the new values in silence, and the level in force stays the one
/// the process started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_log_settings_wait_for_a_restart() {
    let upstream = FakeUpstream::start().await;
    let mut setup = setup(&upstream);
    let (_dir, config) = write_config(&setup);
    let (gw, _addr, stderr) = start(&config, "text");
    setup.extra.push_str(
        "[log]\nlevel = \"warn\"\nflush_interval = \"0s\"\n[limits]\nmax_connections = 77\n",
    );
    std::fs::write(&config, setup.toml()).expect("rewrite the config");
    signal(&gw, "HUP");
    let (seen, stderr) = read_until(stderr, |seen| {
        seen.contains("config reloaded") && seen.contains("next start")
    });
    assert!(
        seen.contains("WARN") && seen.contains("[log], limits.max_connections changed"),
        "{seen}"
    );
    // Still at info: the reload itself was logged at that level.
    assert!(
        seen.contains("INFO sharegate::state: config reloaded"),
        "{seen}"
    );
    stop(gw, stderr);
}

/// A share token spelled with escapes the canonical path keeps (`%7B`,
/// `%3A`: the upstream reads `{UUID}` and `urn:uuid:UUID` as the same
/// share) is masked as it is spelled, and every spelling of one share
/// (capitals, no hyphens, braces) is logged and audited under the one hash
/// of the token as LangSmith mints it, in access and audit lines alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_share_token_is_masked_under_one_hash() {
    let upstream = FakeUpstream::start().await;
    let (_dir, config) = write_config(&setup(&upstream));
    let (gw, addr, stderr) = start(&config, "json");
    let inside = "127.0.0.2".parse().unwrap();
    let upper = TOKEN.to_uppercase();
    let simple = TOKEN.replace('-', "");
    let paths = [
        format!("/api/v1/public/%7B{TOKEN}%7D/run"),
        format!("/api/v1/public/urn%3Auuid%3A{TOKEN}/run"),
        format!("/public/%7B{TOKEN}%7D/r"),
        format!("/public/{upper}/r"),
        format!("/api/v1/public/{simple}/run"),
        format!("/api/v1/public/%7b{upper}%7d/run"),
    ];
    for path in &paths {
        let r = common::request(inside, addr, "GET", path, &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.summary());
        upstream.only(path);
    }
    let log = stop(gw, stderr);
    let hex: String = simple.to_lowercase();
    for clear in [TOKEN, upper.as_str(), simple.as_str(), hex.as_str()] {
        assert!(!log.contains(clear), "a clear token in the log:\n{log}");
    }
    let hash = sharegate::telemetry::token_hash(TOKEN);
    let mut access = 0;
    let mut audit = 0;
    for line in log.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        if e["target"] == "sharegate::access" {
            access += 1;
            let path = e["path"].as_str().unwrap_or_default();
            assert!(path.contains(&format!("{{tok:{hash}}}")), "{line}");
        } else if e["target"] == "sharegate::audit" {
            audit += 1;
            let event: serde_json::Value =
                serde_json::from_str(e["message"].as_str().unwrap_or_default()).expect("audit");
            assert_eq!(event["token_hashes"], serde_json::json!([hash]), "{line}");
        }
    }
    assert_eq!((access, audit), (paths.len(), paths.len()), "{log}");
}

/// The lines of an audit file once it holds `count` (written by the
/// gateway's audit thread, so waited for).
fn audit_lines(path: &std::path::Path, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The real gateway writing audit events to `audit.jsonl` in a folder of
/// its own, after one share read from inside that it audited.
struct Audited {
    gw: Gateway,
    addr: std::net::SocketAddr,
    stderr: BufReader<ChildStderr>,
    dir: tempfile::TempDir,
    audit: std::path::PathBuf,
    _config_dir: tempfile::TempDir,
    _upstream: FakeUpstream,
}

/// The share read [`Audited`] makes, and its source.
const AUDITED_FROM: &str = "127.0.0.2";
fn audited_read() -> String {
    format!("/api/v1/public/{TOKEN}/runs/abc")
}

async fn start_audited() -> Audited {
    let upstream = FakeUpstream::start().await;
    let mut setup = setup(&upstream);
    let dir = tempfile::tempdir().expect("temporary directory");
    let audit = dir.path().join("audit.jsonl");
    setup.extra.push_str(&format!(
        "[audit]\nfile = {:?}\n",
        audit.display().to_string()
    ));
    let (config_dir, config) = write_config(&setup);
    let (gw, addr, stderr) = start(&config, "text");
    let inside = AUDITED_FROM.parse().expect("an address");
    let r = common::request(inside, addr, "GET", &audited_read(), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.summary());
    Audited {
        gw,
        addr,
        stderr,
        dir,
        audit,
        _config_dir: config_dir,
        _upstream: upstream,
    }
}

/// `audit.file` is created for the gateway's user alone, and a reload
/// opens it anew: moved away (as `logrotate` does) and signalled, the
/// gateway writes the next events to a new file of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_opens_the_audit_file_anew_so_it_can_be_rotated() {
    use std::os::unix::fs::PermissionsExt;
    let audited = start_audited().await;
    let (gw, addr, stderr) = (audited.gw, audited.addr, audited.stderr);
    let (dir, audit) = (&audited.dir, audited.audit.clone());
    let inside = AUDITED_FROM.parse().unwrap();
    let read = audited_read();
    let first = audit_lines(&audit, 1);
    assert_eq!(first.len(), 1, "{first:?}");
    let mode = std::fs::metadata(&audit).expect("audit file").permissions();
    assert_eq!(mode.mode() & 0o777, 0o600);

    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).expect("rotate");
    signal(&gw, "HUP");
    let (_, stderr) = read_until(stderr, |seen| seen.contains("config reloaded"));
    let r = common::request(inside, addr, "GET", &read, &[], "").await;
    assert_eq!(r.status, 200, "{}", r.summary());
    let second = audit_lines(&audit, 1);
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(second[0].contains("\"decision\":\"allowed\""), "{second:?}");
    stop(gw, stderr);
    assert_eq!(audit_lines(&rotated, 1), first);
}

/// A named pipe where `audit.file` points (here swapped in after a
/// rotation) would hold the reload until some reader opened it: the reload
/// is refused at once, naming what the path is, and the gateway goes on
/// auditing into the file it has open. A symlink to a regular file is
/// followed, as for any log file, and the file it names is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_pipe_as_the_audit_file_is_refused_without_holding_the_reload() {
    let audited = start_audited().await;
    let (gw, addr, stderr) = (audited.gw, audited.addr, audited.stderr);
    let (dir, audit) = (&audited.dir, audited.audit.clone());
    let inside = AUDITED_FROM.parse().unwrap();
    let read = audited_read();
    assert_eq!(audit_lines(&audit, 1).len(), 1);

    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).expect("rotate");
    let made = Command::new("mkfifo")
        .arg(&audit)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    signal(&gw, "HUP");
    let (seen, stderr) = read_until(stderr, |seen| seen.contains("not a regular file"));
    assert!(seen.contains("config reload refused"), "{seen}");
    assert!(
        seen.contains(&format!(
            "audit.file: {}: it is a named pipe (FIFO), not a regular file",
            audit.display()
        )),
        "{seen}"
    );
    let r = common::request(inside, addr, "GET", &read, &[], "").await;
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        audit_lines(&rotated, 2).len(),
        2,
        "the file in force keeps the events"
    );

    std::fs::remove_file(&audit).expect("remove the pipe");
    let elsewhere = tempfile::tempdir().expect("temporary directory");
    let target = elsewhere.path().join("audit.jsonl");
    std::os::unix::fs::symlink(&target, &audit).expect("symlink");
    signal(&gw, "HUP");
    let (_, stderr) = read_until(stderr, |seen| seen.contains("config reloaded"));
    let r = common::request(inside, addr, "GET", &read, &[], "").await;
    assert_eq!(r.status, 200, "{}", r.summary());
    let through = audit_lines(&target, 1);
    assert_eq!(through.len(), 1, "{through:?}");
    assert!(
        through[0].contains("\"decision\":\"allowed\""),
        "{through:?}"
    );
    stop(gw, stderr);
}
