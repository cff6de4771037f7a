//! The opt-in software key (cargo feature `software-key`): a P-256 key whose secret is in wasm
//! memory, for contexts without `crypto.subtle`, used only when the app asks for it
//! (`softwareKey`). The WebCrypto key, its storage in IndexedDB and its fallbacks are in
//! `src/dpop.js`.

#[cfg(feature = "software-key")]
pub use software::SoftwareKey;

#[cfg(feature = "software-key")]
mod software {
    use keybound_core::jwk::PublicKey;
    use keybound_core::jws::{P256Signer, Signer as _};
    use wasm_bindgen::JsValue;
    use wasm_bindgen::prelude::wasm_bindgen;

    use crate::error::BrowserError;

    /// A software P-256 key (keybound-core's `P256Signer`), its secret from
    /// `crypto.getRandomValues` (through getrandom).
    #[wasm_bindgen]
    pub struct SoftwareKey {
        signer: P256Signer,
        point: Vec<u8>,
    }

    impl SoftwareKey {
        /// A new key.
        ///
        /// # Errors
        /// `random_unavailable` if there is no random source.
        pub fn generate() -> Result<SoftwareKey, BrowserError> {
            // A random 32-byte string is a valid scalar except with probability ~2^-32: retry a
            // few times.
            for _ in 0..8 {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|_| {
                    BrowserError::environment("random_unavailable", "crypto.getRandomValues is missing")
                })?;
                if let Ok(signer) = P256Signer::from_bytes(&secret)
                    && let PublicKey::P256 { x, y } = signer.public_key().clone()
                {
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    return Ok(SoftwareKey { signer, point });
                }
            }
            Err(BrowserError::environment("random_unavailable", "no valid P-256 scalar"))
        }
    }

    #[wasm_bindgen]
    impl SoftwareKey {
        /// The public key as an uncompressed SEC1 point (`0x04 || x || y`).
        #[wasm_bindgen(getter)]
        pub fn point(&self) -> Vec<u8> {
            self.point.clone()
        }

        /// The ES256 signature (`r || s`) of `message`.
        ///
        /// # Errors
        /// `signing_failed` if signing fails.
        pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JsValue> {
            self.signer.sign(message).map_err(|_| {
                BrowserError::protocol(
                    keybound_core::ErrorCode::InvalidDpopProof,
                    "signing_failed",
                    "signing failed",
                )
                .into()
            })
        }
    }
}
