//! The streaming matcher and replacer for body bytes.
//!
//! This file owns [`StreamRewriter`]: it takes a body as a sequence of chunks
//! and emits the same bytes with every public origin (plain, JSON-escaped and
//! percent-encoded forms) replaced by the private one, finding matches that
//! straddle chunk boundaries. It knows nothing of HTTP, content types or
//! compression (see `response.rs` and `codec.rs`).
//!
//! Matching rules, in order:
//! 1. The pattern (`scheme://host[:port]` in each spelling `Form` lists; an
//!    origin without a port also with its scheme's default port spelled out,
//!    the same origin) matches ASCII-case-insensitively.
//! 2. Left boundary: the byte before the scheme must not continue a scheme or
//!    a word (`A-Z a-z 0-9 + - . _`), so `xhttps://…` and `git+https://…` stay
//!    untouched. Exceptions, where that byte ends an escape rather than a
//!    word: a backslash escape (`\n`, `\t`, `\xHH`, `\uHHHH`: JSON and
//!    JavaScript strings), a percent escape (`next%3Dhttps%3A%2F%2F…`) and,
//!    before a percent-encoded form, a `+` (a form-encoded space). A
//!    scheme-relative `//host` must not follow `:`, `/`, `@` or a percent
//!    escape either: `http://host` is another origin when the public one is
//!    `https://host`.
//! 3. Right boundary: the byte after the host must not continue the host or
//!    start a port or user info: a letter, digit, `-`, `_`, `:`, `@`, a
//!    non-ASCII byte, `%3A`, `%40` or `%2E` all refuse the match; a `.` refuses
//!    only when a host character follows it (so the dot that ends a sentence
//!    does not), and the end of the body accepts.
//! 4. Signed URLs (when enabled): the rest of the URL, up to whitespace, a
//!    quote, `<`, `>` or a backtick (and, for the percent forms, `&`), or the
//!    `://` (in any of the pattern spellings) that begins another URL, at most
//!    `signature_lookahead` bytes, is searched for a signature parameter; if
//!    one is there the URL is left alone. A URL longer than the window is
//!    judged on the window only (the product wants public links rewritten; a
//!    signature hidden past 2 KiB is the rare case that loses).
//!
//! Memory: between chunks only the bytes that might still be the start of a
//! match are kept (at most the longest pattern plus the lookahead window).
//! A chunk with no match and no possible partial match at its end is passed
//! on as a slice of the input `Bytes`, without copying.

use std::sync::Arc;

use bytes::Bytes;

use super::{Form, Rules};

/// Signature query parameters of the blob stores and CDNs that sign URLs
/// (S3 SigV4, GCS V4, CloudFront / OSS `Signature`, Azure SAS `sig`).
/// Compared case-insensitively.
const SIGNATURE_PARAMS: [&[u8]; 4] = [
    b"x-amz-signature",
    b"x-goog-signature",
    b"signature",
    b"sig",
];

/// How many bytes before a match the left boundary reads: a `\uHHHH`
/// escape.
const LOOK_BEHIND: usize = 6;

/// Streaming origin rewriter for one body.
///
/// Feed chunks with [`push`](Self::push), then call [`finish`](Self::finish)
/// once at the end of the body. Output is appended to `out` as `Bytes`
/// segments; concatenated, they are the rewritten body.
#[derive(Debug)]
pub struct StreamRewriter {
    rules: Arc<Rules>,
    /// Undecided input: bytes that may begin a match.
    carry: Vec<u8>,
    /// The last (up to [`LOOK_BEHIND`]) input bytes before `carry`, for the
    /// left boundary.
    prev: [u8; LOOK_BEHIND],
    prev_len: usize,
    matches: u64,
}

enum Decision {
    Rewrite,
    Skip,
    NeedMore,
}

impl StreamRewriter {
    pub fn new(rules: Arc<Rules>) -> Self {
        StreamRewriter {
            rules,
            carry: Vec::new(),
            prev: [0; LOOK_BEHIND],
            prev_len: 0,
            matches: 0,
        }
    }

    /// Origins replaced so far.
    pub fn matches(&self) -> u64 {
        self.matches
    }

    /// Bytes held back, waiting for the next chunk.
    pub fn carried(&self) -> usize {
        self.carry.len()
    }

