//! The deployment files: every sharegate config under `config/` and
//! `deploy/` (and the one inside the Kubernetes ConfigMap) passes
//! `sharegate check`, and the manifests under `deploy/` parse and hold the
//! facts the docs rely on (probes on the admin port, one public port, a
//! NetworkPolicy, nothing left out of the kustomization).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_norway::Value;

const ADMIN_PORT: u64 = 9090;
const GATEWAY_PORT: u64 = 8443;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (recursively) whose name ends with one of `exts`.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Runs `sharegate check --config path` with no `SHAREGATE__*` variables
/// from the test's own environment, plus `env`.
fn check(path: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sharegate"));
    cmd.arg("check").arg("--config").arg(path);
    for (key, _) in std::env::vars() {
        if key.starts_with("SHAREGATE") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("run sharegate check")
}

fn describe(path: &Path, out: &Output) -> String {
    format!(
        "`sharegate check --config {}` exited with {}\n--- stderr ---\n{}--- stdout ---\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Every YAML document in a file (`---`-separated), nulls dropped.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn k8s(name: &str) -> Value {
    let path = root().join("deploy/kubernetes").join(name);
    let mut docs = yaml_documents(&path);
    assert_eq!(docs.len(), 1, "{} should hold one document", path.display());
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {v:?}"))
}

fn seq_of<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what} should be a list, is {v:?}"))
}

/// The TOML inside the ConfigMap, written to a file of its own.
fn configmap_toml(dir: &Path) -> PathBuf {
    let cm = k8s("configmap.yaml");
    assert_eq!(cm["kind"].as_str(), Some("ConfigMap"));
    let toml = str_of(
        &cm["data"]["sharegate.toml"],
        "ConfigMap data.\"sharegate.toml\"",
    );
    let path = dir.join("sharegate.toml");
    fs::write(&path, toml).expect("write the ConfigMap's TOML");
    path
}

fn sidecar(patch: &Value) -> &Value {
    seq_of(
        &patch["spec"]["template"]["spec"]["containers"],
        "spec.template.spec.containers",
    )
    .iter()
    .find(|c| c["name"].as_str() == Some("sharegate"))
    .expect("the patch adds a container named \"sharegate\"")
}

