//! The last part of the browser step of `cargo xtask test` (issue 16, item 3): the npm package's
//! tarball installed into the app projects of `browser/bundlers/` (Vite 8 with no configuration,
//! Vite 7 with its one line, webpack 5 with none, a plain `<script type="module">` page) and used
//! in headless Chromium through the filter in a real Envoy: the ignored test `keybound-e2e`'s
//! `bundlers`, given the tarball with `KEYBOUND_BROWSER_TGZ`.
//!
//! Before it: `npm ci` in each project that has npm packages of its own (skipped when
//! `node_modules/.package-lock.json` is newer than `package-lock.json`). Every action prints a
//! line.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, tools};

/// Runs the bundler checks on the npm tarball `tgz`; see the module docs.
pub fn test(root: &Path, tgz: &Path) -> Result<(), String> {
    let projects = root.join("browser/bundlers");
    for project in project_dirs(&projects)? {
        install_project(root, &project)?;
    }
    tools::envoy(root)?;
    tools::build_filter(root)?;
    println!(
        "browser: {} in apps built with Vite (dev server and build), webpack 5 and a plain module page, through Envoy (headless Chromium)",
        tgz.display()
    );
    crate::e2e_ignored(root, "bundlers", &[("KEYBOUND_BROWSER_TGZ", tgz)], true)
}

/// The folders of `browser/bundlers/` with a `package.json`, sorted.
fn project_dirs(projects: &Path) -> Result<Vec<PathBuf>, String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(projects)
        .map_err(|e| format!("{}: {e}", projects.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("package.json").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// `npm ci` in a project, unless its packages are installed already or it has none.
fn install_project(root: &Path, project: &Path) -> Result<(), String> {
    let name = project.strip_prefix(root).unwrap_or(project).display().to_string();
    let manifest = std::fs::read_to_string(project.join("package.json")).map_err(|e| format!("{name}: {e}"))?;
    if !manifest.contains("\"devDependencies\"") && !manifest.contains("\"dependencies\"") {
        println!("browser: {name} has no npm packages of its own");
        return Ok(());
    }
    let stamp = project.join("node_modules/.package-lock.json");
    if stamp.exists() && tools::modified(&stamp) >= tools::modified(&project.join("package-lock.json")) {
        println!("browser: npm packages of {name} already installed");
        return Ok(());
    }
    println!("browser: npm ci in {name}");
    run(Command::new("npm")
        .current_dir(project)
        .args(["ci", "--no-audit", "--no-fund"]))
}
