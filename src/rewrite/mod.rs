//! Rewriting public-origin URLs to the private origin in responses.
//!
//! This module owns the compiled rewrite rules ([`Rules`]): the origins to
//! replace, the origin they become, the content types whose bodies are
//! rewritten and the counters that report what happened. It is built once at
//! config load and shared by `Arc`; a hot reload builds a new one (and may keep
//! the counters with [`Rules::with_stats`]).
//!
//! Layout:
//! - `mod.rs` (here): [`Origin`], [`RewriteOptions`], [`Rules`], [`RewriteStats`].
//! - `headers.rs`: response header values (and trailers), the upstream's own
//!   redirects, and the request `Origin`/`Referer` reversal.
//! - `body.rs`: [`StreamRewriter`], the pure, chunk-split-proof matcher and replacer.
//! - `codec.rs`: streaming gzip/deflate/br/zstd decoding and re-encoding.
//! - `response.rs`: [`rewrite_response`], which decides whether a body is
//!   rewritten, fixes the entity headers, and wraps it in [`RewriteBody`].
//! - `proptests.rs` (tests only): chunk-split invariance against a naive reference.
//!
//! It does not decide which requests reach the upstream (that is policy), does
//! not parse the config file (the config module builds [`Origin`]s and calls
//! [`Rules::new`]) and does not count anything beyond [`RewriteStats`].

mod body;
mod codec;
mod headers;
#[cfg(test)]
mod proptests;
mod response;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use bytes::Bytes;

pub use body::{rewrite_all, StreamRewriter};
pub use codec::ContentCoding;
pub use headers::{rewrite_response_headers, rewrite_trailers, UpstreamOrigin};
pub use response::{rewrite_response, RewriteBody, RewriteError, Unreadable};

/// An origin as RFC 6454 §4 defines it: scheme, host and port, nothing else.
///
/// Scheme and host are kept lowercase; a port equal to the scheme's default is
/// stored as `None`, so `https://a.example` and `https://a.example:443` are the
/// same origin and serialize the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
}

/// Why a configured origin was refused. Each message names the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    #[error("origin {0:?} has no scheme: write it as https://host[:port]")]
    MissingScheme(String),
    #[error("origin {0:?} has an invalid scheme: use http or https")]
    BadScheme(String),
    #[error("origin {0:?} has no host: write it as https://host[:port]")]
    MissingHost(String),
    #[error(
        "origin {0:?} contains user info (user@): remove it, an origin is scheme://host[:port]"
    )]
    UserInfo(String),
    #[error("origin {0:?} has a path, query or fragment: remove everything after host[:port]")]
    HasPath(String),
    #[error("origin {0:?} has an invalid host: only letters, digits, '-' and '.' or a bracketed IPv6 address")]
    BadHost(String),
    #[error("origin {0:?} has an invalid port: use a number from 1 to 65535")]
    BadPort(String),
}

impl Origin {
    /// Parses `scheme://host[:port]`.
    ///
    /// Anything more (a path, even a lone `/`, a query, user info) is refused
    /// rather than silently dropped: a config that says
    /// `https://smith.example.com/app` probably means a base path, which an
    /// origin cannot express.
    pub fn parse(input: &str) -> Result<Origin, OriginError> {
        let err_input = || input.to_owned();
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| OriginError::MissingScheme(err_input()))?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https") {
            return Err(OriginError::BadScheme(err_input()));
        }
        if rest.contains(['/', '?', '#', '\\']) {
            return Err(OriginError::HasPath(err_input()));
        }
        if rest.contains('@') {
            return Err(OriginError::UserInfo(err_input()));
        }
        if rest.is_empty() {
            return Err(OriginError::MissingHost(err_input()));
        }
        let (host, port) = if let Some(after_bracket) = rest.strip_prefix('[') {
            let (inner, tail) = after_bracket
                .split_once(']')
                .ok_or_else(|| OriginError::BadHost(err_input()))?;
            let valid = !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !valid {
                return Err(OriginError::BadHost(err_input()));
            }
            let port = match tail {
                "" => None,
                t => Some(
                    t.strip_prefix(':')
                        .ok_or_else(|| OriginError::BadPort(err_input()))?,
                ),
            };
            (format!("[{}]", inner.to_ascii_lowercase()), port)
        } else {
            let (host, port) = match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let valid = !host.is_empty()
                && !host.starts_with(['.', '-'])
                && !host.contains("..")
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(OriginError::BadHost(err_input()));
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => None,
            Some(p) => {
                let n: u16 = p
                    .parse()
                    .ok()
                    .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| OriginError::BadPort(err_input()))?;
                (Some(n) != default_port(&scheme)).then_some(n)
            }
        };
        Ok(Origin { scheme, host, port })
    }

    /// The `host[:port]` part, as it appears after `://`.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority())
    }
}

