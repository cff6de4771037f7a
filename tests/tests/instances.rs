//! Many gateway instances (README: "Many gateway instances"): two gateway Envoys with the filter
//! behind the front tier of `envoy/front-tier.yaml`. The front is generated from that file: only
//! its addresses, ports and certificate paths are replaced (the gateway instances are two local
//! Envoys instead of a DNS name); its hashing, retries, health checks and outlier detection are
//! the shipped ones.
//!
//! Each instance has its own `jti` cache. The tests show that the front tier sends every proof of
//! one token to one instance (so a replay is refused there, whatever the spelling of the
//! `Authorization` header) while tokens spread over both, that without it a replay passes once at
//! the other instance, and what happens when an instance dies: the times are measured and
//! printed, never asserted (`cargo test -p keybound-e2e --test instances -- --nocapture`).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{assert_denied, config, counter, dpop_token, eventually, now, p256, unique};
use keybound_core::b64;
use keybound_core::dpop::{self, NewProof};
use keybound_core::jws::Signer;
use keybound_e2e::tls::FRONT_URI;
use keybound_e2e::{Envoy, EnvoyOptions, Pki, Response, TempDir, TlsListener, Upstream, free_port, request_tls, root};
use serde_json::{Value, json};

const PATH: &str = "/api/accounts";
const URL: &str = "https://rs.example.com/api/accounts";

/// The answer to a replayed proof.
const REPLAYED: &str = r#"DPoP error="invalid_dpop_proof", algs="ES256 PS256 EdDSA""#;

/// The tests of this file run one at a time: each starts three or four Envoys, and the measured
/// times mean more on a machine that is not also starting the others.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The gateways' filter configuration: `/healthz` open (the front tier's health check), every
/// other path needs a bound token; `extra` as in [`config`].
fn gateway_config(mut extra: Value) -> String {
    extra["rules"] = json!([{"prefix": "/healthz", "auth": "none"}]);
    config(extra)
}

/// A proof for `GET /api/accounts` with `token`, a fresh `jti` and `iat` now.
fn proof(key: &dyn Signer, token: &str, nonce: Option<&str>) -> String {
    dpop::create_proof(
        key,
        &NewProof {
            htm: "GET",
            htu: URL,
            iat: now(),
            jti: &unique("p"),
            access_token: Some(token),
            nonce,
        },
    )
    .unwrap()
}

/// The nonce step a gateway nonce was issued in (its first 8 bytes, see `keybound_core::nonce`).
fn nonce_step(nonce: &str) -> u64 {
    let raw = b64::decode(nonce).unwrap();
    u64::from_be_bytes(raw[..8].try_into().unwrap())
}

/// The `nonce` claim of a proof.
fn proof_nonce(proof: &str) -> String {
    let payload = proof.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&b64::decode(payload).unwrap()).unwrap();
    claims["nonce"].as_str().unwrap().to_owned()
}

