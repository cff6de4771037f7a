//! Pure helpers for the `fetch` wrapper: reading a `WWW-Authenticate` challenge or an OAuth error
//! body, deciding whether to retry, and turning a server's `Date` into a clock offset.
//!
//! They take strings and numbers, so they are tested natively as well as in the browser.

/// The `error` parameter of a `DPoP` challenge in a `WWW-Authenticate` header value
/// ([RFC 9449 §7.1], [RFC 6750 §3]), if there is one.
///
/// Challenges of other schemes (`Bearer`) are skipped: only the server's DPoP answer decides a
/// DPoP retry.
///
/// [RFC 9449 §7.1]: https://www.rfc-editor.org/rfc/rfc9449#section-7.1
/// [RFC 6750 §3]: https://www.rfc-editor.org/rfc/rfc6750#section-3
pub fn dpop_challenge_error(www_authenticate: &str) -> Option<String> {
    let mut scheme: Option<&str> = None;
    let mut rest = www_authenticate.trim_start();
    while !rest.is_empty() {
        // A token: a scheme name or a parameter name.
        let end = rest.find(|c: char| c == '=' || c == ',' || c.is_ascii_whitespace());
        let (token, after) = rest.split_at_checked(end.unwrap_or(rest.len())).unwrap_or((rest, ""));
        let after_ws = after.trim_start();
        if let Some(value_part) = after_ws.strip_prefix('=') {
            // auth-param: token = (token / quoted-string)
            let value_part = value_part.trim_start();
            let (value, remaining) = read_param_value(value_part);
            if scheme.is_some_and(|s| s.eq_ignore_ascii_case("DPoP")) && token.eq_ignore_ascii_case("error") {
                return Some(value);
            }
            rest = remaining.trim_start().trim_start_matches(',').trim_start();
        } else if token.is_empty() {
            rest = after_ws.trim_start_matches(',').trim_start();
        } else {
            scheme = Some(token);
            rest = after_ws.trim_start_matches(',').trim_start();
        }
    }
    None
}

/// Reads a parameter value (a token or a quoted string with `\` escapes); returns it and the rest.
fn read_param_value(input: &str) -> (String, &str) {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut value = String::new();
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            if escaped {
                value.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                return (value, quoted.get(i + 1..).unwrap_or(""));
            } else {
                value.push(c);
            }
        }
        (value, "")
    } else {
        let end = input
            .find(|c: char| c == ',' || c.is_ascii_whitespace())
            .unwrap_or(input.len());
        let (value, rest) = input.split_at_checked(end).unwrap_or((input, ""));
        (value.to_string(), rest)
    }
}

/// The error code that asks for a retry with a fresh nonce ([RFC 9449 §8], §9).
///
/// [RFC 9449 §8]: https://www.rfc-editor.org/rfc/rfc9449#section-8
pub const USE_DPOP_NONCE: &str = "use_dpop_nonce";

/// Whether a response asks for a nonce: a 401 whose `DPoP` challenge says `use_dpop_nonce` (a
/// resource server, RFC 9449 §9), or a 400 whose JSON body says so (an authorization server,
/// §8). `body_error` is only looked at for a 400.
pub fn asks_for_nonce(status: u16, www_authenticate: Option<&str>, body_error: Option<&str>) -> bool {
    match status {
        401 => www_authenticate
            .and_then(dpop_challenge_error)
            .is_some_and(|e| e == USE_DPOP_NONCE),
        400 => body_error == Some(USE_DPOP_NONCE),
        _ => false,
    }
}

/// Below this difference (seconds) between the server's `Date` and the local clock, the clocks are
/// taken to agree: `Date` has a resolution of one second and the response took time to arrive.
pub const CLOCK_TOLERANCE_SECONDS: f64 = 2.0;

/// The clock offset (seconds to add to the local clock) learned from a server's `Date`, both in
/// milliseconds since the epoch. `None` if the date is not a finite number.
pub fn clock_offset(server_date_millis: f64, local_millis: f64) -> Option<f64> {
    if !server_date_millis.is_finite() || !local_millis.is_finite() {
        return None;
    }
    // `Date` is truncated to the second: the server's clock was somewhere in [date, date + 1 s).
    let offset = (server_date_millis + 500.0 - local_millis) / 1000.0;
    Some(if offset.abs() < CLOCK_TOLERANCE_SECONDS {
        0.0
    } else {
        offset
    })
}

