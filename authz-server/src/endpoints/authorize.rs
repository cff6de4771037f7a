//! The authorization endpoint, the login page and the consent page (plain HTML forms).
//!
//! `GET /authorize?client_id=..&request_uri=..` accepts only pushed requests (PAR is required for
//! every client, RFC 9126 §5 `require_pushed_authorization_requests`): it checks that the
//! `request_uri` exists, has not expired or been used, and belongs to `client_id`, then starts a
//! browser transaction (a random id in an `HttpOnly`, `Secure`, `SameSite=Lax` cookie, echoed in
//! a hidden form field so a cross-site form post cannot drive it) and shows the login form.
//! A `request_uri` may be opened several times until authorization completes; the transactions
//! are bounded ([`crate::state::Transactions`], [`crate::state::MAX_TRANSACTIONS`]). After login
//! (argon2 password check) the consent page lists the client and scopes; approving consumes the
//! `request_uri` (one use), records the consent as a JWT signed by the server, and redirects
//! (303) with `code`, `state` and `iss` (RFC 9207). Denying redirects with `access_denied`.
//!
//! Errors before the redirect URI is known to belong to the client are shown as a page with the
//! RFC error code, never redirected. No CORS headers are sent by these endpoints.

use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keybound_core::jws::sign_json;

use crate::authz_request::{AuthzRequest, CodeData, REQUEST_URI_PREFIX, code_hash};
use crate::error::Code;
use crate::http::{ClientAddr, Params};
use crate::log::{log_event, log_line};
use crate::paths;
use crate::state::{App, AppState, Transaction};
use crate::storage::{CodeRecord, ConsentRecord};

/// How long a browser transaction lives (seconds).
pub const TRANSACTION_LIFETIME: u64 = 600;
/// The name of the transaction cookie.
pub const COOKIE: &str = "kb_txn";

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1>{body}</body></html>",
        t = html_escape(title)
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    res
}

/// An error page carrying the RFC error code (`<p id="error">code</p>`).
fn error_page(status: StatusCode, code: Code, reason: &str) -> Response {
    let level = if status.is_server_error() { "error" } else { "info" };
    log_line(level, code.as_str(), reason);
    page(
        status,
        "Authorization failed",
        &format!("<p id=\"error\">{}</p>", html_escape(code.as_str())),
    )
}

fn login_form(txn: &str, message: Option<&str>) -> String {
    let msg = message.map_or_else(String::new, |m| format!("<p id=\"message\">{}</p>", html_escape(m)));
    format!(
        "{msg}<form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"txn\" value=\"{txn}\">\
         <label>Username <input name=\"username\" autocomplete=\"username\"></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\
         <button type=\"submit\">Log in</button></form>",
        action = paths::LOGIN,
        txn = html_escape(txn),
    )
}

