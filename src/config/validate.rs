//! From the file format to the typed [`Config`]: every check, every problem
//! collected rather than returned early, so one run of `sharegate check`
//! shows everything that is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use ipnet::IpNet;

use super::file::{File, StringList};
use super::{
    ClientCertMode, Config, IdentitySettings, Limits, Listener, LogFormat, LogSettings, Problem,
    ProxyProtocol, Rate, ReloadSettings, TlsFiles, Upstream,
};
use crate::policy::network::ForwardedHeader;
use crate::policy::{Access, CustomPolicy, Hosts, NetSet, Policy, Require};
use crate::route::{Profile, RouteTable};

struct Report<'a>(&'a mut Vec<Problem>);

impl Report<'_> {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Parses a duration such as `5s`, `300ms`, `2m`; a bare number is refused
/// because its unit would be a guess.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("{s:?} is not a duration ({e}); write a number with a unit, such as \"5s\" or \"300ms\"")
    })
}

pub(super) fn validate(raw: File, base_dir: &Path, problems: &mut Vec<Problem>) -> Option<Config> {
    let mut r = Report(problems);

    // [upstream]
    let upstream = upstream(&raw, base_dir, &mut r);

    // [networks]
    let mut networks: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for (name, cidrs) in &raw.networks {
        let key = format!("networks.{name}");
        if name.eq_ignore_ascii_case("any") {
            r.add(
                key.clone(),
                "\"any\" is reserved (it means every address); pick another name",
            );
        }
        if cidrs.0.is_empty() {
            r.add(key.clone(), "is empty; list CIDRs such as \"10.0.0.0/8\"");
        }
        let mut nets = Vec::new();
        for c in &cidrs.0 {
            match parse_cidr(c) {
                Ok(n) => nets.push(n),
                Err(m) => r.add(key.clone(), m),
            }
        }
        networks.insert(name.clone(), nets);
    }

    // [client_ip]
    let trusted_proxies = net_list(
        "client_ip.trusted_proxies",
        &raw.client_ip.trusted_proxies,
        &networks,
        &mut r,
        false,
    );
    let trusted_proxies = match trusted_proxies {
        Access::Networks(s) => s,
        Access::Any => NetSet::default(),
    };
    let forwarded_header = match raw.client_ip.header.as_deref() {
        None => ForwardedHeader::default(),
        Some(h) => ForwardedHeader::parse(h).unwrap_or_else(|| {
            r.add(
                "client_ip.header",
                format!("{h:?} is not a forwarding header; use \"x-forwarded-for\" (the default) or \"forwarded\" (RFC 7239), whichever your trusted proxies set"),
            );
            ForwardedHeader::default()
        }),
    };

    // [server] and [[listeners]]
    let mut listeners = Vec::new();
    let server = ListenerSettings {
        prefix: "server".to_owned(),
        tls_cert: raw.server.tls_cert.as_ref(),
        tls_key: raw.server.tls_key.as_ref(),
        client_ca: raw.server.client_ca.as_ref(),
        client_crl: &raw.server.client_crl,
        client_cert: &raw.server.client_cert,
        proxy_protocol_from: &raw.server.proxy_protocol_from,
        proxy_protocol_optional: raw.server.proxy_protocol_optional,
    };
    let (tls, proxy_protocol) = server.validate(base_dir, &networks, &mut r);
    if raw.server.listen.0.is_empty() && raw.listeners.is_empty() {
        r.add(
            "server.listen",
            "is empty; give at least one address such as \"0.0.0.0:8443\" or \"[::]:8443\"",
        );
    }
    for a in &raw.server.listen.0 {
        match a.parse::<SocketAddr>() {
            Ok(addr) => listeners.push(Listener {
                addr,
                tls: tls.clone(),
                proxy_protocol: proxy_protocol.clone(),
            }),
            Err(_) => r.add(
                "server.listen",
                format!(
                    "{a:?} is not an address with a port; write \"0.0.0.0:8443\" or \"[::]:8443\""
                ),
            ),
        }
    }
    for (i, l) in raw.listeners.iter().enumerate() {
        let own = ListenerSettings {
            prefix: format!("listeners[{i}]"),
            tls_cert: l.tls_cert.as_ref(),
            tls_key: l.tls_key.as_ref(),
            client_ca: l.client_ca.as_ref(),
            client_crl: &l.client_crl,
            client_cert: &l.client_cert,
            proxy_protocol_from: &l.proxy_protocol_from,
            proxy_protocol_optional: l.proxy_protocol_optional,
        };
        let (tls, proxy_protocol) = own.validate(base_dir, &networks, &mut r);
        match l.address.parse::<SocketAddr>() {
            Ok(addr) => listeners.push(Listener {
                addr,
                tls,
                proxy_protocol,
            }),
            Err(_) => r.add(
                format!("listeners[{i}].address"),
                format!(
                    "{:?} is not an address with a port; write \"0.0.0.0:9443\"",
                    l.address
                ),
            ),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for l in &listeners {
        if !seen.insert(l.addr) {
            r.add(
                "server.listen / listeners",
                format!(
                    "{} is listed twice; every listener needs its own address",
                    l.addr
                ),
            );
        }
    }
    let listen: Vec<SocketAddr> = listeners.iter().map(|l| l.addr).collect();

    // [identity]
    let identity = identity_settings(&raw, &mut r);
    let identity_sources = listeners.iter().any(|l| {
        l.tls
            .as_ref()
            .is_some_and(|t| t.client_cert != ClientCertMode::Off)
    }) || identity.jwt.is_some();

    // [share]
    let profile = match raw.share.profile.as_str() {
        "langsmith" => Profile::LangSmith,
        "none" => Profile::Empty,
        other => {
            r.add(
                "share.profile",
                format!("{other:?} is not a known profile; use \"langsmith\" or \"none\""),
            );
            Profile::Empty
        }
    };
    let share_allow = net_list(
        "share.allow_from",
        &raw.share.allow_from,
        &networks,
        &mut r,
        true,
    );
    let manage_allow = net_list(
        "share.manage_from",
        &raw.share.manage_from,
        &networks,
        &mut r,
        true,
    );
    let default_allow = net_list(
        "default.allow_from",
        &raw.default.allow_from,
        &networks,
        &mut r,
        true,
    );
    let share_require = require(
        "share.require",
        &raw.share.require,
        identity_sources,
        &mut r,
    );
    let manage_require = require(
        "share.manage_require",
        &raw.share.manage_require,
        identity_sources,
        &mut r,
    );
    let default_require = require(
        "default.require",
        &raw.default.require,
        identity_sources,
        &mut r,
    );

    // Every allow list with the access expression it serves, for the
    // trusted-proxy warning.
    let mut allow_lists: Vec<(String, &StringList, Require)> = vec![
        (
            "share.allow_from".to_owned(),
            &raw.share.allow_from,
            share_require,
        ),
        (
            "share.manage_from".to_owned(),
            &raw.share.manage_from,
            manage_require,
        ),
        (
            "default.allow_from".to_owned(),
            &raw.default.allow_from,
            default_require,
        ),
    ];

    // [[routes]]
    let mut routes = Vec::new();
    let mut patterns = Vec::new();
    for (i, route) in raw.routes.iter().enumerate() {
        let key = if route.name.is_empty() {
            format!("routes[{i}]")
        } else {
            format!("routes.{}", route.name)
        };
        if route.name.is_empty() {
            r.add(
                format!("{key}.name"),
                "is missing; name every route (it appears in logs)",
            );
        } else if raw.routes[..i].iter().any(|o| o.name == route.name) {
            r.add(
                format!("{key}.name"),
                format!(
                    "{:?} is used by two routes; names must be unique",
                    route.name
                ),
            );
        }
        if route.paths.0.is_empty() {
            r.add(
                format!("{key}.paths"),
                "is empty; give at least one pattern such as \"/public/{token}/**\"",
            );
        }
        let mut methods = Vec::new();
        if route.methods.0.is_empty() {
            r.add(
                format!("{key}.methods"),
                "is empty; list the methods that are reads, such as [\"GET\", \"HEAD\"]",
            );
        }
        for m in &route.methods.0 {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(mm) => methods.push(mm),
                Err(_) => r.add(
                    format!("{key}.methods"),
                    format!("{m:?} is not an HTTP method"),
                ),
            }
        }
        let allow = net_list(
            &format!("{key}.allow_from"),
            &route.allow_from,
            &networks,
            &mut r,
            true,
        );
        let route_require = match &route.require {
            Some(v) => require(&format!("{key}.require"), v, identity_sources, &mut r),
            None => share_require,
        };
        allow_lists.push((
            format!("{key}.allow_from"),
            &route.allow_from,
            route_require,
        ));
        routes.push(CustomPolicy {
            name: route.name.clone(),
            methods,
            allow,
            require: route_require,
        });
        patterns.push(route.paths.0.clone());
    }

    let base_path = raw.share.base_path.trim_end_matches('/').to_owned();
    let table = match RouteTable::new(profile, &base_path, &patterns) {
        Ok(t) => Some(t),
        Err(e) => {
            r.add("share.base_path / routes.paths", e.to_string());
            None
        }
    };

    // [share] edge controls
    let revoked = crate::policy::revoked::RevokedTokens::new(
        raw.share
            .revoked_tokens
            .0
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    );
    let sharing_enabled = match raw.share.sharing.as_str() {
        "enabled" => true,
        "disabled" => false,
        other => {
            r.add(
                "share.sharing",
                format!("{other:?} is not a switch value; use \"enabled\" or \"disabled\""),
            );
            true
        }
    };

    let cross_site_navigate_only = match raw.share.cross_site.trim() {
        "navigate_only" => true,
        "allow" => false,
        other => {
            r.add(
                "share.cross_site",
                format!("{other:?} is not a cross-site setting; use \"navigate_only\" (the default: from another site, only opening a share page passes) or \"allow\""),
            );
            true
        }
    };
    // The policies that never send a page's path to another site (W3C
    // Referrer Policy §3).
    const KEEP_PATH_HOME: [&str; 6] = [
        "same-origin",
        "no-referrer",
        "strict-origin",
        "origin",
        "origin-when-cross-origin",
        "strict-origin-when-cross-origin",
    ];
    let policy = raw.share.referrer_policy.trim();
    let known = KEEP_PATH_HOME.iter().find(|k| **k == policy);
    let referrer_policy = match (policy, known) {
        (_, Some(k)) => Some(http::HeaderValue::from_static(k)),
        ("off", None) => None,
        (p @ ("unsafe-url" | "no-referrer-when-downgrade"), None) => {
            r.add(
                "share.referrer_policy",
                format!("{p:?} sends the share page's URL, token included, to every site the page loads from or links to; use \"same-origin\" (the default), \"no-referrer\", or \"off\" to leave the upstream's header"),
            );
            None
        }
        (other, None) => {
            r.add(
                "share.referrer_policy",
                format!("{other:?} is not a referrer policy; use \"same-origin\" (the default), \"no-referrer\", \"strict-origin\", \"origin\", \"origin-when-cross-origin\", \"strict-origin-when-cross-origin\", or \"off\""),
            );
            None
        }
    };

    // [server] extras, [admin], [limits], [audit], [reload]
    let mut redirect_listen = Vec::new();
    for a in &raw.server.redirect_listen.0 {
        match a.parse::<SocketAddr>() {
            Ok(sa) => redirect_listen.push(sa),
            Err(_) => r.add(
                "server.redirect_listen",
                format!("{a:?} is not an address with a port; write \"0.0.0.0:8080\""),
            ),
        }
    }
    if !redirect_listen.is_empty() && !listeners.iter().any(|l| l.tls.is_some()) {
        r.add(
            "server.redirect_listen",
            "redirects to HTTPS need TLS on server.listen; set server.tls_cert and server.tls_key",
        );
    }
    let shutdown_grace = duration("server.shutdown_grace", &raw.server.shutdown_grace, &mut r);
    let hosts = match Hosts::parse(&raw.server.hosts.0) {
        Ok(h) => h,
        Err(problems) => {
            for p in problems {
                r.add("server.hosts", p);
            }
            Hosts::default()
        }
    };
    let admin_listen = match raw.admin.listen.trim() {
        "" | "off" => None,
        a => {
            match a.parse::<SocketAddr>() {
                Ok(sa) => {
                    if listen.contains(&sa) || redirect_listen.contains(&sa) {
                        r.add("admin.listen", format!("{a:?} is also a traffic listener; give the admin endpoint its own address"));
                    }
                    Some(sa)
                }
                Err(_) => {
                    r.add("admin.listen", format!("{a:?} is not an address with a port; write \"127.0.0.1:9090\", or \"off\""));
                    None
                }
            }
        }
    };
    let limits = limits(&raw, &mut r);
    let audit_file = raw
        .audit
        .file
        .as_ref()
        .filter(|f| !f.trim().is_empty())
        .map(|f| base_dir.join(f));
    if let Some(f) = &audit_file {
        match f.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => r.add(
                "audit.file",
                format!(
                    "the folder of {} does not exist; create it or pick another path",
                    f.display()
                ),
            ),
            _ => {}
        }
        // What the path is now (through a symlink), looked at without
        // opening it: a named pipe's open would wait for a reader. The
        // open checks again (`telemetry::audit::open_regular`).
        let kind = std::fs::metadata(f)
            .ok()
            .and_then(|m| crate::telemetry::audit::not_a_regular_file(&m.file_type()));
        if let Some(kind) = kind {
            r.add(
                "audit.file",
                format!(
                    "{}: {}",
                    f.display(),
                    crate::telemetry::audit::not_regular_message(kind)
                ),
            );
        }
    }
    let reload_interval = duration("reload.interval", &raw.reload.interval, &mut r);
    let mut files = Vec::new();
    for t in listeners.iter().filter_map(|l| l.tls.as_ref()) {
        let crls = t.client_crl.iter().map(|c| &c.path);
        for f in [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .chain(crls)
        {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
    }
    // The upstream's CA bundle: a reissued upstream certificate under a new
    // CA is trusted at the next look, as a new listener certificate is.
    if let Some(f) = upstream.as_ref().and_then(|u| u.ca_file.as_ref()) {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    // Key files too: a key withdrawn from them (compromised, or rotated by
    // the issuer into a mounted Secret) must stop its tokens without a
    // signal, as a withdrawn client CA does.
    if let Some(jwt) = &raw.identity.jwt {
        let keys = jwt.pem_files.iter();
        for f in keys.chain(&jwt.jwks_file).chain(&jwt.hmac_secret_file) {
            let f = base_dir.join(f);
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }

    // [rewrite]
    let rewrite = rewrite_settings(&raw, &mut r);

    // [log]
    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            r.add(
                "log.format",
                format!("{other:?} is not a log format; use \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    if crate::telemetry::level_filter(&raw.log.level).is_err() {
        r.add(
            "log.level",
            format!("{:?} is not a level or filter; use \"info\", \"debug\" or a filter such as \"sharegate=debug\"", raw.log.level),
        );
    }

    let flush_interval = match parse_duration(&raw.log.flush_interval) {
        Ok(d) if d <= Duration::from_secs(60) => Some(d),
        Ok(_) => {
            r.add(
                "log.flush_interval",
                format!("{:?} is over a minute; lines would wait too long (\"200ms\" is the default, \"0s\" writes each line at once)", raw.log.flush_interval),
            );
            None
        }
        Err(m) => {
            r.add("log.flush_interval", m);
            None
        }
    };

    let warnings = trusted_proxies_inside(
        &raw.client_ip.trusted_proxies,
        &allow_lists,
        &networks,
        forwarded_header,
    );

    Some(Config {
        warnings,
        listeners,
        upstream: upstream?,
        policy: Policy {
            hosts,
            trusted_proxies,
            forwarded_header,
            share_allow,
            manage_allow,
            default_allow,
            allow_generate_query: raw.share.allow_generate_query,
            share_require,
            manage_require,
            default_require,
            revoked_tokens: revoked,
            sharing_enabled,
            cross_site_navigate_only,
            routes,
        },
        routes: table?,
        identity,
        log: LogSettings {
            format,
            level: raw.log.level,
            flush_interval: flush_interval?,
        },
        redirect_listen,
        shutdown_grace: shutdown_grace?,
        workers: raw.server.workers,
        admin_listen,
        limits: limits?,
        audit_file,
        reload: ReloadSettings {
            watch: raw.reload.watch,
            interval: reload_interval?,
        },
        files,
        base_dir: base_dir.to_path_buf(),
        rewrite,
        share_headers: super::ShareHeaders {
            referrer_policy,
            noindex: raw.share.noindex,
            cache_private: raw.share.cache_private,
        },
    })
}

fn upstream(raw: &File, base_dir: &Path, r: &mut Report<'_>) -> Option<Upstream> {
    let connect_timeout = duration("upstream.connect_timeout", &raw.upstream.connect_timeout, r);
    let response_timeout = duration(
        "upstream.response_timeout",
        &raw.upstream.response_timeout,
        r,
    );
    let ca_file = raw.upstream.ca_file.as_ref().map(|f| base_dir.join(f));
    if let Some(f) = &ca_file {
        if !f.is_file() {
            r.add(
                "upstream.ca_file",
                format!(
                    "{} does not exist or is not a file; give a PEM bundle of CA certificates",
                    f.display()
                ),
            );
        }
    }
    let Some(url) = &raw.upstream.url else {
        r.add(
            "upstream.url",
            "is missing; give the app's address, such as \"http://langsmith-frontend:80\"",
        );
        return None;
    };
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => {
            r.add(
                "upstream.url",
                format!("{url:?} is not a URL; write \"http://host:port\" or \"https://host\""),
            );
            return None;
        }
    };
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            r.add(
                "upstream.url",
                format!("{url:?} must start with http:// or https://"),
            );
            return None;
        }
    };
    if uri.authority().is_none() {
        r.add(
            "upstream.url",
            format!("{url:?} has no host; write \"http://host:port\""),
        );
        return None;
    }
    if let Some(hidden) = without_userinfo(&uri) {
        r.add(
            "upstream.url",
            format!("{hidden:?} names a user or password before the host; no credentials are sent from this URL, and it appears in logs, /readyz and `check`: give only scheme, host and port"),
        );
        return None;
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        r.add(
            "upstream.url",
            format!("{url:?} has a path or query; give only scheme, host and port (the client's path is forwarded as checked; use share.base_path for an app under a sub-path)"),
        );
        return None;
    }
    Some(Upstream {
        url: uri,
        https,
        connect_timeout: connect_timeout?,
        response_timeout: response_timeout?,
        ca_file,
    })
}

/// `uri` with its user information replaced by `***`, when it has any (so
/// an error message never repeats a password).
pub(crate) fn without_userinfo(uri: &http::Uri) -> Option<String> {
    let authority = uri.authority()?.as_str();
    let (_, host) = authority.rsplit_once('@')?;
    Some(format!(
        "{}://***@{host}{}",
        uri.scheme_str().unwrap_or_default(),
        uri.path_and_query().map_or("", |pq| pq.as_str())
    ))
}

fn duration(key: &str, value: &str, r: &mut Report<'_>) -> Option<Duration> {
    match parse_duration(value) {
        Ok(d) if d.is_zero() => {
            r.add(
                key,
                format!("{value:?} is zero; give a positive duration such as \"5s\""),
            );
            None
        }
        Ok(d) => Some(d),
        Err(m) => {
            r.add(key, m);
            None
        }
    }
}

fn parse_cidr(c: &str) -> Result<IpNet, String> {
    let c = c.trim();
    if let Ok(n) = c.parse::<IpNet>() {
        return Ok(n);
    }
    // A bare address means that one host.
    if let Ok(ip) = c.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{c:?} is not a CIDR; write an IPv4 or IPv6 range such as \"10.0.0.0/8\" or \"fd00::/8\""
    ))
}

