//! Names as NATS subject tokens.
//!
//! Each (channel, event) is one subject, `<prefix>.r.<channel>.<event>`, with both names
//! encoded into tokens that NATS accepts and that never collide: ASCII letters, digits and `-`
//! stand for themselves; every other byte of the UTF-8 name (`.`, `_`, `@`, ...) becomes `_`
//! and two upper-case hex digits (`_2E` for `.`). Each token starts with `_` followed by the
//! encoded name, so the empty channel is `_` and no token is empty. The encoding is one-to-one,
//! so a subject names its channel and event back ([`decode`]). User names are encoded the same
//! way as key-value keys.

/// The subject of (`channel`, `event`) under `records`, the records' subject prefix
/// (`<prefix>.r`).
pub fn record(records: &str, channel: &str, event: &str) -> String {
    format!("{records}.{}.{}", encode(channel), encode(event))
}

/// The subject-safe token of `name` (see the module docs).
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    out.push('_');
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("_{byte:02X}"));
        }
    }
    out
}

/// The name a token of [`encode`] stands for; `None` for anything else.
pub fn decode(token: &str) -> Option<String> {
    let body = token.strip_prefix('_')?;
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = body.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_safe_tokens() {
        for name in [
            "",
            "room1",
            "a.b",
            "a_b",
            "_2E",
            "x*y>z",
            "user@host",
            "é vent",
        ] {
            let token = encode(name);
            assert!(!token.is_empty());
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            assert_eq!(decode(&token).as_deref(), Some(name));
        }
        assert_ne!(encode("a.b"), encode("a_2Eb"), "no collisions");
        assert_eq!(encode("a.b"), "_a_2Eb");
        assert_eq!(decode("nounderscore"), None);
        assert_eq!(decode("_bad_Z"), None);
    }
}
