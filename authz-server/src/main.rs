//! `keybound-authz`: the authorization server (being built, see issue 4).

fn main() {
    eprintln!("keybound-authz: not built yet");
    std::process::exit(2);
}
