//! Request classification: turns a request target into the one canonical path the
//! gateway checks and forwards, the [`RouteClass`] that policy decides on, the share
//! tokens it carries and whether POST on it is a read. It owns the route table (the
//! built-in LangSmith profile, the base path and the `[[routes]]` patterns from
//! config) and the refusal of paths that an upstream could read differently from us.
//! It does not decide anything about networks, methods or identity (policy does), it
//! never looks at headers or bodies, and it does not build responses: a [`PathError`]
//! becomes a 400 in the request error mapping.
//!
//! Canonical form, ambiguity and what is forwarded:
//! - The target is split at the first `?`; the query is forwarded byte for byte and
//!   never takes part in matching. A `#` anywhere is refused.
//! - The path must start with `/`, and not with `//` or `/\` once decoded (the
//!   start of another host's URL: an open redirect wherever the path is echoed
//!   into a `Location`); every `%` must start a well-formed escape.
//!   Escapes of unreserved characters (letters, digits, `-`, `_`, `~`) are decoded,
//!   the hex of every other escape is uppercased. That string is [`Route::path`],
//!   exactly what goes upstream. `.` is deliberately not decoded: `%2E` stays
//!   visible so that it can be judged.
//! - A path is ambiguous when it holds anything that some upstream could turn into a
//!   different route: dot segments (literal or encoded), encoded `/ \ . % ; # ?` or
//!   NUL, a literal `\` or `;`, an empty segment (a single trailing `/` is not one:
//!   every pattern treats it as absent), a segment ending in `.`, control
//!   characters, whitespace, non-ASCII (raw or escaped). For an ambiguous path we
//!   also compute the worst-case "loose" readings: decode until stable, undo
//!   overlong UTF-8 and full-width look-alikes, read `\` as `/`, drop `;params`,
//!   trim whitespace, NUL and trailing dots, collapse `//`, resolve dot segments,
//!   and cut at a decoded `?`/`#`/NUL before or after dot resolution; each also
//!   with `//` kept until dots are resolved and with segments read exactly, as an
//!   RFC 3986 resolver does (`/a//../b` and `/a/b/..%20/..` are `/a/b` there). If
//!   the strict path or any loose reading hits a route, the request is refused (and a
//!   dot segment next to an empty one is refused on every route: half-and-half
//!   readings of it are too many to list); if
//!   all of them are [`RouteClass::Other`] the strict path is forwarded unchanged, so
//!   odd asset URLs of the rest of the app keep working. Escapes nested deeper than
//!   the decoding bound are refused outright.
//! - Matching is ASCII-case-insensitive; [`Route::path`] keeps the client's case.
//!
//! Patterns are `/`-separated segments: a literal, `{token}` (one non-empty segment,
//! captured), `*` (one non-empty segment) or, last only, `**` (zero or more segments).
//! The base path prefixes every profile pattern; custom patterns are matched exactly
//! as written (an operator behind a base path writes it into the pattern), and they
//! are tried before the profile, so a custom pattern can shadow a profile route.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use http::Method;
use percent_encoding::percent_decode;

/// Longest path (without the query) we classify. Real LangSmith paths are far shorter;
/// the bound keeps the worst case of the loose decoding small.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// `%25` nesting deeper than this is never produced by a real client, and bounding it
/// keeps loose decoding linear.
const MAX_DECODE_ROUNDS: usize = 8;

/// Segments a path is split into on the stack; longer paths only need the count.
const SPLIT_CAPACITY: usize = 32;

/// A pattern (base path included) may not have more segments than the split keeps.
const MAX_PATTERN_SEGMENTS: usize = 24;

/// A base path of more segments than this leaves no room for the profile patterns.
const MAX_BASE_SEGMENTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Single-page-app share pages under `/public/{token}/`.
    SharePage,
    /// Unauthenticated API routes that carry a share token in the path.
    PublicApi,
    /// Unauthenticated API routes without a token (schemas, download).
    PublicTokenless,
    /// Unauthenticated bulk read whose tokens travel in `?share_tokens=`.
    PublicBulk,
    /// Owner-side creation, listing and revocation of shares, and the org kill switch.
    ShareManage,
    /// Feedback ingest tokens, `/api/v1/feedback/tokens/{token}`.
    FeedbackToken,
    /// The index of the `[[routes]]` entry from config that matched.
    Custom(usize),
    /// Everything else: the authenticated rest of the app.
    Other,
}

impl RouteClass {
    /// Stable label for logs and metrics (the custom index is a separate field).
    pub fn name(self) -> &'static str {
        match self {
            RouteClass::SharePage => "share_page",
            RouteClass::PublicApi => "public_api",
            RouteClass::PublicTokenless => "public_tokenless",
            RouteClass::PublicBulk => "public_bulk",
            RouteClass::ShareManage => "share_manage",
            RouteClass::FeedbackToken => "feedback_token",
            RouteClass::Custom(_) => "custom",
            RouteClass::Other => "other",
        }
    }

    /// The classes [`is_public`](Self::is_public) admits, one per name.
    pub const PUBLIC: [RouteClass; 6] = [
        RouteClass::SharePage,
        RouteClass::PublicApi,
        RouteClass::PublicTokenless,
        RouteClass::PublicBulk,
        RouteClass::FeedbackToken,
        RouteClass::Custom(0),
    ];

    /// Reachable without upstream authentication, so the network policy guards it.
    pub fn is_public(self) -> bool {
        matches!(
            self,
            RouteClass::SharePage
                | RouteClass::PublicApi
                | RouteClass::PublicTokenless
                | RouteClass::PublicBulk
                | RouteClass::FeedbackToken
                | RouteClass::Custom(_)
        )
    }
}

/// Whether POST on this exact route is a read (LangSmith uses POST for some queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostRule {
    NotAllowed,
    Read,
    /// A read that turns natural language into a filter, probably via an LLM: a cost
    /// and abuse vector, so policy decides separately.
    GenerateQuery,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub class: RouteClass,
    /// The canonical path: exactly what the gateway forwards upstream (no query).
    pub path: String,
    /// The raw query, forwarded unchanged.
    pub query: Option<String>,
    /// Share tokens: the percent-decoded path token, or each value of `share_tokens`
    /// in the query (comma-separated and/or repeated) on [`RouteClass::PublicBulk`].
    pub tokens: Vec<String>,
    /// The path token as `path` spells it, when that is not the decoded
    /// token (an escape the canonical path keeps: `%7B...%7D`,
    /// `urn%3Auuid%3A...`); the log masks this spelling.
    pub raw_token: Option<String>,
    pub post: PostRule,
    /// The query has a `_method` parameter (any case, any encoding of the name).
    pub method_param: bool,
    /// The pattern that matched (base path included), `""` for [`RouteClass::Other`].
    pub rule: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    LangSmith,
    Empty,
}

/// Why a request target was refused. Every variant but the first four is an
/// ambiguity, refused only because the path (in some reading) reaches a route.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path longer than 8 KiB")]
    TooLong,
    #[error("fragment ('#') in request target")]
    Fragment,
    #[error("path does not start with '/'")]
    NotOriginForm,
    #[error("path starts like a URL of another host ('//' or '/\\', spelled or encoded)")]
    SchemeRelative,
    #[error("malformed percent-escape in path")]
    BadEscape,
    #[error("dot segment in path")]
    DotSegment,
    #[error("encoded slash or backslash in path")]
    EncodedSeparator,
    #[error("encoded dot in path")]
    EncodedDot,
    #[error("encoded '%' in path (double encoding)")]
    DoubleEncoding,
    #[error("too many layers of percent-encoding in path")]
    ExcessiveEncoding,
    #[error("encoded '?', '#' or ';' in path")]
    EncodedDelimiter,
    #[error("NUL byte in path")]
    Nul,
    #[error("control character in path")]
    ControlCharacter,
    #[error("backslash in path")]
    Backslash,
    #[error("';' parameter in path")]
    PathParameter,
    #[error("empty segment in path")]
    EmptySegment,
    #[error("whitespace in path")]
    Whitespace,
    #[error("segment ending in '.' in path")]
    TrailingDot,
    #[error("non-ASCII byte in path")]
    NonAscii,
    #[error("'api' segment below the app's root that LangSmith's frontend would route to a share or management route")]
    ApiBelowRoot,
}

impl PathError {
    /// Stable snake_case code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PathError::TooLong => "too_long",
            PathError::Fragment => "fragment",
            PathError::NotOriginForm => "not_origin_form",
            PathError::SchemeRelative => "scheme_relative",
            PathError::BadEscape => "bad_escape",
            PathError::DotSegment => "dot_segment",
            PathError::EncodedSeparator => "encoded_separator",
            PathError::EncodedDot => "encoded_dot",
            PathError::DoubleEncoding => "double_encoding",
            PathError::ExcessiveEncoding => "excessive_encoding",
            PathError::EncodedDelimiter => "encoded_delimiter",
            PathError::Nul => "nul_byte",
            PathError::ControlCharacter => "control_character",
            PathError::Backslash => "backslash",
            PathError::PathParameter => "path_parameter",
            PathError::EmptySegment => "empty_segment",
            PathError::Whitespace => "whitespace",
            PathError::TrailingDot => "trailing_dot",
            PathError::NonAscii => "non_ascii",
            PathError::ApiBelowRoot => "api_below_root",
        }
    }
}

/// A bad `base_path` or `[[routes]]` pattern; the message names it and the fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("base_path {base_path:?} is invalid: it {problem}")]
    BasePath {
        base_path: String,
        problem: PatternProblem,
    },
    #[error("routes[{route}] path pattern {pattern:?} is invalid: it {problem}")]
    Custom {
        route: usize,
        pattern: String,
        problem: PatternProblem,
    },
    #[error("routes[{route}] has no path patterns; give it at least one")]
    NoPatterns { route: usize },
}

/// What is wrong with a pattern; reads as the end of "it ...".
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum PatternProblem {
    #[error("must start with '/'")]
    NoLeadingSlash,
    #[error("must not end with '/' (use \"\" for no base path)")]
    TrailingSlash,
    #[error("has an empty segment ('//', a trailing '/' or nothing after '/')")]
    EmptySegment,
    #[error("uses '**' before the last segment; '**' may only end a pattern")]
    RestNotLast,
    #[error(
        "contains '.' or '%'; patterns match the canonical path, where neither can reach a route"
    )]
    DotOrPercent,
    #[error(
        "contains {0:?}; literal segments may use only ASCII letters, digits, '-', '_' and '~'"
    )]
    BadCharacter(char),
    #[error("has a placeholder that is not a whole segment; use exactly {{token}}, * or **")]
    BadPlaceholder,
    #[error("has more than one {{token}}")]
    MultipleTokens,
    #[error("has too many segments (at most 24, base path included)")]
    TooManySegments,
    #[error("may only contain literal segments, no {{token}}, * or **")]
    PlaceholderInBasePath,
}

/// One compiled pattern segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(Literal),
    Token,
    Star,
    Rest,
}

/// A lowercase literal segment, compared ASCII-case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Literal {
    text: Box<str>,
    /// Its first eight bytes packed, so that most comparisons are one integer compare.
    fingerprint: u64,
}

impl Literal {
    fn new(text: &str) -> Literal {
        let text: Box<str> = text.to_ascii_lowercase().into();
        Literal {
            fingerprint: fingerprint(text.as_bytes()),
            text,
        }
    }
}

