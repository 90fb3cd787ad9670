//! Response header values: public origin to private, and redirects that
//! name the upstream's own origin mapped back; private origin to public in
//! the request `Origin`/`Referer`.
//!
//! This file owns the header rules. Every response header value gets one
//! search for a public host, and `Location`, `Content-Location` and
//! `Refresh` are read for the upstream's origin; a value that names
//! neither is left as it is, without allocating. A value that does is
//! rewritten by what it holds, as bytes (a raw UTF-8 path does not make a
//! value unreadable):
//! - a URI reference (`Location`, `Content-Location`, the URL of `Refresh`,
//!   each `Link` target): its own origin, read as a browser finds it
//!   (absolute, scheme-relative `//host`, with user info, a trailing-dot
//!   host, the default port written out), becomes the private origin when
//!   it is a public one or the upstream's; the rest of it gets the body
//!   rewriter's treatment of URLs embedded in it (`?next=https%3A%2F%2F...`);
//! - `Access-Control-Allow-Origin`: exactly a public origin;
//! - `Set-Cookie`: a `Domain` naming a public host, then embedded URLs;
//! - every other header (`Content-Security-Policy`, `Reporting-Endpoints`,
//!   `Report-To`, ...) and each `Link` parameter: the body rewriter's
//!   treatment, as if the value were a body.
//!
//! It does not touch entity headers that depend on the body
//! (`Content-Length`, `ETag`, ...): `response.rs` owns those.
//!
//! Open-redirect guard: a rewritten URI reference is read again and must
//! name the private origin (when its own origin was replaced) or have the
//! same scheme and authority as before (when only embedded URLs changed),
//! or the original value is kept. A reference with a control character, or
//! whose authority cannot be read one way only (a percent-encoded or
//! non-ASCII host, a bad port, one slash after `https:`), is never
//! rewritten. Signed URLs: a reference whose own query carries a signature
//! is left whole, embedded URLs included (they are part of what was
//! signed); embedded signed URLs are left alone by the body rules.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderName, ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_LOCATION, LINK, LOCATION, REFRESH, SET_COOKIE,
};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::{default_port, rewrite_all, Form, RewriteStats, Rules};

/// The upstream's own origin (`upstream.url`), which the gateway sends as
/// `Host`: an upstream that builds an absolute redirect from `Host`
/// (nginx's directory redirects, Starlette's `redirect_slashes`) names it.
/// Borrowed from the gateway's parsed URL, so making one costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamOrigin<'a> {
    scheme: &'a str,
    host: &'a str,
    /// `None` for the scheme's default port.
    port: Option<u16>,
}

impl<'a> UpstreamOrigin<'a> {
    pub fn new(scheme: &'a Scheme, authority: &'a Authority) -> UpstreamOrigin<'a> {
        let scheme = scheme.as_str();
        let host = authority.host();
        UpstreamOrigin {
            scheme,
            host: host.strip_suffix('.').unwrap_or(host),
            port: authority
                .port_u16()
                .filter(|p| Some(*p) != default_port(scheme)),
        }
    }
}

/// Rewrites the response header values in place (see the module docs) and
/// returns how many changed (also added to
/// [`RewriteStats::headers_rewritten`]).
///
/// `rules`: the public origins to rewrite, when `[rewrite]` is on.
/// `upstream`: the upstream's origin, whose redirects become the private
/// origin with `rules`, and an absolute-path reference (`/assets/?q`)
/// without: the client's browser resolves it against the gateway.
pub fn rewrite_response_headers(
    rules: Option<&Arc<Rules>>,
    upstream: Option<UpstreamOrigin<'_>>,
    headers: &mut HeaderMap,
) -> usize {
    let cx = Context { rules, upstream };
    let mut count = 0;
    for (name, value) in headers.iter_mut() {
        let kind = Kind::of(name);
        let public = rules.is_some_and(|r| r.hosts.is_match(value.as_bytes()));
        let redirect = upstream.is_some() && matches!(kind, Kind::Reference | Kind::Refresh);
        if !public && !redirect {
            continue;
        }
        let Some(new) = cx.rewrite(kind, value.as_bytes(), public) else {
            continue;
        };
        if let Ok(mut new) = HeaderValue::from_bytes(&new) {
            new.set_sensitive(value.is_sensitive());
            *value = new;
            count += 1;
        }
    }
    if let Some(r) = rules {
        RewriteStats::add(&r.stats.headers_rewritten, count as u64);
    }
    count
}

/// Applies the header rules to the body's trailers (RFC 9110 §6.5), which
/// an HTTP/2 client receives as header fields like any others.
pub fn rewrite_trailers<B>(rules: &Arc<Rules>, body: B) -> impl Body<Data = Bytes, Error = B::Error>
where
    B: Body<Data = Bytes>,
{
    let rules = Arc::clone(rules);
    body.map_frame(move |frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            rewrite_response_headers(Some(&rules), None, &mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    })
}

