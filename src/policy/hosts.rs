//! `server.hosts`: the host names the gateway answers for.
//!
//! The network allow-list says who may open a share; this says under which
//! name. Without it a request naming any host is served, which is what DNS
//! rebinding needs: a page on `attacker.example`, opened by a browser inside
//! the network, has its name re-pointed at the gateway's address and reads
//! share pages through that browser, under the attacker's origin, with the
//! network check passing (the browser is inside). Such a request still names
//! `attacker.example` in `Host`, so refusing names that are not the
//! gateway's own closes it (RFC 9110 §7.4: `421 Misdirected Request`).
//!
//! This module owns the compiled list and the check of one request's named
//! hosts; it does not parse request targets (hyper and `route` do) and does
//! not build the refusal (`error`).

use std::str::FromStr;

use http::uri::Authority;
use http::{HeaderMap, HeaderValue};

/// The rule a refusal names in the log and in `explain`.
pub const RULE: &str = "server.hosts";

/// One `server.hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Lower case, without a trailing dot. For a wildcard, the suffix with
    /// its leading dot (`.corp.example`).
    name: String,
    wildcard: bool,
    /// `None`: any port.
    port: Option<u16>,
}

/// The compiled `server.hosts`; empty means every host is served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    patterns: Vec<Pattern>,
}

/// Why a request's host was refused (for the log; the client only gets the
/// standard 421).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRefusal {
    #[error("the request names no host")]
    Missing,
    #[error("the host {0:?} is not in server.hosts")]
    NotListed(String),
    #[error("the host {0:?} is not a host name")]
    Unreadable(String),
}

impl Hosts {
    /// Compiles the entries; every bad one is reported, with its fix.
    pub fn parse(entries: &[String]) -> Result<Hosts, Vec<String>> {
        let mut patterns = Vec::new();
        let mut problems = Vec::new();
        for e in entries {
            match Pattern::parse(e) {
                Ok(p) => patterns.push(p),
                Err(why) => problems.push(format!(
                    "{e:?} {why}; write a name as clients type it: \"langsmith.corp.example\", \"*.corp.example\" (any subdomain), or with a port to allow only that port (\"langsmith.corp.example:8443\")"
                )),
            }
        }
        if problems.is_empty() {
            Ok(Hosts { patterns })
        } else {
            Err(problems)
        }
    }

    /// Whether every host is served (`server.hosts` empty).
    pub fn is_any(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The entries as written back (for `check`).
    pub fn describe(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                let name = if p.wildcard {
                    format!("*{}", p.name)
                } else {
                    p.name.clone()
                };
                match p.port {
                    Some(port) => format!("{name}:{port}"),
                    None => name,
                }
            })
            .collect()
    }

    /// Checks every host the request names: the target's authority
    /// (absolute-form, or HTTP/2 `:authority`) and each `Host` field. All
    /// must be listed, so the name the gateway reports upstream
    /// (`X-Forwarded-Host`) and any other a later hop might read are the
    /// gateway's own. A request naming none is refused too (HTTP/1.0 without
    /// `Host`): it cannot show it is meant for this gateway. `tls` gives the
    /// port a name without one stands for.
    pub fn check(
        &self,
        authority: Option<&Authority>,
        headers: &HeaderMap,
        tls: bool,
    ) -> Result<(), HostRefusal> {
        if self.is_any() {
            return Ok(());
        }
        let default_port = if tls { 443 } else { 80 };
        let mut named = false;
        if let Some(a) = authority {
            named = true;
            self.check_one(a, default_port)?;
        }
        for value in headers.get_all(http::header::HOST) {
            named = true;
            let a = host_field(value)?;
            self.check_one(&a, default_port)?;
        }
        if named {
            Ok(())
        } else {
            Err(HostRefusal::Missing)
        }
    }

    /// Whether an `Origin` field value (RFC 6454 §7: `scheme "://" host
    /// [ ":" port ]`, or `null`) names one of the listed hosts, at the port
    /// its scheme stands for when it gives none. `null`, a scheme other
    /// than `http`/`https`, a path, user info or more than one value name
    /// no host of ours.
    pub fn names_origin(&self, origin: &HeaderValue) -> bool {
        let Ok(text) = origin.to_str() else {
            return false;
        };
        let (default_port, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (443, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (80, rest)
        } else {
            return false;
        };
        if rest.contains(['/', ' ', ',']) {
            return false;
        }
        Authority::from_str(rest)
            .is_ok_and(|a| !a.host().is_empty() && self.check_one(&a, default_port).is_ok())
    }

    fn check_one(&self, a: &Authority, default_port: u16) -> Result<(), HostRefusal> {
        // Userinfo names no host of ours: `sharegate.test@attacker.example`
        // is the attacker's host to anything that reads it whole.
        if a.as_str().contains('@') {
            return Err(HostRefusal::Unreadable(a.as_str().to_owned()));
        }
        let port = match port_of(a) {
            Ok(p) => p.unwrap_or(default_port),
            Err(()) => return Err(HostRefusal::Unreadable(a.as_str().to_owned())),
        };
        let host = a.host();
        // `name.` is the same name, fully qualified (RFC 1034 §3.1).
        let host = host.strip_suffix('.').unwrap_or(host);
        // A URI's reg-name may hold `,` `;` `%` and other sub-delims that no
        // DNS name does; before a wildcard's suffix they would let the name
        // passed on in `X-Forwarded-Host` carry another host
        // (`attacker.example,a.corp.example`, the attacker's to a framework
        // that reads the first of a list).
        if !host.starts_with('[') && !is_name(host) {
            return Err(HostRefusal::Unreadable(a.as_str().to_owned()));
        }
        if self.patterns.iter().any(|p| p.matches(host, port)) {
            Ok(())
        } else {
            Err(HostRefusal::NotListed(a.as_str().to_owned()))
        }
    }
}

