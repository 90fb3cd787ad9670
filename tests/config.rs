//! Loading the config: environment overrides, every problem reported at
//! once with its exact wording, and the `sharegate check` command's exit
//! codes.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use sharegate::config::{Config, Problem};
use sharegate::policy::Access;

const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8443"]

[upstream]
url = "http://langsmith-frontend:80"

[networks]
corp = ["10.0.0.0/8", "fd00::/8"]
vpn = ["100.64.0.0/10"]

[share]
allow_from = ["corp"]
manage_from = ["corp"]
"#;

/// One of each problem `check` must report, all in one file.
const BROKEN: &str = r#"
[server]
listen = ["127.0.0.1:8443"]
listen_addr = "0.0.0.0:80"
tls_cert = "server.crt"

[upstream]
connect_timeout = "5"

[networks]
corp = ["10.0.0.0/33"]

[share]
allow_from = ["corp", "office"]

[limits]
body_timeout = "0s"
"#;

fn expected_problems() -> Vec<Problem> {
    let p = |key: &str, message: &str| Problem {
        key: key.to_owned(),
        message: message.to_owned(),
    };
    vec![
        p(
            "server.listen_addr",
            "unknown key; see the README's configuration reference for valid keys",
        ),
        p(
            "server.tls_key",
            "is missing while server.tls_cert is set; give both for TLS, or neither for plain HTTP",
        ),
        p(
            "upstream.connect_timeout",
            "\"5\" is not a duration (time unit needed, for example 5sec or 5ms); write a number with a unit, such as \"5s\" or \"300ms\"",
        ),
        p(
            "upstream.url",
            "is missing; give the app's address, such as \"http://langsmith-frontend:80\"",
        ),
        p(
            "networks.corp",
            "\"10.0.0.0/33\" is not a CIDR; write an IPv4 or IPv6 range such as \"10.0.0.0/8\" or \"fd00::/8\"",
        ),
        p(
            "share.allow_from",
            "\"office\" is neither a network name from [networks] (known: corp) nor a CIDR such as \"10.1.0.0/16\"",
        ),
        p(
            "limits.body_timeout",
            "\"0s\" is zero; give a positive duration such as \"5s\"",
        ),
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config file");
    path
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Fails unless `got` holds exactly the `want` problems (in any order).
fn assert_problems(got: &[Problem], want: &[Problem]) {
    let missing: Vec<String> = want
        .iter()
        .filter(|w| !got.contains(w))
        .map(ToString::to_string)
        .collect();
    let extra: Vec<String> = got
        .iter()
        .filter(|g| !want.contains(g))
        .map(ToString::to_string)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "\nmissing:\n  {}\nunexpected:\n  {}",
        missing.join("\n  "),
        extra.join("\n  ")
    );
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = write(dir.path(), "sharegate.toml", GOOD);

    let cfg = Config::load_with_env(&path, Some(HashMap::new())).expect("the file alone is valid");
    assert_eq!(
        cfg.upstream.url.to_string(),
        "http://langsmith-frontend:80/"
    );
    assert_eq!(cfg.policy.share_allow.describe(), "corp");

    let cfg = Config::load_with_env(
        &path,
        Some(env(&[
            ("SHAREGATE__UPSTREAM__URL", "http://127.0.0.1:8080"),
            ("SHAREGATE__SHARE__ALLOW_FROM", "corp,vpn"),
            ("SHAREGATE__UPSTREAM__RESPONSE_TIMEOUT", "45s"),
        ])),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.upstream.url.authority().map(|a| a.as_str()),
        Some("127.0.0.1:8080")
    );
    assert_eq!(
        cfg.upstream.response_timeout,
        std::time::Duration::from_secs(45)
    );
    // The list form: both named networks, nothing else.
    let allow = &cfg.policy.share_allow;
    assert_eq!(allow.describe(), "corp, vpn");
    assert!(matches!(allow, Access::Networks(_)));
    for (ip, admitted) in [
        ("10.1.2.3", true),
        ("fd00::7", true),
        ("100.64.0.1", true),
        ("192.0.2.1", false),
        ("::ffff:100.64.0.1", true),
    ] {
        assert_eq!(allow.admits(ip.parse().unwrap()), admitted, "{ip}");
    }
    // Untouched keys keep the file's values.
    assert_eq!(cfg.policy.manage_allow.describe(), "corp");
}

#[test]
fn environment_values_are_validated_like_the_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = write(dir.path(), "sharegate.toml", GOOD);
    let err = Config::load_with_env(
        &path,
        Some(env(&[("SHAREGATE__SHARE__ALLOW_FROM", "corp,nowhere")])),
    )
    .expect_err("an unknown network from the environment is a problem");
    assert_problems(
        &err.problems,
        &[Problem {
            key: "share.allow_from".to_owned(),
            message: "\"nowhere\" is neither a network name from [networks] (known: corp, vpn) nor a CIDR such as \"10.1.0.0/16\"".to_owned(),
        }],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = Config::from_toml(BROKEN, Path::new(".")).expect_err("the config is broken");
    assert_problems(&err.problems, &expected_problems());
    let report = err.to_string();
    assert!(report.starts_with("config has 7 problems:\n"), "{report}");
    for p in expected_problems() {
        assert!(
            report.contains(&format!("  - {p}\n")),
            "{p} missing from:\n{report}"
        );
    }

    // The same from a file: the report names the file.
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = write(dir.path(), "broken.toml", BROKEN);
    let err = Config::load_with_env(&path, Some(HashMap::new())).expect_err("broken file");
    assert_problems(&err.problems, &expected_problems());
    assert!(err
        .to_string()
        .starts_with(&format!("{} has 7 problems:", path.display())));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sharegate.toml");
    Config::load_with_env(&path, Some(HashMap::new())).unwrap_or_else(|e| panic!("{e}"));
}

/// The binary with a clean environment (no `SHAREGATE__*` from the caller).
/// `sharegate check --config path`, run to its end.
fn check(path: impl AsRef<std::ffi::OsStr>) -> std::process::Output {
    sharegate()
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("run sharegate check")
}

fn sharegate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sharegate"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SHAREGATE") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `explain` answers what the server answers for the methods it refuses
/// before anything else: one not written in capitals, and `CONNECT`.
#[test]
fn explain_refuses_the_methods_the_server_refuses() {
    for (method, want) in [
        ("get", "400"),
        ("Post", "400"),
        ("CONNECT", "400"),
        ("GET", "0"),
    ] {
        let out = sharegate()
            .args([
                "explain",
                "--config",
                "config/sharegate.toml",
                "--format",
                "json",
            ])
            .args(["--from", "10.1.2.3", method, "/api/v1/info"])
            .output()
            .expect("run sharegate explain");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{method}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["status"].to_string(), want, "{method}: {v}");
        let refused = want == "400";
        assert_eq!(v["decision"] == "refused", refused, "{method}: {v}");
        let syntax = v["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["check"] == "method_syntax"));
        assert_eq!(syntax.is_some(), refused, "{method}: {v}");
    }
}

