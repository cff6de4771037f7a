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
use crate::path::CanonicalPath;

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
        let (authority, rest) = rest.split_at_checked(end).ok_or(Error::InvalidHtu)?;
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
        let default_port = default_port(&scheme)?;
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
            crate::json::push_u64(&mut out, u64::from(port));
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

/// An origin a gateway serves (`scheme://host[:port]`, nothing else), normalised as in an
/// `htu`. A gateway checks a proof against the origin a request is for ([`Origin::for_request`])
/// and builds the request's `htu` from it ([`Origin::htu`]), never only from the `Host` the
/// client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `scheme://host[:port]/`.
    root: Htu,
    /// The normalised host.
    host: String,
    /// The port, the scheme's default one if none is written.
    port: u16,
}

impl Origin {
    /// Parses an origin: an absolute http(s) URI with no path (but `/`), query or fragment.
    ///
    /// # Errors
    /// [`Error::InvalidHtu`] otherwise.
    pub fn parse(s: &str) -> Result<Origin> {
        let root = Htu::parse(s)?;
        let (scheme, rest) = root.0.split_once("://").ok_or(Error::InvalidHtu)?;
        let authority = rest.strip_suffix('/').ok_or(Error::InvalidHtu)?;
        if s.contains(['?', '#']) || authority.contains('/') {
            return Err(Error::InvalidHtu);
        }
        let (host, port) = split_host_port(authority)?;
        let port = port.unwrap_or(default_port(scheme)?);
        Ok(Origin {
            host: host.into(),
            port,
            root,
        })
    }

    /// `scheme://host[:port]`.
    pub fn as_str(&self) -> &str {
        self.root.0.strip_suffix('/').unwrap_or(&self.root.0)
    }

    /// Its scheme (`http` or `https`).
    pub fn scheme(&self) -> &str {
        self.root.0.split("://").next().unwrap_or("")
    }

    /// The `htu` of a request for `path` (its canonical path) at this origin, without
    /// normalising anything again.
    ///
    /// # Errors
    /// [`Error::InvalidHtu`] if it would be longer than [`MAX_HTU_LEN`].
    pub fn htu(&self, path: &CanonicalPath) -> Result<Htu> {
        let origin = self.as_str();
        if origin.len() + path.as_str().len() > MAX_HTU_LEN {
            return Err(Error::InvalidHtu);
        }
        let mut out = String::with_capacity(origin.len() + path.as_str().len());
        out.push_str(origin);
        out.push_str(path.as_str());
        Ok(Htu(out))
    }

    /// The origin of `origins` that a request with this `scheme` and `authority` (`:authority`,
    /// normalised once: case, default port) is for: the one with this authority and scheme, else
    /// the first with this authority (behind a TLS-terminating balancer a gateway sees `http`
    /// for an `https` origin).
    ///
    /// # Errors
    /// [`Error::UnknownOrigin`] if the authority is none of theirs (or not an authority).
    pub fn for_request<'o>(origins: &'o [Origin], scheme: &str, authority: &str) -> Result<&'o Origin> {
        let unknown = |_| Error::UnknownOrigin;
        if authority.contains('@') || authority.is_empty() {
            return Err(Error::UnknownOrigin);
        }
        let (host, port) = split_host_port(authority).map_err(unknown)?;
        let host = normalise_host(host).map_err(unknown)?;
        let mut found = None;
        for origin in origins {
            let default = default_port(origin.scheme()).map_err(unknown)?;
            if origin.host == host && port.unwrap_or(default) == origin.port {
                if origin.scheme().eq_ignore_ascii_case(scheme) {
                    return Ok(origin);
                }
                found = found.or(Some(origin));
            }
        }
        found.ok_or(Error::UnknownOrigin)
    }
}

fn default_port(scheme: &str) -> Result<u16> {
    match scheme {
        "http" => Ok(80),
        "https" => Ok(443),
        _ => Err(Error::InvalidHtu),
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or(Error::InvalidHtu)?;
        let (host, rest) = authority.split_at_checked(close + 1).ok_or(Error::InvalidHtu)?;
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
        return Ok(["[", &inner.to_ascii_lowercase(), "]"].concat());
    }
    let host = crate::path::normalise_percent(host, |b| b"!$&'()*+,;=".contains(&b)).map_err(|_| Error::InvalidHtu)?;
    if host
        .bytes()
        .any(|b| matches!(b, b'/' | b'?' | b'#' | b'[' | b']' | b'@' | b':' | b'%'))
    {
        return Err(Error::InvalidHtu);
    }
    Ok(host.to_ascii_lowercase())
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
    fn an_origins_htu_is_from_parts_of_the_canonical_path() {
        let origin = Origin::parse("HTTPS://API.example.com:443").unwrap();
        assert_eq!((origin.as_str(), origin.scheme()), ("https://api.example.com", "https"));
        for raw in ["/a/../b?x", "/", "//x//y/", "/%7e/%3a"] {
            let path = CanonicalPath::parse(raw).unwrap();
            assert_eq!(
                origin.htu(&path).unwrap(),
                Htu::from_parts("https", "api.example.com", raw).unwrap(),
                "{raw}"
            );
        }
        let long = CanonicalPath::parse(&alloc::format!("/{}", "a".repeat(crate::path::MAX_PATH_LEN - 1))).unwrap();
        assert_eq!(origin.htu(&long), Err(Error::InvalidHtu));
        for bad in [
            "api.example.com",
            "https://a.example/v1",
            "https://a.example?x",
            "https://a.example/#f",
            "ftp://a",
        ] {
            assert_eq!(Origin::parse(bad), Err(Error::InvalidHtu), "{bad}");
        }
    }

    #[test]
    fn a_request_is_for_the_origin_with_its_authority_and_preferably_its_scheme() {
        let origins: alloc::vec::Vec<Origin> = [
            "http://rs.example.com",
            "https://rs.example.com",
            "https://api.example.com:8443",
        ]
        .iter()
        .map(|o| Origin::parse(o).unwrap())
        .collect();
        let of = |scheme: &str, authority: &str| Origin::for_request(&origins, scheme, authority).map(Origin::as_str);
        assert_eq!(of("https", "rs.example.com"), Ok("https://rs.example.com"));
        assert_eq!(of("https", "RS.Example.COM:443"), Ok("https://rs.example.com"));
        assert_eq!(of("http", "rs.example.com:80"), Ok("http://rs.example.com"));
        assert_eq!(of("http", "api.example.com:8443"), Ok("https://api.example.com:8443"));
        for authority in [
            "api.example.com",
            "rs.example.com:8443",
            "rs.example.com.",
            "rs.example.com:443:443",
            "",
            "a@rs.example.com",
            "[::1",
        ] {
            assert_eq!(of("https", authority), Err(Error::UnknownOrigin), "{authority:?}");
        }
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
