//! The canonical request path: the one spelling of a request's path that a gateway's rules match,
//! that the DPoP `htu` is built from, and that the upstream receives.
//!
//! A gateway that matches its rules against the raw `:path` can be walked around:
//! `/healthz/../api/accounts` matches a public `/healthz` rule, and any upstream that resolves dot
//! segments (nginx, Spring, most frameworks) serves `/api/accounts`. [`CanonicalPath::parse`]
//! computes, once per request, the path as every reasonable upstream will understand it, or
//! refuses a path that different upstreams would understand differently.
//!
//! ## Canonical form
//! Applied to the path without its query (RFC 3986 §6.2.2):
//! 1. percent-encodings of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; the others
//!    keep their encoding with upper-case hex; characters outside the path grammar (space,
//!    non-ASCII bytes, `"`, `<`, ...) are percent-encoded;
//! 2. empty segments are merged (`//` becomes `/`), as Envoy's `merge_slashes` does;
//! 3. dot segments are removed (RFC 3986 §5.2.4), after step 1, so `%2e%2e` is `..`.
//!
//! A trailing slash is kept (`/a/` and `/a` are different paths); the query is kept as it was.
//!
//! ## Refused ([`Error::PathNotCanonical`], `400 invalid_request`)
//! A path that cannot be made canonical safely, because upstreams disagree on what it means:
//! - not starting with `/` (`*`, absolute-form), or longer than [`MAX_PATH_LEN`];
//! - a broken percent-encoding (`%zz`, `%4`);
//! - an encoded `/` or `\` (`%2F`, `%5C`): a separator to some upstreams, data to others;
//! - an encoded `?`, `#` or `;` (`%3F`, `%23`, `%3B`): a delimiter to upstreams that decode before
//!   they split the path (`/admin%3F` is `/admin` to them), data to others;
//! - a raw `\` (a separator on Windows servers and to some frameworks);
//! - a NUL or any other control character, raw or encoded;
//! - a `#` (a fragment is never sent to a server);
//! - `..` above the root (`/../x`), or right after an empty segment (`/a//../b` is `/a/b` to
//!   RFC 3986 and `/b` to servers that merge slashes first), or after a segment of `;`
//!   parameters only (`/a/;x/..`: empty to servers that drop parameters);
//! - a dot segment with parameters (`/..;x/`, `/.;/`): Tomcat and Spring drop `;` parameters
//!   and then resolve the dot segment.
//!
//! Other `;` parameters are kept in the canonical path (the upstream gets them), but rules match
//! the [`CanonicalPath::rule_view`]: each segment without its parameters, as Tomcat and Spring
//! see it, so `/admin;x` is under a rule for `/admin` (and not under a public catch-all rule
//! after it).
//!
//! ## What this module does not do
//! Host and scheme: see [`crate::htu`], whose path is this canonical path. Double encoding
//! (`%252e`) is kept as data: an upstream that decodes twice is outside what a gateway
//! can make safe.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::error::{Error, Result};

/// The longest path accepted, without its query (bytes, before and after normalisation).
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// A request path in canonical form (see the module docs), without query.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CanonicalPath(String);

impl CanonicalPath {
    /// Canonicalises a request's `:path` (origin-form, the query is allowed and ignored).
    ///
    /// # Errors
    /// [`Error::PathNotCanonical`] naming why, for the paths listed in the module docs.
    pub fn parse(raw: &str) -> Result<CanonicalPath> {
        let path = match raw.find('?') {
            Some(i) => raw.get(..i).unwrap_or(""),
            None => raw,
        };
        canonical(path).map(CanonicalPath)
    }

    /// The canonical path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `prefix` (itself canonical) matches this path by whole segments: `/api` matches
    /// `/api` and `/api/x`, never `/apix`; a prefix ending in `/` (`/api/`) matches the paths
    /// under it (`/api/`, `/api/x`), and `/` matches every path.
    pub fn starts_with_segments(&self, prefix: &str) -> bool {
        starts_with_segments(&self.0, prefix)
    }

