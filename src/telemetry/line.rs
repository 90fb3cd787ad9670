//! The per-request lines (access and audit), formatted by hand.
//!
//! They are written for every request, and `tracing-subscriber`'s
//! formatter (field visitors, every value through `Debug` and an escaping
//! writer one character at a time) spent about 50,000 instructions on the
//! two, a third of all the gateway did for a small share read. These lines
//! are built straight into a buffer instead, in the shapes the subscriber
//! gives every other line: text `TIME  INFO target: message key=value ...`
//! (a value is quoted when it is empty or holds a space, `"`, `=` or `\`),
//! or one flat JSON object with `timestamp`, `level`, `message`, the fields
//! and `target`. They obey the same level filter (the caller asks
//! `tracing::enabled!`), and control characters never reach the output
//! raw: text escapes them as `\u{1b}`, JSON as `\u001b`.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether lines are JSON (`log.format = "json"`); set once at start.
static JSON: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// One line under construction.
pub struct Line {
    buf: Vec<u8>,
    json: bool,
    target: &'static str,
}

impl Line {
    /// Starts an INFO line for `target` with `message`.
    pub fn info(target: &'static str, message: &str) -> Line {
        let json = JSON.load(Ordering::Relaxed);
        let mut line = Line {
            buf: Vec::with_capacity(512),
            json,
            target,
        };
        if json {
            line.buf.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(&mut line.buf);
            line.buf.extend_from_slice(b"\",\"level\":\"INFO\",");
            line.key("message");
            json_str(&mut line.buf, message);
        } else {
            timestamp(&mut line.buf);
            line.buf.extend_from_slice(b"  INFO ");
            line.buf.extend_from_slice(target.as_bytes());
            line.buf.extend_from_slice(b": ");
            text_escaped(&mut line.buf, message);
        }
        line
    }

    fn key(&mut self, key: &str) {
        if self.json {
            if !self.buf.ends_with(b",") {
                self.buf.push(b',');
            }
            self.buf.push(b'"');
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.extend_from_slice(b"\":");
        } else {
            self.buf.push(b' ');
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.push(b'=');
        }
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        if self.json {
            json_str(&mut self.buf, value);
        } else {
            text_value(&mut self.buf, value);
        }
        self
    }

    /// A field left out when `None`, as the subscriber does.
    pub fn opt(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    /// An address: never needs quotes or escapes.
    pub fn ip(&mut self, key: &str, ip: std::net::IpAddr) -> &mut Self {
        self.key(key);
        if self.json {
            self.buf.push(b'"');
            write_ip(&mut self.buf, ip);
            self.buf.push(b'"');
        } else {
            write_ip(&mut self.buf, ip);
        }
        self
    }

    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        push_u64(&mut self.buf, value);
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// A duration in milliseconds with three decimals (to the microsecond).
    pub fn millis(&mut self, key: &str, value: std::time::Duration) -> &mut Self {
        self.key(key);
        let micros = value.as_micros();
        push_u64(
            &mut self.buf,
            u64::try_from(micros / 1000).unwrap_or(u64::MAX),
        );
        self.buf.push(b'.');
        push_padded(&mut self.buf, (micros % 1000) as u32, 3);
        self
    }

    /// Ends the line and hands it to the log output.
    pub fn write(mut self) {
        if self.json {
            self.key("target");
            json_str(&mut self.buf, self.target);
            self.buf.push(b'}');
        }
        self.buf.push(b'\n');
        super::output::write_line(&self.buf);
    }
}

/// Now, as RFC 3339 with microseconds (`2026-11-27T07:54:43.460673Z`), the
/// subscriber's own form.
fn timestamp(buf: &mut Vec<u8>) {
    rfc3339_now(buf, true);
}

/// Now, as RFC 3339 with milliseconds (`2026-11-27T07:54:43.460Z`), or with
/// microseconds when `micros`. The date and time up to the second are
/// formatted once per second per thread; only the fraction is written each
/// time.
pub(crate) fn rfc3339_now(buf: &mut Vec<u8>, micros: bool) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            // "2026-11-27T07:54:43Z" without its "Z".
            let mut s = humantime::format_rfc3339_seconds(now).to_string();
            s.pop();
            *cached = (secs, s);
        }
        buf.extend_from_slice(cached.1.as_bytes());
    });
    buf.push(b'.');
    if micros {
        push_padded(buf, since.subsec_micros(), 6);
    } else {
        push_padded(buf, since.subsec_millis(), 3);
    }
    buf.push(b'Z');
}