/// The `iat` for a proof: the local clock plus the offset, in whole seconds (never negative).
pub fn iat(local_millis: f64, offset_seconds: f64) -> u64 {
    let seconds = (local_millis / 1000.0 + offset_seconds).floor();
    if seconds.is_finite() && seconds > 0.0 {
        // In range: positive and far below 2^53 for any real clock.
        seconds as u64
    } else {
        0
    }
}

/// Whether `method` is an RFC 9110 token (what `htm` must be).
pub fn is_method(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= 32
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_error_of_the_dpop_challenge_only() {
        // RFC 9449 §9's example answer of a resource server
        assert_eq!(
            dpop_challenge_error(
                r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#
            )
            .as_deref(),
            Some("use_dpop_nonce")
        );
        assert_eq!(
            dpop_challenge_error(r#"Bearer realm="x", error="invalid_token", DPoP algs="ES256", error=use_dpop_nonce"#)
                .as_deref(),
            Some("use_dpop_nonce")
        );
        assert_eq!(
            dpop_challenge_error(r#"dpop algs="ES256 PS256", error="invalid_dpop_proof""#).as_deref(),
            Some("invalid_dpop_proof")
        );
        assert_eq!(
            dpop_challenge_error(r#"DPoP realm="a\"b, error=x", error="use_dpop_nonce""#).as_deref(),
            Some("use_dpop_nonce")
        );
        assert_eq!(dpop_challenge_error(r#"Bearer error="use_dpop_nonce""#), None);
        assert_eq!(dpop_challenge_error(r#"DPoP algs="ES256""#), None);
        assert_eq!(dpop_challenge_error(""), None);
        assert_eq!(
            dpop_challenge_error(r#"DPoP error="unterminated"#).as_deref(),
            Some("unterminated")
        );
    }

    #[test]
    fn nonce_requests_are_401_challenges_or_400_bodies() {
        let challenge = Some(r#"DPoP error="use_dpop_nonce""#);
        assert!(asks_for_nonce(401, challenge, None));
        assert!(!asks_for_nonce(401, Some(r#"DPoP error="invalid_dpop_proof""#), None));
        assert!(!asks_for_nonce(401, None, Some("use_dpop_nonce")));
        assert!(asks_for_nonce(400, None, Some("use_dpop_nonce")));
        assert!(!asks_for_nonce(400, challenge, Some("invalid_grant")));
        assert!(!asks_for_nonce(403, challenge, Some("use_dpop_nonce")));
        assert!(!asks_for_nonce(200, challenge, None));
    }

    #[test]
    fn clock_offset_ignores_sub_tolerance_differences() {
        let local = 1_700_000_000_400.0;
        assert_eq!(clock_offset(1_700_000_000_000.0, local), Some(0.0));
        assert_eq!(clock_offset(1_700_000_001_000.0, local), Some(0.0));
        let behind = clock_offset(1_699_996_400_000.0, local).unwrap();
        assert!((behind - -3599.9).abs() < 1e-6, "{behind}");
        let ahead = clock_offset(1_700_000_100_000.0, local).unwrap();
        assert!((ahead - 100.1).abs() < 1e-6, "{ahead}");
        assert_eq!(clock_offset(f64::NAN, local), None);
        assert_eq!(iat(local, 0.0), 1_700_000_000);
        assert_eq!(iat(local, -3599.9), 1_699_996_400);
        assert_eq!(iat(local, f64::NEG_INFINITY), 0);
    }

    #[test]
    fn methods_are_tokens() {
        for ok in ["GET", "POST", "PATCH", "M-SEARCH", "get"] {
            assert!(is_method(ok), "{ok}");
        }
        for bad in ["", "GET ", "G:T", "GÉT", "A\r\n", &"A".repeat(33)] {
            assert!(!is_method(bad), "{bad}");
        }
    }
}