fn cookie_txn(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Builds the redirect to the client with `params` appended to its query.
pub fn redirect(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{sep}{}", ser.finish());
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let clear = format!(
        "{COOKIE}=; Path={}; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
        paths::AUTHORIZE
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `GET /authorize`.
pub async fn start(State(app): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let now = app.now();
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, e.code, &e.reason),
    };
    let Some(request_uri) = params.get("request_uri") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            Code::InvalidRequest,
            "no request_uri: PAR is required",
        );
    };
    let Some(client_id) = params.get("client_id") else {
        return error_page(StatusCode::BAD_REQUEST, Code::InvalidRequest, "no client_id");
    };
    if !request_uri.starts_with(REQUEST_URI_PREFIX) {
        return error_page(
            StatusCode::BAD_REQUEST,
            Code::InvalidRequestUri,
            "not a PAR request_uri",
        );
    }
    let par = match app.store.par(request_uri).await {
        Ok(Some(p)) => p,
        Ok(None) => return error_page(StatusCode::BAD_REQUEST, Code::InvalidRequestUri, "unknown request_uri"),
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, &e.to_string()),
    };
    if par.consumed || par.expires_at <= now {
        return error_page(
            StatusCode::BAD_REQUEST,
            Code::InvalidRequestUri,
            "request_uri used or expired",
        );
    }
    if par.client_id != client_id {
        return error_page(
            StatusCode::BAD_REQUEST,
            Code::InvalidRequestUri,
            "request_uri of another client",
        );
    }
    let txn_id = match crate::random::token() {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, &e.to_string()),
    };
    {
        let mut txns = match app.transactions.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        txns.insert(
            txn_id.clone(),
            Transaction {
                request_uri: request_uri.to_string(),
                client_id: client_id.to_string(),
                user: None,
                pending_user: None,
                failures: 0,
                auth_time: None,
                expires_at: now.saturating_add(TRANSACTION_LIFETIME),
                started_at: now,
            },
            now,
        );
    }
    let mut res = page(StatusCode::OK, "Log in", &login_form(&txn_id, None));
    let cookie = format!(
        "{COOKIE}={txn_id}; Path={}; HttpOnly; Secure; SameSite=Lax",
        paths::AUTHORIZE
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// Finds the transaction of a form post, checking the cookie matches the form field.
fn transaction(
    app: &App,
    headers: &HeaderMap,
    params: &Params,
    now: u64,
) -> Result<(String, Transaction), Box<Response>> {
    let txn_id = params
        .get("txn")
        .ok_or_else(|| Box::new(error_page(StatusCode::BAD_REQUEST, Code::InvalidRequest, "no txn")))?;
    if cookie_txn(headers).as_deref() != Some(txn_id) {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            Code::InvalidRequest,
            "txn cookie mismatch",
        )));
    }
    let txns = match app.transactions.lock() {
        Ok(t) => t,
        Err(p) => p.into_inner(),
    };
    match txns.get(txn_id, now) {
        Some(t) => Ok((txn_id.to_string(), t.clone())),
        None => Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            Code::InvalidRequest,
            "unknown or expired txn",
        ))),
    }
}

