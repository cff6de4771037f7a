//! A real PostgreSQL server for tests: Debian's server binaries (`postgresql` package), a fresh
//! cluster `initdb`'d into a temporary directory, started on a free 127.0.0.1 port (no Unix
//! socket, trust authentication for user `keybound`) in its own session, and stopped by its PID.
//!
//! `initdb` refuses to run as root, so as root the cluster belongs to the unprivileged `nobody`
//! user and every server command runs through `runuser -u nobody`; as any other user it runs as
//! that user. [`Postgres::start`] gives a server stopped when the handle drops;
//! [`Postgres::shared`] one server per test process, stopped by a small watchdog when the process
//! exits (test harnesses have no "after all tests" hook). Each test takes its own database
//! ([`Postgres::create_database`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The database user of the test cluster.
pub const USER: &str = "keybound";

/// What to install when the server binaries are missing.
pub const INSTALL_HINT: &str = "install Debian's PostgreSQL server: `apt-get install -y postgresql` \
     (`cargo xtask test` does this itself)";

/// The directory of Debian's PostgreSQL server binaries (`/usr/lib/postgresql/<version>/bin`,
/// the newest version), or `$KEYBOUND_PG_BIN` if set.
///
/// # Errors
/// A message saying how to install them.
pub fn server_binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("KEYBOUND_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!("KEYBOUND_PG_BIN={}: no initdb there", dir.display()))
        };
    }
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(base)
        .map_err(|_| format!("no PostgreSQL server binaries under {}: {INSTALL_HINT}", base.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no initdb under {}/*/bin: {INSTALL_HINT}", base.display()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    pid: u32,
    as_nobody: bool,
    /// Stop on drop (not for the shared server, which its watchdog stops).
    owned: bool,
}

static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
static DATABASES: AtomicU64 = AtomicU64::new(0);

impl Postgres {
    /// Starts a new server, stopped (and its directory removed) when the handle drops.
    ///
    /// # Errors
    /// A message if the binaries are missing or the server does not start (with its log).
    pub fn start() -> Result<Postgres, String> {
        Self::start_with(&[])
    }

    /// Starts a new server with `settings` (`name=value`, as `postgres -c`) after the test
    /// defaults (`fsync=off`, `synchronous_commit=off`, `full_page_writes=off`), which they
    /// override; stopped when the handle drops.
    ///
    /// # Errors
    /// As [`Postgres::start`].
    pub fn start_with(settings: &[&str]) -> Result<Postgres, String> {
        let mut pg = Self::launch(settings)?;
        pg.owned = true;
        Ok(pg)
    }

    /// The server of this process, started on first use and stopped by a watchdog process once
    /// this process has exited.
    ///
    /// # Errors
    /// As [`Postgres::start`] (the same message on every call).
    pub fn shared() -> Result<&'static Postgres, String> {
        SHARED
            .get_or_init(|| {
                let mut pg = Self::launch(&[])?;
                pg.owned = false;
                pg.watchdog()?;
                Ok(pg)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn launch(settings: &[&str]) -> Result<Postgres, String> {
        let bin = server_binaries()?;
        let as_nobody = is_root();
        let dir = std::env::temp_dir().join(format!(
            "keybound-pg-{}-{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut pg = Postgres {
            bin,
            dir,
            port: 0,
            pid: 0,
            as_nobody,
            owned: true,
        };
        if as_nobody {
            pg.run(Command::new("chown").args(["nobody:nogroup"]).arg(&pg.dir))?;
        }
        let data = pg.dir.join("data");
        let mut initdb = pg.server_command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]);
        pg.run(&mut initdb)?;
        // A free port can be taken by someone else between the probe and the bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            match pg.pg_ctl_start(&data, port, settings) {
                Ok(pid) => {
                    pg.port = port;
                    pg.pid = pid;
                    return Ok(pg);
                }
                Err(e) => last = e,
            }
        }
        Err(format!("PostgreSQL did not start: {last}"))
    }

    fn pg_ctl_start(&self, data: &Path, port: u16, settings: &[&str]) -> Result<u32, String> {
        let log = self.dir.join("postgres.log");
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        );
        for s in settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        let mut cmd = Command::new("setsid");
        if self.as_nobody {
            cmd.args(["runuser", "-u", "nobody", "--"]);
        }
        cmd.arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "30", "-o", &options, "start"]);
        if let Err(e) = self.run(&mut cmd) {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{e}\n{log}"));
        }
        let pidfile =
            std::fs::read_to_string(data.join("postmaster.pid")).map_err(|e| format!("postmaster.pid: {e}"))?;
        pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("postmaster.pid: no PID in {pidfile:?}"))
    }

    /// A command running a server binary (as `nobody` when we are root).
    fn server_command(&self, name: &str) -> Command {
        if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(self.bin.join(name));
            c
        } else {
            Command::new(self.bin.join(name))
        }
    }

    fn run(&self, cmd: &mut Command) -> Result<String, String> {
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{cmd:?} exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A `sh` watchdog in its own session: once this process is gone, it stops the server by its
    /// PID (fast shutdown), waits for it to exit and removes the directory.
    fn watchdog(&self) -> Result<(), String> {
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -INT {pg} 2>/dev/null; \
             for i in $(seq 100); do kill -0 {pg} 2>/dev/null || break; sleep 0.1; done; \
             kill -KILL {pg} 2>/dev/null; rm -rf '{dir}'",
            me = std::process::id(),
            pg = self.pid,
            dir = self.dir.display(),
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("watchdog: {e}"))
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The connection URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with `psql` in database `db`; returns its unaligned output.
    ///
    /// # Errors
    /// `psql`'s message.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.run(
            Command::new(self.bin.join("psql"))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
                .args(["-p", &self.port.to_string(), "-U", USER, "-d", db, "-c", sql]),
        )
    }

    /// Creates a new empty database; returns its URL.
    ///
    /// # Errors
    /// `psql`'s message.
    pub fn create_database(&self) -> Result<String, String> {
        let name = format!("kb_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Stops the server (fast shutdown) and waits up to 10 s for it to exit.
    pub fn stop(&self) {
        let _ = Command::new("kill").args(["-INT", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if Path::new(&format!("/proc/{}", self.pid)).exists() {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.owned && self.pid != 0 {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// A real server starts, answers SQL in a fresh database, and is gone after the handle drops.
    #[test]
    fn starts_answers_and_stops() {
        let pg = Postgres::start().unwrap();
        let url = pg.create_database().unwrap();
        let db = url.rsplit('/').next().unwrap().to_string();
        assert_eq!(pg.psql(&db, "SELECT 40 + 2").unwrap().trim(), "42");
        let (pid, dir) = (pg.pid(), pg.dir.clone());
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(pg);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "stopped by PID");
        assert!(!dir.exists(), "directory removed");
    }
}
