// The types of dpop.js (the DpopKey class both entry points export).

/** Options of `DpopKey.open`. */
export interface OpenOptions {
  /** The OAuth client id: one key per (origin, client id). */
  clientId: string;
  /** "indexeddb" (default): persist the key; "memory": keep it in this page only. */
  storage?: "indexeddb" | "memory";
  /** When a software key may be used: "never" (default), "if-needed" (no crypto.subtle), "always". Weaker: its secret is in wasm memory. Only in builds with the `software-key` cargo feature (else "software_key_not_built"). */
  softwareKey?: "never" | "if-needed" | "always";
}

/** What a DPoP proof is for. */
export interface ProofOptions {
  /** The HTTP method (`htm`). */
  method: string;
  /** The absolute http(s) URL of the request (`htu`; query and fragment are dropped). */
  url: string;
  /** The access token sent with the proof: adds `ath`. */
  accessToken?: string;
  /** A server nonce; defaults to the nonce last received from the URL's origin. */
  nonce?: string;
}

/** The RFC error codes keybound-browser puts on its errors: its own, and any OAuth `error` a server answered with (RFC 6749 §4.1.2.1, §5.2). */
export type KeyboundErrorCode =
  | "invalid_request" | "invalid_token" | "insufficient_scope" | "invalid_dpop_proof"
  | "use_dpop_nonce" | "invalid_grant" | "access_denied" | "invalid_client" | "unauthorized_client"
  | "invalid_scope" | "server_error" | "temporarily_unavailable" | (string & {});

/** Every error keybound-browser throws. */
export interface KeyboundError extends Error {
  name: "KeyboundError";
  /** The RFC error code, or null when the environment failed (no WebCrypto, storage). */
  code: KeyboundErrorCode | null;
  /** A stable snake_case reason, e.g. "webcrypto_unavailable", "key_wiped", "proof_invalid_htu". */
  reason: string;
}

/** Whether `value` is an error thrown by keybound-browser. */
export function isKeyboundError(value: unknown): value is KeyboundError;

/**
 * A DPoP key for one OAuth client in this origin (a non-extractable WebCrypto ECDSA P-256 key,
 * kept in IndexedDB), with what it learned from servers (their nonces, the clock offset).
 */
export class DpopKey {
  private constructor();
  /**
   * Opens the DPoP key of a client: the one stored in IndexedDB for this origin and client id, or
   * a new one (stored if the browser can). Check `storage` and `fallbackReason` to know whether it
   * persists. Rejects with a `KeyboundError`: `invalid_request` for bad options;
   * `webcrypto_unavailable` (code `null`) without `crypto.subtle` unless `softwareKey` allows a
   * software key; `software_key_not_built` (code `null`) when the build has none.
   */
  static open(options: OpenOptions): Promise<DpopKey>;
  /** The client id this key belongs to. */
  readonly clientId: string;
  /** Where the key is kept: "indexeddb" (survives reloads) or "memory" (this page only). */
  readonly storage: "indexeddb" | "memory";
  /** Why the key is not where it was asked to be (e.g. `indexeddb_unavailable (...)`, `key_storage_unavailable (...)`, `stored_key_invalid`, `webcrypto_unavailable`), or undefined. */
  readonly fallbackReason: string | undefined;
  /** Whether this is a software key (its secret in wasm memory), not a WebCrypto key. */
  readonly software: boolean;
  /** The RFC 7638 thumbprint of the public key: the `dpop_jkt` of PAR and the `cnf.jkt` of bound tokens. */
  thumbprint(): string;
  /** The public key as a JWK (JSON text), as placed in proofs. */
  publicJwk(): string;
  /** The clock offset in seconds (server time minus local time) added to `iat`; learned from `Date` headers. */
  clockOffset: number;
  /** The nonce last received from the origin of `url`, if any. */
  nonceFor(url: string): string | undefined;
  /** Learns from a response fetched without `fetch`: its origin's `DPoP-Nonce`, and the clock offset from its `Date`. */
  observe(response: Response): void;
  /**
   * Creates a DPoP proof (compact JWS) for a request. Rejects with a `KeyboundError`:
   * `invalid_request` for a bad method or options, `invalid_dpop_proof` (reason
   * `proof_invalid_htu`) for a URL that is not absolute http(s), `key_wiped` after `wipe()`.
   */
  createProof(options: ProofOptions): Promise<string>;
  /**
   * `fetch` with DPoP: sends `DPoP` (and `Authorization: DPoP <accessToken>` when a token is
   * given), learns the origin's `DPoP-Nonce` and the clock offset from the response, and when the
   * server answers `use_dpop_nonce` (401 with a DPoP challenge, or 400 with an OAuth error body)
   * retries once with the new nonce. Resolves to the (last) `Response`, whatever its status. The
   * body must be re-readable for the retry (not a stream).
   */
  fetch(url: string, init?: RequestInit, accessToken?: string): Promise<Response>;
  /**
   * Forgets the key (logout): deletes this client id's record from IndexedDB, and the key from
   * this object, which can no longer sign. Rejects with `storage_failed` (code `null`) if
   * IndexedDB refuses the deletion; the key is forgotten by this object anyway.
   */
  wipe(): Promise<void>;
}