#[test]
fn every_sharegate_toml_passes_check() {
    let mut configs = files(&root().join("config"), &["toml"]);
    configs.extend(files(&root().join("deploy"), &["toml"]));
    for expected in [
        "config/sharegate.toml",
        "deploy/compose/sharegate.toml",
        "deploy/systemd/sharegate.toml",
    ] {
        assert!(
            configs.contains(&root().join(expected)),
            "{expected} is missing"
        );
    }
    let failures: Vec<String> = configs
        .iter()
        .filter_map(|path| {
            let out = check(path, &[]);
            (!out.status.success()).then(|| describe(path, &out))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_configmap_toml_passes_check() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = configmap_toml(tmp.path());
    let out = check(&path, &[]);
    assert!(out.status.success(), "{}", describe(&path, &out));
}

/// The sidecar and the systemd unit give TLS files through the environment
/// (so the TOML validates without them); check that the variable names
/// they use are the ones sharegate reads, with real files behind them.
#[test]
fn tls_from_the_environment_as_the_manifests_set_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let crt = tmp.path().join("tls.crt");
    let key = tmp.path().join("tls.key");
    fs::write(&crt, cert.cert.pem()).unwrap();
    fs::write(&key, cert.signing_key.serialize_pem()).unwrap();

    let patch = k8s("frontend-sidecar-patch.yaml");
    let env = seq_of(&sidecar(&patch)["env"], "the sidecar's env");
    let names: Vec<&str> = env
        .iter()
        .map(|e| str_of(&e["name"], "env name"))
        .filter(|n| n.starts_with("SHAREGATE__"))
        .collect();
    assert_eq!(
        names,
        ["SHAREGATE__SERVER__TLS_CERT", "SHAREGATE__SERVER__TLS_KEY"]
    );
    let unit = fs::read_to_string(root().join("deploy/systemd/sharegate.service")).unwrap();
    for name in &names {
        assert!(
            unit.contains(&format!("Environment={name}=")),
            "sharegate.service does not set {name}"
        );
    }

    let with_tls = [(names[0], crt.as_path()), (names[1], key.as_path())];
    for path in [
        configmap_toml(tmp.path()),
        root().join("deploy/systemd/sharegate.toml"),
    ] {
        let out = check(&path, &with_tls);
        assert!(out.status.success(), "{}", describe(&path, &out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("listen      https://"),
            "{}: TLS from the environment was not used:\n{stdout}",
            path.display()
        );
    }
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let yamls = files(&root().join("deploy"), &["yaml", "yml"]);
    assert!(yamls.len() >= 7, "found only {yamls:?}");
    for path in &yamls {
        assert!(
            !yaml_documents(path).is_empty(),
            "{} holds no document",
            path.display()
        );
    }
}

#[test]
fn the_sidecar_has_probes_on_the_admin_port_and_a_locked_down_container() {
    let patch = k8s("frontend-sidecar-patch.yaml");
    assert_eq!(patch["kind"].as_str(), Some("Deployment"));
    let c = sidecar(&patch);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"].as_u64(), Some(ADMIN_PORT), "{probe} port");
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
    }
    let ports: BTreeSet<u64> = seq_of(&c["ports"], "ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert_eq!(ports, BTreeSet::from([GATEWAY_PORT, ADMIN_PORT]));

    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert!(seq_of(&sc["capabilities"]["drop"], "capabilities.drop")
        .iter()
        .any(|d| d.as_str() == Some("ALL")));
    assert!(c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping());

    // The config path in args is the ConfigMap's key under its mount.
    let cm = k8s("configmap.yaml");
    let cm_name = str_of(&cm["metadata"]["name"], "ConfigMap name");
    let volumes = seq_of(&patch["spec"]["template"]["spec"]["volumes"], "volumes");
    let config_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(cm_name))
        .expect("a volume from the sharegate ConfigMap");
    let mount = seq_of(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"] == config_volume["name"])
        .expect("the ConfigMap volume is mounted");
    let config_path = format!(
        "{}/sharegate.toml",
        str_of(&mount["mountPath"], "mountPath").trim_end_matches('/')
    );
    let args: Vec<&str> = seq_of(&c["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--config", config_path.as_str()]),
        "args {args:?} do not pass --config {config_path}"
    );
    // The TLS files named in the environment live under the Secret's mount.
    let tls_volume = volumes
        .iter()
        .find(|v| v["secret"]["secretName"].is_string())
        .expect("a volume from the TLS Secret");
    let tls_mount = seq_of(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"] == tls_volume["name"])
        .expect("the TLS Secret is mounted");
    let tls_dir = str_of(&tls_mount["mountPath"], "mountPath");
    for e in seq_of(&c["env"], "env") {
        if str_of(&e["name"], "env name").starts_with("SHAREGATE__SERVER__TLS_") {
            assert!(str_of(&e["value"], "env value").starts_with(tls_dir));
        }
    }
}

/// A pod being deleted is taken out of the Service's endpoints while its
/// containers get SIGTERM at the same moment, and kube-proxy and load
/// balancers take a few seconds to stop sending it new connections: the
/// sidecar pauses in `preStop` (still serving) before the signal starts
/// its drain. The pause's command must exist in the image (the image's
/// last stage is Debian's slim image, whose coreutils have `/bin/sleep`;
/// Kubernetes' own `sleep` action needs no binary), and the pause, the
/// drain (`server.shutdown_grace`) and a margin for the exit must fit in
/// `terminationGracePeriodSeconds`, which counts the hook too.
#[test]
fn the_sidecar_pauses_before_its_drain_and_the_grace_period_covers_both() {
    let patch = k8s("frontend-sidecar-patch.yaml");
    let c = sidecar(&patch);
    let pre = &c["lifecycle"]["preStop"];
    let pause = match pre["sleep"]["seconds"].as_u64() {
        Some(seconds) => seconds,
        None => {
            let command: Vec<&str> =
                seq_of(&pre["exec"]["command"], "lifecycle.preStop.exec.command")
                    .iter()
                    .map(|a| str_of(a, "preStop command"))
                    .collect();
            let [sleep, seconds] = command[..] else {
                panic!("preStop should be [\"/bin/sleep\", SECONDS], is {command:?}");
            };
            assert_eq!(
                sleep, "/bin/sleep",
                "an absolute path: no shell, no PATH lookup"
            );
            let dockerfile =
                fs::read_to_string(root().join("deploy/Dockerfile")).expect("read the Dockerfile");
            let runtime = dockerfile
                .lines()
                .filter_map(|l| l.strip_prefix("FROM "))
                .next_back()
                .expect("a FROM line");
            assert!(
                runtime.starts_with("debian:") && runtime.contains("-slim"),
                "preStop runs /bin/sleep, which the image's base ({runtime}) may not have: use lifecycle.preStop.sleep.seconds (Kubernetes 1.30+)"
            );
            seconds.parse().expect("whole seconds")
        }
    };
    assert!((3..=15).contains(&pause), "a short pause: {pause} s");
    // The frontend, sharegate's upstream in the same pod, is signalled at
    // the same moment: it pauses longer, or sharegate would forward what it
    // takes during its pause to a frontend that has stopped (502).
    let frontend = seq_of(
        &patch["spec"]["template"]["spec"]["containers"],
        "spec.template.spec.containers",
    )
    .iter()
    .find(|c| c["name"].as_str() == Some("frontend"))
    .expect("the patch pauses the chart's \"frontend\" container too");
    assert!(
        frontend["image"].is_null(),
        "a merge into the chart's container, not a new one"
    );
    let frontend_pause: Vec<&str> = seq_of(
        &frontend["lifecycle"]["preStop"]["exec"]["command"],
        "frontend preStop command",
    )
    .iter()
    .map(|a| str_of(a, "preStop command"))
    .collect();
    let [_, seconds] = frontend_pause[..] else {
        panic!("frontend preStop: {frontend_pause:?}");
    };
    let frontend_pause: u64 = seconds.parse().expect("whole seconds");
    assert!(
        frontend_pause > pause,
        "the frontend ({frontend_pause} s) must outlast sharegate's pause ({pause} s)"
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let toml = configmap_toml(dir.path());
    let cfg = sharegate::config::Config::load_with_env(&toml, Some(Default::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    let drain = cfg.shutdown_grace.as_secs();
    let termination = patch["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        pause + drain + 5 <= termination,
        "terminationGracePeriodSeconds {termination} leaves no room for a {pause} s pause, a {drain} s drain and 5 s to exit"
    );
}

#[test]
fn the_service_exposes_only_the_gateway_port_of_the_policed_pods() {
    let svc = k8s("service.yaml");
    assert_eq!(svc["kind"].as_str(), Some("Service"));
    let ports = seq_of(&svc["spec"]["ports"], "spec.ports");
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["targetPort"].as_u64(), Some(GATEWAY_PORT));
    // Client addresses must survive to sharegate and the NetworkPolicy.
    if svc["spec"]["type"].as_str() == Some("LoadBalancer") {
        assert_eq!(svc["spec"]["externalTrafficPolicy"].as_str(), Some("Local"));
    }
    let np = k8s("networkpolicy.yaml");
    assert_eq!(
        svc["spec"]["selector"], np["spec"]["podSelector"]["matchLabels"],
        "the Service and the NetworkPolicy must select the same pods"
    );
}

#[test]
fn the_network_policy_admits_only_the_gateway_and_admin_ports() {
    let np = k8s("networkpolicy.yaml");
    assert_eq!(np["kind"].as_str(), Some("NetworkPolicy"));
    assert!(seq_of(&np["spec"]["policyTypes"], "policyTypes")
        .iter()
        .any(|t| t.as_str() == Some("Ingress")));
    let mut ports = BTreeSet::new();
    for rule in seq_of(&np["spec"]["ingress"], "spec.ingress") {
        assert!(
            rule["from"].is_sequence(),
            "a rule without `from` admits everyone"
        );
        for p in seq_of(&rule["ports"], "ports") {
            ports.insert(p["port"].as_u64().expect("numeric port"));
        }
    }
    assert_eq!(ports, BTreeSet::from([GATEWAY_PORT, ADMIN_PORT]));
}

#[test]
fn the_kustomization_uses_every_manifest_and_patches_the_frontend() {
    let dir = root().join("deploy/kubernetes");
    let k = k8s("kustomization.yaml");
    let mut used: BTreeSet<String> = seq_of(&k["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource").to_owned())
        .collect();
    let patches = seq_of(&k["patches"], "patches");
    for p in patches {
        used.insert(str_of(&p["path"], "patch path").to_owned());
    }
    for chart in seq_of(&k["helmCharts"], "helmCharts") {
        used.insert(str_of(&chart["valuesFile"], "valuesFile").to_owned());
    }
    let present: BTreeSet<String> = files(&dir, &["yaml", "yml"])
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(used, present);

    let patch = k8s("frontend-sidecar-patch.yaml");
    let target = &patches[0]["target"];
    assert_eq!(target["kind"].as_str(), Some("Deployment"));
    assert_eq!(target["name"], patch["metadata"]["name"]);

    let values = k8s("langsmith-values.yaml");
    assert_eq!(
        values["frontend"]["service"]["type"].as_str(),
        Some("ClusterIP")
    );
    assert!(values["config"]["hostname"].is_string());
}

#[test]
fn compose_mounts_files_that_exist_where_the_image_looks() {
    let deploy = root().join("deploy");
    let docs = yaml_documents(&deploy.join("docker-compose.yml"));
    let compose = &docs[0];
    let sg = &compose["services"]["sharegate"];
    let context = deploy.join(str_of(&sg["build"]["context"], "build.context"));
    let dockerfile = str_of(&sg["build"]["dockerfile"], "build.dockerfile");
    assert!(context.join(dockerfile).is_file(), "{dockerfile} not found");
    assert!(
        context.join(format!("{dockerfile}.dockerignore")).is_file(),
        "BuildKit looks for {dockerfile}.dockerignore"
    );

    let dockerfile_text = fs::read_to_string(context.join(dockerfile)).unwrap();
    let mut mounted_config = false;
    for services in compose["services"].as_mapping().expect("services") {
        for v in services.1["volumes"].as_sequence().into_iter().flatten() {
            let spec = str_of(v, "volume");
            let mut parts = spec.split(':');
            let (Some(host), Some(target)) = (parts.next(), parts.next()) else {
                panic!("volume {spec:?} is not HOST:TARGET");
            };
            assert!(
                deploy.join(host).exists(),
                "{spec:?}: {host} does not exist"
            );
            if target == "/etc/sharegate/sharegate.toml" {
                mounted_config = true;
            }
        }
    }
    assert!(
        mounted_config,
        "nothing is mounted at the image's config path"
    );
    assert!(dockerfile_text.contains("\"/etc/sharegate/sharegate.toml\""));
    assert!(dockerfile_text.contains("EXPOSE 8443 9090"));
    assert!(dockerfile_text.contains("/healthz"));
}