/// A form posted by one step of the login (password, second factor, consent): its parameters
/// and the transaction it continues (see [`transaction`]).
fn step_form(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<(Params, String, Transaction), Box<Response>> {
    let params = Params::from_form(headers, body)
        .map_err(|e| Box::new(error_page(StatusCode::BAD_REQUEST, e.code, &e.reason)))?;
    let (txn_id, txn) = transaction(app, headers, &params, now)?;
    Ok((params, txn_id, txn))
}

fn password_ok(hash: &str, password: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// The page for a throttled attempt: 429 with `Retry-After`, a plain message, and the form of
/// the step again (the transaction stays open for a retry after the wait).
fn throttled_page(seconds: u64, form: &str) -> Response {
    let body = format!("<p id=\"message\">Too many failed attempts. Try again in {seconds} seconds.</p>{form}");
    let mut res = page(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", &body);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    res
}

/// Logs and counts a failed login step with the user name, client address and reason (never what
/// was typed).
fn log_failure(app: &App, event: &str, username: &str, addr: ClientAddr, reason: &str) {
    match event {
        "login_throttled" => {
            app.metrics.login_throttled.inc();
        }
        "totp_failed" => app.metrics.login_failure("totp"),
        _ => app.metrics.login_failure("password"),
    };
    log_event(
        "info",
        event,
        serde_json::json!({
            "user": username,
            "address": crate::throttle::address_label(addr.0),
            "reason": reason,
        }),
    );
}

/// Starts a throttled attempt ([`crate::throttle::begin`]): the attempt, or the page to answer
/// when the account or address is locked (nothing is checked then).
async fn begin_attempt(
    app: &App,
    username: &str,
    addr: ClientAddr,
    now: u64,
    form: &str,
) -> Result<crate::throttle::Attempt, Box<Response>> {
    match crate::throttle::begin(app, username, addr.0, now).await {
        Ok(Ok(attempt)) => Ok(attempt),
        Ok(Err(seconds)) => {
            log_failure(app, "login_throttled", username, addr, "locked");
            Err(Box::new(throttled_page(seconds, form)))
        }
        Err(e) => Err(Box::new(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::ServerError,
            &e.to_string(),
        ))),
    }
}

/// A checked attempt failed: 429 if its failure locked the account or address, else the
/// transaction's own attempt limit applies.
fn attempt_failed(
    app: &App,
    attempt: &crate::throttle::Attempt,
    txn_id: &str,
    form: &str,
    retry: impl FnOnce() -> Response,
) -> Response {
    if let Some(seconds) = attempt.failed() {
        return throttled_page(seconds, form);
    }
    if record_failure(app, txn_id) {
        return error_page(StatusCode::BAD_REQUEST, Code::AccessDenied, "too many failed attempts");
    }
    retry()
}

/// `POST /authorize/login`. The login throttle ([`crate::throttle`]) is consulted first: a
/// locked account or address gets 429 without the password being checked.
pub async fn login(
    State(app): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = app.now();
    let (params, txn_id, txn) = match step_form(&app, &headers, &body, now) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let username = params.get("username").unwrap_or("").to_string();
    let password = params.get("password").unwrap_or("").to_string();
    let form = login_form(&txn_id, None);
    let attempt = match begin_attempt(&app, &username, addr, now, &form).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let hash = app.config.users.get(&username).map(|u| u.password_hash.clone());
    let known = hash.is_some();
    // An unknown user is checked against a dummy hash, so timing does not reveal usernames.
    let hash = hash.unwrap_or_else(|| app.dummy_hash.clone());
    let ok = match app.password_slots.acquire().await {
        Ok(_permit) => tokio::task::spawn_blocking(move || password_ok(&hash, &password))
            .await
            .unwrap_or(false),
        Err(_) => false,
    } && known;
    if !ok {
        log_failure(
            &app,
            "login_failed",
            &username,
            addr,
            if known { "wrong password" } else { "unknown user" },
        );
        return attempt_failed(&app, &attempt, &txn_id, &form, || {
            page(
                StatusCode::UNAUTHORIZED,
                "Log in",
                &login_form(&txn_id, Some("Invalid username or password")),
            )
        });
    }
    let needs_totp = app.config.users.get(&username).is_some_and(|u| u.totp_secret.is_some());
    // The password was right: its count is taken back; a login without a second factor is
    // complete and forgets the account's failures.
    if let Err(e) = attempt.succeeded(&app, !needs_totp).await {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, &e.to_string());
    }
    update(&app, &txn_id, |t| {
        if needs_totp {
            t.pending_user = Some(username.clone());
        } else {
            t.user = Some(username.clone());
            t.auth_time = Some(now);
        }
    });
    if needs_totp {
        return page(StatusCode::OK, "One-time code", &totp_form(&txn_id, None));
    }
    consent_page(&app, &txn_id, &txn, &username).await
}

/// Records a failed attempt; `true` (and the transaction is dropped) after [`MAX_FAILURES`].
fn record_failure(app: &App, txn_id: &str) -> bool {
    let mut txns = match app.transactions.lock() {
        Ok(t) => t,
        Err(p) => p.into_inner(),
    };
    let failures = txns.get_mut(txn_id).map_or(MAX_FAILURES, |t| {
        t.failures = t.failures.saturating_add(1);
        t.failures
    });
    if failures >= MAX_FAILURES {
        txns.remove(txn_id);
        true
    } else {
        false
    }
}

fn update(app: &App, txn_id: &str, f: impl FnOnce(&mut Transaction)) {
    let mut txns = match app.transactions.lock() {
        Ok(t) => t,
        Err(p) => p.into_inner(),
    };
    if let Some(t) = txns.get_mut(txn_id) {
        f(t);
    }
}

/// Failed password or TOTP attempts allowed per transaction.
pub const MAX_FAILURES: u32 = 5;

fn totp_form(txn: &str, message: Option<&str>) -> String {
    let msg = message.map_or_else(String::new, |m| format!("<p id=\"message\">{}</p>", html_escape(m)));
    format!(
        "{msg}<form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"txn\" value=\"{txn}\">\
         <label>Code <input name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\"></label>\
         <button type=\"submit\">Continue</button></form>",
        action = paths::TOTP,
        txn = html_escape(txn),
    )
}

/// `POST /authorize/totp`: the second factor for users with a TOTP secret. Throttled like the
/// password ([`crate::throttle`]); a code is accepted once, and no code of an earlier time step
/// after it (RFC 6238 §5.2: the last accepted step is stored per user).
pub async fn totp(
    State(app): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = app.now();
    let (params, txn_id, txn) = match step_form(&app, &headers, &body, now) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let Some(username) = txn.pending_user.clone() else {
        return error_page(StatusCode::BAD_REQUEST, Code::InvalidRequest, "no password step");
    };
    let Some(secret) = app.config.users.get(&username).and_then(|u| u.totp_secret.clone()) else {
        return error_page(StatusCode::BAD_REQUEST, Code::InvalidRequest, "user has no TOTP");
    };
    let form = totp_form(&txn_id, None);
    let attempt = match begin_attempt(&app, &username, addr, now, &form).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let given = params.get("code").unwrap_or("");
    let failure = match crate::totp::verify(&secret, given, now) {
        Some(step) => match app.store.accept_totp_step(&username, step).await {
            Ok(true) => None,
            Ok(false) => Some("code already used"),
            Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, &e.to_string()),
        },
        None => Some("wrong code"),
    };
    if let Some(reason) = failure {
        log_failure(&app, "totp_failed", &username, addr, reason);
        return attempt_failed(&app, &attempt, &txn_id, &form, || {
            page(
                StatusCode::UNAUTHORIZED,
                "One-time code",
                &totp_form(&txn_id, Some("Invalid or already used code")),
            )
        });
    }
    if let Err(e) = attempt.succeeded(&app, true).await {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, &e.to_string());
    }
    update(&app, &txn_id, |t| {
        t.pending_user = None;
        t.user = Some(username.clone());
        t.auth_time = Some(now);
    });
    consent_page(&app, &txn_id, &txn, &username).await
}

