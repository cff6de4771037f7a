//! The DPoP key: a non-extractable WebCrypto ECDSA P-256 key, kept in IndexedDB per (origin,
//! client id), or in memory when the browser cannot store it; or, only on request, a software key.
//!
//! ## Storage and tabs
//! The database is `keybound-dpop` (IndexedDB databases belong to one origin, so the origin is
//! implicit), store `keys`, one record per client id: `{ privateKey, publicKey }`, two
//! CryptoKeys. The private key is non-extractable and can only sign; the public JWK is exported by
//! WebCrypto from `publicKey` whenever the key is opened. A key is created with IndexedDB's `add`,
//! which fails when the record exists: when two tabs open the same client id at once, both may
//! generate a key, only one `add` commits, and the other tab reads and uses the winner's key. So
//! every tab of an origin ends up with the same key and thumbprint.
//!
//! ## Fallbacks
//! When IndexedDB is missing or refuses (private windows, blocked storage), or cannot store a
//! CryptoKey (`DataCloneError`), the key is a WebCrypto key held in memory only: it is lost on
//! reload, and [`Storage::Memory`] with a `fallbackReason` tells the app. Without
//! `crypto.subtle` (insecure contexts) there is no key unless the app opted into a software key
//! and the module was built with the `software-key` cargo feature.

use keybound_core::b64;
use keybound_core::jwk::PublicKey;
use wasm_bindgen::{JsCast, JsValue};

use crate::error::BrowserError;
use crate::js;

/// The IndexedDB database holding the keys.
pub const DB_NAME: &str = "keybound-dpop";

/// Where a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Persisted in IndexedDB: a reload gets the same key.
    IndexedDb,
    /// In this page's memory only.
    Memory,
}

impl Storage {
    /// The name the JavaScript API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::IndexedDb => "indexeddb",
            Storage::Memory => "memory",
        }
    }
}

/// When a software key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftwareKey {
    /// Never: without WebCrypto, opening fails.
    Never,
    /// Only when `crypto.subtle` is missing.
    IfNeeded,
    /// Always (the private key is then in wasm memory: weaker).
    Always,
}

impl SoftwareKey {
    /// Parses the option value.
    ///
    /// # Errors
    /// `invalid_request` for an unknown value.
    pub fn parse(s: Option<&str>) -> Result<Self, BrowserError> {
        match s {
            None | Some("never") => Ok(SoftwareKey::Never),
            Some("if-needed") => Ok(SoftwareKey::IfNeeded),
            Some("always") => Ok(SoftwareKey::Always),
            Some(_) => Err(BrowserError::bad_argument(
                "softwareKey must be \"never\", \"if-needed\" or \"always\"",
            )),
        }
    }
}

/// What signs.
#[derive(Clone)]
pub enum Signing {
    /// A non-extractable WebCrypto private key, with its public key.
    WebCrypto(WebCryptoKey),
    /// A software key (opt-in; with the `software-key` feature only).
    #[cfg(feature = "software-key")]
    Software(Box<keybound_core::jws::P256Signer>),
}

impl Signing {
    /// Whether this is a software key.
    pub fn is_software(&self) -> bool {
        !matches!(self, Signing::WebCrypto(_))
    }
}

/// A key ready to sign, with where it lives.
pub struct LoadedKey {
    /// The signing half.
    pub signing: Signing,
    /// The public key.
    pub public: PublicKey,
    /// Where it is kept.
    pub storage: Storage,
    /// Why it is not in IndexedDB although that was asked for.
    pub fallback_reason: Option<String>,
    /// The open key database, when the key is stored there.
    pub db: Option<JsValue>,
}

fn ecdsa_gen_params() -> js_sys::Object {
    js::object(&[
        ("name", &JsValue::from_str("ECDSA")),
        ("namedCurve", &JsValue::from_str("P-256")),
    ])
}

fn ecdsa_sign_params() -> js_sys::Object {
    js::object(&[
        ("name", &JsValue::from_str("ECDSA")),
        ("hash", &JsValue::from_str("SHA-256")),
    ])
}

fn crypto_error(reason: &'static str, e: &JsValue) -> BrowserError {
    BrowserError::environment(reason, "WebCrypto failed").with_js(e)
}

/// A WebCrypto key: the non-extractable private key and its public key.
#[derive(Clone)]
pub struct WebCryptoKey {
    /// The private key (non-extractable, `sign` only).
    pub private: web_sys::CryptoKey,
    /// The public key (WebCrypto public keys are always exportable).
    pub public: web_sys::CryptoKey,
}

