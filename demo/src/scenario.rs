//! The scripted story: a native client drives the running demo over real HTTP and TLS and
//! prints what happens, step by step. Every step states what it expects (status, RFC error code,
//! and for rejections the gateway's reason from its `denied.<reason>` counter); the story fails
//! if any step does not get it.
//!
//! 1. The DPoP client (`private_key_jwt`) gets a token through PAR + PKCE, the login and consent
//!    forms driven over HTTP, and the code exchange with a DPoP proof: `cnf.jkt` is its key.
//! 2. It calls the API through Envoy with a fresh proof: accepted.
//! 3. The same token with a proof from another key: rejected.
//! 4. The accepted request sent again (same proof): rejected as a replay.
//! 5. The mTLS client (`tls_client_auth`) gets a certificate-bound token (`cnf.x5t#S256`).
//! 6. It calls the API through Envoy's mTLS listener with its certificate: accepted.
//! 7. The same token over a connection with another certificate from the same CA: rejected.

use std::collections::BTreeMap;

use keybound_core::dpop::{NewProof, create_proof};
use keybound_core::jws::{P256Signer, Signer, sign_json};

use crate::http::{Client, Response, form, query_params, request};
use crate::setup::{DPOP_CLIENT, DemoFiles, MTLS_CLIENT, NATIVE_REDIRECT, Urls};

/// The outcome of the story.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Steps that got what they expected.
    pub passed: usize,
    /// Steps that did not, with what happened.
    pub failed: Vec<String>,
}

impl Outcome {
    /// True if every step got what it expected.
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.passed > 0
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 128 random bits, base64url (for `jti`, `state`, `nonce`).
fn random_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(keybound_core::b64::encode(&b))
}

fn random_key() -> Result<P256Signer, String> {
    for _ in 0..8 {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| e.to_string())?;
        if let Ok(k) = P256Signer::from_bytes(&b) {
            return Ok(k);
        }
    }
    Err("could not generate a P-256 key".into())
}

fn short(s: &str) -> String {
    if s.len() > 48 {
        format!("{}…", s.get(..44).unwrap_or(s))
    } else {
        s.to_string()
    }
}