/// What the front tier needs of envoy/README.md's placeholder files. The gateways' server
/// certificate comes from the test CA (so that the test client can also call an instance
/// directly, the control), so the front's `mesh/ca.pem` is that CA.
fn front_files(pki: &Pki) -> TempDir {
    let dir = TempDir::new("front-tier").unwrap();
    for (rel, from) in [
        ("tls/front.pem", &pki.front.cert),
        ("tls/front.key", &pki.front.key),
        ("tls/client-ca.pem", &pki.ca),
        ("mesh/ca.pem", &pki.ca),
        ("mesh/front.pem", &pki.mesh_front.cert),
        ("mesh/front.key", &pki.mesh_front.key),
    ] {
        let to = dir.0.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
    dir
}

/// envoy/front-tier.yaml runnable here: placeholders filled, listener and admin on `port` and
/// `admin`, the `gateways` cluster with the instances at `gateways` (STATIC, 127.0.0.1) instead of
/// a DNS name. `token_only: false` removes the hash policy's `regex_rewrite`: the hash is then
/// on the header's raw value.
fn front_tier_yaml(files: &TempDir, gateways: &[u16], port: u16, admin: u16, token_only: bool) -> String {
    let text = std::fs::read_to_string(root().join("envoy/front-tier.yaml")).unwrap();
    let text = text
        .replace("/etc/keybound/", &format!("{}/", files.0.display()))
        .replace("spiffe://keybound.example/", "spiffe://keybound.test/")
        .replace("address: 0.0.0.0", "address: 127.0.0.1")
        .replace("port_value: 8443 ", &format!("port_value: {port} "))
        .replace("port_value: 9901 ", &format!("port_value: {admin} "));
    assert!(!text.contains("/etc/keybound") && !text.contains("keybound.example"));
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let clusters = doc["static_resources"]["clusters"].as_sequence_mut().unwrap();
    let cluster = clusters.iter_mut().find(|c| c["name"] == "gateways").unwrap();
    assert_eq!(cluster["lb_policy"], "RING_HASH");
    let fields = cluster.as_mapping_mut().unwrap();
    fields.remove("dns_lookup_family");
    fields.remove("dns_refresh_rate");
    fields.insert("type".into(), "STATIC".into());
    let endpoints: Vec<serde_yaml::Value> = gateways
        .iter()
        .map(|p| {
            serde_yaml::from_str(&format!(
                "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}}}"
            ))
            .unwrap()
        })
        .collect();
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = serde_yaml::Value::Sequence(endpoints);
    let route = &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"][0]["route"];
    let header = route["hash_policy"][0]["header"].as_mapping_mut().unwrap();
    assert_eq!(header["header_name"], "authorization");
    assert!(header.contains_key("regex_rewrite"));
    if !token_only {
        header.remove("regex_rewrite");
    }
    serde_yaml::to_string(&doc).unwrap()
}

/// Two gateway instances with the filter configured by the same `cfg`, each with its own `jti`
/// cache, behind the front tier.
struct Tier {
    pki: Pki,
    files: TempDir,
    /// `None` once stopped.
    gateways: Vec<Option<Envoy>>,
    /// The instance that is frozen (`SIGSTOP`), if any: its admin interface does not answer
    /// either, so its counters are not read.
    hung: AtomicUsize,
    front: Envoy,
    _app: Upstream,
}

impl Tier {
    fn start(cfg: &str) -> Tier {
        let pki = Pki::generate().unwrap();
        let app = Upstream::start().unwrap();
        // As the GATEWAY part of behind-proxy.yaml: client certificates only from the mesh CA with
        // the front's URI SAN, XFCC kept only on those connections.
        let opts = EnvoyOptions {
            tls: Some(TlsListener {
                cert: pki.gateway.cert.clone(),
                key: pki.gateway.key.clone(),
                client_ca: Some(pki.mesh_ca.clone()),
                require_client_cert: true,
                client_uri_sans: vec![FRONT_URI.into()],
            }),
            forward_client_cert: Some("FORWARD_ONLY".into()),
            ..EnvoyOptions::default()
        };
        let gateways: Vec<Envoy> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..2)
                .map(|_| s.spawn(|| Envoy::start_with(cfg, &app, &opts)))
                .collect();
            starts.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        let files = front_files(&pki);
        let ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();
        let front = Tier::front(&files, &ports, true);
        Tier {
            pki,
            files,
            gateways: gateways.into_iter().map(Some).collect(),
            hung: AtomicUsize::new(usize::MAX),
            front,
            _app: app,
        }
    }

    /// A front generated from envoy/front-tier.yaml over the instances at `ports`, once it sees
    /// them all healthy.
    fn front(files: &TempDir, ports: &[u16], token_only: bool) -> Envoy {
        let (port, admin) = (free_port().unwrap(), free_port().unwrap());
        let yaml = front_tier_yaml(files, ports, port, admin, token_only);
        let front = Envoy::start_yaml(&yaml, port, admin).unwrap();
        let healthy = eventually(30, || {
            front.counter("cluster.gateways.membership_healthy") == ports.len() as u64
        });
        assert!(
            healthy,
            "the front never saw every gateway healthy: {}",
            front.log_tail()
        );
        front
    }

    /// `GET /api/accounts` through `front` with this `Authorization` value and proof.
    fn call_at(&self, front: &Envoy, auth: &str, proof: &str) -> Response {
        request_tls(
            front.port,
            &self.pki,
            None,
            "GET",
            PATH,
            &[("authorization", auth), ("dpop", proof)],
        )
        .unwrap()
    }

    /// `GET /api/accounts` through the front tier.
    fn call(&self, auth: &str, proof: &str) -> Response {
        self.call_at(&self.front, auth, proof)
    }

    /// The same request straight to instance `i` (as the front would call it: its mesh
    /// certificate), bypassing the hash.
    fn call_instance(&self, i: usize, auth: &str, proof: &str) -> Response {
        let port = self.gateway(i).port;
        let headers = [("authorization", auth), ("dpop", proof)];
        request_tls(port, &self.pki, Some(&self.pki.mesh_front), "GET", PATH, &headers).unwrap()
    }

    fn gateway(&self, i: usize) -> &Envoy {
        self.gateways[i].as_ref().unwrap()
    }

    /// The allowed decisions of each instance (0 for a stopped or hung one).
    fn allowed(&self) -> Vec<u64> {
        let hung = self.hung.load(Ordering::Relaxed);
        self.gateways
            .iter()
            .enumerate()
            .map(|(i, g)| match g {
                Some(g) if i != hung => g.decisions("allow", None),
                _ => 0,
            })
            .collect()
    }

    /// A filter counter of each instance (0 for a stopped or hung one).
    fn counters(&self, name: &str) -> Vec<u64> {
        let hung = self.hung.load(Ordering::Relaxed);
        self.gateways
            .iter()
            .enumerate()
            .map(|(i, g)| match g {
                Some(g) if i != hung => counter(g, name),
                _ => 0,
            })
            .collect()
    }

    /// Freezes (`SIGSTOP`) or resumes (`SIGCONT`) instance `i`, an Envoy this test started.
    fn freeze(&self, i: usize, frozen: bool) {
        let (sig, hung) = if frozen { ("-STOP", i) } else { ("-CONT", usize::MAX) };
        let pid = self.gateway(i).pid().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
        self.hung.store(hung, Ordering::Relaxed);
    }

    /// Runs `f` (one request that the filter refuses as a replay) and returns the instance that
    /// counted the replay; asserts that exactly one did, by one.
    fn replayed_at(&self, f: impl FnOnce()) -> usize {
        let before = self.counters("replays");
        f();
        let after = self.counters("replays");
        let grew: Vec<usize> = (0..before.len()).filter(|i| after[*i] != before[*i]).collect();
        assert_eq!(grew.len(), 1, "replays before {before:?}, after {after:?}");
        assert_eq!(after[grew[0]], before[grew[0]] + 1);
        grew[0]
    }

    /// A front gauge or counter (`cluster.gateways.*`).
    fn front_stat(&self, name: &str) -> u64 {
        self.front.counter(&format!("cluster.gateways.{name}"))
    }
}

