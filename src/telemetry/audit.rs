//! The audit log of share access: one JSON event per request on a share or
//! share-management route, allowed or refused.
//!
//! The shape is stable and documented in the README (`"v": 1`); fields are
//! only ever added. Events go to the log stream (target `sharegate::audit`)
//! or, when `audit.file` is set, to a JSON-lines file written by a
//! dedicated thread so a slow disk never stalls request handling. Tokens
//! appear only as hashes.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc;

use super::line::{json_str, write_ip, Line};
use crate::identity::Identity;

/// One audit event. Its JSON is written by hand ([`AuditEvent::to_json`]):
/// `serde_json` spent more on it than the rest of the line, and leaves DEL
/// and the C1 controls raw, which some terminals obey.
#[derive(Debug)]
pub struct AuditEvent<'a> {
    pub v: u8,
    pub time: String,
    pub event: &'static str,
    pub class: &'a str,
    pub token_hashes: &'a [String],
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub identity: Option<AuditIdentity<'a>>,
    pub decision: &'static str,
    pub rule: &'a str,
    pub reason: &'a str,
    pub status: u16,
}

#[derive(Debug)]
pub struct AuditIdentity<'a> {
    pub subject: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub source: &'a str,
}

impl AuditEvent<'_> {
    /// The event as one line of JSON (no newline), fields in the
    /// documented order, every string escaped by `json_str`.
    pub fn to_json(&self) -> String {
        let mut b = Vec::with_capacity(512);
        b.extend_from_slice(b"{\"v\":");
        super::line::push_u64(&mut b, u64::from(self.v));
        for (name, value) in [
            ("time", self.time.as_str()),
            ("event", self.event),
            ("class", self.class),
        ] {
            key(&mut b, name);
            json_str(&mut b, value);
        }
        key(&mut b, "token_hashes");
        b.push(b'[');
        for (i, h) in self.token_hashes.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            json_str(&mut b, h);
        }
        b.push(b']');
        key(&mut b, "client_ip");
        match self.client_ip {
            Some(ip) => {
                b.push(b'"');
                write_ip(&mut b, ip);
                b.push(b'"');
            }
            None => b.extend_from_slice(b"null"),
        }
        for (name, value) in [("method", self.method), ("path", self.path)] {
            key(&mut b, name);
            json_str(&mut b, value);
        }
        key(&mut b, "identity");
        match &self.identity {
            None => b.extend_from_slice(b"null"),
            Some(id) => {
                b.extend_from_slice(b"{\"subject\":");
                json_opt(&mut b, id.subject);
                key(&mut b, "issuer");
                json_opt(&mut b, id.issuer);
                key(&mut b, "source");
                json_str(&mut b, id.source);
                b.push(b'}');
            }
        }
        for (name, value) in [
            ("decision", self.decision),
            ("rule", self.rule),
            ("reason", self.reason),
        ] {
            key(&mut b, name);
            json_str(&mut b, value);
        }
        b.extend_from_slice(b",\"status\":");
        super::line::push_u64(&mut b, u64::from(self.status));
        b.push(b'}');
        // Only whole UTF-8 strings and ASCII were written.
        String::from_utf8(b).unwrap_or_default()
    }
}

/// `,"name":` (every field but the first).
fn key(b: &mut Vec<u8>, name: &str) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\":");
}

fn json_opt(b: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) => json_str(b, v),
        None => b.extend_from_slice(b"null"),
    }
}

impl<'a> AuditIdentity<'a> {
    pub fn of(id: &'a Identity) -> Self {
        AuditIdentity {
            subject: id.subject.as_deref(),
            issuer: id.issuer.as_deref(),
            source: &id.source,
        }
    }
}

/// Where audit events go.
#[derive(Debug, Clone)]
pub enum AuditSink {
    Log,
    File(mpsc::Sender<String>),
}