    /// Rewrites one chunk. Everything that can be decided is emitted now; only
    /// a possible match start (and its lookahead) is held for the next chunk.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        if chunk.is_empty() {
            return;
        }
        if self.carry.is_empty() {
            let n = self.scan(&chunk, false, out);
            self.carry.extend_from_slice(&chunk[n..]);
            return;
        }
        // Join the carry with just enough of the chunk to decide every match
        // that starts in the carry; the rest of the chunk is then scanned in
        // place, without copying it.
        let carry_len = self.carry.len();
        let take = chunk.len().min(self.rules.max_carry());
        let mut joined = std::mem::take(&mut self.carry);
        joined.extend_from_slice(&chunk[..take]);
        let joined = Bytes::from(joined);
        let n = self.scan(&joined, false, out);
        if take == chunk.len() || n < carry_len {
            self.carry.extend_from_slice(&joined[n..]);
            self.carry.extend_from_slice(&chunk[take..]);
            return;
        }
        let rest = chunk.slice(n - carry_len..);
        let m = self.scan(&rest, false, out);
        self.carry.extend_from_slice(&rest[m..]);
    }

    /// Rewrites a borrowed chunk (copies it once; prefer [`push`](Self::push)).
    pub fn push_slice(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) {
        self.push(Bytes::copy_from_slice(chunk), out);
    }

    /// Rewrites the body's last chunk and ends it: [`push`](Self::push)
    /// then [`finish`](Self::finish), in one pass when nothing is held back
    /// (the whole of a small body), with nothing left to wait for.
    pub fn push_last(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        if !self.carry.is_empty() {
            self.push(chunk, out);
            return self.finish(out);
        }
        let n = self.scan(&chunk, true, out);
        if n < chunk.len() {
            // `scan` decides everything at end of input; kept for robustness.
            out.push(chunk.slice(n..));
        }
    }

    /// Ends the body: decides what was held back, as at the end of input.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        let rest = Bytes::from(std::mem::take(&mut self.carry));
        let n = self.scan(&rest, true, out);
        if n < rest.len() {
            // `scan` decides everything at end of input; kept for robustness.
            out.push(rest.slice(n..));
        }
    }

    /// Scans `buf`, emits what is decided and returns how many bytes of `buf`
    /// that covers; the caller keeps the remainder.
    fn scan(&mut self, buf: &Bytes, eof: bool, out: &mut Vec<Bytes>) -> usize {
        let rules = &*self.rules;
        let hay: &[u8] = buf;
        let mut emitted = 0;
        let mut pos = 0;
        let mut held = None;
        while pos < hay.len() {
            let Some((start, end, pattern)) = rules.find(hay, pos) else {
                break;
            };
            match self.decide(hay, start, end, pattern, eof) {
                Decision::Rewrite => {
                    if start > emitted {
                        out.push(buf.slice(emitted..start));
                    }
                    out.push(rules.patterns[pattern].replacement.clone());
                    self.matches += 1;
                    emitted = end;
                    pos = end;
                }
                Decision::Skip => pos = end,
                Decision::NeedMore => {
                    held = Some(start);
                    break;
                }
            }
        }
        let keep_from = match held {
            Some(start) => start,
            None if eof => hay.len(),
            None => self.partial_start(hay, pos.max(emitted)),
        };
        if keep_from > emitted {
            out.push(buf.slice(emitted..keep_from));
        }
        self.remember_prev(&hay[..keep_from]);
        keep_from
    }

    /// Keeps the last [`LOOK_BEHIND`] bytes of what was consumed so far:
    /// the older ones that still fit, then the newest of `consumed`. Runs
    /// once per scanned buffer, so it moves the bytes at once rather than
    /// one at a time.
    fn remember_prev(&mut self, consumed: &[u8]) {
        let new = consumed.len().min(LOOK_BEHIND);
        let old = self.prev_len.min(LOOK_BEHIND - new);
        self.prev.copy_within(self.prev_len - old..self.prev_len, 0);
        self.prev[old..old + new].copy_from_slice(&consumed[consumed.len() - new..]);
        self.prev_len = old + new;
    }

    /// Byte `back` positions before `at` in `hay`, looking into the bytes
    /// consumed before `hay` when needed.
    fn byte_before(&self, hay: &[u8], at: usize, back: usize) -> Option<u8> {
        if back <= at {
            Some(hay[at - back])
        } else {
            let into_prev = back - at;
            (into_prev <= self.prev_len).then(|| self.prev[self.prev_len - into_prev])
        }
    }

    /// Where the longest suffix of `hay[from..]` that is a proper prefix of a
    /// pattern begins (`hay.len()` when there is none).
    fn partial_start(&self, hay: &[u8], from: usize) -> usize {
        let rules = &*self.rules;
        let lo = from.max(
            hay.len()
                .saturating_sub(rules.max_pattern_len.saturating_sub(1)),
        );
        for i in lo..hay.len() {
            // Most positions fail on their first byte: check that first.
            if !rules.first_bytes[usize::from(hay[i])] {
                continue;
            }
            let tail = &hay[i..];
            let is_prefix = rules.patterns.iter().any(|p| {
                p.lower.len() > tail.len() && p.lower[..tail.len()].eq_ignore_ascii_case(tail)
            });
            if is_prefix {
                return i;
            }
        }
        hay.len()
    }

    fn decide(&self, hay: &[u8], start: usize, end: usize, pattern: usize, eof: bool) -> Decision {
        let rules = &*self.rules;
        // A shorter pattern matched at the end of the buffer may be the start
        // of a longer one (the same host with a port) still to come.
        if !eof && rules.nested_patterns && hay.len() - start < rules.max_pattern_len {
            let tail = &hay[start..];
            let grows = rules.patterns.iter().any(|p| {
                p.lower.len() > tail.len() && p.lower[..tail.len()].eq_ignore_ascii_case(tail)
            });
            if grows {
                return Decision::NeedMore;
            }
        }
        if !self.left_boundary_ok(hay, start, rules.patterns[pattern].form) {
            return Decision::Skip;
        }
        match right_boundary(&hay[end..], eof) {
            Decision::Rewrite => {}
            other => return other,
        }
        if rules.opts.skip_signed_urls {
            let form = rules.patterns[pattern].form;
            return signature_check(&hay[end..], form, rules.opts.signature_lookahead, eof);
        }
        Decision::Rewrite
    }

    /// Whether the match at `start` begins a URL rather than continuing a
    /// word before it.
    ///
    /// A byte that can continue a scheme (RFC 3986 §3.1: letters, digits,
    /// `+ - .`; and `_`) right before the match makes it part of a longer
    /// scheme (`git+https://`, `svn+https://`, `web+https://`) or of a word:
    /// not the configured origin, whose scheme is part of what it is
    /// (RFC 6454 §4), so the rewrite does not touch bytes it cannot vouch
    /// for. Such a byte begins no URL in the spellings the patterns have
    /// except where it ends an escape, which ends the text before it:
    /// - a backslash escape: one character after a backslash (JSON's
    ///   `\n \r \t \b \f`, JavaScript's `\v \0`; `\/ \" \\` end in a
    ///   delimiter anyway), `\uHHHH` (JSON, and what an ASCII-only encoder
    ///   writes for a character right before the URL) and `\xHH`
    ///   (JavaScript).
    ///   The backslash itself may be escaped (`\\n`: a backslash, then a
    ///   letter): telling that apart would take counting backslashes as far
    ///   back as they go, which a bounded carry cannot; rewriting a URL of
    ///   the public host there is harmless, leaving the public origin where
    ///   a reader sees a URL is not;
    /// - a percent escape (`next%3Dhttps%3A%2F%2F…`, a URL in a query value);
    /// - a `+` before a percent-encoded form: a form-encoded space
    ///   (`body=See+https%3A%2F%2F…`), since in such text a scheme's own `+`
    ///   is written `%2B`.
    ///
    /// A scheme-relative match (`//host`) has more to refuse: after `:` it
    /// is the rest of an absolute URL whose scheme is not the configured one
    /// (`http://host` when the public origin is `https://host`, which would
    /// have matched first), after `/` or `@` part of a path or user info, and
    /// after a percent escape a percent-encoded URL's (`http%3A//host`).
    fn left_boundary_ok(&self, hay: &[u8], start: usize, form: Form) -> bool {
        let before = |back| self.byte_before(hay, start, back);
        let Some(b) = before(1) else {
            return true;
        };
        let scheme_relative = form == Form::SchemeRelative;
        if scheme_relative && matches!(b, b':' | b'/' | b'@') {
            return false;
        }
        if !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_')) {
            return true;
        }
        if b == b'+' {
            return form.is_percent_encoded();
        }
        let hex =
            |back: usize| (1..=back).all(|i| before(i).is_some_and(|h| h.is_ascii_hexdigit()));
        before(2) == Some(b'\\')
            || (hex(2) && before(3) == Some(b'%') && !scheme_relative)
            || (hex(2) && before(3) == Some(b'x') && before(4) == Some(b'\\'))
            || (hex(4) && before(5) == Some(b'u') && before(6) == Some(b'\\'))
    }
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80
}