impl Rules {
    /// Maps a request `Origin` or `Referer` naming the private origin back to
    /// the first public origin, so the upstream's own origin checks (CSRF,
    /// CORS) see the origin it was configured with. `None` when the value
    /// does not name the private origin.
    pub fn reverse_request_origin(&self, value: &HeaderValue) -> Option<HeaderValue> {
        let parsed = parse_absolute(value.to_str().ok()?)?;
        let target = self.from.first()?;
        if parsed.origin != self.to {
            return None;
        }
        let new = format!("{target}{}", parsed.rest);
        // The guard: whatever the rest holds, the result's origin is the target.
        let check = parse_absolute(&new)?;
        if check.origin != *target {
            return None;
        }
        HeaderValue::from_str(&new).ok()
    }
}

/// What a header value holds, by its name.
#[derive(Clone, Copy)]
enum Kind {
    /// One URI reference (RFC 9110 §10.2.2, §8.7).
    Reference,
    Refresh,
    Link,
    AllowOrigin,
    SetCookie,
    Other,
}

impl Kind {
    fn of(name: &HeaderName) -> Kind {
        if name == LOCATION || name == CONTENT_LOCATION {
            Kind::Reference
        } else if name == SET_COOKIE {
            Kind::SetCookie
        } else if name == LINK {
            Kind::Link
        } else if name == REFRESH {
            Kind::Refresh
        } else if name == ACCESS_CONTROL_ALLOW_ORIGIN {
            Kind::AllowOrigin
        } else {
            Kind::Other
        }
    }
}

struct Context<'a> {
    rules: Option<&'a Arc<Rules>>,
    upstream: Option<UpstreamOrigin<'a>>,
}

/// Where a rewritten URI reference is to point.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// Where it pointed: only URLs embedded in it change.
    Same,
    /// The private origin, in place of its own.
    Private(&'a Rules),
    /// The gateway itself: an absolute-path reference.
    Path,
}

impl Context<'_> {
    /// The new value, or `None` to keep it. `public`: the value names a
    /// public host somewhere.
    fn rewrite(&self, kind: Kind, value: &[u8], public: bool) -> Option<Vec<u8>> {
        match kind {
            Kind::Reference => self.reference(value, public),
            Kind::Refresh => {
                let url = refresh_url(value)?;
                let new = self.reference(&value[url.clone()], public)?;
                Some([&value[..url.start], &new, &value[url.end..]].concat())
            }
            // Links are not redirects: only the public origins count.
            Kind::Link => Context {
                rules: self.rules,
                upstream: None,
            }
            .link(self.rules?, value),
            Kind::AllowOrigin => {
                let rules = self.rules?;
                let origin = parse_absolute(std::str::from_utf8(value).ok()?)?;
                (origin.rest.is_empty() && rules.from.contains(&origin.origin))
                    .then(|| rules.to.to_string().into_bytes())
            }
            Kind::SetCookie => {
                let rules = self.rules?;
                let domain = cookie_domain(rules, value);
                let value = domain.as_deref().unwrap_or(value);
                embedded(rules, value).or(domain)
            }
            Kind::Other => embedded(self.rules?, value),
        }
    }

    /// A URI reference: its own origin mapped when it is a public one or
    /// the upstream's, the URLs embedded in the rest rewritten; `None` when
    /// nothing changes or the result would not pass the guard.
    fn reference(&self, url: &[u8], public: bool) -> Option<Vec<u8>> {
        let head = read_head(url)?;
        let names_public = public
            && self.rules.is_some_and(|r| {
                r.from
                    .iter()
                    .any(|o| head.names(&o.scheme, &o.host, o.port))
            });
        let names_upstream = !names_public
            && self
                .upstream
                .is_some_and(|u| head.names(u.scheme, u.host, u.port));
        let target = match self.rules {
            _ if !names_public && !names_upstream => Target::Same,
            Some(r) => Target::Private(r),
            None => Target::Path,
        };
        if matches!(target, Target::Same) && !public {
            return None;
        }
        let tail = &url[head.tail_at..];
        let new_tail = match self.rules {
            Some(r) => Cow::Owned(rewrite_tail(r, tail)?),
            None => Cow::Borrowed(tail),
        };
        let out = match target {
            Target::Same if *new_tail == *tail => return None,
            Target::Same => [&url[..head.tail_at], &new_tail].concat(),
            Target::Private(r) => [private_plain(r)?, &new_tail].concat(),
            Target::Path => match new_tail.first() {
                Some(b'/') => new_tail.into_owned(),
                None | Some(b'?' | b'#') => [b"/", &*new_tail].concat(),
                Some(_) => return None,
            },
        };
        // The guard: read the result as a browser would.
        let again = read_head(&out)?;
        let safe = match target {
            Target::Same => again.kind == head.kind && out[..again.tail_at] == url[..head.tail_at],
            Target::Private(r) => {
                again.kind == HeadKind::Absolute
                    && again.names(&r.to.scheme, &r.to.host, r.to.port)
                    && Some(again.tail_at) == private_plain(r).map(<[u8]>::len)
            }
            Target::Path => again.kind == HeadKind::Relative,
        };
        safe.then_some(out)
    }

    /// `Link: <uri>; rel=...` (RFC 8288 §3): each `<...>` target as a URI
    /// reference, the parameters around it as text.
    fn link(&self, rules: &Arc<Rules>, value: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(value.len() + 16);
        let mut rest = value;
        let mut changed = false;
        let mut text = |out: &mut Vec<u8>, part: &[u8]| match embedded(rules, part) {
            Some(new) => {
                out.extend_from_slice(&new);
                changed = true;
            }
            None => out.extend_from_slice(part),
        };
        let mut targets_changed = false;
        while let Some(open) = rest.iter().position(|b| *b == b'<') {
            let close = rest[open..].iter().position(|b| *b == b'>')? + open;
            text(&mut out, &rest[..=open]);
            let target = &rest[open + 1..close];
            match self.reference(target, rules.hosts.is_match(target)) {
                Some(new) => {
                    out.extend_from_slice(&new);
                    targets_changed = true;
                }
                None => out.extend_from_slice(target),
            }
            rest = &rest[close..];
            // The parameters up to the next link; a `<` inside a quoted
            // parameter value is not a link target.
            let next = next_link_start(rest);
            text(&mut out, &rest[..next]);
            rest = &rest[next..];
        }
        text(&mut out, rest);
        (changed || targets_changed).then_some(out)
    }
}

