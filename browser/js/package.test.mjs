// The keybound-browser package as installed from its tarball (`cargo xtask test` runs
// `npm install <tgz>` here first), under node (`node --test`): both entry points resolve through
// the `exports` map to the `node` condition, `init()` loads each entry's own wasm without being
// given it, a proof made with a WebCrypto key verifies in jose, the dpop entry has no login, and
// the npm README's first example runs as written.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import test from "node:test";
import assert from "node:assert/strict";
import { jwtVerify, EmbeddedJWK, calculateJwkThumbprint } from "jose";

const full = await import("keybound-browser");
const dpop = await import("keybound-browser/dpop");

for (const [specifier, mod, file] of [
  ["keybound-browser", full, "keybound-browser/node.js"],
  ["keybound-browser/dpop", dpop, "keybound-browser/dpop/node.js"],
]) {
  test(`${specifier}: resolves to its node module; init() loads the package's own wasm; a proof verifies in jose`, async () => {
    assert.ok(import.meta.resolve(specifier).endsWith(`/node_modules/${file}`), import.meta.resolve(specifier));
    const exports = await mod.default();
    assert.ok(exports.memory instanceof WebAssembly.Memory, "init() resolves to the wasm's exports");
    await mod.default(); // a second init() is harmless
    const key = await mod.DpopKey.open({ clientId: `node-${specifier}` });
    assert.equal(key.storage, "memory"); // no IndexedDB in node: reported, not hidden
    assert.match(key.fallbackReason, /^indexeddb_unavailable/);
    const proof = await key.createProof({ method: "GET", url: "https://api.example.com/me", accessToken: "at" });
    const { payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: "dpop+jwt", algorithms: ["ES256"] });
    assert.equal(payload.htm, "GET");
    assert.equal(payload.htu, "https://api.example.com/me");
    assert.equal(await calculateJwkThumbprint(protectedHeader.jwk, "sha256"), key.thumbprint());
    assert.equal(typeof mod.isKeyboundError, "function");
    assert.equal(typeof mod.initSync, "function");
  });
}

test("keybound-browser/dpop's small allocator gives memory back: 3000 proofs do not grow the wasm memory", async () => {
  const { memory } = await dpop.default();
  const key = await dpop.DpopKey.open({ clientId: "node-memory", storage: "memory" });
  const proofs = async (n) => {
    for (let i = 0; i < n; i++) {
      // Varying sizes, as real requests have: the token, the URL and the nonce.
      await key.createProof({
        method: "POST",
        url: `https://api.example.com/${"p".repeat(i % 500)}`,
        accessToken: "t".repeat(1 + (i % 2000)),
        nonce: "n".repeat(1 + (i % 300)),
      });
    }
  };
  await proofs(500); // warm up: the heap reaches its working size
  const before = memory.buffer.byteLength;
  await proofs(3000);
  assert.equal(memory.buffer.byteLength, before, "the wasm memory grew");
});

test("keybound-browser has login; keybound-browser/dpop does not", () => {
  assert.equal(typeof full.OAuthClient, "function");
  assert.equal(dpop.OAuthClient, undefined);
  assert.deepEqual(
    Object.keys(dpop).filter((k) => !(k in full)),
    [],
    "everything the dpop entry exports, the full entry exports too",
  );
});

test("the repository's browser/README.md starts as the npm README does", async () => {
  const npm = await readFile(
    new URL("./README.md", import.meta.resolve("keybound-browser/package.json")),
    "utf8",
  );
  const repo = await readFile(new URL("../README.md", import.meta.url), "utf8");
  const opening = npm.slice(0, npm.indexOf("```", npm.indexOf("```js") + 5) + 3);
  assert.ok(repo.startsWith(opening), "browser/README.md starts with npm install and the same example");
});

test("the npm README's first example runs as written", async () => {
  const readme = await readFile(
    new URL("./README.md", import.meta.resolve("keybound-browser/package.json")),
    "utf8",
  );
  assert.ok(readme.startsWith("```sh\nnpm install keybound-browser\n```\n"), "the README starts with npm install");
  const example = readme.match(/```js\n([\s\S]*?)```/)?.[1];
  assert.ok(example, "a js example");
  assert.ok(example.trimEnd().split("\n").length <= 10, "at most ten lines");
  const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", example], {
    cwd: fileURLToPath(new URL(".", import.meta.url)),
  });
  assert.match(stdout, /^dpop_jkt: [A-Za-z0-9_-]{43}\nDPoP: ey[\w-]+\.ey[\w-]+\.[\w-]+\n$/);
});