    /// The path that rules match: each segment without its `;` parameters (`/admin;jsessionid=1/x`
    /// is `/admin/x`, as Tomcat and Spring serve it), in ASCII lower case if `ignore_case` (for
    /// upstreams that match paths without regard to case). Borrowed when there is nothing to
    /// change.
    pub fn rule_view(&self, ignore_case: bool) -> Cow<'_, str> {
        let path = self.0.as_str();
        let fold = ignore_case && path.bytes().any(|b| b.is_ascii_uppercase());
        if !fold && !path.contains(';') {
            return Cow::Borrowed(path);
        }
        let mut out = String::with_capacity(path.len());
        let mut segments = path.split('/').skip(1).peekable();
        while let Some(seg) = segments.next() {
            let name = seg.split(';').next().unwrap_or(seg);
            // A segment that was only parameters is empty now: merged, as every other `//`.
            if !name.is_empty() || segments.peek().is_none() {
                out.push('/');
                out.push_str(name);
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        if ignore_case {
            out.make_ascii_lowercase();
        }
        Cow::Owned(out)
    }

    /// The request target to forward: this path, then the query of `raw` (the `:path` it was
    /// parsed from) unchanged, if it had one. `None` when that is `raw` itself.
    pub fn rewritten(&self, raw: &str) -> Option<String> {
        let (path, query) = match raw.find('?') {
            Some(i) => (raw.get(..i).unwrap_or(""), raw.get(i..).unwrap_or("")),
            None => (raw, ""),
        };
        if path == self.0 {
            return None;
        }
        let mut out = String::with_capacity(self.0.len() + query.len());
        out.push_str(&self.0);
        out.push_str(query);
        Some(out)
    }
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanonicalPath({})", self.0)
    }
}

/// Whether `prefix` matches `path` by whole segments (see
/// [`CanonicalPath::starts_with_segments`]). Both are taken as they are.
pub fn starts_with_segments(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

fn refuse(what: &'static str) -> Error {
    Error::PathNotCanonical { what }
}

/// Characters of `pchar` (RFC 3986 §3.3) besides unreserved ones and percent-encodings, plus `/`.
fn is_path_char(b: u8) -> bool {
    matches!(
        b,
        b'/' | b':' | b'@' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_pct(out: &mut String, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX.get(usize::from(v >> 4)).copied().unwrap_or(b'0')));
    out.push(char::from(HEX.get(usize::from(v & 15)).copied().unwrap_or(b'0')));
}

/// Percent-encoding normalisation, shared by paths and `htu` hosts: encodings of unreserved
/// characters decoded, the others kept with upper-case hex, any byte that is neither unreserved
/// nor `allowed` encoded. Refused (the reason is returned): a broken encoding, a control
/// character raw or encoded, an encoded `/`, `\`, `?`, `#` or `;`, a raw `\` or `#`.
pub(crate) fn normalise_percent(s: &str, allowed: fn(u8) -> bool) -> core::result::Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex_val),
                    bytes.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err("broken percent-encoding");
                };
                let v = (h << 4) | l;
                if v < 0x20 || v == 0x7f {
                    return Err("encoded control character");
                }
                if v == b'/' || v == b'\\' {
                    return Err("encoded slash or backslash");
                }
                if matches!(v, b'?' | b'#' | b';') {
                    return Err("encoded '?', '#' or ';'");
                }
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    push_pct(&mut out, v);
                }
                i += 3;
                continue;
            }
            b'\\' => return Err("backslash"),
            b'#' => return Err("fragment"),
            _ if b < 0x20 || b == 0x7f => return Err("control character"),
            _ if is_unreserved(b) || allowed(b) => out.push(char::from(b)),
            _ => push_pct(&mut out, b),
        }
        i += 1;
    }
    Ok(out)
}

