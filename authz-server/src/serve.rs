//! Serving: the listeners (HTTPS with optional client certificates, the admin listener, the
//! trusted-proxy listener), background work, and the graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Extension;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::http::ClientAddr;
use crate::log::{log_event, log_line};
use crate::routes::router;
use crate::state::{App, AppState};
use crate::tls::PeerCerts;

/// How often a running server deletes expired records from storage (seconds).
pub const PURGE_SECONDS: u64 = 60;

/// How long a shutdown waits for requests in flight before it exits anyway (seconds).
pub const SHUTDOWN_GRACE_SECONDS: u64 = 30;

/// Binds every configured listener and serves until SIGTERM or SIGINT; then stops accepting,
/// lets requests in flight finish (at most [`SHUTDOWN_GRACE_SECONDS`]) and returns. Prints one
/// line, `listening on <addr>` (with ` (admin on <addr>)` and ` (trusted proxy on <addr>)` when
/// configured), to stdout once the sockets are bound.
///
/// # Errors
/// A message if an address cannot be bound or the TLS files are unusable.
pub async fn run(config: Config) -> Result<(), String> {
    let tls = crate::tls::server_config(&config.tls.cert, &config.tls.key)?;
    let (listen, admin, proxy) = (config.listen, config.admin, config.trusted_proxy.clone());
    let app = Arc::new(App::new(config).await?);
    let bind = |addr: SocketAddr| async move {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("listen {addr}: {e}"))?;
        let local = l.local_addr().map_err(|e| e.to_string())?;
        Ok::<_, String>((l, local))
    };
    let (main, addr) = bind(listen).await?;
    let admin = match admin {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let proxied = match &proxy {
        Some(p) => Some(bind(p.listen).await?),
        None => None,
    };
    // One line only: whoever waits for it may close the pipe after reading it.
    let mut line = format!("listening on {addr}");
    if let Some((_, a)) = &admin {
        line.push_str(&format!(" (admin on {a})"));
    }
    if let Some((_, a)) = &proxied {
        line.push_str(&format!(" (trusted proxy on {a})"));
    }
    println!("{line}");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    background(app.clone(), stop.clone());
    let routes = router(app.clone());
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(accept_loop(
        main,
        Listener::Tls(acceptor),
        routes.clone(),
        stop.clone(),
        done_tx.clone(),
    ));
    if let Some((l, _)) = admin {
        let admin_routes = crate::ops::admin_router(app.clone())
            .layer(axum::middleware::from_fn_with_state(app.clone(), crate::ops::observe));
        tokio::spawn(accept_loop(
            l,
            Listener::Plain(None),
            admin_routes,
            stop.clone(),
            done_tx.clone(),
        ));
    }
    if let (Some((l, _)), Some(p)) = (proxied, proxy) {
        tokio::spawn(accept_loop(
            l,
            Listener::Plain(Some(p)),
            routes,
            stop.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    shutdown_signal().await;
    app.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    log_line("info", "shutdown", "stopped accepting; waiting for requests in flight");
    let _ = stop_tx.send(true);
    // Every accept loop and connection holds a sender: `recv` returns when the last one ends.
    let drained = tokio::time::timeout(std::time::Duration::from_secs(SHUTDOWN_GRACE_SECONDS), done.recv()).await;
    if drained.is_err() {
        log_line("warn", "shutdown", "requests still in flight after the grace period");
    }
    log_line("info", "shutdown", "done");
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                log_line("error", "signal", &e.to_string());
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Reloads keys every `storage.key_reload_seconds` and purges expired records every
/// [`PURGE_SECONDS`], until `stop`.
fn background(app: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let reload = std::time::Duration::from_secs(app.config.storage.key_reload_seconds);
        let mut last_purge = std::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(reload) => {}
                _ = stop.changed() => return,
            }
            app.reload_keys().await;
            if last_purge.elapsed().as_secs() >= PURGE_SECONDS {
                last_purge = std::time::Instant::now();
                if let Err(e) = app.store.purge_expired(app.now()).await {
                    log_line("error", "purge_failed", &e.to_string());
                }
            }
        }
    });
}

/// What a listener speaks.
#[derive(Clone)]
enum Listener {
    /// TLS with an optional client certificate.
    Tls(TlsAcceptor),
    /// Plain HTTP: the admin listener (`None`) or the trusted-proxy listener.
    Plain(Option<crate::config::TrustedProxy>),
}

/// Accepts connections until `stop`, serving each on its own task; `done` is held by the loop and
/// by every connection so the caller can wait for all of them.
async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    routes: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::mpsc::Sender<()>,
) {
    loop {
        let (tcp, peer_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    log_line("error", "accept_failed", &e.to_string());
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let (kind, routes, stop, done) = (kind.clone(), routes.clone(), stop.clone(), done.clone());
        tokio::spawn(async move {
            handle_connection(tcp, peer_addr, kind, routes, stop).await;
            drop(done);
        });
    }
}

async fn handle_connection(
    tcp: tokio::net::TcpStream,
    peer_addr: SocketAddr,
    kind: Listener,
    routes: Router,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    match kind {
        Listener::Tls(acceptor) => {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    log_line("info", "tls_handshake_failed", &format!("{peer_addr}: {e}"));
                    return;
                }
                Err(_) => return,
            };
            let certs = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>()));
            let routes = routes
                .layer(Extension(PeerCerts(certs)))
                .layer(Extension(ClientAddr(peer_addr.ip())));
            serve_http(TokioIo::new(tls), routes, stop).await;
        }
        Listener::Plain(None) => {
            let routes = routes.layer(Extension(ClientAddr(peer_addr.ip())));
            serve_http(TokioIo::new(tcp), routes, stop).await;
        }
        Listener::Plain(Some(proxy)) => {
            if !crate::proxy::trusted(&proxy.addresses, peer_addr.ip()) {
                log_event(
                    "warn",
                    "untrusted_proxy_connection",
                    serde_json::json!({ "client": peer_addr.ip().to_string() }),
                );
                return;
            }
            let (header, ip) = (proxy.client_cert_header, peer_addr.ip());
            let routes = routes.layer(axum::middleware::from_fn(move |req, next| {
                crate::proxy::from_proxy(header, ip, req, next)
            }));
            serve_http(TokioIo::new(tcp), routes, stop).await;
        }
    }
}

/// Serves HTTP/1.1 on one connection until it closes; on `stop`, finishes the request in flight
/// and closes.
async fn serve_http<I>(io: I, routes: Router, mut stop: tokio::sync::watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(routes);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        log_line("info", "connection_error", &e.to_string());
    }
}
