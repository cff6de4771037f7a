// keybound-browser's `DpopKey`, shared by both entry points (`keybound-browser` and
// `keybound-browser/dpop`) and by the Rust login (which calls a key's `fetch`).
//
// This module does the I/O: WebCrypto (a non-extractable ECDSA P-256 key that can only sign),
// IndexedDB (the key kept per origin and client id), `fetch`, and the per-origin nonce cache.
// The protocol is decided by the wasm (keybound-core, through keybound-browser's exports):
// what goes in a proof and its serialisation (`signingInput`, `finish`), the RFC 7638 thumbprint
// and public JWK, the `iat` correction from servers' `Date` headers (`clockOffset`), and whether a
// response asks for a nonce retry (`asksForNonce`). See browser/src/lib.rs for the API docs.

const DB_NAME = "keybound-dpop";
const STORE = "keys";
const MAX_CLIENT_ID_BYTES = 256;
const JTI_BYTES = 16;
const EC_P256 = { name: "ECDSA", namedCurve: "P-256" };
const ES256 = { name: "ECDSA", hash: "SHA-256" };

// ---------- errors ----------

// A `KeyboundError`: an Error with the RFC error code (`code`, or null for an environment failure)
// and a stable snake_case `reason`. The Rust side makes its errors with this function too.
export function keyboundError(code, reason, message) {
  const e = new Error(message);
  e.name = "KeyboundError";
  e.code = code ?? null;
  e.reason = reason;
  return e;
}

// Whether `value` is an error thrown by keybound-browser.
export function isKeyboundError(value) {
  return value instanceof Error && value.name === "KeyboundError";
}

const badArgument = (message) => keyboundError("invalid_request", "invalid_argument", message);
const environment = (reason, message) => keyboundError(null, reason, message);
// Adds what JavaScript said to an error's message.
function withJs(error, e) {
  const detail = e instanceof Error ? e.message : typeof e === "string" ? e : undefined;
  if (detail !== undefined) error.message += `: ${detail}`;
  return error;
}
const cryptoError = (e) => withJs(environment("webcrypto_failed", "WebCrypto failed"), e);
// "what (Name: message)", for a fallback reason.
const describe = (what, e) =>
  `${what} (${e && typeof e === "object" && "name" in e ? `${e.name}: ${e.message}` : "unknown error"})`;

// ---------- options ----------

function optionsObject(value, what) {
  if (value === null || typeof value !== "object") throw badArgument(`${what} must be an object`);
  return value;
}
function optionalString(target, key) {
  const value = target[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw badArgument(`\`${key}\` must be a string`);
  return value;
}
function requiredString(target, key) {
  const value = optionalString(target, key);
  if (value === undefined) throw badArgument(`\`${key}\` is required`);
  return value;
}

// ---------- the global scope ----------

function subtleCrypto() {
  const c = globalThis.crypto;
  return c && c.subtle ? c.subtle : undefined;
}
function originOf(url) {
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}

// ---------- IndexedDB ----------

const request = (req) =>
  new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });

// (idbOpen, idbGet and idbAddIfAbsent are exported for the crate's tests.)

// Opens (creating on first use) the key database. Rejects when IndexedDB is missing or refuses
// (private windows, blocked storage, a newer database version).
export function idbOpen() {
  const factory = globalThis.indexedDB;
  if (!factory) return Promise.reject(new Error("IndexedDB is not available"));
  return new Promise((resolve, reject) => {
    const req = factory.open(DB_NAME, 1);
    req.onupgradeneeded = () => {
      if (!req.result.objectStoreNames.contains(STORE)) req.result.createObjectStore(STORE);
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

export const idbGet = (db, id) => request(db.transaction(STORE, "readonly").objectStore(STORE).get(id));

// Creates the record under `id` if there is none, atomically (`add` fails with ConstraintError
// when the key exists, across every tab of the origin). Resolves to true once the transaction
// committed, false when another tab's record was there first.
export function idbAddIfAbsent(db, id, value) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, "readwrite");
    const req = tx.objectStore(STORE).add(value, id);
    req.onerror = (ev) => {
      if (req.error && req.error.name === "ConstraintError") {
        ev.preventDefault();
        resolve(false);
      }
    };
    tx.oncomplete = () => resolve(true);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
}

function idbDelete(db, id) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).delete(id);
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
}

// ---------- WebCrypto keys ----------

// The uncompressed point (0x04 || x || y) of a WebCrypto P-256 public key.
async function exportPublic(subtle, publicKey) {
  try {
    return new Uint8Array(await subtle.exportKey("raw", publicKey));
  } catch (e) {
    throw cryptoError(e);
  }
}

// A new key pair whose private key is non-extractable and may only sign.
async function generate(subtle) {
  let pair;
  try {
    pair = await subtle.generateKey(EC_P256, false, ["sign"]);
  } catch (e) {
    throw cryptoError(e);
  }
  return { privateKey: pair.privateKey, publicKey: pair.publicKey, point: await exportPublic(subtle, pair.publicKey) };
}