/// The networks a list entry names: a `[networks]` name or a CIDR (an
/// entry that is neither is a problem reported elsewhere), canonical.
fn resolve(entry: &str, networks: &BTreeMap<String, Vec<IpNet>>) -> Vec<IpNet> {
    let nets = match networks.get(entry) {
        Some(found) => found.clone(),
        None => parse_cidr(entry).into_iter().collect(),
    };
    NetSet::new(Vec::new(), nets).nets().to_vec()
}

/// Warns where a `client_ip.trusted_proxies` entry meets an allow list: a
/// trusted proxy that sends no forwarding header (a load balancer's health
/// check, a request of its own) is its own client, so from an address in
/// both it passes as a client inside that list. One warning per proxy
/// entry, list and list entry, naming the addresses they share. Lists
/// that admit `"any"`, or serve `require = "identity"` (no network is
/// consulted), are not ones the proxy's address changes.
fn trusted_proxies_inside(
    trusted: &StringList,
    lists: &[(String, &StringList, Require)],
    networks: &BTreeMap<String, Vec<IpNet>>,
    header: ForwardedHeader,
) -> Vec<Problem> {
    let show = |n: &IpNet| {
        if n.prefix_len() == n.max_prefix_len() {
            n.addr().to_string()
        } else {
            n.to_string()
        }
    };
    let mut warnings = Vec::new();
    for proxy in trusted.0.iter().filter(|e| *e != "any") {
        let proxy_nets = resolve(proxy, networks);
        for (key, list, require) in lists {
            if *require == Require::Identity || list.0.iter().any(|e| e == "any") {
                continue;
            }
            for entry in &list.0 {
                let entry_nets = resolve(entry, networks);
                // Two ranges meet when one holds the other; the smaller is
                // where they meet.
                let shared: Vec<IpNet> = proxy_nets
                    .iter()
                    .flat_map(|p| entry_nets.iter().map(move |e| (p, e)))
                    .filter_map(|(p, e)| {
                        if p.contains(e) {
                            Some(*e)
                        } else if e.contains(p) {
                            Some(*p)
                        } else {
                            None
                        }
                    })
                    .collect();
                if shared.is_empty() {
                    continue;
                }
                let shared = NetSet::new(Vec::new(), shared);
                let hosts = shared
                    .nets()
                    .iter()
                    .all(|n| n.prefix_len() == n.max_prefix_len());
                let at: Vec<String> = shared.nets().iter().map(show).collect();
                warnings.push(Problem {
                    key: "client_ip.trusted_proxies".to_owned(),
                    message: format!(
                        "{proxy:?} overlaps {key} {entry:?}: a trusted proxy {} {} that sends no {} header (a health check, a request of its own) is its own client, inside {key}; keep trusted proxies' addresses out of {key}, or trust only proxies that always set the header",
                        if hosts { "at" } else { "in" },
                        at.join(", "),
                        header.name(),
                    ),
                });
            }
        }
    }
    warnings
}