/// Decimal digits. Numbers are written on every line, and `write!` through
/// the formatting machinery cost several hundred instructions each.
pub(crate) fn push_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// `value` in at least `width` decimal digits, zero-padded on the left.
fn push_padded(buf: &mut Vec<u8>, value: u32, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(value);
    buf.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    buf.extend_from_slice(digits.as_bytes());
}

/// A text value: bare when it is plain, quoted and escaped otherwise.
fn text_value(buf: &mut Vec<u8>, value: &str) {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'));
    if plain {
        buf.extend_from_slice(value.as_bytes());
        return;
    }
    buf.push(b'"');
    if !may_hold_controls(value) {
        // Only `"` and `\\` to escape: copy the runs between them whole.
        let bytes = value.as_bytes();
        let mut from = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'"' || b == b'\\' {
                buf.extend_from_slice(&bytes[from..i]);
                buf.push(b'\\');
                buf.push(b);
                from = i + 1;
            }
        }
        buf.extend_from_slice(&bytes[from..]);
        buf.push(b'"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => buf.extend_from_slice(b"\\\""),
            '\\' => buf.extend_from_slice(b"\\\\"),
            c if escaped_in_logs(c) => {
                let _ = write!(buf, "\\u{{{:x}}}", u32::from(c));
            }
            c => {
                let mut utf8 = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    buf.push(b'"');
}

/// Characters a log line never holds raw: the controls (C0, DEL, C1, which
/// terminals obey), the line and paragraph separators (which some log
/// viewers and JavaScript-based ones break lines at, so a value could
/// forge a line of its own) and the bidirectional formatting characters
/// (which make a viewer show a line's text in another order than it holds,
/// as in "Trojan Source").
fn escaped_in_logs(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Whether `value` may hold a character [`escaped_in_logs`]: a C0 byte,
/// DEL, or the lead byte of the UTF-8 form of a C1 control (0xC2), of
/// U+061C (0xD8) or of the others (0xE2). A byte test the compiler
/// vectorizes; the exact test runs only when this says yes.
fn may_hold_controls(value: &str) -> bool {
    // A fold, not `any`: without the early exit the loop vectorizes.
    value.bytes().fold(false, |hit, b| {
        hit | (b < 0x20) | (b == 0x7f) | (b == 0xc2) | (b == 0xd8) | (b == 0xe2)
    })
}

/// Whether a JSON string needs more than quotes around it.
fn json_plain(value: &str) -> bool {
    !value.bytes().fold(false, |hit, b| {
        let special = (b < 0x20) | (b == 0x7f) | (b == 0xc2) | (b == 0xd8) | (b == 0xe2);
        hit | special | (b == b'"') | (b == b'\\')
    })
}

/// An address in its usual text form. IPv4 is written digit by digit: the
/// standard `Display` (built for padding and width) cost more than the
/// rest of a field.
pub(crate) fn write_ip(buf: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                if octet >= 100 {
                    buf.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    buf.push(b'0' + octet / 10 % 10);
                }
                buf.push(b'0' + octet % 10);
            }
        }
        std::net::IpAddr::V6(_) => {
            let _ = write!(buf, "{ip}");
        }
    }
}

