//! Network membership: named CIDR sets, and who the client is.
//!
//! Owns address canonicalization (an IPv4-mapped IPv6 peer such as
//! `::ffff:10.1.2.3` is the IPv4 address `10.1.2.3`, which `ipnet` would not
//! match against `10.0.0.0/8` on its own) and the trusted-proxy walk over
//! `X-Forwarded-For` / `Forwarded`. It does not decide what a network may do;
//! that is `policy::authorize`.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// A set of networks, with the names the admin wrote (for logs and `check`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSet {
    pub names: Vec<String>,
    nets: Vec<IpNet>,
}

impl NetSet {
    pub fn new(names: Vec<String>, nets: Vec<IpNet>) -> NetSet {
        // Canonical, de-duplicated, with IPv4-mapped IPv6 ranges folded into
        // IPv4 so that one comparison rule holds for every address.
        let nets = IpNet::aggregate(&nets.into_iter().map(canonical_net).collect());
        NetSet { names, nets }
    }

    pub const fn empty() -> NetSet {
        NetSet {
            names: Vec::new(),
            nets: Vec::new(),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net.trunc()
}

/// Who may use a class of routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Any,
    Networks(NetSet),
}

impl Access {
    pub fn admits(&self, ip: IpAddr) -> bool {
        match self {
            Access::Any => true,
            Access::Networks(set) => set.contains(ip),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Access::Any => "any".to_owned(),
            Access::Networks(set) if set.names.is_empty() => "nobody".to_owned(),
            Access::Networks(set) => set.names.join(", "),
        }
    }
}

/// Why a forwarded client address could not be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a trusted proxy sent an unparseable {header} entry")]
pub struct ForwardedError {
    pub header: &'static str,
}

/// The client address as the gateway determines it: the TCP peer, or, only
/// when the peer is a trusted proxy, the rightmost address in the header
/// `read` names (`X-Forwarded-For` or `Forwarded`) that is not itself
/// trusted. Walking
/// from the right matters: every hop appends, so only the entries added by
/// proxies we trust are facts; anything further left is whatever the client
/// chose to write. An entry reached on the walk that names no address (or
/// a `Forwarded` element without exactly one `for=`) is an error, never
/// skipped: past it lies what the client wrote.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &NetSet,
    read: ForwardedHeader,
) -> Result<IpAddr, ForwardedError> {
    let chain = forwarded_chain(peer, headers, trusted, read)?;
    Ok(chain
        .first()
        .copied()
        .unwrap_or_else(|| peer.to_canonical()))
}

/// The hops [`client_ip`] walked, left to right: the client it found,
/// then the trusted proxies after it, up to the peer (not included).
/// Empty when the peer is not a trusted proxy or sent no forwarding
/// header. What lies left of the client is what the client wrote, and is
/// not part of it: this is the chain to pass on.
pub fn forwarded_chain(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &NetSet,
    read: ForwardedHeader,
) -> Result<Vec<IpAddr>, ForwardedError> {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return Ok(Vec::new());
    }
    let header = read.name();
    let values = headers.get_all(header);
    if values.iter().any(|v| v.to_str().is_err()) {
        return Err(ForwardedError { header });
    }
    let lines = values.iter().filter_map(|v| v.to_str().ok());
    // `None`: an entry that names no address we can read.
    let entries: Vec<Option<&str>> = match read {
        ForwardedHeader::XForwardedFor => lines
            .flat_map(|v| v.split(','))
            .map(|e| Some(e.trim()))
            .collect(),
        ForwardedHeader::Forwarded => lines
            .flat_map(|v| split_unquoted(v, b','))
            .map(forwarded_for)
            .collect(),
    };
    let mut chain = Vec::new();
    for entry in entries.iter().rev() {
        let ip = entry
            .and_then(parse_forwarded_addr)
            .ok_or(ForwardedError { header })?;
        chain.push(ip);
        if !trusted.contains(ip) {
            break;
        }
    }
    chain.reverse();
    Ok(chain)
}

