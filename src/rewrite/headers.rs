//! URL-bearing headers: public origin to private in responses, private to
//! public in the request `Origin`/`Referer`.
//!
//! This file owns the header rules: `Location`, `Content-Location`, `Link`,
//! `Refresh`, `Access-Control-Allow-Origin` and the `Domain` attribute of
//! `Set-Cookie`. Only absolute URLs whose origin equals a configured public
//! origin exactly (scheme, host and port) are touched, and only their origin
//! part is replaced. It does not touch entity headers that depend on the body
//! (`Content-Length`, `ETag`, ...): `response.rs` owns those.
//!
//! Open-redirect guard: a rewritten URL is parsed again and must have the
//! private origin as its origin, or the original value is kept. A value with
//! user info, control characters or an authority that is not exactly a public
//! origin is never rewritten into anything.

use http::header::{
    HeaderName, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_LOCATION, LINK, LOCATION, REFRESH, SET_COOKIE,
};
use http::{HeaderMap, HeaderValue};

use super::{Origin, RewriteStats, Rules};

/// Headers whose whole value is one URI reference (RFC 9110 §10.2.2, §8.7).
const URL_HEADERS: [HeaderName; 2] = [LOCATION, CONTENT_LOCATION];

/// Rewrites the URL-bearing response headers in place and returns how many
/// values changed (also added to [`RewriteStats::headers_rewritten`]).
pub fn rewrite_response_headers(rules: &Rules, headers: &mut HeaderMap) -> usize {
    let mut count = 0;
    for name in URL_HEADERS {
        count += map_values(headers, name, |v| {
            rewrite_absolute(rules, v, Direction::ToPrivate)
        });
    }
    count += map_values(headers, LINK, |v| rewrite_link(rules, v));
    count += map_values(headers, REFRESH, |v| rewrite_refresh(rules, v));
    count += map_values(headers, ACCESS_CONTROL_ALLOW_ORIGIN, |v| {
        let origin = parse_absolute(v)?;
        (origin.rest.is_empty() && rules.from.contains(&origin.origin))
            .then(|| rules.to.to_string())
    });
    count += map_values(headers, SET_COOKIE, |v| rewrite_cookie_domain(rules, v));
    RewriteStats::add(&rules.stats.headers_rewritten, count as u64);
    count
}

impl Rules {
    /// Maps a request `Origin` or `Referer` naming the private origin back to
    /// the first public origin, so the upstream's own origin checks (CSRF,
    /// CORS) see the origin it was configured with. `None` when the value
    /// does not name the private origin.
    pub fn reverse_request_origin(&self, value: &HeaderValue) -> Option<HeaderValue> {
        let text = value.to_str().ok()?;
        let new = rewrite_absolute(self, text, Direction::ToPublic)?;
        HeaderValue::from_str(&new).ok()
    }
}

#[derive(Clone, Copy)]
enum Direction {
    ToPrivate,
    ToPublic,
}

fn map_values(
    headers: &mut HeaderMap,
    name: HeaderName,
    f: impl Fn(&str) -> Option<String>,
) -> usize {
    let http::header::Entry::Occupied(mut entry) = headers.entry(name) else {
        return 0;
    };
    let mut count = 0;
    for value in entry.iter_mut() {
        let Ok(text) = value.to_str() else { continue };
        let Some(new) = f(text) else { continue };
        if let Ok(new) = HeaderValue::from_str(&new) {
            *value = new;
            count += 1;
        }
    }
    count
}

struct AbsoluteUrl<'a> {
    origin: Origin,
    /// Everything after the authority: empty or starting with `/ ? # \`.
    rest: &'a str,
}

/// Parses the origin of an absolute URL the way a browser would find its
/// host (WHATWG URL: `\` ends the authority like `/`), refusing anything
/// ambiguous: user info, controls, whitespace, a missing `//`.
fn parse_absolute(url: &str) -> Option<AbsoluteUrl<'_>> {
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return None;
    }
    let (scheme, after) = url.split_once("://")?;
    let auth_end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(auth_end);
    if authority.contains('@') {
        return None;
    }
    let origin = Origin::parse(&format!("{scheme}://{authority}")).ok()?;
    Some(AbsoluteUrl { origin, rest })
}