/// A new WebCrypto P-256 key pair whose private key is non-extractable and may only sign, with its
/// public key as keybound-core sees it.
///
/// # Errors
/// `webcrypto_failed` if WebCrypto refuses.
pub async fn generate(subtle: &web_sys::SubtleCrypto) -> Result<(WebCryptoKey, PublicKey), BrowserError> {
    let usages = js_sys::Array::of1(&JsValue::from_str("sign"));
    let pair = js::call(subtle.generate_key_with_object(&ecdsa_gen_params(), false, &usages))
        .await
        .map_err(|e| crypto_error("webcrypto_failed", &e))?;
    let private: web_sys::CryptoKey = js::get(&pair, "privateKey")
        .dyn_into()
        .map_err(|_| BrowserError::environment("webcrypto_failed", "generateKey gave no private key"))?;
    let public: web_sys::CryptoKey = js::get(&pair, "publicKey")
        .dyn_into()
        .map_err(|_| BrowserError::environment("webcrypto_failed", "generateKey gave no public key"))?;
    let jwk = export_public(subtle, &public)
        .await?
        .ok_or_else(|| BrowserError::environment("webcrypto_failed", "exported public key is not P-256"))?;
    Ok((WebCryptoKey { private, public }, jwk))
}

/// The public key of a WebCrypto key pair, exported as a JWK by WebCrypto itself; `None` if it is
/// not a P-256 key with 32-byte coordinates.
///
/// The point is not checked to be on the curve here: WebCrypto made it (checking would link a
/// P-256 implementation into the wasm for nothing).
///
/// # Errors
/// `webcrypto_failed` if WebCrypto refuses to export it.
async fn export_public(
    subtle: &web_sys::SubtleCrypto,
    public: &web_sys::CryptoKey,
) -> Result<Option<PublicKey>, BrowserError> {
    let jwk = js::call(subtle.export_key("jwk", public))
        .await
        .map_err(|e| crypto_error("webcrypto_failed", &e))?;
    if js::get(&jwk, "kty").as_string().as_deref() != Some("EC")
        || js::get(&jwk, "crv").as_string().as_deref() != Some("P-256")
    {
        return Ok(None);
    }
    let coordinate =
        |name| -> Option<[u8; 32]> { b64::decode(&js::get(&jwk, name).as_string()?).ok()?.try_into().ok() };
    Ok(coordinate("x")
        .zip(coordinate("y"))
        .map(|(x, y)| PublicKey::P256 { x, y }))
}

/// With the `software-key` feature: a software P-256 key from `crypto.getRandomValues` (through
/// getrandom); the reason is reported as the key's `fallbackReason`.
///
/// # Errors
/// `random_unavailable` if there is no random source.
#[cfg(feature = "software-key")]
pub fn software_key(reason: Option<String>) -> Result<LoadedKey, BrowserError> {
    use keybound_core::jws::{P256Signer, Signer as _};
    // A random 32-byte string is a valid scalar except with probability ~2^-32: retry a few times.
    for _ in 0..8 {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|_| BrowserError::environment("random_unavailable", "crypto.getRandomValues is missing"))?;
        if let Ok(signer) = P256Signer::from_bytes(&secret) {
            let public = signer.public_key().clone();
            return Ok(LoadedKey {
                signing: Signing::Software(Box::new(signer)),
                public,
                storage: Storage::Memory,
                fallback_reason: reason,
                db: None,
            });
        }
    }
    Err(BrowserError::environment("random_unavailable", "no valid P-256 scalar"))
}

/// Without the `software-key` feature: always `software_key_not_built` (code `null`).
///
/// # Errors
/// Always.
#[cfg(not(feature = "software-key"))]
pub fn software_key(_reason: Option<String>) -> Result<LoadedKey, BrowserError> {
    Err(BrowserError::environment(
        "software_key_not_built",
        "this build of keybound-browser has no software key (cargo feature `software-key`)",
    ))
}

/// Signs with the key: the JOSE ES256 signature (`r || s`, 64 bytes).
///
/// # Errors
/// `webcrypto_failed` if WebCrypto refuses or returns something else than 64 bytes;
/// `signing_failed` for a software key failure.
pub async fn sign(signing: &Signing, message: &[u8]) -> Result<Vec<u8>, BrowserError> {
    match signing {
        Signing::WebCrypto(key) => {
            let subtle = js::subtle()
                .ok_or_else(|| BrowserError::environment("webcrypto_unavailable", "crypto.subtle is not available"))?;
            let sig = js::call(subtle.sign_with_object_and_u8_array(&ecdsa_sign_params(), &key.private, message))
                .await
                .map_err(|e| crypto_error("webcrypto_failed", &e))?;
            let sig = js_sys::Uint8Array::new(&sig).to_vec();
            if sig.len() == 64 {
                Ok(sig)
            } else {
                Err(BrowserError::environment(
                    "webcrypto_failed",
                    "ECDSA signature is not 64 bytes",
                ))
            }
        }
        #[cfg(feature = "software-key")]
        Signing::Software(signer) => {
            use keybound_core::jws::Signer as _;
            signer.sign(message).map_err(|_| {
                BrowserError::protocol(
                    keybound_core::ErrorCode::InvalidDpopProof,
                    "signing_failed",
                    "signing failed",
                )
            })
        }
    }
}

