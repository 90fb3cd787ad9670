//! The response header rewrite on arbitrary header values.
//!
//! Asserts: no panic; the count returned is the number of values that
//! changed; and, for `Location`, `Content-Location` and the URL of
//! `Refresh`, **no open redirect**: a value the rewrite changed is resolved
//! as a browser resolves it (the WHATWG URL parser of the `url` crate,
//! against a page of the private origin, after the HTML refresh steps for
//! `Refresh`) and must land on the private origin (the gateway's own
//! origin without `[rewrite]`) or on the origin the original value landed
//! on, never on a third one, and never still on a public origin. A value
//! of a header with no rule of its own that changed holds no public URL
//! the body rules would still rewrite.
//!
//! Input layout: byte 0 picks the scenario (rule set, upstream origin);
//! the rest is split at `\n` into headers, each one byte for the name and
//! the value bytes (values `HeaderValue` refuses are skipped).
#![no_main]

use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use sharegate::rewrite::{
    rewrite_all, rewrite_response_headers, Origin, RewriteOptions, Rules, UpstreamOrigin,
};
use url::Url;

const NAMES: [&str; 8] = [
    "location",
    "content-location",
    "refresh",
    "link",
    "set-cookie",
    "access-control-allow-origin",
    "content-security-policy",
    "x-next",
];

/// The gateway's own origin when there are no rules to name a private one.
const GATEWAY: &str = "https://gateway.example";

struct Scenario {
    rules: Option<Arc<Rules>>,
    upstream: Option<Uri>,
    /// The page a browser resolves a reference against.
    page: Url,
}

fn scenarios() -> &'static [Scenario] {
    static SETS: OnceLock<Vec<Scenario>> = OnceLock::new();
    SETS.get_or_init(|| {
        let rules = |from: &[&str], to: &str, skip_signed: bool| {
            let opts = RewriteOptions {
                skip_signed_urls: skip_signed,
                ..RewriteOptions::default()
            };
            Arc::new(
                Rules::new(
                    from.iter()
                        .map(|o| Origin::parse(o).expect("origin"))
                        .collect(),
                    Origin::parse(to).expect("origin"),
                    opts,
                )
                .expect("rules"),
            )
        };
        let scenario = |rules: Option<Arc<Rules>>, upstream: Option<&str>| {
            let page = match &rules {
                Some(r) => format!("{}/dir/page?q#f", r.to()),
                None => format!("{GATEWAY}/dir/page?q#f"),
            };
            Scenario {
                rules,
                upstream: upstream.map(|u| u.parse().expect("upstream")),
                page: Url::parse(&page).expect("page"),
            }
        };
        let one = rules(
            &["https://smith.langchain.com"],
            "https://smith.internal.example",
            true,
        );
        vec![
            scenario(Some(Arc::clone(&one)), Some("http://127.0.0.1:8080")),
            scenario(Some(one), None),
            scenario(None, Some("http://frontend")),
            scenario(
                Some(rules(
                    &["https://a.b", "http://[::1]:9"],
                    "http://c.d:8080",
                    false,
                )),
                Some("http://[fd00::7]:8080"),
            ),
            scenario(
                Some(rules(
                    &[
                        "https://smith.langchain.com",
                        "https://smith.langchain.com:8443",
                    ],
                    "http://10.1.2.3:8080",
                    true,
                )),
                Some("https://up.example"),
            ),
            scenario(None, Some("http://[fd00::7]:8080")),
        ]
    })
}

/// Scheme, host and port (default filled in) of where a URL lands.
type Landing = (String, Option<String>, Option<u16>);

fn landing(url: &Url) -> Landing {
    (
        url.scheme().to_owned(),
        url.host_str().map(str::to_owned),
        url.port_or_known_default(),
    )
}

fn origin_landing(o: &Origin) -> Landing {
    let url = Url::parse(&o.to_string()).expect("origin as a URL");
    landing(&url)
}