/// A `Host` field value as an authority.
fn host_field(value: &HeaderValue) -> Result<Authority, HostRefusal> {
    let unreadable = || HostRefusal::Unreadable(String::from_utf8_lossy(value.as_bytes()).into());
    let text = value.to_str().map_err(|_| unreadable())?;
    let a = Authority::from_str(text).map_err(|_| unreadable())?;
    if a.host().is_empty() {
        return Err(unreadable());
    }
    Ok(a)
}

impl Pattern {
    fn parse(entry: &str) -> Result<Pattern, &'static str> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("is empty");
        }
        if entry.contains("://") || entry.contains('/') {
            return Err("is a URL, not a host name");
        }
        let (wildcard, rest) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let a = Authority::from_str(rest).map_err(|_| "is not a host name")?;
        if a.as_str().contains('@') {
            return Err("carries user info");
        }
        let host = a.host();
        let host = host.strip_suffix('.').unwrap_or(host);
        let ip_literal = host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok();
        let valid = ip_literal || is_name(host);
        if !valid {
            return Err("is not a host name (letters, digits, '-' and dots, or an IP address)");
        }
        if wildcard && ip_literal {
            return Err("puts a wildcard on an IP address");
        }
        let port = port_of(&a).map_err(|()| "has a port that is not a number from 0 to 65535")?;
        let lower = host.to_ascii_lowercase();
        Ok(Pattern {
            name: if wildcard { format!(".{lower}") } else { lower },
            wildcard,
            port,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        if self.wildcard {
            // Any depth below the suffix, never the suffix itself; the
            // leading dot keeps `evilcorp.example` out of `*.corp.example`.
            host.len() > self.name.len()
                && host.is_char_boundary(host.len() - self.name.len())
                && host[host.len() - self.name.len()..].eq_ignore_ascii_case(&self.name)
        } else {
            host.eq_ignore_ascii_case(&self.name)
        }
    }
}

/// The authority's port: `Ok(None)` when it has none, `Err` when the text
/// after the host is not one (`http` reads `:99999` and `:` as no port).
fn port_of(a: &Authority) -> Result<Option<u16>, ()> {
    match a.port_u16() {
        Some(p) => Ok(Some(p)),
        None if a.as_str().len() == a.host().len() => Ok(None),
        None => Err(()),
    }
}

