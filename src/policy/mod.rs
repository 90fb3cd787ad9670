//! The access decision: may this client make this request on this route?
//!
//! `authorize` is pure and synchronous: it takes the classified [`Route`],
//! the method, the request headers and the client IP already resolved by
//! `network::client_ip`, and returns a [`Grant`] or a [`Denial`], each
//! carrying the rule that decided, because the access log, the metrics and
//! `check` all need the same reason. Checks run cheapest first. This module
//! neither parses paths (that is `route`) nor builds responses (`error`).

pub mod hosts;
pub mod network;
pub mod rate;
pub mod revoked;

use std::net::IpAddr;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method};

pub use hosts::Hosts;
pub use network::{Access, NetSet};

use crate::identity::IdentityOutcome;
use crate::route::{PostRule, Route, RouteClass};

/// Everything the decision needs, compiled once from the config.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `server.hosts`: the names served (empty: any).
    pub hosts: Hosts,
    pub trusted_proxies: NetSet,
    /// `client_ip.header`: where the trusted proxies name the client.
    pub forwarded_header: network::ForwardedHeader,
    pub share_allow: Access,
    pub manage_allow: Access,
    pub default_allow: Access,
    pub allow_generate_query: bool,
    pub share_require: Require,
    pub manage_require: Require,
    pub default_require: Require,
    /// Share tokens revoked at the gateway, whatever the upstream says.
    pub revoked_tokens: revoked::RevokedTokens,
    /// `share.sharing`: when false, creating new shares is refused.
    pub sharing_enabled: bool,
    /// `share.cross_site = "navigate_only"`: a browser's cross-site request
    /// to a share or management route is refused unless it opens a page.
    pub cross_site_navigate_only: bool,
    pub routes: Vec<CustomPolicy>,
}

/// The access expression of a route class: what must hold besides the
/// method rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    /// The client is in the allowed networks.
    Network,
    /// A verified identity that meets the claim requirements; any network.
    Identity,
    NetworkAndIdentity,
    NetworkOrIdentity,
}

impl Require {
    pub fn as_str(self) -> &'static str {
        match self {
            Require::Network => "network",
            Require::Identity => "identity",
            Require::NetworkAndIdentity => "network_and_identity",
            Require::NetworkOrIdentity => "network_or_identity",
        }
    }

    pub fn needs_identity(self) -> bool {
        self != Require::Network
    }
}

/// The policy of one `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct CustomPolicy {
    pub name: String,
    pub methods: Vec<Method>,
    pub allow: Access,
    pub require: Require,
}

/// Headers some frameworks read to replace the request method. A proxy that
/// checks the method and forwards one of these lets a write pass as a read.
pub const METHOD_OVERRIDE_HEADERS: [http::HeaderName; 3] = [
    http::HeaderName::from_static("x-http-method-override"),
    http::HeaderName::from_static("x-http-method"),
    http::HeaderName::from_static("x-method-override"),
];

/// Permission to forward, with the rule that gave it and which check
/// decided ("network", "identity", or "open" for `any`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub rule: String,
    pub decided_by: &'static str,
}

/// A refusal, with what failed and the rule that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub kind: DenialKind,
    pub rule: String,
}