// A stored record back as a key, if it is a usable one: a non-extractable ECDSA P-256 private key
// that can sign, and an ECDSA P-256 public key; else null.
async function fromRecord(subtle, value) {
  const { privateKey, publicKey } = value && typeof value === "object" ? value : {};
  const isKey = (k) => typeof CryptoKey === "function" && k instanceof CryptoKey;
  const isP256 = (k) => k.algorithm && k.algorithm.name === "ECDSA" && k.algorithm.namedCurve === "P-256";
  if (
    !isKey(privateKey) ||
    !isKey(publicKey) ||
    privateKey.extractable ||
    privateKey.type !== "private" ||
    !privateKey.usages.includes("sign") ||
    !isP256(privateKey) ||
    publicKey.type !== "public" ||
    !isP256(publicKey)
  ) {
    return null;
  }
  const point = await exportPublic(subtle, publicKey).catch(() => null);
  return point && { privateKey, publicKey, point };
}

// The key of `clientId`: as stored in IndexedDB, else created there, else in memory (with the
// reason). Two tabs creating at once: only one `add` commits, the other uses the winner's key.
async function openWebCrypto(subtle, clientId, storage) {
  const memory = (key, fallbackReason, db) => ({ ...key, storage: "memory", fallbackReason, db });
  const stored = (key, db) => ({ ...key, storage: "indexeddb", fallbackReason: undefined, db });
  if (storage === "memory") return memory(await generate(subtle));
  let db;
  try {
    db = await idbOpen();
  } catch (e) {
    return memory(await generate(subtle), describe("indexeddb_unavailable", e));
  }
  let existing;
  try {
    existing = await idbGet(db, clientId);
  } catch (e) {
    return memory(await generate(subtle), describe("indexeddb_unavailable", e));
  }
  if (existing !== undefined) {
    const key = await fromRecord(subtle, existing);
    // An unusable record is left as it is, but `wipe()` deletes it (so the next open starts afresh).
    return key ? stored(key, db) : memory(await generate(subtle), "stored_key_invalid", db);
  }
  const key = await generate(subtle);
  let added;
  try {
    added = await idbAddIfAbsent(db, clientId, { privateKey: key.privateKey, publicKey: key.publicKey });
  } catch (e) {
    return memory(key, describe("key_storage_unavailable", e));
  }
  if (added) return stored(key, db);
  // Another tab stored its key first: use that one.
  const winner = await idbGet(db, clientId).then((v) => fromRecord(subtle, v), () => null);
  return winner ? stored(winner, db) : memory(key, "stored_key_invalid", db);
}

// ---------- DpopKey ----------

