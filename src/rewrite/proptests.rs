//! Property tests of the body rewriter: the output does not depend on how
//! the input is split into chunks, and equals a naive whole-buffer reference
//! written separately from the streaming code (so a shared bug in the
//! boundary rules would have to be written twice to go unseen).

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::{rewrite_all, Origin, RewriteOptions, Rules, StreamRewriter};

const FROM: [&str; 2] = [
    "https://smith.langchain.com",
    "https://smith.langchain.com:8443",
];
const TO: &str = "http://smith.internal:8080";

/// `packed`: whether the SIMD anchor search is used (else the automaton
/// fallback, which must agree).
fn rules(window: usize, packed: bool) -> Arc<Rules> {
    let mut r = Rules::new(
        FROM.iter().map(|o| Origin::parse(o).unwrap()).collect(),
        Origin::parse(TO).unwrap(),
        RewriteOptions {
            signature_lookahead: window,
            ..RewriteOptions::default()
        },
    )
    .unwrap();
    if !packed {
        r.anchors = None;
    }
    Arc::new(r)
}

/// How the reference judges a pattern's surroundings.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// With a scheme, not percent-encoded.
    Scheme,
    /// Percent-encoded: `&` ends it, a `+` before it is a space.
    Percent,
    /// `//host`: no scheme; `:`, `/`, `@` and a percent escape before it
    /// refuse it.
    Relative,
}

/// The naive reference: try every pattern at every position, longest first.
fn reference(input: &[u8], window: usize) -> Vec<u8> {
    let forms = |o: &str| -> Vec<(String, Kind)> {
        let o = Origin::parse(o).unwrap();
        let auth = o.authority();
        vec![
            (format!("{}://{}", o.scheme, auth), Kind::Scheme),
            (format!("{}:\\/\\/{}", o.scheme, auth), Kind::Scheme),
            (format!("{}:\\u002F\\u002F{}", o.scheme, auth), Kind::Scheme),
            (
                format!("{}%3A%2F%2F{}", o.scheme, auth.replace(':', "%3A")),
                Kind::Percent,
            ),
            (
                format!("{}%3A//{}", o.scheme, auth.replace(':', "%3A")),
                Kind::Percent,
            ),
            (format!("//{auth}"), Kind::Relative),
        ]
    };
    let to = forms(TO);
    let mut pats: Vec<(Vec<u8>, Vec<u8>, Kind)> = Vec::new();
    // Written out by hand: `https://smith.langchain.com` is the same origin
    // with its default port spelled out.
    let explicit = "https://smith.langchain.com:443";
    for f in FROM.iter().chain([&explicit]) {
        let spelled = if *f == explicit {
            let auth = "smith.langchain.com:443";
            vec![
                (format!("https://{auth}"), Kind::Scheme),
                (format!("https:\\/\\/{auth}"), Kind::Scheme),
                (format!("https:\\u002F\\u002F{auth}"), Kind::Scheme),
                (
                    format!("https%3A%2F%2F{}", auth.replace(':', "%3A")),
                    Kind::Percent,
                ),
                (
                    format!("https%3A//{}", auth.replace(':', "%3A")),
                    Kind::Percent,
                ),
                (format!("//{auth}"), Kind::Relative),
            ]
        } else {
            forms(f)
        };
        for ((p, kind), (r, _)) in spelled.into_iter().zip(to.iter()) {
            pats.push((p.into_bytes(), r.clone().into_bytes(), kind));
        }
    }
    pats.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    let host = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c >= 0x80;
    let word = |c: u8| c.is_ascii_alphanumeric() || b"+-._".contains(&c);
    let hex = |c: u8| c.is_ascii_hexdigit();
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let hit = pats.iter().find(|(p, _, _)| {
            input.len() - i >= p.len() && input[i..i + p.len()].eq_ignore_ascii_case(p)
        });
        let Some(&(ref p, ref r, kind)) = hit else {
            out.push(input[i]);
            i += 1;
            continue;
        };
        let e = i + p.len();
        // The text before, read backwards: an escape there ends a word.
        let back = |n: usize| i.checked_sub(n).map(|at| input[at]);
        let hex_run = |n: usize| (1..=n).all(|k| back(k).is_some_and(hex));
        let pct = kind == Kind::Percent;
        let rel = kind == Kind::Relative;
        let left_ok = match back(1) {
            None => true,
            Some(c) if rel && b":/@".contains(&c) => false,
            Some(c) if !word(c) => true,
            Some(b'+') => pct,
            Some(_) => {
                back(2) == Some(b'\\')
                    || (!rel && hex_run(2) && back(3) == Some(b'%'))
                    || (hex_run(2) && back(3) == Some(b'x') && back(4) == Some(b'\\'))
                    || (hex_run(4) && back(5) == Some(b'u') && back(6) == Some(b'\\'))
            }
        };
        let right_ok = match input.get(e) {
            None => true,
            Some(&c) if host(c) || c == b':' || c == b'@' => false,
            Some(b'.') => input.get(e + 1).is_none_or(|&c| !host(c)),
            Some(b'%') => match input.get(e + 1..e + 3) {
                Some(esc) => !["3a", "40", "2e"]
                    .iter()
                    .any(|x| esc.eq_ignore_ascii_case(x.as_bytes())),
                None => true,
            },
            Some(_) => true,
        };
        let rest = &input[e..input.len().min(e + window)];
        let mut stop = rest
            .iter()
            .position(|&c| c.is_ascii_whitespace() || b"\"'<>`".contains(&c) || (pct && c == b'&'))
            .unwrap_or(rest.len());
        // Another URL's scheme separator ends this one.
        let lower = rest.to_ascii_lowercase();
        let mut next_urls = vec!["://", ":\\/\\/", ":\\u002f\\u002f"];
        if pct {
            next_urls.extend(["%3a%2f%2f", "%3a//"]);
        }
        for sep in next_urls {
            if let Some(at) = lower.windows(sep.len()).position(|w| w == sep.as_bytes()) {
                stop = stop.min(at);
            }
        }
        let rest = String::from_utf8_lossy(&rest[..stop]).to_ascii_lowercase();
        let signed = ["x-amz-signature", "x-goog-signature", "signature", "sig"]
            .iter()
            .any(|n| {
                ["?", "&", ";", "%3f", "%26", "u0026"].iter().any(|s| {
                    rest.contains(&format!("{s}{n}=")) || rest.contains(&format!("{s}{n}%3d"))
                })
            });
        if left_ok && right_ok && !signed {
            out.extend_from_slice(r);
        } else {
            out.extend_from_slice(&input[i..e]);
        }
        i = e;
    }
    out
}

