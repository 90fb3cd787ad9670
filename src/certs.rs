//! `sharegate certs`: a throw-away PKI for development and tests: a CA, a
//! server certificate it signed, and client certificates for trying mTLS.
//!
//! This module owns generating those files and writing them safely: private
//! keys are created with mode 0600 from the first byte (never widened and then
//! narrowed), certificates with 0644, and nothing that exists is overwritten
//! unless asked. It does not load certificates for serving (that is `tls`), and
//! its output is for development only: production certificates come from the
//! organisation's PKI (see `certs/README.md`).

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Where the files go unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "certs";
/// The server certificate's names unless `--name` is given.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Validity of the server and client certificates: 825 days is the longest
/// that Apple platforms accept for a TLS server certificate.
pub const DEFAULT_DAYS: u32 = 825;
/// Validity of the CA; also the upper bound of `--days`, so that no leaf
/// outlives the CA that signed it.
pub const CA_DAYS: u32 = 3650;

/// Backdating `not_before` absorbs clock skew between the machine that
/// generates and the machines that verify.
const BACKDATE: Duration = Duration::from_secs(3600);
const DAY: u64 = 24 * 60 * 60;

/// Creates a development CA, a server certificate and client certificates.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct CertsArgs {
    /// Directory to write into; created if missing.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// A DNS name or IP address for the server certificate (repeatable;
    /// "*.example.com" for a wildcard). The first one is also its CN.
    #[arg(long = "name", value_name = "DNS_OR_IP", default_values = DEFAULT_NAMES)]
    pub names: Vec<String>,
    /// A client certificate to create for mTLS, with CN=NAME (repeatable).
    /// A NAME containing '@' also gets it as an email SAN.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
    /// Validity of the server and client certificates, in days (the CA gets
    /// 3650).
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_DAYS)]
    pub days: u32,
}

impl Default for CertsArgs {
    fn default() -> Self {
        CertsArgs {
            dir: PathBuf::from(DEFAULT_DIR),
            names: DEFAULT_NAMES.iter().map(|n| (*n).to_owned()).collect(),
            clients: Vec::new(),
            force: false,
            days: DEFAULT_DAYS,
        }
    }
}

/// Why `sharegate certs` wrote nothing, or stopped part-way.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error(
        "no server names; pass --name with a DNS name or IP address, such as --name localhost"
    )]
    NoNames,
    #[error("--name {name:?} is neither an IP address nor a DNS name (letters, digits, '-' and '.', optionally starting with \"*.\")")]
    BadName { name: String },
    #[error("--client {name:?} cannot name a file; use letters, digits and . _ @ + - (such as alice@corp.example)")]
    BadClient { name: String },
    #[error("--client {name:?} is given twice")]
    DuplicateClient { name: String },
    #[error("--days {days} is out of range; give 1 to {CA_DAYS} (the CA's own validity)")]
    BadDays { days: u32 },
    #[error("refusing to overwrite {}; pass --force to replace, or choose another --dir", list(.paths))]
    Exists { paths: Vec<PathBuf> },
    #[error("cannot create directory {}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot generate the {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`generate`] did: every file written, and which of them replaced an
/// existing file (only ever non-empty with `force`).
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub replaced: Vec<PathBuf>,
    /// Client certificates of earlier runs left in the directory when the
    /// CA was replaced: they no longer verify against it.
    pub stale: Vec<PathBuf>,
}

/// Generates and writes everything, tells stderr which files it replaced,
/// and returns the files written.
pub fn run(args: &CertsArgs) -> Result<Vec<PathBuf>, CertsError> {
    let written = generate(args)?;
    for p in &written.replaced {
        eprintln!("sharegate certs: replaced {}", p.display());
    }
    for p in &written.stale {
        eprintln!(
            "sharegate certs: {} was issued by the replaced CA and no longer verifies; reissue it with --client or remove it",
            p.display()
        );
    }
    Ok(written.files)
}

