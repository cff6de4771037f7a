//! The two in-process servers of the demo: the upstream echo API (behind Envoy) and the demo page
//! (static files, the browser package, and `config.json` for the page).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::http::{Request, Response, serve};

/// The demo page's HTML.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The demo page's script.
pub const APP_JS: &str = include_str!("../assets/app.js");

/// Starts the echo API on `listener`: every request is answered `200` with a JSON object of its
/// method, path and headers (so the story and the page can show what Envoy forwarded).
pub fn start_echo(listener: TcpListener) {
    serve(
        listener,
        Arc::new(|r: &Request| {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            Response::json_body(
                200,
                &serde_json::json!({
                    "message": "hello from the echo API behind the keybound gateway",
                    "method": r.method,
                    "path": r.target,
                    "headers": headers,
                }),
            )
            .with_header("cache-control", "no-store")
        }),
    );
}

/// What the page needs to know (served as `/config.json`).
#[derive(Debug, Clone)]
pub struct PageConfig {
    /// The issuer.
    pub issuer: String,
    /// The public client id.
    pub client_id: String,
    /// The redirect URI (this server's `/cb`).
    pub redirect_uri: String,
    /// The DPoP-protected API URL through Envoy.
    pub api: String,
    /// The scope to ask for.
    pub scope: String,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("ts") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// A file under `dir` for a request path below `/pkg/`, refusing anything that leaves `dir`.
fn pkg_file(dir: &Path, rel: &str) -> Option<PathBuf> {
    if rel.is_empty()
        || rel
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('\\'))
    {
        return None;
    }
    let p = dir.join(rel);
    p.is_file().then_some(p)
}

/// The `scheme://host:port` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest)),
        None => url.to_string(),
    }
}

/// Starts the page server on `listener`: `/` and `/cb` the page, `/app.js`, `/config.json`, and
/// the browser package under `/pkg/` (from `pkg_dir`).
pub fn start_page(listener: TcpListener, config: PageConfig, pkg_dir: PathBuf) {
    let config_json = serde_json::json!({
        "issuer": config.issuer,
        "par_endpoint": format!("{}/par", config.issuer),
        "authorization_endpoint": format!("{}/authorize", config.issuer),
        "token_endpoint": format!("{}/token", config.issuer),
        "client_id": config.client_id,
        "redirect_uri": config.redirect_uri,
        "api": config.api,
        "scope": config.scope,
    });
    // The page talks to the issuer and the API only; wasm needs 'wasm-unsafe-eval'.
    let csp = format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'unsafe-inline'; \
         connect-src 'self' {} {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        config.issuer,
        origin_of(&config.api)
    );
    serve(
        listener,
        Arc::new(move |r: &Request| {
            if r.method != "GET" && r.method != "HEAD" {
                return Response::new(405, "text/plain", "method not allowed");
            }
            let res = match r.path() {
                "/" | "/cb" | "/index.html" => Response::new(200, "text/html; charset=utf-8", INDEX_HTML),
                "/app.js" => Response::new(200, "text/javascript", APP_JS),
                "/config.json" => Response::json_body(200, &config_json),
                p => match p.strip_prefix("/pkg/").and_then(|rel| pkg_file(&pkg_dir, rel)) {
                    Some(file) => match std::fs::read(&file) {
                        Ok(bytes) => Response::new(200, content_type(&file), bytes),
                        Err(_) => Response::new(404, "text/plain", "not found"),
                    },
                    None => Response::new(404, "text/plain", "not found"),
                },
            };
            res.with_header("cache-control", "no-store")
                .with_header("content-security-policy", &csp)
                .with_header("x-content-type-options", "nosniff")
                .with_header("referrer-policy", "no-referrer")
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_server_serves_the_page_config_and_package_and_refuses_the_rest() {
        let dir = std::env::temp_dir().join(format!("kb-demo-page-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keybound_browser_bg.wasm"), b"\0asm").unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        start_page(
            l,
            PageConfig {
                issuer: "https://127.0.0.1:1".into(),
                client_id: "public-spa".into(),
                redirect_uri: "http://127.0.0.1:2/cb".into(),
                api: "https://127.0.0.1:3/api/accounts".into(),
                scope: "openid accounts".into(),
            },
            dir.clone(),
        );
        let get = |path: &str| crate::http::request(&format!("{base}{path}"), None, "GET", &[], None).unwrap();
        for page in ["/", "/cb?code=x&state=y"] {
            let r = get(page);
            assert_eq!(r.status, 200);
            assert!(r.text().contains("keybound demo"));
            let csp = r.header("content-security-policy").unwrap();
            assert!(
                csp.contains("connect-src 'self' https://127.0.0.1:1 https://127.0.0.1:3;"),
                "{csp}"
            );
        }
        let c = get("/config.json").json().unwrap();
        assert_eq!(c["token_endpoint"], "https://127.0.0.1:1/token");
        assert_eq!(c["client_id"], "public-spa");
        let w = get("/pkg/keybound_browser_bg.wasm");
        assert_eq!((w.status, w.header("content-type")), (200, Some("application/wasm")));
        assert_eq!(get("/pkg/../Cargo.toml").status, 404);
        assert_eq!(get("/nothing").status, 404);
        let post = crate::http::request(&format!("{base}/"), None, "POST", &[], Some(b"x")).unwrap();
        assert_eq!(post.status, 405);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://127.0.0.1:9443/api/accounts"),
            "https://127.0.0.1:9443"
        );
        assert_eq!(origin_of("https://h"), "https://h");
    }

    #[test]
    fn package_paths_cannot_leave_the_package() {
        let dir = std::env::temp_dir().join(format!("kb-demo-pkg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("snippets")).unwrap();
        std::fs::write(dir.join("a.js"), "x").unwrap();
        std::fs::write(dir.join("snippets/b.js"), "y").unwrap();
        assert!(pkg_file(&dir, "a.js").is_some());
        assert!(pkg_file(&dir, "snippets/b.js").is_some());
        for bad in [
            "",
            "../a.js",
            "snippets/../a.js",
            "/etc/passwd",
            "snippets//b.js",
            "snippets",
            "x.js",
        ] {
            assert!(pkg_file(&dir, bad).is_none(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