/// `Authorization` values with the DPoP scheme spelled in every case and followed by spaces or
/// tabs: all the same credentials to the filter.
fn spellings(token: &str) -> Vec<String> {
    let mut out = Vec::new();
    for sep in [" ", "  ", "\t", " \t "] {
        for mask in 0..16u8 {
            let scheme: String = "dpop"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask & (1 << i) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            out.push(format!("{scheme}{sep}{token}"));
        }
    }
    out
}

#[test]
fn the_front_tier_keeps_every_proof_of_a_token_on_one_instance_and_spreads_tokens() {
    let _serial = serial();
    let tier = Tier::start(&gateway_config(json!({})));
    let mut tokens_at = [0u64; 2];
    for seed in 100..124u8 {
        let key = p256(seed);
        let t = dpop_token(&key);
        let auth = format!("DPoP {t}");
        let proofs: Vec<String> = (0..3)
            .map(|_| {
                let p = proof(&key, &t, None);
                let r = tier.call(&auth, &p);
                assert_eq!(r.status, 200, "{r:?}\n{}", tier.front.log_tail());
                p
            })
            .collect();
        // Each proof replayed through the front: refused, by the one instance that saw all three.
        let owners: Vec<usize> = proofs
            .iter()
            .map(|p| {
                tier.replayed_at(|| {
                    let r = tier.call(&auth, p);
                    assert_denied("replay", &r, 401, REPLAYED, Some("invalid_dpop_proof"));
                })
            })
            .collect();
        assert!(owners.iter().all(|o| *o == owners[0]), "token {seed}: {owners:?}");
        tokens_at[owners[0]] += 1;
    }
    println!("24 tokens over 2 instances: {tokens_at:?}");
    assert!(tokens_at.iter().all(|n| *n > 0), "{tokens_at:?}");
    // Each instance allowed its tokens' requests (and the front's health checks), and counted
    // the replays of its tokens only.
    let allowed = tier.allowed();
    assert_eq!(tier.counters("replays"), [3 * tokens_at[0], 3 * tokens_at[1]]);
    assert!(
        allowed[0] >= 3 * tokens_at[0] && allowed[1] >= 3 * tokens_at[1],
        "{allowed:?}"
    );
}