fn rewrite_absolute(rules: &Rules, url: &str, dir: Direction) -> Option<String> {
    let parsed = parse_absolute(url)?;
    let (matches, target) = match dir {
        Direction::ToPrivate => (rules.from.contains(&parsed.origin), &rules.to),
        Direction::ToPublic => (parsed.origin == rules.to, rules.from.first()?),
    };
    if !matches {
        return None;
    }
    let new = format!("{target}{}", parsed.rest);
    // The guard: whatever the rest holds, the result's origin is the target.
    let check = parse_absolute(&new)?;
    (check.origin == *target).then_some(new)
}

/// `Link: <uri>; rel=...` (RFC 8288 §3): rewrites each `<...>` target.
fn rewrite_link(rules: &Rules, value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut changed = false;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>')? + open;
        out.push_str(&rest[..=open]);
        let target = &rest[open + 1..close];
        match rewrite_absolute(rules, target, Direction::ToPrivate) {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(target),
        }
        rest = &rest[close..];
        // Skip the parameters up to the next link; a `<` inside a quoted
        // parameter value is not a link target.
        let next = next_link_start(rest);
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Index just past the comma that ends this link-value, honoring quotes.
fn next_link_start(s: &str) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// `Refresh: 5; url=https://...` (HTML Living Standard, "shared declarative
/// refresh steps"): rewrites the URL after `url=`, quoted or not.
fn rewrite_refresh(rules: &Rules, value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let key = lower.find("url")?;
    let after_key = &value[key + 3..];
    let eq = after_key.find('=')?;
    if !after_key[..eq].trim().is_empty() {
        return None;
    }
    let url_start = key + 3 + eq + 1;
    let url_part = value[url_start..].trim_start();
    let lead = value.len() - url_start - url_part.len();
    let (quote, inner) = match url_part.chars().next() {
        Some(q @ ('"' | '\'')) => (Some(q), &url_part[1..]),
        _ => (None, url_part),
    };
    let inner_end = match quote {
        Some(q) => inner.find(q).unwrap_or(inner.len()),
        None => inner.len(),
    };
    let url = inner[..inner_end].trim_end();
    let new = rewrite_absolute(rules, url, Direction::ToPrivate)?;
    let prefix_len = url_start + lead + quote.map_or(0, char::len_utf8);
    Some(format!(
        "{}{}{}",
        &value[..prefix_len],
        new,
        &value[prefix_len + url.len()..]
    ))
}

/// `Set-Cookie: ...; Domain=smith.example.com` (RFC 6265 §5.2.3): a domain
/// equal to a public host, with or without the leading dot, becomes the
/// private host (keeping the dot). When the private host is an IP address,
/// which cannot be a cookie domain, the attribute is dropped instead, so the
/// cookie becomes host-only, which is what it means for an IP.
fn rewrite_cookie_domain(rules: &Rules, value: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut changed = false;
    for (i, part) in value.split(';').enumerate() {
        if i > 0 {
            if let Some((name, domain)) = part.split_once('=') {
                if name.trim().eq_ignore_ascii_case("domain") {
                    let domain = domain.trim();
                    let (dot, bare) = match domain.strip_prefix('.') {
                        Some(b) => (".", b),
                        None => ("", domain),
                    };
                    if rules.from.iter().any(|o| o.host.eq_ignore_ascii_case(bare)) {
                        changed = true;
                        if !is_ip_host(&rules.to.host) {
                            parts.push(format!(" Domain={dot}{}", rules.to.host));
                        }
                        continue;
                    }
                }
            }
        }
        parts.push(part.to_owned());
    }
    changed.then(|| parts.join(";"))
}

fn is_ip_host(host: &str) -> bool {
    host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::body::tests::rules;
    use crate::rewrite::RewriteOptions;

    fn one(name: HeaderName, value: &str) -> (usize, String) {
        let r = rules();
        let mut h = HeaderMap::new();
        h.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        let n = rewrite_response_headers(&r, &mut h);
        (n, h.get(name).unwrap().to_str().unwrap().to_owned())
    }

    #[test]
    fn location_rewritten_origin_only() {
        assert_eq!(
            one(LOCATION, "https://smith.langchain.com/public/t/r?x=1#f"),
            (1, "https://smith.internal.example/public/t/r?x=1#f".into())
        );
        assert_eq!(
            one(LOCATION, "HTTPS://SMITH.langchain.com"),
            (1, "https://smith.internal.example".into())
        );
        assert_eq!(
            one(LOCATION, "https://smith.langchain.com:443/a"),
            (1, "https://smith.internal.example/a".into())
        );
        assert_eq!(
            one(CONTENT_LOCATION, "https://smith.langchain.com/a"),
            (1, "https://smith.internal.example/a".into())
        );
    }

    #[test]
    fn location_never_becomes_open_redirect() {
        for v in [
            "https://smith.langchain.com@evil.example/",
            "https://smith.langchain.com.evil.example/",
            "https://smith.langchain.com:8443/",
            "https://evil.example/https://smith.langchain.com/",
            "//smith.langchain.com/a",
            "/relative/https://smith.langchain.com",
            "https://smith.langchain.com\t@evil.example/",
            "https://user@smith.langchain.com/",
            "http://smith.langchain.com/",
            "https:/smith.langchain.com/",
        ] {
            assert_eq!(one(LOCATION, v), (0, v.into()), "{v}");
        }
        // The backslash ends the authority for a browser too: still our host.
        let (n, v) = one(LOCATION, "https://smith.langchain.com\\@evil.example/");
        assert_eq!(
            (n, v.as_str()),
            (1, "https://smith.internal.example\\@evil.example/")
        );
    }

    #[test]
    fn link_and_refresh() {
        assert_eq!(
            one(LINK, r#"<https://smith.langchain.com/p?page=2>; rel="next", <https://other.example/x>; rel="a,<b>", <https://smith.langchain.com/>; rel=last"#),
            (1, r#"<https://smith.internal.example/p?page=2>; rel="next", <https://other.example/x>; rel="a,<b>", <https://smith.internal.example/>; rel=last"#.into())
        );
        assert_eq!(
            one(REFRESH, "5; url=https://smith.langchain.com/x"),
            (1, "5; url=https://smith.internal.example/x".into())
        );
        assert_eq!(
            one(REFRESH, "0;URL='https://smith.langchain.com/x'"),
            (1, "0;URL='https://smith.internal.example/x'".into())
        );
        assert_eq!(
            one(REFRESH, "0; url=https://evil.example/"),
            (0, "0; url=https://evil.example/".into())
        );
    }

    #[test]
    fn allow_origin_exact() {
        assert_eq!(
            one(ACCESS_CONTROL_ALLOW_ORIGIN, "https://smith.langchain.com"),
            (1, "https://smith.internal.example".into())
        );
        assert_eq!(one(ACCESS_CONTROL_ALLOW_ORIGIN, "*"), (0, "*".into()));
        assert_eq!(
            one(ACCESS_CONTROL_ALLOW_ORIGIN, "https://smith.langchain.com/x"),
            (0, "https://smith.langchain.com/x".into())
        );
    }

    #[test]
    fn set_cookie_domain() {
        assert_eq!(
            one(
                SET_COOKIE,
                "s=1; Path=/; Domain=smith.langchain.com; Secure"
            ),
            (
                1,
                "s=1; Path=/; Domain=smith.internal.example; Secure".into()
            )
        );
        assert_eq!(
            one(SET_COOKIE, "s=1; domain=.Smith.LangChain.com"),
            (1, "s=1; Domain=.smith.internal.example".into())
        );
        assert_eq!(
            one(SET_COOKIE, "s=1; Domain=langchain.com"),
            (0, "s=1; Domain=langchain.com".into())
        );
        assert_eq!(
            one(SET_COOKIE, "domain=smith.langchain.com"),
            (0, "domain=smith.langchain.com".into())
        );
        let r = Rules::new(
            vec![Origin::parse("https://smith.langchain.com").unwrap()],
            Origin::parse("http://10.1.2.3:8080").unwrap(),
            RewriteOptions::default(),
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("a=1; Domain=smith.langchain.com; HttpOnly"),
        );
        h.append(SET_COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(rewrite_response_headers(&r, &mut h), 1);
        let all: Vec<_> = h
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all, ["a=1; HttpOnly", "b=2"]);
    }

    #[test]
    fn reverse_origin_and_referer() {
        let r = rules();
        let v = HeaderValue::from_static("https://smith.internal.example");
        assert_eq!(
            r.reverse_request_origin(&v).unwrap(),
            "https://smith.langchain.com"
        );
        let v = HeaderValue::from_static("https://smith.internal.example/public/t/r?a=1");
        assert_eq!(
            r.reverse_request_origin(&v).unwrap(),
            "https://smith.langchain.com/public/t/r?a=1"
        );
        assert!(r
            .reverse_request_origin(&HeaderValue::from_static("https://evil.example"))
            .is_none());
        assert!(r
            .reverse_request_origin(&HeaderValue::from_static("null"))
            .is_none());
        assert_eq!(
            r.stats()
                .headers_rewritten
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
}
