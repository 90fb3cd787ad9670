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

use serde::Serialize;

use super::line::Line;
use crate::identity::Identity;

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct AuditIdentity<'a> {
    pub subject: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub source: &'a str,
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
        let Ok(json) = serde_json::to_string(event) else {
            return;
        };
        let json = escape_controls(json);
        match self {
            // Formatted by hand like the access line, for the same reason.
            AuditSink::Log => Line::info("sharegate::audit", &json).write(),
            AuditSink::File(tx) => {
                let _ = tx.send(json);
            }
        }
    }
}

/// `serde_json` escapes the C0 controls but leaves DEL and the C1
/// controls raw, which some terminals obey; escapes those too (they can
/// only occur inside strings, where `\u` escapes are valid JSON).
fn escape_controls(json: String) -> String {
    if !json.chars().any(char::is_control) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