impl Denial {
    /// A `_method` field in the body of a request on a share route
    /// (`route::body_has_method_param`), found once the body has been read,
    /// after [`authorize`]: refused as the other overrides are.
    pub fn method_override_in_body() -> Denial {
        Denial {
            kind: DenialKind::MethodOverride,
            rule: "method overrides are refused on share routes (_method in the body)".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenialKind {
    /// The client is not in the networks the route admits.
    Network { client: IpAddr },
    /// The method is not a read on a view-only route; `allow` lists the
    /// methods that are.
    Method { allow: Vec<Method> },
    /// A method-override header or `_method` parameter on a protected route.
    MethodOverride,
    /// An identity is required and none was verified: no token, or a bad
    /// one (`reason`, never the token).
    Unauthenticated { reason: &'static str },
    /// A verified identity that does not meet a claim requirement.
    Identity { claim: String },
    /// The share token is in `share.revoked_tokens`.
    Revoked,
    /// Creating shares while `share.sharing = "disabled"`.
    SharingDisabled,
    /// A browser's cross-site request that does not open a page
    /// (`share.cross_site`).
    CrossSite,
}

impl DenialKind {
    /// Stable snake_case code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DenialKind::Network { .. } => "network",
            DenialKind::Method { .. } => "method",
            DenialKind::MethodOverride => "method_override",
            DenialKind::Unauthenticated { .. } => "unauthenticated",
            DenialKind::Identity { .. } => "identity",
            DenialKind::Revoked => "revoked",
            DenialKind::SharingDisabled => "sharing_disabled",
            DenialKind::CrossSite => "cross_site",
        }
    }
}

const READS: [Method; 3] = [Method::GET, Method::HEAD, Method::OPTIONS];

/// The routes a page on another site must not read or act on through a
/// browser inside the network: share reads and share management. Feedback
/// token URLs are left out: they are made to be posted to from an app's
/// own pages, wherever those are served.
fn guards_cross_site(class: RouteClass) -> bool {
    class != RouteClass::Other && class != RouteClass::FeedbackToken
}

/// Fetch Metadata (W3C, "Fetch Metadata Request Headers"): whether a
/// browser made this request for a page on another site, and if so whether
/// it opens a page. A share link is opened by navigating to it, from chat,
/// mail or a wiki on any site, and that stays allowed (in a frame too: the
/// framing site cannot read it). Anything else cross-site (`fetch`, an
/// `<img>` or `<script>` tag, a form post, a CORS preflight) would let a
/// page on the internet use a browser inside the network to read a leaked
/// share, since the request comes from inside, or to manage shares with
/// its session. Clients that are not browsers send no `Sec-Fetch-Site` and
/// pass.
///
/// Browsers from before Fetch Metadata send no `Sec-Fetch-Site` either, but
/// they do send `Origin` (RFC 6454 §7) on every request a page's script or
/// form makes across origins and on every non-`GET`, and never on opening a
/// page by a link: for them, an `Origin` that is not one of `server.hosts`
/// (or is `null`, which a sandboxed frame of any site can send) is the
/// cross-site mark. With `server.hosts` empty the gateway has no names of
/// its own to compare with, and `Origin` is not read.
///
/// `same-site` covers every host under the same registrable domain, and
/// one of them may serve pages nobody vouches for (user content, a
/// forgotten DNS name taken over): with `server.hosts` set, a `same-site`
/// request passes only when its `Origin` is one of them, and is otherwise
/// judged as a cross-site one (a `GET` that is not a `fetch`, an `<img>`
/// say, carries no `Origin`). `Ok`/`Err` carry the reason.
fn cross_site(
    method: &Method,
    headers: &HeaderMap,
    hosts: &hosts::Hosts,
) -> Result<&'static str, &'static str> {
    const SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    const MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    const DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
    let field = |name: &HeaderName| headers.get(name).map(HeaderValue::as_bytes);
    let sibling = match field(&SITE) {
        None => return older_browser(headers, hosts),
        Some(b"same-origin" | b"none") => {
            return Ok("Sec-Fetch-Site names this origin or the user");
        }
        Some(b"same-site") if hosts.is_any() => {
            return Ok("Sec-Fetch-Site: same-site (server.hosts names no host to compare with)");
        }
        Some(b"same-site") if names_one_of_ours(headers, hosts) => {
            return Ok("Sec-Fetch-Site: same-site, and Origin names this site (server.hosts)");
        }
        Some(b"same-site") => true,
        Some(_) => false,
    };
    let navigation = field(&MODE) == Some(b"navigate")
        && (method == Method::GET || method == Method::HEAD)
        && !matches!(field(&DEST), Some(b"object" | b"embed"));
    match (navigation, sibling) {
        (true, false) => Ok("a cross-site navigation opening the page"),
        (true, true) => Ok("a navigation from another host of this site opening the page"),
        (false, false) => Err(
            "a cross-site request that does not open a page (fetch, embed, form post or preflight)",
        ),
        (false, true) => Err(
            "a request from another host of this site (no Origin, or one outside server.hosts) that does not open a page",
        ),
    }
}

/// Whether the request carries one `Origin`, naming one of `server.hosts`.
fn names_one_of_ours(headers: &HeaderMap, hosts: &hosts::Hosts) -> bool {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (Some(origin), None) => hosts.names_origin(origin),
        _ => false,
    }
}

/// [`cross_site`] for a request without `Sec-Fetch-Site`: its `Origin`,
/// when it has one, must name this site.
fn older_browser(headers: &HeaderMap, hosts: &hosts::Hosts) -> Result<&'static str, &'static str> {
    if !headers.contains_key(header::ORIGIN) {
        Ok("no Sec-Fetch-Site or Origin: not a browser's cross-site request")
    } else if hosts.is_any() {
        Ok("no Sec-Fetch-Site; Origin not compared (server.hosts names no host)")
    } else if names_one_of_ours(headers, hosts) {
        Ok("no Sec-Fetch-Site; Origin names this site (server.hosts)")
    } else {
        Err("no Sec-Fetch-Site, and Origin names another site or none (an older browser's cross-site request)")
    }
}

impl Policy {
    /// Who may use routes of `class`: the networks, the access expression,
    /// and the config key that says so.
    pub fn access(&self, class: RouteClass) -> (&Access, Require, String) {
        match class {
            RouteClass::SharePage
            | RouteClass::PublicApi
            | RouteClass::PublicTokenless
            | RouteClass::PublicBulk
            | RouteClass::FeedbackToken => (
                &self.share_allow,
                self.share_require,
                "share.allow_from".to_owned(),
            ),
            RouteClass::ShareManage => (
                &self.manage_allow,
                self.manage_require,
                "share.manage_from".to_owned(),
            ),
            RouteClass::Custom(i) => match self.routes.get(i) {
                Some(r) => (&r.allow, r.require, format!("routes.{}.allow_from", r.name)),
                // The route table and the policy are built from one config;
                // an index without a policy would be a bug, so fail closed.
                None => (&NOBODY, Require::Network, format!("routes[{i}]")),
            },
            RouteClass::Other => (
                &self.default_allow,
                self.default_require,
                "default.allow_from".to_owned(),
            ),
        }
    }