#[test]
fn a_replay_through_the_front_tier_is_refused_whatever_the_spelling_but_passes_at_another_instance() {
    let _serial = serial();
    let tier = Tier::start(&gateway_config(json!({})));
    let key = p256(7);
    let t = dpop_token(&key);
    let auth = format!("DPoP {t}");
    let p = proof(&key, &t, None);
    assert_eq!(tier.call(&auth, &p).status, 200);

    // Replayed through the front tier: the same instance, refused.
    let owner = tier.replayed_at(|| {
        let r = tier.call(&auth, &p);
        assert_denied("replay", &r, 401, REPLAYED, Some("invalid_dpop_proof"));
    });
    assert_eq!(tier.gateway(owner).decisions("deny", Some("proof_replayed")), 1);
    // The scheme in any case, any spaces or tabs: the filter reads the same credentials, and the
    // front tier hashes on the token alone, so every spelling reaches the same instance.
    for spelled in spellings(&t) {
        let at = tier.replayed_at(|| {
            let r = tier.call(&spelled, &p);
            assert_denied(&format!("{spelled:?}"), &r, 401, REPLAYED, Some("invalid_dpop_proof"));
        });
        assert_eq!(at, owner, "{spelled:?}");
    }

    // The control: the same proof at the other instance (what a balancer that does not hash on
    // the token may do) is accepted, once. One jti cache per instance.
    let other = 1 - owner;
    let r = tier.call_instance(other, &auth, &p);
    assert_eq!(r.status, 200, "{r:?}");
    let r = tier.call_instance(other, &auth, &p);
    assert_denied("second replay", &r, 401, REPLAYED, Some("invalid_dpop_proof"));

    // Hashing on the header's raw value (the shipped hash policy without its `regex_rewrite`):
    // a respelled replay of a used proof reaches the other instance and passes.
    let naive = Tier::front(&tier.files, &[tier.gateway(0).port, tier.gateway(1).port], false);
    let q = proof(&key, &t, None);
    assert_eq!(tier.call(&auth, &q).status, 200);
    let passed = spellings(&t).into_iter().find(|spelled| {
        let r = tier.call_at(&naive, spelled, &q);
        assert!(r.status == 200 || r.status == 401, "{r:?}");
        r.status == 200
    });
    let passed = passed.expect("some spelling reaches the other instance");
    let scheme = passed.strip_suffix(t.as_str()).unwrap();
    println!("hashing on the raw header: the replay as {scheme:?} + token passed at the other instance");
}

