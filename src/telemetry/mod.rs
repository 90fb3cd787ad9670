//! Logs: tracing setup and the access event.
//!
//! One access event per request, emitted when the response body has been
//! sent (or abandoned), so it can carry the byte count and the full
//! duration. Share tokens never reach a log in clear: paths are logged with
//! each token replaced by a short hash (`{tok:1a2b3c4d}`), and queries are
//! not logged at all. This module does not decide anything.

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tracing_subscriber::EnvFilter;

pub mod audit;
pub mod line;
pub mod metrics;
pub mod output;

use std::sync::Arc;

use audit::{AuditEvent, AuditIdentity, AuditSink};
use line::Line;
use metrics::{ClassLabels, Metrics, RequestLabels};

use crate::config::{LogFormat, LogSettings};
use crate::error::{Body, BoxError, RequestError};
use crate::identity::Identity;

/// Parses `log.level` (a level or `tracing` filter directives).
pub fn level_filter(spec: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    filter_builder().parse(spec)
}

/// Field values in filter directives (`[span{field=value}]`) are matched
/// literally, not compiled as regular expressions: a pattern such as
/// `{s=a.......+}` builds an automaton of gigabytes (found by the config
/// fuzzer), and a config file, or a reload of one, must not take the
/// gateway's memory.
fn filter_builder() -> tracing_subscriber::filter::Builder {
    EnvFilter::builder().with_regex(false)
}