/// Tunables of the rewrite, with the product's defaults.
#[derive(Debug, Clone)]
pub struct RewriteOptions {
    /// MIME essences (`type/subtype`, no parameters) whose bodies are rewritten.
    /// Compared case-insensitively against the response `Content-Type`; an
    /// essence also stands for the other spellings browsers take for the
    /// same content (`application/json`: `text/json`, NDJSON; JavaScript's
    /// legacy types), and `application/<suffix>` for every type with that
    /// structured syntax suffix (`application/json`: `application/problem+json`).
    pub content_types: Vec<String>,
    /// Leave a matching URL alone when its query carries a signature parameter
    /// (`X-Amz-Signature`, `X-Goog-Signature`, `Signature`, `sig`): changing
    /// the host of a signed URL breaks the signature.
    pub skip_signed_urls: bool,
    /// How many bytes after a matched origin are searched for a signature
    /// parameter. A URL whose end is not seen within this window is judged on
    /// the part that was seen: no signature there means it is rewritten. The
    /// window is also the extra memory a body rewrite may hold across chunks.
    pub signature_lookahead: usize,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        RewriteOptions {
            content_types: [
                "application/json",
                "text/html",
                "application/javascript",
                "text/javascript",
                "text/plain",
                "text/event-stream",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            skip_signed_urls: true,
            signature_lookahead: 2048,
        }
    }
}

/// Types a configured essence stands for besides itself: the other
/// spellings browsers take for the same kind of content (WHATWG MIME
/// Sniffing §4.6, "JavaScript MIME type" and "JSON MIME type"; XHTML, which
/// they render as a page) and JSON written one document a line (JSON text
/// sequences, RFC 7464; NDJSON / JSON Lines).
pub(crate) const TYPE_FAMILIES: [(&str, &[&str]); 4] = [
    (
        "application/json",
        &[
            "text/json",
            "application/json-seq",
            "application/x-ndjson",
            "application/jsonl",
            "application/x-jsonlines",
            "application/jsonlines",
        ],
    ),
    ("text/javascript", &JAVASCRIPT_TYPES),
    ("application/javascript", &JAVASCRIPT_TYPES),
    ("text/html", &["application/xhtml+xml"]),
];

const JAVASCRIPT_TYPES: [&str; 16] = [
    "application/ecmascript",
    "application/javascript",
    "application/x-ecmascript",
    "application/x-javascript",
    "text/ecmascript",
    "text/javascript",
    "text/javascript1.0",
    "text/javascript1.1",
    "text/javascript1.2",
    "text/javascript1.3",
    "text/javascript1.4",
    "text/javascript1.5",
    "text/jscript",
    "text/livescript",
    "text/x-ecmascript",
    "text/x-javascript",
];

/// Why a rule set was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rewrite.from is empty: list at least one public origin to rewrite")]
    NoFrom,
    #[error("rewrite.from lists {0} twice: remove the duplicate")]
    DuplicateFrom(String),
    #[error("rewrite.from lists the private origin {0} itself: remove it from rewrite.from")]
    FromIsTo(String),
    #[error("rewrite.content_types entry {0:?} is not a type/subtype MIME essence")]
    BadContentType(String),
    #[error("the rewrite patterns could not be compiled")]
    Patterns(#[source] aho_corasick::BuildError),
}

