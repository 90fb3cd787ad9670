//! Where log lines go: standard error, through a buffer.
//!
//! Written one `write(2)` per event, logging cost a share request two
//! system calls (its access and audit events), about a fifth of its CPU
//! time under load. Lines are appended to one shared buffer instead and
//! written out when it holds [`FLUSH_AT`] bytes, every
//! `log.flush_interval`, when the process exits and when it panics: what
//! nginx's `access_log ... buffer= flush=` and Envoy's file flush interval
//! do. A zero interval writes every line as it comes. Lines keep their
//! order; a line is never split between two writes. A process killed with
//! SIGKILL loses at most one interval's lines.
//!
//! Hand-written rather than `tracing-appender`'s non-blocking writer: that
//! one hands each line to another thread (a wake-up per burst on a busy
//! core) and writes it with its own system call all the same.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// A buffer this full is written out at once, whatever the interval.
pub const FLUSH_AT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Shared {
    buf: Mutex<Vec<u8>>,
    immediate: bool,
}

/// The one output of the process's log lines, flushed by [`flush`].
static OUTPUT: OnceLock<Arc<Shared>> = OnceLock::new();

/// The [`MakeWriter`] the log subscriber writes through.
#[derive(Debug, Clone)]
pub struct LogOutput(Arc<Shared>);

/// Sets up the process's log output; the first call wins (tests and the
/// demo call it more than once). With a non-zero `interval`, a thread
/// writes the buffer out on that beat, and a panic writes it out before
/// the panic message.
pub fn install(interval: Duration) -> LogOutput {
    let mut fresh = false;
    let shared = OUTPUT.get_or_init(|| {
        fresh = true;
        Arc::new(Shared {
            buf: Mutex::new(Vec::new()),
            immediate: interval.is_zero(),
        })
    });
    if fresh && !interval.is_zero() {
        let spawned = std::thread::Builder::new()
            .name("sharegate-log".to_owned())
            .spawn(move || loop {
                std::thread::sleep(interval);
                flush();
            });
        if spawned.is_err() {
            // Without the beat, lines would wait for the buffer to fill.
            eprintln!("sharegate: no log flush thread; log lines may be late");
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
    }
    LogOutput(shared.clone())
}

/// Adds one whole line (ending in `\n`) to the output; straight to standard
/// error when no output is installed (a library user's own subscriber).
pub fn write_line(line: &[u8]) {
    match OUTPUT.get() {
        Some(shared) => {
            let _ = LineWriter(shared).write_all(line);
        }
        None => {
            let _ = std::io::stderr().lock().write_all(line);
        }
    }
}

/// Writes out whatever log lines are buffered. Call before the process
/// exits.
pub fn flush() {
    if let Some(shared) = OUTPUT.get() {
        shared.write_out();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A panic while the lock was held leaves bytes that are still lines.
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_out(&self) {
        let mut buf = self.lock();
        if !buf.is_empty() {
            // Nowhere to report a failed write of the log itself.
            let _ = std::io::stderr().lock().write_all(&buf);
            buf.clear();
        }
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

/// Receives one formatted event (the subscriber writes each with a single
/// `write_all`).
pub struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if self.0.immediate {
            return std::io::stderr().lock().write(line);
        }
        let mut buf = self.0.lock();
        buf.extend_from_slice(line);
        if buf.len() >= FLUSH_AT {
            let _ = std::io::stderr().lock().write_all(&buf);
            buf.clear();
            // Keep the steady-state buffer, not a burst's.
            buf.shrink_to(FLUSH_AT * 2);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