/// Like [`run`], but silent: the caller gets the replaced files too.
///
/// Every argument is checked and every target path is looked at before the
/// first key is generated, so a refusal leaves the directory untouched.
pub fn generate(args: &CertsArgs) -> Result<Written, CertsError> {
    let sans = server_names(&args.names)?;
    check_clients(&args.clients)?;
    if args.days == 0 || args.days > CA_DAYS {
        return Err(CertsError::BadDays { days: args.days });
    }

    let files = Plan::new(&args.dir, &args.clients);
    let existing: Vec<PathBuf> = files.all().into_iter().filter(|p| p.exists()).collect();
    if !existing.is_empty() && !args.force {
        return Err(CertsError::Exists { paths: existing });
    }

    let now = SystemTime::now();
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    let until = |days: u32| now + Duration::from_secs(u64::from(days) * DAY);

    // The CA.
    let ca_key = key("CA key")?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = dn("sharegate development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before.into();
    ca.not_after = until(CA_DAYS).into();
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(generate_err("CA certificate"))?;
    let issuer = Issuer::new(ca, &ca_key);

    // The server.
    let server_key = key("server key")?;
    let mut server = CertificateParams::default();
    server.distinguished_name = dn(&args.names[0]);
    server.subject_alt_names = sans;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = not_before.into();
    server.not_after = until(args.days).into();
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .map_err(generate_err("server certificate"))?;

    // The clients.
    let mut clients = Vec::new();
    for name in &args.clients {
        let client_key = key(&format!("key of client {name:?}"))?;
        let mut client = CertificateParams::default();
        client.distinguished_name = dn(name);
        if name.contains('@') {
            let email = name
                .as_str()
                .try_into()
                .map_err(generate_err(&format!("email SAN of client {name:?}")))?;
            client.subject_alt_names = vec![SanType::Rfc822Name(email)];
        }
        client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.use_authority_key_identifier_extension = true;
        client.not_before = not_before.into();
        client.not_after = until(args.days).into();
        let cert = client
            .signed_by(&client_key, &issuer)
            .map_err(generate_err(&format!("certificate of client {name:?}")))?;
        clients.push((cert.pem(), client_key.serialize_pem()));
    }

    fs::create_dir_all(&args.dir).map_err(|source| CertsError::CreateDir {
        path: args.dir.clone(),
        source,
    })?;
    let mut out = Written::default();
    let mut put = |path: &Path, contents: &str, secret: bool| -> Result<(), CertsError> {
        if write_file(path, contents.as_bytes(), secret, args.force)? {
            out.replaced.push(path.to_path_buf());
        }
        out.files.push(path.to_path_buf());
        Ok(())
    };
    // Keys before certificates: a run that fails part-way never leaves a
    // certificate whose key is missing.
    put(&files.ca_key, &ca_key.serialize_pem(), true)?;
    put(&files.ca_crt, &ca_cert.pem(), false)?;
    put(&files.server_key, &server_key.serialize_pem(), true)?;
    // Leaf first, then the CA: what a TLS server sends (RFC 8446 §4.4.2).
    put(
        &files.server_crt,
        &(server_cert.pem() + &ca_cert.pem()),
        false,
    )?;
    for ((crt, key_path), (cert_pem, key_pem)) in files.clients.iter().zip(&clients) {
        put(key_path, key_pem, true)?;
        put(crt, cert_pem, false)?;
    }
    if out.replaced.contains(&files.ca_crt) {
        out.stale = older_client_certs(&args.dir, &out.files);
    }
    Ok(out)
}

/// `client-*.crt` files in `dir` that this run did not write.
fn older_client_certs(dir: &Path, written: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stale: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("client-") && n.ends_with(".crt"))
                && !written.contains(p)
        })
        .collect();
    stale.sort();
    stale
}

