//! Links the module with immediate binding (`-z now`): a callback this module imports that the
//! loading Envoy does not export fails `dlopen` with "undefined symbol: <name>", which Envoy
//! reports as "Failed to load dynamic module", instead of crashing on the first call (Envoy
//! opens modules with `RTLD_LAZY`).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
}
