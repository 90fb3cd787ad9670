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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::line::{json_str, write_ip, Line};
use crate::identity::Identity;
use crate::telemetry::metrics::{ReasonLabels, QUEUE_FULL, WRITE_FAILED};

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

/// Events an `audit.file` holds in memory while its disk falls behind;
/// beyond that new events are counted and dropped, so a stalled disk costs
/// at most this many lines of memory (about 400 bytes each), never all of
/// it.
pub const QUEUE_EVENTS: usize = 16_384;

/// Where audit events go.
#[derive(Debug, Clone)]
pub enum AuditSink {
    Log,
    File(Arc<FileSink>),
}

/// An `audit.file`: events go through a bounded queue to a thread of their
/// own that writes them.
#[derive(Debug)]
pub struct FileSink {
    queue: mpsc::SyncSender<String>,
    /// Events dropped because the queue was full, not yet reported in the
    /// log by the writer.
    dropped: Arc<AtomicU64>,
    lost: Family<ReasonLabels, Counter>,
}

impl AuditSink {
    /// Opens (appends to) `path`, or the log stream when `None`. A file
    /// the gateway creates is readable by its own user only; one that
    /// exists keeps its mode. Only a regular file is taken (a symlink to
    /// one is followed, as for any log file): see [`open_regular`]. `lost`
    /// counts events that could not be written, by reason.
    pub fn open(
        path: Option<&Path>,
        lost: &Family<ReasonLabels, Counter>,
    ) -> std::io::Result<AuditSink> {
        let Some(path) = path else {
            return Ok(AuditSink::Log);
        };
        let file = open_regular(path)?;
        AuditSink::with_file(file, path, lost, QUEUE_EVENTS)
    }

    /// A sink writing to `file`, already open, with room for `capacity`
    /// waiting events.
    fn with_file(
        file: std::fs::File,
        path: &Path,
        lost: &Family<ReasonLabels, Counter>,
        capacity: usize,
    ) -> std::io::Result<AuditSink> {
        let (queue, rx) = mpsc::sync_channel::<String>(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            file,
            path: path.display().to_string(),
            dropped: dropped.clone(),
            failed: lost.get_or_create(&WRITE_FAILED).clone(),
            failing: 0,
            torn: false,
        };
        std::thread::Builder::new()
            .name("sharegate-audit".to_owned())
            .spawn(move || writer.run(rx))?;
        Ok(AuditSink::File(Arc::new(FileSink {
            queue,
            dropped,
            lost: lost.clone(),
        })))
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
            AuditSink::File(file) => {
                if let Err(mpsc::TrySendError::Full(_)) = file.queue.try_send(json) {
                    file.dropped.fetch_add(1, Ordering::Relaxed);
                    file.lost.get_or_create(&QUEUE_FULL).inc();
                }
            }
        }
    }
}

/// Opens `path` to append to, creating it (`0600`) when it is missing, and
/// keeps it only if it is a regular file.
///
/// A named pipe would hold the open (and with it start-up, or a reload
/// and the runtime thread it runs on) until some process opened the pipe
/// for reading, and then tie the audit trail to that reader; a device or
/// socket is no audit trail either, and `logrotate`'s move-and-reopen
/// flow only means something for a file. So the open itself never waits
/// (`O_NONBLOCK`: a pipe without a reader fails at once instead, and a
/// regular file's reads and writes ignore the flag), never makes a
/// terminal the process's own (`O_NOCTTY`), and what was opened is
/// checked by its descriptor, not by a look at the path beforehand that a
/// rename could outdate. Symlinks are followed: a log path that links to
/// the file on another volume is ordinary, and the file it reaches must
/// be regular all the same. `check` and every reload refuse such a path
/// before this (`config::validate`); this catches one swapped in since.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) => {
            // A pipe without a reader fails with ENXIO ("no such device or
            // address"): say what the path is instead.
            let kind = std::fs::metadata(path)
                .ok()
                .and_then(|m| not_a_regular_file(&m.file_type()));
            return Err(kind.map_or(e, not_regular));
        }
    };
    match not_a_regular_file(&file.metadata()?.file_type()) {
        None => Ok(file),
        Some(kind) => Err(not_regular(kind)),
    }
}