/// A list of network names and literal CIDRs; `"any"` alone means everyone
/// where `allow_any` is set.
fn net_list(
    key: &str,
    list: &StringList,
    networks: &BTreeMap<String, Vec<IpNet>>,
    r: &mut Report<'_>,
    allow_any: bool,
) -> Access {
    if list.0.iter().any(|e| e == "any") {
        if !allow_any {
            r.add(
                key,
                "\"any\" is not allowed here; list the proxies' addresses or network names",
            );
        } else if list.0.len() > 1 {
            r.add(
                key,
                "\"any\" already admits everyone; write it alone, or list networks instead",
            );
        }
        return Access::Any;
    }
    let mut names = Vec::new();
    let mut nets = Vec::new();
    for entry in &list.0 {
        let found = match networks.get(entry) {
            Some(found) => Some(found.clone()),
            None => parse_cidr(entry).ok().map(|n| vec![n]),
        };
        if let Some(found) = found {
            if !allow_any {
                every_address(key, entry, &found, r);
            }
            names.push(entry.clone());
            nets.extend(found);
        } else {
            let known: Vec<&str> = networks.keys().map(String::as_str).collect();
            r.add(
                key,
                format!(
                    "{entry:?} is neither a network name from [networks] (known: {}) nor a CIDR such as \"10.1.0.0/16\"",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            );
        }
    }
    Access::Networks(NetSet::new(names, nets))
}

/// Reports `entry` when it spans every IPv4 or every IPv6 address (also
/// written IPv4-mapped, `::ffff:0.0.0.0/96`): where `"any"` is refused, a
/// list of peers believed about the client, a range of everyone is the
/// same refusal.
fn every_address(key: &str, entry: &str, nets: &[IpNet], r: &mut Report<'_>) {
    let set = NetSet::new(Vec::new(), nets.to_vec());
    if let Some(all) = set.nets().iter().find(|n| n.prefix_len() == 0) {
        let family = if all.addr().is_ipv4() { "IPv4" } else { "IPv6" };
        r.add(
            key,
            format!("{entry:?} is every {family} address: every client could name any address as its own; list the proxies' addresses or network names"),
        );
    }
}

fn require(key: &str, value: &str, identity_sources: bool, r: &mut Report<'_>) -> Require {
    let req = match value {
        "network" => Require::Network,
        "identity" => Require::Identity,
        "network_and_identity" => Require::NetworkAndIdentity,
        "network_or_identity" => Require::NetworkOrIdentity,
        other => {
            r.add(
                key,
                format!("{other:?} is not an access expression; use \"network\", \"identity\", \"network_and_identity\" or \"network_or_identity\""),
            );
            return Require::Network;
        }
    };
    if req != Require::Network && !identity_sources {
        r.add(
            key,
            format!("{value:?} needs an identity source; configure [identity.jwt], or client_ca and client_cert on a listener"),
        );
    }
    req
}

fn identity_settings(raw: &File, r: &mut Report<'_>) -> IdentitySettings {
    let id = &raw.identity;
    let login_url = id.login_url.as_ref().and_then(|u| match u.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("https" | "http")) && uri.authority().is_some() =>
        {
            Some(uri)
        }
        _ => {
            r.add(
                "identity.login_url",
                format!("{u:?} is not an absolute http(s) URL; write \"https://sso.example.com/login\""),
            );
            None
        }
    });
    let login_return_param = id
        .login_return_param
        .clone()
        .unwrap_or_else(|| "rd".to_owned());
    // RFC 3986 §2.3's unreserved characters: the name is written into the
    // redirect as it stands, so it must not end the query or add to it.
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    if login_return_param.is_empty() || !login_return_param.bytes().all(unreserved) {
        r.add(
            "identity.login_return_param",
            format!("{login_return_param:?} is not a plain query parameter name; use letters, digits, '-', '.', '_' or '~', e.g. \"rd\" or \"next\""),
        );
    }
    let mut forward_claims = Vec::new();
    for (claim, header) in &id.forward_claims {
        match http::HeaderName::from_bytes(header.as_bytes()) {
            Ok(h) if is_gateway_header(&h) => r.add(
                format!("identity.forward_claims.{claim}"),
                format!("{header:?} is a header the gateway sets, removes or frames the request with; choose a name of your own, e.g. \"X-Sharegate-Email\""),
            ),
            Ok(h) if !header.contains('_') => forward_claims.push((claim.clone(), h)),
            _ => r.add(
                format!("identity.forward_claims.{claim}"),
                format!("{header:?} is not a valid header name (letters, digits and '-', no '_')"),
            ),
        }
    }
    if let Some(jwt) = &id.jwt {
        r.0.extend(jwt.validate("identity.jwt"));
    }
    for (i, c) in id.claims.iter().enumerate() {
        r.0.extend(c.validate(&format!("identity.claims[{i}]")));
    }
    if !id.claims.is_empty() && id.jwt.is_none() && raw.server.client_ca.is_none() {
        r.add("identity.claims", "claim requirements need an identity source; configure [identity.jwt] or server.client_ca");
    }
    IdentitySettings {
        jwt: id.jwt.clone(),
        claims: crate::identity::ClaimRules::new(&id.claims),
        login_url,
        login_return_param,
        forward_claims,
    }
}