    /// The methods that pass on a route of `class` whose POST rule is
    /// `post_rule`, or `None` when every method does; with the rule's name.
    pub fn methods(&self, class: RouteClass, post_rule: PostRule) -> (Option<Vec<Method>>, String) {
        let post = |m: &mut Vec<Method>| m.insert(2, Method::POST);
        match class {
            RouteClass::ShareManage | RouteClass::Other => (None, String::new()),
            RouteClass::FeedbackToken => {
                let mut m = READS.to_vec();
                post(&mut m);
                (Some(m), "share.feedback_tokens".to_owned())
            }
            RouteClass::Custom(i) => match self.routes.get(i) {
                Some(r) => (
                    Some(r.methods.clone()),
                    format!("routes.{}.methods", r.name),
                ),
                None => (Some(Vec::new()), format!("routes[{i}]")),
            },
            _ => {
                let mut m = READS.to_vec();
                match post_rule {
                    PostRule::Read => {
                        post(&mut m);
                        (Some(m), "share.view_only (POST read)".to_owned())
                    }
                    PostRule::GenerateQuery if self.allow_generate_query => {
                        post(&mut m);
                        (Some(m), "share.allow_generate_query".to_owned())
                    }
                    PostRule::GenerateQuery => {
                        (Some(m), "share.allow_generate_query = false".to_owned())
                    }
                    PostRule::NotAllowed => (Some(m), "share.view_only".to_owned()),
                }
            }
        }
    }
}

static NOBODY: Access = Access::Networks(NetSet::empty());

/// True for the owner-side calls that create a share: `PUT` on the v1
/// `/share` routes and `POST` on the v2 ones. Reading and revoking a share
/// (`GET`, `DELETE`), the Shared URLs list and the org switch stay open.
fn creates_share(route: &Route, method: &Method) -> bool {
    route.class == RouteClass::ShareManage
        && route.rule.ends_with("/share")
        && (method == Method::PUT || method == Method::POST)
}

/// Decides one request. `client` is the address from `network::client_ip`;
/// `identity` what the request's credentials amounted to (computed only
/// when the route's expression needs it; `Absent` otherwise). Order:
/// method-override tricks (no lookup needed), then the access expression
/// (so an outsider learns nothing about which methods a route takes), then
/// the method.
pub fn authorize(
    policy: &Policy,
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
    client: IpAddr,
    identity: &IdentityOutcome,
) -> Result<Grant, Denial> {
    authorize_traced(policy, route, method, headers, client, identity, None)
}

/// One check `authorize` made, for `sharegate explain`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub check: &'static str,
    /// "pass", "fail" or "skip".
    pub outcome: &'static str,
    pub detail: String,
}

fn note(
    trace: &mut Option<&mut Vec<Check>>,
    check: &'static str,
    outcome: &'static str,
    detail: impl FnOnce() -> String,
) {
    if let Some(t) = trace.as_deref_mut() {
        t.push(Check {
            check,
            outcome,
            detail: detail(),
        });
    }
}