/// The first eight bytes of `text`, ASCII-lowercased and packed; together with the
/// length it identifies texts of up to eight bytes exactly.
fn fingerprint(text: &[u8]) -> u64 {
    text.iter()
        .take(8)
        .fold(0, |fp, b| (fp << 8) | u64::from(b.to_ascii_lowercase()))
}

/// Methods an entry applies to; outside them the entry is skipped, not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Methods {
    Any,
    /// Everything but GET/HEAD/OPTIONS: the org kill switch is a PATCH on a resource
    /// every page load GETs, and only the write is share management.
    Unsafe,
}

#[derive(Debug, Clone)]
struct Entry {
    pattern: String,
    segs: Vec<Seg>,
    class: RouteClass,
    post: PostRule,
    methods: Methods,
}

/// The compiled route table: custom entries first, then the profile, first match wins.
#[derive(Debug, Clone)]
pub struct RouteTable {
    custom: Vec<Entry>,
    /// Matched once per lookup rather than once per profile entry: it is the same
    /// prefix for all of them and comparing it dominated the cost of classify.
    base: Vec<Seg>,
    /// Patterns without the base path (their `pattern` text includes it).
    profile: Vec<Entry>,
    /// The base path as a match view begins with it: without the leading
    /// `/`, with a trailing one (`langsmith/`), or empty.
    base_view: Vec<u8>,
}

type ProfileRow = (&'static str, RouteClass, PostRule, Methods);

/// Specific before generic: token-less and bulk routes before the `{token}` routes
/// that would swallow them, v2 threads before v2 `{token}`, POST-as-read routes
/// before the generic prefix of their family.
#[rustfmt::skip]
const LANGSMITH: &[ProfileRow] = {
    use Methods::{Any, Unsafe};
    use PostRule::{GenerateQuery, NotAllowed, Read};
    use RouteClass::{FeedbackToken, PublicApi, PublicBulk, PublicTokenless, ShareManage, SharePage};
    &[
        ("/public/{token}/r",                                   SharePage,       NotAllowed,    Any),
        ("/public/{token}/d",                                   SharePage,       NotAllowed,    Any),
        ("/public/{token}/d/compare",                           SharePage,       NotAllowed,    Any),
        ("/public/{token}/**",                                  SharePage,       NotAllowed,    Any),
        ("/api/v1/public/schemas/**",                           PublicTokenless, NotAllowed,    Any),
        ("/api/v1/public/download",                             PublicTokenless, NotAllowed,    Any),
        ("/api/v1/public/datasets/sessions-bulk",               PublicBulk,      NotAllowed,    Any),
        ("/api/v2/public/threads/{token}/**",                   PublicApi,       NotAllowed,    Any),
        ("/api/v1/public/{token}/runs/query",                   PublicApi,       Read,          Any),
        ("/api/v2/public/{token}/runs/query",                   PublicApi,       Read,          Any),
        ("/api/v1/public/{token}/examples/runs",                PublicApi,       Read,          Any),
        ("/api/v1/public/{token}/datasets/runs/query",          PublicApi,       Read,          Any),
        ("/api/v1/public/{token}/datasets/runs/stats",          PublicApi,       Read,          Any),
        ("/api/v1/public/{token}/datasets/runs/delta",          PublicApi,       Read,          Any),
        ("/api/v1/public/{token}/datasets/runs/delta/stream",   PublicApi,       Read,          Any),
        ("/api/v1/public/{token}/datasets/runs/generate-query", PublicApi,       GenerateQuery, Any),
        ("/v2/public/{token}/runs/v2/query",                    PublicApi,       Read,          Any),
        ("/api/v1/public/{token}/**",                           PublicApi,       NotAllowed,    Any),
        ("/api/v2/public/{token}/**",                           PublicApi,       NotAllowed,    Any),
        ("/v2/public/{token}/**",                               PublicApi,       NotAllowed,    Any),
        // LangSmith's frontend still serves the deprecated `/api/X` as
        // `/api/v1/X` (helm chart: `rewrite /api/(.*) /api/v1/$1`), so every
        // v1 route outside `/api/v1/public/{token}` (which `/api/public/{token}`
        // covers) has its `/api/` twin, with the same rules.
        ("/api/public/schemas/**",                              PublicTokenless, NotAllowed,    Any),
        ("/api/public/download",                                PublicTokenless, NotAllowed,    Any),
        ("/api/public/datasets/sessions-bulk",                  PublicBulk,      NotAllowed,    Any),
        ("/api/public/{token}/**",                              PublicApi,       NotAllowed,    Any),
        ("/api/public/**",                                      PublicApi,       NotAllowed,    Any),
        ("/api/v1/runs/*/share",                                ShareManage,     NotAllowed,    Any),
        ("/api/v1/datasets/*/share",                            ShareManage,     NotAllowed,    Any),
        ("/api/v2/runs/*/share",                                ShareManage,     NotAllowed,    Any),
        ("/api/v2/threads/*/share",                             ShareManage,     NotAllowed,    Any),
        ("/api/v1/workspaces/current/shared",                   ShareManage,     NotAllowed,    Any),
        ("/api/v1/orgs/current/info",                           ShareManage,     NotAllowed,    Unsafe),
        ("/api/v1/feedback/tokens/{token}",                     FeedbackToken,   NotAllowed,    Any),
        // The deprecated `/api/X` names of the v1 routes above (see the
        // comment at `/api/public/schemas/**`).
        ("/api/runs/*/share",                                   ShareManage,     NotAllowed,    Any),
        ("/api/datasets/*/share",                               ShareManage,     NotAllowed,    Any),
        ("/api/workspaces/current/shared",                      ShareManage,     NotAllowed,    Any),
        ("/api/orgs/current/info",                              ShareManage,     NotAllowed,    Unsafe),
        ("/api/feedback/tokens/{token}",                        FeedbackToken,   NotAllowed,    Any),
    ]
};

impl RouteTable {
    /// `base_path`: `""` or `/x/y` (no trailing slash); it prefixes every profile
    /// pattern. `custom`: for each `[[routes]]` entry, its path patterns, matched as
    /// written (not prefixed) and before the profile.
    pub fn new(
        profile: Profile,
        base_path: &str,
        custom: &[Vec<String>],
    ) -> Result<RouteTable, PatternError> {
        let base = parse_base_path(base_path).map_err(|problem| PatternError::BasePath {
            base_path: base_path.to_owned(),
            problem,
        })?;
        let mut custom_entries = Vec::new();
        for (route, patterns) in custom.iter().enumerate() {
            if patterns.is_empty() {
                return Err(PatternError::NoPatterns { route });
            }
            for pattern in patterns {
                let segs = parse_pattern(pattern).map_err(|problem| PatternError::Custom {
                    route,
                    pattern: pattern.clone(),
                    problem,
                })?;
                custom_entries.push(Entry {
                    pattern: pattern.clone(),
                    segs,
                    class: RouteClass::Custom(route),
                    post: PostRule::NotAllowed,
                    methods: Methods::Any,
                });
            }
        }
        let rows: &[ProfileRow] = match profile {
            Profile::LangSmith => LANGSMITH,
            Profile::Empty => &[],
        };
        let mut profile_entries = Vec::with_capacity(rows.len());
        for &(pattern, class, post, methods) in rows {
            let segs = parse_pattern(pattern).map_err(|problem| PatternError::BasePath {
                base_path: base_path.to_owned(),
                problem,
            })?;
            if base.len() + segs.len() > MAX_PATTERN_SEGMENTS {
                return Err(PatternError::BasePath {
                    base_path: base_path.to_owned(),
                    problem: PatternProblem::TooManySegments,
                });
            }
            profile_entries.push(Entry {
                pattern: format!("{base_path}{pattern}"),
                segs,
                class,
                post,
                methods,
            });
        }
        let base_view = match base_path.strip_prefix('/') {
            Some(b) if !b.is_empty() => format!("{b}/").into_bytes(),
            _ => Vec::new(),
        };
        Ok(RouteTable {
            custom: custom_entries,
            base,
            profile: profile_entries,
            base_view,
        })
    }

    /// Classifies an origin-form request target (`path[?query]`). Refuses what cannot
    /// be checked safely; otherwise the returned [`Route::path`] is what to forward.
    pub fn classify(&self, method: &Method, path_and_query: &str) -> Result<Route, PathError> {
        if path_and_query.contains('#') {
            return Err(PathError::Fragment);
        }
        let (raw_path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        if raw_path.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if !raw_path.starts_with('/') {
            return Err(PathError::NotOriginForm);
        }
        let (path, ambiguity) = canonicalize(raw_path)?;
        if names_another_host(path.as_bytes()) {
            return Err(PathError::SchemeRelative);
        }
        // Dot segments next to empty ones have no single reading: `//..`
        // removes the empty segment for an RFC 3986 resolver and the one
        // before it where `//` is merged first, and a path can mix both
        // (`/a//../x//../b` is `/a/x/b`, `/b`, or `/a/b` read half and
        // half). Browsers never send dot segments, so such a path is
        // refused on every route rather than read every way.
        if ambiguity == Some(PathError::DotSegment) && path.contains("//") {
            return Err(PathError::DotSegment);
        }
        let view = match_view(path.as_bytes());
        let split = Split::new(view);
        let hit = self.lookup_in(method, view, &split);
        if let Some(reason) = ambiguity {
            if hit.is_some() {
                return Err(reason);
            }
            for loose in loose_readings(path.as_bytes())? {
                if self.lookup(method, &loose).is_some()
                    || self.frontend_reading_hits(method, &loose, &Split::new(&loose))
                {
                    return Err(reason);
                }
            }
        }
        // A `[[routes]]` entry is the operator's own word on that path.
        let custom = hit
            .as_ref()
            .is_some_and(|(e, _)| matches!(e.class, RouteClass::Custom(_)));
        if !custom && self.frontend_reading_hits(method, view, &split) {
            return Err(PathError::ApiBelowRoot);
        }

        let method_param = query.is_some_and(has_method_param);
        let Some((entry, token)) = hit else {
            return Ok(Route {
                class: RouteClass::Other,
                path,
                query: query.map(str::to_owned),
                tokens: Vec::new(),
                raw_token: None,
                post: PostRule::NotAllowed,
                method_param,
                rule: String::new(),
            });
        };
        let mut raw_token = None;
        let tokens = match (entry.class, token) {
            (RouteClass::PublicBulk, _) => query.map(share_tokens).unwrap_or_default(),
            (_, Some(range)) => view
                .get(range)
                .map(|raw| {
                    // Nearly every token is spelled without an escape: the
                    // decoder's byte-by-byte walk (about 800 instructions
                    // for a UUID) is kept for the ones that have one.
                    let decoded = if memchr::memchr(b'%', raw).is_none() {
                        String::from_utf8_lossy(raw).into_owned()
                    } else {
                        percent_decode(raw).decode_utf8_lossy().into_owned()
                    };
                    if decoded.as_bytes() != raw {
                        raw_token = Some(String::from_utf8_lossy(raw).into_owned());
                    }
                    vec![decoded]
                })
                .unwrap_or_default(),
            (_, None) => Vec::new(),
        };
        Ok(Route {
            class: entry.class,
            query: query.map(str::to_owned),
            tokens,
            raw_token,
            post: entry.post,
            method_param,
            rule: entry.pattern.clone(),
            path,
        })
    }

    /// For `sharegate check`: every compiled pattern in match order with its class and
    /// post rule. `/api/v1/orgs/current/info` applies only to methods other than
    /// GET/HEAD/OPTIONS.
    pub fn entries(&self) -> Vec<(String, RouteClass, PostRule)> {
        self.custom
            .iter()
            .chain(&self.profile)
            .map(|e| (e.pattern.clone(), e.class, e.post))
            .collect()
    }

    /// First entry matching `view` (a path without its leading `/`), with the byte
    /// range of the captured token inside `view`.
    fn lookup<'a>(
        &'a self,
        method: &Method,
        view: &[u8],
    ) -> Option<(&'a Entry, Option<std::ops::Range<usize>>)> {
        self.lookup_in(method, view, &Split::new(view))
    }

    /// [`Self::lookup`] with `view` already split.
    fn lookup_in<'a>(
        &'a self,
        method: &Method,
        view: &[u8],
        split: &Split,
    ) -> Option<(&'a Entry, Option<std::ops::Range<usize>>)> {
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let try_entries = |entries: &'a [Entry], skip: usize| {
            entries.iter().find_map(|entry| {
                if entry.methods == Methods::Unsafe && safe {
                    return None;
                }
                split
                    .matches(&entry.segs, view, skip)
                    .map(|token| (entry, token))
            })
        };
        try_entries(&self.custom, 0).or_else(|| {
            split
                .has_prefix(&self.base, view)
                .then(|| try_entries(&self.profile, self.base.len()))
                .flatten()
        })
    }

    /// LangSmith's frontend (the nginx of its helm chart) routes by unanchored
    /// regular expressions: `location ~ /api` with `rewrite /api/(.*)
    /// /api/v1/$1` act on the first `/api/` anywhere in the path, and under a
    /// base path `~ /<base>/api` likewise, so `/x/api/runs/ID/share` reaches
    /// `/api/v1/runs/ID/share` while the table reads it as an ordinary path.
    /// So with the LangSmith profile, an `api` segment below the app's root
    /// (after the base path, or right after the base path's segments
    /// anywhere) is read as the frontend would: from there, under the base
    /// path; if that reading reaches a route, the path is ambiguous. An `api`
    /// segment outside the app (not under the base path) is not LangSmith's
    /// to route. Paths without one cost a pass over their segments.
    fn frontend_reading_hits(&self, method: &Method, view: &[u8], split: &Split) -> bool {
        if self.profile.is_empty() {
            return false;
        }
        let base = self.base_view.as_slice();
        let root = base.len();
        let under_base = view
            .get(..root)
            .is_some_and(|b| b.eq_ignore_ascii_case(base));
        let after_base = |start: usize| {
            start
                .checked_sub(root)
                .and_then(|from| view.get(from..start))
                .is_some_and(|b| b.eq_ignore_ascii_case(base))
        };
        let reaches_a_route = |start: usize| {
            if start <= root || !(under_base || after_base(start)) {
                return false;
            }
            let rest = view.get(start..).unwrap_or_default();
            let mut reading = Vec::with_capacity(root + rest.len());
            reading.extend_from_slice(base);
            reading.extend_from_slice(rest);
            self.lookup(method, &reading).is_some()
        };
        // The split already has every segment's length and fingerprint; past
        // its capacity, the segments are found again.
        if !split.overflow {
            return split.refs().iter().any(|r| {
                r.len == 3 && r.fingerprint == API_FINGERPRINT && reaches_a_route(r.start)
            });
        }
        let mut at = 0;
        view.split(|&b| b == b'/').any(|seg| {
            let start = at;
            at += seg.len() + 1;
            seg.eq_ignore_ascii_case(b"api") && reaches_a_route(start)
        })
    }
}