/// What a file of type `t` is, when it is not a regular file: "a named
/// pipe (FIFO)", "a socket", "a character device", "a block device", "a
/// folder".
pub fn not_a_regular_file(t: &std::fs::FileType) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if t.is_socket() {
            return Some("a socket");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
    }
    if t.is_dir() {
        return Some("a folder");
    }
    (!t.is_file()).then_some("not a file")
}

/// Why `audit.file` names something that is not a regular file, and what
/// to do about it (the path is named by the caller).
pub fn not_regular_message(kind: &str) -> String {
    format!("it is {kind}, not a regular file: audit events are appended to a file on disk (a pipe would hold start-up and reloads until a reader opened it); give the path of a file, or leave audit.file unset to send audit events to the log stream")
}

fn not_regular(kind: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, not_regular_message(kind))
}

/// A batch of events is written once it holds this many bytes, or when
/// the queue is empty.
const BATCH_BYTES: usize = 64 * 1024;

/// The audit file's own thread.
struct Writer {
    file: std::fs::File,
    path: String,
    dropped: Arc<AtomicU64>,
    failed: Counter,
    /// Events lost to failed writes since the last write that went through.
    failing: u64,
    /// A failed write may have left an incomplete line.
    torn: bool,
}

impl Writer {
    /// Writes events until every sender is gone (the gateway that opened
    /// the file was replaced by a reload and its last request finished).
    fn run(mut self, rx: mpsc::Receiver<String>) {
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        while let Ok(line) = rx.recv() {
            let mut events = 0;
            let mut next = Some(line);
            // One write per batch: events reach the disk promptly without a
            // syscall per event under load.
            while let Some(line) = next {
                batch.extend_from_slice(line.as_bytes());
                batch.push(b'\n');
                events += 1;
                next = if batch.len() < BATCH_BYTES {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if self.torn {
                batch.insert(0, b'\n');
            }
            let written = self.file.write_all(&batch);
            batch.clear();
            self.settle(written, events);
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::error!(
                    path = %self.path,
                    dropped,
                    "audit events dropped: audit.file is not keeping up"
                );
            }
        }
    }

    /// Counts a batch that could not be written as lost, and says so in the
    /// log when failures start and when they end. A batch cut short by the
    /// error may leave one incomplete line; the next batch starts on a line
    /// of its own.
    fn settle(&mut self, written: std::io::Result<()>, events: u64) {
        match written {
            Ok(()) if self.torn => {
                self.torn = false;
                tracing::warn!(
                    path = %self.path,
                    lost = self.failing,
                    "audit.file is written again"
                );
                self.failing = 0;
            }
            Ok(()) => {}
            Err(error) => {
                if self.failing == 0 {
                    tracing::error!(
                        path = %self.path,
                        %error,
                        "audit events lost: audit.file cannot be written"
                    );
                }
                self.failing += events;
                self.failed.inc_by(events);
                self.torn = true;
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
    use std::os::unix::fs::OpenOptionsExt;

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

    fn event(path: &str) -> AuditEvent<'_> {
        AuditEvent {
            v: 1,
            time: "2026-11-27T05:41:48.947Z".to_owned(),
            event: "share_access",
            class: "public_api",
            token_hashes: &[],
            client_ip: None,
            method: "GET",
            path,
            identity: None,
            decision: "allowed",
            rule: "share.allow_from",
            reason: "",
            status: 200,
        }
    }

    fn lost(family: &Family<ReasonLabels, Counter>, reason: &ReasonLabels) -> u64 {
        family.get_or_create(reason).get()
    }

    #[test]
    fn a_new_audit_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let family = Family::default();
        let sink = AuditSink::open(Some(&path), &family).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        sink.write(&event("/public/{tok:1}/r"));
        drop(sink);
        // A file that exists keeps the mode its owner gave it.
        let shared = dir.path().join("shared.jsonl");
        std::fs::write(&shared, "").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        drop(AuditSink::open(Some(&shared), &family).unwrap());
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    /// Only a regular file is taken, and finding out never waits: a named
    /// pipe without a reader (whose plain open would wait for one), one
    /// with a reader, a device, a folder, and a symlink to any of them are
    /// refused, saying what the path is; a symlink to a regular file, or
    /// to where one is to be created, is followed.
    #[test]
    fn only_a_regular_file_is_opened_and_the_open_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let family = Family::default();
        let refused = |path: &Path| {
            let (tx, rx) = mpsc::channel();
            let path = path.to_path_buf();
            let family = family.clone();
            std::thread::spawn(move || {
                let _ = tx.send(AuditSink::open(Some(&path), &family).map(|_| ()));
            });
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("the open returned");
            got.expect_err("refused").to_string()
        };
        let pipe = "it is a named pipe (FIFO), not a regular file: audit events are appended to a file on disk (a pipe would hold start-up and reloads until a reader opened it); give the path of a file, or leave audit.file unset to send audit events to the log stream";
        assert_eq!(refused(&fifo), pipe);
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert_eq!(refused(&link), pipe);
        // With a reader the open would go through; the type still decides.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert_eq!(refused(&fifo), pipe);
        drop(reader);
        assert!(refused(Path::new("/dev/null")).starts_with("it is a character device"));
        assert!(
            refused(dir.path()).starts_with("it is a folder"),
            "{}",
            refused(dir.path())
        );

        let real = dir.path().join("real.jsonl");
        let to_real = dir.path().join("to-real.jsonl");
        std::os::unix::fs::symlink(&real, &to_real).unwrap();
        let sink = AuditSink::open(Some(&to_real), &family).unwrap();
        assert!(std::fs::symlink_metadata(&real).unwrap().is_file());
        sink.write(&event("/public/{tok:1}/r"));
        drop(sink);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::read_to_string(&real).unwrap().is_empty()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::fs::read_to_string(&real)
            .unwrap()
            .contains("share_access"));
    }

    /// A disk that stops taking writes (here a pipe nobody reads) holds up
    /// only the queue: further events are dropped and counted, never kept,
    /// and every event is either written or counted.
    #[test]
    fn a_stalled_audit_file_drops_and_counts_events_instead_of_holding_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        // Opening a pipe for reading waits for its writer, and the reader
        // reads nothing until every event has been handed to the sink.
        let (go, wait) = mpsc::channel::<()>();
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::File::open(path).unwrap();
                wait.recv().unwrap();
                let mut all = String::new();
                std::io::Read::read_to_string(&mut file, &mut all).unwrap();
                all
            })
        };
        let family = Family::default();
        // Opened here: `AuditSink::open` takes regular files only.
        let fifo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let sink = AuditSink::with_file(fifo, &path, &family, 8).unwrap();
        let long = format!("/public/{}/r", "x".repeat(200));
        let sent = 20_000;
        for _ in 0..sent {
            sink.write(&event(&long));
        }
        let dropped = lost(&family, &QUEUE_FULL);
        // A pipe holds 64 KiB and a batch 64 KiB more: far less than the
        // 5 MB sent.
        assert!(dropped > sent / 2, "{dropped}");
        drop(sink);
        go.send(()).unwrap();
        let all = reader.join().unwrap();
        let written = all.lines().count() as u64;
        assert!(all.lines().all(|l| l.contains(&long)));
        assert_eq!(written + dropped, sent);
        assert_eq!(lost(&family, &WRITE_FAILED), 0);
    }

    #[test]
    fn events_a_full_disk_refuses_are_counted_as_lost() {
        let family = Family::default();
        // A device that answers every write with "no space left", opened
        // here: `AuditSink::open` takes regular files only.
        let full = Path::new("/dev/full");
        let device = std::fs::OpenOptions::new().write(true).open(full).unwrap();
        let sink = AuditSink::with_file(device, full, &family, QUEUE_EVENTS).unwrap();
        let AuditSink::File(file) = &sink else {
            panic!("not a file sink");
        };
        let counted = file.lost.get_or_create(&WRITE_FAILED).clone();
        for _ in 0..10 {
            sink.write(&event("/public/{tok:1}/r"));
        }
        drop(sink);
        // The writer thread counts as it goes; wait (generously) for all ten.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while counted.get() < 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(counted.get(), 10);
        assert_eq!(lost(&family, &QUEUE_FULL), 0);
    }
}
