// I/O glue of keybound-browser's login (only linked into builds with the login): WebCrypto
// signature verification of ID tokens with the issuer's public keys, and timers. No protocol logic
// lives here: keybound-core parses the ID token, picks the keys and checks the claims.

// The WebCrypto import and verify parameters of each JOSE algorithm keybound-core supports.
const ALGS = {
  ES256: [{ name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
  PS256: [{ name: "RSA-PSS", hash: "SHA-256" }, { name: "RSA-PSS", saltLength: 32 }],
  RS256: [{ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, { name: "RSASSA-PKCS1-v1_5" }],
  EdDSA: [{ name: "Ed25519" }, { name: "Ed25519" }],
};

// Whether `signature` (JOSE form) is a valid `alg` signature of the ASCII `data` under the public
// JWK `jwkJson`. Resolves to false for anything WebCrypto refuses (unknown algorithm, bad key).
export async function verifyJws(alg, jwkJson, data, signature) {
  const params = ALGS[alg];
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!params || !subtle) {
    return false;
  }
  try {
    const key = await subtle.importKey("jwk", JSON.parse(jwkJson), params[0], false, ["verify"]);
    return await subtle.verify(params[1], key, signature, new TextEncoder().encode(data));
  } catch {
    return false;
  }
}

// Resolves after `ms` milliseconds (setTimeout of the global scope).
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Calls `listener(event)`, reporting (not throwing) what the listener throws, as the DOM does
// for event listeners.
export function callListener(listener, event) {
  try {
    listener(event);
  } catch (e) {
    if (typeof globalThis.reportError === "function") {
      globalThis.reportError(e);
    } else {
      console.error(e);
    }
  }
}