/// The stored record for a key: the two CryptoKeys (IndexedDB stores them by structured clone; a
/// non-extractable key stays non-extractable).
fn record(key: &WebCryptoKey) -> JsValue {
    js::object(&[("privateKey", key.private.as_ref()), ("publicKey", key.public.as_ref())]).into()
}

/// A stored record back as a key, if it is a usable one: a non-extractable ECDSA P-256 private
/// key that can sign, and an ECDSA P-256 public key.
async fn from_record(subtle: &web_sys::SubtleCrypto, value: &JsValue) -> Option<(WebCryptoKey, PublicKey)> {
    let private: web_sys::CryptoKey = js::get(value, "privateKey").dyn_into().ok()?;
    let public: web_sys::CryptoKey = js::get(value, "publicKey").dyn_into().ok()?;
    let is_p256 = |key: &web_sys::CryptoKey| {
        key.algorithm().is_ok_and(|alg| {
            js::get(&alg, "name").as_string().as_deref() == Some("ECDSA")
                && js::get(&alg, "namedCurve").as_string().as_deref() == Some("P-256")
        })
    };
    let can_sign = private
        .usages()
        .iter()
        .any(|u| u.as_string().as_deref() == Some("sign"));
    if private.extractable()
        || private.type_() != "private"
        || !can_sign
        || !is_p256(&private)
        || public.type_() != "public"
        || !is_p256(&public)
    {
        return None;
    }
    let jwk = export_public(subtle, &public).await.ok()??;
    Some((WebCryptoKey { private, public }, jwk))
}

/// Opens the key of `client_id`: as stored in IndexedDB, else created there, else in memory.
///
/// # Errors
/// `webcrypto_failed` if WebCrypto cannot generate a key.
pub async fn open_webcrypto(
    subtle: &web_sys::SubtleCrypto,
    client_id: &str,
    storage: Storage,
) -> Result<LoadedKey, BrowserError> {
    let memory = |key, public, reason: Option<String>| LoadedKey {
        signing: Signing::WebCrypto(key),
        public,
        storage: Storage::Memory,
        fallback_reason: reason,
        db: None,
    };
    if storage == Storage::Memory {
        let (key, public) = generate(subtle).await?;
        return Ok(memory(key, public, None));
    }
    let reason = |what: &str, e: &JsValue| {
        let detail = e
            .dyn_ref::<js_sys::Error>()
            .map(|e| format!("{}: {}", String::from(e.name()), String::from(e.message())))
            .or_else(|| {
                e.dyn_ref::<web_sys::DomException>()
                    .map(|d| format!("{}: {}", d.name(), d.message()))
            })
            .unwrap_or_else(|| "unknown error".into());
        format!("{what} ({detail})")
    };
    let db = match js::idb_open(DB_NAME).await {
        Ok(db) => db,
        Err(e) => {
            let (key, public) = generate(subtle).await?;
            return Ok(memory(key, public, Some(reason("indexeddb_unavailable", &e))));
        }
    };
    let stored = |key, public, db| LoadedKey {
        signing: Signing::WebCrypto(key),
        public,
        storage: Storage::IndexedDb,
        fallback_reason: None,
        db: Some(db),
    };
    match js::idb_get(&db, client_id).await {
        Ok(existing) if !existing.is_undefined() => {
            return match from_record(subtle, &existing).await {
                Some((key, public)) => Ok(stored(key, public, db)),
                None => {
                    // Left as it is, but `wipe()` may delete it (so the next open starts afresh).
                    let (key, public) = generate(subtle).await?;
                    Ok(LoadedKey {
                        db: Some(db),
                        ..memory(key, public, Some("stored_key_invalid".into()))
                    })
                }
            };
        }
        Ok(_) => {}
        Err(e) => {
            let (key, public) = generate(subtle).await?;
            return Ok(memory(key, public, Some(reason("indexeddb_unavailable", &e))));
        }
    }
    let (key, public) = generate(subtle).await?;
    match js::idb_add_if_absent(&db, client_id, &record(&key)).await {
        Ok(true) => Ok(stored(key, public, db)),
        // Another tab stored its key first: use that one.
        Ok(false) => {
            let winner = match js::idb_get(&db, client_id).await {
                Ok(value) => from_record(subtle, &value).await,
                Err(_) => None,
            };
            match winner {
                Some((key, public)) => Ok(stored(key, public, db)),
                None => Ok(LoadedKey {
                    db: Some(db),
                    ..memory(key, public, Some("stored_key_invalid".into()))
                }),
            }
        }
        Err(e) => Ok(memory(key, public, Some(reason("key_storage_unavailable", &e)))),
    }
}
