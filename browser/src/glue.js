// I/O glue of keybound-browser's login (only linked into builds with the login): the global
// scope's APIs (window or worker). No protocol logic lives here. The DPoP key's I/O (WebCrypto,
// IndexedDB, fetch with the nonce retry) is in dpop.js.

// The global `fetch`.
export function globalFetch(request) {
  return globalThis.fetch(request);
}

// Date.now() in milliseconds.
export function nowMillis() {
  return Date.now();
}

// sessionStorage of the window (throws where there is none, e.g. in a worker, or when blocked).
function session() {
  const s = globalThis.sessionStorage;
  if (!s) {
    throw new Error("sessionStorage is not available");
  }
  return s;
}

// The string under `key` in sessionStorage, or null.
export function sessionGet(key) {
  return session().getItem(key);
}

// Stores a string under `key` in sessionStorage.
export function sessionSet(key, value) {
  session().setItem(key, value);
}

// Removes `key` from sessionStorage.
export function sessionRemove(key) {
  session().removeItem(key);
}
