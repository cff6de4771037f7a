//! The DPoP `htu`: an HTTP(S) URI without query and fragment, normalised so that equivalent
//! spellings compare equal ([RFC 9449 §4.3] step 9, [RFC 3986 §6.2.2] and [§6.2.3]).
//!
//! Normalisation: scheme and host lower-cased; the default port (80 for http, 443 for https) and
//! an empty port removed; an empty path becomes `/`; the path is the canonical path of
//! [`crate::path`] (the one a gateway's rules match): percent-encodings get upper-case hex and
//! those of unreserved characters are decoded, other characters outside the path grammar are
//! percent-encoded, empty segments merged and dot segments removed. Query and fragment are
//! dropped.
//!
//! Not accepted: schemes other than http/https, user information (`user@host`), an empty host,
//! a port above 65535, a broken percent-encoding, control characters, and every path that
//! [`crate::path`] refuses (an encoded `/` or `\`, `..` above the root, ...).
//!
//! [RFC 9449 §4.3]: https://www.rfc-editor.org/rfc/rfc9449#section-4.3
//! [RFC 3986 §6.2.2]: https://www.rfc-editor.org/rfc/rfc3986#section-6.2.2
//! [§6.2.3]: https://www.rfc-editor.org/rfc/rfc3986#section-6.2.3

use alloc::string::String;
use core::fmt;

use crate::error::{Error, Result};
use crate::path::{CanonicalPath, hex_val, is_unreserved, push_pct};

/// The longest URI accepted as an `htu` (bytes).
pub const MAX_HTU_LEN: usize = 8 * 1024;

/// A normalised `htu` (`scheme://host[:port]/path`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Htu(String);

impl Htu {
    /// Parses and normalises an absolute http(s) URI; query and fragment are ignored.
    ///
    /// # Errors
    /// [`Error::InvalidHtu`] if it is not an absolute http(s) URI (see the module docs).
    pub fn parse(uri: &str) -> Result<Htu> {
        // Query and fragment are ignored, so they do not count against the bound.
        let uri = uri.split(['?', '#']).next().unwrap_or("");
        if uri.len() > MAX_HTU_LEN {
            return Err(Error::InvalidHtu);
        }
        let (scheme, rest) = uri.split_once("://").ok_or(Error::InvalidHtu)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(end);
        let path = rest.split(['?', '#']).next().unwrap_or("");
        Htu::from_parts(scheme, authority, path)
    }

    /// Builds an `htu` from a request's scheme, authority (`Host` / `:authority`, may include
    /// the port) and path (may include the query, which is ignored).
    ///
    /// # Errors
    /// [`Error::InvalidHtu`] as for [`Htu::parse`].
    pub fn from_parts(scheme: &str, authority: &str, path: &str) -> Result<Htu> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        if scheme.len() + authority.len() + path.len() > MAX_HTU_LEN {
            return Err(Error::InvalidHtu);
        }
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(Error::InvalidHtu),
        };
        if authority.contains('@') || authority.is_empty() {
            return Err(Error::InvalidHtu);
        }
        let (host, port) = split_host_port(authority)?;
        let host = normalise_host(host)?;
        let mut out = String::with_capacity(scheme.len() + authority.len() + path.len() + 4);
        out.push_str(&scheme);
        out.push_str("://");
        out.push_str(&host);
        if let Some(port) = port.filter(|p| *p != default_port) {
            out.push(':');
            out.push_str(&alloc::format!("{port}"));
        }
        if path.is_empty() {
            out.push('/');
        } else {
            out.push_str(&crate::path::canonical(path).map_err(|_| Error::InvalidHtu)?);
        }
        // Percent-encoding may grow the URI; bound the result too, so that a normalised `htu`
        // always parses again to itself.
        if out.len() > MAX_HTU_LEN {
            return Err(Error::InvalidHtu);
        }
        Ok(Htu(out))
    }

    /// This `htu`'s scheme and authority with `path` (a request's canonical path), without
    /// normalising anything again: how a gateway builds the `htu` of a request for one of its
    /// configured origins.
    ///
    /// # Errors
    /// [`Error::InvalidHtu`] if the result would be longer than [`MAX_HTU_LEN`].
    pub fn with_path(&self, path: &CanonicalPath) -> Result<Htu> {
        let authority_start = self.0.find("://").map_or(0, |i| i + 3);
        let origin_end = self
            .0
            .get(authority_start..)
            .and_then(|rest| rest.find('/'))
            .map_or(self.0.len(), |i| authority_start + i);
        let origin = self.0.get(..origin_end).unwrap_or("");
        if origin.len() + path.as_str().len() > MAX_HTU_LEN {
            return Err(Error::InvalidHtu);
        }
        let mut out = String::with_capacity(origin.len() + path.as_str().len());
        out.push_str(origin);
        out.push_str(path.as_str());
        Ok(Htu(out))
    }

    /// The normalised URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Htu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Htu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Htu({})", self.0)
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or(Error::InvalidHtu)?;
        let (host, rest) = authority.split_at(close + 1);
        match rest {
            "" => (host, None),
            r => (host, Some(r.strip_prefix(':').ok_or(Error::InvalidHtu)?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(Error::InvalidHtu);
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| Error::InvalidHtu)?)
        }
        Some(_) => return Err(Error::InvalidHtu),
    };
    Ok((host, port))
}