/// Which header the trusted proxies tell the client address in
/// (`client_ip.header`). One, named by the operator: a proxy that sets only
/// `Forwarded` passes a client's own `X-Forwarded-For` through untouched, so
/// reading whichever is present would believe what the client wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    #[default]
    XForwardedFor,
    Forwarded,
}

impl ForwardedHeader {
    /// The `client_ip.header` value (any case).
    pub fn parse(value: &str) -> Option<ForwardedHeader> {
        let value = value.trim();
        [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded]
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(value))
    }

    /// The header's name as written in messages.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "X-Forwarded-For",
            ForwardedHeader::Forwarded => "Forwarded",
        }
    }
}

/// The `for=` value of one `Forwarded` element (RFC 7239 §4), unquoted;
/// `None` when the element has none, names it twice, or cannot be read.
/// Such an element is one a hop added without telling who it spoke for,
/// so the walk must not go on past it to what the client wrote.
///
/// Values may be quoted-strings (RFC 9110 §5.6.4), and a `;` or `,` inside
/// one separates nothing: a proxy that puts the client's own `Host` into
/// `host="..."` must not let it add a `for=` of the client's choosing.
fn forwarded_for(element: &str) -> Option<&str> {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            // "Each parameter MUST NOT occur more than once per
            // forwarded-element" (RFC 7239 §4): which one was meant?
            return None;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            // No escapes: no address needs one, and an escaped quote
            // would make the end of the string a matter of reading.
            Some(quoted) => quoted
                .strip_suffix('"')
                .filter(|v| !v.contains(['"', '\\']))?,
            None if value.contains('"') => return None,
            None => value,
        };
        found = Some(value);
    }
    found
}