/// Headers a claim must not be forwarded in: those that frame the request
/// or name its host (a claim value there would change what the upstream
/// reads as the request), those the gateway sets itself or removes from
/// every request (hop-by-hop, forwarding, method and path overrides), and
/// the client's own credentials.
fn is_gateway_header(name: &http::HeaderName) -> bool {
    use http::header;
    const OWNED: &[&str] = &[
        "keep-alive",
        "proxy-connection",
        "forwarded",
        "x-real-ip",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    ];
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::EXPECT,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::AUTHORIZATION,
        header::COOKIE,
    ]
    .contains(name)
        || OWNED.contains(&name.as_str())
        || name.as_str().starts_with("x-forwarded-")
}

/// Upper bounds of `[limits]` counts: beyond them a value is a typo, and
/// the server would fail on it (a semaphore of more permits than tokio
/// holds; `max_headers` slots made for every request head).
const MAX_CONNECTIONS: usize = 1_000_000;
const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
const MAX_HEADERS: usize = 10_000;

fn limits(raw: &File, r: &mut Report<'_>) -> Option<Limits> {
    let l = &raw.limits;
    let handshake = duration("limits.handshake_timeout", &l.handshake_timeout, r);
    let header = duration("limits.header_timeout", &l.header_timeout, r);
    let body = duration("limits.body_timeout", &l.body_timeout, r);
    let send = duration("limits.send_timeout", &l.send_timeout, r);
    if l.max_connections == 0 {
        r.add(
            "limits.max_connections",
            "is 0; give a positive number such as 10000",
        );
    } else if l.max_connections > MAX_CONNECTIONS {
        r.add(
            "limits.max_connections",
            format!(
                "{} is above the maximum of {MAX_CONNECTIONS} (each connection holds file descriptors and buffers)",
                l.max_connections
            ),
        );
    }
    if l.max_header_bytes < 8192 {
        r.add(
            "limits.max_header_bytes",
            format!("{} is below the minimum of 8192", l.max_header_bytes),
        );
    } else if l.max_header_bytes > MAX_HEADER_BYTES {
        r.add(
            "limits.max_header_bytes",
            format!(
                "{} is above the maximum of {MAX_HEADER_BYTES} (16 MiB; every connection may buffer that much)",
                l.max_header_bytes
            ),
        );
    }
    if l.max_headers == 0 {
        r.add(
            "limits.max_headers",
            "is 0; give a positive number such as 100",
        );
    } else if l.max_headers > MAX_HEADERS {
        r.add(
            "limits.max_headers",
            format!(
                "{} is above the maximum of {MAX_HEADERS} (room for that many is made for every request head)",
                l.max_headers
            ),
        );
    }
    if l.http2_max_concurrent_streams == 0 {
        r.add(
            "limits.http2_max_concurrent_streams",
            "is 0; give a positive number such as 100",
        );
    }
    let share_rate = rate("limits.share_rate", &l.share_rate, r);
    let generate_query_rate = rate("limits.generate_query_rate", &l.generate_query_rate, r);
    Some(Limits {
        max_connections: l.max_connections,
        handshake_timeout: handshake?,
        header_timeout: header?,
        body_timeout: body?,
        send_timeout: send?,
        max_header_bytes: l.max_header_bytes,
        max_headers: l.max_headers,
        max_public_body_bytes: l.max_public_body_bytes,
        http2_max_concurrent_streams: l.http2_max_concurrent_streams,
        share_rate: share_rate?,
        generate_query_rate: generate_query_rate?,
    })
}

