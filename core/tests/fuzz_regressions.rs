//! Replays every fuzz seed (`fuzz/seeds/<target>/`) and every regression input
//! (`fuzz/regressions/<target>/`) through the checks of the corresponding cargo-fuzz target, on
//! stable Rust, so a crash found once by the fuzzer stays fixed without running the fuzzer.
//!
//! The checks are the fuzz crate's own `fuzz/src/checks.rs`, included verbatim: no panic, and the
//! same properties (JWK thumbprint round trip, `htu` idempotence, XFCC re-parse, DPoP binding).
//! A target whose seed or regression directory is missing or empty fails the test, and so does a
//! fuzz target without a replay here.
//!
//! `fuzz/known-failures/<target>/` holds inputs that still fail a check because of a known,
//! not yet fixed core bug (see `fuzz/README.md`). They must keep failing: once core is fixed the
//! `known_failures_still_fail` test says so, and the input moves to `fuzz/regressions/<target>/`.

mod checks {
    include!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/src/checks.rs"));
}

/// Helpers, in a `cfg(test)` module so that clippy's test allowances (unwrap, panic) apply.
#[cfg(test)]
mod replay {
    use std::path::{Path, PathBuf};

    use super::checks;

    /// A fuzz target's check.
    pub type Check = fn(&[u8]);

    /// The fuzz targets and their checks; must list every file of `fuzz/fuzz_targets/`.
    pub const TARGETS: [(&str, Check); 7] = [
        ("jws", checks::check_jws),
        ("jwk", checks::check_jwk),
        ("dpop", checks::check_dpop),
        ("xfcc", checks::check_xfcc),
        ("htu", checks::check_htu),
        ("path", checks::check_path),
        ("qc", checks::check_qc),
    ];

    pub fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
    }

    /// The input files of one target: seeds and regressions, each directory required, non-empty.
    pub fn inputs(target: &str) -> Vec<PathBuf> {
        let mut all = Vec::new();
        for kind in ["seeds", "regressions"] {
            let dir = fuzz_dir().join(kind).join(target);
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut files: Vec<PathBuf> = entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect();
            assert!(!files.is_empty(), "{} has no inputs", dir.display());
            files.sort();
            all.extend(files);
        }
        all
    }

    pub fn check_of(target: &str) -> Check {
        TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .map(|(_, check)| *check)
            .unwrap()
    }

    pub fn passes(check: Check, path: &Path) -> bool {
        let data = std::fs::read(path).unwrap();
        std::panic::catch_unwind(|| check(&data)).is_ok()
    }

    pub fn replay(target: &str) {
        let check = check_of(target);
        let files = inputs(target);
        let mut failed = Vec::new();
        for path in &files {
            if !passes(check, path) {
                failed.push(path.display().to_string());
            }
        }
        assert!(
            failed.is_empty(),
            "{target}: {} of {} inputs failed:\n{}",
            failed.len(),
            files.len(),
            failed.join("\n")
        );
    }
}

#[test]
fn jws_inputs() {
    replay::replay("jws");
}

#[test]
fn jwk_inputs() {
    replay::replay("jwk");
}

#[test]
fn dpop_inputs() {
    replay::replay("dpop");
}

#[test]
fn xfcc_inputs() {
    replay::replay("xfcc");
}

#[test]
fn htu_inputs() {
    replay::replay("htu");
}

#[test]
fn path_inputs() {
    replay::replay("path");
}

#[test]
fn every_fuzz_target_is_replayed() {
    let dir = replay::fuzz_dir().join("fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut replayed: Vec<String> = replay::TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    replayed.sort();
    assert_eq!(on_disk, replayed);
}

#[test]
fn known_failures_still_fail() {
    let root = replay::fuzz_dir().join("known-failures");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return;
    };
    let mut fixed = Vec::new();
    for dir in dirs {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        let check = replay::check_of(&target);
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.is_file() && replay::passes(check, &path) {
                fixed.push(path.display().to_string());
            }
        }
    }
    assert!(
        fixed.is_empty(),
        "these known failures pass now: move them to fuzz/regressions/<target>/:\n{}",
        fixed.join("\n")
    );
}