/// Dot-separated labels of letters, digits, `-` and `_` (an IPv4 address
/// is one too).
fn is_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(is_label_byte))
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> Hosts {
        let owned: Vec<String> = entries.iter().map(|s| (*s).to_owned()).collect();
        Hosts::parse(&owned).unwrap()
    }

    fn with_host(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(http::header::HOST, HeaderValue::from_str(v).unwrap());
        h
    }

    fn ok(h: &Hosts, host: &str) -> bool {
        h.check(None, &with_host(host), false).is_ok()
    }

    #[test]
    fn names_match_exactly_in_any_case_and_any_port_unless_given() {
        let h = hosts(&[
            "LangSmith.corp.example",
            "10.0.0.7",
            "[fd00::7]",
            "admin.corp.example:8443",
        ]);
        for good in [
            "langsmith.corp.example",
            "LANGSMITH.CORP.EXAMPLE",
            "langsmith.corp.example.",
            "langsmith.corp.example:8443",
            "langsmith.corp.example:1",
            "10.0.0.7",
            "10.0.0.7:8080",
            "[fd00::7]:8443",
            "admin.corp.example:8443",
        ] {
            assert!(ok(&h, good), "{good}");
        }
        for bad in [
            "attacker.example",
            "langsmith.corp.example.attacker.example",
            "xlangsmith.corp.example",
            "langsmith.corp.exampl",
            "corp.example",
            "10.0.0.70",
            "[fd00::8]",
            "admin.corp.example",
            "admin.corp.example:443",
            "langsmith.corp.example..",
        ] {
            assert!(!ok(&h, bad), "{bad}");
        }
    }

    #[test]
    fn a_portless_name_stands_for_the_listeners_default_port() {
        let h = hosts(&["a.example:443"]);
        let head = with_host("a.example");
        assert!(h.check(None, &head, true).is_ok());
        assert_eq!(
            h.check(None, &head, false),
            Err(HostRefusal::NotListed("a.example".to_owned()))
        );
    }

    #[test]
    fn wildcards_cover_subdomains_at_any_depth_but_not_the_apex() {
        let h = hosts(&["*.corp.example"]);
        for good in ["a.corp.example", "a.b.corp.example:9", "A.CORP.EXAMPLE."] {
            assert!(ok(&h, good), "{good}");
        }
        for bad in [
            "corp.example",
            "evilcorp.example",
            ".corp.example",
            "corp.example.evil",
        ] {
            assert!(!ok(&h, bad), "{bad}");
        }
    }

    /// A wildcard admits host names only: what the client wrote before the
    /// suffix must be labels, or the name passed on in `X-Forwarded-Host`
    /// could carry another host (`attacker.example,a.corp.example` is the
    /// attacker's to a framework that reads the first of a list).
    #[test]
    fn wildcards_admit_only_labels_before_the_suffix() {
        let h = hosts(&["*.corp.example", "exact.example"]);
        for bad in [
            "attacker.example,a.corp.example",
            "attacker.example;a.corp.example",
            "attacker.example%2f.corp.example",
            "attacker.example%2C.corp.example",
            "attacker.example!.corp.example",
            "attacker.example$.corp.example",
            "attacker.example&.corp.example",
            "attacker.example'.corp.example",
            "attacker.example(x).corp.example",
            "attacker.example*.corp.example",
            "attacker.example+.corp.example",
            "attacker.example=.corp.example",
            "attacker.example~.corp.example",
            "*.corp.example",
            "..corp.example",
            "a..corp.example",
            "a.corp.example..",
        ] {
            assert!(!ok(&h, bad), "{bad}");
        }
        for good in [
            "a.corp.example",
            "a-b.c_d.corp.example.",
            "9.corp.example:1",
        ] {
            assert!(ok(&h, good), "{good}");
        }
    }

    #[test]
    fn every_named_host_must_be_listed() {
        let h = hosts(&["sharegate.test"]);
        let good: Authority = "sharegate.test".parse().unwrap();
        let evil: Authority = "attacker.example".parse().unwrap();
        // The target's authority and the Host field are both checked.
        assert!(h
            .check(Some(&good), &with_host("sharegate.test"), false)
            .is_ok());
        assert!(h.check(Some(&good), &HeaderMap::new(), false).is_ok());
        assert!(h
            .check(Some(&evil), &with_host("sharegate.test"), false)
            .is_err());
        assert!(h
            .check(Some(&good), &with_host("attacker.example"), false)
            .is_err());
        // Two Host fields: one bad one is enough.
        let mut two = with_host("sharegate.test");
        two.append(
            http::header::HOST,
            HeaderValue::from_static("attacker.example"),
        );
        assert!(h.check(None, &two, false).is_err());
        // None named.
        assert_eq!(
            h.check(None, &HeaderMap::new(), false),
            Err(HostRefusal::Missing)
        );
        // User info hides the real host from a reader that takes it whole.
        let info: Authority = "sharegate.test@attacker.example".parse().unwrap();
        assert!(h.check(Some(&info), &HeaderMap::new(), false).is_err());
        assert!(!ok(&h, "sharegate.test@attacker.example"));
        assert!(!ok(&h, "attacker.example@sharegate.test"));
        // Not a host at all.
        for junk in [
            "",
            ":80",
            "sharegate.test/x",
            "sharegate.test:x",
            "sharegate.test:",
            "sharegate.test:99999",
            "a b",
        ] {
            let mut m = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(junk) {
                m.append(http::header::HOST, v);
            }
            assert!(h.check(None, &m, false).is_err(), "{junk:?}");
        }
        let mut raw = HeaderMap::new();
        raw.append(
            http::header::HOST,
            HeaderValue::from_bytes(b"sharegate.test\xff").unwrap(),
        );
        assert!(h.check(None, &raw, false).is_err());
    }

    #[test]
    fn an_origin_names_a_listed_host_at_its_schemes_port() {
        let h = hosts(&[
            "langsmith.corp.example",
            "*.corp.example",
            "ten.example:8443",
        ]);
        let names = |o: &str| h.names_origin(&HeaderValue::from_str(o).unwrap());
        for ours in [
            "https://langsmith.corp.example",
            "http://LangSmith.Corp.Example:8080",
            "https://langsmith.corp.example.",
            "https://a.b.corp.example",
            "https://ten.example:8443",
        ] {
            assert!(names(ours), "{ours}");
        }
        for foreign in [
            "null",
            "https://attacker.example",
            "https://corp.example",
            "https://langsmith.corp.example.attacker.example",
            "https://ten.example",
            "http://ten.example",
            "https://langsmith.corp.example@attacker.example",
            "https://attacker.example@langsmith.corp.example",
            "https://langsmith.corp.example/",
            "https://langsmith.corp.example, https://attacker.example",
            "file://langsmith.corp.example",
            "langsmith.corp.example",
            "https://",
            "https://langsmith.corp.example:99999",
        ] {
            assert!(!names(foreign), "{foreign}");
        }
        let raw = HeaderValue::from_bytes(b"https://langsmith.corp.example\xff").unwrap();
        assert!(!h.names_origin(&raw));
    }

    #[test]
    fn an_empty_list_serves_every_host() {
        let h = Hosts::default();
        assert!(h.is_any());
        assert!(h.check(None, &HeaderMap::new(), false).is_ok());
        assert!(ok(&h, "attacker.example"));
    }

    #[test]
    fn bad_entries_are_all_reported_with_the_fix() {
        let entries: Vec<String> = [
            "https://langsmith.corp.example",
            "",
            "*.10.0.0.1",
            "*",
            "a..example",
            "user@a.example",
            "a.example:",
            "a.example:99999",
            "ok.example",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let problems = Hosts::parse(&entries).unwrap_err();
        assert_eq!(problems.len(), 8, "{problems:#?}");
        assert!(problems[0].starts_with("\"https://langsmith.corp.example\" is a URL, not a host name; write a name as clients type it"));
        assert!(
            problems[2].contains("wildcard on an IP address"),
            "{}",
            problems[2]
        );
        let h = hosts(&["*.Corp.Example", "a.example:8443", "[::1]"]);
        assert_eq!(h.describe(), ["*.corp.example", "a.example:8443", "[::1]"]);
    }
}