/// The private origin as the plain-form replacement spells it.
fn private_plain(rules: &Rules) -> Option<&[u8]> {
    let id = *rules.by_form[Form::Plain as usize].first()?;
    Some(&rules.patterns[id].replacement)
}

/// The body rewriter's treatment of a value (public URLs embedded in it, in
/// every form, respecting host boundaries and signed URLs); `None` when
/// nothing in it changes.
fn embedded(rules: &Arc<Rules>, value: &[u8]) -> Option<Vec<u8>> {
    if !rules.hosts.is_match(value) {
        return None;
    }
    let out = rewrite_all(rules, value);
    (out != value).then_some(out)
}

/// The rest of a URI reference (from its path on) with the public URLs
/// embedded in it rewritten as in a body; `None` when the reference is a
/// signed URL, which is then left whole: its query, embedded URLs and all,
/// is what was signed.
///
/// Whether it is signed is asked of the body rules themselves, so that a
/// header and a body judge a URL alike: the rest is put behind the first
/// public origin and the whole rewritten; that origin is replaced unless
/// the URL is signed.
fn rewrite_tail(rules: &Arc<Rules>, tail: &[u8]) -> Option<Vec<u8>> {
    let id = *rules.by_form[Form::Plain as usize].first()?;
    let plain = &rules.patterns[id];
    // A relative path that does not start with `/` gets one, so the
    // origin in front ends where a host ends.
    let sep: &[u8] = match tail.first() {
        None | Some(b'/' | b'?' | b'#' | b'\\') => b"",
        Some(_) => b"/",
    };
    let out = rewrite_all(rules, &[&plain.lower[..], sep, tail].concat());
    // Replaced, the origin in front is the replacement followed by the byte
    // that followed the origin: never a host or port byte, so an origin
    // left as it was cannot pass for it, whichever is the longer.
    let rest = out
        .strip_prefix(&plain.replacement[..])?
        .strip_prefix(sep)?;
    let ends_host = matches!(rest.first(), None | Some(b'/' | b'?' | b'#' | b'\\'));
    (!sep.is_empty() || ends_host).then(|| rest.to_vec())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadKind {
    /// `http://` or `https://`, then an authority.
    Absolute,
    /// `//authority`: the scheme of the page it is read on.
    SchemeRelative,
    /// Another scheme (`mailto:`, `data:`): no origin to compare.
    Opaque,
    /// A path, query or fragment of the page it is read on.
    Relative,
}

/// The scheme and authority of a URI reference, as a browser reads them.
#[derive(Debug)]
struct Head<'a> {
    kind: HeadKind,
    scheme: &'a [u8],
    /// Without a trailing dot.
    host: &'a [u8],
    port: Option<u16>,
    /// Where the path (or query, or fragment) begins.
    tail_at: usize,
}

impl Head<'_> {
    /// Whether this reference names the origin `scheme://host[:port]`
    /// (`port` `None` for the scheme's default). A scheme-relative one
    /// takes the scheme of the page, the private origin's: it names a host
    /// and port, which is what is compared.
    fn names(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = match self.kind {
            HeadKind::Absolute => self.scheme.eq_ignore_ascii_case(scheme.as_bytes()),
            HeadKind::SchemeRelative => true,
            HeadKind::Opaque | HeadKind::Relative => return false,
        };
        let default = default_port(scheme);
        scheme_ok
            && self.host.eq_ignore_ascii_case(host.as_bytes())
            && self.port.or(default) == port.or(default)
    }
}