/// Sends fresh proofs for `token` through the front tier until one is accepted (following nonce
/// challenges, as a client does), at most for `secs` seconds. Returns the accepted proof, how
/// long it took, and the statuses of the failed attempts.
fn until_accepted(
    tier: &Tier,
    key: &dyn Signer,
    token: &str,
    nonce: &mut Option<String>,
    secs: u64,
) -> Option<(String, Duration, Vec<u16>)> {
    let auth = format!("DPoP {token}");
    let start = Instant::now();
    let mut failed = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let p = proof(key, token, nonce.as_deref());
        let r = tier.call(&auth, &p);
        // A new nonce comes with a challenge, or with an answer to a proof whose nonce is of the
        // previous step.
        if let Some(fresh) = r.header("dpop-nonce") {
            *nonce = Some(fresh.to_owned());
        }
        if r.status == 200 {
            return Some((p, start.elapsed(), failed));
        }
        if r.header("dpop-nonce").is_some() {
            continue;
        }
        failed.push(r.status);
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn when_an_instance_dies_its_tokens_move_and_the_nonce_window_bounds_a_replay_there() {
    const STEP: u64 = 3;
    let _serial = serial();
    let secret = b64::encode(&[42; 32]);
    let tier_cfg =
        gateway_config(json!({"dpop": {"nonce": {"mode": "required", "secrets": [secret], "step_seconds": STEP}}}));
    let mut tier = Tier::start(&tier_cfg);
    let key = p256(9);
    let t = dpop_token(&key);
    let auth = format!("DPoP {t}");

    // The client uses two proofs with a nonce (an attacker captures both).
    let mut nonce = None;
    let (p, _, _) = until_accepted(&tier, &key, &t, &mut nonce, 10).unwrap();
    let (q, _, _) = until_accepted(&tier, &key, &t, &mut nonce, 10).unwrap();
    let q_nonce = proof_nonce(&q);
    // The instance that holds the token: where a replay of the first is refused.
    let victim = tier.replayed_at(|| {
        let r = tier.call(&auth, &p);
        assert_denied("replay", &r, 401, REPLAYED, Some("invalid_dpop_proof"));
    });
    let survivor = 1 - victim;

    // The instance dies (its Envoy is killed).
    tier.gateways[victim] = None;
    let died = Instant::now();
    let (fresh, failover, failed) =
        until_accepted(&tier, &key, &t, &mut nonce, 60).expect("the token is served by the surviving instance");
    // It is the survivor that accepted it: a replay of that proof is refused there.
    let at = tier.replayed_at(|| assert_eq!(tier.call(&auth, &fresh).status, 401));
    assert_eq!(at, survivor);

    // A proof used at the dead instance, replayed through the front tier: it reaches the survivor,
    // which has never seen it. While its nonce is good (its step or the next), it passes, once.
    let p_step = nonce_step(&proof_nonce(&p));
    let before = now() / STEP;
    let r = tier.call(&auth, &p);
    let after = now() / STEP;
    let replay_after_death = r.status;
    if after <= p_step + 1 {
        assert_eq!(r.status, 200, "inside the nonce window: {r:?}");
        let r = tier.call(&auth, &p);
        assert_eq!(r.status, 401, "{r:?}");
    } else if before > p_step + 1 {
        assert_eq!(r.status, 401, "after the nonce window: {r:?}");
    }

    // The front takes the dead instance out (connection failures, then health checks).
    let detected = eventually(30, || tier.front_stat("membership_healthy") == 1).then(|| died.elapsed());

    // Once the nonce window of the second captured proof has passed (two steps from the step its
    // nonce was issued in), its replay is refused at the survivor.
    let q_step = nonce_step(&q_nonce);
    while now() / STEP <= q_step + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let invalid = tier.gateway(survivor).decisions("deny", Some("proof_nonce_invalid"));
    let r = tier.call(&auth, &q);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|w| w.contains("use_dpop_nonce")),
        "{r:?}"
    );
    assert_eq!(
        tier.gateway(survivor).decisions("deny", Some("proof_nonce_invalid")),
        invalid + 1
    );

    println!(
        "instance {victim} killed: its token was served by instance {survivor} after {failover:?} \
         ({} failed requests: {failed:?}); the front's retries {}, connect failures {}, ejections {}, \
         healthy instances 1 after {detected:?}; a proof used before the death replayed at the survivor: \
         {replay_after_death} (nonce step {p_step}, replayed in step {before}..{after}, step_seconds {STEP}); \
         after the nonce window (2 × {STEP} s): 401 use_dpop_nonce",
        failed.len(),
        tier.front_stat("upstream_rq_retry"),
        tier.front_stat("upstream_cx_connect_fail"),
        tier.front_stat("outlier_detection.ejections_enforced_total"),
    );
}

