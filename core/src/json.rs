//! Writing JSON text without a value tree: strings escaped exactly as serde_json escapes them,
//! and unsigned integers. No `core::fmt`: this is on the browser's proof path, whose wasm stays
//! small without the formatting machinery.

use alloc::string::String;

/// Appends `s` as a JSON string: `"` and `\` escaped, control characters as `\b`, `\t`, `\n`,
/// `\f`, `\r` or `\u00XX`, everything else (`/`, DEL, non-ASCII) as it is (RFC 8259 §7).
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i` is a character boundary.
        out.push_str(s.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            out.push_str("\\u00");
            out.extend(char::from_digit(u32::from(b >> 4), 16));
            out.extend(char::from_digit(u32::from(b & 0xf), 16));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

/// Appends `n` as a JSON number.
pub(crate) fn push_u64(out: &mut String, n: u64) {
    if n >= 10 {
        push_u64(out, n / 10);
    }
    // One decimal digit: `n % 10` is below 10.
    out.extend(char::from_digit((n % 10) as u32, 10));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "serde_json cannot fail on a string or a number")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, s);
        out
    }

    #[test]
    fn escapes_as_serde_json_does() {
        let mut every_ascii = String::new();
        for b in 0u8..0x80 {
            every_ascii.push(char::from(b));
        }
        for s in [
            "",
            "GET",
            "a\"b\\c",
            "/π/\u{7f}/\u{1F600}",
            "\u{0}\u{1f}\u{8}\u{c}",
            every_ascii.as_str(),
        ] {
            assert_eq!(quoted(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn numbers() {
        for n in [0, 7, 1_700_000_000, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, serde_json::to_string(&n).unwrap());
        }
    }

    proptest! {
        #[test]
        fn any_string_escapes_as_serde_json_does(s in any::<String>()) {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