async fn consent_page(app: &App, txn_id: &str, txn: &Transaction, username: &str) -> Response {
    let par = match app.store.par(&txn.request_uri).await {
        Ok(Some(p)) => p,
        _ => return error_page(StatusCode::BAD_REQUEST, Code::InvalidRequestUri, "request_uri vanished"),
    };
    let Ok(request) = serde_json::from_str::<AuthzRequest>(&par.params) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::ServerError,
            "stored request unreadable",
        );
    };
    let client_name = app
        .client(&txn.client_id)
        .await
        .ok()
        .flatten()
        .map_or(txn.client_id.clone(), |c| c.name.clone());
    let scopes: String = request
        .scopes
        .iter()
        .map(|s| format!("<li class=\"scope\">{}</li>", html_escape(s)))
        .collect();
    let resources: String = request
        .resources
        .iter()
        .map(|r| format!("<li class=\"resource\">{}</li>", html_escape(r)))
        .collect();
    // RFC 9396: each authorization detail in plain words (amount, payee, accounts).
    let details: String = request
        .authorization_details
        .as_ref()
        .map(|d| {
            app.config
                .detail_types
                .describe(d)
                .iter()
                .map(|line| format!("<li class=\"detail\">{}</li>", html_escape(line)))
                .collect()
        })
        .unwrap_or_default();
    let details = if details.is_empty() {
        String::new()
    } else {
        format!("<p>and to:</p><ul id=\"authorization_details\">{details}</ul>")
    };
    let body = format!(
        "<p><span id=\"client\">{client}</span> asks to access your account (<span id=\"user\">{user}</span>) with:</p>\
         <ul id=\"scopes\">{scopes}</ul><p>at:</p><ul id=\"resources\">{resources}</ul>{details}\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"txn\" value=\"{txn}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        client = html_escape(&client_name),
        user = html_escape(username),
        action = paths::CONSENT,
        txn = html_escape(txn_id),
    );
    page(StatusCode::OK, "Consent", &body)
}