/// `"600/min"`, `"10/s"`, `"100/h"`, or `"off"`.
fn rate(key: &str, value: &str, r: &mut Report<'_>) -> Option<Option<Rate>> {
    if value.trim() == "off" {
        return Some(None);
    }
    let parsed = value.split_once('/').and_then(|(n, unit)| {
        let count: u32 = n.trim().parse().ok().filter(|c| *c > 0)?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(Rate { count, per })
    });
    match parsed {
        Some(rate) => Some(Some(rate)),
        None => {
            r.add(
                key,
                format!("{value:?} is not a rate; write requests per period such as \"600/min\", \"10/s\" or \"100/h\", or \"off\""),
            );
            None
        }
    }
}

fn rewrite_settings(raw: &File, r: &mut Report<'_>) -> Option<super::RewriteSettings> {
    use crate::rewrite::{Origin, RewriteOptions, Rules};
    let rw = &raw.rewrite;
    if rw.from.0.is_empty() && rw.to.is_none() {
        return None;
    }
    let mut from = Vec::new();
    for f in &rw.from.0 {
        match Origin::parse(f) {
            Ok(o) => from.push(o),
            Err(e) => r.add("rewrite.from", e.to_string()),
        }
    }
    if rw.from.0.is_empty() {
        r.add("rewrite.from", "is empty while rewrite.to is set; list the public origins, such as [\"https://smith.example.com\"]");
    }
    let to = match &rw.to {
        None => {
            r.add("rewrite.to", "is missing while rewrite.from is set; give the private origin, such as \"https://langsmith.corp.example\"");
            return None;
        }
        Some(t) => match Origin::parse(t) {
            Ok(o) => o,
            Err(e) => {
                r.add("rewrite.to", e.to_string());
                return None;
            }
        },
    };
    let mut opts = RewriteOptions {
        skip_signed_urls: rw.skip_signed_urls,
        ..RewriteOptions::default()
    };
    if let Some(types) = &rw.content_types {
        opts.content_types.clone_from(&types.0);
    }
    if from.len() != rw.from.0.len() {
        return None;
    }
    match Rules::new(from, to, opts) {
        Ok(rules) => Some(super::RewriteSettings {
            rules: std::sync::Arc::new(rules),
            request_origin: rw.request_origin,
        }),
        Err(e) => {
            r.add("rewrite", e.to_string());
            None
        }
    }
}