/// [`fingerprint`] of `api`: `a`, `p`, `i` packed.
const API_FINGERPRINT: u64 = 0x61_70_69;

/// The part of a path that patterns see: no leading `/`, and a single trailing `/`
/// dropped so that `/public/T/r/` is the page `/public/T/r`.
fn match_view(path: &[u8]) -> &[u8] {
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    rest.strip_suffix(b"/").unwrap_or(rest)
}

/// Segment boundaries of a match view, kept on the stack; classify runs on every
/// request and most patterns fail on their first or second segment.
struct Split {
    segs: [SegRef; SPLIT_CAPACITY],
    len: usize,
    /// More segments exist than `ranges` holds; only a `**` pattern can match then.
    overflow: bool,
}

/// One segment of a split view.
#[derive(Clone, Copy, Default)]
struct SegRef {
    start: usize,
    len: usize,
    fingerprint: u64,
}

impl SegRef {
    fn text<'v>(&self, view: &'v [u8]) -> &'v [u8] {
        view.get(self.start..self.start + self.len)
            .unwrap_or_default()
    }

    fn is(&self, lit: &Literal, view: &[u8]) -> bool {
        self.fingerprint == lit.fingerprint
            && self.len == lit.text.len()
            && (self.len <= 8 || self.text(view).eq_ignore_ascii_case(lit.text.as_bytes()))
    }
}

impl Split {
    fn new(view: &[u8]) -> Split {
        let mut split = Split {
            segs: [SegRef::default(); SPLIT_CAPACITY],
            len: 0,
            overflow: false,
        };
        if view.is_empty() {
            return split;
        }
        let mut start = 0;
        loop {
            let tail = view.get(start..).unwrap_or_default();
            let end = tail.iter().position(|&b| b == b'/').map(|p| start + p);
            let Some(slot) = split.segs.get_mut(split.len) else {
                split.overflow = true;
                break;
            };
            let len = end.unwrap_or(view.len()) - start;
            *slot = SegRef {
                start,
                len,
                fingerprint: fingerprint(tail.get(..len).unwrap_or_default()),
            };
            split.len += 1;
            match end {
                Some(end) => start = end + 1,
                None => break,
            }
        }
        split
    }

    fn refs(&self) -> &[SegRef] {
        self.segs.get(..self.len).unwrap_or_default()
    }

    /// Whether the view starts with the literal segments `prefix`.
    fn has_prefix(&self, prefix: &[Seg], view: &[u8]) -> bool {
        let mut refs = self.refs().iter();
        prefix.iter().all(|seg| match (seg, refs.next()) {
            (Seg::Lit(lit), Some(r)) => r.is(lit, view),
            _ => false,
        })
    }

    /// `Some(token range)` when `segs` matches the whole view after its first `skip`
    /// segments.
    fn matches(
        &self,
        segs: &[Seg],
        view: &[u8],
        skip: usize,
    ) -> Option<Option<std::ops::Range<usize>>> {
        let mut token = None;
        let mut refs = self.refs().get(skip..)?.iter();
        for seg in segs {
            let r = match seg {
                Seg::Rest => return Some(token),
                _ => refs.next()?,
            };
            match seg {
                Seg::Lit(lit) if r.is(lit, view) => {}
                Seg::Token if r.len > 0 => token = Some(r.start..r.start + r.len),
                Seg::Star if r.len > 0 => {}
                _ => return None,
            }
        }
        if refs.next().is_some() || self.overflow {
            return None;
        }
        Some(token)
    }
}

/// Builds the strict canonical path and notes the first (most telling) ambiguity.
fn canonicalize(raw: &str) -> Result<(String, Option<PathError>), PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut flags = Flags::default();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let v = match (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(hi), Some(lo)) => (hi << 4) | lo,
                _ => return Err(PathError::BadEscape),
            };
            i += 3;
            if is_unreserved(v) {
                out.push(v);
                continue;
            }
            out.extend_from_slice(&[b'%', hex_digit(v >> 4), hex_digit(v & 0xF)]);
            flags.note_encoded(v);
        } else {
            let run = bytes.get(i..).unwrap_or_default();
            let run = run.split(|&c| c == b'%').next().unwrap_or_default();
            run.iter().for_each(|&c| flags.note_literal(c));
            out.extend_from_slice(run);
            i += run.len();
        }
    }
    let rest = out.get(1..).unwrap_or_default();
    let mut segs = rest.split(|&b| b == b'/').peekable();
    while let Some(seg) = segs.next() {
        // A single trailing `/` is the only empty segment allowed: patterns treat it
        // as absent, and `/` alone is the root.
        if seg.is_empty() && segs.peek().is_some() {
            flags.set(PathError::EmptySegment);
        }
        if is_dot_segment(seg) {
            flags.set(PathError::DotSegment);
        } else if seg.ends_with(b".") || seg.ends_with(b"%2E") {
            // Windows-family servers drop trailing dots: `share.` is `share` there.
            flags.set(PathError::TrailingDot);
        }
        if seg.starts_with(b"%20") || seg.ends_with(b"%20") {
            flags.set(PathError::Whitespace);
        }
    }
    // Only ASCII was replaced and every other byte copied, so this cannot fail; the
    // error arm keeps the hot path free of panics all the same.
    let path = String::from_utf8(out).map_err(|_| PathError::NonAscii)?;
    Ok((path, flags.first()))
}

/// Whether the path begins `//` or `/\\` once decoded (up to the decoding
/// bound): not an absolute path at all (RFC 3986 §3.3 forbids an empty first
/// segment), and the start of a URL of another host to any upstream or
/// browser that echoes the path into a redirect (`Location: //evil/...`).
/// Refused on every route, not only on protected ones: the harm is the
/// open redirect, wherever the path lands.
fn names_another_host(path: &[u8]) -> bool {
    // Decoding changes nothing before the first `%`: unless the second byte
    // is one, the spelled bytes decide (and no copy is made per request).
    match path.get(..2) {
        Some([b'/', b'/' | b'\\']) => return true,
        Some([_, b'%']) => {}
        _ => return false,
    }
    // Decoding never changes a leading `//` once it is there, so the fully
    // decoded head decides; nested past the bound it is `ExcessiveEncoding`,
    // which the ambiguity check refuses anyway.
    let head = path.get(..path.len().min(64)).unwrap_or(path);
    fully_decoded(head, false).is_ok_and(|d| matches!(d.get(..2), Some([b'/', b'/' | b'\\'])))
}

/// Ambiguities seen in a path, reported by priority rather than position so that the
/// reason names the most telling trick.
#[derive(Default)]
struct Flags(u32);

const PRIORITY: [PathError; 13] = [
    PathError::DotSegment,
    PathError::EncodedSeparator,
    PathError::EncodedDot,
    PathError::DoubleEncoding,
    PathError::EncodedDelimiter,
    PathError::Nul,
    PathError::ControlCharacter,
    PathError::Backslash,
    PathError::PathParameter,
    PathError::EmptySegment,
    PathError::Whitespace,
    PathError::TrailingDot,
    PathError::NonAscii,
];

impl Flags {
    fn set(&mut self, reason: PathError) {
        if let Some(bit) = PRIORITY.iter().position(|r| *r == reason) {
            self.0 |= 1 << bit;
        }
    }