/// `POST /authorize/consent`.
pub async fn consent(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let now = app.now();
    let (params, txn_id, txn) = match step_form(&app, &headers, &body, now) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let (Some(user), Some(auth_time)) = (txn.user.clone(), txn.auth_time) else {
        return error_page(StatusCode::BAD_REQUEST, Code::InvalidRequest, "consent before login");
    };
    let decision = params.get("decision").unwrap_or("");
    if decision != "allow" && decision != "deny" {
        return error_page(StatusCode::BAD_REQUEST, Code::InvalidRequest, "decision");
    }
    {
        let mut txns = match app.transactions.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        txns.remove(&txn_id);
    }
    let par = match app.store.par(&txn.request_uri).await {
        Ok(Some(p)) => p,
        Ok(None) => return error_page(StatusCode::BAD_REQUEST, Code::InvalidRequestUri, "request_uri vanished"),
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, &e.to_string()),
    };
    let Ok(request) = serde_json::from_str::<AuthzRequest>(&par.params) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::ServerError,
            "stored request unreadable",
        );
    };
    // One use: the first completed authorization consumes the request_uri.
    match app.store.consume_par(&txn.request_uri, txn.started_at).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                Code::InvalidRequestUri,
                "request_uri already used",
            );
        }
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, &e.to_string()),
    }
    let outcome = if decision == "deny" {
        Err(Code::AccessDenied.as_str())
    } else {
        issue_code(&app, &request, &user, auth_time, now).await.map_err(|e| {
            log_line("error", "server_error", &e);
            Code::ServerError.as_str()
        })
    };
    let mut out: Vec<(&str, &str)> = Vec::new();
    match &outcome {
        Ok(code) => out.push(("code", code)),
        Err(error) => out.push(("error", error)),
    }
    if let Some(s) = &request.state {
        out.push(("state", s));
    }
    authorization_response(&app, &request, &out, now)
}

/// The authorization response: `iss` added to the query (RFC 9207), or, for
/// `response_mode=jwt`, every parameter inside a JWT signed by the server (JARM: `iss`, `aud` the
/// client, `exp` 60 s) sent as the `response` query parameter.
fn authorization_response(app: &App, request: &AuthzRequest, params: &[(&str, &str)], now: u64) -> Response {
    let iss = app.config.issuer.as_str();
    if request.response_mode != "jwt" {
        let mut all = params.to_vec();
        all.push(("iss", iss));
        return redirect(&request.redirect_uri, &all);
    }
    let mut claims = serde_json::json!({
        "iss": iss,
        "aud": request.client_id,
        "iat": now,
        "exp": now.saturating_add(JARM_LIFETIME),
    });
    if let Some(o) = claims.as_object_mut() {
        for (k, v) in params {
            o.insert((*k).to_string(), (*v).into());
        }
    }
    let keys = app.keyring();
    let jwt = keys
        .active()
        .ok_or_else(|| "no signing key".to_string())
        .and_then(|k| sign_json(&k.signer, Some("JWT"), Some(&k.kid), &claims).map_err(|e| e.to_string()));
    match jwt {
        Ok(jwt) => redirect(&request.redirect_uri, &[("response", &jwt)]),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, &e),
    }
}

/// Lifetime of a JARM response JWT (seconds).
pub const JARM_LIFETIME: u64 = 60;

