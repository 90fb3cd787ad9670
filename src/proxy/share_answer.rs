//! What every answer on a share route carries, forwarded or refused, over
//! whatever the upstream sent (see [`crate::config::ShareHeaders`]).
//!
//! The answer to a share request depends on who asked (the network, an
//! identity), which no cache key can express: a shared cache in front of the
//! gateway (a CDN, a caching load balancer, nginx with `proxy_cache`) that
//! stored an insider's answer would hand it to the next outsider asking for
//! the same URL, before the gateway ever sees them. So share and
//! share-management answers are `Cache-Control: private` (RFC 9111 §5.2.2.7:
//! a browser may keep its own copy, no shared cache may store it), and the
//! headers that speak to a CDN over `Cache-Control`'s head are removed.
//!
//! This module owns those header edits and nothing else; [`super::handle`]
//! decides which answers get them.

use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

use crate::config::ShareHeaders;
use crate::route::RouteClass;

const X_ROBOTS_TAG: HeaderName = HeaderName::from_static("x-robots-tag");

/// Headers through which an origin tells a CDN or cache in front how long to
/// keep an answer, taking precedence there over `Cache-Control`: RFC 9213's
/// `CDN-Cache-Control` and the vendors' targeted fields
/// (`Cloudflare-CDN-Cache-Control`, `Akamai-Cache-Control`, ...: any name
/// ending in `-cache-control`), Fastly's and Varnish's `Surrogate-Control`,
/// Akamai's `Edge-Control`, and nginx's `X-Accel-Expires` (honoured by an
/// nginx `proxy_cache` in front).
fn speaks_to_caches_in_front(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.ends_with("-cache-control")
        || matches!(n, "surrogate-control" | "edge-control" | "x-accel-expires")
}

/// Sets the share headers on an answer of route class `class`: the page
/// headers on public routes, the cache rule on those and on share management
/// (whose answers, such as the list of every shared entity, are no more
/// cacheable for everyone).
pub(super) fn apply(set: &ShareHeaders, class: RouteClass, headers: &mut HeaderMap) {
    let public = class.is_public();
    if !public && class != RouteClass::ShareManage {
        return;
    }
    if set.cache_private {
        keep_out_of_shared_caches(headers);
    }
    if !public {
        return;
    }
    // An upstream's `unsafe-url` would hand the token to every site the page
    // loads an image from.
    if let Some(policy) = &set.referrer_policy {
        headers.insert(header::REFERRER_POLICY, policy.clone());
    }
    if set.noindex {
        headers.insert(X_ROBOTS_TAG, HeaderValue::from_static("noindex, nofollow"));
    }
}

/// Makes the answer's `Cache-Control` say `private` and removes the
/// CDN-directed headers.
fn keep_out_of_shared_caches(headers: &mut HeaderMap) {
    // One look at the names tells whether there is anything to merge or
    // remove (usually not: one insert is then all it costs).
    let (mut has_cache_control, mut has_cdn) = (false, false);
    for name in headers.keys() {
        if name == header::CACHE_CONTROL {
            has_cache_control = true;
        } else if speaks_to_caches_in_front(name) {
            has_cdn = true;
        }
    }
    if has_cdn {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|n| speaks_to_caches_in_front(n))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    let private = HeaderValue::from_static("private");
    if !has_cache_control {
        headers.insert(header::CACHE_CONTROL, private);
        return;
    }
    let lines = headers.get_all(header::CACHE_CONTROL).iter();
    let value = match private_cache_control(lines.map(HeaderValue::as_bytes)) {
        Some(Kept::AsIs) => return,
        Some(Kept::Rewritten(v)) => {
            HeaderValue::from_maybe_shared(v.into_bytes()).unwrap_or(private)
        }
        None => private,
    };
    headers.insert(header::CACHE_CONTROL, value);
}

#[derive(Debug, PartialEq, Eq)]
enum Kept {
    /// The upstream's value already keeps the answer out of shared caches.
    AsIs,
    Rewritten(String),
}