/// How a URL form spells the origin; each `from` origin yields one pattern of
/// each form (the scheme-relative one per authority: origins that differ
/// only in scheme share it), and the replacement uses the same form of the
/// `to` origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `https://host`
    Plain,
    /// `https:\/\/host`, as JSON encoders that escape `/` write it.
    JsonEscaped,
    /// `https:\u002F\u002Fhost`, as serializers that escape `/` for
    /// embedding in an HTML `<script>` write it (either hex case).
    JsonUnicode,
    /// `https%3A%2F%2Fhost`, as the URL sits inside another URL's query.
    Percent,
    /// `https%3A//host`: the same with `/` left as it is, as Python's
    /// `urllib.parse.quote(url)` (whose `safe` default is `/`) writes it.
    PercentColon,
    /// `//host`, a scheme-relative URL (RFC 3986 §4.2: an HTML `href`, a
    /// preconnect hint). It takes the scheme of the page it is in, so it
    /// becomes `//` and the private authority.
    SchemeRelative,
}

impl Form {
    /// Whether the form is written inside percent-encoded text (a query
    /// value), where `&` ends the value and a literal `+` is a space.
    pub(crate) fn is_percent_encoded(self) -> bool {
        matches!(self, Form::Percent | Form::PercentColon)
    }

    /// The form whose anchor finds this one: the two percent-encoded forms
    /// share theirs, `%3A` (a longer anchor for each made the anchor search
    /// slower on every byte: more spellings with the same first bytes).
    fn found_by(self) -> Form {
        match self {
            Form::PercentColon => Form::Percent,
            f => f,
        }
    }

    /// Where the separator every anchor begins with starts in a spelling of
    /// `origin`: after its scheme, or at the start for the form without one.
    fn anchor_at(self, origin: &Origin) -> usize {
        match self {
            Form::SchemeRelative => 0,
            _ => origin.scheme.len(),
        }
    }

    fn spell(self, origin: &Origin) -> String {
        let auth = origin.authority();
        match self {
            Form::SchemeRelative => format!("//{auth}"),
            Form::Plain => format!("{}://{}", origin.scheme, auth),
            Form::JsonEscaped => format!("{}:\\/\\/{}", origin.scheme, auth),
            Form::JsonUnicode => format!("{}:\\u002F\\u002F{}", origin.scheme, auth),
            Form::Percent | Form::PercentColon => format!(
                "{}%3A{}{}",
                origin.scheme,
                if self == Form::Percent {
                    "%2F%2F"
                } else {
                    "//"
                },
                auth.replace('[', "%5B")
                    .replace(']', "%5D")
                    .replace(':', "%3A")
            ),
        }
    }
}

/// Counters a caller reads for metrics. All use relaxed ordering: they are
/// statistics, not synchronization.
#[derive(Debug, Default)]
pub struct RewriteStats {
    /// Response bodies that went through the rewriter.
    pub bodies_rewritten: AtomicU64,
    /// Origins replaced in bodies.
    pub body_matches: AtomicU64,
    /// Header values changed by [`rewrite_response_headers`].
    pub headers_rewritten: AtomicU64,
    /// Bodies of a rewritable type left untouched because their
    /// `Content-Encoding` is unknown or stacked.
    pub bodies_unknown_encoding: AtomicU64,
}