fn right_boundary(after: &[u8], eof: bool) -> Decision {
    let need = |n: usize| {
        if after.len() >= n {
            None
        } else if eof {
            Some(Decision::Rewrite)
        } else {
            Some(Decision::NeedMore)
        }
    };
    if let Some(d) = need(1) {
        return d;
    }
    match after[0] {
        b if is_host_byte(b) => Decision::Skip,
        b':' | b'@' => Decision::Skip,
        b'.' => {
            if let Some(d) = need(2) {
                return d;
            }
            if is_host_byte(after[1]) {
                Decision::Skip
            } else {
                Decision::Rewrite
            }
        }
        b'%' => {
            if let Some(d) = need(3) {
                return d;
            }
            let esc = [after[1].to_ascii_uppercase(), after[2].to_ascii_uppercase()];
            if matches!(&esc, b"3A" | b"40" | b"2E") {
                Decision::Skip
            } else {
                Decision::Rewrite
            }
        }
        _ => Decision::Rewrite,
    }
}

/// A byte-membership table, built at compile time.
const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}

fn ends_url(b: u8, form: Form) -> bool {
    // One table lookup per byte: this runs over the rest of every matched
    // URL, on every response.
    const ENDS: [bool; 256] = byte_set(b" \t\n\x0c\r\"'<>`");
    ENDS[usize::from(b)] || (b == b'&' && form.is_percent_encoded())
}

