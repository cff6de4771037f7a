// The page side of the browser benchmark (run.mjs serves it and drives it with WebDriver):
// keybound-browser's `createProof` and the npm `dpop` package's `generateProof`, each with a
// non-extractable ECDSA P-256 WebCrypto key, making the same proof (POST, same URL, access token
// hash, nonce), in the same page; and `crypto.subtle.sign` alone, the floor under both.
// The page is cross-origin isolated (COOP/COEP headers from run.mjs), so performance.now() has
// fine resolution; each sample still times a batch of operations and divides.

import init, { DpopKey } from "/keybound/index.js";
import * as DPoP from "/dpop/index.js";

const METHOD = "POST";
const URL_ = "https://api.example.com/accounts/1234/transfers";
const TOKEN = "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl";
const NONCE = "AAAAAADkR8jr5npQozj-rK9-iuns-8uJ";

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function time(op, samples, batch) {
  for (let i = 0; i < batch; i++) await op(); // warm up
  const times = [];
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) await op();
    times.push((performance.now() - t0) / batch);
  }
  return median(times);
}

const b64u = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
const json = (part) => JSON.parse(new TextDecoder().decode(b64u(part)));

// A proof's contents and signature, checked with WebCrypto against the JWK in its header.
async function check(proof) {
  const [h, p, s] = proof.split(".");
  const header = json(h);
  const claims = json(p);
  const key = await crypto.subtle.importKey("jwk", header.jwk, { name: "ECDSA", namedCurve: "P-256" }, false, [
    "verify",
  ]);
  const valid = await crypto.subtle.verify(
    { name: "ECDSA", hash: "SHA-256" },
    key,
    b64u(s),
    new TextEncoder().encode(`${h}.${p}`),
  );
  const ok =
    valid &&
    header.typ === "dpop+jwt" &&
    header.alg === "ES256" &&
    claims.htm === METHOD &&
    claims.htu === URL_ &&
    claims.nonce === NONCE &&
    typeof claims.ath === "string" &&
    typeof claims.jti === "string";
  if (!ok) throw new Error(`bad proof: ${JSON.stringify({ valid, header, claims })}`);
  return proof.length;
}

let state;

// Loads both libraries and makes their keys; returns what it took.
window.setUp = async () => {
  const t0 = performance.now();
  await init({ module_or_path: "/keybound/keybound_browser_bg.wasm" });
  const initMs = performance.now() - t0;
  const keybound = await DpopKey.open({ clientId: "bench", storage: "memory" });
  const pair = await DPoP.generateKeyPair("ES256", { extractable: false });
  if (keybound.software || pair.privateKey.extractable) throw new Error("a key is not a non-extractable WebCrypto key");
  const signKey = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]))
    .privateKey;
  state = { keybound, pair, signKey };
  const kbProof = await keybound.createProof({ method: METHOD, url: URL_, accessToken: TOKEN, nonce: NONCE });
  const dpopProof = await DPoP.generateProof(pair, URL_, METHOD, NONCE, TOKEN);
  return {
    keybound_init_ms: initMs,
    keybound_proof_bytes: await check(kbProof),
    dpop_proof_bytes: await check(dpopProof),
    cross_origin_isolated: self.crossOriginIsolated,
    user_agent: navigator.userAgent,
  };
};

// One round: median ms per operation of each (which library goes first alternates with `index`).
window.round = async (samples, batch, index) => {
  const { keybound, pair, signKey } = state;
  const kbOp = () => keybound.createProof({ method: METHOD, url: URL_, accessToken: TOKEN, nonce: NONCE });
  const dpOp = () => DPoP.generateProof(pair, URL_, METHOD, NONCE, TOKEN);
  let kb, dp;
  if (index % 2 === 0) {
    kb = await time(kbOp, samples, batch);
    dp = await time(dpOp, samples, batch);
  } else {
    dp = await time(dpOp, samples, batch);
    kb = await time(kbOp, samples, batch);
  }
  const data = new Uint8Array(450).fill(0x41);
  const sign = await time(() => crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, signKey, data), samples, batch);
  return { keybound_ms: kb, dpop_ms: dp, subtle_sign_ms: sign };
};