/// Installs the global subscriber, writing through the buffered
/// [`output`]. `RUST_LOG`, when set, overrides the configured level.
pub fn init(settings: &LogSettings) {
    let filter = filter_builder()
        .try_from_env()
        .or_else(|_| level_filter(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: a log pipeline would
    // store them, and writing them is a measurable share of a request.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(output::install(settings.flush_interval));
    line::set_json(settings.format == LogFormat::Json);
    // A second init (tests, demo) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A short, stable, non-reversible name for a share token: the first 8
/// hex digits of its SHA-256. A token that reads as a UUID is hashed in its
/// canonical spelling (lower case, hyphenated: as LangSmith mints it), so
/// one share has one name however a client spelled it (in capitals,
/// without hyphens, in braces), as it has one entry in `revoked_tokens`.
///
/// Remembered per process: the same links are opened again and again, and
/// a SHA-256 (about 3,700 instructions here) cost more than the rest of the
/// access line. The memory holds no tokens: it is keyed by a randomly keyed
/// SipHash of the token, and cleared whenever it reaches `REMEMBERED`.
pub fn token_hash(token: &str) -> String {
    use std::collections::HashMap;
    use std::hash::BuildHasher;
    use std::sync::{LazyLock, Mutex};
    const REMEMBERED: usize = 4096;
    /// Hash keys, and token key → hex.
    type Seen = (std::hash::RandomState, Mutex<HashMap<u64, [u8; 8]>>);
    static SEEN: LazyLock<Seen> = LazyLock::new(Default::default);
    let (keys, seen) = &*SEEN;
    let key = keys.hash_one(token);
    let known = seen.lock().ok().and_then(|m| m.get(&key).copied());
    let hex = known.unwrap_or_else(|| {
        let hex = match crate::policy::revoked::uuid_value(token) {
            Some(v) => sha256_prefix(&canonical_uuid(v)),
            None => sha256_prefix(token),
        };
        if let Ok(mut m) = seen.lock() {
            if m.len() >= REMEMBERED {
                m.clear();
            }
            m.insert(key, hex);
        }
        hex
    });
    hex.iter().map(|&b| char::from(b)).collect()
}

/// `v` written as `8-4-4-4-12` lower-case hex digits.
fn canonical_uuid(v: u128) -> String {
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn sha256_prefix(token: &str) -> [u8; 8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut out = [0u8; 8];
    for (i, b) in digest[..4].iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// The path with every share token replaced by its hash.
pub fn mask_tokens(path: &str, tokens: &[String]) -> String {
    let hashes: Vec<String> = tokens.iter().map(|t| token_hash(t)).collect();
    mask_tokens_hashed(path, tokens, &hashes)
}

/// [`mask_tokens`] with the hashes already computed (`hashes[i]` is the
/// hash of `tokens[i]`), so a request hashes each token once.
pub fn mask_tokens_hashed(path: &str, tokens: &[String], hashes: &[String]) -> String {
    let pairs: Vec<(&str, &str)> = tokens
        .iter()
        .zip(hashes)
        .filter(|(t, _)| !t.is_empty())
        .map(|(t, h)| (t.as_str(), h.as_str()))
        .collect();
    // One pass: the earliest occurrence of any token is replaced next.
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    loop {
        let next = pairs
            .iter()
            .filter_map(|&(t, h)| find(rest, t).map(|at| (at, t.len(), h)))
            .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
        let Some((at, len, h)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push_str("{tok:");
        out.push_str(h);
        out.push('}');
        rest = &rest[at + len..];
    }
}

/// Where `needle` (not empty) first occurs in `hay`. A short path and a
/// token: candidates by first byte beat `str::find`, whose searcher setup
/// alone cost more than the whole masking.
fn find(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let first = *n.first()?;
    // A match starts where the needle's (valid UTF-8) first byte does, so
    // at a character boundary.
    (0..h.len()).find(|&i| h[i] == first && h[i..].starts_with(n))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Refused,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Refused => "refused",
        }
    }
}

/// The fields of one access event.
pub struct AccessEvent {
    pub class: &'static str,
    pub client: Option<IpAddr>,
    pub peer: IpAddr,
    pub method: Method,
    pub path: String,
    pub token_hashes: Vec<String>,
    pub decision: Decision,
    pub rule: String,
    /// Which check granted: "network", "identity", "network+identity",
    /// "open" (`any`), or empty when refused.
    pub decided_by: &'static str,
    pub identity: Option<std::sync::Arc<Identity>>,
    pub status: StatusCode,
    pub error: Option<RequestError>,
    pub start: Instant,
    pub metrics: Arc<Metrics>,
    /// Where the audit event goes; `None` for routes that are not shares.
    pub audit: Option<AuditSink>,
}

impl AccessEvent {
    fn emit(&self, bytes: u64, complete: bool) {
        let peer = self.peer.to_canonical();
        let client = self.client.unwrap_or(peer);
        let reason = self.error.as_ref().map(RequestError::reason).unwrap_or("");
        if tracing::enabled!(target: "sharegate::access", tracing::Level::INFO) {
            let detail = self
                .error
                .as_ref()
                .map(RequestError::chain)
                .unwrap_or_default();
            let id = self.identity.as_ref();
            let mut line = Line::info("sharegate::access", "request");
            line.str("class", self.class).ip("client", client);
            if client != peer {
                line.ip("peer", peer);
            }
            line.str("method", self.method.as_str())
                .str("path", &self.path)
                .str("decision", self.decision.as_str())
                .str("rule", &self.rule)
                .str("decided_by", self.decided_by)
                .opt("subject", id.and_then(|i| i.subject.as_deref()))
                .opt("issuer", id.and_then(|i| i.issuer.as_deref()))
                .opt("identity_source", id.map(|i| i.source.as_str()))
                .str("reason", reason)
                .u64("status", u64::from(self.status.as_u16()))
                .u64("bytes", bytes)
                .bool("complete", complete)
                .millis("duration_ms", self.start.elapsed())
                .str("error", &detail);
            line.write();
        }
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                class: self.class,
                decision: self.decision.as_str(),
                reason,
                status: self.status.as_u16(),
            })
            .inc();
        self.metrics
            .response_bytes
            .get_or_create(&ClassLabels { class: self.class })
            .inc_by(bytes);
        if let Some(sink) = &self.audit {
            sink.write(&AuditEvent {
                v: 1,
                time: audit::now_rfc3339(),
                event: "share_access",
                class: self.class,
                token_hashes: &self.token_hashes,
                client_ip: Some(client),
                method: self.method.as_str(),
                path: &self.path,
                identity: self.identity.as_deref().map(AuditIdentity::of),
                decision: self.decision.as_str(),
                rule: &self.rule,
                reason,
                status: self.status.as_u16(),
            });
        }
    }
}

/// Wraps the response body so that the access event is written once the
/// body has ended (or the client went away).
pub fn log_on_completion(resp: Response<Body>, event: AccessEvent) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let counted = Counted {
        inner: body,
        bytes: 0,
        event: Some(event),
    };
    Response::from_parts(parts, counted.boxed_unsync())
}

/// What hyper is handed when a response body fails: the cause itself is
/// in the access event.
#[derive(Debug, thiserror::Error)]
#[error("response body cut off (the cause is in the access log)")]
struct BodyCutOff;

struct Counted {
    inner: Body,
    bytes: u64,
    event: Option<AccessEvent>,
}

impl Counted {
    fn finish(&mut self, complete: bool) {
        if let Some(ev) = self.event.take() {
            ev.emit(self.bytes, complete);
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => {
                // The head has gone out, so the cause can only be logged:
                // it goes into the access event (hyper, which cuts the
                // connection, gets a stand-in).
                let Poll::Ready(Some(Err(e))) = polled else {
                    return polled;
                };
                let Some(mut ev) = this.event.take() else {
                    return Poll::Ready(Some(Err(e)));
                };
                if ev.error.is_none() {
                    ev.error = Some(RequestError::UpstreamBody(e));
                }
                ev.emit(this.bytes, false);
                return Poll::Ready(Some(Err(Box::new(BodyCutOff))));
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_masked() {
        let t = "6f1d2c3b-0000-4000-8000-123456789abc".to_owned();
        let masked = mask_tokens(
            &format!("/api/v1/public/{t}/runs/query"),
            std::slice::from_ref(&t),
        );
        assert!(!masked.contains(&t));
        assert!(masked.starts_with("/api/v1/public/{tok:"));
        assert_eq!(token_hash(&t).len(), 8);
        // The documented recipe: `printf %s TOKEN | sha256sum | cut -c1-8`.
        assert_eq!(token_hash("abc"), "ba7816bf");
        assert_eq!(
            token_hash("abc"),
            "ba7816bf",
            "and the same when remembered"
        );
        assert_eq!(token_hash(&t), token_hash(&t));
        assert_ne!(token_hash(&t), token_hash("other"));
        // A UUID is named by its value, whatever its spelling; the recipe
        // holds for the token as minted (lower case, hyphenated).
        let minted = "6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d";
        assert_eq!(token_hash(minted), "c6b65097");
        for spelling in [
            minted.to_uppercase(),
            minted.replace('-', ""),
            format!("{{{minted}}}"),
            format!("urn:uuid:{minted}"),
        ] {
            assert_eq!(token_hash(&spelling), "c6b65097", "{spelling}");
        }
        assert_ne!(token_hash("ABC"), token_hash("abc"));
        // Every occurrence of every token, and nothing else.
        let u = "0f0e0d0c-1111-4000-8000-000000000000".to_owned();
        let tokens = [t.clone(), u.clone()];
        let masked = mask_tokens(&format!("/a/{u}/b/{t}/c/{u}"), &tokens);
        let (ht, hu) = (token_hash(&t), token_hash(&u));
        assert_eq!(
            masked,
            format!("/a/{{tok:{hu}}}/b/{{tok:{ht}}}/c/{{tok:{hu}}}")
        );
        assert_eq!(mask_tokens("/no/token", &tokens), "/no/token");
        assert_eq!(mask_tokens("/x", &[String::new()]), "/x");
    }
}
