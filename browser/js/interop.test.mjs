// Proofs made by the keybound-browser package (installed from its tarball, or a build directory),
// verified by an independent JOSE implementation (jose). Runs under node (`node --test`), where
// WebCrypto exists and IndexedDB does not, so this also shows the memory fallback being reported.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import { createHash } from "node:crypto";
import test from "node:test";
import assert from "node:assert/strict";
import { jwtVerify, EmbeddedJWK, calculateJwkThumbprint, decodeProtectedHeader, decodeJwt } from "jose";
// The package to check: keybound-browser as installed from the tarball (`cargo xtask test`
// installs it here), whose init() loads its own wasm under node; or the build in the directory
// KEYBOUND_PKG (the xtask also checks a build with the `software-key` feature,
// KEYBOUND_SOFTWARE_KEY=1), given its wasm explicitly.
const withSoftwareKey = process.env.KEYBOUND_SOFTWARE_KEY === "1";
let init, DpopKey, isKeyboundError;
if (process.env.KEYBOUND_PKG) {
  const pkg = pathToFileURL(process.env.KEYBOUND_PKG.replace(/\/?$/, "/"));
  ({ default: init, DpopKey, isKeyboundError } = await import(new URL("index.js", pkg).href));
  await init({ module_or_path: await readFile(new URL("keybound_browser_bg.wasm", pkg)) });
} else {
  ({ default: init, DpopKey, isKeyboundError } = await import("keybound-browser"));
  await init();
}

const sha256url = (s) => createHash("sha256").update(s).digest("base64url");

async function checkProof(key, { software }) {
  const before = Math.floor(Date.now() / 1000);
  const proof = await key.createProof({
    method: "POST",
    url: "https://as.example.com/token?code=abc#frag",
    accessToken: "access-token-1",
    nonce: "nonce-1",
  });
  const { payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, {
    typ: "dpop+jwt",
    algorithms: ["ES256"],
  });
  assert.equal(protectedHeader.alg, "ES256");
  assert.equal(protectedHeader.jwk.kty, "EC");
  assert.equal(protectedHeader.jwk.crv, "P-256");
  assert.equal(protectedHeader.jwk.d, undefined);
  assert.equal(payload.htm, "POST");
  assert.equal(payload.htu, "https://as.example.com/token");
  assert.equal(payload.nonce, "nonce-1");
  assert.equal(payload.ath, sha256url("access-token-1"));
  assert.ok(Buffer.from(payload.jti, "base64url").length >= 16);
  assert.ok(payload.iat >= before && payload.iat <= Math.floor(Date.now() / 1000) + 1);
  assert.equal(await calculateJwkThumbprint(protectedHeader.jwk, "sha256"), key.thumbprint());
  assert.equal(key.software, software);

  // A tampered proof does not verify: jose really checks the signature.
  const [h, , s] = proof.split(".");
  const forged = Buffer.from(JSON.stringify({ ...decodeJwt(proof), htm: "GET" })).toString("base64url");
  await assert.rejects(jwtVerify(`${h}.${forged}.${s}`, EmbeddedJWK, { typ: "dpop+jwt" }));
  assert.deepEqual(decodeProtectedHeader(proof).typ, "dpop+jwt");
}

test("WebCrypto proofs verify in jose; without IndexedDB the key is memory-only and says so", async () => {
  const key = await DpopKey.open({ clientId: "node-client" });
  assert.equal(key.storage, "memory");
  assert.match(key.fallbackReason, /^indexeddb_unavailable/);
  await checkProof(key, { software: false });
});

test("software-key proofs verify in jose (software-key builds; refused in others)", async () => {
  if (withSoftwareKey) {
    const key = await DpopKey.open({ clientId: "node-client", softwareKey: "always" });
    assert.equal(key.storage, "memory");
    await checkProof(key, { software: true });
  } else {
    await assert.rejects(
      DpopKey.open({ clientId: "node-client", softwareKey: "always" }),
      (e) => isKeyboundError(e) && e.code === null && e.reason === "software_key_not_built",
    );
  }
});

test("errors are KeyboundErrors with the RFC code", async () => {
  const key = await DpopKey.open({ clientId: "node-client", storage: "memory" });
  await assert.rejects(key.createProof({ method: "GET", url: "ftp://x.example/" }), (e) => {
    assert.ok(isKeyboundError(e));
    assert.ok(e instanceof Error);
    assert.equal(e.code, "invalid_dpop_proof");
    return true;
  });
  await assert.rejects(DpopKey.open({ clientId: "" }), (e) => isKeyboundError(e) && e.code === "invalid_request");
  assert.equal(isKeyboundError(new Error("x")), false);
});