fn normalise_host(host: &str) -> Result<String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(Error::InvalidHtu)?;
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(Error::InvalidHtu);
        }
        return Ok(alloc::format!("[{}]", inner.to_ascii_lowercase()));
    }
    let host = normalise_percent(host, b"!$&'()*+,;=")?;
    if host
        .bytes()
        .any(|b| matches!(b, b'/' | b'?' | b'#' | b'[' | b']' | b'@' | b':' | b'%'))
    {
        return Err(Error::InvalidHtu);
    }
    Ok(host.to_ascii_lowercase())
}

/// Percent-encoding normalisation: decode unreserved, upper-case the hex of the rest, encode
/// anything that is neither unreserved nor in `allowed`.
fn normalise_percent(s: &str, allowed: &[u8]) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Err(Error::InvalidHtu);
            };
            let (Some(h), Some(l)) = (hex_val(h), hex_val(l)) else {
                return Err(Error::InvalidHtu);
            };
            let v = (h << 4) | l;
            if is_unreserved(v) {
                out.push(char::from(v));
            } else {
                push_pct(&mut out, v);
            }
            i += 3;
            continue;
        }
        if b < 0x20 || b == 0x7f {
            return Err(Error::InvalidHtu);
        }
        if is_unreserved(b) || allowed.contains(&b) {
            out.push(char::from(b));
        } else {
            push_pct(&mut out, b);
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        Htu::parse(s).unwrap().0
    }

    #[test]
    fn scheme_and_host_case_default_ports_and_empty_path() {
        assert_eq!(n("HTTPS://Server.Example.COM"), "https://server.example.com/");
        assert_eq!(
            n("https://server.example.com:443/token"),
            "https://server.example.com/token"
        );
        assert_eq!(
            n("http://server.example.com:80/token"),
            "http://server.example.com/token"
        );
        assert_eq!(n("http://server.example.com:/token"), "http://server.example.com/token");
        assert_eq!(
            n("https://server.example.com:8443/token"),
            "https://server.example.com:8443/token"
        );
        assert_eq!(
            n("https://server.example.com:08443/x"),
            "https://server.example.com:8443/x"
        );
        assert_eq!(n("http://server.example.com:443/x"), "http://server.example.com:443/x");
        assert_eq!(n("https://[2001:DB8::1]:443/x"), "https://[2001:db8::1]/x");
        assert_eq!(n("https://[::1]:9000"), "https://[::1]:9000/");
    }

    #[test]
    fn query_and_fragment_are_ignored() {
        assert_eq!(n("https://rs.example.com/api?a=1#frag"), "https://rs.example.com/api");
        assert_eq!(n("https://rs.example.com?a=1"), "https://rs.example.com/");
        assert_eq!(n("https://rs.example.com#f"), "https://rs.example.com/");
    }

    #[test]
    fn percent_encoding_is_normalised_and_path_case_kept() {
        assert_eq!(
            n("https://a.example/%7euser/%3aX%3a"),
            "https://a.example/~user/%3AX%3A"
        );
        assert_eq!(n("https://a.example/%41%62c"), "https://a.example/Abc");
        assert_eq!(n("https://a.example/a b/é"), "https://a.example/a%20b/%C3%A9");
        assert_ne!(n("https://a.example/Path"), n("https://a.example/path"));
        assert_eq!(n("https://a.example/a:b@c;d=e"), "https://a.example/a:b@c;d=e");
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(n("https://a.example/a/./b/../c"), "https://a.example/a/c");
        assert_eq!(n("https://a.example/a/.."), "https://a.example/");
        assert_eq!(n("https://a.example/a/b/."), "https://a.example/a/b/");
        // The path is the canonical path the gateway's rules match: slashes merged.
        assert_eq!(n("https://a.example/a//b"), "https://a.example/a/b");
    }

    #[test]
    fn with_path_is_from_parts_of_the_canonical_path() {
        let origin = Htu::parse("HTTPS://API.example.com:443").unwrap();
        for raw in ["/a/../b?x", "/", "//x//y/", "/%7e/%3a"] {
            let path = CanonicalPath::parse(raw).unwrap();
            assert_eq!(
                origin.with_path(&path).unwrap(),
                Htu::from_parts("https", "api.example.com", raw).unwrap(),
                "{raw}"
            );
        }
        let long = CanonicalPath::parse(&alloc::format!("/{}", "a".repeat(crate::path::MAX_PATH_LEN - 1))).unwrap();
        assert_eq!(origin.with_path(&long), Err(Error::InvalidHtu));
    }

    #[test]
    fn from_parts_matches_parse() {
        assert_eq!(
            Htu::from_parts("https", "API.example.com:443", "/v1/things?x=1").unwrap(),
            Htu::parse("https://api.example.com/v1/things").unwrap()
        );
    }

    #[test]
    fn invalid_uris_are_refused() {
        for bad in [
            "ftp://a.example/",
            "https:/a.example/",
            "a.example/x",
            "https://user@a.example/",
            "https:///x",
            "https://a.example:99999/",
            "https://a.example:8a/",
            "https://a.example/%zz",
            "https://a.example/%4",
            "https://a.example/\u{1}",
            "https://[::1/",
            "https://[::1]x/",
            "https://a.ex%2Fample/",
            // Paths the gateway refuses (crate::path) are no htu either.
            "https://a.example/../../x",
            "https://a.example/a%2Fb",
            "https://a.example/a\\b",
            "https://:443/",
        ] {
            assert_eq!(Htu::parse(bad), Err(Error::InvalidHtu), "{bad}");
        }
        assert_eq!(
            Htu::parse(&alloc::format!("https://a.example/{}", "a".repeat(MAX_HTU_LEN))),
            Err(Error::InvalidHtu)
        );
        assert_eq!(
            Htu::from_parts("https", "a.example", &"/a".repeat(MAX_HTU_LEN)),
            Err(Error::InvalidHtu)
        );
        // Found by fuzzing: spaces triple in length when encoded; the result is bounded too, so a
        // normalised htu always parses again to itself.
        let spaces = alloc::format!("https://a.example/{}", " ".repeat(MAX_HTU_LEN / 2));
        assert_eq!(Htu::parse(&spaces), Err(Error::InvalidHtu));
        // A long query is ignored, not refused.
        let long_query = alloc::format!("/r?{}", "q".repeat(MAX_HTU_LEN * 2));
        assert_eq!(
            Htu::from_parts("https", "rs.example.com", &long_query)
                .unwrap()
                .as_str(),
            "https://rs.example.com/r"
        );
        assert!(
            Htu::parse(&alloc::format!(
                "https://rs.example.com{long_query}#{}",
                "f".repeat(MAX_HTU_LEN)
            ))
            .is_ok()
        );
        let near = alloc::format!("https://a.example/{}", " ".repeat(MAX_HTU_LEN / 3 - 10));
        let once = Htu::parse(&near).unwrap();
        assert_eq!(Htu::parse(once.as_str()).unwrap(), once);
    }
}