/// A JWT's payload, not verified (the gateway verifies; this is for showing it).
fn claims(jwt: &str) -> serde_json::Value {
    jwt.split('.')
        .nth(1)
        .and_then(|p| keybound_core::b64::decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The JSON value at a JSON Pointer, or `null`.
fn at<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a serde_json::Value {
    v.pointer(pointer).unwrap_or(&serde_json::Value::Null)
}

/// The error code of a `WWW-Authenticate` challenge.
fn challenge_error(res: &Response) -> String {
    challenge_param(res, "error")
}

/// A parameter of the response's `WWW-Authenticate` challenge (`""` if absent).
fn challenge_param(res: &Response, name: &str) -> String {
    res.header("www-authenticate")
        .and_then(|h| {
            h.split(&format!(" {name}=\""))
                .nth(1)
                .or_else(|| h.split(&format!(",{name}=\"")).nth(1))
        })
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string()
}

/// The story's state: the clients, the TLS configurations, the nonce last seen.
struct Story<'a> {
    files: &'a DemoFiles,
    urls: &'a Urls,
    plain: Client,
    mtls: Client,
    other: Client,
    /// The mTLS client's second certificate: the PSD2 role PSP_AI only.
    account_info_only: Client,
    /// The last consent page the front channel showed.
    consent_page: String,
    nonce: Option<String>,
    outcome: Outcome,
}

impl Story<'_> {
    fn check(&mut self, ok: bool, what: &str) {
        if ok {
            self.outcome.passed += 1;
            println!("   ✔ {what}");
        } else {
            println!("   ✘ NOT AS EXPECTED: {what}");
            self.outcome.failed.push(what.to_string());
        }
    }

    fn remember_nonce(&mut self, res: &Response) {
        if let Some(n) = res.header("dpop-nonce") {
            self.nonce = Some(n.to_string());
        }
    }

    fn proof(&self, key: &P256Signer, htm: &str, htu: &str, token: Option<&str>) -> Result<String, String> {
        create_proof(
            key,
            &NewProof {
                htm,
                htu,
                iat: now(),
                jti: &random_id()?,
                access_token: token,
                nonce: self.nonce.as_deref(),
            },
        )
        .map_err(|e| e.to_string())
    }

    /// POSTs a form to the authorization server with a DPoP proof (if `key`), retrying once with
    /// the server's nonce on `use_dpop_nonce`.
    fn post_as(
        &mut self,
        tls: &Client,
        path: &str,
        fields: &[(&str, &str)],
        key: Option<&P256Signer>,
        fresh_fields: &dyn Fn() -> Result<Vec<(String, String)>, String>,
    ) -> Result<Response, String> {
        let url = format!("{}{path}", self.urls.issuer);
        for attempt in 0..2 {
            let mut all: Vec<(String, String)> = fields.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            all.extend(fresh_fields()?);
            let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let body = form(&refs);
            let mut headers = vec![("content-type", "application/x-www-form-urlencoded".to_string())];
            if let Some(key) = key {
                headers.push(("dpop", self.proof(key, "POST", &url, None)?));
            }
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let res = request(&url, Some(tls), "POST", &h, Some(body.as_bytes()))?;
            self.remember_nonce(&res);
            let wants_nonce = res.status == 400
                && res
                    .json()
                    .ok()
                    .and_then(|j| at(&j, "/error").as_str().map(|e| e == "use_dpop_nonce"))
                    .unwrap_or(false);
            if wants_nonce && attempt == 0 {
                println!(
                    "   · {path}: 400 use_dpop_nonce with a DPoP-Nonce header (the server wants a fresh nonce in the proof): retrying once"
                );
                continue;
            }
            return Ok(res);
        }
        Err(format!("{path}: still use_dpop_nonce after one retry"))
    }

    /// POSTs a form to the authorization server as the DPoP client: its fields, the
    /// `private_key_jwt` assertion type and a fresh assertion on every attempt, a proof by
    /// `dpop_key` ([`Self::post_as`]).
    fn post_as_dpop_client(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        dpop_key: &P256Signer,
        (client_key, kid): (&P256Signer, &str),
    ) -> Result<Response, String> {
        let plain = self.plain.clone();
        let issuer = self.urls.issuer.clone();
        let mut all = fields.to_vec();
        all.push((
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ));
        self.post_as(&plain, path, &all, Some(dpop_key), &|| {
            Ok(vec![("client_assertion".into(), assertion(client_key, kid, &issuer)?)])
        })
    }

    /// After a pushed authorization request answered by `par` (sent `how`): its `request_uri`
    /// through the front channel ([`Self::authorize`]) to the authorization code.
    fn code_after_par(&mut self, par: &Response, how: &str, client_id: &str, state: &str) -> Result<String, String> {
        let request_uri = par
            .json()
            .ok()
            .and_then(|j| at(&j, "/request_uri").as_str().map(str::to_string));
        println!(
            "   · POST /par{how} → {} request_uri {}",
            par.status,
            request_uri.as_deref().unwrap_or("(none)")
        );
        let Some(request_uri) = request_uri.filter(|_| par.status == 201) else {
            return Err(format!("PAR failed: {} {}", par.status, par.text()));
        };
        let params = self.authorize(client_id, &request_uri, state)?;
        Ok(params.get("code").cloned().unwrap_or_default())
    }

    /// The front-channel part: opens the authorization URL, logs in as the demo user, allows
    /// the consent; returns the redirect's parameters after checking `iss` and `state`.
    fn authorize(
        &mut self,
        client_id: &str,
        request_uri: &str,
        state: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let url = format!(
            "{}/authorize?{}",
            self.urls.issuer,
            form(&[("client_id", client_id), ("request_uri", request_uri)])
        );
        let page = request(&url, Some(&self.plain), "GET", &[], None)?;
        if page.status != 200 {
            return Err(format!("GET /authorize: {} {}", page.status, page.text()));
        }
        let cookie = page
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .ok_or("GET /authorize: no transaction cookie")?
            .to_string();
        let html = page.text();
        let txn = html
            .split("name=\"txn\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or("GET /authorize: no txn field in the login form")?
            .to_string();
        let (user, password) = &self.files.user;
        let login_url = format!("{}/authorize/login", self.urls.issuer);
        let body = form(&[("txn", &txn), ("username", user), ("password", password)]);
        let res = request(
            &login_url,
            Some(&self.plain),
            "POST",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &cookie),
            ],
            Some(body.as_bytes()),
        )?;
        if res.status != 200 {
            return Err(format!("login: {} {}", res.status, res.text()));
        }
        self.consent_page = res.text();
        println!("   · GET /authorize → login form; logged in as {user} → consent form");
        let consent_url = format!("{}/authorize/consent", self.urls.issuer);
        let body = form(&[("txn", &txn), ("decision", "allow")]);
        let res = request(
            &consent_url,
            Some(&self.plain),
            "POST",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &cookie),
            ],
            Some(body.as_bytes()),
        )?;
        let location = res.header("location").unwrap_or_default().to_string();
        if res.status != 303 || !location.starts_with(NATIVE_REDIRECT) {
            return Err(format!("consent: {} {location} {}", res.status, res.text()));
        }
        let params: BTreeMap<String, String> = query_params(&location).into_iter().collect();
        println!("   · allowed → 303 to {}", short(&location));
        let iss_ok = params.get("iss") == Some(&self.urls.issuer);
        let state_ok = params.get("state").map(String::as_str) == Some(state);
        self.check(
            iss_ok && state_ok && params.contains_key("code"),
            "the redirect carries a code, our state, and iss = the issuer (RFC 9207 mix-up defence)",
        );
        Ok(params)
    }

    /// Sends a request to the gateway; returns the response.
    fn gateway(&mut self, url: &str, tls: &Client, headers: &[(&str, &str)]) -> Result<Response, String> {
        let res = request(url, Some(tls), "GET", headers, None)?;
        self.remember_nonce(&res);
        Ok(res)
    }

    fn denied_counters(&self) -> BTreeMap<String, u64> {
        let url = format!("{}/stats?filter=keybound", self.urls.admin);
        let Ok(res) = request(&url, None, "GET", &[], None) else {
            return BTreeMap::new();
        };
        res.text()
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                let [decision, reason, ..] = keybound_filter::metrics::parse_decision_counter(name)?;
                (decision == "deny").then_some(())?;
                Some((reason.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// Which `denied.<reason>` counters grew since `before`.
    fn reasons_since(&self, before: &BTreeMap<String, u64>) -> Vec<String> {
        self.denied_counters()
            .into_iter()
            .filter(|(k, v)| before.get(k).copied().unwrap_or(0) < *v)
            .map(|(k, _)| k)
            .collect()
    }

    fn expect_rejection(
        &mut self,
        res: &Response,
        before: &BTreeMap<String, u64>,
        (code, reason): (&str, &str),
        what: &str,
    ) {
        let reasons = self.reasons_since(before);
        println!(
            "   · {} {}, WWW-Authenticate: {}",
            res.status,
            match res.status {
                401 => "Unauthorized",
                403 => "Forbidden",
                _ => "",
            },
            res.header("www-authenticate").unwrap_or("(none)")
        );
        println!(
            "   · the gateway's reason (Envoy log and counter keybound_requests_total{{decision=\"deny\",reason}}; the client only sees the RFC code): {}",
            if reasons.is_empty() {
                "(none)".to_string()
            } else {
                reasons.join(", ")
            }
        );
        self.check(
            (res.status == 401 || res.status == 403) && challenge_error(res) == code && reasons == [reason],
            &format!("{what} ({} {code}, reason {reason})", res.status),
        );
    }

    /// Chapter 0: from a 401 to the authorization server's endpoints, as an RFC 9728 client (an
    /// MCP client, say) does. Returns the resource, and the PAR and token paths at the issuer.
    fn discovery_part(&mut self) -> Result<(String, String, String), String> {
        println!("\n0. A client that knows only the API's URL discovers how to get a token (RFC 9728, then RFC 8414)");
        let api = self.urls.dpop_api.clone();
        let plain = self.plain.clone();
        let res = self.gateway(&api, &plain, &[])?;
        let metadata_url = challenge_param(&res, "resource_metadata");
        println!(
            "   · GET {api} without a token → {}, WWW-Authenticate names resource_metadata {metadata_url}",
            res.status
        );
        let meta = request(&metadata_url, Some(&plain), "GET", &[], None)?;
        let doc = meta.json().unwrap_or_default();
        let resource = at(&doc, "/resource").as_str().unwrap_or_default().to_string();
        let issuer = at(&doc, "/authorization_servers/0")
            .as_str()
            .unwrap_or_default()
            .to_string();
        println!(
            "   · GET it → {}: resource {resource}, authorization_servers [{issuer}], dpop_bound_access_tokens_required {}",
            meta.status,
            at(&doc, "/dpop_bound_access_tokens_required")
        );
        // RFC 9728 §3.3: the document is about the resource whose URL it was fetched from.
        let well_formed = metadata_url == format!("{resource}/.well-known/oauth-protected-resource");
        let as_meta = request(
            &format!("{issuer}/.well-known/oauth-authorization-server"),
            Some(&plain),
            "GET",
            &[],
            None,
        )?;
        let as_doc = as_meta.json().unwrap_or_default();
        let path_of = |field: &str| {
            at(&as_doc, field)
                .as_str()
                .and_then(|u| u.strip_prefix(issuer.as_str()))
                .unwrap_or_default()
                .to_string()
        };
        let (par, token) = (
            path_of("/pushed_authorization_request_endpoint"),
            path_of("/token_endpoint"),
        );
        println!(
            "   · GET {issuer}/.well-known/oauth-authorization-server → {}: issuer {}, PAR at {par}, token at {token}",
            as_meta.status,
            at(&as_doc, "/issuer")
        );
        self.check(
            res.status == 401
                && meta.status == 200
                && well_formed
                && issuer == self.urls.issuer
                && at(&as_doc, "/issuer") == issuer.as_str()
                && !par.is_empty()
                && !token.is_empty(),
            "the 401 led to the resource's metadata, which led to keybound-authz and its endpoints",
        );
        if par.is_empty() || token.is_empty() || resource.is_empty() {
            return Err(format!("discovery failed: {} {}", meta.status, meta.text()));
        }
        Ok((resource, par, token))
    }

    /// The DPoP client's `private_key_jwt` key and its `kid`.
    fn dpop_client_key(&self) -> Result<(P256Signer, String), String> {
        let secret = std::fs::read_to_string(self.files.authz_file("fapi-dpop.key"))
            .map_err(|e| format!("fapi-dpop.key: {e}"))?;
        let secret: [u8; 32] = keybound_core::b64::decode(secret.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("fapi-dpop.key: not a base64url 32-byte scalar")?;
        let client_key = P256Signer::from_bytes(&secret).map_err(|e| format!("fapi-dpop.key: {e}"))?;
        let kid = crate::setup::client_kid(self.files, DPOP_CLIENT).unwrap_or_else(|| "fapi-dpop-1".into());
        Ok((client_key, kid))
    }

    fn dpop_part(&mut self) -> Result<(), String> {
        let (resource, par_path, token_path) = self.discovery_part()?;
        println!(
            "\n1. The DPoP client `{DPOP_CLIENT}` (private_key_jwt) gets a token bound to its key (PAR + PKCE + DPoP)"
        );
        let (client_key, kid) = self.dpop_client_key()?;
        let dpop_key = random_key()?;
        let jkt = dpop_key.public_key().thumbprint().to_string();
        println!("   · a new DPoP key (P-256), thumbprint (RFC 7638) {jkt}");
        let mut pkce_random = [0u8; 32];
        getrandom::fill(&mut pkce_random).map_err(|e| e.to_string())?;
        let verifier = keybound_core::pkce::verifier_from_random(&pkce_random);
        let challenge = keybound_core::pkce::challenge_s256(&verifier).map_err(|e| e.to_string())?;
        let state = random_id()?;
        let nonce = random_id()?;
        let plain = self.plain.clone();
        let res = self.post_as_dpop_client(
            &par_path,
            &[
                ("client_id", DPOP_CLIENT),
                ("resource", &resource),
                ("response_type", "code"),
                ("redirect_uri", NATIVE_REDIRECT),
                ("scope", "openid accounts"),
                ("state", &state),
                ("nonce", &nonce),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("dpop_jkt", &jkt),
            ],
            &dpop_key,
            (&client_key, &kid),
        )?;
        let code = self.code_after_par(&res, "", DPOP_CLIENT, &state)?;
        let res = self.post_as_dpop_client(
            &token_path,
            &[
                ("grant_type", "authorization_code"),
                ("resource", &resource),
                ("code", &code),
                ("redirect_uri", NATIVE_REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", DPOP_CLIENT),
            ],
            &dpop_key,
            (&client_key, &kid),
        )?;
        let body = res.json().unwrap_or_default();
        let token = at(&body, "/access_token").as_str().unwrap_or_default().to_string();
        let c = claims(&token);
        println!(
            "   · POST {token_path} (code + PKCE verifier + DPoP proof + resource) → {} token_type {}, cnf.jkt {}, aud {}, scope {:?}, sub {}",
            res.status,
            at(&body, "/token_type"),
            at(&c, "/cnf/jkt"),
            at(&c, "/aud"),
            at(&c, "/scope").as_str().unwrap_or(""),
            at(&c, "/sub")
        );
        let aud_is_resource = at(&c, "/aud") == resource.as_str()
            || at(&c, "/aud")
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == resource.as_str()));
        self.check(
            res.status == 200
                && at(&body, "/token_type") == "DPoP"
                && at(&c, "/cnf/jkt") == jkt.as_str()
                && aud_is_resource,
            "a DPoP-bound access token for the discovered resource, whose cnf.jkt is our key's thumbprint",
        );
        if token.is_empty() {
            return Err(format!("no access token: {} {}", res.status, res.text()));
        }

        println!("\n2. The client calls the API through Envoy with the token and a fresh proof (htm, htu, ath, nonce)");
        let api = self.urls.dpop_api.clone();
        let mut sent = Vec::new();
        let mut res = Response::default();
        for attempt in 0..2 {
            let proof = self.proof(&dpop_key, "GET", &api, Some(&token))?;
            sent = vec![
                ("authorization".to_string(), format!("DPoP {token}")),
                ("dpop".to_string(), proof),
            ];
            let h: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            res = self.gateway(&api, &plain, &h)?;
            if res.status == 401 && challenge_error(&res) == "use_dpop_nonce" && attempt == 0 {
                println!("   · 401 use_dpop_nonce: the gateway wants its nonce; retrying once with it");
                continue;
            }
            break;
        }
        let echo = res.json().unwrap_or_default();
        println!(
            "   · GET {api} → {}; the API saw x-keybound-sub {}, x-keybound-binding {}, x-keybound-jkt {}",
            res.status,
            at(&echo, "/headers/x-keybound-sub"),
            at(&echo, "/headers/x-keybound-binding"),
            at(&echo, "/headers/x-keybound-jkt")
        );
        self.check(
            res.status == 200 && at(&echo, "/headers/x-keybound-jkt") == jkt.as_str(),
            "accepted: the proof's key is the token's cnf.jkt",
        );

        println!("\n3. Someone who stole the token tries it with a proof from their own key");
        let thief = random_key()?;
        let proof = self.proof(&thief, "GET", &api, Some(&token))?;
        let before = self.denied_counters();
        let auth = format!("DPoP {token}");
        let res = self.gateway(&api, &plain, &[("authorization", &auth), ("dpop", &proof)])?;
        self.expect_rejection(
            &res,
            &before,
            ("invalid_token", "jkt_mismatch"),
            "rejected: the proof's key is not the one the token is bound to",
        );

        println!("\n4. Someone who captured the accepted request sends it again, proof and all");
        let before = self.denied_counters();
        let h: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let res = self.gateway(&api, &plain, &h)?;
        self.expect_rejection(
            &res,
            &before,
            ("invalid_dpop_proof", "proof_replayed"),
            "rejected: that proof's jti was already used (replay)",
        );
        Ok(())
    }

    fn mtls_part(&mut self) -> Result<(), String> {
        println!("\n5. The mTLS client `{MTLS_CLIENT}` (tls_client_auth) gets a token bound to its certificate");
        let cert_pem = std::fs::read_to_string(self.files.authz_file("mtls-client.pem"))
            .map_err(|e| format!("mtls-client.pem: {e}"))?;
        let x5t = keybound_core::cert::X5tS256::from_pem(&cert_pem)
            .map_err(|e| format!("mtls-client.pem: {e}"))?
            .to_string();
        println!("   · its certificate's SHA-256 thumbprint (x5t#S256): {x5t}");
        let mut pkce_random = [0u8; 32];
        getrandom::fill(&mut pkce_random).map_err(|e| e.to_string())?;
        let verifier = keybound_core::pkce::verifier_from_random(&pkce_random);
        let challenge = keybound_core::pkce::challenge_s256(&verifier).map_err(|e| e.to_string())?;
        let state = random_id()?;
        let mtls = self.mtls.clone();
        let res = self.post_as(
            &mtls,
            "/par",
            &[
                ("client_id", MTLS_CLIENT),
                ("response_type", "code"),
                ("redirect_uri", NATIVE_REDIRECT),
                ("scope", "openid accounts"),
                ("state", &state),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
            None,
            &|| Ok(Vec::new()),
        )?;
        let code = self.code_after_par(&res, " over TLS with the client certificate", MTLS_CLIENT, &state)?;
        let res = self.post_as(
            &mtls,
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", NATIVE_REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", MTLS_CLIENT),
            ],
            None,
            &|| Ok(Vec::new()),
        )?;
        let body = res.json().unwrap_or_default();
        let token = at(&body, "/access_token").as_str().unwrap_or_default().to_string();
        let c = claims(&token);
        println!(
            "   · POST /token over mTLS → {} token_type {}, cnf.x5t#S256 {}",
            res.status,
            at(&body, "/token_type"),
            at(&c, "/cnf/x5t#S256")
        );
        self.check(
            res.status == 200 && at(&c, "/cnf/x5t#S256") == x5t.as_str(),
            "a certificate-bound access token whose cnf.x5t#S256 is our certificate's thumbprint",
        );
        if token.is_empty() {
            return Err(format!("no access token: {} {}", res.status, res.text()));
        }

        println!("\n6. The client calls the API through Envoy's mTLS listener, presenting its certificate");
        let api = self.urls.mtls_api.clone();
        let auth = format!("Bearer {token}");
        let res = self.gateway(&api, &mtls, &[("authorization", &auth)])?;
        let echo = res.json().unwrap_or_default();
        println!(
            "   · GET {api} → {}; the API saw x-keybound-binding {}, x-keybound-x5t-s256 {}",
            res.status,
            at(&echo, "/headers/x-keybound-binding"),
            at(&echo, "/headers/x-keybound-x5t-s256")
        );
        self.check(
            res.status == 200,
            "accepted: the TLS client certificate is the token's cnf.x5t#S256",
        );

        println!("\n7. Someone with the token and another certificate from the same CA tries it");
        let before = self.denied_counters();
        let other = self.other.clone();
        let res = self.gateway(&api, &other, &[("authorization", &auth)])?;
        self.expect_rejection(
            &res,
            &before,
            ("invalid_token", "certificate_mismatch"),
            "rejected: the connection's certificate is not the one the token is bound to",
        );
        Ok(())
    }
}

impl Story<'_> {
    /// The payment: a consent for one amount to one payee, in a request object the client signs,
    /// shown to the user, carried by a DPoP-bound token, checked and forwarded by the gateway;
    /// a tampered request object and a certificate without the payment-initiation role fail.
    fn payment_part(&mut self) -> Result<(), String> {
        println!(
            "\n8. A payment: `{DPOP_CLIENT}` asks to pay 42.00 EUR to Café Example, in a request object it signs (RFC 9101) with the payment as authorization_details (RFC 9396)"
        );
        let (client_key, kid) = self.dpop_client_key()?;
        let dpop_key = random_key()?;
        let jkt = dpop_key.public_key().thumbprint().to_string();
        let mut pkce_random = [0u8; 32];
        getrandom::fill(&mut pkce_random).map_err(|e| e.to_string())?;
        let verifier = keybound_core::pkce::verifier_from_random(&pkce_random);
        let challenge = keybound_core::pkce::challenge_s256(&verifier).map_err(|e| e.to_string())?;
        let state = random_id()?;
        let details = serde_json::json!([{
            "type": "payment_initiation",
            "actions": ["initiate"],
            "instructedAmount": { "currency": "EUR", "amount": "42.00" },
            "creditorName": "Café Example",
            "creditorAccount": { "iban": "FR7630006000011234567890189" },
            "remittanceInformationUnstructured": "Invoice 2026-117"
        }]);
        let t = now();
        let object_claims = serde_json::json!({
            "iss": DPOP_CLIENT, "client_id": DPOP_CLIENT, "aud": self.urls.issuer,
            "nbf": t, "exp": t + 300, "jti": random_id()?,
            "response_type": "code", "redirect_uri": NATIVE_REDIRECT, "scope": "openid",
            "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
            "dpop_jkt": jkt, "authorization_details": details,
        });
        let object = sign_json(&client_key, Some("oauth-authz-req+jwt"), Some(&kid), &object_claims)
            .map_err(|e| e.to_string())?;
        // Someone between client and bank changes the amount: the signature no longer holds.
        let tampered = {
            let mut parts: Vec<String> = object.split('.').map(str::to_owned).collect();
            let mut c = object_claims.clone();
            if let Some(amount) = c.pointer_mut("/authorization_details/0/instructedAmount/amount") {
                *amount = "4200.00".into();
            }
            if let Some(p) = parts.get_mut(1) {
                *p = keybound_core::b64::encode(c.to_string().as_bytes());
            }
            parts.join(".")
        };
        let plain = self.plain.clone();
        let push = |story: &mut Self, request: &str| {
            story.post_as_dpop_client(
                "/par",
                &[("client_id", DPOP_CLIENT), ("request", request)],
                &dpop_key,
                (&client_key, &kid),
            )
        };
        let res = push(self, &tampered)?;
        let error = res.json().ok().map(|j| at(&j, "/error").clone()).unwrap_or_default();
        println!(
            "   · POST /par with the amount changed to 4200.00 after signing → {} {error}",
            res.status
        );
        self.check(
            res.status == 400 && error == "invalid_request_object",
            "a tampered request object is refused (400 invalid_request_object)",
        );
        let res = push(self, &object)?;
        let code = self.code_after_par(&res, " with the signed request object", DPOP_CLIENT, &state)?;
        let shown = self
            .consent_page
            .contains("Pay 42.00 EUR to Café Example (account FR7630006000011234567890189)");
        println!(
            "   · the consent page said: \"Pay 42.00 EUR to Café Example (account FR7630006000011234567890189)\"{}",
            if shown { "" } else { " (NOT FOUND)" }
        );
        self.check(shown, "the consent page states the amount, the currency and the payee");
        let res = self.post_as_dpop_client(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", NATIVE_REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", DPOP_CLIENT),
            ],
            &dpop_key,
            (&client_key, &kid),
        )?;
        let body = res.json().unwrap_or_default();
        let token = at(&body, "/access_token").as_str().unwrap_or_default().to_string();
        let c = claims(&token);
        println!(
            "   · POST /token → {} token_type {}, cnf.jkt {}, authorization_details {}",
            res.status,
            at(&body, "/token_type"),
            at(&c, "/cnf/jkt"),
            at(&c, "/authorization_details")
        );
        self.check(
            res.status == 200 && at(&c, "/cnf/jkt") == jkt.as_str() && at(&c, "/authorization_details") == &details,
            "a DPoP-bound token carrying exactly the consented payment",
        );
        if token.is_empty() {
            return Err(format!("no payment token: {} {}", res.status, res.text()));
        }

        println!(
            "\n9. The client initiates the payment through Envoy; the gateway checks the consent and forwards it to the bank's API"
        );
        let api = self.urls.dpop_api.replace("/api/accounts", "/payments/domestic");
        let mut res = Response::default();
        for attempt in 0..2 {
            let proof = self.proof(&dpop_key, "POST", &api, Some(&token))?;
            let auth = format!("DPoP {token}");
            res = request(
                &api,
                Some(&plain),
                "POST",
                &[("authorization", &auth), ("dpop", &proof)],
                Some(b"{}"),
            )?;
            self.remember_nonce(&res);
            if res.status == 401 && challenge_error(&res) == "use_dpop_nonce" && attempt == 0 {
                continue;
            }
            break;
        }
        let echo = res.json().unwrap_or_default();
        let forwarded: serde_json::Value = at(&echo, "/headers/x-authorization-details")
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        println!(
            "   · POST {api} → {}; the bank's API saw x-authorization-details {}",
            res.status, forwarded
        );
        self.check(
            res.status == 200 && forwarded == details,
            "accepted, and the bank's API receives the consented payment from the gateway",
        );

        println!(
            "\n10. The same client's other certificate has the PSD2 role PSP_AI only (account information): it cannot initiate"
        );
        let ai = self.account_info_only.clone();
        let res = request(
            &format!("{}/token", self.urls.issuer),
            Some(&ai),
            "POST",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(
                form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", MTLS_CLIENT),
                    ("scope", "payments"),
                ])
                .as_bytes(),
            ),
        )?;
        let error = res.json().ok().map(|j| at(&j, "/error").clone()).unwrap_or_default();
        println!(
            "   · POST /token for scope payments with that certificate → {} {error}",
            res.status
        );
        self.check(
            res.status == 400 && error == "invalid_scope",
            "the authorization server refuses a payments token (the scope needs PSP_PI)",
        );
        let res = request(
            &format!("{}/token", self.urls.issuer),
            Some(&ai),
            "POST",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(
                form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", MTLS_CLIENT),
                    ("scope", "accounts"),
                ])
                .as_bytes(),
            ),
        )?;
        let token = res
            .json()
            .ok()
            .and_then(|j| at(&j, "/access_token").as_str().map(str::to_owned))
            .ok_or_else(|| {
                format!(
                    "accounts token for the PSP_AI certificate: {} {}",
                    res.status,
                    res.text()
                )
            })?;
        let api = self.urls.mtls_api.replace("/api/accounts", "/payments/domestic");
        let before = self.denied_counters();
        let auth = format!("Bearer {token}");
        let res = request(&api, Some(&ai), "POST", &[("authorization", &auth)], Some(b"{}"))?;
        self.expect_rejection(
            &res,
            &before,
            ("insufficient_scope", "psd2_role_missing"),
            "with an accounts token, the gateway's payments route refuses a certificate without PSP_PI",
        );
        Ok(())
    }
}