/// Free text (a message): written as is, control characters escaped.
fn text_escaped(buf: &mut Vec<u8>, value: &str) {
    if !may_hold_controls(value) {
        buf.extend_from_slice(value.as_bytes());
        return;
    }
    for c in value.chars() {
        if escaped_in_logs(c) {
            let _ = write!(buf, "\\u{{{:x}}}", u32::from(c));
        } else {
            let mut utf8 = [0u8; 4];
            buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
}

/// A JSON string literal, with every control character (C0, DEL and the
/// C1 controls some terminals obey) escaped.
pub(crate) fn json_str(buf: &mut Vec<u8>, value: &str) {
    buf.push(b'"');
    if json_plain(value) {
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, c) in value.char_indices() {
        let escaped: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            c if escaped_in_logs(c) => None,
            _ => continue,
        };
        buf.extend_from_slice(&value.as_bytes()[start..i]);
        match escaped {
            Some(e) => buf.extend_from_slice(e),
            None => {
                let _ = write!(buf, "\\u{:04x}", u32::from(c));
            }
        }
        start = i + c.len_utf8();
    }
    buf.extend_from_slice(&value.as_bytes()[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> String {
        let mut b = Vec::new();
        text_value(&mut b, v);
        String::from_utf8(b).unwrap()
    }

    fn json(v: &str) -> String {
        let mut b = Vec::new();
        json_str(&mut b, v);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn text_values_are_bare_only_when_plain() {
        assert_eq!(text("share_api"), "share_api");
        assert_eq!(text("/public/{tok:1a2b}/r"), "/public/{tok:1a2b}/r");
        assert_eq!(text(""), "\"\"");
        assert_eq!(
            text("share.allow_from (/public/{token}/r)"),
            "\"share.allow_from (/public/{token}/r)\""
        );
        assert_eq!(text("a=b"), "\"a=b\"");
        assert_eq!(text("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(text("é"), "\"é\"");
        assert_eq!(text("a \"b\" \\c\\"), "\"a \\\"b\\\" \\\\c\\\\\"");
        assert_eq!(text("é \u{85}"), "\"é \\u{85}\"");
    }

    #[test]
    fn numbers_and_durations() {
        let mut b = Vec::new();
        for v in [0, 7, 1_000, u64::MAX] {
            b.clear();
            push_u64(&mut b, v);
            assert_eq!(b, v.to_string().as_bytes());
        }
        for (micros, shown) in [(0, "0.000"), (5, "0.005"), (1_234_567, "1234.567")] {
            let mut line = Line {
                buf: Vec::new(),
                json: false,
                target: "t",
            };
            line.millis("d", std::time::Duration::from_micros(micros));
            assert_eq!(String::from_utf8_lossy(&line.buf), format!(" d={shown}"));
        }
    }

    #[test]
    fn control_characters_never_pass_raw() {
        for evil in [
            "\u{1b}[31mred",
            "bell\u{7}",
            "del\u{7f}",
            "csi\u{9b}2J",
            "nl\nx",
            "forged\u{2028}INFO line",
            "para\u{2029}graph",
            "admin\u{202e}nimda",
            "isolate\u{2066}x\u{2069}",
            "marks\u{200e}\u{200f}\u{61c}",
        ] {
            for out in [text(evil), json(evil)] {
                assert!(!out.chars().any(escaped_in_logs), "{evil:?} gave {out:?}");
            }
            let back: String = serde_json::from_str(&json(evil)).unwrap();
            assert_eq!(back, evil);
        }
        let mut b = Vec::new();
        text_escaped(&mut b, "a\u{1b}b");
        assert_eq!(b, b"a\\u{1b}b");
        b.clear();
        text_escaped(&mut b, "a\u{2028}b\u{202e}c");
        assert_eq!(b, b"a\\u{2028}b\\u{202e}c");
        // Other characters with the same lead bytes pass as they are.
        for fine in ["it\u{2019}s", "\u{2026}", "\u{20ac}5", "\u{0627}\u{0644}"] {
            assert_eq!(json(fine), format!("\"{fine}\""));
            assert_eq!(text(fine), format!("\"{fine}\""));
        }
        assert_eq!(json("\u{2028}"), "\"\\u2028\"");
    }

    #[test]
    fn timestamps_as_the_subscriber_writes_them() {
        let mut b = Vec::new();
        timestamp(&mut b);
        let t = String::from_utf8(b).unwrap();
        // 2026-11-27T07:54:43.460673Z
        assert_eq!(t.len(), 27, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
        let parsed = humantime::parse_rfc3339(&t).unwrap();
        let off = std::time::SystemTime::now().duration_since(parsed).unwrap();
        assert!(off < std::time::Duration::from_secs(3600), "{t}");
    }

    #[test]
    fn addresses_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.20.3.255",
            "127.0.0.1",
            "100.9.99.1",
            "::1",
            "::ffff:10.0.0.1",
            "fd00::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut b = Vec::new();
            write_ip(&mut b, ip);
            assert_eq!(String::from_utf8(b).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn json_strings_round_trip() {
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "tab\tnl\n",
            "ünï",
            "\u{0}",
        ] {
            let back: String = serde_json::from_str(&json(s)).unwrap();
            assert_eq!(back, s);
        }
    }
}
