//! `keybound-bench-authz`: the token endpoint of keybound-authz beside npm `oidc-provider`, both
//! doing the same flow over TLS on this machine: `grant_type=client_credentials`, the client
//! authenticated with `private_key_jwt` (ES256), a DPoP proof (ES256) on every request, answered
//! with a DPoP-bound ES256 JWT access token.
//!
//! Every request carries a fresh client assertion and a fresh DPoP proof (unique `jti`s; both
//! servers keep their replay checks on, which [`check`] proves before any run), all signed before
//! the clock starts. DPoP nonces are off in both servers (keybound-authz `dpop.nonce = "off"`,
//! oidc-provider without `nonceSecret`). The servers run pinned to one core (`--server-cpu`, 0),
//! this process (the load generator of `keybound-bench`, `bench/src/load.rs`) should run on the
//! other (`cargo xtask bench` starts it with `taskset -c 1`). Runs alternate between the servers;
//! the report has the median of each measure over the runs. Output: `target/bench/authz.json`
//! (or `--out`), read by `keybound-bench`'s BENCHMARKS.md writer. keybound-authz runs three
//! times: on an SQLite file, on SQLite in memory, and on a real PostgreSQL (started here with
//! `keybound_e2e::postgres`, pinned to the server's core, its CPU time counted as the server's).

#[allow(dead_code, reason = "shared with keybound-bench, which uses more of it")]
#[path = "../../src/load.rs"]
mod load;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keybound_core::dpop::{self, NewProof};
use keybound_core::jwk::Jwk;
use keybound_core::jws::{self, Alg, P256Signer, Signer};
use serde_json::{Value, json};

use load::{Load, Measured, Transport};

const CLIENT_ID: &str = "bench-client";
const AUDIENCE: &str = "https://rs.example.com";
const SCOPE: &str = "read";
const ASSERTION_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

