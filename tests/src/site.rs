//! A static web site on a free port of 127.0.0.1, for pages driven in headless Chromium: the
//! files of a directory (a built app, an npm package), and optionally one page given as a string.
//! Used by `tests/tests/browser_cors.rs` and `tests/tests/bundlers.rs`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// A static site; stopped on drop.
///
/// It answers every request with the file its path names under the site's directory (a path
/// ending in `/` names that folder's `index.html`), `404` when there is none or the path has `..`
/// or other non-plain parts; query and fragment are ignored. Every answer is
/// `Cache-Control: no-store` and closes the connection; `Content-Type` follows the file's
/// extension ([`content_type`]).
pub struct StaticSite {
    /// Its port.
    pub port: u16,
    stop: Arc<AtomicBool>,
    index: Arc<RwLock<Option<String>>>,
}

/// What a [`StaticSite`] serves.
#[derive(Clone, Debug, Default)]
pub struct SiteContent {
    /// Served at `/` (and at `index_paths`) instead of the directory's `index.html` (as
    /// `text/html`); [`StaticSite::set_index`] replaces it.
    pub index: Option<String>,
    /// More paths that serve `index` (e.g. an OAuth redirect URI's path).
    pub index_paths: Vec<String>,
    /// The URL path prefix the directory is served under, e.g. `/` or `/pkg/` (starts and ends
    /// with `/`).
    pub mount: String,
    /// The directory.
    pub dir: PathBuf,
}

impl StaticSite {
    /// Serves the files of `dir` under `/`.
    ///
    /// # Errors
    /// If it cannot bind.
    pub fn dir(dir: &Path) -> Result<StaticSite, String> {
        StaticSite::start(SiteContent {
            mount: "/".into(),
            dir: dir.to_path_buf(),
            ..SiteContent::default()
        })
    }

    /// Starts serving `content` on a free port.
    ///
    /// # Errors
    /// If it cannot bind, or the mount point does not start and end with `/`.
    pub fn start(content: SiteContent) -> Result<StaticSite, String> {
        if !(content.mount.starts_with('/') && content.mount.ends_with('/')) {
            return Err(format!("a mount point starts and ends with /: {:?}", content.mount));
        }
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let index = Arc::new(RwLock::new(content.index.clone()));
        let shared = index.clone();
        let content = Arc::new(content);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(c) = conn {
                    let (content, index) = (content.clone(), shared.clone());
                    std::thread::spawn(move || {
                        let _ = serve(c, &content, &index);
                    });
                }
            }
        });
        Ok(StaticSite { port, stop, index })
    }

    /// Replaces the page served at `/` and the `index_paths` (for a page that needs to know
    /// something only known after the site runs, e.g. an issuer registered with its origin).
    pub fn set_index(&self, html: String) {
        if let Ok(mut index) = self.index.write() {
            *index = Some(html);
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The `Content-Type` of a file by its extension (`application/octet-stream` when unknown).
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript",
        Some("css") => "text/css",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The file a request path names in `content`, if it may be served.
fn file_for(content: &SiteContent, path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix(content.mount.as_str())?;
    let mut file = content.dir.clone();
    let relative = Path::new(rest);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    file.push(relative);
    if rest.is_empty() || rest.ends_with('/') {
        file.push("index.html");
    }
    file.is_file().then_some(file)
}

/// Answers one GET (then closes the connection).
fn serve(stream: TcpStream, content: &SiteContent, index: &RwLock<Option<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim_end().is_empty() {
            break;
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let page = (path == "/" || content.index_paths.iter().any(|p| p == path))
        .then(|| index.read().ok().and_then(|i| i.clone()))
        .flatten();
    let found = if let Some(page) = page {
        Some(("text/html; charset=utf-8", page.into_bytes()))
    } else {
        file_for(content, path).and_then(|file| std::fs::read(&file).ok().map(|bytes| (content_type(&file), bytes)))
    };
    let (status, content_type, body) = match found {
        Some((content_type, body)) => ("200 OK", content_type, body),
        None => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let mut out = stream;
    out.write_all(&response)?;
    out.flush()
}
