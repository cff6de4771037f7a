//! The two in-process servers of the demo: the upstream echo API (behind Envoy) and the demo page
//! (static files, the browser package, and `config.json` for the page).

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The demo page's HTML.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The demo page's script.
pub const APP_JS: &str = include_str!("../assets/app.js");

/// Serves `router` on `listener` (axum on a one-thread tokio runtime) in a background thread
/// until the process ends.
///
/// # Errors
/// A message if the runtime cannot be made or the listener not handed to it.
fn serve(listener: TcpListener, router: Router) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?
    };
    std::thread::spawn(move || {
        if let Err(e) = runtime.block_on(async move { axum::serve(listener, router).await }) {
            eprintln!("demo: a server stopped: {e}");
        }
    });
    Ok(())
}

/// Starts the echo API on `listener`: every request is answered `200` with a JSON object of its
/// method, path and headers (so the story and the page can show what Envoy forwarded).
///
/// # Errors
/// As `serve` (the server loop both run).
pub fn start_echo(listener: TcpListener) -> Result<(), String> {
    serve(listener, Router::new().fallback(echo))
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_owned(), serde_json::Value::String(v))
        })
        .collect();
    let body = serde_json::json!({
        "message": "hello from the echo API behind the keybound gateway",
        "method": method.as_str(),
        "path": uri.path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
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
/// the browser package under `/pkg/` (from `pkg_dir`); other methods than GET and HEAD get 405.
///
/// # Errors
/// As `serve` (the server loop both run).
pub fn start_page(listener: TcpListener, config: PageConfig, pkg_dir: PathBuf) -> Result<(), String> {
    let config_json = serde_json::json!({
        "issuer": config.issuer,
        "par_endpoint": format!("{}/par", config.issuer),
        "authorization_endpoint": format!("{}/authorize", config.issuer),
        "token_endpoint": format!("{}/token", config.issuer),
        "client_id": config.client_id,
        "redirect_uri": config.redirect_uri,
        "api": config.api,
        "scope": config.scope,
    })
    .to_string();
    // The page talks to the issuer and the API only; wasm needs 'wasm-unsafe-eval'.
    let csp = format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'unsafe-inline'; \
         connect-src 'self' {} {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        config.issuer,
        origin_of(&config.api)
    );
    let csp = HeaderValue::from_str(&csp).map_err(|e| format!("the page's Content-Security-Policy: {e}"))?;
    let html = || async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML) };
    let router = Router::new()
        .route("/", get(html))
        .route("/cb", get(html))
        .route("/index.html", get(html))
        .route(
            "/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }),
        )
        .route(
            "/config.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], config_json) }),
        )
        .route("/pkg/{*rel}", get(package).with_state(pkg_dir))
        .fallback(|method: Method| async move {
            if method == Method::GET || method == Method::HEAD {
                text(StatusCode::NOT_FOUND, "not found")
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
        })
        .method_not_allowed_fallback(|| async { text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .layer(axum::middleware::map_response_with_state(csp, page_headers));
    serve(listener, router)
}

/// A plain-text answer.
fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// A file of the browser package (`rel` below `/pkg/`), or 404.
async fn package(State(dir): State<PathBuf>, axum::extract::Path(rel): axum::extract::Path<String>) -> Response {
    match pkg_file(&dir, &rel).and_then(|file| Some((content_type(&file), std::fs::read(&file).ok()?))) {
        Some((content_type, bytes)) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        None => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The headers of every answer of the page server.
async fn page_headers(State(csp): State<HeaderValue>, mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
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
        )
        .unwrap();
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
        let nothing = get("/nothing");
        assert_eq!(
            (
                nothing.header("x-content-type-options"),
                nothing.header("cache-control")
            ),
            (Some("nosniff"), Some("no-store"))
        );
        for path in ["/", "/nothing", "/pkg/keybound_browser_bg.wasm"] {
            let post = crate::http::request(&format!("{base}{path}"), None, "POST", &[], Some(b"x")).unwrap();
            assert_eq!(post.status, 405, "{path}");
        }
        let head = crate::http::request(&format!("{base}/app.js"), None, "HEAD", &[], None).unwrap();
        assert_eq!((head.status, head.body.len()), (200, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_echo_api_answers_every_request_with_what_it_saw() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        start_echo(l).unwrap();
        let r = crate::http::request(
            &format!("{base}/api/accounts?x=1"),
            None,
            "POST",
            &[("x-keybound-sub", "alice"), ("DPoP", "proof")],
            Some(b"body"),
        )
        .unwrap();
        assert_eq!((r.status, r.header("cache-control")), (200, Some("no-store")));
        let j = r.json().unwrap();
        assert_eq!(
            (
                &j["method"],
                &j["path"],
                &j["headers"]["x-keybound-sub"],
                &j["headers"]["dpop"]
            ),
            (
                &serde_json::json!("POST"),
                &serde_json::json!("/api/accounts?x=1"),
                &serde_json::json!("alice"),
                &serde_json::json!("proof")
            )
        );
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
