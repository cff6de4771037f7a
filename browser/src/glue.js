// I/O glue for keybound-browser: IndexedDB requests as Promises, and the global scope's APIs
// (window or worker). No protocol logic lives here: the Rust side decides what to store and
// what to sign.

const STORE = "keys";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

// Opens (creating on first use) the key database. Rejects when IndexedDB is missing or refuses
// (private windows, blocked storage, a newer database version).
export function idbOpen(name) {
  const factory = globalThis.indexedDB;
  if (!factory) {
    return Promise.reject(new Error("IndexedDB is not available"));
  }
  return new Promise((resolve, reject) => {
    const req = factory.open(name, 1);
    req.onupgradeneeded = () => {
      if (!req.result.objectStoreNames.contains(STORE)) {
        req.result.createObjectStore(STORE);
      }
    };
    req.onsuccess = () => {
      // Let a future version of this module upgrade the database from another tab.
      req.result.onversionchange = () => req.result.close();
      resolve(req.result);
    };
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("IndexedDB open blocked"));
  });
}

// The record stored under `id`, or undefined.
export function idbGet(db, id) {
  return request(db.transaction(STORE, "readonly").objectStore(STORE).get(id));
}

// Creates the record under `id` if there is none, atomically (IndexedDB `add` fails with
// ConstraintError when the key exists, across every tab of the origin). Resolves to true once the
// transaction committed, false when another tab's record was there first.
export function idbAddIfAbsent(db, id, value) {
  return new Promise((resolve, reject) => {
    let tx;
    try {
      tx = db.transaction(STORE, "readwrite");
      const req = tx.objectStore(STORE).add(value, id);
      req.onerror = (ev) => {
        if (req.error && req.error.name === "ConstraintError") {
          ev.preventDefault();
          resolve(false);
        }
      };
    } catch (e) {
      reject(e);
      return;
    }
    tx.oncomplete = () => resolve(true);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
}

// Deletes the record under `id`; resolves once committed.
export function idbDelete(db, id) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).delete(id);
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
}

// `crypto.subtle` of the global scope, or undefined (insecure contexts, old engines).
export function subtleCrypto() {
  const c = globalThis.crypto;
  return c && c.subtle ? c.subtle : undefined;
}

// The global `fetch`.
export function globalFetch(request) {
  return globalThis.fetch(request);
}

// Date.now() in milliseconds.
export function nowMillis() {
  return Date.now();
}

// An HTTP date (the `Date` header) in milliseconds since the epoch, or NaN.
export function parseHttpDate(value) {
  return Date.parse(value);
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
