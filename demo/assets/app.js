// The keybound demo page: a public client with DPoP (RFC 9449), PAR (RFC 9126) and PKCE
// (RFC 7636), built on keybound-browser: its DpopKey (non-extractable WebCrypto key, proofs made
// by keybound-core compiled to wasm, DPoP-Nonce handling) and its OAuthClient (the whole login:
// PKCE, PAR with dpop_jkt, state and iss checks, code exchange and refresh with DPoP).
import init, { DpopKey, OAuthClient, isKeyboundError } from "/pkg/index.js";

const $ = (id) => document.getElementById(id);
let cfg;
let key;
let client;
let accessToken = null;

function log(message) {
  const li = document.createElement("li");
  li.textContent = message;
  $("log").appendChild(li);
}

function fail(message) {
  $("error").textContent = message;
  log(`error: ${message}`);
}

function describe(e) {
  if (isKeyboundError(e)) return `${e.code ?? "error"} (${e.reason}): ${e.message}`;
  return e && e.message ? e.message : String(e);
}

function decodePart(part) {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
}

function decodeJwt(jwt) {
  const [h, p] = jwt.split(".");
  return { header: decodePart(h), claims: decodePart(p) };
}

async function login() {
  $("login").disabled = true;
  log("startLogin: PKCE (S256), state, POST /par with dpop_jkt and a DPoP proof (a 400 use_dpop_nonce is retried once with the server's nonce)");
  const url = await client.startLogin();
  log("PAR: 201; redirecting to the authorization endpoint with the request_uri");
  location.assign(url);
}

function showToken(result) {
  accessToken = result.accessToken; // the module keeps it in memory; this page too
  const { claims } = decodeJwt(accessToken);
  $("token-type").textContent = result.tokenType;
  $("token-jkt").textContent = claims.cnf?.jkt ?? "(none)";
  const match = claims.cnf?.jkt === key.thumbprint();
  $("jkt-match").textContent = match ? "= our key's thumbprint ✔" : "≠ our key's thumbprint ✘";
  $("jkt-match").dataset.status = match ? "success" : "failure";
  $("token-claims").hidden = false;
  $("token-claims").textContent = JSON.stringify(claims, null, 2);
  $("login-status").textContent = `logged in as ${claims.sub}`;
  return claims;
}

async function callback() {
  const url = location.href;
  history.replaceState(null, "", "/");
  // completeLogin checks state and iss (RFC 9207) against the pending login (removed from
  // sessionStorage whatever happens), then exchanges the code with the PKCE verifier and a proof.
  const result = await client.completeLogin(url);
  const claims = showToken(result);
  log(`back from the authorization server: state and iss checked; POST /token with the code, the PKCE verifier and a DPoP proof: a DPoP token, cnf.jkt ${claims.cnf?.jkt}`);
  $("call").disabled = false;
  $("replay").disabled = false;
  $("refresh").disabled = !client.hasRefreshToken;
  await callApi();
}

async function refresh() {
  $("refresh-result").textContent = "refreshing…";
  delete $("refresh-result").dataset.status;
  const before = decodeJwt(accessToken).claims.jti;
  const result = await client.refresh();
  const claims = showToken(result);
  const fresh = claims.jti !== before;
  $("refresh-result").dataset.status = fresh ? "success" : "failure";
  $("refresh-result").textContent = fresh
    ? `Refreshed: a new access token (jti ${claims.jti}), still bound to our key`
    : "Refresh returned the same token";
  log(`POST /token grant_type=refresh_token with a DPoP proof: a new DPoP token, cnf.jkt ${claims.cnf?.jkt}`);
  await callApi();
}

async function send(dpopKey, nonce) {
  const proof = await dpopKey.createProof({ method: "GET", url: cfg.api, accessToken, nonce });
  const res = await fetch(cfg.api, {
    headers: { Authorization: `DPoP ${accessToken}`, DPoP: proof },
    cache: "no-store",
  });
  dpopKey.observe(res);
  return { proof, res, text: await res.text() };
}

function showProof(proof) {
  const { header, claims } = decodeJwt(proof);
  return JSON.stringify({ header, claims }, null, 2);
}