    fn first(&self) -> Option<PathError> {
        PRIORITY
            .iter()
            .enumerate()
            .find(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, r)| *r)
    }

    fn note_encoded(&mut self, v: u8) {
        match v {
            b'/' | b'\\' => self.set(PathError::EncodedSeparator),
            b'.' => self.set(PathError::EncodedDot),
            b'%' => self.set(PathError::DoubleEncoding),
            b'?' | b'#' | b';' => self.set(PathError::EncodedDelimiter),
            0 => self.set(PathError::Nul),
            0x01..=0x1F | 0x7F => self.set(PathError::ControlCharacter),
            0x80..=0xFF => self.set(PathError::NonAscii),
            _ => {}
        }
    }

    fn note_literal(&mut self, b: u8) {
        if b.is_ascii_graphic() && b != b'\\' && b != b';' {
            return;
        }
        match b {
            b'\\' => self.set(PathError::Backslash),
            b';' => self.set(PathError::PathParameter),
            b' ' => self.set(PathError::Whitespace),
            0 => self.set(PathError::Nul),
            0x01..=0x1F | 0x7F => self.set(PathError::ControlCharacter),
            0x80..=0xFF => self.set(PathError::NonAscii),
            _ => {}
        }
    }
}

/// `.` or `..`, with any of the dots written as `%2E` (hex already uppercased).
fn is_dot_segment(seg: &[u8]) -> bool {
    matches!(seg, b"." | b".." | b"%2E" | b"%2E%2E" | b".%2E" | b"%2E.")
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_digit(nibble: u8) -> u8 {
    if nibble < 10 {
        b'0' + nibble
    } else {
        b'A' + (nibble - 10)
    }
}

/// The worst-case readings of an ambiguous path, as match views. Upstreams differ in
/// whether a decoded `?`, `#` or NUL ends the path before or after dot segments are
/// resolved; in whether `//` is merged before `..` is resolved (`/a//../b` is `/b`
/// after merging, `/a/b` to an RFC 3986 §5.2.4 resolver, where `..` removes the
/// empty segment); and in whether segments are trimmed before they are compared with
/// `..` (`..%20` is `..` to a forgiving server, an ordinary segment that a later `..`
/// removes to an exact one); and in whether look-alikes (full-width `．`, overlong
/// UTF-8) are folded to the ASCII they pose as (a "best fit" server) or kept as
/// ordinary bytes (a `..` after a kept one removes it, not the segment before: the
/// fuzzer found `/public%2F%ef%bc%8e/..\26`, which is `/public/26` that way). Every
/// combination is returned.
fn loose_readings(path: &[u8]) -> Result<Vec<Vec<u8>>, PathError> {
    let folded = fully_decoded(path, true)?;
    let kept = fully_decoded(path, false)?;
    // Most paths hold no look-alike: then both are the same, read once.
    let decoded = if kept == folded {
        vec![folded]
    } else {
        vec![folded, kept]
    };
    let mut readings = Vec::with_capacity(8 * decoded.len());
    for mut cur in decoded {
        for b in &mut cur {
            if *b == b'\\' {
                *b = b'/';
            }
        }
        let cut = cur
            .iter()
            .position(|b| matches!(b, b'?' | b'#' | 0))
            .unwrap_or(cur.len());
        let head = cur.get(..cut).unwrap_or_default();
        for empty in [Empty::Merge, Empty::Keep] {
            for segments in [Segments::Forgiving, Segments::Exact] {
                readings.push(join(&normalize_segments(head, empty, segments)));
                readings.push(join(&truncate_at_delimiter(normalize_segments(
                    &cur, empty, segments,
                ))));
            }
        }
    }
    Ok(readings)
}

/// Percent-decodes until nothing changes (folding look-alikes on the way when
/// `fold`), or `ExcessiveEncoding` past the bound.
fn fully_decoded(path: &[u8], fold: bool) -> Result<Vec<u8>, PathError> {
    let mut cur = path.to_vec();
    for _ in 0..MAX_DECODE_ROUNDS {
        let decoded: Vec<u8> = percent_decode(&cur).collect();
        let next = if fold {
            undo_lookalikes(&decoded)
        } else {
            decoded
        };
        if next == cur {
            return Ok(cur);
        }
        cur = next;
    }
    Err(PathError::ExcessiveEncoding)
}

/// How empty segments take part in dot-segment resolution.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Empty {
    /// Merged away first, as servers that collapse `//` do.
    Merge,
    /// Kept as segments that `..` can remove (RFC 3986 §5.2.4), dropped at the end.
    Keep,
}

/// How a segment is read before it is compared with `.` and `..`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Segments {
    /// `;params` dropped; whitespace, NUL and (Windows-family) trailing dots trimmed.
    Forgiving,
    /// Byte for byte, as an RFC 3986 resolver reads it.
    Exact,
}

/// Resolves dot segments and collapses empty segments; with
/// [`Segments::Forgiving`] also drops `;params` and trims each segment, the way the
/// most forgiving upstream would.
fn normalize_segments(path: &[u8], empty: Empty, segments: Segments) -> Vec<&[u8]> {
    let forgiving = segments == Segments::Forgiving;
    let mut segs: Vec<&[u8]> = Vec::new();
    for seg in path.split(|&b| b == b'/') {
        let seg = if forgiving {
            trim_loose(seg.split(|&b| b == b';').next().unwrap_or_default())
        } else {
            seg
        };
        match seg {
            b"." => {}
            b".." => {
                segs.pop();
            }
            seg => {
                let seg = if forgiving {
                    trim_loose(trim_trailing_dots(seg))
                } else {
                    seg
                };
                if !seg.is_empty() || empty == Empty::Keep {
                    segs.push(seg);
                }
            }
        }
    }
    segs.retain(|seg| !seg.is_empty());
    segs
}

fn truncate_at_delimiter(mut segs: Vec<&[u8]>) -> Vec<&[u8]> {
    let found = segs.iter().enumerate().find_map(|(k, seg)| {
        seg.iter()
            .position(|b| matches!(b, b'?' | b'#' | 0))
            .map(|at| (k, at))
    });
    if let Some((k, at)) = found {
        let head = segs.get(k).and_then(|s| s.get(..at)).unwrap_or_default();
        segs.truncate(k);
        if !head.is_empty() {
            segs.push(head);
        }
    }
    segs
}

fn trim_loose(mut seg: &[u8]) -> &[u8] {
    let junk = |b: &u8| b.is_ascii_whitespace() || *b == 0 || *b == 0x0B;
    while let Some((first, rest)) = seg.split_first() {
        if !junk(first) {
            break;
        }
        seg = rest;
    }
    while let Some((last, rest)) = seg.split_last() {
        if !junk(last) {
            break;
        }
        seg = rest;
    }
    seg
}

fn trim_trailing_dots(mut seg: &[u8]) -> &[u8] {
    while let Some(rest) = seg.strip_suffix(b".") {
        seg = rest;
    }
    seg
}

fn join(segs: &[&[u8]]) -> Vec<u8> {
    segs.join(&b'/')
}

/// Maps overlong UTF-8 encodings of ASCII (`C0 AE` is `.` to a lax decoder) and the
/// full-width `．／＼` (which NFKC folds to `./\`) to the ASCII they pose as.
fn undo_lookalikes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b0) = bytes.get(i) {
        let cont = |k: usize| bytes.get(i + k).copied().filter(|b| b & 0xC0 == 0x80);
        match (b0, cont(1), cont(2), cont(3)) {
            (0xC0 | 0xC1, Some(b1), _, _) => {
                out.push(((b0 & 0x1F) << 6) | (b1 & 0x3F));
                i += 2;
            }
            (0xE0, Some(b1 @ 0x80..=0x81), Some(b2), _) => {
                out.push(((b1 & 0x3F) << 6) | (b2 & 0x3F));
                i += 3;
            }
            (0xF0, Some(0x80), Some(b2 @ 0x80..=0x81), Some(b3)) => {
                out.push(((b2 & 0x3F) << 6) | (b3 & 0x3F));
                i += 4;
            }
            (0xEF, Some(0xBC), Some(b2 @ (0x8E | 0x8F | 0xBC)), _) => {
                out.push(match b2 {
                    0x8E => b'.',
                    0x8F => b'/',
                    _ => b'\\',
                });
                i += 3;
            }
            _ => {
                out.push(b0);
                i += 1;
            }
        }
    }
    out
}

/// Query parameters as `(name, value)`, split on `&` and on `;` too: some frameworks
/// still honour `;`, and seeing more parameters than the upstream only makes policy
/// stricter.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Form-decodes `s`: `+` is a space, but a `%2B` stays `+`, hence the order.
fn form_decode(s: &str) -> Vec<u8> {
    percent_decode(s.replace('+', " ").as_bytes()).collect()
}

fn name_is(raw_name: &str, wanted: &str) -> bool {
    if !raw_name.contains(['%', '+']) {
        return raw_name.eq_ignore_ascii_case(wanted);
    }
    raw_name.len() >= wanted.len() && form_decode(raw_name).eq_ignore_ascii_case(wanted.as_bytes())
}

fn has_method_param(query: &str) -> bool {
    query_pairs(query).any(|(name, _)| name_is(name, "_method"))
}

