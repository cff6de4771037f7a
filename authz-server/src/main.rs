//! `keybound-authz`: the authorization server binary. `keybound-authz --help` lists the commands;
//! `keybound-authz COMMAND --help` their flags. Unknown commands and flags, and an invalid
//! configuration, are refused with a message and exit status 2; any other failure exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keybound_authz::config::Config;

/// keybound's FAPI 2.0 authorization server: PAR, PKCE, DPoP- and certificate-bound tokens.
#[derive(Debug, Parser)]
#[command(name = "keybound-authz", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a development configuration, certificates and keys into a new directory.
    Init {
        /// The directory to create.
        #[arg(long, default_value = "keybound-dev")]
        dir: PathBuf,
        /// The issuer URL (default: https://127.0.0.1:PORT of --listen).
        #[arg(long)]
        issuer: Option<String>,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Overwrite files in an existing directory.
        #[arg(long)]
        force: bool,
    },
    /// Serves until SIGTERM or SIGINT, then lets requests in flight finish and exits 0.
    Serve {
        /// The configuration file (TOML); `KEYBOUND_AUTHZ_*` environment variables override it.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Checks a configuration file (with the environment's overrides) and exits.
    Check {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Reads a password from stdin and prints its argon2 hash for a `[[users]]` entry.
    HashPassword,
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Brings the storage schema to this version (SQLite or PostgreSQL, `storage.url`) and exits.
    Migrate {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Creates a new signing key; the previous ones stay published until their tokens expire.
    Rotate {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Why a command failed.
enum Failure {
    /// The configuration is invalid: exit status 2, like a usage error.
    Config(String),
    /// Anything else: exit status 1.
    Other(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Other(e)
    }
}

fn load(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load_with_env(path).map_err(|e| Failure::Config(e.to_string()))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve { config } => {
            let config = load(&config)?;
            keybound_authz::log::init(&config.log);
            Ok(runtime()?.block_on(keybound_authz::serve::run(config))?)
        }
        Command::Migrate { config } => {
            let config = load(&config)?;
            let m = runtime()?
                .block_on(keybound_authz::storage::migrate(&config.storage))
                .map_err(|e| e.to_string())?;
            println!("{}: schema at version {} (was {})", m.backend, m.to, m.from);
            Ok(())
        }
        Command::Check { config } => {
            let loaded = load(&config)?;
            println!("{}: ok (issuer {})", config.display(), loaded.issuer);
            Ok(())
        }
        Command::Init {
            dir,
            issuer,
            listen,
            force,
        } => {
            let port = listen.rsplit(':').next().unwrap_or("8443").to_owned();
            let opts = keybound_authz::init::InitOptions {
                issuer: issuer.unwrap_or_else(|| format!("https://127.0.0.1:{port}")),
                listen,
                force,
            };
            let password = keybound_authz::init::run(&dir, &opts)?;
            println!(
                "wrote {}/authz.toml and dev certificates; demo user alice, password {password}",
                dir.display()
            );
            Ok(())
        }
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(Failure::Other("empty password".into()));
            }
            println!("{}", keybound_authz::init::hash_password(password)?);
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate { config },
        } => {
            let config = load(&config)?;
            let (app, kid) = runtime()?.block_on(async {
                let app = keybound_authz::state::App::new(config).await?;
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
    }
}

fn main() -> ExitCode {
    // clap prints help and version to stdout with status 0, usage errors to stderr with 2.
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("keybound-authz: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("keybound-authz: {e}");
            ExitCode::FAILURE
        }
    }
}