/// Reads the scheme and authority of a URI reference the way the WHATWG
/// URL parser does for `http`/`https` pages: `\` is `/`, any run of two or
/// more slashes starts an authority, user info ends at the last `@`, the
/// authority at `/ \ ? #`. `None` when the reference is ambiguous (a
/// control character or tab, which browsers drop; one slash after `https:`,
/// which reads differently on pages of another scheme) or its host or port
/// is not plain ASCII a byte comparison can judge (percent-encoded or
/// internationalized hosts, which browsers map first).
fn read_head(url: &[u8]) -> Option<Head<'_>> {
    if url.iter().any(u8::is_ascii_control) || url.first() == Some(&b' ') {
        return None;
    }
    let scheme_len = url
        .first()
        .filter(|b| b.is_ascii_alphabetic())
        .and_then(|_| {
            url.iter()
                .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
                .filter(|i| url[*i] == b':')
        });
    let slashes = |from: usize| {
        url[from..]
            .iter()
            .take_while(|b| matches!(b, b'/' | b'\\'))
            .count()
    };
    let (kind, scheme, auth_start) = match scheme_len {
        Some(n) => {
            let scheme = &url[..n];
            let special =
                scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
            if !special {
                let tail_at = n + 1;
                return Some(Head {
                    kind: HeadKind::Opaque,
                    scheme,
                    host: b"",
                    port: None,
                    tail_at,
                });
            }
            let run = slashes(n + 1);
            if run < 2 {
                return None;
            }
            (HeadKind::Absolute, scheme, n + 1 + run)
        }
        None => {
            let run = slashes(0);
            if run < 2 {
                return Some(Head {
                    kind: HeadKind::Relative,
                    scheme: b"",
                    host: b"",
                    port: None,
                    tail_at: 0,
                });
            }
            (HeadKind::SchemeRelative, &url[..0], run)
        }
    };
    let auth_end = url[auth_start..]
        .iter()
        .position(|b| matches!(b, b'/' | b'\\' | b'?' | b'#'))
        .map_or(url.len(), |i| auth_start + i);
    let authority = &url[auth_start..auth_end];
    let host_port = match authority.iter().rposition(|b| *b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    if !host_port.iter().all(u8::is_ascii_graphic) || host_port.contains(&b'%') {
        return None;
    }
    let (host, port) = match host_port.iter().rposition(|b| *b == b':') {
        // The colons of an IPv6 address sit inside its brackets.
        Some(colon) if !host_port[colon..].contains(&b']') => {
            (&host_port[..colon], &host_port[colon + 1..])
        }
        _ => (host_port, &b""[..]),
    };
    let port = match port {
        [] => None,
        digits => Some(
            std::str::from_utf8(digits)
                .ok()
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))?
                .parse::<u16>()
                .ok()?,
        ),
    };
    Some(Head {
        kind,
        scheme,
        host: host.strip_suffix(b".").unwrap_or(host),
        port,
        tail_at: auth_end,
    })
}

/// Where the URL of a `Refresh` value is, as browsers find it (HTML Living
/// Standard, "shared declarative refresh steps"): `5; url=...`,
/// `0;URL='...'`, and `0; https://...` without `url=`.
fn refresh_url(value: &[u8]) -> Option<std::ops::Range<usize>> {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r');
    let skip_ws = |mut i: usize| {
        while value.get(i).is_some_and(ws) {
            i += 1;
        }
        i
    };
    let is = |i: usize, c: u8| value.get(i).is_some_and(|b| b.eq_ignore_ascii_case(&c));
    let mut i = skip_ws(0);
    let digits = value[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 && !is(i, b'.') {
        return None;
    }
    i += value[i..]
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .count();
    if i < value.len() {
        if !(matches!(value[i], b';' | b',') || ws(&value[i])) {
            return None;
        }
        i = skip_ws(i);
        if matches!(value.get(i), Some(b';' | b',')) {
            i += 1;
        }
        i = skip_ws(i);
    }
    if i >= value.len() {
        return None;
    }
    // `url=`, any case, spaces around `=`; a `u` that does not go on to
    // `rl=` is where the URL starts, with no quotes taken off.
    let quotes_at = if is(i, b'u') {
        let eq = skip_ws(i + 3);
        (is(i + 1, b'r') && is(i + 2, b'l') && is(eq, b'=')).then(|| skip_ws(eq + 1))
    } else {
        Some(i)
    };
    let (start, end) = match quotes_at {
        None => (i, value.len()),
        Some(q) => match value.get(q) {
            Some(&quote @ (b'"' | b'\'')) => {
                let end = value[q + 1..]
                    .iter()
                    .position(|b| *b == quote)
                    .map_or(value.len(), |p| q + 1 + p);
                (q + 1, end)
            }
            _ => (q, value.len()),
        },
    };
    let end = start + value[start..end].trim_ascii_end().len();
    Some(start..end)
}

/// Index just past the comma that ends this link-value, honoring quotes.
fn next_link_start(s: &[u8]) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// `Set-Cookie: ...; Domain=smith.example.com` (RFC 6265 §5.2.3): a domain
/// equal to a public host, with or without the leading dot, becomes the
/// private host (keeping the dot). When the private host is an IP address,
/// which cannot be a cookie domain, the attribute is dropped instead, so the
/// cookie becomes host-only, which is what it means for an IP.
fn cookie_domain(rules: &Rules, value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len() + 8);
    let mut changed = false;
    for (i, part) in value.split(|b| *b == b';').enumerate() {
        let public = i > 0 && names_public_domain(rules, part);
        if public {
            changed = true;
            if is_ip_host(&rules.to.host) {
                continue;
            }
        }
        if i > 0 {
            out.push(b';');
        }
        if !public {
            out.extend_from_slice(part);
            continue;
        }
        let dot = part.split(|b| *b == b'=').nth(1).map(<[u8]>::trim_ascii);
        out.extend_from_slice(b" Domain=");
        if dot.is_some_and(|d| d.starts_with(b".")) {
            out.push(b'.');
        }
        out.extend_from_slice(rules.to.host.as_bytes());
    }
    changed.then_some(out)
}