/// The URL of a `Refresh` value, by the HTML Living Standard's "shared
/// declarative refresh steps", written out here independently of the
/// gateway's reading. `None`: no refresh; `Some(None)`: the page itself.
fn refresh_url(v: &str) -> Option<Option<&str>> {
    let b = v.as_bytes();
    let ws = |c: u8| matches!(c, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ');
    let mut i = 0;
    while i < b.len() && ws(b[i]) {
        i += 1;
    }
    let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 && b.get(i) != Some(&b'.') {
        return None;
    }
    i += b[i..]
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == b'.')
        .count();
    if i >= b.len() {
        return Some(None);
    }
    if !(b[i] == b';' || b[i] == b',' || ws(b[i])) {
        return None;
    }
    while i < b.len() && ws(b[i]) {
        i += 1;
    }
    if i < b.len() && (b[i] == b';' || b[i] == b',') {
        i += 1;
    }
    while i < b.len() && ws(b[i]) {
        i += 1;
    }
    if i >= b.len() {
        return Some(None);
    }
    let whole = &v[i..];
    if b[i].eq_ignore_ascii_case(&b'u') {
        let mut j = i + 1;
        let parse_whole = || Some(Some(whole));
        if !b.get(j).is_some_and(|c| c.eq_ignore_ascii_case(&b'r')) {
            return parse_whole();
        }
        j += 1;
        if !b.get(j).is_some_and(|c| c.eq_ignore_ascii_case(&b'l')) {
            return parse_whole();
        }
        j += 1;
        while j < b.len() && ws(b[j]) {
            j += 1;
        }
        if b.get(j) != Some(&b'=') {
            return parse_whole();
        }
        j += 1;
        while j < b.len() && ws(b[j]) {
            j += 1;
        }
        i = j;
    }
    let mut s = &v[i..];
    if let Some(q @ ('"' | '\'')) = s.chars().next() {
        s = &s[1..];
        if let Some(end) = s.find(q) {
            s = &s[..end];
        }
    }
    Some(Some(s))
}

/// Where a browser goes for this value of a reference header: `None` when
/// it goes nowhere (no refresh, or a URL it cannot parse).
fn target(name: &str, value: &[u8], page: &Url) -> Option<Landing> {
    let v = String::from_utf8_lossy(value);
    let url = if name == "refresh" {
        match refresh_url(&v)? {
            None => return Some(landing(page)),
            Some(u) => page.join(u).ok()?,
        }
    } else {
        page.join(&v).ok()?
    };
    Some(landing(&url))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let all = scenarios();
    let sc = &all[usize::from(pick) % all.len()];

    let mut headers = HeaderMap::new();
    for entry in rest.split(|b| *b == b'\n').take(8) {
        let Some((&n, v)) = entry.split_first() else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(v) else {
            continue;
        };
        headers.append(
            HeaderName::from_static(NAMES[usize::from(n) % NAMES.len()]),
            value,
        );
    }
    let before = headers.clone();
    let upstream = sc
        .upstream
        .as_ref()
        .map(|u| UpstreamOrigin::new(u.scheme().expect("scheme"), u.authority().expect("host")));
    let count = rewrite_response_headers(sc.rules.as_ref(), upstream, &mut headers);

    let private = match &sc.rules {
        Some(r) => origin_landing(r.to()),
        None => landing(&Url::parse(GATEWAY).expect("gateway")),
    };
    let public: Vec<Landing> = sc
        .rules
        .iter()
        .flat_map(|r| r.from().iter().map(origin_landing))
        .collect();

    let mut changed = 0;
    for name in before.keys() {
        let olds: Vec<_> = before.get_all(name).iter().collect();
        let news: Vec<_> = headers.get_all(name).iter().collect();
        assert_eq!(olds.len(), news.len(), "{name}");
        for (old, new) in olds.into_iter().zip(news) {
            if old == new {
                continue;
            }
            changed += 1;
            let (o, n) = (old.as_bytes(), new.as_bytes());
            let show = || {
                format!(
                    "{name}:\n before: {:?}\n after:  {:?}",
                    String::from_utf8_lossy(o),
                    String::from_utf8_lossy(n)
                )
            };
            match name.as_str() {
                "location" | "content-location" | "refresh" => {
                    let was = target(name.as_str(), o, &sc.page);
                    // Only an `http(s)` landing is a navigation to a host;
                    // another scheme's authority (`web+x://...`) is opaque
                    // text, where embedded URLs are rewritten as anywhere.
                    let now = target(name.as_str(), n, &sc.page)
                        .filter(|l| matches!(l.0.as_str(), "http" | "https"));
                    if let Some(now) = now {
                        assert!(
                            now == private || Some(&now) == was.as_ref(),
                            "open redirect to {now:?} (was {was:?}), {}",
                            show()
                        );
                        assert!(
                            !public.contains(&now),
                            "still the public origin {now:?}, {}",
                            show()
                        );
                    }
                }
                "link" => {}
                _ => {
                    let rules = sc.rules.as_ref().expect("only rules change other headers");
                    assert!(
                        rewrite_all(rules, n) == n,
                        "a public URL left in a changed value, {}",
                        show()
                    );
                }
            }
        }
    }
    assert_eq!(count, changed, "count returned");
});