// The `DpopKey` class bound to `wasm`, the namespace of keybound-browser's wasm-bindgen module
// (its functions are looked up when called, so the class may be made before `init()`).
export function dpopKeyClass(wasm) {
  return class DpopKey {
    #clientId;
    #sign;
    #software;
    #point;
    #jkt;
    #storage;
    #fallbackReason;
    #db;
    #nonces = new Map();
    #clockOffset = 0;

    constructor(clientId, key, sign, software) {
      if (typeof sign !== "function") throw new TypeError("use DpopKey.open()");
      this.#clientId = clientId;
      this.#sign = sign;
      this.#software = software;
      this.#point = key.point;
      this.#jkt = wasm.thumbprint(key.point);
      this.#storage = key.storage;
      this.#fallbackReason = key.fallbackReason;
      this.#db = key.db;
    }

    static async open(options) {
      const o = optionsObject(options, "options");
      const clientId = requiredString(o, "clientId");
      const bytes = new TextEncoder().encode(clientId).length;
      if (bytes === 0 || bytes > MAX_CLIENT_ID_BYTES) throw badArgument("clientId must be 1 to 256 bytes");
      const storage = optionalString(o, "storage") ?? "indexeddb";
      if (storage !== "indexeddb" && storage !== "memory") {
        throw badArgument('storage must be "indexeddb" or "memory"');
      }
      const softwareKey = optionalString(o, "softwareKey") ?? "never";
      if (!["never", "if-needed", "always"].includes(softwareKey)) {
        throw badArgument('softwareKey must be "never", "if-needed" or "always"');
      }
      const subtle = subtleCrypto();
      if (subtle && softwareKey !== "always") {
        const key = await openWebCrypto(subtle, clientId, storage);
        const sign = async (data) => {
          const s = subtleCrypto();
          if (!s) throw environment("webcrypto_unavailable", "crypto.subtle is not available");
          let sig;
          try {
            sig = new Uint8Array(await s.sign(ES256, key.privateKey, data));
          } catch (e) {
            throw cryptoError(e);
          }
          if (sig.length !== 64) throw environment("webcrypto_failed", "ECDSA signature is not 64 bytes");
          return sig;
        };
        return new DpopKey(clientId, key, sign, false);
      }
      if (softwareKey === "never") {
        throw environment(
          "webcrypto_unavailable",
          'crypto.subtle is not available (insecure context?); pass softwareKey: "if-needed" to accept a weaker software key',
        );
      }
      // A software key (its secret in wasm memory): only in builds with the `software-key` feature.
      if (typeof wasm.softwareKey !== "function") {
        throw environment(
          "software_key_not_built",
          "this build of keybound-browser has no software key (cargo feature `software-key`)",
        );
      }
      const soft = wasm.softwareKey();
      const key = { point: soft.point, storage: "memory", fallbackReason: subtle ? undefined : "webcrypto_unavailable" };
      return new DpopKey(clientId, key, async (data) => soft.sign(data), true);
    }

    get clientId() {
      return this.#clientId;
    }
    get storage() {
      return this.#storage;
    }
    get fallbackReason() {
      return this.#fallbackReason;
    }
    get software() {
      return this.#software && this.#sign !== null;
    }
    thumbprint() {
      return this.#jkt;
    }
    publicJwk() {
      return wasm.publicJwk(this.#point);
    }
    get clockOffset() {
      return this.#clockOffset;
    }
    set clockOffset(seconds) {
      if (typeof seconds === "number" && Number.isFinite(seconds)) this.#clockOffset = seconds;
    }
    nonceFor(url) {
      const origin = originOf(url);
      return origin === undefined ? undefined : this.#nonces.get(origin);
    }
    observe(response) {
      this.#observe(response, undefined);
    }

    async createProof(options) {
      const o = optionsObject(options, "proof options");
      const method = requiredString(o, "method");
      const url = requiredString(o, "url");
      const accessToken = optionalString(o, "accessToken");
      let nonce = optionalString(o, "nonce");
      if (nonce === undefined) {
        const origin = originOf(url);
        if (origin !== undefined) nonce = this.#nonces.get(origin);
      }
      return this.#proof(method, url, accessToken, nonce);
    }

    async fetch(url, init, accessToken) {
      let retried = false;
      for (;;) {
        let req;
        try {
          req = new Request(url, init ?? undefined);
        } catch (e) {
          throw withJs(badArgument("fetch: bad request"), e);
        }
        const origin = originOf(req.url);
        const nonce = this.#nonces.get(origin);
        const proof = await this.#proof(req.method, req.url, accessToken ?? undefined, nonce);
        try {
          req.headers.set("DPoP", proof);
          if (accessToken != null) req.headers.set("Authorization", `DPoP ${accessToken}`);
        } catch (e) {
          throw withJs(badArgument("fetch: headers"), e);
        }
        const response = await globalThis.fetch(req);
        // A retry helps only with a nonce other than the one this request carried (another
        // request may already have cached the new one).
        const learned = this.#observe(response, origin);
        if (retried || learned === undefined || learned === nonce || !(await asksForNonce(wasm, response))) {
          return response;
        }
        retried = true;
      }
    }

    async wipe() {
      this.#sign = null;
      this.#nonces.clear();
      if (this.#db) {
        try {
          await idbDelete(this.#db, this.#clientId);
        } catch (e) {
          throw withJs(environment("storage_failed", "could not delete the key"), e);
        }
      }
    }

    // Makes and signs a proof: the wasm checks the arguments and builds the signing input.
    async #proof(method, url, accessToken, nonce) {
      const c = globalThis.crypto;
      if (!c || typeof c.getRandomValues !== "function") {
        throw environment("random_unavailable", "crypto.getRandomValues is missing");
      }
      const jti = c.getRandomValues(new Uint8Array(JTI_BYTES));
      const input = wasm.signingInput(this.#point, method, url, Date.now(), this.#clockOffset, jti, accessToken, nonce);
      const sign = this.#sign;
      if (!sign) throw environment("key_wiped", "this key was wiped");
      return wasm.finish(input, await sign(new TextEncoder().encode(input)));
    }

    // Learns the clock offset from `Date` and the origin's nonce from `DPoP-Nonce`; returns the
    // nonce the response carried.
    #observe(response, requestOrigin) {
      const date = response.headers.get("Date");
      if (date !== null) {
        const offset = wasm.clockOffset(Date.parse(date), Date.now());
        if (offset !== undefined) this.#clockOffset = offset;
      }
      const nonce = (response.headers.get("DPoP-Nonce") ?? "").trim();
      const origin = originOf(response.url) ?? requestOrigin;
      if (!nonce || origin === undefined) return undefined;
      this.#nonces.set(origin, nonce);
      return nonce;
    }
  };
}

// Whether a response asks for a nonce retry: the wasm decides from the status, the
// `WWW-Authenticate` challenge and, for a 400, the `error` of the JSON body.
async function asksForNonce(wasm, response) {
  let bodyError;
  if (response.status === 400) {
    try {
      const body = JSON.parse(await response.clone().text());
      if (body && typeof body === "object" && typeof body.error === "string") bodyError = body.error;
    } catch {
      // not JSON: no error code
    }
  }
  return wasm.asksForNonce(response.status, response.headers.get("WWW-Authenticate") ?? undefined, bodyError);
}