/// The upstream's `Cache-Control` lines made private: `private` first, then
/// every directive the upstream gave except those that let a shared cache
/// store the answer (`public`, `s-maxage`) or narrow `private` to some fields
/// (`private="Set-Cookie"`, RFC 9111 §5.2.2.7). Everything else (`max-age`,
/// `no-cache`, `must-revalidate`, extensions such as
/// `stale-while-revalidate`) is kept as spelled, so the browser's own cache
/// behaves as the upstream meant. `None` when the value cannot be read (an
/// unterminated quoted string or a byte outside visible ASCII): then plain
/// `private` replaces it. An unqualified `no-store` already keeps every
/// cache out, so such a value is left as it is.
///
/// Hand-written: the typed `Cache-Control` of the `headers` crate drops the
/// extension directives this must keep, and the grammar (RFC 9110 §5.6.1
/// lists of `token [ "=" ( token / quoted-string ) ]`) is a dozen lines.
fn private_cache_control<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<Kept> {
    let mut kept: Vec<&str> = Vec::new();
    let (mut no_store, mut dropped) = (false, false);
    for line in lines {
        let line = std::str::from_utf8(line).ok()?;
        if !line
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return None;
        }
        for directive in directives(line)? {
            let name = directive.split('=').next().unwrap_or("").trim_end();
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            let qualified = name.len() < directive.len();
            match (qualified, name) {
                // Put back first, below.
                (false, _) if is("private") => {}
                (false, _) if is("no-store") => {
                    no_store = true;
                    kept.push(directive);
                }
                _ if is("public") || is("s-maxage") || is("private") => dropped = true,
                _ => kept.push(directive),
            }
        }
    }
    if no_store && !dropped {
        return Some(Kept::AsIs);
    }
    let mut out = String::from("private");
    for d in kept {
        out.push_str(", ");
        out.push_str(d);
    }
    Some(Kept::Rewritten(out))
}