struct Options {
    runs: usize,
    seconds: u64,
    connections: usize,
    server_cpu: Option<String>,
    authz_bin: PathBuf,
    node: String,
    out: PathBuf,
    only: Option<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: keybound-bench-authz --authz-bin PATH [--runs N] [--seconds S] [--connections C] \
         [--server-cpu CPU|none] [--node NODE] [--out FILE] [--only NAME]"
    );
    std::process::exit(2)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut opts = Options {
        runs: 5,
        seconds: 5,
        connections: 16,
        server_cpu: Some("0".into()),
        authz_bin: root.join("target/release/keybound-authz"),
        node: "node".into(),
        out: root.join("target/bench/authz.json"),
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| usage());
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| usage()) };
        match a.as_str() {
            "--runs" => opts.runs = num(value()).max(1),
            "--seconds" => opts.seconds = num(value()).max(1) as u64,
            "--connections" => opts.connections = num(value()).max(1),
            "--server-cpu" => opts.server_cpu = Some(value()).filter(|v| v != "none"),
            "--authz-bin" => opts.authz_bin = PathBuf::from(value()),
            "--node" => opts.node = value(),
            "--out" => opts.out = PathBuf::from(value()),
            "--only" => opts.only = Some(value()),
            _ => usage(),
        }
    }
    if let Err(e) = run(&root, &opts) {
        eprintln!("bench-authz: {e}");
        std::process::exit(1);
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A free port on 127.0.0.1 (the servers need theirs before they start: it is in the issuer).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A server under test: its process (killed on drop), port and issuer.
struct Server {
    name: &'static str,
    title: String,
    child: Child,
    port: u16,
    issuer: String,
    /// The postmaster of the PostgreSQL cluster it keeps its state in, whose CPU time (and its
    /// backends') counts as the server's.
    database_pid: Option<u32>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `program args` (pinned with `taskset` when asked) and waits for `listening on`.
    fn start(
        name: &'static str,
        title: String,
        cpu: Option<&str>,
        program: &Path,
        args: &[&str],
        port: u16,
        dir: &Path,
    ) -> Result<Server, String> {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let mut child = cmd
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let server = Server {
            name,
            title,
            child,
            port,
            issuer: format!("https://127.0.0.1:{port}"),
            database_pid: None,
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("{name}: {e}"))?;
        if !line.starts_with("listening on") {
            return Err(format!(
                "{name} did not start (see {}/{name}.log): {line:?}",
                dir.display()
            ));
        }
        Ok(server)
    }

    /// CPU seconds used so far by the server and its database.
    fn cpu_seconds(&self) -> Result<f64, String> {
        let own = load::cpu_seconds(self.child.id())?;
        match self.database_pid {
            Some(pg) => Ok(own + load::tree_cpu_seconds(pg)?),
            None => Ok(own),
        }
    }
}

/// The client's keys: the `private_key_jwt` key and the DPoP key.
struct Client {
    auth: P256Signer,
    dpop: P256Signer,
}

impl Client {
    fn new() -> Result<Client, String> {
        let k = |seed: u8| P256Signer::from_bytes(&[seed; 32]).map_err(|e| e.to_string());
        Ok(Client {
            auth: k(11)?,
            dpop: k(12)?,
        })
    }

    fn jwk(&self) -> String {
        Jwk::new(self.auth.public_key().clone(), Some("bench-1".into()), Some(Alg::Es256)).to_json()
    }

    /// A token request for `server` with a fresh assertion (`jti` `a-<tag>`) and a fresh proof
    /// (`jti` `p-<tag>`), or with the given ones.
    fn request(&self, server: &Server, tag: &str, iat: u64) -> Result<(String, String), String> {
        let assertion = jws::sign_json(
            &self.auth,
            None,
            Some("bench-1"),
            &json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": server.issuer, "jti": format!("a-{tag}"),
                "iat": iat, "exp": iat + 300}),
        )
        .map_err(|e| e.to_string())?;
        let htu = format!("{}/token", server.issuer);
        let proof = dpop::create_proof(
            &self.dpop,
            &NewProof {
                htm: "POST",
                htu: &htu,
                iat,
                jti: &format!("p-{tag}"),
                access_token: None,
                nonce: None,
            },
        )
        .map_err(|e| e.to_string())?;
        Ok((assertion, proof))
    }
}

/// The HTTP/1.1 bytes of a token request.
fn http(server: &Server, assertion: &str, proof: &str) -> Vec<u8> {
    let body = format!(
        "grant_type=client_credentials&scope={SCOPE}&client_assertion_type={ASSERTION_TYPE}&client_assertion={assertion}"
    );
    format!(
        "POST /token HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         accept: application/json\r\ndpop: {proof}\r\ncontent-length: {}\r\n\r\n{body}",
        server.port,
        body.len()
    )
    .into_bytes()
}

/// `n` requests, each with its own assertion and proof.
fn requests(client: &Client, server: &Server, run: usize, n: usize) -> Result<Vec<Vec<u8>>, String> {
    let iat = now();
    (0..n)
        .map(|i| {
            let (a, p) = client.request(server, &format!("{}-{run}-{iat}-{i}", server.name), iat)?;
            Ok(http(server, &a, &p))
        })
        .collect()
}