/// The lines of a config that use what was written, for the CLI to print.
///
/// Paths are absolute (once the directory exists), because a config resolves
/// relative paths from its own folder, which need not be the current one.
pub fn next_steps(args: &CertsArgs) -> String {
    let dir = fs::canonicalize(&args.dir).unwrap_or_else(|_| args.dir.clone());
    let dir = dir.display();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Development certificates only: trust {dir}/ca.crt in test clients, never in production."
    );
    let _ = writeln!(s, "In the config's [server] section:");
    let _ = writeln!(s, "  tls_cert = \"{dir}/server.crt\"");
    let _ = writeln!(s, "  tls_key = \"{dir}/server.key\"");
    if let Some(first) = args.clients.first() {
        let _ = writeln!(s, "  client_ca = \"{dir}/ca.crt\"");
        let _ = writeln!(s, "  client_cert = \"optional\"");
        let _ = writeln!(s, "Try it:");
        let _ = writeln!(
            s,
            "  curl --cacert {dir}/ca.crt --cert {dir}/client-{first}.crt --key {dir}/client-{first}.key https://{}:8443/",
            url_host(args.names.first().map_or("localhost", String::as_str))
        );
    }
    s
}

fn url_host(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{name}]"),
        _ => name.replacen('*', "www", 1),
    }
}

/// The paths one run writes, so they can all be checked before any is.
struct Plan {
    ca_crt: PathBuf,
    ca_key: PathBuf,
    server_crt: PathBuf,
    server_key: PathBuf,
    /// (certificate, key) per client, in argument order.
    clients: Vec<(PathBuf, PathBuf)>,
}

impl Plan {
    fn new(dir: &Path, clients: &[String]) -> Plan {
        Plan {
            ca_crt: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_crt: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            clients: clients
                .iter()
                .map(|n| {
                    (
                        dir.join(format!("client-{n}.crt")),
                        dir.join(format!("client-{n}.key")),
                    )
                })
                .collect(),
        }
    }

    fn all(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.ca_crt.clone(),
            self.ca_key.clone(),
            self.server_crt.clone(),
            self.server_key.clone(),
        ];
        for (c, k) in &self.clients {
            v.push(c.clone());
            v.push(k.clone());
        }
        v
    }
}

fn server_names(names: &[String]) -> Result<Vec<SanType>, CertsError> {
    if names.is_empty() {
        return Err(CertsError::NoNames);
    }
    let mut sans = Vec::new();
    for name in names {
        let bad = || CertsError::BadName { name: name.clone() };
        if let Ok(ip) = name.parse::<IpAddr>() {
            sans.push(SanType::IpAddress(ip));
            continue;
        }
        let host = name.strip_prefix("*.").unwrap_or(name);
        // Validation is rustls's own, so every name written is one a rustls
        // client can ask for.
        match rustls_pki_types::ServerName::try_from(host) {
            Ok(rustls_pki_types::ServerName::DnsName(_)) => {}
            _ => return Err(bad()),
        }
        sans.push(SanType::DnsName(
            name.as_str().try_into().map_err(|_| bad())?,
        ));
    }
    Ok(sans)
}

fn check_clients(clients: &[String]) -> Result<(), CertsError> {
    for (i, name) in clients.iter().enumerate() {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._@+-".contains(c);
        if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
            return Err(CertsError::BadClient { name: name.clone() });
        }
        if clients[..i].contains(name) {
            return Err(CertsError::DuplicateClient { name: name.clone() });
        }
    }
    Ok(())
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sharegate development");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// ECDSA P-256: small, fast, and accepted by every TLS stack in use.
fn key(what: &str) -> Result<KeyPair, CertsError> {
    KeyPair::generate().map_err(generate_err(what))
}

fn generate_err(what: &str) -> impl FnOnce(rcgen::Error) -> CertsError + '_ {
    move |source| CertsError::Generate {
        what: what.to_owned(),
        source,
    }
}