/// Looks at the rest of the URL after the origin for a signature parameter.
///
/// One pass over the rest of the URL that stops at its end, at a signature,
/// or at the window: this runs over every matched URL on every response, and
/// most bytes are neither a URL end nor the start of a parameter separator
/// (one table lookup each). Stopping at a signature before the end is in
/// sight decides as waiting for the end would: a signature parameter holds
/// no byte that ends a URL, so it stays inside the URL whatever follows.
fn signature_check(after: &[u8], form: Form, window: usize, eof: bool) -> Decision {
    // Bytes that end a URL, can begin a parameter separator, or can begin
    // the scheme separator of the next URL.
    const NOTABLE: [bool; 256] = byte_set(b" \t\n\x0c\r\"'<>`?&;%uU:");
    let url = &after[..after.len().min(window)];
    let mut i = 0;
    while i < url.len() {
        let b = url[i];
        if !NOTABLE[usize::from(b)] {
            i += 1;
            continue;
        }
        if ends_url(b, form) {
            return Decision::Rewrite;
        }
        // Another URL begins (`a/r,https://b/f?sig=...`, a markdown table):
        // what follows is its query, not this URL's.
        if b == b':' || (b == b'%' && form.is_percent_encoded()) {
            match next_url_begins(url, i, form) {
                Some(true) => return Decision::Rewrite,
                None if url.len() < window && !eof => return Decision::NeedMore,
                _ => {}
            }
        }
        match separator_end(url, i) {
            Some(name_start) if names_signature(&url[name_start..]) => return Decision::Skip,
            Some(name_start) => i = name_start,
            None => i += 1,
        }
    }
    if url.len() == window || eof {
        Decision::Rewrite
    } else {
        Decision::NeedMore
    }
}

/// The scheme separators that begin another URL, in the spellings the
/// patterns have (the percent-encoded ones only inside a percent-encoded
/// URL, where they cannot be a value of this URL's own query).
const NEXT_URL: [&[u8]; 3] = [b"://", b":\\/\\/", b":\\u002f\\u002f"];
const NEXT_URL_PERCENT: [&[u8]; 2] = [b"%3a%2f%2f", b"%3a//"];

/// Whether the scheme separator of another URL begins at `i`; `None` when
/// `url` ends inside what could still be one.
fn next_url_begins(url: &[u8], i: usize, form: Form) -> Option<bool> {
    let here = &url[i..];
    let mut undecided = false;
    let candidates: &[&[u8]] = match url[i] {
        b':' => &NEXT_URL,
        b'%' if form.is_percent_encoded() => &NEXT_URL_PERCENT,
        _ => return Some(false),
    };
    for sep in candidates {
        if here.len() >= sep.len() {
            if here[..sep.len()].eq_ignore_ascii_case(sep) {
                return Some(true);
            }
        } else if sep[..here.len()].eq_ignore_ascii_case(here) {
            undecided = true;
        }
    }
    (!undecided).then_some(false)
}