impl RewriteStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The compiled rewrite rules. Immutable; share it by `Arc`.
#[derive(Debug)]
pub struct Rules {
    pub(crate) from: Vec<Origin>,
    pub(crate) to: Origin,
    pub(crate) opts: RewriteOptions,
    /// Lowercased content-type essences: the configured ones and the
    /// members of their [`TYPE_FAMILIES`].
    pub(crate) content_types: Vec<String>,
    pub(crate) matcher: AhoCorasick,
    /// SIMD search for the case-invariant separator that follows every
    /// scheme (`://`, `:\/\/`, `%3A`), or for `//` and the first byte of
    /// a public host: much faster than the automaton on text full of `h`s,
    /// since a candidate is only an actual URL. `None` where the packed
    /// searcher cannot be built; `matcher` is used then.
    pub(crate) anchors: Option<aho_corasick::packed::Searcher>,
    /// Per anchor id: the form whose patterns are compared there
    /// ([`ANCHORS`], then the scheme-relative anchors).
    pub(crate) anchor_forms: Vec<Form>,
    /// Per pattern id: its form, lowercased bytes and replacement.
    pub(crate) patterns: Vec<Pattern>,
    /// Per form an anchor names (in [`Form`] order; see [`Form::found_by`]),
    /// the ids the anchored search compares there: not the default-port
    /// spellings, which it reaches by extending a match (except in the
    /// scheme-relative form, where `http` and `https` origins of one host
    /// share `//host` but not its default port, so every spelling is
    /// compared).
    pub(crate) by_form: [Vec<usize>; FORMS.len()],
    /// Bounds what a body rewrite keeps between chunks.
    pub(crate) max_pattern_len: usize,
    /// Bytes that start some pattern, either case: a quick first test for
    /// a pattern's beginning at the end of a chunk.
    pub(crate) first_bytes: [bool; 256],
    /// Whether some pattern is a proper prefix of another (same host with and
    /// without a port): then a match at the very end of a chunk may still grow.
    pub(crate) nested_patterns: bool,
    /// Finds a public host in a response header value: the one search a
    /// value gets before anything else.
    pub(crate) hosts: HostSearch,
    pub(crate) stats: Arc<RewriteStats>,
}

/// The public hosts, any case, in every spelling a URL, a scheme-relative
/// reference or a cookie `Domain` can give them.
#[derive(Debug)]
pub(crate) struct HostSearch {
    finder: AhoCorasick,
    /// Most header values (`application/json`, `no-store`, a length) are
    /// shorter than any host: no search needed.
    shortest: usize,
}

impl HostSearch {
    pub(crate) fn is_match(&self, value: &[u8]) -> bool {
        value.len() >= self.shortest && self.finder.is_match(value)
    }
}

#[derive(Debug)]
pub(crate) struct Pattern {
    pub(crate) form: Form,
    /// Where the separator starts: the scheme's length.
    pub(crate) anchor_at: usize,
    pub(crate) lower: Vec<u8>,
    pub(crate) replacement: Bytes,
    /// The id of this origin's spelling with its default port written out
    /// (`https://host` → `https://host:443`), which extends this one.
    pub(crate) with_port: Option<usize>,
}

/// The separator after the scheme in each form, every case spelling of it,
/// with the form it begins (the scheme-relative anchors, which name a host,
/// are added per rule set; `%3A` begins both percent-encoded forms).
/// Spellings never begin at one position, so an anchor found tells the
/// patterns a match there can have.
const ANCHORS: [(&str, Form); 8] = [
    ("://", Form::Plain),
    (":\\/\\/", Form::JsonEscaped),
    (":\\u002F\\u002F", Form::JsonUnicode),
    (":\\u002f\\u002f", Form::JsonUnicode),
    (":\\u002F\\u002f", Form::JsonUnicode),
    (":\\u002f\\u002F", Form::JsonUnicode),
    ("%3A", Form::Percent),
    ("%3a", Form::Percent),
];

/// Every form, in declaration order (the index of `by_form`).
pub(crate) const FORMS: [Form; 6] = [
    Form::Plain,
    Form::JsonEscaped,
    Form::JsonUnicode,
    Form::Percent,
    Form::PercentColon,
    Form::SchemeRelative,
];