/// Whether a request body carries a `_method` field where frameworks read
/// one on a POST: a form (Rails' Rack::MethodOverride, Laravel, Symfony;
/// Rack takes a body without `Content-Type` as a form too), a multipart
/// form's part named `_method`, or a top-level `_method` key of a JSON
/// object (Laravel reads JSON input as it reads a form). Other bodies are
/// not read as parameters by anyone. `content_type` is the request's.
pub fn body_has_method_param(content_type: Option<&[u8]>, body: &[u8]) -> bool {
    if body.is_empty() {
        return false;
    }
    let essence = content_type
        .map(|v| {
            v.split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii()
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    let contains = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    match essence.as_slice() {
        b"" | b"application/x-www-form-urlencoded" => {
            // The name may be percent-encoded letter by letter, so the
            // pairs are read, when the body could hold such a name at all
            // (a `_`, or a `%` that may encode one).
            (contains(b"_") || contains(b"%"))
                && String::from_utf8_lossy(body)
                    .split(['&', ';'])
                    .filter_map(|p| p.split('=').next())
                    .any(|name| name_is(name.trim(), "_method"))
        }
        b"multipart/form-data" => {
            let lower = body.to_ascii_lowercase();
            let lower_has = |n: &[u8]| memchr::memmem::find(&lower, n).is_some();
            lower_has(b"name=\"_method\"") || lower_has(b"name=_method")
        }
        // Laravel's test: the type mentions JSON anywhere.
        e if memchr::memmem::find(e, b"json").is_some() => {
            // A key spelled with escapes holds `\u`; otherwise it is plain.
            (contains(b"_method") || contains(b"\\u")) && json_has_key(body, "_method")
        }
        _ => false,
    }
}

/// Whether `body` is a JSON object with the top-level key `key`.
fn json_has_key(body: &[u8], key: &str) -> bool {
    use serde::de::IgnoredAny;
    serde_json::from_slice::<std::collections::HashMap<String, IgnoredAny>>(body)
        .is_ok_and(|m| m.contains_key(key))
}

fn share_tokens(query: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for (_, value) in query_pairs(query).filter(|(name, _)| name_is(name, "share_tokens")) {
        let value = form_decode(value);
        for token in String::from_utf8_lossy(&value).split(',') {
            let token = token.trim();
            if !token.is_empty() {
                tokens.push(token.to_owned());
            }
        }
    }
    tokens
}

fn parse_base_path(base: &str) -> Result<Vec<Seg>, PatternProblem> {
    if base.is_empty() {
        return Ok(Vec::new());
    }
    if base.ends_with('/') {
        return Err(PatternProblem::TrailingSlash);
    }
    let segs = parse_pattern(base)?;
    if segs.iter().any(|s| !matches!(s, Seg::Lit(_))) {
        return Err(PatternProblem::PlaceholderInBasePath);
    }
    if segs.len() > MAX_BASE_SEGMENTS {
        return Err(PatternProblem::TooManySegments);
    }
    Ok(segs)
}

fn parse_pattern(pattern: &str) -> Result<Vec<Seg>, PatternProblem> {
    let body = pattern
        .strip_prefix('/')
        .ok_or(PatternProblem::NoLeadingSlash)?;
    let mut segs = Vec::new();
    for seg in body.split('/') {
        if segs.last() == Some(&Seg::Rest) {
            return Err(PatternProblem::RestNotLast);
        }
        let parsed = match seg {
            "" => return Err(PatternProblem::EmptySegment),
            "{token}" if segs.contains(&Seg::Token) => return Err(PatternProblem::MultipleTokens),
            "{token}" => Seg::Token,
            "*" => Seg::Star,
            "**" => Seg::Rest,
            _ => {
                if let Some(c) = seg.chars().find(|c| !is_unreserved_char(*c)) {
                    return Err(match c {
                        '.' | '%' => PatternProblem::DotOrPercent,
                        '{' | '}' | '*' => PatternProblem::BadPlaceholder,
                        _ => PatternProblem::BadCharacter(c),
                    });
                }
                Seg::Lit(Literal::new(seg))
            }
        };
        segs.push(parsed);
    }
    if segs.len() > MAX_PATTERN_SEGMENTS {
        return Err(PatternProblem::TooManySegments);
    }
    Ok(segs)
}

fn is_unreserved_char(c: char) -> bool {
    c.is_ascii() && is_unreserved(c as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(base: &str) -> RouteTable {
        RouteTable::new(Profile::LangSmith, base, &[]).unwrap()
    }

    fn classify(t: &RouteTable, method: Method, target: &str) -> Result<Route, PathError> {
        t.classify(&method, target)
    }

    fn class_of(t: &RouteTable, method: Method, target: &str) -> RouteClass {
        match classify(t, method, target) {
            Ok(route) => route.class,
            Err(e) => panic!("{target} refused: {e}"),
        }
    }

    fn get(t: &RouteTable, target: &str) -> Route {
        classify(t, Method::GET, target).unwrap_or_else(|e| panic!("{target} refused: {e}"))
    }

    #[test]
    fn share_pages() {
        let t = table("");
        for (path, rule) in [
            ("/public/T1/r", "/public/{token}/r"),
            ("/public/T1/d", "/public/{token}/d"),
            ("/public/T1/d/compare", "/public/{token}/d/compare"),
            ("/public/T1/r/", "/public/{token}/r"),
            ("/public/T1", "/public/{token}/**"),
            ("/public/T1/d/compare/more/segments", "/public/{token}/**"),
        ] {
            let route = get(&t, path);
            assert_eq!(route.class, RouteClass::SharePage, "{path}");
            assert_eq!(route.rule, rule, "{path}");
            assert_eq!(route.tokens, vec!["T1".to_owned()], "{path}");
            assert_eq!(route.post, PostRule::NotAllowed);
            assert_eq!(route.path, path);
        }
        let route = get(&t, "/public/T1/d/compare?selectedSessions=a,b");
        assert_eq!(route.query.as_deref(), Some("selectedSessions=a,b"));
        assert_eq!(route.path, "/public/T1/d/compare");
        assert_eq!(get(&t, "/public").class, RouteClass::Other);
        assert_eq!(get(&t, "/public/").class, RouteClass::Other);
    }

    #[test]
    fn tokenless_routes_precede_token_routes() {
        let t = table("");
        for path in [
            "/api/v1/public/schemas/v1/run.json",
            "/api/v1/public/schemas",
            "/api/v1/public/download",
        ] {
            let route = get(&t, path);
            assert_eq!(route.class, RouteClass::PublicTokenless, "{path}");
            assert!(route.tokens.is_empty());
        }
        let route = get(&t, "/api/v1/public/download?url=x");
        assert_eq!(route.rule, "/api/v1/public/download");
    }

    #[test]
    fn bulk_tokens_from_query() {
        let t = table("");
        let route = get(
            &t,
            "/api/v1/public/datasets/sessions-bulk?share_tokens=a,b&share_tokens=c\
             &share_tokens=d%2Ce&other=x&share_tokens=+f+&SHARE%5FTOKENS=g&share_tokens=,,",
        );
        assert_eq!(route.class, RouteClass::PublicBulk);
        assert_eq!(route.rule, "/api/v1/public/datasets/sessions-bulk");
        assert_eq!(route.tokens, ["a", "b", "c", "d", "e", "f", "g"]);
        let none = get(&t, "/api/v1/public/datasets/sessions-bulk");
        assert!(none.tokens.is_empty());
        assert_eq!(none.query, None);
        let plus = get(
            &t,
            "/api/v1/public/datasets/sessions-bulk?share_tokens=a%2Bb",
        );
        assert_eq!(plus.tokens, ["a+b"]);
    }

    #[test]
    fn public_api_post_rules() {
        let t = table("");
        for (path, post) in [
            ("/api/v1/public/T/runs/query", PostRule::Read),
            ("/api/v2/public/T/runs/query", PostRule::Read),
            ("/api/v1/public/T/examples/runs", PostRule::Read),
            ("/api/v1/public/T/datasets/runs/query", PostRule::Read),
            ("/api/v1/public/T/datasets/runs/stats", PostRule::Read),
            ("/api/v1/public/T/datasets/runs/delta", PostRule::Read),
            (
                "/api/v1/public/T/datasets/runs/delta/stream",
                PostRule::Read,
            ),
            ("/v2/public/T/runs/v2/query", PostRule::Read),
            (
                "/api/v1/public/T/datasets/runs/generate-query",
                PostRule::GenerateQuery,
            ),
            ("/api/v1/public/T/runs/query/extra", PostRule::NotAllowed),
            ("/api/v1/public/T/runs", PostRule::NotAllowed),
            ("/api/v1/public/T/datasets", PostRule::NotAllowed),
            ("/api/v2/public/T/anything", PostRule::NotAllowed),
            ("/v2/public/T/runs", PostRule::NotAllowed),
            ("/api/public/T/x/y", PostRule::NotAllowed),
        ] {
            let route = classify(&t, Method::POST, path).unwrap();
            assert_eq!(route.class, RouteClass::PublicApi, "{path}");
            assert_eq!(route.post, post, "{path}");
            assert_eq!(route.tokens, ["T"], "{path}");
        }
        let route = get(&t, "/api/public");
        assert_eq!(
            (route.class, route.rule.as_str()),
            (RouteClass::PublicApi, "/api/public/**")
        );
        assert!(route.tokens.is_empty());
        assert_eq!(get(&t, "/v2/public").class, RouteClass::Other);
    }

    #[test]
    fn v2_threads_precede_v2_token() {
        let t = table("");
        let route = get(&t, "/api/v2/public/threads/T/messages");
        assert_eq!(route.rule, "/api/v2/public/threads/{token}/**");
        assert_eq!(route.tokens, ["T"]);
        // "threads" never becomes a token that unlocks POST-as-read.
        let route = classify(&t, Method::POST, "/api/v2/public/threads/runs/query").unwrap();
        assert_eq!(route.post, PostRule::NotAllowed);
        assert_eq!(route.tokens, ["runs"]);
    }

    #[test]
    fn share_management() {
        let t = table("");
        for path in [
            "/api/v1/runs/0f1e/share",
            "/api/v1/datasets/0f1e/share",
            "/api/v2/runs/0f1e/share",
            "/api/v2/threads/0f1e/share",
            "/api/v1/workspaces/current/shared",
            "/api/v1/runs/0f1e/share/",
        ] {
            for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
                let route = classify(&t, method.clone(), path).unwrap();
                assert_eq!(route.class, RouteClass::ShareManage, "{method} {path}");
                assert!(route.tokens.is_empty());
                assert_eq!(route.post, PostRule::NotAllowed);
            }
        }
        assert_eq!(
            get(&t, "/api/v1/runs/0f1e/share/x").class,
            RouteClass::Other
        );
        assert_eq!(get(&t, "/api/v1/runs/share").class, RouteClass::Other);
    }

    #[test]
    fn org_info_is_share_management_only_when_written() {
        let t = table("");
        let path = "/api/v1/orgs/current/info";
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(class_of(&t, method, path), RouteClass::Other);
        }
        for method in [Method::PATCH, Method::PUT, Method::POST, Method::DELETE] {
            let route = classify(&t, method, path).unwrap();
            assert_eq!(route.class, RouteClass::ShareManage);
            assert_eq!(route.rule, path);
        }
        let custom = Method::from_bytes(b"PROPPATCH").unwrap();
        assert_eq!(class_of(&t, custom, path), RouteClass::ShareManage);
        // An ambiguous spelling is refused for the write, harmless for the read.
        assert_eq!(
            classify(&t, Method::PATCH, "/api/v1/orgs/current//info"),
            Err(PathError::EmptySegment)
        );
        assert_eq!(
            class_of(&t, Method::GET, "/api/v1/orgs/current//info"),
            RouteClass::Other
        );
    }

    #[test]
    fn feedback_tokens() {
        let t = table("");
        for method in [Method::GET, Method::POST] {
            let route = classify(&t, method, "/api/v1/feedback/tokens/FT").unwrap();
            assert_eq!(route.class, RouteClass::FeedbackToken);
            assert_eq!(route.tokens, ["FT"]);
            assert_eq!(route.rule, "/api/v1/feedback/tokens/{token}");
        }
        assert_eq!(get(&t, "/api/v1/feedback/tokens").class, RouteClass::Other);
        assert_eq!(
            get(&t, "/api/v1/feedback/tokens/FT/x").class,
            RouteClass::Other
        );
    }

    #[test]
    fn everything_else_is_other() {
        let t = table("");
        for path in [
            "/",
            "/api/v1/runs",
            "/api/v1/sessions/x",
            "/assets/index-abc.js",
            "/o/org/projects",
            "/publicx/T/r",
        ] {
            let route = get(&t, path);
            assert_eq!(route.class, RouteClass::Other, "{path}");
            assert_eq!(route.rule, "");
            assert!(route.tokens.is_empty());
            assert_eq!(route.path, path);
        }
    }

    /// LangSmith's frontend routes `/api/` anywhere in a path to its API,
    /// and the deprecated `/api/X` to `/api/v1/X`: the table reads paths as
    /// it does.
    #[test]
    fn paths_the_frontend_reads_from_a_deeper_api_segment() {
        let t = table("");
        for (method, target) in [
            (Method::GET, "/x/api/public/T/run"),
            (Method::GET, "/x/api/v1/public/T/run"),
            (Method::DELETE, "/x/api/public/T/run"),
            (Method::PUT, "/x/api/runs/ID/share"),
            (Method::GET, "/static/js/api/workspaces/current/shared"),
            (Method::GET, "/public/T/api/workspaces/current/shared"),
            (Method::GET, "/apix/api/public/T/run"),
            (Method::GET, "/x/API/public/T/run"),
            (Method::GET, "/x/%61pi/public/T/run"),
            (Method::PATCH, "/o/x/api/orgs/current/info"),
            (Method::GET, "/x/api/v2/public/threads/T/messages"),
            (
                Method::GET,
                "/x/api/public/datasets/sessions-bulk?share_tokens=a",
            ),
            (Method::GET, "/api/v1/x/api/public/T/run"),
        ] {
            assert_eq!(
                classify(&t, method.clone(), target).map(|r| r.class),
                Err(PathError::ApiBelowRoot),
                "{method} {target}"
            );
        }
        // Past the segments the split keeps.
        let deep = format!("{}/api/public/T/run", "/x".repeat(SPLIT_CAPACITY + 4));
        assert_eq!(
            classify(&t, Method::GET, &deep).map(|r| r.class),
            Err(PathError::ApiBelowRoot)
        );
        // Readings that reach no route: nothing to confuse.
        for (method, target) in [
            (Method::GET, "/hub/me/api"),
            (Method::GET, "/x/api"),
            (Method::GET, "/x/api/v1/runs/ID"),
            (Method::GET, "/api/v1/repos/me/api/commits"),
            (Method::GET, "/x/apix/public/T/run"),
            (Method::GET, "/x/api/orgs/current/info"),
        ] {
            assert_eq!(
                class_of(&t, method.clone(), target),
                RouteClass::Other,
                "{method} {target}"
            );
        }
        // The deprecated aliases, with their v1 twins' rules.
        for (method, target, class) in [
            (Method::PUT, "/api/runs/ID/share", RouteClass::ShareManage),
            (
                Method::DELETE,
                "/api/datasets/ID/share",
                RouteClass::ShareManage,
            ),
            (
                Method::GET,
                "/api/workspaces/current/shared",
                RouteClass::ShareManage,
            ),
            (
                Method::PATCH,
                "/api/orgs/current/info",
                RouteClass::ShareManage,
            ),
            (Method::GET, "/api/orgs/current/info", RouteClass::Other),
            (
                Method::POST,
                "/api/feedback/tokens/T",
                RouteClass::FeedbackToken,
            ),
            (
                Method::GET,
                "/api/public/schemas/v1/run.json",
                RouteClass::PublicTokenless,
            ),
            (
                Method::GET,
                "/api/public/download",
                RouteClass::PublicTokenless,
            ),
        ] {
            assert_eq!(
                class_of(&t, method.clone(), target),
                class,
                "{method} {target}"
            );
        }
        let bulk = get(&t, "/api/public/datasets/sessions-bulk?share_tokens=a,b");
        assert_eq!(
            (bulk.class, bulk.tokens),
            (RouteClass::PublicBulk, vec!["a".to_owned(), "b".to_owned()])
        );

        // Under a base path: below it, or after the base's segments anywhere.
        let t = table("/langsmith");
        for (method, target) in [
            (Method::GET, "/x/langsmith/api/public/T/run"),
            (Method::GET, "/x/langsmith/api/v1/public/T/run"),
            (Method::PUT, "/langsmith/x/api/runs/ID/share"),
            (Method::PUT, "/LangSmith/x/api/v1/runs/ID/share"),
        ] {
            assert_eq!(
                classify(&t, method.clone(), target).map(|r| r.class),
                Err(PathError::ApiBelowRoot),
                "{method} {target}"
            );
        }
        assert_eq!(
            class_of(&t, Method::PUT, "/api/v1/runs/ID/share"),
            RouteClass::Other
        );
        assert_eq!(
            class_of(&t, Method::PUT, "/langsmith/api/runs/ID/share"),
            RouteClass::ShareManage
        );

        // A `[[routes]]` entry is taken at its word.
        let custom = vec![vec!["/grafana/api/public/dashboards/{token}".to_owned()]];
        let t = RouteTable::new(Profile::LangSmith, "", &custom).unwrap();
        assert_eq!(
            class_of(&t, Method::GET, "/grafana/api/public/dashboards/T"),
            RouteClass::Custom(0)
        );
        let t = RouteTable::new(Profile::Empty, "", &[]).unwrap();
        assert_eq!(
            class_of(&t, Method::GET, "/x/api/public/T/run"),
            RouteClass::Other
        );
    }

    #[test]
    fn the_public_list_is_what_is_public_admits() {
        use RouteClass::*;
        let every = [
            SharePage,
            PublicApi,
            PublicTokenless,
            PublicBulk,
            ShareManage,
            FeedbackToken,
            Custom(3),
            Other,
        ];
        for class in every {
            let listed = RouteClass::PUBLIC.iter().any(|c| c.name() == class.name());
            assert_eq!(listed, class.is_public(), "{class:?}");
        }
    }

    #[test]
    fn base_path_is_required() {
        let t = table("/langsmith");
        assert_eq!(get(&t, "/public/T/r").class, RouteClass::Other);
        assert_eq!(get(&t, "/api/v1/runs/x/share").class, RouteClass::Other);
        let route = get(&t, "/langsmith/public/T/r");
        assert_eq!(route.class, RouteClass::SharePage);
        assert_eq!(route.rule, "/langsmith/public/{token}/r");
        assert_eq!(route.tokens, ["T"]);
        let route = classify(&t, Method::POST, "/LangSmith/api/v1/public/T/runs/query").unwrap();
        assert_eq!(
            (route.class, route.post),
            (RouteClass::PublicApi, PostRule::Read)
        );
        assert_eq!(route.path, "/LangSmith/api/v1/public/T/runs/query");
        assert_eq!(
            get(&t, "/langsmith/api/v1/runs/x/share").class,
            RouteClass::ShareManage
        );
        assert_eq!(
            classify(&t, Method::PATCH, "/langsmith/api/v1/orgs/current/info")
                .unwrap()
                .class,
            RouteClass::ShareManage
        );
        assert_eq!(
            get(
                &t,
                "/langsmith/api/v1/public/datasets/sessions-bulk?share_tokens=a"
            )
            .tokens,
            ["a"]
        );
        // Escaping the base path through dots is still refused.
        assert_eq!(
            classify(&t, Method::GET, "/other/../langsmith/public/T/r"),
            Err(PathError::DotSegment)
        );
        let nested = table("/a/b-c_d~e");
        assert_eq!(
            get(&nested, "/a/b-c_d~e/public/T/d").class,
            RouteClass::SharePage
        );
    }

    #[test]
    fn dot_dot_after_empty_segment_is_refused() {
        // Found by the `classify` fuzz target: merging `//` before resolving `..`
        // reads this as `/api/v1/datuns/x` (no route), but an RFC 3986 resolver
        // lets `..` remove the empty segment and serves `/api/v1/public/datuns/x`.
        let t = table("");
        for target in [
            "/api/v1/public//../datuns/x",
            "/api/v1/runs/x//../share",
            "/public/T//%2e%2e/r",
            "/public/T/r/x//..",
            // Also found by it: a forgiving reading trims `..%20` (or `..%00`) to
            // `..`, an exact one keeps it as a segment that the next `..` removes.
            "/public/T/r/..%20/..",
            "/public/T/r/..%00%00/..",
            // And: a full-width dot (`%ef%bc%8e`, NFKC's `.`) folded to `.` makes
            // `/public/./../26` (no route); kept as an ordinary segment, the `..`
            // removes it instead and leaves the share page `/public/26`.
            "/public%2F%ef%bc%8e/..\\26",
            "/public%2F%EF%BC%8E/../T",
        ] {
            assert!(
                matches!(
                    classify(&t, Method::GET, target),
                    Err(PathError::DotSegment
                        | PathError::EncodedDot
                        | PathError::EncodedSeparator
                        | PathError::Nul)
                ),
                "{target}"
            );
        }
        let based = table("/langsmith");
        assert_eq!(
            classify(&based, Method::PUT, "/langsmith/api/v1/runs/x//../share"),
            Err(PathError::DotSegment)
        );
        // Refused even where no reading reaches a route: dot segments next
        // to empty ones can also be read half one way, half the other.
        assert_eq!(
            classify(&t, Method::GET, "/assets//../app.js").err(),
            Some(PathError::DotSegment)
        );
    }

    #[test]
    fn base_path_validation() {
        let cases = [
            ("/", "base_path \"/\" is invalid: it must not end with '/' (use \"\" for no base path)"),
            ("/x/", "base_path \"/x/\" is invalid: it must not end with '/' (use \"\" for no base path)"),
            ("langsmith", "base_path \"langsmith\" is invalid: it must start with '/'"),
            ("/a//b", "base_path \"/a//b\" is invalid: it has an empty segment ('//', a trailing '/' or nothing after '/')"),
            ("/a/{token}", "base_path \"/a/{token}\" is invalid: it may only contain literal segments, no {token}, * or **"),
            ("/a/*", "base_path \"/a/*\" is invalid: it may only contain literal segments, no {token}, * or **"),
            ("/v1.2", "base_path \"/v1.2\" is invalid: it contains '.' or '%'; patterns match the canonical path, where neither can reach a route"),
            ("/a b", "base_path \"/a b\" is invalid: it contains ' '; literal segments may use only ASCII letters, digits, '-', '_' and '~'"),
            ("/1/2/3/4/5/6/7/8/9", "base_path \"/1/2/3/4/5/6/7/8/9\" is invalid: it has too many segments (at most 24, base path included)"),
        ];
        for (base, message) in cases {
            let err = RouteTable::new(Profile::LangSmith, base, &[]).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert!(RouteTable::new(Profile::LangSmith, "", &[]).is_ok());
        assert!(RouteTable::new(Profile::Empty, "/x", &[]).is_ok());
    }

    fn custom_table() -> RouteTable {
        RouteTable::new(
            Profile::LangSmith,
            "/langsmith",
            &[
                vec!["/public-dashboards/{token}".to_owned()],
                vec![
                    "/api/public/dashboards/{token}/**".to_owned(),
                    "/embed/*/view".to_owned(),
                ],
            ],
        )
        .unwrap()
    }

    #[test]
    fn custom_routes_match_first_and_unprefixed() {
        let t = custom_table();
        let route = get(&t, "/Public-Dashboards/D1");
        assert_eq!(route.class, RouteClass::Custom(0));
        assert_eq!(route.tokens, ["D1"]);
        assert_eq!(route.rule, "/public-dashboards/{token}");
        let route = get(&t, "/api/public/dashboards/D2/charts/1");
        assert_eq!(route.class, RouteClass::Custom(1));
        assert_eq!(route.tokens, ["D2"]);
        let route = get(&t, "/embed/x/view");
        assert_eq!(
            (route.class, route.tokens.len()),
            (RouteClass::Custom(1), 0)
        );
        assert_eq!(
            get(&t, "/langsmith/public-dashboards/D1").class,
            RouteClass::Other
        );
        assert_eq!(get(&t, "/embed/x/view/more").class, RouteClass::Other);
        assert_eq!(
            classify(&t, Method::GET, "/public-dashboards/x/..%2FD1"),
            Err(PathError::EncodedSeparator)
        );
        let only_custom =
            RouteTable::new(Profile::Empty, "", &[vec!["/share/{token}".to_owned()]]).unwrap();
        assert_eq!(get(&only_custom, "/share/S").class, RouteClass::Custom(0));
        assert_eq!(get(&only_custom, "/public/T/r").class, RouteClass::Other);
    }

    #[test]
    fn custom_pattern_validation() {
        let cases = [
            ("public/{token}", "it must start with '/'"),
            ("/a//{token}", "it has an empty segment ('//', a trailing '/' or nothing after '/')"),
            ("/a/{token}/", "it has an empty segment ('//', a trailing '/' or nothing after '/')"),
            ("/", "it has an empty segment ('//', a trailing '/' or nothing after '/')"),
            ("/a/**/b", "it uses '**' before the last segment; '**' may only end a pattern"),
            ("/a/{token}/{token}", "it has more than one {token}"),
            ("/a/b.json", "it contains '.' or '%'; patterns match the canonical path, where neither can reach a route"),
            ("/a/%41", "it contains '.' or '%'; patterns match the canonical path, where neither can reach a route"),
            ("/a/..", "it contains '.' or '%'; patterns match the canonical path, where neither can reach a route"),
            ("/a/x{token}", "it has a placeholder that is not a whole segment; use exactly {token}, * or **"),
            ("/a/{id}", "it has a placeholder that is not a whole segment; use exactly {token}, * or **"),
            ("/a/b;c", "it contains ';'; literal segments may use only ASCII letters, digits, '-', '_' and '~'"),
            ("/a/é", "it contains 'é'; literal segments may use only ASCII letters, digits, '-', '_' and '~'"),
        ];
        for (pattern, problem) in cases {
            let custom = [vec!["/ok/{token}".to_owned()], vec![pattern.to_owned()]];
            let err = RouteTable::new(Profile::LangSmith, "", &custom).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("routes[1] path pattern {pattern:?} is invalid: {problem}")
            );
        }
        let err = RouteTable::new(Profile::LangSmith, "", &[vec![]]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "routes[0] has no path patterns; give it at least one"
        );
    }

    #[test]
    fn entries_in_match_order() {
        let entries = custom_table().entries();
        assert_eq!(entries.len(), 3 + LANGSMITH.len());
        assert_eq!(
            entries.first(),
            Some(&(
                "/public-dashboards/{token}".to_owned(),
                RouteClass::Custom(0),
                PostRule::NotAllowed
            ))
        );
        assert_eq!(entries[3].0, "/langsmith/public/{token}/r");
        let position = |p: &str| entries.iter().position(|e| e.0 == p).unwrap();
        assert!(
            position("/langsmith/api/v1/public/datasets/sessions-bulk")
                < position("/langsmith/api/v1/public/{token}/**")
        );
        assert!(
            position("/langsmith/api/v2/public/threads/{token}/**")
                < position("/langsmith/api/v2/public/{token}/runs/query")
        );
        assert!(entries.iter().any(|e| e
            == &(
                "/langsmith/api/v1/public/{token}/datasets/runs/generate-query".to_owned(),
                RouteClass::PublicApi,
                PostRule::GenerateQuery
            )));
        assert!(RouteTable::new(Profile::Empty, "", &[])
            .unwrap()
            .entries()
            .is_empty());
    }

    #[test]
    fn class_names_and_publicness() {
        use RouteClass::*;
        let all = [
            (SharePage, "share_page", true),
            (PublicApi, "public_api", true),
            (PublicTokenless, "public_tokenless", true),
            (PublicBulk, "public_bulk", true),
            (ShareManage, "share_manage", false),
            (FeedbackToken, "feedback_token", true),
            (Custom(3), "custom", true),
            (Other, "other", false),
        ];
        for (class, name, public) in all {
            assert_eq!((class.name(), class.is_public()), (name, public));
        }
    }

    #[test]
    fn body_method_param_detection() {
        let form = Some(&b"application/x-www-form-urlencoded"[..]);
        let json = Some(&b"application/json; charset=utf-8"[..]);
        let multipart = Some(&b"multipart/form-data; boundary=X"[..]);
        for (ctype, body) in [
            (form, &b"_method=DELETE"[..]),
            (form, b"q=1&_METHOD=put"),
            (form, b"q=1;%5Fmethod=put"),
            (form, b"%5F%6D%65%74%68%6F%64=PATCH"),
            (form, b"_method"),
            (None, b"a=1&_method=DELETE"),
            (Some(b"Application/X-WWW-Form-Urlencoded"), b"_method=DELETE"),
            (json, br#"{"limit": 1, "_method": "DELETE"}"#),
            (json, br#"{"\u005fmethod": "DELETE"}"#),
            (Some(b"application/vnd.api+json"), br#"{"_method": "PUT"}"#),
            (
                multipart,
                b"--X\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--X--\r\n",
            ),
            (
                multipart,
                b"--X\r\ncontent-disposition: form-data; NAME=_Method\r\n\r\nDELETE\r\n--X--\r\n",
            ),
        ] {
            assert!(
                body_has_method_param(ctype, body),
                "{ctype:?} {}",
                String::from_utf8_lossy(body)
            );
        }
        for (ctype, body) in [
            (form, &b""[..]),
            (form, b"q=_method&x_method=1&method=2"),
            (json, br#"{"filter": "eq(name, \"_method\")"}"#),
            (json, br#"{"nested": {"_method": "DELETE"}}"#),
            (json, br#"[{"_method": "DELETE"}]"#),
            (json, b"not json _method"),
            (Some(b"text/plain"), b"_method=DELETE"),
            (Some(b"application/octet-stream"), b"_method=DELETE"),
            (
                multipart,
                b"--X\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n_method\r\n--X--\r\n",
            ),
        ] {
            assert!(
                !body_has_method_param(ctype, body),
                "{ctype:?} {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn method_param_detection() {
        let t = table("");
        for (target, expected) in [
            ("/api/v1/public/T/runs?_method=DELETE", true),
            ("/api/v1/public/T/runs?a=1&_METHOD=put", true),
            ("/api/v1/public/T/runs?%5Fmethod=put", true),
            ("/api/v1/public/T/runs?a=1;_method=put", true),
            ("/api/v1/public/T/runs?_method", true),
            ("/x?_method=put", true),
            ("/api/v1/public/T/runs?x_method=1&method=2", false),
            ("/api/v1/public/T/runs", false),
        ] {
            assert_eq!(get(&t, target).method_param, expected, "{target}");
        }
    }

    #[test]
    fn query_is_forwarded_raw_and_never_matched() {
        let t = table("");
        let route = get(&t, "/x?");
        assert_eq!(route.query.as_deref(), Some(""));
        let route = get(&t, "/assets/app.js?/api/v1/runs/x/share");
        assert_eq!(route.class, RouteClass::Other);
        assert_eq!(route.path, "/assets/app.js");
        assert_eq!(route.query.as_deref(), Some("/api/v1/runs/x/share"));
        let route = get(&t, "/x?p=/../api/v1/runs/x/share&q=%2e%2e?again");
        assert_eq!(route.class, RouteClass::Other);
        assert_eq!(
            route.query.as_deref(),
            Some("p=/../api/v1/runs/x/share&q=%2e%2e?again")
        );
    }

    #[test]
    fn canonical_form() {
        let t = table("");
        let route = get(&t, "/%61pi/v1/public/T/runs/query");
        assert_eq!(route.class, RouteClass::PublicApi);
        assert_eq!(route.path, "/api/v1/public/T/runs/query");
        assert_eq!(route.rule, "/api/v1/public/{token}/runs/query");
        assert_eq!(get(&t, "/%7e%2D%5f%41%7A%30").path, "/~-_Az0");
        assert_eq!(
            get(&t, "/assets/a%3ab%40c").path,
            "/assets/a%3Ab%40C".replace("%40C", "%40c")
        );
        // Token escapes of harmless characters are decoded in the token, kept in the path.
        let route = get(&t, "/public/a%40b/r");
        assert_eq!(route.path, "/public/a%40b/r");
        assert_eq!(route.tokens, ["a@b"]);
        let route = get(&t, "/API/V1/RUNS/X/SHARE");
        assert_eq!(route.class, RouteClass::ShareManage);
        assert_eq!(route.path, "/API/V1/RUNS/X/SHARE");
        assert_eq!(route.rule, "/api/v1/runs/*/share");
    }

    #[test]
    fn malformed_targets() {
        let t = table("");
        for (target, err) in [
            ("/a%", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/a%u002e", PathError::BadEscape),
            ("*", PathError::NotOriginForm),
            ("", PathError::NotOriginForm),
            ("http://h/public/T/r", PathError::NotOriginForm),
            ("?x=1", PathError::NotOriginForm),
            ("/public/T/r#x", PathError::Fragment),
            ("/x?a=#", PathError::Fragment),
        ] {
            assert_eq!(classify(&t, Method::GET, target), Err(err), "{target:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(classify(&t, Method::GET, &long), Err(PathError::TooLong));
        let at_limit = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert_eq!(get(&t, &at_limit).class, RouteClass::Other);
        // A long query does not count against the path limit.
        let long_query = format!("/public/T/r?{}", "q".repeat(MAX_PATH_LEN * 2));
        assert_eq!(get(&t, &long_query).class, RouteClass::SharePage);
    }

    #[test]
    fn dot_and_empty_segments_together_are_refused_on_every_route() {
        for base in ["", "/langsmith"] {
            let t = table(base);
            for target in [
                format!("{base}/y//../x//../api/v1/public/datasets/sessions-bulk"),
                format!("{base}/static//../app.js"),
                "/a/.//b".to_owned(),
            ] {
                assert_eq!(
                    classify(&t, Method::GET, &target).err(),
                    Some(PathError::DotSegment),
                    "{target}"
                );
            }
        }
        // Found by the property tests: read half RFC 3986, half
        // slash-merging, this is the bulk read under the base path.
        let based = table("/langsmith");
        let found = "/langsmith//../x//../api/v1/public/datasets/sessions-bulk";
        assert_eq!(
            classify(&based, Method::GET, found).err(),
            Some(PathError::DotSegment)
        );
    }

    #[test]
    fn paths_naming_another_host_are_refused_on_every_route() {
        let t = table("");
        for target in [
            "//evil.example/public/T/r",
            "//evil.example",
            "/\\evil.example/x",
            "/%2Fevil.example/x",
            "/%2f%2Fevil.example/x",
            "/%5Cevil.example/x",
            "/%252F/evil.example/x",
            "//api/v1/runs/x/share",
            "//",
        ] {
            assert_eq!(
                classify(&t, Method::GET, target).err(),
                Some(PathError::SchemeRelative),
                "{target}"
            );
        }
        // Nested past the decoding bound: refused all the same.
        let deep = format!("/%{}2F/evil.example/x", "25".repeat(MAX_DECODE_ROUNDS + 2));
        assert!(classify(&t, Method::GET, &deep).is_err(), "{deep}");
        // A slash later on, or an escape that is not one, is another matter.
        for target in ["/", "/a//b", "/a/%2F/b", "/%41/x", "/%2"] {
            assert_ne!(
                classify(&t, Method::GET, target).err(),
                Some(PathError::SchemeRelative),
                "{target}"
            );
        }
    }

    #[test]
    fn adversarial_paths_to_protected_routes_are_refused() {
        let t = table("");
        for (target, err) in [
            ("/api/v1/public/../runs/x/share", PathError::DotSegment),
            ("/api/v1/%2e%2e/v1/runs/x/share", PathError::DotSegment),
            ("/api/v1/public/T/%2E%2e/x", PathError::DotSegment),
            ("/foo/..%2fapi/v1/runs/x/share", PathError::EncodedSeparator),
            ("/api/v1/runs/x%2Fshare", PathError::EncodedSeparator),
            ("/api/v1/runs/x%5cshare", PathError::EncodedSeparator),
            ("/api/v1/runs/x/share;x=y", PathError::PathParameter),
            ("/api//v1/public/T/runs", PathError::EmptySegment),
            ("/api/v1//runs/x/share", PathError::EmptySegment),
            ("/api\\v1\\public\\T", PathError::Backslash),
            ("/public/T/r%00", PathError::Nul),
            ("/api/v1/runs/x/share%00.png", PathError::Nul),
            (
                "/api/v1/public/T/runs/query%3Fx",
                PathError::EncodedDelimiter,
            ),
            ("/api/v1/runs/x/share%3F/..", PathError::DotSegment),
            ("/api/v1/runs/x/share%23", PathError::EncodedDelimiter),
            (
                "/x/%252e%252e/api/v1/runs/x/share",
                PathError::DoubleEncoding,
            ),
            (
                "/x/%25%32%65%25%32%65/api/v1/runs/x/share",
                PathError::DoubleEncoding,
            ),
            ("/x/%c0%ae%c0%ae/api/v1/runs/x/share", PathError::NonAscii),
            (
                "/x/%e0%80%ae%e0%80%ae/api/v1/runs/x/share",
                PathError::NonAscii,
            ),
            (
                "/x/%ef%bc%8e%ef%bc%8e/api/v1/runs/x/share",
                PathError::NonAscii,
            ),
            ("/api/v1/runs/x%c0%afshare", PathError::NonAscii),
            ("/api/v1/runs/x/share%20", PathError::Whitespace),
            ("/api/v1/runs/x/%20share", PathError::Whitespace),
            ("/api/v1/runs/x/share%09", PathError::ControlCharacter),
            ("/api/v1/runs/x/share\t", PathError::ControlCharacter),
            ("/api/v1/runs/x/share/.", PathError::DotSegment),
            ("/api/v1/runs/x/./share", PathError::DotSegment),
            ("/api/v1/runs/x/share/x/..", PathError::DotSegment),
            ("/api/v1/runs/x/share..;/", PathError::PathParameter),
            ("/api/v1/runs/x/share.", PathError::TrailingDot),
            ("/api/v1/runs/x/share%2e", PathError::EncodedDot),
            ("/api/v1/public/T/runs/%2e", PathError::DotSegment),
            ("/public/T/r/é", PathError::NonAscii),
        ] {
            assert_eq!(classify(&t, Method::GET, target), Err(err), "{target}");
        }
        let deep = format!("/x/%25{}2e/api/v1/runs/x/share", "25".repeat(10));
        assert_eq!(
            classify(&t, Method::GET, &deep),
            Err(PathError::ExcessiveEncoding)
        );
    }

    #[test]
    fn harmless_ambiguous_paths_stay_other() {
        let t = table("");
        for (target, path) in [
            ("/assets//app.js", "/assets//app.js"),
            ("/assets/%2e%2e/app.js", "/assets/%2E%2E/app.js"),
            ("/assets/./app.js", "/assets/./app.js"),
            ("/assets/a;v=1/app.js", "/assets/a;v=1/app.js"),
            ("/fonts/%c3%a9.woff", "/fonts/%C3%A9.woff"),
            ("/a/b%2fc", "/a/b%2Fc"),
            ("/api/v1/runs/x/share/x/../y", "/api/v1/runs/x/share/x/../y"),
        ] {
            let route = get(&t, target);
            assert_eq!(route.class, RouteClass::Other, "{target}");
            assert_eq!(route.path, path, "{target}");
        }
    }

    #[test]
    fn error_reasons_and_messages() {
        assert_eq!(PathError::DotSegment.reason(), "dot_segment");
        assert_eq!(PathError::DotSegment.to_string(), "dot segment in path");
        assert_eq!(PathError::EncodedSeparator.reason(), "encoded_separator");
        assert_eq!(
            PathError::EncodedSeparator.to_string(),
            "encoded slash or backslash in path"
        );
        assert_eq!(PathError::Nul.reason(), "nul_byte");
        assert_eq!(PathError::TooLong.to_string(), "path longer than 8 KiB");
        let mut reasons: Vec<&str> = [
            PathError::TooLong,
            PathError::Fragment,
            PathError::NotOriginForm,
            PathError::SchemeRelative,
            PathError::BadEscape,
            PathError::ExcessiveEncoding,
        ]
        .iter()
        .chain(PRIORITY.iter())
        .map(PathError::reason)
        .collect();
        let total = reasons.len();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), total, "reason codes must be distinct");
    }

    /// Protected targets with the method that makes them protected and what they are.
    const PROTECTED: &[(&str, &str, RouteClass, PostRule)] = &[
        (
            "GET",
            "/api/v1/runs/abc/share",
            RouteClass::ShareManage,
            PostRule::NotAllowed,
        ),
        (
            "PUT",
            "/api/v1/datasets/abc/share",
            RouteClass::ShareManage,
            PostRule::NotAllowed,
        ),
        (
            "POST",
            "/api/v2/threads/abc/share",
            RouteClass::ShareManage,
            PostRule::NotAllowed,
        ),
        (
            "DELETE",
            "/api/v1/workspaces/current/shared",
            RouteClass::ShareManage,
            PostRule::NotAllowed,
        ),
        (
            "PATCH",
            "/api/v1/orgs/current/info",
            RouteClass::ShareManage,
            PostRule::NotAllowed,
        ),
        (
            "GET",
            "/public/tok-1/r",
            RouteClass::SharePage,
            PostRule::NotAllowed,
        ),
        (
            "POST",
            "/api/v1/public/tok-1/runs/query",
            RouteClass::PublicApi,
            PostRule::Read,
        ),
        (
            "POST",
            "/api/v1/public/tok-1/datasets/runs/generate-query",
            RouteClass::PublicApi,
            PostRule::GenerateQuery,
        ),
        (
            "GET",
            "/api/v2/public/threads/tok-1/messages",
            RouteClass::PublicApi,
            PostRule::NotAllowed,
        ),
        (
            "GET",
            "/api/v1/public/datasets/sessions-bulk",
            RouteClass::PublicBulk,
            PostRule::NotAllowed,
        ),
        (
            "GET",
            "/api/v1/public/schemas/v1",
            RouteClass::PublicTokenless,
            PostRule::NotAllowed,
        ),
        (
            "POST",
            "/api/v1/feedback/tokens/tok-1",
            RouteClass::FeedbackToken,
            PostRule::NotAllowed,
        ),
    ];

    fn encode_variant(path: &str, choices: &[u8], suffix: u8) -> String {
        let mut out = String::new();
        for (i, c) in path.chars().enumerate() {
            let k = choices.get(i).copied().unwrap_or(0);
            let hex = c as u32;
            let piece = match (c, i) {
                ('/', 0) => ["/", "//", "/./"][usize::from(k % 3)].to_owned(),
                ('/', _) => [
                    "/", "\\", "//", "/./", "%2F", "%2f", "%252F", ";x/", "/x/../", "%5C",
                ][usize::from(k % 10)]
                .to_owned(),
                _ => match k % 7 {
                    1 if c.is_ascii_lowercase() => c.to_ascii_uppercase().to_string(),
                    2 => format!("%{hex:02x}"),
                    3 => format!("%{hex:02X}"),
                    4 => format!("%25{hex:02X}"),
                    5 => format!("%c{}%{:02x}", (hex >> 6), 0x80 | (hex & 0x3F)),
                    _ => c.to_string(),
                },
            };
            out.push_str(&piece);
        }
        // Only suffixes that leave the target the same in some reading: `/..` alone would
        // name a different (unprotected) resource.
        let tail = [
            "",
            "/",
            ";x",
            "/.",
            "%20",
            "%2e",
            "/x/..",
            "%00",
            "%3F",
            "//",
            "/x/%2e%2e",
            ".",
        ];
        out.push_str(tail[usize::from(suffix) % tail.len()]);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..crate::testing::proptest_config() })]

        #[test]
        fn canonicalization_is_idempotent(
            prefix in prop::sample::select(vec![
                "", "/api/v1/public/T", "/public/T", "/api/v1/runs/x", "/langsmith",
            ]),
            target in "/([a-zA-Z0-9._~;\\\\/?&=+ -]|%[0-9a-fA-F]{2}|%2[eEfF]|%5[cC]|%25){0,40}",
            base in prop::sample::select(vec!["", "/langsmith"]),
            method in prop::sample::select(vec![Method::GET, Method::POST, Method::PATCH]),
        ) {
            let t = table(base);
            let target = format!("{prefix}{target}");
            if let Ok(route) = t.classify(&method, &target) {
                let again = match &route.query {
                    Some(q) => format!("{}?{q}", route.path),
                    None => route.path.clone(),
                };
                prop_assert_eq!(t.classify(&method, &again), Ok(route));
            }
        }

        #[test]
        fn encodings_of_protected_paths_never_weaken(
            which in 0..PROTECTED.len(),
            choices in prop::collection::vec(any::<u8>(), 64),
            suffix in any::<u8>(),
            with_base in any::<bool>(),
        ) {
            let (method, path, class, post) = PROTECTED[which];
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (t, path) = if with_base {
                (table("/langsmith"), format!("/langsmith{path}"))
            } else {
                (table(""), path.to_owned())
            };
            let variant = encode_variant(&path, &choices, suffix);
            if let Ok(route) = t.classify(&method, &variant) {
                prop_assert_eq!(route.class, class, "{} -> {:?}", variant, route);
                prop_assert_eq!(route.post, post, "{}", variant);
                // Accepted only when nothing but case and unreserved escapes changed.
                let canonical = route.path.strip_suffix('/').unwrap_or(&route.path);
                prop_assert!(canonical.eq_ignore_ascii_case(&path), "{} -> {}", variant, route.path);
            }
        }

        #[test]
        fn never_panics_on_printable_targets(
            target in "([ -~]|%[0-9a-fA-F]{2}|%[c-fC-F][0-9a-fA-F]){0,120}",
        ) {
            let t = custom_table();
            let _ = t.classify(&Method::GET, &target);
            let _ = t.classify(&Method::PATCH, &format!("/{target}"));
        }

        #[test]
        fn never_panics_on_any_string(target in any::<String>()) {
            let _ = table("").classify(&Method::POST, &target);
            let _ = table("").classify(&Method::POST, &format!("/{target}"));
        }
    }

    #[test]
    fn encoded_variants_of_protected_paths_spot_checks() {
        // Every variant kind applied on its own, so a regression names the trick.
        for &(method, path, class, _) in PROTECTED {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let t = table("");
            for kind in 0..10u8 {
                for suffix in 0..12u8 {
                    let choices = vec![kind; path.len()];
                    let variant = encode_variant(path, &choices, suffix);
                    if let Ok(route) = t.classify(&method, &variant) {
                        assert_eq!(route.class, class, "{variant}");
                        let canonical = route.path.strip_suffix('/').unwrap_or(&route.path);
                        assert!(canonical.eq_ignore_ascii_case(path), "{variant}");
                    }
                }
            }
        }
    }
}