/// [`authorize`], recording every check in order when `trace` is given
/// (the server passes `None`: no string is built on the hot path).
pub fn authorize_traced(
    policy: &Policy,
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
    client: IpAddr,
    identity: &IdentityOutcome,
    mut trace: Option<&mut Vec<Check>>,
) -> Result<Grant, Denial> {
    let t = &mut trace;
    let override_used = route.method_param
        || METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|h| headers.contains_key(h));
    if route.class != RouteClass::Other && override_used {
        note(t, "method_override", "fail", || {
            "X-HTTP-Method-Override / X-HTTP-Method / X-Method-Override / ?_method on a share route"
                .to_owned()
        });
        return Err(Denial {
            kind: DenialKind::MethodOverride,
            rule: "method overrides are refused on share routes".to_owned(),
        });
    }
    note(t, "method_override", "pass", || {
        if override_used {
            "present on an ordinary route: stripped before the upstream".to_owned()
        } else {
            "none".to_owned()
        }
    });
    let (access, require, access_rule) = policy.access(route.class);
    let network_ok = access.admits(client);
    if require != Require::Identity {
        note(
            t,
            "network",
            if network_ok { "pass" } else { "fail" },
            || {
                format!(
                    "{client} {} {access_rule} = {}",
                    if network_ok { "is in" } else { "is not in" },
                    access.describe()
                )
            },
        );
    } else {
        note(t, "network", "skip", || {
            format!("require = {:?}", require.as_str())
        });
    }
    let network_denial = || Denial {
        kind: DenialKind::Network { client },
        rule: access_rule.clone(),
    };
    let identity_rule = || format!("{access_rule} + require = {:?}", require.as_str());
    let check_identity = |t: &mut Option<&mut Vec<Check>>| {
        let result = match identity {
            IdentityOutcome::Verified(_) => Ok(()),
            IdentityOutcome::Absent => Err(Denial {
                kind: DenialKind::Unauthenticated {
                    reason: "missing_credentials",
                },
                rule: identity_rule(),
            }),
            IdentityOutcome::Invalid { reason } => Err(Denial {
                kind: DenialKind::Unauthenticated { reason },
                rule: identity_rule(),
            }),
            IdentityOutcome::Rejected { claim, .. } => Err(Denial {
                kind: DenialKind::Identity {
                    claim: claim.clone(),
                },
                rule: "identity.claims".to_owned(),
            }),
        };
        note(
            t,
            "identity",
            if result.is_ok() { "pass" } else { "fail" },
            || match identity {
                IdentityOutcome::Verified(id) => format!(
                    "{} verified: sub {:?}, iss {:?}",
                    id.source,
                    id.subject.as_deref().unwrap_or("-"),
                    id.issuer.as_deref().unwrap_or("-")
                ),
                IdentityOutcome::Absent => "no credential presented".to_owned(),
                IdentityOutcome::Invalid { reason } => format!("credential refused: {reason}"),
                IdentityOutcome::Rejected { claim, .. } => {
                    format!("verified, but claim {claim:?} does not meet identity.claims")
                }
            },
        );
        result
    };
    let decided_by = match require {
        Require::Network if network_ok => {
            note(t, "identity", "skip", || "require = \"network\"".to_owned());
            if *access == Access::Any {
                "open"
            } else {
                "network"
            }
        }
        Require::Network => return Err(network_denial()),
        Require::Identity => {
            check_identity(t)?;
            "identity"
        }
        Require::NetworkAndIdentity => {
            if !network_ok {
                return Err(network_denial());
            }
            check_identity(t)?;
            "network+identity"
        }
        Require::NetworkOrIdentity if network_ok => {
            note(t, "identity", "skip", || {
                "the network already admits the client".to_owned()
            });
            "network"
        }
        Require::NetworkOrIdentity => {
            check_identity(t)?;
            "identity"
        }
    };
    if policy.cross_site_navigate_only && guards_cross_site(route.class) {
        let verdict = cross_site(method, headers, &policy.hosts);
        note(
            t,
            "cross_site",
            if verdict.is_err() { "fail" } else { "pass" },
            || match verdict {
                Ok(why) | Err(why) => why.to_owned(),
            },
        );
        if verdict.is_err() {
            return Err(Denial {
                kind: DenialKind::CrossSite,
                rule: "share.cross_site = \"navigate_only\"".to_owned(),
            });
        }
    } else {
        note(t, "cross_site", "skip", || {
            if policy.cross_site_navigate_only {
                "not a share or management route".to_owned()
            } else {
                "share.cross_site = \"allow\"".to_owned()
            }
        });
    }
    let revoked = route
        .tokens
        .iter()
        .any(|tok| policy.revoked_tokens.contains(tok));
    note(
        t,
        "revoked_tokens",
        if revoked { "fail" } else { "pass" },
        || {
            if route.tokens.is_empty() {
                "no share token".to_owned()
            } else if revoked {
                "the share token is in share.revoked_tokens".to_owned()
            } else {
                "not revoked".to_owned()
            }
        },
    );
    if revoked {
        return Err(Denial {
            kind: DenialKind::Revoked,
            rule: "share.revoked_tokens".to_owned(),
        });
    }
    let blocked = !policy.sharing_enabled && creates_share(route, method);
    note(t, "sharing", if blocked { "fail" } else { "pass" }, || {
        if blocked {
            "creating a share while share.sharing = \"disabled\"".to_owned()
        } else if policy.sharing_enabled {
            "sharing enabled".to_owned()
        } else {
            "sharing disabled, but this request does not create a share".to_owned()
        }
    });
    if blocked {
        return Err(Denial {
            kind: DenialKind::SharingDisabled,
            rule: "share.sharing = \"disabled\"".to_owned(),
        });
    }
    let (methods, method_rule) = policy.methods(route.class, route.post);
    if let Some(allow) = methods {
        let ok = allow.contains(method);
        note(t, "method", if ok { "pass" } else { "fail" }, || {
            let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
            format!(
                "{method} {} {} ({method_rule})",
                if ok { "is one of" } else { "is not one of" },
                list.join(" ")
            )
        });
        if !ok {
            return Err(Denial {
                kind: DenialKind::Method { allow },
                rule: method_rule,
            });
        }
    } else {
        note(t, "method", "pass", || {
            format!("{method}: every method passes on this class")
        });
    }
    let rule = if require == Require::Network {
        access_rule
    } else {
        identity_rule()
    };
    Ok(Grant { rule, decided_by })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::identity::Identity;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
