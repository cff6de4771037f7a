//! TOTP second factor ([RFC 6238], HMAC-SHA1, 6 digits, 30 s steps), as authenticator apps use.
//!
//! A code of the current step or one step either side is accepted (clock drift). The last
//! accepted step is stored per user ([`crate::storage::Storage::accept_totp_step`]), so a code is
//! accepted once and no code of an earlier step after it (RFC 6238 §5.2): a code seen over a
//! shoulder cannot be reused. Guessing is throttled with the password ([`crate::throttle`]).
//!
//! [RFC 6238]: https://www.rfc-editor.org/rfc/rfc6238

use hmac::{Hmac, KeyInit, Mac};

/// The step length in seconds.
pub const STEP: u64 = 30;
/// Number of digits.
pub const DIGITS: u32 = 6;

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored), the format
/// authenticator apps use for secrets.
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits: u64 = 0;
    let mut n = 0u32;
    let mut out = Vec::new();
    for c in s.chars() {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => u64::from(c as u8 - b'A'),
            c @ '2'..='7' => u64::from(c as u8 - b'2' + 26),
            '=' | ' ' => continue,
            _ => return None,
        };
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push(((bits >> n) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The HOTP value ([RFC 4226] §5.3) of `counter` with `digits` digits.
///
/// [RFC 4226]: https://www.rfc-editor.org/rfc/rfc4226
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let Ok(mut mac) = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret) else {
        return u32::MAX;
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h.last().copied().unwrap_or(0) & 0x0f);
    let word = h
        .get(offset..offset + 4)
        .map_or(0, |b| b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)));
    (word & 0x7fff_ffff) % 10u32.pow(digits)
}

/// The TOTP code at Unix time `t`, zero-padded.
pub fn code(secret: &[u8], t: u64) -> String {
    format!("{:0width$}", hotp(secret, t / STEP, DIGITS), width = DIGITS as usize)
}

/// The step (`t / 30`) within one step of `now` whose code `given` is, if any; compared in
/// constant time.
pub fn verify(secret: &[u8], given: &str, now: u64) -> Option<u64> {
    if given.len() != DIGITS as usize || !given.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = now / STEP;
    [step.saturating_sub(1), step, step.saturating_add(1)]
        .into_iter()
        .find(|s| {
            let want = format!("{:0width$}", hotp(secret, *s, DIGITS), width = DIGITS as usize);
            subtle_eq(want.as_bytes(), given.as_bytes())
        })
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B (SHA-1 rows); the 6-digit codes are the last 6 of the 8-digit ones.
    #[test]
    fn rfc6238_appendix_b_sha1() {
        let secret = b"12345678901234567890";
        for (t, eight) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(hotp(secret, t / STEP, 8), eight, "t={t}");
            assert_eq!(code(secret, t), format!("{:06}", eight % 1_000_000));
        }
    }

    /// RFC 4226 Appendix D.
    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871, 520_489,
        ];
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(hotp(b"12345678901234567890", i as u64, 6), *want);
        }
    }

    #[test]
    fn base32_of_the_rfc_secret() {
        assert_eq!(
            base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(),
            b"12345678901234567890"
        );
        assert_eq!(base32_decode("gezd gnbv").unwrap(), base32_decode("GEZDGNBV").unwrap());
        assert!(base32_decode("GEZ1").is_none());
    }

    #[test]
    fn verify_accepts_one_step_of_drift_only() {
        let s = b"12345678901234567890";
        let now = 1_111_111_111;
        assert_eq!(verify(s, &code(s, now), now), Some(now / STEP));
        assert!(verify(s, &code(s, now - STEP), now).is_some());
        assert!(verify(s, &code(s, now + STEP), now).is_some());
        assert!(verify(s, &code(s, now - 3 * STEP), now).is_none());
        assert!(verify(s, "12345", now).is_none());
        assert!(verify(s, "abcdef", now).is_none());
    }
}