async function callApi() {
  $("api-result").textContent = "calling…";
  delete $("api-result").dataset.status;
  let r = await send(key);
  const challenge = r.res.headers.get("WWW-Authenticate") ?? "";
  if (r.res.status === 401 && challenge.includes("use_dpop_nonce")) {
    log("the gateway answered 401 use_dpop_nonce with a DPoP-Nonce: retrying once with it");
    r = await send(key);
  }
  $("proof").textContent = showProof(r.proof);
  let answer = r.text;
  try {
    // The echo API returns every header it received; show what the gateway added.
    const echo = JSON.parse(r.text);
    const forwarded = Object.fromEntries(
      Object.entries(echo.headers ?? {}).filter(([k]) => k.startsWith("x-keybound-")),
    );
    answer = JSON.stringify({
      message: echo.message,
      path: echo.path,
      "headers added by the gateway": forwarded,
      "DPoP header forwarded": "dpop" in (echo.headers ?? {}),
    }, null, 2);
  } catch { /* not JSON */ }
  $("api-answer").textContent = `${r.res.status}\n${answer}`;
  const ok = r.res.status === 200;
  $("api-result").dataset.status = ok ? "success" : "failure";
  $("api-result").dataset.calls = String(Number($("api-result").dataset.calls ?? 0) + 1);
  $("api-result").textContent = ok
    ? "Success: the gateway verified the token and the proof, and the API answered 200"
    : `Failure: ${r.res.status} ${r.res.headers.get("WWW-Authenticate") ?? ""}`;
  log(`GET ${cfg.api} with the token and a proof from our key: ${r.res.status}`);
}

async function replay() {
  $("replay-result").textContent = "sending…";
  delete $("replay-result").dataset.status;
  const thief = await DpopKey.open({ clientId: `${cfg.client_id}-attacker`, storage: "memory" });
  let r = await send(thief, key.nonceFor(cfg.api));
  const challenge = () => r.res.headers.get("WWW-Authenticate") ?? "";
  if (r.res.status === 401 && challenge().includes("use_dpop_nonce")) r = await send(thief);
  const rejected = r.res.status === 401;
  $("replay-result").dataset.status = rejected ? "rejected" : "accepted";
  $("replay-result").textContent = rejected
    ? `Rejected: 401, WWW-Authenticate: ${challenge()} (the proof's key ${thief.thumbprint()} is not the token's cnf.jkt)`
    : `Accepted?! ${r.res.status}`;
  $("replay-answer").textContent = `proof from the other key:\n${showProof(r.proof)}\n\nanswer: ${r.res.status} ${r.text}`;
  log(`the same token with a proof from another key: ${r.res.status} ${challenge()}`);
  await thief.wipe();
}

function guard(f) {
  return () => f().catch((e) => fail(describe(e)));
}

async function main() {
  cfg = await (await fetch("/config.json")).json();
  // Both http://127.0.0.1:PORT and http://localhost:PORT are registered: come back to this origin
  // (sessionStorage, which keeps the PKCE verifier and state, is per origin).
  cfg.redirect_uri = `${location.origin}/cb`;
  $("client-id").textContent = cfg.client_id;
  $("api-url").textContent = cfg.api;
  try {
    await init();
  } catch (e) {
    fail(`the browser package could not load (${describe(e)}): run \`cargo xtask demo\`, which builds it`);
    return;
  }
  key = await DpopKey.open({ clientId: cfg.client_id });
  $("key-jkt").textContent = key.thumbprint();
  $("key-storage").textContent = key.storage + (key.fallbackReason ? ` (${key.fallbackReason})` : "");
  // The page passes the authorization server's metadata (from config.json) instead of letting the
  // module fetch /.well-known/oauth-authorization-server; the module checks its issuer either way.
  client = await OAuthClient.create(key, {
    issuer: cfg.issuer,
    clientId: cfg.client_id,
    redirectUri: cfg.redirect_uri,
    scope: cfg.scope,
    metadata: {
      issuer: cfg.issuer,
      pushed_authorization_request_endpoint: cfg.par_endpoint,
      authorization_endpoint: cfg.authorization_endpoint,
      token_endpoint: cfg.token_endpoint,
      // ID tokens are validated (signature, iss, aud, azp, nonce, exp, iat) with the issuer's
      // keys, which keybound-authz serves with CORS.
      jwks_uri: `${cfg.issuer}/jwks`,
    },
  });
  $("login").disabled = false;
  $("login").addEventListener("click", guard(login));
  $("call").addEventListener("click", guard(callApi));
  $("refresh").addEventListener("click", guard(refresh));
  $("replay").addEventListener("click", guard(replay));
  if (client.isCallback(location.href)) await callback();
}

main().catch((e) => fail(describe(e)));
