//! Configuration: the file format (`file`), and the validated, typed
//! [`Config`] the gateway runs on.
//!
//! Everything that can be checked before a socket is bound is checked here,
//! and every problem is reported at once, each naming the key, the bad value
//! and what would be valid. The result is immutable: the server shares it by
//! `Arc` and never consults the file again. This module does not bind, read
//! certificates' contents (except the CRLs of `client_crl`, and the client
//! CAs they are checked against: what is wrong with a CRL is a config
//! problem) or talk to the upstream.

mod file;
mod validate;

pub(crate) use validate::without_userinfo;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::Policy;
use crate::route::RouteTable;

/// The environment prefix: `SHAREGATE__UPSTREAM__URL` overrides `upstream.url`.
pub const ENV_PREFIX: &str = "SHAREGATE";

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Config {
    /// What is valid but likely not meant, each naming its key: `check`
    /// prints these, `run` logs them at start and after each reload.
    pub warnings: Vec<Problem>,
    /// The traffic listeners: `server.listen` (with the `[server]` TLS and
    /// PROXY settings) followed by each `[[listeners]]` entry.
    pub listeners: Vec<Listener>,
    pub upstream: Upstream,
    pub policy: Policy,
    pub routes: RouteTable,
    pub identity: IdentitySettings,
    pub log: LogSettings,
    /// Plain-HTTP listeners that only redirect to HTTPS.
    pub redirect_listen: Vec<SocketAddr>,
    pub shutdown_grace: Duration,
    /// Runtime worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// The admin listener (health, readiness, metrics); `None` when off.
    pub admin_listen: Option<SocketAddr>,
    pub limits: Limits,
    /// Where audit events go: a JSON-lines file, or the log stream.
    pub audit_file: Option<PathBuf>,
    pub reload: ReloadSettings,
    /// Every file this config was built from (the config itself, TLS
    /// material, JWT key files), for change detection and the config hash.
    pub files: Vec<PathBuf>,
    /// The config file's folder: relative paths are taken from here.
    pub base_dir: PathBuf,
    /// `[rewrite]`: public origins rewritten to the private one; `None`
    /// when no rewriting is configured.
    pub rewrite: Option<RewriteSettings>,
    /// Headers set on every answer to a share route.
    pub share_headers: ShareHeaders,
}

/// What every answer on a share route carries, forwarded or refused: the
/// share token is in the page's URL, so nothing the page loads or links to
/// may be told that URL (`Referrer-Policy`), and no crawler inside the
/// network may index it (`X-Robots-Tag`); and since the answer depends on
/// who asked, no shared cache in front may keep it for the next client
/// (`Cache-Control: private`, also on share management).
#[derive(Debug, Clone)]
pub struct ShareHeaders {
    /// `share.referrer_policy`; `None` (`"off"`) leaves the upstream's.
    pub referrer_policy: Option<http::HeaderValue>,
    /// `share.noindex`: `X-Robots-Tag: noindex, nofollow`.
    pub noindex: bool,
    /// `share.cache_private`: `Cache-Control: private` on share and
    /// share-management answers, and no CDN-directed cache headers.
    pub cache_private: bool,
}

#[derive(Debug, Clone)]
pub struct RewriteSettings {
    pub rules: std::sync::Arc<crate::rewrite::Rules>,
    /// Map `Origin`/`Referer` naming the private origin back to the public
    /// one on requests.
    pub request_origin: bool,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    /// Longest wait for the next bytes of a request body (slow-body
    /// attacks: a body trickled in holds its connection and, on share
    /// routes, the request before it is forwarded).
    pub body_timeout: Duration,
    /// Longest wait for a client that has stopped reading to make room for
    /// the next bytes of a response (then the connection is closed).
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_public_body_bytes: u64,
    pub http2_max_concurrent_streams: u32,
    /// Requests per period per client IP on share routes; `None`: no limit.
    pub share_rate: Option<Rate>,
    pub generate_query_rate: Option<Rate>,
}

/// `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone)]
pub struct ReloadSettings {
    pub watch: bool,
    pub interval: Duration,
}

/// One traffic listener and how its connections start.
#[derive(Debug, Clone)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub proxy_protocol: ProxyProtocol,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    /// `client_crl`: the revocation lists client certificates are checked
    /// against, read and checked at load (empty: no revocation checking).
    pub client_crl: Vec<crate::tls::crl::Crl>,
    pub client_cert: ClientCertMode,
}

/// Whether the listener asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    Off,
    /// Asked for; a connection without one is served, one with a bad one
    /// is refused in the handshake.
    Optional,
    /// A connection without a valid certificate fails the handshake.
    Required,
}

/// Who may prefix connections with a PROXY protocol header.
#[derive(Debug, Clone, Default)]
pub struct ProxyProtocol {
    pub from: crate::policy::NetSet,
    /// Peers in `from` may also connect without a header.
    pub optional: bool,
}

