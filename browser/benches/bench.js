// The loops of the proof benchmark, in JavaScript as an app would call the module.
// Chromium coarsens performance.now() (100 µs without cross-origin isolation), so each sample
// times a batch of operations and divides.

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const PROOF = {
  method: "POST",
  url: "https://api.example.com/accounts/1234/transfers?page=2",
  accessToken: "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl",
  nonce: "AAAAAADkR8jr5npQozj-rK9-iuns-8uJ",
};

// Median milliseconds per `key.createProof(...)`.
export async function benchCreateProof(key, samples, batch) {
  for (let i = 0; i < batch; i++) await key.createProof(PROOF); // warm up
  const times = [];
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) await key.createProof(PROOF);
    times.push((performance.now() - t0) / batch);
  }
  return median(times);
}

// Median milliseconds per `crypto.subtle.sign` (ECDSA P-256, SHA-256, non-extractable key) over
// `length` bytes: the WebCrypto floor under createProof.
export async function benchSubtleSign(samples, batch, length) {
  const { privateKey } = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  const data = new Uint8Array(length).fill(0x41);
  const alg = { name: "ECDSA", hash: "SHA-256" };
  for (let i = 0; i < batch; i++) await crypto.subtle.sign(alg, privateKey, data);
  const times = [];
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) await crypto.subtle.sign(alg, privateKey, data);
    times.push((performance.now() - t0) / batch);
  }
  return median(times);
}

// The namespace of this benchmark's own wasm-bindgen module, to bind the DpopKey class to.
export async function benchGlue() {
  const mod = await import(new URL("/wasm-bindgen-test.js", globalThis.location.href).href);
  // The runner may have loaded its module under another URL: then this is a second instance of
  // the same (stateless) functions; `init` does nothing when it is already initialised.
  await mod.default({ module_or_path: new URL("/wasm-bindgen-test_bg.wasm", globalThis.location.href) });
  return mod;
}
