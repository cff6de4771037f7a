//! Verifies one ES256 signature `N` times with the chosen backend, for an instruction count per
//! verification under callgrind (the difference between two `N`, divided by their difference,
//! cancels the set-up):
//!
//! ```text
//! cargo build --release -p keybound-envoy-module --example es256_verify
//! for v in ring rust; do for n in 1 101; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/es256_verify $v $n 2>&1 | grep refs
//! done; done
//! ```

use keybound_core::jws::{P256Signer, RustCrypto, Signer, Verifier};
use keybound_envoy_module::crypto::Ring;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let verifier: &dyn Verifier = match args.get(1).map(String::as_str) {
        Some("ring") => &Ring,
        Some("rust") => &RustCrypto,
        _ => return Err("usage: es256_verify ring|rust N".into()),
    };
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).ok_or("N: a number")?;
    let signer = P256Signer::from_bytes(&[7; 32]).map_err(|e| format!("{e:?}"))?;
    let message = b"eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJiZW5jaCJ9";
    let sig = signer.sign(message).map_err(|e| format!("{e:?}"))?;
    let mut ok = 0usize;
    for _ in 0..n {
        ok += usize::from(verifier.verify(signer.alg(), signer.public_key(), std::hint::black_box(message), &sig));
    }
    if ok != n {
        return Err(format!("{} of {n} verified", ok));
    }
    println!("{n} verified");
    Ok(())
}
