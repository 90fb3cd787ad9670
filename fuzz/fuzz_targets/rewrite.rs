//! The streaming body rewriter on arbitrary bytes split at arbitrary points.
//!
//! Asserts: no panic; the concatenated output of `StreamRewriter` fed the
//! chunks equals `rewrite::rewrite_all` on the whole input (the rewrite does
//! not depend on where the network cut the body); and what it holds back
//! between chunks stays within the longest pattern plus the signature
//! lookahead (bounded memory).
//!
//! Input layout: byte 0 picks the rule set; bytes 1..5 are two split points
//! (u16 each, taken modulo the body length + 1); the rest is the body.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sharegate::rewrite::{rewrite_all, Origin, RewriteOptions, Rules, StreamRewriter};

/// Longer than every pattern these rule sets compile (the percent form of
/// `https://smith.langchain.com:8443` is 39 bytes), plus boundary bytes.
const PATTERN_SLACK: usize = 64;

/// (rules, signature lookahead window) per selector.
fn rule_sets() -> &'static [(Arc<Rules>, usize); 3] {
    static SETS: OnceLock<[(Arc<Rules>, usize); 3]> = OnceLock::new();
    SETS.get_or_init(|| {
        let build = |from: &[&str], to: &str, skip_signed: bool, window: usize| {
            let opts = RewriteOptions {
                skip_signed_urls: skip_signed,
                signature_lookahead: window,
                ..RewriteOptions::default()
            };
            let rules = Rules::new(
                from.iter()
                    .map(|o| Origin::parse(o).expect("origin"))
                    .collect(),
                Origin::parse(to).expect("origin"),
                opts,
            )
            .expect("rules");
            (Arc::new(rules), if skip_signed { window.max(3) } else { 3 })
        };
        [
            // Same host with and without a port: nested patterns.
            build(
                &[
                    "https://smith.langchain.com",
                    "https://smith.langchain.com:8443",
                ],
                "http://smith.internal:8080",
                true,
                24,
            ),
            build(
                &["https://smith.langchain.com"],
                "https://smith.internal.example",
                true,
                2048,
            ),
            build(&["http://[::1]:9", "https://a.b"], "https://c.d", false, 0),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let sets = rule_sets();
    let (rules, window) = &sets[usize::from(data[0]) % sets.len()];
    let body = Bytes::copy_from_slice(&data[5..]);
    let at = |i: usize| usize::from(u16::from_le_bytes([data[i], data[i + 1]])) % (body.len() + 1);
    let mut cuts = [at(1), at(3)];
    cuts.sort_unstable();

    let whole = rewrite_all(rules, &body);

    let mut r = StreamRewriter::new(Arc::clone(rules));
    let mut out = Vec::new();
    let mut last = 0;
    for cut in cuts.into_iter().chain([body.len()]) {
        r.push(body.slice(last..cut), &mut out);
        last = cut;
        assert!(
            r.carried() <= PATTERN_SLACK + window,
            "holds {} bytes across chunks (window {window})",
            r.carried()
        );
    }
    r.finish(&mut out);
    let streamed = out.concat();
    assert!(
        streamed == whole,
        "chunking changed the output at cuts {cuts:?}:\n whole:    {:?}\n streamed: {:?}",
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&streamed)
    );
});