/// Where a parameter name starts when a separator (`?`, `&`, `;`, or their
/// escaped spellings `%3F`, `%26`, `\u0026`) begins at `i`.
fn separator_end(url: &[u8], i: usize) -> Option<usize> {
    match url[i] {
        b'?' | b'&' | b';' => Some(i + 1),
        b'%' if url.len() >= i + 3
            && (url[i + 1..i + 3].eq_ignore_ascii_case(b"3F")
                || url[i + 1..i + 3].eq_ignore_ascii_case(b"26")) =>
        {
            Some(i + 3)
        }
        b'u' | b'U' if url.len() >= i + 5 && url[i + 1..i + 5] == *b"0026" => Some(i + 5),
        _ => None,
    }
}

/// Whether a signature parameter's name (any case) starts `name_area`,
/// followed by `=` or `%3D`.
fn names_signature(name_area: &[u8]) -> bool {
    SIGNATURE_PARAMS.iter().any(|p| {
        name_area.len() > p.len()
            && name_area[..p.len()].eq_ignore_ascii_case(p)
            && (name_area[p.len()] == b'='
                || name_area[p.len()..].len() >= 3
                    && name_area[p.len()..p.len() + 3].eq_ignore_ascii_case(b"%3D"))
    })
}

/// A whole-buffer rewrite with the same rules: the reference the streaming
/// property tests compare against, and a convenience for small bodies.
pub fn rewrite_all(rules: &Arc<Rules>, input: &[u8]) -> Vec<u8> {
    let mut r = StreamRewriter::new(Arc::clone(rules));
    let mut out = Vec::new();
    r.push_slice(input, &mut out);
    r.finish(&mut out);
    out.concat()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rewrite::{Origin, RewriteOptions};

    #[test]
    fn a_url_ends_at_whitespace_quotes_and_angle_brackets() {
        for form in crate::rewrite::FORMS {
            for b in 0..=255u8 {
                let expected = b.is_ascii_whitespace()
                    || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`')
                    || (form.is_percent_encoded() && b == b'&');
                assert_eq!(ends_url(b, form), expected, "{b:#x} in {form:?}");
            }
        }
    }

    pub(crate) fn rules() -> Arc<Rules> {
        rules_with(RewriteOptions::default())
    }

    pub(crate) fn rules_with(opts: RewriteOptions) -> Arc<Rules> {
        Arc::new(
            Rules::new(
                vec![Origin::parse("https://smith.langchain.com").unwrap()],
                Origin::parse("https://smith.internal.example").unwrap(),
                opts,
            )
            .unwrap(),
        )
    }

    fn rw(input: &str) -> String {
        String::from_utf8(rewrite_all(&rules(), input.as_bytes())).unwrap()
    }

    #[test]
    fn plain_escaped_and_encoded_forms() {
        assert_eq!(
            rw(r#"{"share_url":"https://smith.langchain.com/public/t/r"}"#),
            r#"{"share_url":"https://smith.internal.example/public/t/r"}"#
        );
        assert_eq!(
            rw(r#"{"u":"https:\/\/smith.langchain.com\/public\/t\/r"}"#),
            r#"{"u":"https:\/\/smith.internal.example\/public\/t\/r"}"#
        );
        assert_eq!(
            rw("/login?next=https%3A%2F%2Fsmith.langchain.com%2Fpublic"),
            "/login?next=https%3A%2F%2Fsmith.internal.example%2Fpublic"
        );
        assert_eq!(
            rw("next=HTTPS%3a%2f%2fSMITH.langchain.com%2Fx"),
            "next=https%3A%2F%2Fsmith.internal.example%2Fx"
        );
        // `urllib.parse.quote(url)`: only the colon is encoded.
        assert_eq!(
            rw("/login?next=https%3A//smith.langchain.com/public/t/r&x=1"),
            "/login?next=https%3A//smith.internal.example/public/t/r&x=1"
        );
        assert_eq!(
            rw("next=Https%3a//Smith.LangChain.com"),
            "next=https%3A//smith.internal.example"
        );
    }

    #[test]
    fn case_insensitive_scheme_and_host() {
        assert_eq!(
            rw("HTTPS://Smith.LangChain.COM/x"),
            "https://smith.internal.example/x"
        );
    }

    #[test]
    fn host_boundary_refuses_lookalikes() {
        for s in [
            "https://smith.langchain.com.evil.example/x",
            "https://smith.langchain.community/x",
            "https://smith.langchain.com:8443/x",
            "https://smith.langchain.com@evil.example/",
            "https://smith.langchain.com-evil.example/",
            "https://smith.langchain.com_x/",
            "https%3A%2F%2Fsmith.langchain.com%3A8443",
            "https%3A%2F%2Fsmith.langchain.com%40evil.example",
            "https%3A%2F%2Fsmith.langchain.com%2Eevil.example",
            "https%3A//smith.langchain.com%3A8443/x",
            "https%3A//smith.langchain.com.evil.example/x",
            "http%3A//smith.langchain.com/x",
            "https://smith.langchain.comé",
            "http://smith.langchain.com/x",
        ] {
            assert_eq!(rw(s), s, "{s}");
        }
    }

    #[test]
    fn host_boundary_accepts_delimiters() {
        for after in [
            "/", "?", "#", "\"", "'", " ", "\n", "<", ">", "\\", "%2F", ")", ",", "", ". Next", ".",
        ] {
            let input = format!("https://smith.langchain.com{after}");
            assert_eq!(
                rw(&input),
                format!("https://smith.internal.example{after}"),
                "{after:?}"
            );
        }
    }

    #[test]
    fn left_boundary() {
        for s in [
            "xhttps://smith.langchain.com/",
            "git+https://smith.langchain.com/",
            "1https://smith.langchain.com",
            "a.https://smith.langchain.com",
            // Not escapes: `\x` and `\u` need all their hex digits.
            r"\x0https://smith.langchain.com",
            r"\u0ahttps://smith.langchain.com",
            r"\u00ghttps://smith.langchain.com",
            "%3https://smith.langchain.com",
        ] {
            assert_eq!(rw(s), s);
        }
        for (before, s) in [
            ("(", "https://smith.langchain.com)"),
            ("=", "https://smith.langchain.com"),
            ("a%3D", "https%3A%2F%2Fsmith.langchain.com%2F"),
        ] {
            assert_eq!(
                rw(&format!("{before}{s}")),
                format!(
                    "{before}{}",
                    s.replace("smith.langchain.com", "smith.internal.example")
                )
            );
        }
    }

    #[test]
    fn a_url_right_after_an_escape_is_rewritten() {
        for (before, url) in [
            (r#""Trace:\n"#, "https://smith.langchain.com/public/t/r"),
            (r#""Trace:\r\n"#, "https://smith.langchain.com/public/t/r"),
            (r#""url\t"#, "https://smith.langchain.com/public/t/r"),
            (r#""\b\f"#, "https://smith.langchain.com"),
            (
                r#""\u94fe\u63a5\uff1a"#,
                "https://smith.langchain.com/public/t/r",
            ),
            (r#""\u00E9"#, "https://smith.langchain.com"),
            (r#""Trace:\n"#, r"https:\/\/smith.langchain.com\/public"),
            (r#""Trace:\n"#, r"https:\u002F\u002Fsmith.langchain.com"),
            (r#"'\x0a"#, "https://smith.langchain.com"),
            // An escaped backslash, then a letter: rewritten all the same.
            (r#""C:\\n"#, "https://smith.langchain.com"),
            (
                "mailto:?body=See+",
                "https%3A%2F%2Fsmith.langchain.com%2Fpublic",
            ),
            ("body=See%20", "https%3A%2F%2Fsmith.langchain.com%2Fpublic"),
        ] {
            let input = format!("{before}{url}");
            assert_eq!(
                rw(&input),
                input.replace("smith.langchain.com", "smith.internal.example"),
                "{input}"
            );
        }
        // A `+` before a plain URL is part of its scheme.
        assert_eq!(
            rw("See+https://smith.langchain.com"),
            "See+https://smith.langchain.com"
        );
    }

    #[test]
    fn an_escape_before_the_url_is_seen_across_chunks() {
        let r = rules();
        let input = r#""a\u00e9https://smith.langchain.com/x" "b\nhttps://smith.langchain.com""#;
        let want = input.replace("smith.langchain.com", "smith.internal.example");
        for split in 0..=input.len() {
            let mut s = StreamRewriter::new(Arc::clone(&r));
            let mut out = Vec::new();
            s.push_slice(&input.as_bytes()[..split], &mut out);
            s.push_slice(&input.as_bytes()[split..], &mut out);
            s.finish(&mut out);
            assert_eq!(
                String::from_utf8(out.concat()).unwrap(),
                want,
                "split {split}"
            );
        }
    }

    #[test]
    fn scheme_relative_urls() {
        for (input, want) in [
            (
                r#"<link rel=preconnect href="//smith.langchain.com">"#,
                r#"<link rel=preconnect href="//smith.internal.example">"#,
            ),
            (
                "<a href='//Smith.LangChain.com/public/t/r'>",
                "<a href='//smith.internal.example/public/t/r'>",
            ),
            (
                "url(//smith.langchain.com/a.png)",
                "url(//smith.internal.example/a.png)",
            ),
            (
                "href=//smith.langchain.com:443/x",
                "href=//smith.internal.example/x",
            ),
            (
                "?next=//smith.langchain.com/x",
                "?next=//smith.internal.example/x",
            ),
            ("//smith.langchain.com", "//smith.internal.example"),
            ("\\n//smith.langchain.com", "\\n//smith.internal.example"),
        ] {
            assert_eq!(rw(input), want, "{input}");
        }
        for s in [
            // Another scheme is another origin.
            "http://smith.langchain.com/x",
            "ftp://smith.langchain.com/x",
            "http%3A//smith.langchain.com/x",
            // A path, user info, a longer word.
            "/a///smith.langchain.com/x",
            "u@//smith.langchain.com",
            "a//smith.langchain.com",
            "+//smith.langchain.com",
            // Host boundaries as for the other forms.
            "//smith.langchain.com.evil.example/x",
            "//smith.langchain.com:8443/x",
            "//smith.langchain.com@evil.example/",
            "//smith.langchain.com/blob?sig=1",
        ] {
            assert_eq!(rw(s), s, "{s}");
        }
        // The absolute spelling is still the match, not the `//host` in it.
        assert_eq!(
            rw("https://smith.langchain.com:443/x //smith.langchain.com"),
            "https://smith.internal.example/x //smith.internal.example"
        );
        // `http` and `https` origins of one host share `//host`; each has
        // its own default port.
        let r = Arc::new(
            Rules::new(
                vec![
                    Origin::parse("https://smith.langchain.com").unwrap(),
                    Origin::parse("http://smith.langchain.com").unwrap(),
                ],
                Origin::parse("http://10.0.0.5:8080").unwrap(),
                RewriteOptions::default(),
            )
            .unwrap(),
        );
        let out = rewrite_all(
            &r,
            b"//smith.langchain.com //smith.langchain.com:80/a //smith.langchain.com:443/b",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "//10.0.0.5:8080 //10.0.0.5:8080/a //10.0.0.5:8080/b"
        );
        // The same authority under another scheme maps to itself: not a
        // pattern at all.
        let r = Arc::new(
            Rules::new(
                vec![Origin::parse("http://smith.langchain.com").unwrap()],
                Origin::parse("https://smith.langchain.com").unwrap(),
                RewriteOptions::default(),
            )
            .unwrap(),
        );
        let mut s = StreamRewriter::new(Arc::clone(&r));
        let mut out = Vec::new();
        s.push_last(
            Bytes::from_static(b"<a href=//smith.langchain.com/x>"),
            &mut out,
        );
        assert_eq!(s.matches(), 0);
    }

    #[test]
    fn ports_match_exactly() {
        let r = Arc::new(
            Rules::new(
                vec![
                    Origin::parse("https://smith.langchain.com").unwrap(),
                    Origin::parse("https://smith.langchain.com:8443").unwrap(),
                ],
                Origin::parse("http://10.0.0.5:8080").unwrap(),
                RewriteOptions::default(),
            )
            .unwrap(),
        );
        let out = rewrite_all(&r, b"https://smith.langchain.com:8443/a https://smith.langchain.com/b https://smith.langchain.com:9/c");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "http://10.0.0.5:8080/a http://10.0.0.5:8080/b https://smith.langchain.com:9/c"
        );
        let out = rewrite_all(&r, b"https%3A%2F%2Fsmith.langchain.com%3A8443%2F");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "http%3A%2F%2F10.0.0.5%3A8080%2F"
        );
        // Split right after the short pattern: the long one must still win.
        let mut s = StreamRewriter::new(Arc::clone(&r));
        let mut out = Vec::new();
        s.push_slice(b"x https://smith.langchain.com", &mut out);
        s.push_slice(b":8443/a", &mut out);
        s.finish(&mut out);
        assert_eq!(out.concat(), b"x http://10.0.0.5:8080/a");
    }

    #[test]
    fn signed_urls_left_alone() {
        for s in [
            "https://smith.langchain.com/blob?X-Amz-Algorithm=A&X-Amz-Signature=abc",
            "https://smith.langchain.com/blob?x-goog-signature=abc",
            "https://smith.langchain.com/b?se=2030&sp=r&sig=abc%3D",
            "https://smith.langchain.com/b?Expires=1&Signature=abc&Key-Pair-Id=K",
            r#""https:\/\/smith.langchain.com\/b?a=1\u0026sig=x""#,
            "https%3A%2F%2Fsmith.langchain.com%2Fb%3Fa%3D1%26X-Amz-Signature%3Dabc&next=1",
            "https%3A//smith.langchain.com/b%3Fa%3D1%26sig%3Dabc&next=1",
        ] {
            assert_eq!(rw(s), s, "{s}");
        }
        // The signature belongs to a later URL, not this one.
        assert_eq!(
            rw(
                r#"{"a":"https://smith.langchain.com/x","b":"https://s3.example/o?X-Amz-Signature=1"}"#
            ),
            r#"{"a":"https://smith.internal.example/x","b":"https://s3.example/o?X-Amz-Signature=1"}"#
        );
        // The same in the form that keeps `/`: the signed URL is the next one.
        assert_eq!(
            rw("u=https%3A//smith.langchain.com/x%2Chttps%3A//s3.example/o%3Fsig%3D1"),
            "u=https%3A//smith.internal.example/x%2Chttps%3A//s3.example/o%3Fsig%3D1"
        );
        // A parameter merely containing "sig" is not a signature.
        assert_eq!(
            rw("https://smith.langchain.com/x?design=1&sigma=2"),
            "https://smith.internal.example/x?design=1&sigma=2"
        );
        // Disabled: signed URLs are rewritten too.
        let r = rules_with(RewriteOptions {
            skip_signed_urls: false,
            ..RewriteOptions::default()
        });
        assert_eq!(
            rewrite_all(&r, b"https://smith.langchain.com/b?sig=1"),
            b"https://smith.internal.example/b?sig=1"
        );
    }

    #[test]
    fn signature_past_window_is_rewritten() {
        let r = rules_with(RewriteOptions {
            signature_lookahead: 64,
            ..RewriteOptions::default()
        });
        let long = format!("https://smith.langchain.com/x?{}&sig=1", "a".repeat(100));
        let out = rewrite_all(&r, long.as_bytes());
        assert!(out.starts_with(b"https://smith.internal.example/x?"));
        let short = "https://smith.langchain.com/x?a=1&sig=1";
        assert_eq!(rewrite_all(&r, short.as_bytes()), short.as_bytes());
    }

    #[test]
    fn split_across_chunks_and_zero_copy() {
        let r = rules();
        let input = b"aaaa https://smith.langchain.com/x bbbb";
        for split in 0..=input.len() {
            let mut s = StreamRewriter::new(Arc::clone(&r));
            let mut out = Vec::new();
            s.push_slice(&input[..split], &mut out);
            s.push_slice(&input[split..], &mut out);
            s.finish(&mut out);
            assert_eq!(
                out.concat(),
                b"aaaa https://smith.internal.example/x bbbb",
                "split {split}"
            );
        }
        // No match: the chunk comes back as the same allocation.
        let chunk = Bytes::from_static(b"{\"a\": 1, \"b\": \"nothing here\"}");
        let mut s = StreamRewriter::new(Arc::clone(&r));
        let mut out = Vec::new();
        s.push(chunk.clone(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), chunk.as_ptr());
        assert_eq!(s.carried(), 0);
    }

    #[test]
    fn holds_back_only_a_possible_match_start() {
        let r = rules();
        let mut s = StreamRewriter::new(Arc::clone(&r));
        let mut out = Vec::new();
        s.push_slice(b"data: hello\n\ndata: see htt", &mut out);
        assert_eq!(out.concat(), b"data: hello\n\ndata: see ");
        assert_eq!(s.carried(), 3);
        out.clear();
        s.push_slice(b"ps://smith.langchain.com/x\n\n", &mut out);
        assert_eq!(out.concat(), b"https://smith.internal.example/x\n\n");
        assert_eq!(s.carried(), 0);
    }
}