#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    /// `[identity.jwt]`, validated; keys are loaded when the gateway starts.
    pub jwt: Option<crate::identity::JwtSettings>,
    /// `[[identity.claims]]`: every requirement must hold.
    pub claims: crate::identity::ClaimRules,
    /// Browsers without a token are redirected here instead of getting 401.
    pub login_url: Option<http::Uri>,
    pub login_return_param: String,
    /// Verified claims passed upstream: (claim, header).
    pub forward_claims: Vec<(String, http::HeaderName)>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: http::Uri,
    /// True when the upstream is reached over TLS.
    pub https: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// How long log lines may wait in the buffer; zero writes each at once.
    pub flush_interval: Duration,
}

/// One thing wrong with a config: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in one config, reported together.
#[derive(Debug)]
pub struct ConfigError {
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {} problem{}:",
            self.origin,
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The top-level keys of a TOML text that are not plain names (letters,
/// digits, `_`, `-`), each as a problem. Every key sharegate knows is a
/// plain name, and `config` reads a top-level key as a path expression
/// before anything checks it: `"x[-99999999999]"` made it allocate a list
/// that long and abort the process (a reload of such a file took the
/// running gateway down). Text that does not parse is left to `config`,
/// which says where.
fn unreadable_keys(text: &str) -> Vec<Problem> {
    let Ok(table) = toml::de::DeTable::parse(text) else {
        return Vec::new();
    };
    table
        .get_ref()
        .keys()
        .map(|k| k.get_ref().as_ref())
        .filter(|k| !is_plain_key(k))
        .map(|k| Problem {
            key: k.escape_debug().to_string(),
            message: "unknown key; see the README's configuration reference for valid keys"
                .to_owned(),
        })
        .collect()
}

/// The same for `SHAREGATE__*` environment variables: after the prefix,
/// letters, digits and `_` only.
fn unreadable_env_keys(keys: impl IntoIterator<Item = String>) -> Vec<Problem> {
    let prefix = format!("{ENV_PREFIX}__");
    keys.into_iter()
        .filter(|k| {
            k.get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(&prefix))
                && !k[prefix.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .map(|k| Problem {
            key: k.escape_debug().to_string(),
            message: "not a config key: an override is SHAREGATE__SECTION__KEY, letters, digits and _ only".to_owned(),
        })
        .collect()
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
    /// Loads `path`, applies `SHAREGATE__*` overrides from the process
    /// environment and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, None)
    }

    /// Like [`Config::load`], with the environment given explicitly (tests use
    /// this so they never touch the process environment).
    pub fn load_with_env(
        path: &Path,
        env: Option<HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let fail = |key: &str, message: String| ConfigError {
            origin: origin.clone(),
            problems: vec![Problem {
                key: key.to_owned(),
                message,
            }],
        };
        if path.is_dir() {
            return Err(fail(
                "--config",
                format!(
                    "cannot read {origin}: it is a folder; pass the path of a TOML config file"
                ),
            ));
        }
        if !path.is_file() {
            return Err(fail(
                "--config",
                format!("cannot read {origin}: no such file; pass the path of a TOML config file"),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail("--config", format!("cannot read {origin}: {e}")))?;
        let mut problems = unreadable_keys(&text);
        let env_keys: Vec<String> = match &env {
            Some(vars) => vars.keys().cloned().collect(),
            None => std::env::vars_os()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect(),
        };
        problems.extend(unreadable_env_keys(env_keys));
        if !problems.is_empty() {
            return Err(ConfigError { origin, problems });
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(env);
        let built = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(environment)
            .build()
            .map_err(|e| fail("(file)", format!("cannot parse: {e}")))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut cfg = Self::from_source(built, &origin, &base_dir)?;
        cfg.files.insert(0, path.to_path_buf());
        Ok(cfg)
    }

    /// Every traffic address, in listener order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// A short SHA-256 over every file the config was built from, so that
    /// metrics and logs can tell which config is in force.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for f in &self.files {
            h.update(f.display().to_string().as_bytes());
            h.update(std::fs::read(f).unwrap_or_default());
        }
        h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Parses a config from TOML text (for `demo` and tests); relative paths
    /// are resolved against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let problems = unreadable_keys(text);
        if !problems.is_empty() {
            return Err(ConfigError {
                origin: "config".to_owned(),
                problems,
            });
        }
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError {
                origin: "config".to_owned(),
                problems: vec![Problem {
                    key: "(file)".to_owned(),
                    message: format!("cannot parse: {e}"),
                }],
            })?;
        Self::from_source(built, "config", base_dir)
    }

    fn from_source(
        built: config::Config,
        origin: &str,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut unknown = Vec::new();
        let raw: Result<file::File, _> =
            serde_ignored::deserialize(built, |path| unknown.push(path.to_string()));
        for key in unknown {
            problems.push(Problem {
                key,
                message: "unknown key; see the README's configuration reference for valid keys"
                    .to_owned(),
            });
        }
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(Problem {
                    key: "(file)".to_owned(),
                    message: format!("{e}"),
                });
                return Err(ConfigError {
                    origin: origin.to_owned(),
                    problems,
                });
            }
        };
        match validate::validate(raw, base_dir, &mut problems) {
            Some(cfg) if problems.is_empty() => Ok(cfg),
            _ => Err(ConfigError {
                origin: origin.to_owned(),
                problems,
            }),
        }
    }
}
