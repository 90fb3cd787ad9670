//! The config file format: serde structs that mirror the TOML a user writes.
//!
//! This module owns spelling and defaults only. Whether a value makes sense
//! (a CIDR parses, a network name exists, a file is readable) is decided in
//! `config::validate`, which reports every problem at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The whole file. Unknown keys are collected by `serde_ignored` in `load` and
/// reported together with every other problem, rather than stopping at the
/// first one as `deny_unknown_fields` would.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct File {
    pub server: ServerSection,
    pub listeners: Vec<ListenerSection>,
    pub upstream: UpstreamSection,
    pub networks: BTreeMap<String, StringList>,
    pub client_ip: ClientIpSection,
    pub share: ShareSection,
    pub routes: Vec<RouteSection>,
    pub default: DefaultSection,
    pub identity: IdentitySection,
    pub log: LogSection,
    pub admin: AdminSection,
    pub limits: LimitsSection,
    pub audit: AuditSection,
    pub reload: ReloadSection,
    pub rewrite: RewriteSection,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct RewriteSection {
    pub from: StringList,
    pub to: Option<String>,
    pub content_types: Option<StringList>,
    pub skip_signed_urls: bool,
    pub request_origin: bool,
}

impl Default for RewriteSection {
    fn default() -> Self {
        RewriteSection {
            from: StringList::default(),
            to: None,
            content_types: None,
            skip_signed_urls: true,
            request_origin: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct AdminSection {
    pub listen: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:9090".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct LimitsSection {
    pub max_connections: usize,
    pub handshake_timeout: String,
    pub header_timeout: String,
    pub body_timeout: String,
    pub send_timeout: String,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_public_body_bytes: u64,
    pub http2_max_concurrent_streams: u32,
    pub share_rate: String,
    pub generate_query_rate: String,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: 10_000,
            handshake_timeout: "10s".to_owned(),
            header_timeout: "30s".to_owned(),
            body_timeout: "60s".to_owned(),
            send_timeout: "60s".to_owned(),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_public_body_bytes: 1024 * 1024,
            http2_max_concurrent_streams: 100,
            share_rate: "600/min".to_owned(),
            generate_query_rate: "10/min".to_owned(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuditSection {
    pub file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct ReloadSection {
    pub watch: bool,
    pub interval: String,
}

impl Default for ReloadSection {
    fn default() -> Self {
        ReloadSection {
            watch: true,
            interval: "2s".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct ServerSection {
    pub listen: StringList,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub client_ca: Option<String>,
    pub client_crl: StringList,
    pub client_cert: String,
    pub proxy_protocol_from: StringList,
    pub proxy_protocol_optional: bool,
    pub redirect_listen: StringList,
    pub shutdown_grace: String,
    pub workers: usize,
    pub hosts: StringList,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: StringList(vec!["0.0.0.0:8443".to_owned()]),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            client_crl: StringList::default(),
            client_cert: "off".to_owned(),
            proxy_protocol_from: StringList::default(),
            proxy_protocol_optional: false,
            redirect_listen: StringList::default(),
            shutdown_grace: "30s".to_owned(),
            workers: 0,
            hosts: StringList::default(),
        }
    }
}

/// A `[[listeners]]` entry: one more address with its own TLS, mTLS and
/// PROXY protocol settings.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct ListenerSection {
    pub address: String,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub client_ca: Option<String>,
    pub client_crl: StringList,
    pub client_cert: String,
    pub proxy_protocol_from: StringList,
    pub proxy_protocol_optional: bool,
}

impl Default for ListenerSection {
    fn default() -> Self {
        ListenerSection {
            address: String::new(),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            client_crl: StringList::default(),
            client_cert: "off".to_owned(),
            proxy_protocol_from: StringList::default(),
            proxy_protocol_optional: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct UpstreamSection {
    pub url: Option<String>,
    pub connect_timeout: String,
    pub response_timeout: String,
    pub ca_file: Option<String>,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            url: None,
            connect_timeout: "5s".to_owned(),
            response_timeout: "300s".to_owned(),
            ca_file: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ClientIpSection {
    pub trusted_proxies: StringList,
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct ShareSection {
    pub profile: String,
    pub base_path: String,
    pub allow_from: StringList,
    pub manage_from: StringList,
    pub allow_generate_query: bool,
    pub require: String,
    pub manage_require: String,
    pub revoked_tokens: StringList,
    pub sharing: String,
    pub referrer_policy: String,
    pub noindex: bool,
    pub cache_private: bool,
    pub cross_site: String,
}

impl Default for ShareSection {
    fn default() -> Self {
        ShareSection {
            profile: "langsmith".to_owned(),
            base_path: String::new(),
            allow_from: StringList::default(),
            manage_from: StringList::default(),
            allow_generate_query: false,
            require: "network".to_owned(),
            manage_require: "network".to_owned(),
            revoked_tokens: StringList::default(),
            sharing: "enabled".to_owned(),
            referrer_policy: "same-origin".to_owned(),
            noindex: true,
            cache_private: true,
            cross_site: "navigate_only".to_owned(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RouteSection {
    pub name: String,
    pub paths: StringList,
    pub methods: StringList,
    pub allow_from: StringList,
    pub require: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct DefaultSection {
    pub allow_from: StringList,
    pub require: String,
}

impl Default for DefaultSection {
    fn default() -> Self {
        DefaultSection {
            allow_from: StringList(vec!["any".to_owned()]),
            require: "network".to_owned(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct IdentitySection {
    /// Where a browser without a token is sent instead of a 401.
    pub login_url: Option<String>,
    /// The query parameter of `login_url` that carries the return path.
    pub login_return_param: Option<String>,
    /// Verified claims passed to the upstream: claim name -> header name.
    pub forward_claims: BTreeMap<String, String>,
    pub jwt: Option<crate::identity::JwtSettings>,
    pub claims: Vec<crate::identity::ClaimRequirement>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct LogSection {
    pub format: String,
    pub level: String,
    pub flush_interval: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "text".to_owned(),
            level: "info".to_owned(),
            flush_interval: "200ms".to_owned(),
        }
    }
}

/// A list of strings that may also be written as one comma-separated string,
/// so that every list key can be overridden from the environment
/// (`SHAREGATE__SHARE__ALLOW_FROM=corp,vpn`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(s) => StringList(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            OneOrMany::Many(v) => StringList(v),
        })
    }
}