/// Splits one list line into its trimmed, non-empty members; commas inside
/// a quoted string (with `\` escapes) do not split. `None` when a quoted
/// string is not closed.
fn directives(line: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in line.bytes().enumerate() {
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            (false, _, b',') => {
                out.push(line[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    out.push(line[start..].trim());
    out.retain(|d| !d.is_empty());
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn merged(lines: &[&str]) -> Option<Kept> {
        private_cache_control(lines.iter().map(|l| l.as_bytes()))
    }

    fn rewritten(s: &str) -> Option<Kept> {
        Some(Kept::Rewritten(s.to_owned()))
    }

    #[test]
    fn cache_control_is_made_private_keeping_the_browsers_rules() {
        let cases: &[(&[&str], Option<Kept>)] = &[
            (&["public, max-age=600"], rewritten("private, max-age=600")),
            (
                &["max-age=60, s-maxage=3600", "must-revalidate"],
                rewritten("private, max-age=60, must-revalidate"),
            ),
            (&["PUBLIC", "S-MaxAge = 10"], rewritten("private")),
            (
                &["private=\"set-cookie, x-a\", max-age=5"],
                rewritten("private, max-age=5"),
            ),
            (&["private"], rewritten("private")),
            (&["Private, max-age=5"], rewritten("private, max-age=5")),
            (
                &["no-cache=\"a,b\", stale-while-revalidate=30"],
                rewritten("private, no-cache=\"a,b\", stale-while-revalidate=30"),
            ),
            (&[" , ,max-age=0,,"], rewritten("private, max-age=0")),
            (&["no-store"], Some(Kept::AsIs)),
            (&["max-age=0", "No-Store"], Some(Kept::AsIs)),
            (&["private, no-store"], Some(Kept::AsIs)),
            (&["public, no-store"], rewritten("private, no-store")),
            (&["no-store=\"x\""], rewritten("private, no-store=\"x\"")),
            (
                &["max-age=1, x=\"a\\\"b,c\""],
                rewritten("private, max-age=1, x=\"a\\\"b,c\""),
            ),
            (&["public, x=\"unterminated"], None),
            (&["max-age=1\u{7f}"], None),
        ];
        for (lines, want) in cases {
            assert_eq!(&merged(lines), want, "{lines:?}");
        }
    }

    fn settings(cache_private: bool) -> ShareHeaders {
        ShareHeaders {
            referrer_policy: Some(HeaderValue::from_static("same-origin")),
            noindex: true,
            cache_private,
        }
    }

    fn upstream_headers(cache_control: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in cache_control {
            h.append(header::CACHE_CONTROL, HeaderValue::from_static(v));
        }
        for (n, v) in [
            ("cdn-cache-control", "max-age=86400"),
            ("cloudflare-cdn-cache-control", "max-age=86400"),
            ("akamai-cache-control", "max-age=86400"),
            ("surrogate-control", "max-age=3600"),
            ("edge-control", "cache-maxage=1h"),
            ("x-accel-expires", "3600"),
            ("content-type", "application/json"),
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h
    }

    fn cache_lines(h: &HeaderMap) -> Vec<&str> {
        h.get_all(header::CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn share_and_management_answers_stay_out_of_shared_caches() {
        for class in RouteClass::PUBLIC
            .into_iter()
            .chain([RouteClass::ShareManage])
        {
            let mut h = upstream_headers(&["public, max-age=600", "s-maxage=600"]);
            apply(&settings(true), class, &mut h);
            assert_eq!(cache_lines(&h), ["private, max-age=600"], "{class:?}");
            let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            let page = class != RouteClass::ShareManage;
            let mut want = vec!["cache-control", "content-type"];
            if page {
                want.extend(["referrer-policy", "x-robots-tag"]);
            }
            let mut names = names;
            names.sort_unstable();
            assert_eq!(names, want, "{class:?}");

            let mut h = upstream_headers(&[]);
            apply(&settings(true), class, &mut h);
            assert_eq!(cache_lines(&h), ["private"], "{class:?}");
        }
    }

    #[test]
    fn ordinary_answers_and_the_key_turned_off_are_left_alone() {
        let untouched = upstream_headers(&["public, max-age=600"]);
        let mut h = untouched.clone();
        apply(&settings(true), RouteClass::Other, &mut h);
        assert_eq!(h, untouched);
        let mut h = untouched.clone();
        apply(&settings(false), RouteClass::ShareManage, &mut h);
        assert_eq!(h, untouched);
        apply(&settings(false), RouteClass::PublicApi, &mut h);
        assert_eq!(cache_lines(&h), ["public, max-age=600"]);
        assert!(h.contains_key("cdn-cache-control"));
    }

    /// Directives as upstreams spell them, plus the separators and quotes
    /// the splitter must get right.
    fn directive() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "public",
                "PUBLIC",
                "private",
                "Private",
                "no-store",
                "NO-STORE",
                "no-cache",
                "max-age=60",
                "s-maxage=600",
                "S-MaxAge = 9",
                "must-revalidate",
                "private=\"set-cookie\"",
                "no-cache=\"a,b\"",
                "x=\"q\\\"u,o\"",
                "stale-while-revalidate=30",
                "",
                " ",
                ",",
                "\"",
                "=",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            ..crate::testing::proptest_config()
        })]

        /// Whatever the upstream sends, what leaves is private: `no-store`
        /// kept as it was, or a value that starts with `private` and holds
        /// no directive a shared cache could store by; and the output is a
        /// fixed point (merging it again changes nothing).
        #[test]
        fn whatever_the_upstream_sends_leaves_private(
            lines in proptest::collection::vec(
                proptest::collection::vec(directive(), 0..5).prop_map(|d| d.join(",")),
                1..3,
            )
        ) {
            let mut h = HeaderMap::new();
            for l in &lines {
                h.append(header::CACHE_CONTROL, HeaderValue::from_str(l).expect("visible ASCII"));
            }
            let before = h.clone();
            keep_out_of_shared_caches(&mut h);
            let out = cache_lines(&h);
            if out.len() > 1 {
                prop_assert_eq!(&h, &before);
                let all = out.join(",");
                let parts = directives(&all).unwrap_or_default();
                prop_assert!(parts.iter().any(|d| d.eq_ignore_ascii_case("no-store")), "{:?}", out);
                return Ok(());
            }
            prop_assert_eq!(out.len(), 1);
            let value = out[0].to_owned();
            let parts = directives(&value).unwrap_or_default();
            let names: Vec<String> = parts
                .iter()
                .map(|d| d.split('=').next().unwrap_or("").trim_end().to_ascii_lowercase())
                .collect();
            let no_store_kept = names.iter().zip(&parts).any(|(n, d)| n == "no-store" && !d.contains('='));
            prop_assert!(
                value.starts_with("private") || no_store_kept,
                "{:?} -> {:?}", lines, value
            );
            prop_assert!(
                !names.iter().any(|n| n == "public" || n == "s-maxage")
                    || no_store_kept,
                "{:?} -> {:?}", lines, value
            );
            let mut again = h.clone();
            keep_out_of_shared_caches(&mut again);
            prop_assert_eq!(&again, &h);
        }
    }

    #[test]
    fn an_unreadable_value_becomes_plain_private() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"public, max-age=\xff").expect("obs-text is a valid value"),
        );
        apply(&settings(true), RouteClass::PublicApi, &mut h);
        assert_eq!(cache_lines(&h), ["private"]);
    }
}