#[test]
fn check_accepts_the_example_config() {
    let out = sharegate()
        .args(["check", "--config", "config/sharegate.toml"])
        .output()
        .expect("run sharegate check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("config/sharegate.toml: OK"), "{stdout}");
    assert!(stdout.contains("http://langsmith-frontend"), "{stdout}");
    assert!(
        stdout.contains("\nhosts       langsmith.corp.example (any other: 421)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nshare pages Referrer-Policy: same-origin; X-Robots-Tag: noindex, nofollow on every answer of a share route\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\ncross site  a browser's cross-site request (Sec-Fetch-Site cross-site, or same-site with an Origin outside server.hosts; without it, an Origin outside server.hosts) to a share or management route: refused (403) unless it opens a page\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\ncaching     share and management answers marked Cache-Control: private (no shared cache in front keeps one client's answer for another); *-Cache-Control, Surrogate-Control, Edge-Control, X-Accel-Expires removed\n"),
        "{stdout}"
    );
}

/// `share.referrer_policy`: the policies that send the page's URL, token
/// included, to other sites are refused, and so is a misspelling.
#[test]
fn leaky_referrer_policies_are_refused() {
    let with_policy = |value: &str| {
        GOOD.replace(
            "manage_from = [\"corp\"]",
            &format!("manage_from = [\"corp\"]\nreferrer_policy = {value:?}"),
        )
    };
    for (value, message) in [
        ("unsafe-url", "\"unsafe-url\" sends the share page's URL, token included, to every site the page loads from or links to; use \"same-origin\" (the default), \"no-referrer\", or \"off\" to leave the upstream's header"),
        ("no-referrer-when-downgrade", "\"no-referrer-when-downgrade\" sends the share page's URL, token included, to every site the page loads from or links to; use \"same-origin\" (the default), \"no-referrer\", or \"off\" to leave the upstream's header"),
        ("same_origin", "\"same_origin\" is not a referrer policy; use \"same-origin\" (the default), \"no-referrer\", \"strict-origin\", \"origin\", \"origin-when-cross-origin\", \"strict-origin-when-cross-origin\", or \"off\""),
    ] {
        let err = Config::from_toml(&with_policy(value), Path::new(".")).expect_err(value);
        assert_problems(
            &err.problems,
            &[Problem {
                key: "share.referrer_policy".to_owned(),
                message: message.to_owned(),
            }],
        );
    }
    for value in ["no-referrer", "strict-origin-when-cross-origin", "off"] {
        let cfg = Config::from_toml(&with_policy(value), Path::new("."))
            .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(
            cfg.share_headers
                .referrer_policy
                .as_ref()
                .map(|v| v.to_str().unwrap()),
            (value != "off").then_some(value)
        );
    }
}

/// `server.hosts`: every bad entry reported with the fix; the environment
/// gives the list comma-separated; `check` says when any host is served.
#[test]
fn server_hosts_are_validated_and_shown() {
    let bad = GOOD.replace(
        "listen = [\"127.0.0.1:8443\"]",
        "listen = [\"127.0.0.1:8443\"]\nhosts = [\"https://langsmith.corp.example\", \"*.10.0.0.1\", \"ok.example\"]",
    );
    let err = Config::from_toml(&bad, Path::new(".")).expect_err("two bad entries");
    let fix = "write a name as clients type it: \"langsmith.corp.example\", \"*.corp.example\" (any subdomain), or with a port to allow only that port (\"langsmith.corp.example:8443\")";
    assert_problems(
        &err.problems,
        &[
            Problem {
                key: "server.hosts".to_owned(),
                message: format!(
                    "\"https://langsmith.corp.example\" is a URL, not a host name; {fix}"
                ),
            },
            Problem {
                key: "server.hosts".to_owned(),
                message: format!("\"*.10.0.0.1\" puts a wildcard on an IP address; {fix}"),
            },
        ],
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = write(dir.path(), "sharegate.toml", GOOD);
    let cfg = Config::load_with_env(
        &path,
        Some(env(&[(
            "SHAREGATE__SERVER__HOSTS",
            "langsmith.corp.example,*.corp.example",
        )])),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.policy.hosts.describe(),
        ["langsmith.corp.example", "*.corp.example"]
    );

    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("\nhosts       any (server.hosts is empty: a request naming any host is served, DNS rebinding included)\n"),
        "{stdout}"
    );
}

/// A trusted proxy that sends no forwarding header is its own client: when
/// its address is inside an allow list, `check` says so (on stderr, exit 0),
/// naming the proxy entry, the list, its entry and where they meet. An
/// allow list of a route that needs an identity alone, or `"any"`, is not
/// one the proxy's address changes.
#[test]
fn check_warns_when_a_trusted_proxy_is_inside_an_allow_list() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = write(
        dir.path(),
        "overlap.toml",
        r#"
[server]
listen = ["127.0.0.1:8443"]
[upstream]
url = "http://langsmith-frontend:80"
[networks]
office = ["10.0.0.0/8"]
lb = ["10.20.0.5", "192.0.2.10"]
[client_ip]
trusted_proxies = ["lb", "172.16.0.0/12"]
[share]
allow_from = ["office"]
manage_from = ["172.16.4.0/24"]
[default]
allow_from = ["any"]
[[routes]]
name = "docs"
paths = ["/docs/**"]
methods = ["GET"]
allow_from = ["lb"]
"#,
    );
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(": OK\n"), "{stdout}");
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        warnings,
        [
            "warning: client_ip.trusted_proxies: \"lb\" overlaps share.allow_from \"office\": a trusted proxy at 10.20.0.5 that sends no X-Forwarded-For header (a health check, a request of its own) is its own client, inside share.allow_from; keep trusted proxies' addresses out of share.allow_from, or trust only proxies that always set the header",
            "warning: client_ip.trusted_proxies: \"lb\" overlaps routes.docs.allow_from \"lb\": a trusted proxy at 10.20.0.5, 192.0.2.10 that sends no X-Forwarded-For header (a health check, a request of its own) is its own client, inside routes.docs.allow_from; keep trusted proxies' addresses out of routes.docs.allow_from, or trust only proxies that always set the header",
            "warning: client_ip.trusted_proxies: \"172.16.0.0/12\" overlaps share.manage_from \"172.16.4.0/24\": a trusted proxy in 172.16.4.0/24 that sends no X-Forwarded-For header (a health check, a request of its own) is its own client, inside share.manage_from; keep trusted proxies' addresses out of share.manage_from, or trust only proxies that always set the header",
        ],
        "{stderr}"
    );

    // Apart: no warning.
    let path = write(
        dir.path(),
        "apart.toml",
        "[server]\nlisten = [\"127.0.0.1:8443\"]\n[upstream]\nurl = \"http://langsmith-frontend:80\"\n[client_ip]\ntrusted_proxies = [\"192.0.2.10\"]\n[share]\nallow_from = [\"10.0.0.0/8\"]\n",
    );
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// `audit.file` naming a named pipe is a config problem (`check`, start-up
/// and reloads all say so), found without opening it: opening a pipe for
/// writing waits for a reader, which would hold `check` itself.
#[test]
fn check_refuses_a_named_pipe_as_the_audit_file_at_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fifo = dir.path().join("audit.jsonl");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let path = write(
        dir.path(),
        "fifo.toml",
        "[server]\nlisten = [\"127.0.0.1:8443\"]\n[upstream]\nurl = \"http://langsmith-frontend:80\"\n[audit]\nfile = \"audit.jsonl\"\n",
    );
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "  - audit.file: {}: it is a named pipe (FIFO), not a regular file: audit events are appended to a file on disk (a pipe would hold start-up and reloads until a reader opened it); give the path of a file, or leave audit.file unset to send audit events to the log stream\n",
            fifo.display()
        )),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = write(dir.path(), "broken.toml", BROKEN);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr:\n{stderr}");
    assert!(stderr.contains("7 problems"), "{stderr}");
    for p in expected_problems() {
        assert!(
            stderr.contains(&p.to_string()),
            "{p} missing from:\n{stderr}"
        );
    }
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a broken config"
    );
}