#[test]
fn when_an_instance_hangs_the_front_takes_it_out_and_its_tokens_move_there_and_back() {
    let _serial = serial();
    let tier = Tier::start(&gateway_config(json!({})));
    let key = p256(11);
    let t = dpop_token(&key);
    let auth = format!("DPoP {t}");
    let p = proof(&key, &t, None);
    assert_eq!(tier.call(&auth, &p).status, 200);
    let victim = tier.replayed_at(|| assert_eq!(tier.call(&auth, &p).status, 401));
    let survivor = 1 - victim;

    // The instance hangs (SIGSTOP): its kernel still accepts connections, nothing answers.
    tier.freeze(victim, true);
    let hung = Instant::now();
    // Meanwhile a request for the token every 250 ms for 10 s (each may wait on a connection the
    // front already had to the hung instance): when it was sent, its status, how long it took.
    let (probes, detected) = std::thread::scope(|s| {
        let probes: Vec<_> = (0..40u64)
            .map(|i| {
                let (tier, key, t, auth) = (&tier, &key, &t, &auth);
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(250 * i).saturating_sub(hung.elapsed()));
                    let sent = hung.elapsed();
                    let r = tier.call(auth, &proof(key, t, None));
                    (sent.as_millis(), r.status, (hung.elapsed() - sent).as_millis())
                })
            })
            .collect();
        let detected = eventually(60, || tier.front_stat("membership_healthy") == 1).then(|| hung.elapsed());
        let probes: Vec<(u128, u16, u128)> = probes.into_iter().map(|h| h.join().unwrap()).collect();
        (probes, detected)
    });
    assert!(detected.is_some(), "the front never took the hung instance out");
    // Once it is out (by then failed health checks keep it out, whatever the ejection's
    // length), the token is served by the other instance.
    let out = eventually(60, || tier.front_stat("membership_healthy") == 1);
    assert!(out, "the hung instance is back on the ring");
    let (fresh, _, _) = until_accepted(&tier, &key, &t, &mut None, 10).expect("served by the other instance");
    // Without nonces, a proof used at the hung instance passes once at the other one.
    let r = tier.call(&auth, &p);
    assert_eq!(r.status, 200, "{r:?}");
    let at = tier.replayed_at(|| assert_eq!(tier.call(&auth, &p).status, 401));
    assert_eq!(at, survivor);

    // It answers again: after two good health checks its tokens return to it, and a proof used at
    // the other instance meanwhile passes there once too.
    tier.freeze(victim, false);
    let resumed = Instant::now();
    let back = eventually(60, || tier.front_stat("membership_healthy") == 2).then(|| resumed.elapsed());
    assert!(back.is_some(), "the instance never came back");
    // For a moment, requests of one token may still reach either instance (the front's workers
    // take up the new ring one after the other), so a proof and its replay can both pass. Until
    // three proofs in a row and their replays reach it (`None`: the replay passed elsewhere).
    let mut in_a_row = 0;
    let mut settling: Vec<Option<usize>> = Vec::new();
    while in_a_row < 3 {
        let p = proof(&key, &t, None);
        assert_eq!(tier.call(&auth, &p).status, 200);
        let before = tier.counters("replays");
        let r = tier.call(&auth, &p);
        let after = tier.counters("replays");
        let at = if r.status == 200 {
            None
        } else {
            assert_denied("replay", &r, 401, REPLAYED, Some("invalid_dpop_proof"));
            (0..2).find(|i| after[*i] > before[*i])
        };
        settling.push(at);
        in_a_row = if at == Some(victim) { in_a_row + 1 } else { 0 };
        assert!(settling.len() < 200, "{settling:?}");
    }
    // The proof used at the other instance while this one hung: it may pass here once (the
    // returned instance has not seen it), never more, and never again at the other instance.
    // Which of the two a request reaches right after the return is the front's business, so
    // three sends: at most one passes, every other is refused as a replay.
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            let r = tier.call(&auth, &fresh);
            if r.status != 200 {
                assert_denied("replay after the return", &r, 401, REPLAYED, Some("invalid_dpop_proof"));
            }
            r.status
        })
        .collect();
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        passed <= 1,
        "a proof passed twice at the returned instance: {statuses:?}"
    );
    println!(
        "after the return, the proof used at the other instance meanwhile: {statuses:?} ({} at the returned instance)",
        if passed == 1 { "passed once" } else { "not replayed" }
    );

    let failed: Vec<_> = probes.iter().filter(|(_, status, _)| *status != 200).collect();
    let first_ok = probes.iter().find(|(_, status, _)| *status == 200);
    let slowest_ok = probes
        .iter()
        .filter(|(_, status, _)| *status == 200)
        .map(|(_, _, ms)| ms)
        .max();
    println!(
        "instance {victim} hung: healthy instances 1 after {detected:?}; of 40 requests sent over 10 s, \
         {} failed (sent at ms, status, took ms): {failed:?}; the first that succeeded (sent, status, took): \
         {first_ok:?}, the slowest success took {slowest_ok:?} ms; the front's health check failures {}, \
         ejections {}, retries {}; a proof used at the hung instance replayed: 200 once; resumed: back on \
         the ring after {back:?} (then where replays of the token's proofs were refused, None: \
         passed: {settling:?}), a proof used meanwhile at instance {survivor} replayed: 200 once",
        failed.len(),
        tier.front_stat("health_check.failure"),
        tier.front_stat("outlier_detection.ejections_enforced_total"),
        tier.front_stat("upstream_rq_retry"),
    );
}