impl Rules {
    /// Compiles the rules. `from` are the public origins, `to` the private one.
    pub fn new(from: Vec<Origin>, to: Origin, opts: RewriteOptions) -> Result<Rules, RulesError> {
        if from.is_empty() {
            return Err(RulesError::NoFrom);
        }
        for (i, f) in from.iter().enumerate() {
            if *f == to {
                return Err(RulesError::FromIsTo(f.to_string()));
            }
            if from[..i].contains(f) {
                return Err(RulesError::DuplicateFrom(f.to_string()));
            }
        }
        let mut content_types = Vec::with_capacity(opts.content_types.len());
        for ct in &opts.content_types {
            let essence = ct.trim().to_ascii_lowercase();
            let valid = essence
                .split_once('/')
                .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !s.contains('/'))
                && !essence.contains([';', ' ', ',']);
            if !valid {
                return Err(RulesError::BadContentType(ct.clone()));
            }
            content_types.push(essence);
        }
        for (head, members) in TYPE_FAMILIES {
            if content_types.iter().any(|c| c == head) {
                for m in members {
                    if !content_types.iter().any(|c| c == m) {
                        content_types.push((*m).to_owned());
                    }
                }
            }
        }
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut by_form: [Vec<usize>; FORMS.len()] = Default::default();
        for f in &from {
            // An origin without a port is also written with its scheme's
            // default port spelled out (`https://host:443`): the same origin
            // (RFC 6454 §4), which the header rewriter already treats so.
            let explicit = default_port(&f.scheme)
                .filter(|_| f.port.is_none())
                .map(|p| Origin {
                    port: Some(p),
                    ..f.clone()
                });
            for form in FORMS {
                let pattern = |spelled: &Origin| Pattern {
                    form,
                    anchor_at: form.anchor_at(f),
                    lower: form.spell(spelled).to_ascii_lowercase().into_bytes(),
                    replacement: Bytes::from(form.spell(&to)),
                    with_port: None,
                };
                if form == Form::SchemeRelative {
                    // Same authority, other scheme: `//host` stays itself.
                    if f.authority() == to.authority() {
                        continue;
                    }
                    for spelled in std::iter::once(f).chain(&explicit) {
                        let p = pattern(spelled);
                        let ids = &mut by_form[form as usize];
                        if !ids.iter().any(|&id| patterns[id].lower == p.lower) {
                            ids.push(patterns.len());
                            patterns.push(p);
                        }
                    }
                    continue;
                }
                // The anchored search compares the origin as written and
                // reaches its default-port spelling by extending a match.
                let base = patterns.len();
                by_form[form.found_by() as usize].push(base);
                patterns.push(pattern(f));
                if let Some(e) = &explicit {
                    patterns[base].with_port = Some(base + 1);
                    patterns.push(pattern(e));
                }
            }
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(patterns.iter().map(|p| &p.lower))
            .map_err(RulesError::Patterns)?;
        // A scheme-relative URL has no separator of its own to find: `//` is
        // in every URL, so it is anchored on `//` and the first byte of a
        // public host, each case (three bytes, as short as `://`).
        let mut anchor_texts: Vec<Vec<u8>> =
            ANCHORS.iter().map(|(t, _)| t.as_bytes().to_vec()).collect();
        let mut anchor_forms: Vec<Form> = ANCHORS.iter().map(|(_, f)| *f).collect();
        for &id in &by_form[Form::SchemeRelative as usize] {
            let first = patterns[id].lower.get(2).copied().unwrap_or_default();
            for b in [first.to_ascii_lowercase(), first.to_ascii_uppercase()] {
                let text = vec![b'/', b'/', b];
                if !anchor_texts.contains(&text) {
                    anchor_texts.push(text);
                    anchor_forms.push(Form::SchemeRelative);
                }
            }
        }
        let anchors = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(&anchor_texts)
            .build();
        let max_pattern_len = patterns.iter().map(|p| p.lower.len()).max().unwrap_or(0);
        let mut first_bytes = [false; 256];
        for p in &patterns {
            if let Some(&b) = p.lower.first() {
                first_bytes[usize::from(b.to_ascii_lowercase())] = true;
                first_bytes[usize::from(b.to_ascii_uppercase())] = true;
            }
        }
        let nested_patterns = patterns.iter().any(|a| {
            patterns
                .iter()
                .any(|b| b.lower.len() > a.lower.len() && b.lower.starts_with(&a.lower))
        });
        // The host as every form spells it: literally, except a bracketed
        // IPv6 host in the percent form.
        let mut hosts: Vec<String> = Vec::new();
        for f in &from {
            let percent = f
                .host
                .replace('[', "%5B")
                .replace(']', "%5D")
                .replace(':', "%3A");
            for h in [f.host.clone(), percent] {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        let hosts = HostSearch {
            shortest: hosts.iter().map(String::len).min().unwrap_or(0),
            finder: AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&hosts)
                .map_err(RulesError::Patterns)?,
        };
        Ok(Rules {
            from,
            to,
            opts,
            content_types,
            matcher,
            anchors,
            anchor_forms,
            patterns,
            by_form,
            max_pattern_len,
            first_bytes,
            nested_patterns,
            hosts,
            stats: Arc::new(RewriteStats::default()),
        })
    }

    /// Keeps counting into `stats` (e.g. the previous snapshot's counters
    /// across a hot reload).
    pub fn with_stats(mut self, stats: Arc<RewriteStats>) -> Rules {
        self.stats = stats;
        self
    }

    /// Points an already built rule set at long-lived counters (the
    /// gateway's, which survive reloads).
    pub fn set_stats(&mut self, stats: Arc<RewriteStats>) {
        self.stats = stats;
    }

    /// The counters this rule set reports into.
    pub fn stats(&self) -> &Arc<RewriteStats> {
        &self.stats
    }

    /// The public origins.
    pub fn from(&self) -> &[Origin] {
        &self.from
    }

    /// The private origin.
    pub fn to(&self) -> &Origin {
        &self.to
    }

    /// The options the rules were compiled with.
    pub fn options(&self) -> &RewriteOptions {
        &self.opts
    }

    /// Bytes a body rewrite may keep between chunks: the longest pattern, the
    /// signature lookahead and the few bytes needed to judge a host boundary.
    pub(crate) fn max_carry(&self) -> usize {
        self.max_pattern_len + self.lookahead() + 4
    }

    pub(crate) fn lookahead(&self) -> usize {
        if self.opts.skip_signed_urls {
            self.opts.signature_lookahead.max(3)
        } else {
            3
        }
    }

    /// The leftmost-longest pattern occurrence starting at or after `from`:
    /// `(start, end, pattern index)`.
    pub(crate) fn find(&self, hay: &[u8], from: usize) -> Option<(usize, usize, usize)> {
        let Some(anchors) = &self.anchors else {
            let m = self
                .matcher
                .find(aho_corasick::Input::new(hay).range(from..))?;
            return Some((m.start(), m.end(), m.pattern().as_usize()));
        };
        let mut at = from;
        while at < hay.len() {
            let anchor = anchors.find_in(
                hay,
                aho_corasick::Span {
                    start: at,
                    end: hay.len(),
                },
            )?;
            let c = anchor.start();
            let form = self.anchor_forms.get(anchor.pattern().as_usize()).copied();
            let Some(form) = form else {
                at = c + 1;
                continue;
            };
            let mut best: Option<(usize, usize, usize)> = None;
            for &id in &self.by_form[form as usize] {
                let p = &self.patterns[id];
                let Some(start) = c.checked_sub(p.anchor_at).filter(|s| *s >= from) else {
                    continue;
                };
                let end = start + p.lower.len();
                let longer = best.is_none_or(|(_, e, _)| end > e);
                if longer && end <= hay.len() && hay[start..end].eq_ignore_ascii_case(&p.lower) {
                    best = Some((start, end, id));
                }
            }
            if let Some((start, end, id)) = best {
                // The same origin with its default port written out: only
                // the port is left to compare.
                let longer = self.patterns[id].with_port.and_then(|l| {
                    let whole = &self.patterns[l].lower;
                    let port = whole.get(end - start..)?;
                    let there = hay.get(end..end + port.len())?;
                    there
                        .eq_ignore_ascii_case(port)
                        .then_some((start, start + whole.len(), l))
                });
                return longer.or(best);
            }
            at = c + 1;
        }
        None
    }

    /// Whether a body of type `essence` (`type/subtype`, any case) is
    /// rewritten: it is listed (or in a listed type's family), or its
    /// structured syntax suffix is (RFC 6839 §3.1: `+json` is JSON, so a
    /// listed `application/json` covers `application/problem+json` and
    /// `application/vnd.api+json`).
    pub(crate) fn rewrites_content_type(&self, essence: &str) -> bool {
        let essence = essence.trim();
        if self
            .content_types
            .iter()
            .any(|c| c.eq_ignore_ascii_case(essence))
        {
            return true;
        }
        let suffix = essence
            .split_once('/')
            .and_then(|(_, subtype)| subtype.rsplit_once('+'))
            .filter(|(name, _)| !name.is_empty())
            .map(|(_, suffix)| suffix);
        let Some(suffix) = suffix else {
            return false;
        };
        self.content_types.iter().any(|c| {
            c.strip_prefix("application/")
                .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
        })
    }

    /// Whether a response with these `Content-Type` field values is
    /// rewritten: when any type it names is. A browser reads the last valid
    /// type of all the fields and their comma-separated elements (Fetch,
    /// "extract a MIME type"), other clients the first; rewriting when any
    /// of them is rewritable leaves no reader the public origin. A body
    /// with no usable `Content-Type` is judged by its first bytes instead
    /// (`response.rs`).
    pub(crate) fn rewrites_content_types<'a>(
        &self,
        values: impl IntoIterator<Item = &'a http::HeaderValue>,
    ) -> bool {
        values.into_iter().any(|v| {
            v.as_bytes().split(|b| *b == b',').any(|element| {
                let essence = element.split(|b| *b == b';').next().unwrap_or_default();
                std::str::from_utf8(essence).is_ok_and(|e| self.rewrites_content_type(e))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_parse_normalizes() {
        let o = Origin::parse("HTTPS://Smith.Example.COM").unwrap();
        assert_eq!(o.to_string(), "https://smith.example.com");
        let o = Origin::parse("https://smith.example.com:443").unwrap();
        assert_eq!(o.port, None);
        let o = Origin::parse("http://smith.example.com:8443").unwrap();
        assert_eq!(o.to_string(), "http://smith.example.com:8443");
        let o = Origin::parse("https://[::1]:8443").unwrap();
        assert_eq!(o.to_string(), "https://[::1]:8443");
    }

    #[test]
    fn origin_parse_rejects() {
        let cases = [
            ("smith.example.com", "no scheme"),
            ("ftp://a.example", "invalid scheme"),
            ("https://", "no host"),
            ("https://a.example/", "path"),
            ("https://a.example/app", "path"),
            ("https://a.example?x", "path"),
            ("https://u:p@a.example", "user info"),
            ("https://a.example:0", "port"),
            ("https://a.example:99999", "port"),
            ("https://a.example:+1", "port"),
            ("https://a_b.example", "invalid host"),
            ("https://a..example", "invalid host"),
        ];
        for (input, needle) in cases {
            let e = Origin::parse(input).unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn rules_refuse_bad_sets() {
        let a = Origin::parse("https://a.example").unwrap();
        let b = Origin::parse("https://b.example").unwrap();
        let o = RewriteOptions::default();
        assert!(matches!(
            Rules::new(vec![], b.clone(), o.clone()),
            Err(RulesError::NoFrom)
        ));
        assert!(matches!(
            Rules::new(vec![a.clone(), a.clone()], b.clone(), o.clone()),
            Err(RulesError::DuplicateFrom(_))
        ));
        assert!(matches!(
            Rules::new(vec![b.clone()], b.clone(), o.clone()),
            Err(RulesError::FromIsTo(_))
        ));
        let bad = RewriteOptions {
            content_types: vec!["json".into()],
            ..o
        };
        assert!(matches!(
            Rules::new(vec![a], b, bad),
            Err(RulesError::BadContentType(_))
        ));
    }

    fn rules_for(types: &[&str]) -> Rules {
        Rules::new(
            vec![Origin::parse("https://a.example").unwrap()],
            Origin::parse("https://b.example").unwrap(),
            RewriteOptions {
                content_types: types.iter().map(|t| (*t).to_owned()).collect(),
                ..RewriteOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn content_types_cover_their_suffixes_and_families() {
        let r = rules_for(
            &RewriteOptions::default()
                .content_types
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        for t in [
            "application/json",
            "Application/JSON",
            " application/json ",
            "application/problem+json",
            "application/vnd.api+json",
            "application/merge-patch+JSON",
            "application/x-ndjson",
            "application/jsonl",
            "application/json-seq",
            "text/json",
            "text/html",
            "application/xhtml+xml",
            "application/x-javascript",
            "text/ecmascript",
            "text/plain",
            "text/event-stream",
        ] {
            assert!(r.rewrites_content_type(t), "{t}");
        }
        for t in [
            "image/png",
            "application/octet-stream",
            "application/xml",
            "image/svg+xml",
            "application/json+",
            "application/jsonx",
            "+json",
            "",
        ] {
            assert!(!r.rewrites_content_type(t), "{t}");
        }
        // Only what is configured: a list without JSON covers no JSON.
        let html = rules_for(&["text/html"]);
        assert!(!html.rewrites_content_type("application/problem+json"));
        assert!(!html.rewrites_content_type("application/x-ndjson"));
        assert!(html.rewrites_content_type("application/xhtml+xml"));
        // Any configured `application/<suffix>` covers its suffix.
        let xml = rules_for(&["application/xml"]);
        assert!(xml.rewrites_content_type("image/svg+xml"));
        assert!(!xml.rewrites_content_type("application/json"));
    }

    #[test]
    fn any_rewritable_content_type_field_counts() {
        let r = rules_for(&["application/json", "text/html"]);
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        let judge = |vals: &[http::HeaderValue]| r.rewrites_content_types(vals);
        assert!(judge(&[v("application/octet-stream"), v("text/html")]));
        assert!(judge(&[v("text/html; charset=utf-8"), v("image/png")]));
        assert!(judge(&[v(
            "application/octet-stream, text/html;charset=\"a,b\""
        )]));
        assert!(!judge(&[v("application/octet-stream"), v("image/png")]));
        assert!(!judge(&[]));
        let latin1 = http::HeaderValue::from_bytes(b"text/plain; charset=\xe9").unwrap();
        assert!(!judge(std::slice::from_ref(&latin1)));
        assert!(judge(&[latin1, v("application/json")]));
    }

    #[test]
    fn percent_form_encodes_port() {
        let o = Origin::parse("https://a.example:8443").unwrap();
        assert_eq!(Form::Percent.spell(&o), "https%3A%2F%2Fa.example%3A8443");
        assert_eq!(Form::JsonEscaped.spell(&o), "https:\\/\\/a.example:8443");
        assert_eq!(
            Form::JsonUnicode.spell(&o),
            "https:\\u002F\\u002Fa.example:8443"
        );
        assert_eq!(Form::PercentColon.spell(&o), "https%3A//a.example%3A8443");
        let v6 = Origin::parse("http://[::1]:9").unwrap();
        assert_eq!(Form::PercentColon.spell(&v6), "http%3A//%5B%3A%3A1%5D%3A9");
        assert_eq!(Form::SchemeRelative.spell(&o), "//a.example:8443");
    }
}