#[test]
fn check_of_a_missing_file_exits_64() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = check(dir.path().join("absent.toml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr:\n{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");
    assert!(stderr.contains("no such file"), "{stderr}");

    // A folder is named as one.
    let out = check(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr:\n{stderr}");
    assert!(stderr.contains("it is a folder"), "{stderr}");
}

/// Top-level keys that are not plain names are refused before the config
/// library reads them: it takes a top-level key for a path, and a subscript
/// in it (`"x[-99999999999]"`, found by fuzzing) made it allocate a list
/// that long and abort the process, `check` as well as a running gateway
/// reloading such a file. The same for environment overrides.
#[test]
fn keys_that_are_not_names_are_refused_not_a_crash() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let text = format!(
        "{GOOD}\n[\"ent6[-333333333373333]\"]\nx = 1\n\n[\"upstream.url\"]\n\"x[99999999999]\" = 2\n"
    );
    let path = write(dir.path(), "keys.toml", &text);
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr:\n{stderr}");
    for key in ["ent6[-333333333373333]", "upstream.url"] {
        assert!(
            stderr.contains(&format!("{key}: unknown key")),
            "{key} missing from:\n{stderr}"
        );
    }
    let err = Config::from_toml("\"y[4294967296]\" = 1\n", Path::new("."))
        .expect_err("a subscript in a top-level key");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].key, "y[4294967296]");

    let path = write(dir.path(), "sharegate.toml", GOOD);
    let err = Config::load_with_env(
        &path,
        Some(env(&[
            ("SHAREGATE__SHARE__ALLOW_FROM[99999999999]", "corp"),
            ("SHAREGATE__UPSTREAM__RESPONSE_TIMEOUT", "45s"),
        ])),
    )
    .expect_err("a subscript in an environment override");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(
        err.problems[0].key,
        "SHAREGATE__SHARE__ALLOW_FROM[99999999999]"
    );
}