/// `s` split at each `sep` that is not inside a quoted-string (RFC 9110
/// §5.6.4, with its `\` escapes). An unterminated quote runs to the end,
/// so the last piece then holds it (and fails to parse as an address).
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut at = 0;
    let mut quoted = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while at < bytes.len() {
            let b = bytes[at];
            at += 1;
            match b {
                b'\\' if quoted => at += 1,
                b'"' => quoted = !quoted,
                b if b == sep && !quoted => {
                    let piece = s.get(start..at - 1);
                    start = at;
                    return piece;
                }
                _ => {}
            }
        }
        done = true;
        s.get(start.min(s.len())..)
    })
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_forwarded_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    /// Only the header the operator named is read: behind a proxy that sets
    /// only `Forwarded`, a client's own `X-Forwarded-For` passes through it
    /// untouched and must not be believed, and the other way round.
    #[test]
    fn only_the_named_header_is_read() {
        let trusted = set(&["127.0.0.1/32"]);
        let proxy = "127.0.0.1".parse().unwrap();
        let h = hdrs(&[
            ("x-forwarded-for", "10.1.1.1"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        let ip = |read| client_ip(proxy, &h, &trusted, read).unwrap();
        assert_eq!(ip(FWD), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(ip(XFF), "10.1.1.1".parse::<IpAddr>().unwrap());
        // The named header absent: the proxy itself is the client.
        let only_xff = hdrs(&[("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(client_ip(proxy, &only_xff, &trusted, FWD).unwrap(), proxy);
        let only_fwd = hdrs(&[("forwarded", "for=10.1.1.1")]);
        assert_eq!(client_ip(proxy, &only_fwd, &trusted, XFF).unwrap(), proxy);
        // Garbage in the header not read is no error either.
        let junk = hdrs(&[
            ("x-forwarded-for", "unknown"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        assert_eq!(
            client_ip(proxy, &junk, &trusted, FWD).unwrap(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
    }

    fn set(cidrs: &[&str]) -> NetSet {
        NetSet::new(
            vec!["t".into()],
            cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        )
    }

    fn hdrs(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn mapped_ipv6_matches_ipv4_range() {
        let s = set(&["10.0.0.0/8"]);
        assert!(s.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!s.contains("::ffff:11.1.2.3".parse().unwrap()));
        assert!(!s.contains("fd00::1".parse().unwrap()));
    }

    #[test]
    fn mapped_ipv6_range_matches_ipv4_address() {
        let s = set(&["::ffff:10.0.0.0/104"]);
        assert!(s.contains("10.9.9.9".parse().unwrap()));
        assert!(!s.contains("11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn ipv6_ranges_and_edges() {
        let s = set(&["fd00::/8", "192.168.1.0/24"]);
        assert!(s.contains("fd12::1".parse().unwrap()));
        assert!(!s.contains("fe80::1".parse().unwrap()));
        assert!(s.contains("192.168.1.0".parse().unwrap()));
        assert!(s.contains("192.168.1.255".parse().unwrap()));
        assert!(!s.contains("192.168.2.0".parse().unwrap()));
        // A host address written with host bits set still means its network.
        let s = set(&["10.1.2.3/8"]);
        assert!(s.contains("10.200.0.1".parse().unwrap()));
    }

    #[test]
    fn untrusted_peer_forwarded_headers_ignored() {
        let trusted = set(&["127.0.0.1/32"]);
        let h = hdrs(&[("x-forwarded-for", "10.1.1.1")]);
        let ip = client_ip("127.0.0.9".parse().unwrap(), &h, &trusted, XFF).unwrap();
        assert_eq!(ip, "127.0.0.9".parse::<IpAddr>().unwrap());
        let ip = client_ip("127.0.0.9".parse().unwrap(), &h, &NetSet::default(), XFF).unwrap();
        assert_eq!(ip, "127.0.0.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_chain_walked_right_to_left() {
        let trusted = set(&["127.0.0.1/32", "192.0.2.0/24"]);
        // Leftmost is what the client wrote; rightmost untrusted is the truth.
        let h = hdrs(&[("x-forwarded-for", "10.9.9.9, 203.0.113.7, 192.0.2.5")]);
        let ip = client_ip("127.0.0.1".parse().unwrap(), &h, &trusted, XFF).unwrap();
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        // Split over two header lines: same list.
        let h = hdrs(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-for", "203.0.113.7, 192.0.2.5"),
        ]);
        let ip = client_ip("127.0.0.1".parse().unwrap(), &h, &trusted, XFF).unwrap();
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn all_trusted_chain_gives_leftmost() {
        let trusted = set(&["127.0.0.0/8"]);
        let h = hdrs(&[("x-forwarded-for", "127.0.0.5, 127.0.0.6")]);
        let ip = client_ip("127.0.0.1".parse().unwrap(), &h, &trusted, XFF).unwrap();
        assert_eq!(ip, "127.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_header_and_ports() {
        let trusted = set(&["127.0.0.1/32"]);
        let h = hdrs(&[(
            "forwarded",
            "for=10.0.0.1;proto=https, for=\"[2001:db8::1]:4711\"",
        )]);
        let ip = client_ip("127.0.0.1".parse().unwrap(), &h, &trusted, FWD).unwrap();
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        let h = hdrs(&[("x-forwarded-for", "198.51.100.1:5555")]);
        let ip = client_ip("127.0.0.1".parse().unwrap(), &h, &trusted, XFF).unwrap();
        assert_eq!(ip, "198.51.100.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_from_trusted_proxy_is_an_error() {
        let trusted = set(&["127.0.0.1/32"]);
        let h = hdrs(&[("x-forwarded-for", "unknown")]);
        assert!(client_ip("127.0.0.1".parse().unwrap(), &h, &trusted, XFF).is_err());
        let h = hdrs(&[("forwarded", "for=unknown")]);
        assert!(client_ip("127.0.0.1".parse().unwrap(), &h, &trusted, FWD).is_err());
        // Garbage to the left of an untrusted address is never reached.
        let h = hdrs(&[("x-forwarded-for", "garbage, 198.51.100.1")]);
        let ip = client_ip("127.0.0.1".parse().unwrap(), &h, &trusted, XFF).unwrap();
        assert_eq!(ip, "198.51.100.1".parse::<IpAddr>().unwrap());
    }

    /// A `;` or `,` inside a quoted-string separates nothing: a proxy that
    /// copies the client's `Host` into `host="..."` must not let the client
    /// add a `for=` of its own choosing after the proxy's.
    #[test]
    fn forwarded_quoted_strings_hide_no_for() {
        let trusted = set(&["127.0.0.1/32"]);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let outsider: IpAddr = "203.0.113.7".parse().unwrap();
        for value in [
            r#"for=203.0.113.7;host="a;for=10.1.1.1""#,
            r#"for=203.0.113.7;host="a, for=10.1.1.1""#,
            r#"for=203.0.113.7;host="a,for=10.1.1.1;x=""#,
            r#"for=10.1.1.1, for=203.0.113.7;host="a;b,c""#,
            r#"for="10.1.1.1", for="203.0.113.7";proto=https"#,
            r#"for=10.1.1.1, for=203.0.113.7;by="\";for=10.1.1.1""#,
        ] {
            let h = hdrs(&[("forwarded", value)]);
            assert_eq!(client_ip(proxy, &h, &trusted, FWD), Ok(outsider), "{value}");
        }
    }

    /// An element the walk reaches that does not name one client (no
    /// `for=`, two of them, an unterminated or escaped quote, nothing at
    /// all) is unreadable: the walk never goes on past it to what the
    /// client wrote further left.
    #[test]
    fn forwarded_elements_without_one_for_are_unreadable() {
        let trusted = set(&["127.0.0.1/32"]);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        for value in [
            "for=10.1.1.1, proto=https",
            "for=10.1.1.1, by=203.0.113.7;proto=https",
            "for=10.1.1.1, for=203.0.113.7;for=10.1.1.1",
            "for=10.1.1.1, FOR=203.0.113.7;For=10.1.1.1",
            r#"for=10.1.1.1, for="203.0.113.7"#,
            r#"for=10.1.1.1, for="203.0.113.7\"""#,
            r#"for=10.1.1.1, for=203.0.113.7""#,
            "for=10.1.1.1, ",
            "for=10.1.1.1,",
            "for=10.1.1.1, for",
            "for=10.1.1.1, for=",
            "for=10.1.1.1, for=_hidden",
            "for=10.1.1.1, for=unknown",
        ] {
            let h = hdrs(&[("forwarded", value)]);
            assert_eq!(
                client_ip(proxy, &h, &trusted, FWD),
                Err(ForwardedError {
                    header: "Forwarded"
                }),
                "{value}"
            );
        }
        // Left of the client, an unreadable element is never reached.
        let h = hdrs(&[("forwarded", "proto=https, for=203.0.113.7")]);
        assert_eq!(
            client_ip(proxy, &h, &trusted, FWD),
            Ok("203.0.113.7".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_spellings_of_one_address() {
        let trusted = set(&["127.0.0.1/32"]);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        for (value, want) in [
            ("For=203.0.113.7", "203.0.113.7"),
            (" for = 203.0.113.7 ; proto=https", "203.0.113.7"),
            (r#"for="203.0.113.7:8080""#, "203.0.113.7"),
            (r#"for="[2001:db8::1]""#, "2001:db8::1"),
            (r#"for="[::ffff:203.0.113.7]:1""#, "203.0.113.7"),
            (r#";;for="203.0.113.7";;"#, "203.0.113.7"),
        ] {
            let h = hdrs(&[("forwarded", value)]);
            assert_eq!(
                client_ip(proxy, &h, &trusted, FWD),
                Ok(want.parse().unwrap()),
                "{value}"
            );
        }
    }

    #[test]
    fn mapped_peer_canonicalized() {
        let ip = client_ip(
            "::ffff:127.0.0.2".parse().unwrap(),
            &HeaderMap::new(),
            &NetSet::default(),
            XFF,
        )
        .unwrap();
        assert_eq!(ip, "127.0.0.2".parse::<IpAddr>().unwrap());
    }
}