/// Writes `contents` to `path`, returning whether it replaced a file.
///
/// Without `force` the file is created with `create_new`, so a file that
/// appeared since the check is still not overwritten. With `force` it is
/// written to a new temporary file beside the target and renamed over it:
/// the replacement gets its own mode from creation (an old key file with a
/// wider mode cannot pass its mode on), and readers never see half a file.
fn write_file(path: &Path, contents: &[u8], secret: bool, force: bool) -> Result<bool, CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if !force {
        create(path, contents, secret).map_err(err)?;
        return Ok(false);
    }
    let replaced = path.exists();
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    if let Err(e) = create(&tmp, contents, secret).and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(replaced)
}

fn create(path: &Path, contents: &[u8], secret: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = options.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    use super::*;

    fn args(dir: &Path, clients: &[&str]) -> CertsArgs {
        CertsArgs {
            dir: dir.to_path_buf(),
            clients: clients.iter().map(|c| (*c).to_owned()).collect(),
            ..CertsArgs::default()
        }
    }

    fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .expect("open certificate file")
            .collect::<Result<_, _>>()
            .expect("parse certificates")
    }

    fn key(path: &Path) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_file(path).expect("parse private key")
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca: &Path) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for c in certs(ca) {
            roots
                .add(c)
                .expect("CA certificate is a valid trust anchor");
        }
        Arc::new(roots)
    }

    /// A server that presents `server.crt` from `dir` and, when `client_ca`
    /// is given, requires a client certificate chaining to it.
    fn server_config(dir: &Path, client_ca: Option<&Path>) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
                    .build()
                    .expect("client verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        Arc::new(
            builder
                .with_single_cert(certs(&dir.join("server.crt")), key(&dir.join("server.key")))
                .expect("server.crt and server.key form a usable pair"),
        )
    }

    fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots(ca));
        Arc::new(match client {
            Some((crt, k)) => builder
                .with_client_auth_cert(certs(crt), key(k))
                .expect("client certificate and key form a usable pair"),
            None => builder.with_no_client_auth(),
        })
    }

    /// Runs a TLS handshake entirely in memory; Err is the first side's
    /// error, so a test can see which check refused.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        let mut c = ClientConnection::new(client, name)?;
        let mut s = ServerConnection::new(server)?;
        for _ in 0..16 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).expect("write to memory");
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).expect("read from memory");
                if let Err(e) = s.process_new_packets() {
                    // Deliver the alert so both sides agree, then report.
                    let mut alert = Vec::new();
                    let _ = s.write_tls(&mut alert);
                    return Err(e);
                }
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).expect("write to memory");
            if !buf.is_empty() {
                c.read_tls(&mut buf.as_slice()).expect("read from memory");
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish in 16 rounds");
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn writes_every_file_keys_private_certificates_readable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("certs");
        let files = run(&args(&dir, &["alice@corp.example", "ci-bot"])).expect("certs");
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "ca.crt",
                "ca.key",
                "client-alice@corp.example.crt",
                "client-alice@corp.example.key",
                "client-ci-bot.crt",
                "client-ci-bot.key",
                "server.crt",
                "server.key",
            ]
        );
        for f in &files {
            assert!(f.is_file(), "{} missing", f.display());
            #[cfg(unix)]
            if f.extension().is_some_and(|e| e == "key") {
                assert_eq!(mode(f), 0o600, "{}", f.display());
            } else {
                // 0644 less whatever the umask takes away: never writable by
                // others, always readable by the owner.
                let m = mode(f);
                assert_eq!(m & !0o644, 0, "{} has mode {m:o}", f.display());
                assert_eq!(m & 0o600, 0o600, "{} has mode {m:o}", f.display());
            }
        }
        // server.crt is the leaf followed by the CA.
        let chain = certs(&dir.join("server.crt"));
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], certs(&dir.join("ca.crt"))[0]);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 8);
    }

    #[test]
    fn refuses_to_overwrite_and_names_every_file_in_the_way() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        fs::write(dir.join("server.key"), "mine").unwrap();
        fs::write(dir.join("client-bob.crt"), "mine too").unwrap();
        let err = run(&args(dir, &["bob"])).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            matches!(err, CertsError::Exists { ref paths } if paths.len() == 2),
            "{msg}"
        );
        assert!(
            msg.contains("server.key") && msg.contains("client-bob.crt"),
            "{msg}"
        );
        assert!(msg.contains("--force"), "{msg}");
        // Nothing was written, and what was there is intact.
        assert!(!dir.join("ca.crt").exists());
        assert_eq!(fs::read_to_string(dir.join("server.key")).unwrap(), "mine");

        // A second run over a complete set is refused too.
        let full = tempfile::tempdir().expect("tempdir");
        run(&args(full.path(), &[])).expect("first run");
        let before = fs::read(full.path().join("ca.key")).unwrap();
        assert!(matches!(
            run(&args(full.path(), &[])),
            Err(CertsError::Exists { ref paths }) if paths.len() == 4
        ));
        assert_eq!(fs::read(full.path().join("ca.key")).unwrap(), before);
    }

    #[test]
    fn force_replaces_reports_it_and_resets_the_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        fs::write(dir.join("server.key"), "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o644)).unwrap();
        }
        let out = generate(&CertsArgs {
            force: true,
            ..args(dir, &[])
        })
        .expect("forced run");
        assert_eq!(out.replaced, vec![dir.join("server.key")]);
        assert_eq!(out.files.len(), 4);
        assert_ne!(fs::read_to_string(dir.join("server.key")).unwrap(), "old");
        #[cfg(unix)]
        assert_eq!(mode(&dir.join("server.key")), 0o600);
    }

    #[test]
    fn force_names_client_certificates_the_new_ca_no_longer_signs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        generate(&args(dir, &["alice"])).expect("first run");
        let forced = |clients: &[&str]| {
            generate(&CertsArgs {
                force: true,
                ..args(dir, clients)
            })
            .expect("forced run")
        };
        assert_eq!(forced(&["bob"]).stale, vec![dir.join("client-alice.crt")]);
        // Reissuing alice too leaves nothing stale.
        assert!(forced(&["alice", "bob"]).stale.is_empty());
    }

    #[test]
    fn server_certificate_verifies_against_the_ca_for_every_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        run(&args(dir, &[])).expect("certs");
        let ca = dir.join("ca.crt");
        for name in DEFAULT_NAMES {
            handshake(client_config(&ca, None), server_config(dir, None), name)
                .unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
        }
        // A name the certificate does not carry is refused.
        let err = handshake(
            client_config(&ca, None),
            server_config(dir, None),
            "example.com",
        )
        .expect_err("wrong name must fail");
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
    }

    #[test]
    fn a_server_from_another_ca_is_not_trusted() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        run(&args(a.path(), &[])).expect("certs a");
        run(&args(b.path(), &[])).expect("certs b");
        let err = handshake(
            client_config(&a.path().join("ca.crt"), None),
            server_config(b.path(), None),
            "localhost",
        )
        .expect_err("foreign CA must fail");
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
    }

    #[test]
    fn client_certificates_chain_to_the_ca_in_an_mtls_handshake() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        run(&args(dir, &["alice@corp.example", "ci-bot"])).expect("certs");
        let ca = dir.join("ca.crt");
        for client in ["alice@corp.example", "ci-bot"] {
            let crt = dir.join(format!("client-{client}.crt"));
            let k = dir.join(format!("client-{client}.key"));
            handshake(
                client_config(&ca, Some((&crt, &k))),
                server_config(dir, Some(&ca)),
                "localhost",
            )
            .unwrap_or_else(|e| panic!("mTLS handshake as {client}: {e}"));
        }
        // A client certificate from another CA is refused by the server.
        let other = tempfile::tempdir().expect("tempdir");
        run(&args(other.path(), &["mallory"])).expect("certs");
        let err = handshake(
            client_config(
                &ca,
                Some((
                    &other.path().join("client-mallory.crt"),
                    &other.path().join("client-mallory.key"),
                )),
            ),
            server_config(dir, Some(&ca)),
            "localhost",
        )
        .expect_err("foreign client must fail");
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
    }

    #[test]
    fn client_names_become_cn_and_email_san() {
        use x509_parser::extensions::GeneralName;
        use x509_parser::prelude::{FromDer, X509Certificate};

        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        run(&args(dir, &["alice@corp.example", "ci-bot"])).expect("certs");
        let read = |name: &str| certs(&dir.join(format!("client-{name}.crt"))).remove(0);

        let alice = read("alice@corp.example");
        let (_, cert) = X509Certificate::from_der(&alice).expect("parse");
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "alice@corp.example");
        let san = cert.subject_alternative_name().unwrap().expect("SAN");
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::RFC822Name("alice@corp.example")]
        );

        let bot = read("ci-bot");
        let (_, cert) = X509Certificate::from_der(&bot).expect("parse");
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "ci-bot");
        assert!(cert.subject_alternative_name().unwrap().is_none());
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("out");
        let cases: Vec<(CertsArgs, &str)> = vec![
            (
                CertsArgs {
                    names: vec![],
                    ..args(&dir, &[])
                },
                "no server names",
            ),
            (
                CertsArgs {
                    names: vec!["bad name".to_owned()],
                    ..args(&dir, &[])
                },
                "--name \"bad name\"",
            ),
            (args(&dir, &["../evil"]), "--client \"../evil\""),
            (args(&dir, &["bob", "bob"]), "given twice"),
            (
                CertsArgs {
                    days: 0,
                    ..args(&dir, &[])
                },
                "--days 0",
            ),
            (
                CertsArgs {
                    days: CA_DAYS + 1,
                    ..args(&dir, &[])
                },
                "1 to 3650",
            ),
        ];
        for (a, expected) in cases {
            let msg = run(&a).expect_err("must refuse").to_string();
            assert!(msg.contains(expected), "{msg:?} lacks {expected:?}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn next_steps_names_the_files_and_a_reachable_host() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = CertsArgs {
            names: vec!["*.corp.example".to_owned()],
            ..args(tmp.path(), &["alice@corp.example"])
        };
        run(&a).expect("certs");
        let text = next_steps(&a);
        let dir = fs::canonicalize(tmp.path()).unwrap();
        assert!(
            text.contains(&format!("tls_cert = \"{}/server.crt\"", dir.display())),
            "{text}"
        );
        assert!(text.contains("client_ca = "), "{text}");
        assert!(text.contains("https://www.corp.example:8443/"), "{text}");
        let v6 = CertsArgs {
            names: vec!["::1".to_owned()],
            ..CertsArgs::default()
        };
        assert!(!next_steps(&v6).contains("curl"));
        assert_eq!(url_host("::1"), "[::1]");
    }

    #[test]
    fn wildcard_and_ip_names_are_accepted() {
        let sans = server_names(&[
            "*.corp.example".to_owned(),
            "10.1.2.3".to_owned(),
            "fd00::1".to_owned(),
        ])
        .expect("valid names");
        assert_eq!(sans.len(), 3);
        assert!(matches!(sans[1], SanType::IpAddress(_)));
    }

    #[test]
    fn clap_defaults_match_the_documented_ones() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            certs: CertsArgs,
        }
        let parsed = Cli::parse_from(["sharegate"]).certs;
        assert_eq!(parsed, CertsArgs::default());
        let parsed = Cli::parse_from([
            "sharegate",
            "--dir",
            "out",
            "--name",
            "gw.corp.example",
            "--name",
            "10.0.0.5",
            "--client",
            "alice@corp.example",
            "--client",
            "bob",
            "--force",
            "--days",
            "30",
        ])
        .certs;
        assert_eq!(
            parsed,
            CertsArgs {
                dir: PathBuf::from("out"),
                names: vec!["gw.corp.example".to_owned(), "10.0.0.5".to_owned()],
                clients: vec!["alice@corp.example".to_owned(), "bob".to_owned()],
                force: true,
                days: 30,
            }
        );
    }
}