[upstream]
url = "http://127.0.0.1:1"
[networks]
corp = ["10.0.0.0/8"]
[share]
allow_from = ["corp"]
manage_from = ["corp"]
revoked_tokens = ["dead"]
{extra}
"#
        );
        match Config::from_toml(&text, std::path::Path::new(".")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn decide(
        cfg: &Config,
        method: &str,
        path: &str,
        client: &str,
        identity: &IdentityOutcome,
    ) -> Result<Grant, Denial> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let route = cfg.routes.classify(&method, path).unwrap();
        authorize(
            &cfg.policy,
            &route,
            &method,
            &HeaderMap::new(),
            client.parse().unwrap(),
            identity,
        )
    }

    fn verified() -> IdentityOutcome {
        IdentityOutcome::Verified(std::sync::Arc::new(Identity {
            subject: Some("alice".into()),
            issuer: Some("idp".into()),
            source: "bearer".into(),
            claims: serde_json::Map::new(),
        }))
    }

    const INSIDE: &str = "10.1.2.3";
    const OUTSIDE: &str = "192.0.2.1";

    #[test]
    fn network_view_only_and_methods() {
        let cfg = config("");
        let none = IdentityOutcome::Absent;
        assert!(decide(&cfg, "GET", "/public/t/r", INSIDE, &none).is_ok());
        let d = decide(&cfg, "GET", "/public/t/r", OUTSIDE, &none).unwrap_err();
        assert_eq!(d.kind.reason(), "network");
        assert_eq!(d.rule, "share.allow_from");
        let d = decide(&cfg, "DELETE", "/api/v1/public/t/runs", INSIDE, &none).unwrap_err();
        assert!(matches!(d.kind, DenialKind::Method { .. }));
        // POST reads pass; generate-query only when allowed.
        assert!(decide(&cfg, "POST", "/api/v1/public/t/runs/query", INSIDE, &none).is_ok());
        let gq = "/api/v1/public/t/datasets/runs/generate-query";
        assert!(decide(&cfg, "POST", gq, INSIDE, &none).is_err());
        let cfg2 = config("allow_generate_query = true");
        assert!(decide(&cfg2, "POST", gq, INSIDE, &none).is_ok());
        // Outsiders learn nothing about methods: network is checked first.
        let d = decide(&cfg, "DELETE", "/api/v1/public/t/runs", OUTSIDE, &none).unwrap_err();
        assert_eq!(d.kind.reason(), "network");
    }

    #[test]
    fn access_expressions() {
        let none = IdentityOutcome::Absent;
        let bad = IdentityOutcome::Invalid { reason: "expired" };
        let ok = verified();
        let cases = [
            // (require, client, identity, expected reason or "ok")
            ("network_and_identity", INSIDE, &ok, "ok"),
            ("network_and_identity", INSIDE, &none, "unauthenticated"),
            ("network_and_identity", OUTSIDE, &ok, "network"),
            ("network_or_identity", OUTSIDE, &ok, "ok"),
            ("network_or_identity", INSIDE, &none, "ok"),
            ("network_or_identity", OUTSIDE, &none, "unauthenticated"),
            ("network_or_identity", OUTSIDE, &bad, "unauthenticated"),
            ("identity", OUTSIDE, &ok, "ok"),
            ("identity", INSIDE, &none, "unauthenticated"),
        ];
        for (require, client, identity, want) in cases {
            // Identity needs a source to validate; a client CA stands in.
            let mut cfg = config("");
            cfg.policy.share_require = match require {
                "identity" => Require::Identity,
                "network_and_identity" => Require::NetworkAndIdentity,
                _ => Require::NetworkOrIdentity,
            };
            let got = decide(&cfg, "GET", "/public/t/r", client, identity);
            let got = got.map_or_else(|d| d.kind.reason(), |_| "ok");
            assert_eq!(got, want, "{require} {client} {identity:?}");
        }
        let mut cfg = config("");
        cfg.policy.share_require = Require::Identity;
        let rejected = IdentityOutcome::Rejected {
            identity: match verified() {
                IdentityOutcome::Verified(i) => i,
                _ => unreachable!(),
            },
            claim: "email".into(),
        };
        let d = decide(&cfg, "GET", "/public/t/r", OUTSIDE, &rejected).unwrap_err();
        assert_eq!(
            d.kind,
            DenialKind::Identity {
                claim: "email".into()
            }
        );
    }

    #[test]
    fn revoked_and_sharing_switch() {
        let none = IdentityOutcome::Absent;
        let cfg = config("sharing = \"disabled\"");
        let d = decide(&cfg, "GET", "/public/dead/r", INSIDE, &none).unwrap_err();
        assert_eq!(d.kind, DenialKind::Revoked);
        for (m, p) in [
            ("PUT", "/api/v1/runs/1/share"),
            ("POST", "/api/v2/runs/1/share"),
        ] {
            let d = decide(&cfg, m, p, INSIDE, &none).unwrap_err();
            assert_eq!(d.kind, DenialKind::SharingDisabled, "{m} {p}");
        }
        for (m, p) in [
            ("GET", "/api/v1/runs/1/share"),
            ("DELETE", "/api/v1/runs/1/share"),
            ("GET", "/api/v1/workspaces/current/shared"),
            ("DELETE", "/api/v1/workspaces/current/shared"),
            ("PATCH", "/api/v1/orgs/current/info"),
        ] {
            assert!(decide(&cfg, m, p, INSIDE, &none).is_ok(), "{m} {p}");
        }
    }

    #[test]
    fn method_override_refused_on_share_routes_only() {
        let cfg = config("");
        let route = cfg
            .routes
            .classify(&Method::POST, "/api/v1/public/t/runs/query")
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-http-method-override", "DELETE".parse().unwrap());
        let client = INSIDE.parse().unwrap();
        let d = authorize(
            &cfg.policy,
            &route,
            &Method::POST,
            &h,
            client,
            &IdentityOutcome::Absent,
        )
        .unwrap_err();
        assert_eq!(d.kind, DenialKind::MethodOverride);
        let other = cfg.routes.classify(&Method::POST, "/api/v1/runs").unwrap();
        assert!(authorize(
            &cfg.policy,
            &other,
            &Method::POST,
            &h,
            client,
            &IdentityOutcome::Absent
        )
        .is_ok());
    }

    #[test]
    fn trace_records_every_check_in_order() {
        let cfg = config("");
        let route = cfg.routes.classify(&Method::GET, "/public/t/r").unwrap();
        let mut trace = Vec::new();
        let r = authorize_traced(
            &cfg.policy,
            &route,
            &Method::GET,
            &HeaderMap::new(),
            INSIDE.parse().unwrap(),
            &IdentityOutcome::Absent,
            Some(&mut trace),
        );
        assert!(r.is_ok());
        let names: Vec<&str> = trace.iter().map(|c| c.check).collect();
        assert_eq!(
            names,
            [
                "method_override",
                "network",
                "identity",
                "cross_site",
                "revoked_tokens",
                "sharing",
                "method"
            ]
        );
    }

    /// What `authorize` makes of a request from inside with `headers`.
    fn denial_of(
        cfg: &Config,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), DenialKind> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let route = cfg.routes.classify(&method, path).unwrap();
        authorize(
            &cfg.policy,
            &route,
            &method,
            headers,
            INSIDE.parse().unwrap(),
            &IdentityOutcome::Absent,
        )
        .map(|_| ())
        .map_err(|d| d.kind)
    }

    fn fetch(site: Option<&str>, mode: &str, dest: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(site) = site {
            h.insert("sec-fetch-site", HeaderValue::from_str(site).unwrap());
            h.insert("sec-fetch-mode", HeaderValue::from_str(mode).unwrap());
            h.insert("sec-fetch-dest", HeaderValue::from_str(dest).unwrap());
        }
        h
    }

    #[test]
    fn cross_site_requests_pass_only_when_they_open_a_page() {
        let cfg = config("");
        let check =
            |method: &str, path: &str, headers: &HeaderMap| denial_of(&cfg, method, path, headers);
        let page = "/public/tok/r";
        let api = "/api/v1/public/tok/run";
        let query = "/api/v1/public/tok/runs/query";
        let manage = "/api/v1/runs/1b4e28ba-2fa1-11d2-883f-0016d3cca427/share";
        let passes = [
            ("GET", page, fetch(None, "", "")),
            (
                "GET",
                page,
                fetch(Some("cross-site"), "navigate", "document"),
            ),
            (
                "HEAD",
                page,
                fetch(Some("cross-site"), "navigate", "document"),
            ),
            ("GET", page, fetch(Some("cross-site"), "navigate", "iframe")),
            ("GET", api, fetch(Some("same-origin"), "cors", "empty")),
            ("POST", query, fetch(Some("same-origin"), "cors", "empty")),
            ("GET", api, fetch(Some("same-site"), "cors", "empty")),
            ("GET", page, fetch(Some("none"), "navigate", "document")),
            ("PUT", manage, fetch(Some("same-origin"), "cors", "empty")),
            // Ordinary routes and feedback tokens are not guarded.
            (
                "GET",
                "/api/v1/info",
                fetch(Some("cross-site"), "cors", "empty"),
            ),
            (
                "POST",
                "/api/v1/feedback/tokens/tok",
                fetch(Some("cross-site"), "cors", "empty"),
            ),
        ];
        for (m, p, h) in &passes {
            assert_eq!(check(m, p, h), Ok(()), "{m} {p} {h:?}");
        }
        let refused = [
            ("GET", api, fetch(Some("cross-site"), "cors", "empty")),
            ("GET", api, fetch(Some("cross-site"), "no-cors", "script")),
            ("GET", page, fetch(Some("cross-site"), "no-cors", "image")),
            ("GET", page, fetch(Some("cross-site"), "navigate", "object")),
            ("GET", page, fetch(Some("cross-site"), "navigate", "embed")),
            (
                "POST",
                query,
                fetch(Some("cross-site"), "navigate", "document"),
            ),
            ("OPTIONS", api, fetch(Some("cross-site"), "cors", "empty")),
            ("PUT", manage, fetch(Some("cross-site"), "cors", "empty")),
            ("GET", api, fetch(Some("something-new"), "cors", "empty")),
        ];
        for (m, p, h) in &refused {
            assert_eq!(check(m, p, h), Err(DenialKind::CrossSite), "{m} {p} {h:?}");
        }
        let allow = config("cross_site = \"allow\"");
        let cross = fetch(Some("cross-site"), "cors", "empty");
        assert_eq!(denial_of(&allow, "GET", api, &cross), Ok(()));
    }

    /// Browsers from before Fetch Metadata: no `Sec-Fetch-Site`, so their
    /// `Origin` decides, against `server.hosts`.
    #[test]
    fn older_browsers_are_judged_by_their_origin() {
        let cfg = config("[server]\nhosts = [\"langsmith.corp.example\"]");
        let any_host = config("");
        let check = |cfg: &Config, method: &str, path: &str, origins: &[&str]| {
            let mut h = HeaderMap::new();
            for o in origins {
                h.append(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            denial_of(cfg, method, path, &h)
        };
        let api = "/api/v1/public/tok/run";
        let query = "/api/v1/public/tok/runs/query";
        let manage = "/api/v1/runs/1b4e28ba-2fa1-11d2-883f-0016d3cca427/share";
        let ours = "https://langsmith.corp.example";
        for (method, path, origins) in [
            ("GET", api, &[][..]),
            ("POST", query, &[ours][..]),
            ("PUT", manage, &["http://LANGSMITH.corp.example:8443"][..]),
        ] {
            assert_eq!(
                check(&cfg, method, path, origins),
                Ok(()),
                "{method} {path} {origins:?}"
            );
        }
        for (method, path, origins) in [
            ("GET", api, &["https://attacker.example"][..]),
            ("POST", query, &["null"][..]),
            ("PUT", manage, &["https://attacker.example"][..]),
            ("OPTIONS", api, &["https://attacker.example"][..]),
            ("POST", query, &[ours, "https://attacker.example"][..]),
            ("POST", query, &["https://attacker.example", ours][..]),
        ] {
            assert_eq!(
                check(&cfg, method, path, origins),
                Err(DenialKind::CrossSite),
                "{method} {path} {origins:?}"
            );
        }
        // Not guarded, or nothing to compare with.
        let foreign = ["https://attacker.example"];
        assert_eq!(check(&cfg, "GET", "/api/v1/info", &foreign), Ok(()));
        assert_eq!(
            check(&cfg, "POST", "/api/v1/feedback/tokens/tok", &foreign),
            Ok(())
        );
        assert_eq!(check(&any_host, "POST", query, &foreign), Ok(()));
        // A browser that sends Fetch Metadata is judged by it alone.
        let mut modern = fetch(Some("same-origin"), "cors", "empty");
        modern.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert_eq!(denial_of(&cfg, "POST", query, &modern), Ok(()));
    }

    /// `same-site` is every host under the registrable domain, one of which
    /// may serve pages nobody vouches for: with `server.hosts` set, its
    /// `Origin` must be one of them unless the request opens a page.
    #[test]
    fn same_site_requests_from_hosts_not_ours_are_judged_as_cross_site() {
        let cfg = config("[server]\nhosts = [\"langsmith.corp.example\"]");
        let any_host = config("");
        let with_origin = |mode: &str, dest: &str, origin: Option<&str>| {
            let mut h = fetch(Some("same-site"), mode, dest);
            if let Some(o) = origin {
                h.append(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        let api = "/api/v1/public/tok/run";
        let query = "/api/v1/public/tok/runs/query";
        let page = "/public/tok/r";
        let manage = "/api/v1/runs/1b4e28ba-2fa1-11d2-883f-0016d3cca427/share";
        let sibling = Some("https://uploads.corp.example");
        let ours = Some("https://langsmith.corp.example");
        for (method, path, h) in [
            ("GET", api, with_origin("cors", "empty", sibling)),
            ("POST", query, with_origin("cors", "empty", sibling)),
            ("PUT", manage, with_origin("cors", "empty", sibling)),
            ("OPTIONS", api, with_origin("cors", "empty", sibling)),
            ("POST", query, with_origin("cors", "empty", Some("null"))),
            ("POST", query, with_origin("navigate", "document", sibling)),
            // A GET that is not a fetch carries no Origin: nothing says
            // which host it came from.
            ("GET", api, with_origin("no-cors", "image", None)),
            ("GET", api, with_origin("no-cors", "script", None)),
        ] {
            assert_eq!(
                denial_of(&cfg, method, path, &h),
                Err(DenialKind::CrossSite),
                "{method} {path} {h:?}"
            );
            // Nothing to compare with: passes as before.
            assert_eq!(denial_of(&any_host, method, path, &h), Ok(()));
        }
        for (method, path, h) in [
            ("GET", api, with_origin("cors", "empty", ours)),
            ("POST", query, with_origin("cors", "empty", ours)),
            ("GET", page, with_origin("navigate", "document", None)),
            ("GET", page, with_origin("navigate", "iframe", sibling)),
            ("GET", "/api/v1/info", with_origin("cors", "empty", sibling)),
        ] {
            assert_eq!(
                denial_of(&cfg, method, path, &h),
                Ok(()),
                "{method} {path} {h:?}"
            );
        }
    }
}
