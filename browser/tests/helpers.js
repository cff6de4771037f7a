// Test helpers that need plain JavaScript: a second instance of the test module (a "reload"),
// hiding a global API the way browsers without it behave, and raw IndexedDB/WebCrypto access.

// The namespace of this test's wasm-bindgen module, initialised: what a package's index.js binds
// the DpopKey class to.
export async function testGlue() {
  const mod = await import(new URL("/wasm-bindgen-test.js", globalThis.location.href).href);
  // The runner may have loaded its module under another URL: then this is a second instance of
  // the same (stateless) functions; `init` does nothing when it is already initialised.
  await mod.default({ module_or_path: new URL("/wasm-bindgen-test_bg.wasm", globalThis.location.href) });
  return mod;
}

// Loads the test's own wasm-bindgen glue again under another URL, so the browser makes a new
// JavaScript module and a new wasm instance (fresh memory, no Rust state), like a page reload, but
// in the same origin and so with the same IndexedDB. Resolves to its namespace, initialised.
export async function newInstance() {
  const url = new URL("/wasm-bindgen-test.js?instance=" + Math.random(), location.href);
  const mod = await import(url.href);
  await mod.default({ module_or_path: new URL("/wasm-bindgen-test_bg.wasm", location.href) });
  return mod;
}

// Replaces `target[name]` by undefined; returns a function that restores it.
export function hide(target, name) {
  const own = Object.getOwnPropertyDescriptor(target, name);
  Object.defineProperty(target, name, { value: undefined, configurable: true, writable: true });
  return () => {
    if (own) {
      Object.defineProperty(target, name, own);
    } else {
      delete target[name];
    }
  };
}

export function cryptoObject() {
  return globalThis.crypto;
}

// The raw record IndexedDB holds for a client id (undefined if none).
export function storedRecord(clientId) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open("keybound-dpop");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const req = db.transaction("keys", "readonly").objectStore("keys").get(clientId);
      req.onsuccess = () => {
        db.close();
        resolve(req.result);
      };
      req.onerror = () => reject(req.error);
    };
  });
}

// Stores an arbitrary record (to test what happens with a corrupt one).
export function storeRecord(clientId, value) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open("keybound-dpop");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction("keys", "readwrite");
      tx.objectStore("keys").put(value, clientId);
      tx.oncomplete = () => {
        db.close();
        resolve();
      };
      tx.onabort = () => reject(tx.error);
    };
  });
}

// Tries to export a key in every format; resolves to the list of error names (one per format),
// or rejects if any export succeeded.
export async function tryExport(key) {
  const names = [];
  for (const format of ["jwk", "pkcs8", "raw", "spki"]) {
    try {
      await crypto.subtle.exportKey(format, key);
    } catch (e) {
      names.push(e.name);
      continue;
    }
    throw new Error("exportKey(" + format + ") succeeded");
  }
  return names;
}

export async function getJson(url) {
  const r = await fetch(url);
  return r.json();
}

export function fetchPlain(url) {
  return fetch(url);
}

// The JWK of an (exportable) public CryptoKey.
export function exportJwk(key) {
  return crypto.subtle.exportKey("jwk", key);
}