/// Whether a cookie attribute is `Domain=` a public host (leading dot
/// allowed).
fn names_public_domain(rules: &Rules, attribute: &[u8]) -> bool {
    let Some(eq) = attribute.iter().position(|b| *b == b'=') else {
        return false;
    };
    let (name, domain) = (
        attribute[..eq].trim_ascii(),
        attribute[eq + 1..].trim_ascii(),
    );
    let bare = domain.strip_prefix(b".").unwrap_or(domain);
    name.eq_ignore_ascii_case(b"domain")
        && rules
            .from
            .iter()
            .any(|o| o.host.as_bytes().eq_ignore_ascii_case(bare))
}

fn is_ip_host(host: &str) -> bool {
    host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok()
}

struct AbsoluteUrl<'a> {
    origin: super::Origin,
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
    let origin = super::Origin::parse(&format!("{scheme}://{authority}")).ok()?;
    Some(AbsoluteUrl { origin, rest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::body::tests::rules;
    use crate::rewrite::{Origin, RewriteOptions};

    fn value(h: &HeaderMap, name: &HeaderName) -> String {
        String::from_utf8(h.get(name).unwrap().as_bytes().to_vec()).unwrap()
    }

    fn one(name: HeaderName, v: &str) -> (usize, String) {
        let r = rules();
        let mut h = HeaderMap::new();
        h.insert(name.clone(), HeaderValue::from_bytes(v.as_bytes()).unwrap());
        let n = rewrite_response_headers(Some(&r), None, &mut h);
        (n, value(&h, &name))
    }

    fn rewritten(name: HeaderName, v: &str, want: &str) {
        assert_eq!(one(name, v), (1, want.to_owned()), "{v}");
    }

    fn untouched(name: HeaderName, v: &str) {
        assert_eq!(one(name, v), (0, v.to_owned()), "{v}");
    }

    #[test]
    fn location_rewritten_origin_only() {
        rewritten(
            LOCATION,
            "https://smith.langchain.com/public/t/r?x=1#f",
            "https://smith.internal.example/public/t/r?x=1#f",
        );
        rewritten(
            LOCATION,
            "HTTPS://SMITH.langchain.com",
            "https://smith.internal.example",
        );
        rewritten(
            LOCATION,
            "https://smith.langchain.com:443/a",
            "https://smith.internal.example/a",
        );
        rewritten(
            CONTENT_LOCATION,
            "https://smith.langchain.com/a",
            "https://smith.internal.example/a",
        );
    }

    #[test]
    fn location_never_becomes_open_redirect() {
        for v in [
            "https://smith.langchain.com@evil.example/",
            "https://smith.langchain.com.evil.example/",
            "https://smith.langchain.com..evil.example/",
            "https://smith.langchain.community/",
            "https://smith.langchain.com:8443/",
            "https://smith.langchain.com\t@evil.example/",
            "https://smith.langchain.com%2F@evil.example/",
            "https://smith.langchain.com%2eevil.example/",
            "https://smith.langchain.com:443@evil.example/",
            "//smith.langchain.com@evil.example/",
            "http://smith.langchain.com/",
            "https:/smith.langchain.com/",
            "https:smith.langchain.com/",
            "/\tsmith.langchain.com/",
            "\\smith.langchain.com/",
        ] {
            untouched(LOCATION, v);
        }
        // The backslash ends the authority for a browser too: still our host.
        rewritten(
            LOCATION,
            "https://smith.langchain.com\\@evil.example/",
            "https://smith.internal.example\\@evil.example/",
        );
        // A public URL inside another host's URL is rewritten there, and
        // the redirect still goes where the upstream sent it.
        rewritten(
            LOCATION,
            "https://evil.example/https://smith.langchain.com/",
            "https://evil.example/https://smith.internal.example/",
        );
        rewritten(
            LOCATION,
            "/relative/https://smith.langchain.com",
            "/relative/https://smith.internal.example",
        );
    }

    /// Spellings a browser follows to the public host: naming the public
    /// host, they can only be sent to the private one.
    #[test]
    fn every_spelling_of_the_public_origin_in_a_reference() {
        for (v, want) in [
            (
                "//smith.langchain.com/a",
                "https://smith.internal.example/a",
            ),
            ("//smith.langchain.com", "https://smith.internal.example"),
            (
                "//smith.langchain.com:443/a",
                "https://smith.internal.example/a",
            ),
            (
                "///smith.langchain.com/a",
                "https://smith.internal.example/a",
            ),
            (
                "\\\\smith.langchain.com/a",
                "https://smith.internal.example/a",
            ),
            (
                "https:\\\\smith.langchain.com/a",
                "https://smith.internal.example/a",
            ),
            (
                "https:///smith.langchain.com/a",
                "https://smith.internal.example/a",
            ),
            (
                "https://smith.langchain.com./a",
                "https://smith.internal.example/a",
            ),
            (
                "https://SMITH.langchain.com.:443?q",
                "https://smith.internal.example?q",
            ),
            (
                "https://smith.langchain.com:/a",
                "https://smith.internal.example/a",
            ),
            (
                "https://user@smith.langchain.com/",
                "https://smith.internal.example/",
            ),
            (
                "https://u:p@x@smith.langchain.com#f",
                "https://smith.internal.example#f",
            ),
        ] {
            rewritten(LOCATION, v, want);
        }
        rewritten(
            CONTENT_LOCATION,
            "//smith.langchain.com/api/v1/x",
            "https://smith.internal.example/api/v1/x",
        );
        rewritten(
            LINK,
            "<//smith.langchain.com/static/app.js>; rel=preload; as=script",
            "<https://smith.internal.example/static/app.js>; rel=preload; as=script",
        );
    }

    /// Public URLs inside a header value, as in a body: a login's `next=`,
    /// an OAuth `redirect_uri`, a cookie remembering where to return.
    #[test]
    fn urls_embedded_in_a_value() {
        rewritten(
            LOCATION,
            "/login?next=https%3A%2F%2Fsmith.langchain.com%2Fpublic%2Fabc%2Fr",
            "/login?next=https%3A%2F%2Fsmith.internal.example%2Fpublic%2Fabc%2Fr",
        );
        rewritten(
            LOCATION,
            "https://idp.example/authorize?client_id=ls&redirect_uri=https%3A%2F%2Fsmith.langchain.com%2Fapi%2Fv1%2Foauth%2Fcallback",
            "https://idp.example/authorize?client_id=ls&redirect_uri=https%3A%2F%2Fsmith.internal.example%2Fapi%2Fv1%2Foauth%2Fcallback",
        );
        rewritten(
            LOCATION,
            "https://idp.example/logout?post_logout_redirect_uri=https://smith.langchain.com/",
            "https://idp.example/logout?post_logout_redirect_uri=https://smith.internal.example/",
        );
        rewritten(
            LOCATION,
            "https://smith.langchain.com/login?next=https%3A%2F%2Fsmith.langchain.com%2Fx",
            "https://smith.internal.example/login?next=https%3A%2F%2Fsmith.internal.example%2Fx",
        );
        rewritten(
            SET_COOKIE,
            "return_to=https%3A%2F%2Fsmith.langchain.com%2Fpublic%2Fabc%2Fr; Path=/; HttpOnly",
            "return_to=https%3A%2F%2Fsmith.internal.example%2Fpublic%2Fabc%2Fr; Path=/; HttpOnly",
        );
        rewritten(
            SET_COOKIE,
            "r=https://smith.langchain.com/x; Domain=smith.langchain.com",
            "r=https://smith.internal.example/x; Domain=smith.internal.example",
        );
        rewritten(
            LINK,
            r#"<https://idp.example/x?u=https%3A%2F%2Fsmith.langchain.com%2F>; rel=preconnect; anchor="https://smith.langchain.com/a""#,
            r#"<https://idp.example/x?u=https%3A%2F%2Fsmith.internal.example%2F>; rel=preconnect; anchor="https://smith.internal.example/a""#,
        );
        // Look-alikes and other ports stay, embedded as at the front.
        untouched(
            LOCATION,
            "/login?next=https%3A%2F%2Fsmith.langchain.com.evil.example%2F&b=https://smith.langchain.community/&c=https://smith.langchain.com:8443/",
        );
    }

    /// A signed URL is left whole: its own signature covers the query and
    /// the URLs in it; a signed URL embedded in another stays as in a body.
    #[test]
    fn signed_urls_left_whole() {
        for v in [
            "https://smith.langchain.com/blob?X-Amz-Algorithm=A&X-Amz-Signature=abc",
            "//smith.langchain.com/blob?x-goog-signature=abc",
            "https://idp.example/saml?RelayState=https%3A%2F%2Fsmith.langchain.com%2F&SigAlg=rsa&Signature=abc",
            "/download?u=https%3A%2F%2Fsmith.langchain.com%2Fb%3FX-Amz-Signature%3D1",
        ] {
            untouched(LOCATION, v);
        }
        untouched(LINK, "<https://smith.langchain.com/b?sig=1>; rel=preload");
        let r = crate::rewrite::body::tests::rules_with(RewriteOptions {
            skip_signed_urls: false,
            ..RewriteOptions::default()
        });
        let mut h = HeaderMap::new();
        h.insert(
            LOCATION,
            HeaderValue::from_static("https://smith.langchain.com/b?sig=1"),
        );
        assert_eq!(rewrite_response_headers(Some(&r), None, &mut h), 1);
        assert_eq!(
            value(&h, &LOCATION),
            "https://smith.internal.example/b?sig=1"
        );
    }

    /// Values are bytes: a raw UTF-8 path or cookie value is no reason to
    /// skip one.
    #[test]
    fn values_with_non_ascii_bytes() {
        rewritten(
            LOCATION,
            "https://smith.langchain.com/datasets/café",
            "https://smith.internal.example/datasets/café",
        );
        rewritten(
            SET_COOKIE,
            "name=café; Domain=smith.langchain.com; Path=/",
            "name=café; Domain=smith.internal.example; Path=/",
        );
        rewritten(
            "x-next".parse().unwrap(),
            "ü https://smith.langchain.com/ü",
            "ü https://smith.internal.example/ü",
        );
        untouched(LOCATION, "https://smith.langchain.comé/x");
        untouched(LOCATION, "https://smïth.langchain.com/x");
    }

    #[test]
    fn link_and_refresh() {
        rewritten(
            LINK,
            r#"<https://smith.langchain.com/p?page=2>; rel="next", <https://other.example/x>; rel="a,<b>", <https://smith.langchain.com/>; rel=last"#,
            r#"<https://smith.internal.example/p?page=2>; rel="next", <https://other.example/x>; rel="a,<b>", <https://smith.internal.example/>; rel=last"#,
        );
        for (v, want) in [
            (
                "5; url=https://smith.langchain.com/x",
                "5; url=https://smith.internal.example/x",
            ),
            (
                "0;URL='https://smith.langchain.com/x'",
                "0;URL='https://smith.internal.example/x'",
            ),
            (
                "0; https://smith.langchain.com/public/abc/r",
                "0; https://smith.internal.example/public/abc/r",
            ),
            (
                "0,\"//smith.langchain.com/x\" ",
                "0,\"https://smith.internal.example/x\" ",
            ),
            (
                "1.5 ; URL = https://smith.langchain.com./x",
                "1.5 ; URL = https://smith.internal.example/x",
            ),
            (
                "0; url=/login?next=https%3A%2F%2Fsmith.langchain.com%2F",
                "0; url=/login?next=https%3A%2F%2Fsmith.internal.example%2F",
            ),
        ] {
            rewritten(REFRESH, v, want);
        }
        for v in [
            "0; url=https://evil.example/",
            "x; url=https://smith.langchain.com/",
            "0; url=https://smith.langchain.com:8443/",
            "0 ; url=https://smith.langchain.com.evil.example/",
        ] {
            untouched(REFRESH, v);
        }
    }

    /// Headers with no rule of their own get the body rewriter's: report
    /// endpoints and connect sources of the share page's policies.
    #[test]
    fn other_headers_as_bodies() {
        rewritten(
            "content-security-policy".parse().unwrap(),
            "default-src 'self'; connect-src 'self' https://smith.langchain.com wss://x.example; report-uri https://smith.langchain.com/csp-report",
            "default-src 'self'; connect-src 'self' https://smith.internal.example wss://x.example; report-uri https://smith.internal.example/csp-report",
        );
        rewritten(
            "reporting-endpoints".parse().unwrap(),
            r#"csp="https://smith.langchain.com/reports", other="https://r.example/""#,
            r#"csp="https://smith.internal.example/reports", other="https://r.example/""#,
        );
        rewritten(
            "report-to".parse().unwrap(),
            r#"{"group":"csp","endpoints":[{"url":"https://smith.langchain.com/reports"},{"url":"https:\/\/smith.langchain.com\/r"}]}"#,
            r#"{"group":"csp","endpoints":[{"url":"https://smith.internal.example/reports"},{"url":"https:\/\/smith.internal.example\/r"}]}"#,
        );
        for v in [
            "connect-src https://smith.langchain.com.evil.example https://smith.langchain.community",
            "https://smith.langchain.com/b?X-Amz-Signature=1",
            "smith.langchain.com",
        ] {
            untouched("x-other".parse().unwrap(), v);
        }
    }

    #[test]
    fn allow_origin_exact() {
        rewritten(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            "https://smith.langchain.com",
            "https://smith.internal.example",
        );
        untouched(ACCESS_CONTROL_ALLOW_ORIGIN, "*");
        untouched(ACCESS_CONTROL_ALLOW_ORIGIN, "https://smith.langchain.com/x");
    }

    #[test]
    fn set_cookie_domain() {
        rewritten(
            SET_COOKIE,
            "s=1; Path=/; Domain=smith.langchain.com; Secure",
            "s=1; Path=/; Domain=smith.internal.example; Secure",
        );
        rewritten(
            SET_COOKIE,
            "s=1; domain=.Smith.LangChain.com",
            "s=1; Domain=.smith.internal.example",
        );
        untouched(SET_COOKIE, "s=1; Domain=langchain.com");
        untouched(SET_COOKIE, "domain=smith.langchain.com");
        let r = Arc::new(
            Rules::new(
                vec![Origin::parse("https://smith.langchain.com").unwrap()],
                Origin::parse("http://10.1.2.3:8080").unwrap(),
                RewriteOptions::default(),
            )
            .unwrap(),
        );
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("a=1; Domain=smith.langchain.com; HttpOnly"),
        );
        h.append(SET_COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(rewrite_response_headers(Some(&r), None, &mut h), 1);
        let all: Vec<_> = h
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all, ["a=1; HttpOnly", "b=2"]);
    }

    #[test]
    fn values_naming_nothing_are_left_as_they_are() {
        let r = rules();
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("location", "/public/t/r"),
            ("link", "<https://other.example/>; rel=preconnect"),
            ("refresh", "5"),
            ("set-cookie", "s=1; Path=/"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let before = h.clone();
        assert_eq!(rewrite_response_headers(Some(&r), None, &mut h), 0);
        assert_eq!(h, before);
        let mut sensitive = HeaderValue::from_static("s=https://smith.langchain.com/");
        sensitive.set_sensitive(true);
        h.insert(SET_COOKIE, sensitive);
        assert_eq!(rewrite_response_headers(Some(&r), None, &mut h), 1);
        assert!(h[SET_COOKIE].is_sensitive());
        assert_eq!(
            r.stats()
                .headers_rewritten
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    fn upstream_case(
        rules: Option<&Arc<Rules>>,
        upstream: &str,
        name: HeaderName,
        v: &str,
    ) -> (usize, String) {
        let uri: http::Uri = upstream.parse().unwrap();
        let up = UpstreamOrigin::new(uri.scheme().unwrap(), uri.authority().unwrap());
        let mut h = HeaderMap::new();
        h.insert(name.clone(), HeaderValue::from_str(v).unwrap());
        let n = rewrite_response_headers(rules, Some(up), &mut h);
        (n, value(&h, &name))
    }

    /// A redirect an upstream built from the `Host` the gateway sent it.
    #[test]
    fn redirects_naming_the_upstream() {
        let r = rules();
        let up = "http://127.0.0.1:8080";
        for (name, v, want) in [
            (
                LOCATION,
                "http://127.0.0.1:8080/assets/",
                "https://smith.internal.example/assets/",
            ),
            (
                LOCATION,
                "HTTP://127.0.0.1:8080",
                "https://smith.internal.example",
            ),
            (
                CONTENT_LOCATION,
                "//127.0.0.1:8080/a?next=https%3A%2F%2Fsmith.langchain.com%2F",
                "https://smith.internal.example/a?next=https%3A%2F%2Fsmith.internal.example%2F",
            ),
            (
                REFRESH,
                "0; url=http://127.0.0.1:8080/x",
                "0; url=https://smith.internal.example/x",
            ),
        ] {
            assert_eq!(
                upstream_case(Some(&r), up, name, v),
                (1, want.to_owned()),
                "{v}"
            );
        }
        // Without [rewrite]: a reference to the gateway itself.
        for (name, v, want) in [
            (
                LOCATION,
                "http://127.0.0.1:8080/assets/?a=1#f",
                "/assets/?a=1#f",
            ),
            (LOCATION, "http://127.0.0.1:8080", "/"),
            (LOCATION, "http://127.0.0.1:8080?a=1", "/?a=1"),
            (LOCATION, "http://user@127.0.0.1.:8080/x", "/x"),
            (REFRESH, "3;url='http://127.0.0.1:8080/x'", "3;url='/x'"),
        ] {
            assert_eq!(
                upstream_case(None, up, name, v),
                (1, want.to_owned()),
                "{v}"
            );
        }
        // What would read as another host once the origin is gone stays
        // (with [rewrite], the private origin goes in front of it).
        for rest in ["//evil.example/", "/\\evil.example/", "\\evil.example/"] {
            let v = format!("http://127.0.0.1:8080{rest}");
            assert_eq!(upstream_case(None, up, LOCATION, &v), (0, v.clone()));
            assert_eq!(
                upstream_case(Some(&r), up, LOCATION, &v),
                (1, format!("https://smith.internal.example{rest}"))
            );
        }
        // Another port or scheme, another host, and the headers that are
        // not redirects stay as they are.
        for (name, v) in [
            (LOCATION, "http://127.0.0.1:80/x"),
            (LOCATION, "https://127.0.0.1:8080/x"),
            (LOCATION, "http://127.0.0.1:8080@evil.example/"),
            (LOCATION, "/x"),
            (LINK, "<http://127.0.0.1:8080/x>; rel=next"),
            (
                HeaderName::from_static("x-upstream"),
                "http://127.0.0.1:8080/x",
            ),
        ] {
            assert_eq!(
                upstream_case(None, up, name.clone(), v),
                (0, v.to_owned()),
                "{v}"
            );
            assert_eq!(upstream_case(Some(&r), up, name, v).0, 0, "{v}");
        }
        // The default port, written out or not, is the same origin.
        for v in ["http://frontend/x", "http://FRONTEND:80/x", "//frontend./x"] {
            assert_eq!(
                upstream_case(None, "http://frontend", LOCATION, v),
                (1, "/x".to_owned()),
                "{v}"
            );
        }
        assert_eq!(
            upstream_case(None, "http://frontend:80", LOCATION, "http://frontend/x"),
            (1, "/x".to_owned())
        );
        assert_eq!(
            upstream_case(
                None,
                "http://[fd00::7]:8080",
                LOCATION,
                "http://[FD00::7]:8080/x"
            ),
            (1, "/x".to_owned())
        );
    }

    #[tokio::test]
    async fn trailers_follow_the_header_rules() {
        let r = rules();
        let mut trailers = HeaderMap::new();
        trailers.insert(
            LINK,
            HeaderValue::from_static("<https://smith.langchain.com/p>; rel=next"),
        );
        trailers.insert(
            HeaderName::from_static("x-next"),
            HeaderValue::from_static("https://smith.langchain.com/public/abc/r"),
        );
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(
                b"https://smith.langchain.com/",
            ))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let collected = rewrite_trailers(&r, body).collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(
            trailers[LINK],
            "<https://smith.internal.example/p>; rel=next"
        );
        assert_eq!(
            trailers["x-next"],
            "https://smith.internal.example/public/abc/r"
        );
        // The data is the body rewriter's business, not this adaptor's.
        assert_eq!(collected.to_bytes(), "https://smith.langchain.com/");
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
