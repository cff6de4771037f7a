//! `keybound-authz`: the authorization server binary.
//!
//! ```text
//! keybound-authz init [--dir DIR] [--issuer URL] [--listen ADDR] [--force]
//! keybound-authz serve --config FILE
//! keybound-authz hash-password            (reads a password from stdin, prints an argon2 hash)
//! keybound-authz keys rotate --config FILE
//! keybound-authz migrate --config FILE
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use keybound_authz::config::Config;

const USAGE: &str = "usage:
  keybound-authz init [--dir DIR] [--issuer URL] [--listen ADDR] [--force]
  keybound-authz serve --config FILE
  keybound-authz hash-password   (password on stdin)
  keybound-authz keys rotate --config FILE
  keybound-authz migrate --config FILE";

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn load(args: &[String]) -> Result<Config, String> {
    let path = flag(args, "--config").ok_or("--config FILE is required")?;
    Config::load(&PathBuf::from(path)).map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("serve") => {
            let config = load(args)?;
            runtime()?.block_on(keybound_authz::server::run(config))
        }
        Some("migrate") => {
            let config = load(args)?;
            let m = runtime()?
                .block_on(keybound_authz::storage::migrate(&config.storage))
                .map_err(|e| e.to_string())?;
            println!("{}: schema at version {} (was {})", m.backend, m.to, m.from);
            Ok(())
        }
        Some("init") => {
            let dir = PathBuf::from(flag(args, "--dir").unwrap_or_else(|| "keybound-dev".into()));
            let listen = flag(args, "--listen").unwrap_or_else(|| "127.0.0.1:8443".into());
            let port = listen.rsplit(':').next().unwrap_or("8443");
            let opts = keybound_authz::init::InitOptions {
                issuer: flag(args, "--issuer").unwrap_or_else(|| format!("https://127.0.0.1:{port}")),
                listen,
                force: args.iter().any(|a| a == "--force"),
            };
            let password = keybound_authz::init::run(&dir, &opts)?;
            println!(
                "wrote {}/authz.toml and dev certificates; demo user alice, password {password}",
                dir.display()
            );
            Ok(())
        }
        Some("hash-password") => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err("empty password".into());
            }
            println!("{}", keybound_authz::init::hash_password(password)?);
            Ok(())
        }
        Some("keys") if args.get(1).map(String::as_str) == Some("rotate") => {
            let config = load(args)?;
            let (app, kid) = runtime()?.block_on(async {
                let app = keybound_authz::server::App::new(config).await?;
                let kid = keybound_authz::keys::KeyRing::rotate(
                    app.store.as_ref(),
                    keybound_authz::random::now(),
                    app.key_retention(),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok::<_, String>((app, kid))
            })?;
            println!(
                "new signing key {kid}; previous keys stay published for {} s",
                app.key_retention()
            );
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keybound-authz: {e}");
            ExitCode::from(2)
        }
    }
}
