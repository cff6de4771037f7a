//! The child processes of the demo (keybound-authz, Envoy): started with their output collected,
//! stopped when dropped (so also on errors and panics), and waited for until ready.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child process; killed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
}

fn collect(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut l) = log.lock() {
                l.push_str(&line);
                l.push('\n');
            }
            let _ = tx.send(line);
        }
    });
}

impl Proc {
    /// Starts `cmd` with stdout and stderr collected.
    ///
    /// # Errors
    /// A message if it cannot start.
    pub fn start(name: &str, cmd: &mut Command) -> Result<Proc, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start {name} ({cmd:?}): {e}"))?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            collect(out, log.clone(), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, log.clone(), tx);
        }
        Ok(Proc {
            name: name.into(),
            child,
            log,
            lines,
        })
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The last `n` lines it printed.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .get(lines.len().saturating_sub(n)..)
            .unwrap_or_default()
            .join("\n")
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails if it has exited.
    ///
    /// # Errors
    /// Its exit status and last output lines.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); its last output:\n{}",
                self.name,
                self.tail(30)
            )),
            Ok(None) => Ok(()),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// Waits until it prints a line containing `needle`.
    ///
    /// # Errors
    /// If it exits first or `timeout` passes.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => self.check_alive()?,
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not print {needle:?} within {} s; its last output:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.tail(30)
                ));
            }
        }
    }

    /// Waits until `ready` returns true (polled every 200 ms).
    ///
    /// # Errors
    /// If it exits first or `timeout` passes.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            self.check_alive()?;
            // Drain lines so the channel does not grow without bound.
            while self.lines.try_recv().is_ok() {}
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: {what} not reached within {} s; its last output:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The lines it printed since the last call (or since the last wait).
    pub fn new_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Stops it now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            println!("demo: stopping {} (pid {})", self.name, self.child.id());
        }
        self.stop();
    }
}

/// Starts keybound-authz with `config` and waits for its "listening on" line.
///
/// # Errors
/// If it fails to start, with its output.
pub fn start_authz(bin: &Path, config: &Path) -> Result<Proc, String> {
    let mut p = Proc::start(
        "keybound-authz",
        Command::new(bin).arg("serve").arg("--config").arg(config),
    )?;
    p.wait_for_line("listening on", Duration::from_secs(30))?;
    Ok(p)
}

/// Starts Envoy with `config` (`--concurrency 2`, no hot restart, so several can run).
///
/// # Errors
/// If it cannot start.
pub fn start_envoy(bin: &Path, config: &Path) -> Result<Proc, String> {
    Proc::start(
        "envoy",
        Command::new(bin).arg("-c").arg(config).args([
            "--concurrency",
            "2",
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--component-log-level",
            "wasm:info",
        ]),
    )
}