/// A `private_key_jwt` client assertion for the DPoP client (audience: the issuer).
fn assertion(key: &P256Signer, kid: &str, issuer: &str) -> Result<String, String> {
    let t = now();
    let claims = serde_json::json!({
        "iss": DPOP_CLIENT, "sub": DPOP_CLIENT, "aud": issuer,
        "iat": t, "exp": t + 60, "jti": random_id()?,
    });
    sign_json(key, Some("JWT"), Some(kid), &claims).map_err(|e| e.to_string())
}

/// Runs the story against a running demo and prints it.
///
/// # Errors
/// A message if the demo cannot be driven at all (a step's unexpected answer is a failed step in
/// the [`Outcome`], not an error).
pub fn run(files: &DemoFiles, urls: &Urls) -> Result<Outcome, String> {
    let ca = files.ca();
    let mut story = Story {
        files,
        urls,
        plain: Client::tls(&ca, None)?,
        mtls: Client::tls(
            &ca,
            Some((
                &files.authz_file("mtls-client.pem"),
                &files.authz_file("mtls-client-key.pem"),
            )),
        )?,
        other: Client::tls(
            &ca,
            Some((
                &files.authz_file("other-client.pem"),
                &files.authz_file("other-client-key.pem"),
            )),
        )?,
        account_info_only: Client::tls(
            &ca,
            Some((
                &files.authz_file("mtls-client-ai.pem"),
                &files.authz_file("mtls-client-ai-key.pem"),
            )),
        )?,
        consent_page: String::new(),
        nonce: None,
        outcome: Outcome::default(),
    };
    println!("\n=== The story: sender-constrained tokens work, stolen tokens fail ===");
    let dpop = story.dpop_part();
    if let Err(e) = &dpop {
        println!("   ✘ the DPoP part stopped: {e}");
        story.outcome.failed.push(e.clone());
    }
    let mtls = story.mtls_part();
    if let Err(e) = &mtls {
        println!("   ✘ the mTLS part stopped: {e}");
        story.outcome.failed.push(e.clone());
    }
    let payment = story.payment_part();
    if let Err(e) = &payment {
        println!("   ✘ the payment part stopped: {e}");
        story.outcome.failed.push(e.clone());
    }
    let o = story.outcome;
    println!(
        "\n=== {}: {} checks as expected, {} not ===",
        if o.ok() {
            "The story ends well"
        } else {
            "The story went wrong"
        },
        o.passed,
        o.failed.len()
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_good_only_with_passed_checks_and_no_failure() {
        assert!(!Outcome::default().ok(), "a story that checked nothing did not pass");
        let mut o = Outcome {
            passed: 9,
            failed: Vec::new(),
        };
        assert!(o.ok());
        o.failed.push("step 3".into());
        assert!(!o.ok());
    }

    #[test]
    fn challenge_codes_and_claims_are_read() {
        let mut r = Response {
            status: 401,
            ..Response::default()
        };
        assert_eq!(challenge_error(&r), "");
        r.headers.push((
            "www-authenticate".into(),
            "DPoP error=\"invalid_token\", algs=\"ES256\"".into(),
        ));
        assert_eq!(challenge_error(&r), "invalid_token");
        let jwt = format!("e30.{}.sig", keybound_core::b64::encode(br#"{"cnf":{"jkt":"abc"}}"#));
        assert_eq!(at(&claims(&jwt), "/cnf/jkt"), "abc");
        assert!(claims("not a jwt").is_null());
    }
}