/// A bad command line is an argument problem: exit 64 with clap's message
/// on stderr, as README's exit statuses say, for every subcommand (clap's
/// own default is 2). Help and version are answers, not problems: exit 0.
#[test]
fn a_bad_command_line_exits_64_and_help_exits_0() {
    for args in [
        &["bogus"][..],
        &["check"],
        &["run", "--config"],
        &["explain"],
        &["probe", "--timeout", "soon"],
        &["certs", "--days", "many"],
        &["demo", "--listen", "nowhere"],
        &["run", "--config", "x.toml", "--log-format", "xml"],
    ] {
        let out = sharegate().args(args).output().expect("run sharegate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    for args in [&["--help"][..], &["--version"], &["explain", "--help"]] {
        let out = sharegate().args(args).output().expect("run sharegate");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
}

/// `explain --batch` on files as editors write them: a byte order mark
/// before the first line is not part of it, and a line explain cannot
/// take is named by its number (the file is a policy test kept in git,
/// maybe hundreds of lines long). A file of one line is still a batch: a
/// table, and a JSON array for scripts.
#[test]
fn explain_batch_files_name_the_bad_line_and_keep_their_shape() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let batch = |name: &str, text: &str, json: bool| {
        let path = write(dir.path(), name, text);
        let mut cmd = sharegate();
        cmd.args(["explain", "--config", "config/sharegate.toml", "--batch"])
            .arg(&path);
        if json {
            cmd.args(["--format", "json"]);
        }
        cmd.output().expect("run sharegate explain --batch")
    };

    let out = batch(
        "bom.txt",
        "\u{feff}--from 10.1.2.3 --expect 200 GET /public/abc/r\n--from 8.8.8.8 --expect 403 GET /public/abc/r\n",
        false,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("METHOD "), "{stdout}");

    let out = batch(
        "bad.txt",
        "# policy tests\n--from 10.1.2.3 GET /public/abc/r\n\n--from 10.1.2.3 -H 'X-Note' GET /public/abc/r\n",
        false,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("bad.txt: line 4: "), "{stderr}");
    assert!(stderr.contains("\"X-Note\""), "{stderr}");

    let out = batch("missing.txt", "--from 10.1.2.3 --expect 200\n", false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("missing.txt: line 1: "), "{stderr}");
    assert!(stderr.contains("METHOD"), "names what is missing: {stderr}");

    let out = batch("one.txt", "--from 10.1.2.3 GET /public/abc/r\n", false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("METHOD "), "a table: {stdout}");
    let out = batch("one.txt", "--from 10.1.2.3 GET /public/abc/r\n", true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "an array: {v}");
}

/// A CA that signs CRLs, its certificate in `dir/ca.crt`, and a server
/// certificate and key for a TLS listener.
struct CrlCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl CrlCa {
    fn new(dir: &Path, name: &str) -> CrlCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = ca.self_signed(&key).expect("CA certificate");
        write(dir, &format!("{name}.crt"), &cert.pem());
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("names")
            .self_signed(&server_key)
            .expect("server certificate");
        write(dir, "server.crt", &server.pem());
        write(dir, "server.key", &server_key.serialize_pem());
        CrlCa {
            issuer: rcgen::Issuer::new(ca, key),
        }
    }

    /// A CRL revoking serial 7 whose nextUpdate is `next` (seconds from
    /// now, negative for one that has expired).
    fn crl(&self, next: i64) -> String {
        use std::time::{Duration, SystemTime};
        let now = SystemTime::now();
        let at = |s: i64| {
            if s >= 0 {
                now + Duration::from_secs(s.unsigned_abs())
            } else {
                now - Duration::from_secs(s.unsigned_abs())
            }
        };
        rcgen::CertificateRevocationListParams {
            this_update: at(next.min(0) - 3600).into(),
            next_update: at(next).into(),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(7u64),
                revocation_time: at(next.min(0) - 3600).into(),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .expect("a CRL")
        .pem()
        .expect("PEM")
    }
}

/// `client_crl` is read and checked at load, each problem named with its
/// file and the fix, and `check` shows the CRLs in force, their next
/// update, and what an expired one does (refuses, rather than trusting a
/// stale list).
#[test]
fn client_crls_are_checked_at_load_and_shown() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let d = dir.path();
    let ca = CrlCa::new(d, "corp CA");
    let other = CrlCa::new(d, "other CA");
    write(d, "corp.crl", &ca.crl(86_400));
    write(d, "other.crl", &other.crl(86_400));
    let with = |server: &str| {
        GOOD.replace(
            "listen = [\"127.0.0.1:8443\"]",
            &format!("listen = [\"127.0.0.1:8443\"]\ntls_cert = \"server.crt\"\ntls_key = \"server.key\"\n{server}"),
        )
    };
    let problems = |server: &str| -> Vec<Problem> {
        let path = write(d, "sharegate.toml", &with(server));
        Config::load_with_env(&path, Some(HashMap::new()))
            .map(|_| ())
            .expect_err("a problem")
            .problems
    };
    let p = |message: String| Problem {
        key: "server.client_crl".to_owned(),
        message,
    };
    let shown = |name: &str| d.join(name).display().to_string();
    let ca_line = "client_ca = \"corp CA.crt\"\nclient_cert = \"required\"\n";

    let plain = GOOD.replace(
        "listen = [\"127.0.0.1:8443\"]",
        "listen = [\"127.0.0.1:8443\"]\nclient_crl = \"corp.crl\"",
    );
    let err = Config::from_toml(&plain, d).expect_err("a CRL on a plain listener");
    assert_problems(
        &err.problems,
        &[p(
            "client certificates need TLS on the listener; set server.tls_cert and server.tls_key"
                .to_owned(),
        )],
    );

    assert_problems(
        &problems("client_crl = \"corp.crl\"\n"),
        &[p("needs server.client_ca: a CRL revokes client certificates, which are only verified against client_ca".to_owned())],
    );
    let missing = problems(&format!("{ca_line}client_crl = \"absent.crl\"\n"));
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].message.starts_with(&format!("cannot read {}: ", shown("absent.crl")))
            && missing[0].message.ends_with("; give a CRL file (PEM, -----BEGIN X509 CRL-----, or DER; relative paths are taken from the config file's folder)"),
        "{}",
        missing[0]
    );
    assert_problems(
        &problems(&format!("{ca_line}client_crl = \"corp CA.crt\"\n")),
        &[p(format!("{} holds no CRL (it holds a certificate); give a PEM file with -----BEGIN X509 CRL----- blocks, or one DER CRL", shown("corp CA.crt")))],
    );
    assert_problems(
        &problems(&format!("{ca_line}client_crl = \"other.crl\"\n")),
        &[p(format!("no CRL of the client CA CN=corp CA ({} is a CRL of CN=other CA, which is no certificate of client_ca); with client_crl set, a certificate whose revocation no CRL can tell is refused, so every certificate that CA issued would be; add its CRL, or remove it from client_ca", shown("other.crl")))],
    );
    // A CRL that claims the client CA's name under another key.
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("a folder");
    let impostor = CrlCa::new(&elsewhere, "corp CA");
    write(d, "impostor.crl", &impostor.crl(86_400));
    assert_problems(
        &problems(&format!("{ca_line}client_crl = \"impostor.crl\"\n")),
        &[p(format!("{}: the CRL names CN=corp CA as its issuer, but that client CA's key did not sign it (a CRL of another CA of that name, or altered)", shown("impostor.crl")))],
    );
    write(d, "corp-again.crl", &ca.crl(3600));
    assert_problems(
        &problems(&format!("{ca_line}client_crl = [\"corp.crl\", \"corp-again.crl\"]\n")),
        &[p(format!("{} and {} both hold a CRL of CN=corp CA for the same certificates; rustls consults only the first it finds, so keep only the newest", shown("corp.crl"), shown("corp-again.crl")))],
    );

    // Valid: shown by check, and watched like the other TLS files.
    let path = write(
        d,
        "sharegate.toml",
        &with(&format!("{ca_line}client_crl = \"corp.crl\"\n")),
    );
    let cfg = Config::load_with_env(&path, Some(HashMap::new())).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.files.contains(&d.join("corp.crl")), "{:?}", cfg.files);
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("listen      https://127.0.0.1:8443 (client certificate required; revocation checked against client_crl, failing closed: a certificate no CRL speaks for, or whose CRL is past its next update, is refused)\n"),
        "{stdout}"
    );
    let line = format!(
        "\nclient crl  {}: CN=corp CA, 1 revoked, next update ",
        shown("corp.crl")
    );
    assert!(stdout.contains(&line), "{stdout}");
    assert!(
        stdout.contains(" (after that, refused until a newer CRL is loaded)\n"),
        "{stdout}"
    );

    // An expired CRL loads (the gateway serves, refusing what it speaks
    // for), and check says so.
    write(d, "corp.crl", &ca.crl(-60));
    let out = check(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&line.replace("next update ", "EXPIRED at ")),
        "{stdout}"
    );
    assert!(
        stdout
            .contains(": every certificate it speaks for is refused until a newer CRL is loaded\n"),
        "{stdout}"
    );

    // Without client_crl, check says what that means.
    let path = write(d, "sharegate.toml", &with(ca_line));
    let stdout = String::from_utf8_lossy(&check(&path).stdout).into_owned();
    assert!(
        stdout.contains("(client certificate required; no client_crl: a certificate is an identity until it expires)\n"),
        "{stdout}"
    );
}