fn stream(rules: &Arc<Rules>, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut r = StreamRewriter::new(Arc::clone(rules));
    let mut out = Vec::new();
    let body = Bytes::copy_from_slice(input);
    let mut last = 0;
    for &c in cuts {
        r.push(body.slice(last..c), &mut out);
        last = c;
        assert!(
            r.carried() <= rules.max_carry(),
            "carry {} over bound",
            r.carried()
        );
    }
    r.push(body.slice(last..), &mut out);
    r.finish(&mut out);
    out.concat()
}

fn fragment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "https://smith.langchain.com",
        "HTTPS://Smith.LangChain.COM",
        "https:\\/\\/smith.langchain.com",
        "https:\\u002F\\u002Fsmith.langchain.com",
        "https:\\u002f\\u002FSmith.langchain.com:8443",
        "\\u002F",
        "https%3A%2F%2Fsmith.langchain.com",
        "https%3a%2f%2fSMITH.langchain.com",
        "https%3A//smith.langchain.com",
        "HTTPS%3a//smith.langchain.com%3A8443",
        "https%3A//smith.langchain.com%3A443",
        "%3A//",
        "//smith.langchain.com",
        "//SMITH.langchain.com:443",
        "//smith.langchain.com:8443",
        "//",
        ":",
        "u@",
        "https://smith.langchain.com:8443",
        "https%3A%2F%2Fsmith.langchain.com%3A8443",
        "https://smith.langchain.com:443",
        "https:\\/\\/smith.langchain.com:443",
        "https%3A%2F%2Fsmith.langchain.com%3A443",
        ":443",
        ":4430",
        "://",
        ",https://b.example/f",
        ":\\/\\/",
        "%3A%2F%2F",
        "\\n",
        "\\\\",
        "\\u00e9",
        "\\uFF1",
        "\\x0a",
        "\\x",
        "\\u",
        "+",
        "git",
        "a1",
        "https://smith.langchain.com.evil.example",
        "https://smith.langchain.community",
        ":8443",
        ":9",
        "%3A",
        "%2E",
        "%2F",
        "%3D",
        "?sig=",
        "&X-Amz-Signature=",
        "%26sig%3D",
        "\\u0026signature=",
        "http",
        "https:/",
        "smith.langchain.com",
        "x",
        "a",
        "é",
        ".",
        "/",
        "@",
        "\"",
        " ",
        "\n",
        "h",
        "%",
        "&",
        "=",
        "?",
    ])
}

fn body(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(fragment(), 0..max).prop_map(|v| v.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..crate::testing::proptest_config() })]

    #[test]
    fn every_split_point(input in body(12), window in prop::sample::select(vec![8usize, 2048]), packed: bool) {
        let r = rules(window, packed);
        let whole = rewrite_all(&r, &input);
        prop_assert_eq!(&whole, &reference(&input, window));
        for cut in 0..=input.len() {
            prop_assert_eq!(&stream(&r, &input, &[cut]), &whole, "cut {}", cut);
        }
        // One byte at a time: every boundary is a chunk boundary.
        let all: Vec<usize> = (1..input.len()).collect();
        prop_assert_eq!(&stream(&r, &input, &all), &whole);
    }

    #[test]
    fn random_splits_of_large_bodies(
        input in body(600),
        sizes in prop::collection::vec(1usize..300, 1..50),
        window in prop::sample::select(vec![8usize, 64, 2048]),
        packed: bool,
    ) {
        let r = rules(window, packed);
        let whole = rewrite_all(&r, &input);
        prop_assert_eq!(&whole, &reference(&input, window));
        let mut cuts = Vec::new();
        let mut at = 0;
        for s in sizes.iter().cycle() {
            at += s;
            if at >= input.len() { break; }
            cuts.push(at);
        }
        prop_assert_eq!(&stream(&r, &input, &cuts), &whole);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..crate::testing::proptest_config() })]

    #[test]
    fn every_pair_of_split_points(input in body(6)) {
        let r = rules(2048, true);
        let whole = rewrite_all(&r, &input);
        for a in 0..=input.len() {
            for b in a..=input.len() {
                prop_assert_eq!(&stream(&r, &input, &[a, b]), &whole, "cuts {} {}", a, b);
            }
        }
    }
}

#[test]
fn reference_rewrites_what_it_should() {
    assert_eq!(
        reference(
            b"a https://smith.langchain.com/x https:\\/\\/smith.langchain.com:8443 b",
            2048
        ),
        b"a http://smith.internal:8080/x http:\\/\\/smith.internal:8080 b"
    );
    assert_eq!(
        reference(
            b"https://smith.langchain.com/x?sig=1 https://smith.langchain.com.evil",
            2048
        ),
        b"https://smith.langchain.com/x?sig=1 https://smith.langchain.com.evil"
    );
}