fn tls_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One request on its own TLS connection: (status, body).
fn exchange(port: u16, tls: &Arc<rustls::ClientConfig>, request: &[u8]) -> Result<(u16, Value), String> {
    let (status, body) = load::exchange(port, &Transport::Tls(tls.clone()), request)?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Before measuring a server: a request gets a DPoP-bound JWT (`token_type` DPoP, `cnf.jkt` of
/// the proof key), a replayed proof is refused with `invalid_dpop_proof`, a replayed client
/// assertion with `invalid_client`. So both servers do the same work and keep replay checks on.
fn check(server: &Server, client: &Client, tls: &Arc<rustls::ClientConfig>) -> Result<(), String> {
    let iat = now();
    let tag = format!("check-{iat}");
    let (assertion, proof) = client.request(server, &tag, iat)?;
    let (status, body) = exchange(server.port, tls, &http(server, &assertion, &proof))?;
    let name = server.name;
    if status != 200 || body.get("token_type").and_then(Value::as_str) != Some("DPoP") {
        return Err(format!("{name}: token request answered {status} {body}"));
    }
    let at = body.get("access_token").and_then(Value::as_str).unwrap_or("");
    let claims: Value = at
        .split('.')
        .nth(1)
        .and_then(|p| keybound_core::b64::decode(p).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null);
    let jkt = client.dpop.public_key().thumbprint().to_string();
    if claims.pointer("/cnf/jkt").and_then(Value::as_str) != Some(jkt.as_str()) {
        return Err(format!(
            "{name}: the access token is not a JWT bound to the DPoP key: {claims}"
        ));
    }
    let (fresh_assertion, fresh_proof) = client.request(server, &format!("{tag}-2"), iat)?;
    let refused = |what: &str, request: Vec<u8>, code: &str| -> Result<(), String> {
        let (status, body) = exchange(server.port, tls, &request)?;
        if (status == 400 || status == 401) && body.get("error").and_then(Value::as_str) == Some(code) {
            Ok(())
        } else {
            Err(format!(
                "{name}: a replayed {what} was answered {status} {body}, not {code}"
            ))
        }
    };
    // The only difference from an accepted request is the replayed proof. oidc-provider answers
    // this with `invalid_grant` ("DPoP proof JWT Replay detected", lib/helpers/validate_dpop.js).
    let replayed_proof_code = if name == "oidc-provider" {
        "invalid_grant"
    } else {
        "invalid_dpop_proof"
    };
    refused(
        "DPoP proof",
        http(server, &fresh_assertion, &proof),
        replayed_proof_code,
    )?;
    refused(
        "client assertion",
        http(server, &assertion, &fresh_proof),
        "invalid_client",
    )?;
    eprintln!("bench-authz: {name}: DPoP-bound JWT issued; replayed proof and replayed assertion refused");
    Ok(())
}

/// Pins process `root` and its children (a postmaster with its background processes; backends
/// it forks later inherit the affinity) to `cpu` with `taskset`.
fn pin_tree(root: u32, cpu: &str) -> Result<(), String> {
    let mut pids = vec![root.to_string()];
    for entry in std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
    {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1.to_string();
                after.split_whitespace().nth(1).map(str::to_string)
            });
        if parent.as_deref() == Some(root.to_string().as_str()) {
            pids.push(pid);
        }
    }
    for pid in pids {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cpu, &pid])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("taskset: {e}"))?;
        if !status.success() {
            return Err(format!("taskset -a -p -c {cpu} {pid} failed"));
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn summary(server: &Server, runs: &[Measured]) -> Value {
    let pick = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
    json!({
        "name": server.name,
        "title": server.title,
        "rps": pick(Measured::rps),
        "p50_us": pick(|m| m.p50_us),
        "p99_us": pick(|m| m.p99_us),
        "cpu_us_per_request": pick(|m| m.cpu_us_per_request),
        "utilisation": pick(|m| m.utilisation),
        "errors": runs.iter().map(|m| m.errors).sum::<u64>(),
        "runs": runs.iter().map(|m| json!({"rps": m.rps(), "p50_us": m.p50_us, "p99_us": m.p99_us,
            "cpu_us_per_request": m.cpu_us_per_request, "answered": m.ok, "errors": m.errors})).collect::<Vec<_>>(),
    })
}

fn keybound_config(dir: &Path, port: u16, database: &str, client: &Client) -> Result<PathBuf, String> {
    let (database, storage) = if database.starts_with("postgres://") {
        (
            String::new(),
            format!("\n[storage]\nurl = \"{database}\"\npool_size = 16\n"),
        )
    } else {
        (format!("database = \"{database}\""), String::new())
    };
    let config = format!(
        r#"# keybound-authz as measured by bench/authz (written by keybound-bench-authz).
issuer = "https://127.0.0.1:{port}"
listen = "127.0.0.1:{port}"
{database}
scopes = ["{SCOPE}"]
audience = ["{AUDIENCE}"]

[tls]
cert = "dev/server.pem"
key = "dev/server-key.pem"

[tokens]
access_token_lifetime = 300

[dpop]
nonce = "off"
algs = ["ES256"]

[[clients]]
client_id = "{CLIENT_ID}"
name = "bench"
auth_method = "private_key_jwt"
sender_constraint = "dpop"
scopes = ["{SCOPE}"]
grant_types = ["client_credentials"]
jwks = '{{"keys":[{jwk}]}}'
{storage}"#,
        jwk = client.jwk()
    );
    let path = dir.join(format!("authz-{port}.toml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    Ok(path)
}

fn oidc_provider_config(dir: &Path, port: u16, client: &Client) -> Result<PathBuf, String> {
    let jwk: Value = serde_json::from_str(&client.jwk()).map_err(|e| e.to_string())?;
    let config = json!({
        "issuer": format!("https://127.0.0.1:{port}"), "port": port,
        "cert": dir.join("dev/server.pem"), "key": dir.join("dev/server-key.pem"),
        "client_id": CLIENT_ID, "client_jwk": jwk, "audience": AUDIENCE, "scope": SCOPE, "ttl": 300,
    });
    let path = dir.join("oidc-provider.json");
    std::fs::write(&path, config.to_string()).map_err(|e| e.to_string())?;
    Ok(path)
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn run(root: &Path, opts: &Options) -> Result<(), String> {
    let dir = root.join("target/bench/authz-run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let authz = opts
        .authz_bin
        .canonicalize()
        .map_err(|e| format!("{}: {e}", opts.authz_bin.display()))?;
    // The development certificates (CA, server certificate for localhost and 127.0.0.1), both
    // servers use the same ones.
    let init = Command::new(&authz)
        .args(["init", "--dir", "dev"])
        .current_dir(&dir)
        .output()
        .map_err(|e| e.to_string())?;
    if !init.status.success() {
        return Err(format!(
            "keybound-authz init: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let client = Client::new()?;
    let tls = tls_config(&dir.join("dev/ca.pem"))?;
    let cpu = opts.server_cpu.as_deref();
    let want = |name: &str| opts.only.as_deref().is_none_or(|o| name.contains(o));
    let mut servers = Vec::new();
    // PostgreSQL as a deployment would run it (fsync and full-page writes on), except that a
    // commit does not wait for its WAL flush (`synchronous_commit = off`, like the SQLite file's
    // WAL with `synchronous = NORMAL`); on the server's core, its CPU time counted as the server's.
    let postgres = if want("keybound-authz-postgres") {
        let pg = keybound_e2e::postgres::Postgres::start_with(&["fsync=on", "full_page_writes=on"])?;
        if let Some(cpu) = cpu {
            pin_tree(pg.pid(), cpu)?;
        }
        Some(pg)
    } else {
        None
    };
    let pg_version = postgres
        .as_ref()
        .and_then(|pg| pg.psql("postgres", "SHOW server_version").ok())
        .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default();
    let pg_title =
        format!("PostgreSQL {pg_version} over TCP, pool of 16, synchronous_commit=off, on the same core and counted");
    for (name, database, what) in [
        (
            "keybound-authz",
            "authz.sqlite".to_string(),
            "SQLite file, WAL".to_string(),
        ),
        (
            "keybound-authz-memory",
            ":memory:".to_string(),
            "SQLite in memory".to_string(),
        ),
        (
            "keybound-authz-postgres",
            match &postgres {
                Some(pg) => pg.create_database()?,
                None => String::new(),
            },
            pg_title,
        ),
    ] {
        if !want(name) {
            continue;
        }
        let port = free_port()?;
        let config = keybound_config(&dir, port, &database, &client)?;
        let config = config.to_string_lossy().into_owned();
        let mut server = Server::start(
            name,
            format!("keybound-authz ({what})"),
            cpu,
            &authz,
            &["serve", "--config", &config],
            port,
            &dir,
        )?;
        if name == "keybound-authz-postgres" {
            server.database_pid = postgres.as_ref().map(keybound_e2e::postgres::Postgres::pid);
        }
        servers.push(server);
    }
    if want("oidc-provider") {
        let port = free_port()?;
        let config = oidc_provider_config(&dir, port, &client)?;
        let script = root.join("bench/authz/oidc-provider/server.mjs");
        let package: Value =
            std::fs::read_to_string(root.join("bench/authz/oidc-provider/node_modules/oidc-provider/package.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or("bench/authz/oidc-provider: run `npm ci` there first")?;
        let version = package.get("version").and_then(Value::as_str).unwrap_or("?");
        let node_version = command_output(&opts.node, &["--version"]);
        let node = PathBuf::from(&opts.node);
        servers.push(Server::start(
            "oidc-provider",
            format!("oidc-provider {version} (node {node_version}, in-memory adapter)"),
            cpu,
            &node,
            &[&script.to_string_lossy(), &config.to_string_lossy()],
            port,
            &dir,
        )?);
    }
    for s in &servers {
        check(s, &client, &tls)?;
    }
    // Requests per run: enough for 1.5 times the fastest rate seen so far (a run that uses them
    // all stops early: its rate is still right, over a shorter time).
    let mut rate: Vec<f64> = vec![3000.0; servers.len()];
    let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); servers.len()];
    let started = Instant::now();
    for run in 0..=opts.runs {
        for (i, s) in servers.iter().enumerate() {
            let seconds = if run == 0 { 2 } else { opts.seconds };
            let guess = rate.get(i).copied().unwrap_or(3000.0);
            let n = (guess * 1.5 * seconds as f64) as usize + 500;
            let t = Instant::now();
            let requests = Arc::new(requests(&client, s, run, n)?);
            let signing = t.elapsed().as_secs_f64();
            let load = Load {
                port: s.port,
                transport: Transport::Tls(tls.clone()),
                connections: opts.connections,
                duration: Duration::from_secs(seconds),
                requests,
                expect: 200,
            };
            let m = load::run_with_cpu(&load, &|| s.cpu_seconds())?;
            eprintln!(
                "bench-authz: {:<22} run {run}{} {:>7.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  server CPU {:>6.0} µs/req  \
                 ({:.0}% of a core; {} errors; {n} requests signed in {signing:.1} s)",
                s.name,
                if run == 0 { " (warm-up)" } else { "" },
                m.rps(),
                m.p50_us,
                m.p99_us,
                m.cpu_us_per_request,
                m.utilisation * 100.0,
                m.errors,
            );
            if m.errors > 0 {
                return Err(format!("{}: {} requests were not answered 200", s.name, m.errors));
            }
            if let Some(r) = rate.get_mut(i) {
                // The warm-up's rate replaces the first guess; later runs can only raise it.
                *r = if run == 0 { m.rps() } else { r.max(m.rps()) };
            }
            if run > 0
                && let Some(r) = runs.get_mut(i)
            {
                r.push(m);
            }
        }
    }
    let results: Vec<Value> = servers.iter().zip(&runs).map(|(s, r)| summary(s, r)).collect();
    let report = json!({
        "measured_at": command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "options": {"runs": opts.runs, "seconds": opts.seconds, "connections": opts.connections,
            "server_cpu": opts.server_cpu, "dpop_nonces": false},
        "seconds_total": started.elapsed().as_secs_f64(),
        "servers": results,
    });
    if let Some(parent) = opts.out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&report).unwrap_or_default()).map_err(|e| e.to_string())?;
    eprintln!("bench-authz: wrote {}", opts.out.display());
    Ok(())
}