/// The canonical form of a path without query (see the module docs).
pub(crate) fn canonical(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(refuse("does not start with '/'"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(refuse("too long"));
    }
    // Step 1: one pass over the bytes, percent-encodings normalised.
    let norm = normalise_percent(path, is_path_char).map_err(refuse)?;
    if norm.len() > MAX_PATH_LEN {
        return Err(refuse("too long"));
    }
    // Steps 2 and 3: segments, empty ones merged, dot segments resolved. Each kept segment
    // remembers whether an empty one came right before it (merged away here).
    let mut segments: Vec<(&str, bool)> = Vec::new();
    let mut trailing_slash = false;
    // Whether a `..` now would be ambiguous: the last thing before it (`.` segments aside) is an
    // empty segment, or a kept segment of parameters only (`;x`, empty to servers that drop
    // parameters). `/a//../b` is `/a/b` to RFC 3986 (the `..` removes the empty segment) and
    // `/b` to servers that merge slashes first (nginx): refused rather than guessed.
    let mut after_empty = false;
    let mut parts = norm.split('/').skip(1).peekable();
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        let name = seg.split(';').next().unwrap_or(seg);
        match seg {
            "" => {
                trailing_slash |= last;
                after_empty = true;
            }
            "." => trailing_slash = last,
            ".." if after_empty => return Err(refuse("'..' after an empty segment")),
            ".." => {
                let Some((_, empty_before)) = segments.pop() else {
                    return Err(refuse("'..' above the root"));
                };
                after_empty = empty_before || segments.last().is_some_and(|(s, _)| s.starts_with(';'));
                trailing_slash = last;
            }
            _ if name == "." || name == ".." => return Err(refuse("dot segment with parameters")),
            s => {
                segments.push((s, after_empty));
                trailing_slash = false;
                after_empty = name.is_empty();
            }
        }
    }
    let mut out = String::with_capacity(norm.len());
    for (s, _) in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        CanonicalPath::parse(s).unwrap().0
    }

    fn refused(s: &str) -> &'static str {
        match CanonicalPath::parse(s) {
            Err(Error::PathNotCanonical { what }) => what,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn dot_segments_in_any_spelling_are_resolved() {
        assert_eq!(c("/healthz/../api/accounts"), "/api/accounts");
        assert_eq!(c("/healthz/%2e%2e/api/accounts"), "/api/accounts");
        assert_eq!(c("/healthz/%2E./api/accounts"), "/api/accounts");
        assert_eq!(c("/healthz/.%2e/api"), "/api");
        assert_eq!(c("/a/./b/."), "/a/b/");
        assert_eq!(c("/a/b/.."), "/a/");
        assert_eq!(c("/a/.."), "/");
        assert_eq!(c("/."), "/");
        assert_eq!(c("/a/%2e"), "/a/");
    }

    #[test]
    fn slashes_are_merged_and_a_trailing_slash_kept() {
        assert_eq!(c("//api//accounts"), "/api/accounts");
        assert_eq!(c("/api/accounts/"), "/api/accounts/");
        assert_eq!(c("/api/accounts//"), "/api/accounts/");
        assert_eq!(c("/"), "/");
        assert_eq!(c("//"), "/");
        assert_eq!(c("/a/.//b"), "/a/b");
    }

    #[test]
    fn percent_encoding_is_normalised_and_the_query_ignored() {
        assert_eq!(c("/%41%62c/%7euser"), "/Abc/~user");
        assert_eq!(c("/a%3ab"), "/a%3Ab");
        assert_eq!(c("/a b/é"), "/a%20b/%C3%A9");
        assert_eq!(c("/api/x?y=/../admin"), "/api/x");
        assert_eq!(c("/a:b@c;d=e"), "/a:b@c;d=e");
        assert_eq!(c("/%252e%252e/x"), "/%252e%252e/x");
        assert_eq!(c("/api;jsessionid=1/x"), "/api;jsessionid=1/x");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (path, why) in [
            ("/api%2faccounts", "encoded slash or backslash"),
            ("/api%2Faccounts", "encoded slash or backslash"),
            ("/healthz/..%2fapi", "encoded slash or backslash"),
            ("/api%5caccounts", "encoded slash or backslash"),
            ("/healthz\\..\\api", "backslash"),
            ("/api%zz", "broken percent-encoding"),
            ("/api%4", "broken percent-encoding"),
            ("/api%", "broken percent-encoding"),
            ("/api%00", "encoded control character"),
            ("/admin%3F/x", "encoded '?', '#' or ';'"),
            ("/admin%3f", "encoded '?', '#' or ';'"),
            ("/admin%23", "encoded '?', '#' or ';'"),
            ("/admin%3Bx", "encoded '?', '#' or ';'"),
            ("/api%0a", "encoded control character"),
            ("/api\0", "control character"),
            ("/api\u{7f}", "control character"),
            ("/api#x", "fragment"),
            ("/../api", "'..' above the root"),
            ("/a/../../api", "'..' above the root"),
            ("/%2e%2e/api", "'..' above the root"),
            ("/a//../b", "'..' after an empty segment"),
            ("/a/b//..", "'..' after an empty segment"),
            ("/a/b/;x/..", "'..' after an empty segment"),
            ("/a//./../b", "'..' after an empty segment"),
            ("/;/%2e/%2e%2e", "'..' after an empty segment"),
            ("/a//b/../..", "'..' after an empty segment"),
            ("/a/;x/b/../..", "'..' after an empty segment"),
            ("/healthz/..;/api", "dot segment with parameters"),
            ("/healthz/.;x/api", "dot segment with parameters"),
            ("/healthz/%2e%2e;/api", "dot segment with parameters"),
            ("api", "does not start with '/'"),
            ("*", "does not start with '/'"),
            ("https://a.example/api", "does not start with '/'"),
            ("", "does not start with '/'"),
        ] {
            assert_eq!(refused(path), why, "{path}");
        }
        let long = alloc::format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(refused(&long), "too long");
        let grows = alloc::format!("/{}", " ".repeat(MAX_PATH_LEN / 2));
        assert_eq!(refused(&grows), "too long");
        // A long query is not the path's business.
        let long_query = alloc::format!("/a?{}", "q".repeat(MAX_PATH_LEN * 2));
        assert_eq!(c(&long_query), "/a");
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let p = |s: &str| CanonicalPath::parse(s).unwrap();
        assert!(p("/healthz").starts_with_segments("/healthz"));
        assert!(p("/healthz/x").starts_with_segments("/healthz"));
        assert!(p("/healthz/").starts_with_segments("/healthz"));
        assert!(!p("/healthzX").starts_with_segments("/healthz"));
        assert!(!p("/healthz;x").starts_with_segments("/healthz"));
        assert!(p("/api/").starts_with_segments("/api/"));
        assert!(p("/api/x").starts_with_segments("/api/"));
        assert!(!p("/api").starts_with_segments("/api/"));
        assert!(p("/anything").starts_with_segments("/"));
        assert!(p("/").starts_with_segments("/"));
    }

    #[test]
    fn rules_see_segments_without_parameters_and_optionally_without_case() {
        let p = |s: &str| CanonicalPath::parse(s).unwrap();
        assert_eq!(p("/admin;x=1/users;jsessionid=2").rule_view(false), "/admin/users");
        assert_eq!(p("/admin;").rule_view(false), "/admin");
        assert_eq!(p("/a;b/").rule_view(false), "/a/");
        assert_eq!(p("/a/;x/b").rule_view(false), "/a/b");
        assert_eq!(p("/a/;x").rule_view(false), "/a/");
        assert_eq!(p("/;x").rule_view(false), "/");
        assert!(matches!(p("/admin/users").rule_view(false), Cow::Borrowed(_)));
        assert_eq!(p("/Admin;X/Users").rule_view(true), "/admin/users");
        assert_eq!(p("/Admin").rule_view(false), "/Admin");
        assert!(matches!(p("/admin").rule_view(true), Cow::Borrowed(_)));
        // The canonical path itself keeps the parameters: the upstream gets them.
        assert_eq!(p("/admin;x=1").as_str(), "/admin;x=1");
    }

    #[test]
    fn the_rewritten_target_keeps_the_query() {
        let p = CanonicalPath::parse("/a/../b?x=/../y").unwrap();
        assert_eq!(p.rewritten("/a/../b?x=/../y").as_deref(), Some("/b?x=/../y"));
        let same = CanonicalPath::parse("/b?x").unwrap();
        assert_eq!(same.rewritten("/b?x"), None);
        let empty_query = CanonicalPath::parse("//b?").unwrap();
        assert_eq!(empty_query.rewritten("//b?").as_deref(), Some("/b?"));
    }

    #[test]
    fn canonical_paths_are_fixed_points() {
        for s in ["/a/./b/../c//d/", "/%7e%41/x%3a", "/a b/é/%252e", "/x;y=z/."] {
            let once = c(s);
            assert_eq!(c(&once), once, "{s}");
        }
    }
}