/// The connection settings of one listener: `[server]` for the addresses in
/// `server.listen`, or one `[[listeners]]` entry.
struct ListenerSettings<'a> {
    prefix: String,
    tls_cert: Option<&'a String>,
    tls_key: Option<&'a String>,
    client_ca: Option<&'a String>,
    client_crl: &'a StringList,
    client_cert: &'a str,
    proxy_protocol_from: &'a StringList,
    proxy_protocol_optional: bool,
}

impl ListenerSettings<'_> {
    /// `client_crl`, read and checked against `client_ca` (the CRLs'
    /// contents are read here, unlike other certificate files, because
    /// what is wrong with a CRL is a config problem `check` must show).
    fn client_crls(
        &self,
        base_dir: &Path,
        client_ca: Option<&Path>,
        r: &mut Report<'_>,
    ) -> Vec<crate::tls::crl::Crl> {
        let p = &self.prefix;
        if self.client_crl.0.is_empty() {
            return Vec::new();
        }
        let Some(ca) = client_ca else {
            r.add(
                format!("{p}.client_crl"),
                format!("needs {p}.client_ca: a CRL revokes client certificates, which are only verified against client_ca"),
            );
            return Vec::new();
        };
        let cas = match crate::tls::load_certs(ca) {
            Ok(c) => c,
            Err(e) => {
                // Missing is already said; what else is wrong, said here:
                // the CRLs cannot be checked without their CAs.
                if ca.is_file() {
                    r.add(format!("{p}.client_ca"), e.to_string());
                }
                return Vec::new();
            }
        };
        let paths: Vec<PathBuf> = self.client_crl.0.iter().map(|f| base_dir.join(f)).collect();
        match crate::tls::crl::read(&paths, &cas) {
            Ok(crls) => crls,
            Err(problems) => {
                for m in problems {
                    r.add(format!("{p}.client_crl"), m);
                }
                Vec::new()
            }
        }
    }

    fn validate(
        &self,
        base_dir: &Path,
        networks: &BTreeMap<String, Vec<IpNet>>,
        r: &mut Report<'_>,
    ) -> (Option<TlsFiles>, ProxyProtocol) {
        let p = &self.prefix;
        let tls = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let cert = base_dir.join(c);
                let key = base_dir.join(k);
                for (name, path) in [("tls_cert", &cert), ("tls_key", &key)] {
                    if !path.is_file() {
                        r.add(
                            format!("{p}.{name}"),
                            format!(
                                "{} does not exist or is not a file; give a PEM file (relative paths are taken from the config file's folder)",
                                path.display()
                            ),
                        );
                    }
                }
                let client_ca = self.client_ca.map(|f| base_dir.join(f));
                if let Some(ca) = &client_ca {
                    if !ca.is_file() {
                        r.add(
                            format!("{p}.client_ca"),
                            format!("{} does not exist or is not a file; give a PEM bundle of the CAs that issue client certificates", ca.display()),
                        );
                    }
                }
                let client_cert = match (self.client_cert, &client_ca) {
                    ("off", None) => ClientCertMode::Off,
                    ("off", Some(_)) => {
                        r.add(format!("{p}.client_cert"), format!("is \"off\" while {p}.client_ca is set; set \"optional\" or \"required\", or remove client_ca"));
                        ClientCertMode::Off
                    }
                    ("optional", Some(_)) => ClientCertMode::Optional,
                    ("required", Some(_)) => ClientCertMode::Required,
                    ("optional" | "required", None) => {
                        r.add(format!("{p}.client_cert"), format!("{:?} needs {p}.client_ca, the CA bundle client certificates are checked against", self.client_cert));
                        ClientCertMode::Off
                    }
                    (other, _) => {
                        r.add(
                            format!("{p}.client_cert"),
                            format!("{other:?} is not a mode; use \"off\", \"optional\" or \"required\""),
                        );
                        ClientCertMode::Off
                    }
                };
                let client_crl = self.client_crls(base_dir, client_ca.as_deref(), r);
                Some(TlsFiles {
                    cert,
                    key,
                    client_ca,
                    client_crl,
                    client_cert,
                })
            }
            (Some(_), None) => {
                r.add(
                    format!("{p}.tls_key"),
                    format!("is missing while {p}.tls_cert is set; give both for TLS, or neither for plain HTTP"),
                );
                None
            }
            (None, Some(_)) => {
                r.add(
                    format!("{p}.tls_cert"),
                    format!("is missing while {p}.tls_key is set; give both for TLS, or neither for plain HTTP"),
                );
                None
            }
        };
        if tls.is_none()
            && (self.client_ca.is_some()
                || self.client_cert != "off"
                || !self.client_crl.0.is_empty())
        {
            let key = if self.client_ca.is_none() && self.client_cert == "off" {
                "client_crl"
            } else {
                "client_ca"
            };
            r.add(
                format!("{p}.{key}"),
                format!("client certificates need TLS on the listener; set {p}.tls_cert and {p}.tls_key"),
            );
        }
        let from = match net_list(
            &format!("{p}.proxy_protocol_from"),
            self.proxy_protocol_from,
            networks,
            r,
            false,
        ) {
            Access::Networks(s) => s,
            Access::Any => NetSet::default(),
        };
        if self.proxy_protocol_optional && from.is_empty() {
            r.add(
                format!("{p}.proxy_protocol_optional"),
                format!("is set but {p}.proxy_protocol_from is empty; list the load balancers that send PROXY headers"),
            );
        }
        (
            tls,
            ProxyProtocol {
                from,
                optional: self.proxy_protocol_optional,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::policy::network::ForwardedHeader;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml(text, std::path::Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    /// The trusted-proxy warning reads addresses canonically (an
    /// IPv4-mapped proxy entry meets an IPv4 allow list), names the header
    /// in force, and leaves out lists served by identity alone.
    #[test]
    fn a_trusted_proxy_inside_an_allow_list_is_warned_about() {
        let warnings = |extra: &str| {
            let text = format!(
                "[upstream]\nurl = \"http://x:1\"\n[client_ip]\ntrusted_proxies = [\"::ffff:10.20.0.0/120\"]\n{extra}"
            );
            let cfg = Config::from_toml(&text, std::path::Path::new("."))
                .unwrap_or_else(|e| panic!("{e}"));
            cfg.warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            warnings("header = \"forwarded\"\n[share]\nallow_from = [\"10.0.0.0/8\"]\n"),
            ["client_ip.trusted_proxies: \"::ffff:10.20.0.0/120\" overlaps share.allow_from \"10.0.0.0/8\": a trusted proxy in 10.20.0.0/24 that sends no Forwarded header (a health check, a request of its own) is its own client, inside share.allow_from; keep trusted proxies' addresses out of share.allow_from, or trust only proxies that always set the header"]
        );
        assert!(warnings("[share]\nallow_from = [\"10.30.0.0/16\", \"fd00::/8\"]\n").is_empty());
        let secret = "[identity.jwt]\nsources = [\"bearer\"]\nalgorithms = [\"HS256\"]\nissuers = [\"i\"]\naudiences = [\"a\"]\nhmac_secret_env = \"SHAREGATE_TEST_UNSET\"\n";
        assert!(
            warnings(&format!(
                "[share]\nallow_from = [\"10.0.0.0/8\"]\nrequire = \"identity\"\n{secret}"
            ))
            .is_empty(),
            "require = \"identity\" consults no network"
        );
    }

    /// Every file a config is built from is watched and hashed: the
    /// upstream's CA bundle and the JWT key files as well as TLS material.
    #[test]
    fn the_files_a_config_is_built_from_include_the_upstream_ca_and_jwt_keys() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["up-ca.pem", "keys.jwks"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let cfg = Config::from_toml(
            "[upstream]\nurl = \"https://127.0.0.1:2\"\nca_file = \"up-ca.pem\"\n\
             [identity.jwt]\nsources = [\"bearer\"]\nalgorithms = [\"ES256\"]\n\
             waive_issuer = true\nwaive_audience = true\njwks_file = \"keys.jwks\"\n",
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            cfg.files,
            [dir.path().join("up-ca.pem"), dir.path().join("keys.jwks")]
        );
    }

    const IDENTITY_BASE: &str = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstream]\nurl = \"http://127.0.0.1:2\"\n[identity]\n";

    #[test]
    fn login_return_param_is_a_plain_parameter_name() {
        let with = |name: &str| {
            problems(&format!(
                "{IDENTITY_BASE}login_url = \"https://sso.example.com/login\"\nlogin_return_param = {name:?}\n"
            ))
        };
        for ok in ["rd", "next", "return_to", "r.d~-"] {
            assert_eq!(with(ok), Vec::<String>::new(), "{ok:?}");
        }
        for bad in [
            "",
            "rd&admin=1",
            "rd#",
            "r d",
            "rd=x",
            "r%64",
            "rd\r\nSet-Cookie: x",
        ] {
            assert_eq!(
                with(bad),
                [format!("identity.login_return_param: {bad:?} is not a plain query parameter name; use letters, digits, '-', '.', '_' or '~', e.g. \"rd\" or \"next\"")],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn forward_claims_cannot_name_a_header_the_gateway_owns() {
        let with = |header: &str| {
            problems(&format!(
                "{IDENTITY_BASE}[identity.forward_claims]\nemail = {header:?}\n"
            ))
        };
        assert_eq!(with("X-Sharegate-Email"), Vec::<String>::new());
        for bad in [
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Cookie",
            "Authorization",
            "X-Forwarded-For",
            "x-forwarded-user",
            "Forwarded",
            "X-Real-IP",
            "X-HTTP-Method-Override",
            "X-Original-URL",
            "Expect",
        ] {
            assert_eq!(
                with(bad),
                [format!("identity.forward_claims.email: {bad:?} is a header the gateway sets, removes or frames the request with; choose a name of your own, e.g. \"X-Sharegate-Email\"")],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn log_flush_interval_is_a_duration_of_at_most_a_minute() {
        let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstream]\nurl = \"http://127.0.0.1:2\"\n[log]\n";
        let ok = |v: &str| {
            Config::from_toml(
                &format!("{base}flush_interval = {v:?}\n"),
                std::path::Path::new("."),
            )
            .map(|c| c.log.flush_interval)
        };
        assert_eq!(ok("0s").ok(), Some(std::time::Duration::ZERO));
        assert_eq!(ok("1s").ok(), Some(std::time::Duration::from_secs(1)));
        let default = Config::from_toml(base, std::path::Path::new(".")).unwrap();
        assert_eq!(
            default.log.flush_interval,
            std::time::Duration::from_millis(200)
        );
        for bad in ["soon", "2m"] {
            let p = problems(&format!("{base}flush_interval = {bad:?}\n"));
            assert!(
                p.len() == 1 && p[0].starts_with("log.flush_interval: "),
                "{bad}: {p:?}"
            );
        }
    }

    /// Field values in a log filter are matched literally: compiled as
    /// regular expressions, this one (found by the config fuzzer) built an
    /// automaton of gigabytes before the loader could answer.
    #[test]
    fn log_filters_are_checked_without_compiling_field_values_as_patterns() {
        let base =
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstream]\nurl = \"http://127.0.0.1:2\"\n";
        // fuzz/regressions/config/log-level-field-regex-blowup
        let fuzzed = "[iBBBnB%{s=ne8888.......................................................88888888888[[routes]]88888888888888888888888+888888888888888]........lgo..8888888888888888888888888888888888888888888888888888888888888888888888888888889stio?nns}=nnTTTT";
        let p = problems(&format!("{base}[log]\nlevel = {fuzzed:?}\n"));
        assert!(p.len() == 1 && p[0].starts_with("log.level: "), "{p:?}");
        let fine = format!("{base}[log]\nlevel = \"info,[request{{path=/public}}]=debug\"\n");
        assert!(problems(&fine).is_empty(), "{:?}", problems(&fine));
    }

    /// A range of every address is `"any"` written another way: believed
    /// from every peer, forwarding headers and PROXY headers would let
    /// anyone name any client.
    #[test]
    fn peers_believed_about_the_client_are_never_every_address() {
        let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstream]\nurl = \"http://127.0.0.1:2\"\n[networks]\nall4 = [\"10.0.0.0/8\", \"::ffff:0.0.0.0/96\"]\n";
        let got = problems(&format!(
            "{base}[client_ip]\ntrusted_proxies = [\"0.0.0.0/0\", \"10.1.2.3\"]\n"
        ));
        assert_eq!(
            got,
            ["client_ip.trusted_proxies: \"0.0.0.0/0\" is every IPv4 address: every client could name any address as its own; list the proxies' addresses or network names"]
        );
        let got = problems(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:3\"\nproxy_protocol_from = [\"::/0\"]\n{base}[client_ip]\ntrusted_proxies = [\"all4\"]\n"
        ));
        assert_eq!(
            got,
            [
                "client_ip.trusted_proxies: \"all4\" is every IPv4 address: every client could name any address as its own; list the proxies' addresses or network names",
                "listeners[0].proxy_protocol_from: \"::/0\" is every IPv6 address: every client could name any address as its own; list the proxies' addresses or network names",
            ]
        );
        // Elsewhere a network may be every address.
        assert!(problems(&format!(
            "{base}[share]\nallow_from = [\"0.0.0.0/0\", \"::/0\"]\n"
        ))
        .is_empty());
    }

    #[test]
    fn client_ip_header_names_one_forwarding_header() {
        let base = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstream]\nurl = \"http://127.0.0.1:2\"\n[client_ip]\n";
        let header = |v: &str| {
            Config::from_toml(
                &format!("{base}header = {v:?}\n"),
                std::path::Path::new("."),
            )
            .map(|c| c.policy.forwarded_header)
        };
        assert_eq!(header("Forwarded").ok(), Some(ForwardedHeader::Forwarded));
        assert_eq!(
            header("x-forwarded-for").ok(),
            Some(ForwardedHeader::XForwardedFor)
        );
        let default = Config::from_toml(base, std::path::Path::new(".")).unwrap();
        assert_eq!(
            default.policy.forwarded_header,
            ForwardedHeader::XForwardedFor
        );
        assert_eq!(
            problems(&format!("{base}header = \"x-real-ip\"\n")),
            ["client_ip.header: \"x-real-ip\" is not a forwarding header; use \"x-forwarded-for\" (the default) or \"forwarded\" (RFC 7239), whichever your trusted proxies set"]
        );
    }

    #[test]
    fn every_problem_is_reported_with_key_value_and_fix() {
        let got = problems(
            r#"
[server]
listen = ["nope"]
shutdown_grace = "soon"
client_cert = "required"
[upstream]
url = "ftp://x"
[networks]
corp = ["10.0.0.0/33"]
[share]
allow_from = ["crop"]
require = "magic"
[limits]
share_rate = "lots"
[rewrite]
from = ["https://a.example/path"]
to = "https://b.example"
"#,
        );
        let want = [
            "server.listen: \"nope\" is not an address with a port; write \"0.0.0.0:8443\" or \"[::]:8443\"",
            "server.client_ca: client certificates need TLS on the listener; set server.tls_cert and server.tls_key",
            "upstream.url: \"ftp://x\" must start with http:// or https://",
            "networks.corp: \"10.0.0.0/33\" is not a CIDR; write an IPv4 or IPv6 range such as \"10.0.0.0/8\" or \"fd00::/8\"",
            "share.allow_from: \"crop\" is neither a network name from [networks] (known: corp) nor a CIDR such as \"10.1.0.0/16\"",
            "share.require: \"magic\" is not an access expression; use \"network\", \"identity\", \"network_and_identity\" or \"network_or_identity\"",
            "limits.share_rate: \"lots\" is not a rate; write requests per period such as \"600/min\", \"10/s\" or \"100/h\", or \"off\"",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
        }
        assert!(got
            .iter()
            .any(|g| g.starts_with("server.shutdown_grace: \"soon\" is not a duration")));
        assert!(got
            .iter()
            .any(|g| g.starts_with("rewrite.from: origin \"https://a.example/path\" has a path")));
    }

    /// Values the server could not run with are refused by `check`, and a
    /// password in a URL is never repeated in the message.
    #[test]
    fn limits_have_upper_bounds_and_urls_carry_no_credentials() {
        let got = problems(
            r#"
[upstream]
url = "http://svc:hunter2@backend:8080"
[limits]
max_connections = 9223372036854775807
max_headers = 4000000000
max_header_bytes = 4294967296
[identity.jwt]
jwks_url = "https://user:s3cret@idp.example/keys"
"#,
        );
        let want = [
            "upstream.url: \"http://***@backend:8080/\" names a user or password before the host; no credentials are sent from this URL, and it appears in logs, /readyz and `check`: give only scheme, host and port",
            "limits.max_connections: 9223372036854775807 is above the maximum of 1000000 (each connection holds file descriptors and buffers)",
            "limits.max_headers: 4000000000 is above the maximum of 10000 (room for that many is made for every request head)",
            "limits.max_header_bytes: 4294967296 is above the maximum of 16777216 (16 MiB; every connection may buffer that much)",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
        }
        assert!(
            got.iter().any(|g| g.starts_with(
                "identity.jwt.jwks_url: \"https://***@idp.example/keys\" names a user"
            )),
            "{got:#?}"
        );
        for g in &got {
            assert!(!g.contains("hunter2") && !g.contains("s3cret"), "{g}");
        }
        let fine = problems(
            "[upstream]\nurl = \"http://backend:8080\"\n[limits]\nmax_connections = 1000000\nmax_headers = 10000\nmax_header_bytes = 16777216\n",
        );
        assert!(fine.is_empty(), "{fine:?}");
    }

    #[test]
    fn identity_expressions_need_an_identity_source() {
        let got = problems("[upstream]\nurl = \"http://x:1\"\n[share]\nrequire = \"identity\"\n");
        assert_eq!(
            got,
            ["share.require: \"identity\" needs an identity source; configure [identity.jwt], or client_ca and client_cert on a listener"]
        );
    }

    #[test]
    fn unknown_keys_are_all_listed() {
        let got = problems("[upstream]\nurl = \"http://x:1\"\nurll = 1\n[sahre]\na = 1\n");
        assert!(got.contains(&"upstream.urll: unknown key; see the README's configuration reference for valid keys".to_owned()), "{got:?}");
        assert!(got.iter().any(|g| g.starts_with("sahre")), "{got:?}");
    }

    #[test]
    fn listener_and_admin_must_differ() {
        let got =
            problems("[server]\nlisten = [\"127.0.0.1:9090\"]\n[upstream]\nurl = \"http://x:1\"\n");
        assert_eq!(
            got,
            ["admin.listen: \"127.0.0.1:9090\" is also a traffic listener; give the admin endpoint its own address"]
        );
    }
}