/// Records the signed consent and stores a new code; returns the code.
async fn issue_code(app: &App, request: &AuthzRequest, user: &str, auth_time: u64, now: u64) -> Result<String, String> {
    let consent_id = crate::random::token().map_err(|e| e.to_string())?;
    let scope = request.scopes.join(" ");
    let keys = app.keyring();
    let key = keys.active().ok_or("no signing key")?;
    let consent_jwt = sign_json(
        &key.signer,
        Some("consent+jwt"),
        Some(&key.kid),
        &serde_json::json!({
            "iss": app.config.issuer,
            "sub": user,
            "client_id": request.client_id,
            "scope": scope,
            "resource": request.resources,
            "redirect_uri": request.redirect_uri,
            "authorization_details": request.authorization_details,
            "iat": now,
            "jti": consent_id,
        }),
    )
    .map_err(|e| e.to_string())?;
    app.store
        .put_consent(&ConsentRecord {
            id: consent_id,
            subject: user.to_string(),
            client_id: request.client_id.clone(),
            scope,
            jwt: consent_jwt,
            created_at: now,
        })
        .await
        .map_err(|e| e.to_string())?;
    let code = crate::random::token().map_err(|e| e.to_string())?;
    let grant_id = crate::random::token().map_err(|e| e.to_string())?;
    let data = CodeData {
        request: request.clone(),
        sub: user.to_string(),
        auth_time,
    };
    app.store
        .put_code(&CodeRecord {
            code_hash: code_hash(&code),
            client_id: request.client_id.clone(),
            grant_id,
            data: serde_json::to_string(&data).map_err(|e| e.to_string())?,
            expires_at: now.saturating_add(app.config.lifetimes.code),
            used: false,
            redeemed_jkt: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::storage::ParRecord;
    use crate::test_support;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::Arc;
    use tower::ServiceExt;

    /// A pushed request of the public client `spa`, stored directly.
    pub(crate) async fn push(app: &App, now: u64) -> String {
        let request_uri = format!("{REQUEST_URI_PREFIX}{}", crate::random::token().unwrap());
        let request = AuthzRequest {
            client_id: "spa".into(),
            redirect_uri: "http://127.0.0.1:8080/cb".into(),
            scopes: vec!["openid".into()],
            resources: vec![test_support::AUDIENCE.into()],
            state: Some("st".into()),
            nonce: None,
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            dpop_jkt: None,
            response_mode: "query".into(),
            authorization_details: None,
        };
        app.store
            .put_par(&ParRecord {
                request_uri: request_uri.clone(),
                client_id: "spa".into(),
                params: serde_json::to_string(&request).unwrap(),
                expires_at: now + 90,
                consumed: false,
            })
            .await
            .unwrap();
        request_uri
    }

    pub(crate) async fn call(app: &Arc<App>, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let res = crate::routes::router(app.clone())
            .layer(axum::Extension(ClientAddr(std::net::Ipv4Addr::LOCALHOST.into())))
            .oneshot(req)
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
    }

    pub(crate) fn open(request_uri: &str) -> Request<Body> {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", "spa")
            .append_pair("request_uri", request_uri)
            .finish();
        Request::get(format!("{}?{q}", paths::AUTHORIZE))
            .body(Body::empty())
            .unwrap()
    }

    pub(crate) fn form(path: &str, cookie: &str, fields: &[(&str, &str)]) -> Request<Body> {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            ser.append_pair(k, v);
        }
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookie)
            .body(Body::from(ser.finish()))
            .unwrap()
    }

    /// The transaction cookie and the hidden `txn` field of a login page.
    pub(crate) fn txn_of(headers: &HeaderMap, html: &str) -> (String, String) {
        let cookie = headers[header::SET_COOKIE].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let txn = html.split("name=\"txn\" value=\"").nth(1).unwrap();
        (cookie, txn.split('"').next().unwrap().to_string())
    }

    /// A flood of `GET /authorize` on one unused `request_uri` (each opens a transaction) keeps
    /// the in-memory transactions at their bound, and a login right after it completes.
    #[tokio::test]
    async fn a_flood_of_authorization_requests_stays_bounded_and_login_still_works() {
        let app = Arc::new(test_support::app().await);
        let uri = push(&app, crate::random::now()).await;
        for _ in 0..25_000 {
            let (status, _, _) = call(&app, open(&uri)).await;
            assert_eq!(status, StatusCode::OK);
        }
        let held = app.transactions.lock().unwrap().len();
        assert!(held <= crate::state::MAX_TRANSACTIONS, "{held} transactions held");

        let (status, headers, html) = call(&app, open(&uri)).await;
        assert_eq!(status, StatusCode::OK);
        let (cookie, txn) = txn_of(&headers, &html);
        let login = [
            ("txn", txn.as_str()),
            ("username", "alice"),
            ("password", test_support::PASSWORD),
        ];
        let (status, _, html) = call(&app, form(paths::LOGIN, &cookie, &login)).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        let allow = [("txn", txn.as_str()), ("decision", "allow")];
        let (status, headers, _) = call(&app, form(paths::CONSENT, &cookie, &allow)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(headers[header::LOCATION].to_str().unwrap().contains("code="));
    }
}