impl AuditSink {
    /// Opens (appends to) `path`, or the log stream when `None`.
    pub fn open(path: Option<&Path>) -> std::io::Result<AuditSink> {
        let Some(path) = path else {
            return Ok(AuditSink::Log);
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("sharegate-audit".to_owned())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                let write = |out: &mut std::io::BufWriter<std::fs::File>, line: String| {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.write_all(b"\n");
                };
                while let Ok(line) = rx.recv() {
                    write(&mut out, line);
                    // Flush once the queue is drained: events reach the disk
                    // promptly without a syscall per event under load.
                    while let Ok(more) = rx.try_recv() {
                        write(&mut out, more);
                    }
                    let _ = out.flush();
                }
            })?;
        Ok(AuditSink::File(tx))
    }

    pub fn write(&self, event: &AuditEvent<'_>) {
        // Serializing costs; skip it when the log stream would drop it.
        if matches!(self, AuditSink::Log)
            && !tracing::enabled!(target: "sharegate::audit", tracing::Level::INFO)
        {
            return;
        }
        let json = event.to_json();
        match self {
            // Formatted by hand like the access line, for the same reason.
            AuditSink::Log => Line::info("sharegate::audit", &json).write(),
            AuditSink::File(tx) => {
                let _ = tx.send(json);
            }
        }
    }
}

/// Now, as RFC 3339 with milliseconds (`2026-11-27T07:54:43.460Z`).
pub fn now_rfc3339() -> String {
    let mut b = Vec::with_capacity(24);
    super::line::rfc3339_now(&mut b, false);
    // Only ASCII was written.
    String::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_shape_and_escapes_everything() {
        let hashes = ["1a2b3c4d".to_owned(), "5e6f7a8b".to_owned()];
        let evil = "a\"b\\c\u{1b}[2J\u{7f}\u{9b}é";
        let event = AuditEvent {
            v: 1,
            time: "2026-11-27T05:41:48.947Z".to_owned(),
            event: "share_access",
            class: "public_api",
            token_hashes: &hashes,
            client_ip: Some("::ffff:10.0.0.1".parse().unwrap()),
            method: "GET",
            path: "/public/{tok:1a2b3c4d}/r",
            identity: Some(AuditIdentity {
                subject: Some(evil),
                issuer: None,
                source: "header:x-goog-iap-jwt-assertion",
            }),
            decision: "allowed",
            rule: "share.allow_from (/public/{token}/r)",
            reason: "",
            status: 200,
        };
        let json = event.to_json();
        assert!(!json.chars().any(char::is_control), "{json}");
        let got: serde_json::Value = serde_json::from_str(&json).unwrap();
        let want = serde_json::json!({
            "v": 1, "time": "2026-11-27T05:41:48.947Z", "event": "share_access",
            "class": "public_api", "token_hashes": ["1a2b3c4d", "5e6f7a8b"],
            "client_ip": "::ffff:10.0.0.1", "method": "GET",
            "path": "/public/{tok:1a2b3c4d}/r",
            "identity": {"subject": evil, "issuer": null, "source": "header:x-goog-iap-jwt-assertion"},
            "decision": "allowed", "rule": "share.allow_from (/public/{token}/r)",
            "reason": "", "status": 200
        });
        assert_eq!(got, want);
        let keys: Vec<&str> = json
            .split(",\"")
            .skip(1)
            .map(|k| k.split('"').next().unwrap())
            .collect();
        assert_eq!(&keys[..3], ["time", "event", "class"]);
        let none = AuditEvent {
            client_ip: None,
            identity: None,
            token_hashes: &[],
            ..event
        };
        let got: serde_json::Value = serde_json::from_str(&none.to_json()).unwrap();
        assert_eq!(got["client_ip"], serde_json::Value::Null);
        assert_eq!(got["identity"], serde_json::Value::Null);
        assert_eq!(got["token_hashes"], serde_json::json!([]));
    }
}
