//! `share.revoked_tokens`: the share tokens refused at the gateway.
//!
//! A token is compared as the upstream will read it. LangSmith's share
//! tokens are UUIDs, and the services behind it parse them leniently:
//! Python's `uuid.UUID` (FastAPI, pydantic) drops `urn:`, `uuid:`, braces
//! and every hyphen and ignores case; Postgres and Go take upper case,
//! braces and the 32-digit form. Compared byte for byte, one revoked share
//! would open again as `6F1D2C3B-...` or without its hyphens. So a token
//! that reads as a UUID under those rules is compared by its 128-bit value
//! (and a revoked entry written in any of those spellings revokes them
//! all); any other token, a custom route's say, is compared exactly.
//!
//! The parse is written here rather than taken from the `uuid` crate: the
//! crate accepts four fixed layouts, and a token must be caught in every
//! spelling the most lenient upstream accepts (hyphens anywhere).

use std::collections::HashSet;

/// The revoked tokens, compiled from the config.
#[derive(Debug, Clone, Default)]
pub struct RevokedTokens {
    uuids: HashSet<u128>,
    exact: HashSet<String>,
}

impl RevokedTokens {
    /// Builds the set from the configured entries (trimmed, empty ones
    /// dropped by the caller).
    pub fn new<I: IntoIterator<Item = String>>(entries: I) -> RevokedTokens {
        let mut set = RevokedTokens::default();
        for entry in entries {
            match uuid_value(&entry) {
                Some(v) => {
                    set.uuids.insert(v);
                }
                None => {
                    set.exact.insert(entry);
                }
            }
        }
        set
    }

    /// Whether `token` names a revoked share, in any spelling the upstream
    /// would read as the same token.
    pub fn contains(&self, token: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        match uuid_value(token) {
            Some(v) => self.uuids.contains(&v),
            None => self.exact.contains(token),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.uuids.is_empty() && self.exact.is_empty()
    }

    pub fn len(&self) -> usize {
        self.uuids.len() + self.exact.len()
    }
}

/// The value of `token` read as a UUID the way Python's `uuid.UUID(hex)`
/// does (the most lenient of the upstreams' parsers, and a superset of the
/// others): `urn:` and `uuid:` removed, then surrounding braces, then every
/// hyphen; what is left must be 32 characters that Python's `int(s, 16)`
/// reads, which besides hex digits in either case allows surrounding
/// whitespace, a `+`, a `0x` prefix and single `_` between digits (so a
/// token with leading zero digits has spellings with fewer digits).
pub(crate) fn uuid_value(token: &str) -> Option<u128> {
    if !token.is_ascii() {
        return None;
    }
    // Python removes every occurrence, not only a prefix. Rare: the common
    // spelling is read without allocating (this runs on every share
    // request while any token is revoked).
    let t: std::borrow::Cow<'_, str> = if token.contains("urn:") || token.contains("uuid:") {
        token.replace("urn:", "").replace("uuid:", "").into()
    } else {
        token.into()
    };
    let t = t.trim_start_matches('{').trim_end_matches('}');
    let mut hex = [0u8; 32];
    let mut n = 0;
    for b in t.bytes().filter(|b| *b != b'-') {
        *hex.get_mut(n)? = b;
        n += 1;
    }
    if n != 32 {
        return None;
    }
    python_hex_int(std::str::from_utf8(&hex).ok()?)
}

/// Python's `int(s, 16)` for an ASCII `s`, when it fits 128 bits.
fn python_hex_int(s: &str) -> Option<u128> {
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let s = s.strip_prefix('+').unwrap_or(s);
    let (s, prefixed) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    // PEP 515: one `_` between digits, or right after the base prefix.
    let s = match s.strip_prefix('_') {
        Some(rest) if prefixed => rest,
        Some(_) => return None,
        None => s,
    };
    let mut value: u128 = 0;
    let mut digits = 0;
    let mut after_underscore = false;
    for c in s.chars() {
        if c == '_' {
            if digits == 0 || after_underscore {
                return None;
            }
            after_underscore = true;
            continue;
        }
        let d = c.to_digit(16)?;
        after_underscore = false;
        digits += 1;
        value = value.checked_mul(16)? | u128::from(d);
    }
    (digits > 0 && !after_underscore).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d";

    #[test]
    fn every_spelling_of_a_revoked_uuid_is_revoked() {
        let set = RevokedTokens::new([T.to_owned()]);
        for spelling in [
            T.to_owned(),
            T.to_uppercase(),
            T.replace('-', ""),
            T.replace('-', "").to_uppercase(),
            format!("{{{T}}}"),
            format!("urn:uuid:{T}"),
            format!("uuid:{T}"),
            "6f1d-2c3b-5a4e-4f8b-9c2d-1e0f-3a4b-5c6d".to_owned(),
            "6F1d2C3b5a4E4f8B9c2D1e0F3a4B5c6D".to_owned(),
            format!("{T}-"),
        ] {
            assert!(set.contains(&spelling), "{spelling}");
        }
        for other in [
            "6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6e",
            "6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6",
            "6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d0",
            "6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6g",
            "x6f1d2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d",
            "",
        ] {
            assert!(!set.contains(other), "{other}");
        }
        // Leading zero digits: Python's int() reads shorter spellings of
        // the same value in 32 characters.
        let zeros = "00ad2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d";
        let set = RevokedTokens::new([zeros.to_owned()]);
        for spelling in [
            "0xad2c3b5a4e4f8b9c2d1e0f3a4b5c6d",
            "0Xad2c3b-5a4e-4f8b-9c2d-1e0f3a4b5c6d",
            " +ad2c3b5a4e4f8b9c2d1e0f3a4b5c6d",
            "+0ad2c3b5a4e4f8b9c2d1e0f3a4b5c6d",
            "a_d2c3b5a4e4f8b9c2d1e0f3a4b5c6d ",
        ] {
            assert!(set.contains(spelling), "{spelling}");
        }
        for other in [
            // Python reads it, as another value.
            "0x_ad2c3b5a4e4f8b9c2d1e0f3a4b5c6",
            // Python refuses these.
            "_0ad2c3b5a4e4f8b9c2d1e0f3a4b5c6d",
            "0ad2c3b5a4e4f8b9c2d1e0f3a4b5c6d_",
            "0ad2c3b5a4e4f8b9c2d1e0f3a4b5c__6",
        ] {
            assert!(!set.contains(other), "{other}");
        }
    }

    #[test]
    fn an_entry_in_another_spelling_revokes_the_token_as_minted() {
        let upper = RevokedTokens::new([T.to_uppercase()]);
        assert!(upper.contains(T));
        let simple = RevokedTokens::new([format!("{{{}}}", T.replace('-', ""))]);
        assert!(simple.contains(T));
        assert_eq!(simple.len(), 1);
    }

    #[test]
    fn other_tokens_are_compared_exactly() {
        let set = RevokedTokens::new(["dead".to_owned(), "Tok-1".to_owned()]);
        assert!(set.contains("dead"));
        assert!(set.contains("Tok-1"));
        assert!(!set.contains("DEAD"));
        assert!(!set.contains("tok-1"));
        assert!(!set.contains(T));
        assert!(!RevokedTokens::default().contains(T));
        assert!(RevokedTokens::default().is_empty());
    }
}
