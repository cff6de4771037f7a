//! The npm package `keybound-browser`: built by `cargo xtask package npm` (no tests) and by the
//! browser step of `cargo xtask test`, which installs the same tarball and tests it.
//!
//! The tarball `<target>/package/keybound-browser-<version>.tgz` (made by `npm pack` from the
//! staged package `<target>/package/npm/`) has two entry points, each its own wasm-bindgen output
//! (`--target web`, then `wasm-opt -Oz`, its JavaScript minified by esbuild) of keybound-browser
//! built for `wasm32-unknown-unknown`, behind an `index.js` that exports the glue and the
//! `DpopKey` class of `browser/src/dpop.js` (a wasm-bindgen snippet) bound to that glue:
//!
//! - `keybound-browser`: the default features (keys, proofs, the DPoP `fetch`, and login);
//! - `keybound-browser/dpop` (in `dpop/`): built without the `login` feature: keys, proofs and the
//!   DPoP `fetch` only, at most [`DPOP_BUDGET_GZIP`] bytes of wasm and JS gzipped.
//!
//! Both come from the same crate (the dpop entry is the same code with login left out). Each entry
//! has a `node` export condition: `node.js`, the same module whose `init()` without arguments reads
//! the package's own wasm with `fs/promises` (wasm-bindgen's loader would `fetch` a `file:` URL,
//! which Node refuses).
//!
//! The build fails when `keybound-browser/dpop` weighs more than [`DPOP_BUDGET_GZIP`]
//! ([`check_budget`]), so `cargo xtask package npm` and `cargo xtask test` catch a regression.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{browser, run, tools};

/// One entry point of the package.
pub struct Entry {
    /// The import specifier.
    pub specifier: &'static str,
    /// Its directory in the package (`""`: the root).
    pub dir: &'static str,
    /// wasm-bindgen's `--out-name`: the glue is `<name>.js`, the wasm `<name>_bg.wasm`.
    pub name: &'static str,
    /// The cargo feature flags of its build.
    pub features: &'static [&'static str],
}

/// The package's entry points.
pub const ENTRIES: [Entry; 2] = [
    Entry {
        specifier: "keybound-browser",
        dir: "",
        name: "keybound_browser",
        features: &[],
    },
    Entry {
        specifier: "keybound-browser/dpop",
        dir: "dpop",
        name: "keybound_dpop",
        features: &["--no-default-features"],
    },
];

/// What `keybound-browser/dpop` may weigh: its wasm and JS (`index.js`, glue and snippets), each
/// gzipped at level 9, together (20 KB).
pub const DPOP_BUDGET_GZIP: u64 = 20_000;

/// The built package.
pub struct NpmPackage {
    /// The tarball: `<target>/package/keybound-browser-<version>.tgz`.
    pub tarball: PathBuf,
    /// The staged package it was packed from: `<target>/package/npm`.
    pub staged: PathBuf,
    /// The sha256 of the tarball (hex).
    pub sha256: String,
    /// The sizes of each entry, in [`ENTRIES`] order.
    pub sizes: Vec<EntrySizes>,
}

/// What the browser downloads for one entry, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySizes {
    /// The wasm, raw.
    pub wasm: u64,
    /// The wasm, gzipped (level 9).
    pub wasm_gzip: u64,
    /// The JS: the glue and its snippets, raw.
    pub js: u64,
    /// The JS, each file gzipped (level 9).
    pub js_gzip: u64,
}

impl EntrySizes {
    /// wasm and JS gzipped, together.
    pub fn total_gzip(&self) -> u64 {
        self.wasm_gzip + self.js_gzip
    }
}

/// `cargo xtask package npm`: builds the package and prints where it is, its sha256 and sizes.
pub fn package(root: &Path) -> Result<(), String> {
    let pkg = build(root)?;
    println!("npm: {}", pkg.tarball.display());
    println!("  sha256:  {}", pkg.sha256);
    println!("  tarball: {} bytes", file_size(&pkg.tarball)?);
    print_sizes(&pkg);
    println!(
        "  install: npm install {}   (unpacked: {})",
        pkg.tarball.display(),
        pkg.staged.display()
    );
    Ok(())
}

/// Prints the sizes of each entry, and the dpop entry's budget.
pub fn print_sizes(pkg: &NpmPackage) {
    for (entry, s) in ENTRIES.iter().zip(&pkg.sizes) {
        println!(
            "  {:<22} wasm {} bytes ({} gzipped) + JS {} bytes ({} gzipped) = {} bytes gzipped",
            entry.specifier,
            s.wasm,
            s.wasm_gzip,
            s.js,
            s.js_gzip,
            s.total_gzip()
        );
    }
    if let Some(dpop) = pkg.sizes.get(1) {
        println!("  {}", budget_note(dpop.total_gzip()));
    }
}

/// Fails when the dpop entry's wasm and JS weigh more than [`DPOP_BUDGET_GZIP`] gzipped.
///
/// # Errors
/// The [`budget_note`] when over.
pub fn check_budget(dpop: &EntrySizes) -> Result<(), String> {
    if dpop.total_gzip() <= DPOP_BUDGET_GZIP {
        Ok(())
    } else {
        Err(budget_note(dpop.total_gzip()))
    }
}

/// Whether the dpop entry fits its budget, in words.
pub fn budget_note(dpop_gzip: u64) -> String {
    if dpop_gzip <= DPOP_BUDGET_GZIP {
        format!("keybound-browser/dpop: {dpop_gzip} bytes gzipped, within its budget of {DPOP_BUDGET_GZIP}")
    } else {
        format!(
            "keybound-browser/dpop: {dpop_gzip} bytes gzipped, OVER its budget of {DPOP_BUDGET_GZIP} by {}",
            dpop_gzip - DPOP_BUDGET_GZIP
        )
    }
}

/// Installs what the build needs (wasm-bindgen-cli, node and npm, binaryen from `browser/js`),
/// builds both entries into `<target>/package/npm` and packs the tarball beside it.
///
/// # Errors
/// A tool missing or failing, naming it.
pub fn build(root: &Path) -> Result<NpmPackage, String> {
    let wasm_bindgen = tools::wasm_bindgen_cli(root)?;
    tools::node()?;
    js_tools(root)?;
    let target = tools::target_dir(root);
    let out = target.join("package");
    let staged = out.join("npm");
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| format!("{}: {e}", staged.display()))?;
    }
    let mut sizes = Vec::new();
    for entry in &ENTRIES {
        let dir = staged.join(entry.dir);
        println!(
            "npm: building {} (release wasm {}, wasm-bindgen --target web, wasm-opt -Oz) into {}",
            entry.specifier,
            if entry.features.is_empty() {
                "with the default features"
            } else {
                "without login"
            },
            dir.display()
        );
        stage_entry(
            root,
            &wasm_bindgen.join("wasm-bindgen"),
            entry.features,
            &dir,
            entry.name,
        )?;
        sizes.push(entry_sizes(&dir, entry.name)?);
    }
    if let Some(dpop) = sizes.get(1) {
        check_budget(dpop)?;
    }
    let version = browser::workspace_version(root)?;
    write(&staged.join("package.json"), &package_json(&version))?;
    copy(&root.join("browser/npm/README.md"), &staged.join("README.md"))?;
    for license in ["LICENSE-APACHE", "LICENSE-MIT"] {
        copy(&root.join(license), &staged.join(license))?;
    }
    let tarball = out.join(format!("keybound-browser-{version}.tgz"));
    if tarball.exists() {
        std::fs::remove_file(&tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    }
    println!("npm: npm pack into {}", out.display());
    let packed = tools::capture(
        Command::new("npm")
            .current_dir(&staged)
            .args(["pack", "--json", "--pack-destination"])
            .arg(&out),
    )?;
    if !tarball.exists() {
        return Err(format!("npm pack did not write {}: {packed}", tarball.display()));
    }
    let sha256 = tools::capture(Command::new("sha256sum").arg(&tarball))?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(NpmPackage {
        tarball,
        staged,
        sha256,
        sizes,
    })
}

/// Builds one entry into `dir`: the release wasm with `features`, wasm-bindgen (glue
/// `<name>.js`, wasm `<name>_bg.wasm`, snippets) and wasm-opt, the JavaScript minified, then
/// `index.js` and its types, `dpop.d.ts` and `node.js`.
///
/// # Errors
/// A tool failing, naming it.
pub fn stage_entry(root: &Path, wasm_bindgen: &Path, features: &[&str], dir: &Path, name: &str) -> Result<(), String> {
    let target = tools::target_dir(root);
    let wasm = browser::build_wasm(root, &target, features)?;
    browser::bindgen(root, wasm_bindgen, &wasm, dir, name)?;
    let snippet = dpop_snippet(dir)?;
    for js in js_files(dir, name) {
        minify(root, &js)?;
    }
    write(&dir.join("index.js"), &index_module(name, &snippet))?;
    write(&dir.join("index.d.ts"), &index_types(name))?;
    copy(&root.join("browser/src/dpop.d.ts"), &dir.join("dpop.d.ts"))?;
    write(&dir.join("node.js"), &node_module(name))
}

/// The npm packages of `browser/js` (binaryen's wasm-opt, typescript, jose), with `npm ci` when
/// `package-lock.json` is newer than what is installed.
pub fn js_tools(root: &Path) -> Result<(), String> {
    let js = root.join("browser/js");
    let stamp = js.join("node_modules/.package-lock.json");
    if stamp.exists() && tools::modified(&stamp) >= tools::modified(&js.join("package-lock.json")) {
        println!("browser/js: npm packages installed");
        Ok(())
    } else {
        println!("browser/js: npm ci (typescript, jose, binaryen)");
        run(Command::new("npm")
            .current_dir(&js)
            .args(["ci", "--no-audit", "--no-fund"]))
    }
}

/// Installs the tarball into `dir` (an npm project) without saving it to its `package.json`,
/// and checks that the installed package is the tarball's (its wasm files equal the staged ones).
/// Returns the installed package's directory (`dir/node_modules/keybound-browser`).
///
/// # Errors
/// npm failing, or the installed files differing from the built ones.
pub fn install(pkg: &NpmPackage, dir: &Path) -> Result<PathBuf, String> {
    println!("npm: npm install {} in {}", pkg.tarball.display(), dir.display());
    run(Command::new("npm")
        .current_dir(dir)
        .args(["install", "--no-save", "--no-audit", "--no-fund", "--prefer-offline"])
        .arg(&pkg.tarball))?;
    let installed = dir.join("node_modules/keybound-browser");
    for entry in &ENTRIES {
        let wasm = Path::new(entry.dir).join(format!("{}_bg.wasm", entry.name));
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        if read(&installed.join(&wasm))? != read(&pkg.staged.join(&wasm))? {
            return Err(format!(
                "{} installed in {} differs from the one built",
                wasm.display(),
                installed.display()
            ));
        }
    }
    Ok(installed)
}

/// The path (from the entry's directory) of its copy of `browser/src/dpop.js`, which
/// wasm-bindgen put under `snippets/<crate>-<hash>/src/`.
fn dpop_snippet(dir: &Path) -> Result<String, String> {
    walk(&dir.join("snippets"))
        .into_iter()
        .find(|p| p.ends_with("src/dpop.js"))
        .and_then(|p| p.strip_prefix(dir).ok().map(|rel| format!("./{}", rel.display())))
        .ok_or_else(|| format!("no snippets/*/src/dpop.js in {}", dir.display()))
}

/// The entry's JavaScript as the browser downloads it: the wasm-bindgen glue `<name>.js` and
/// its snippets.
fn js_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut js = vec![dir.join(format!("{name}.js"))];
    js.extend(
        walk(&dir.join("snippets"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "js")),
    );
    js
}

/// Minifies a JavaScript module in place with esbuild (from `browser/js/node_modules`): no
/// comments or whitespace, short local names; exports and `new URL("…", import.meta.url)` stay.
fn minify(root: &Path, file: &Path) -> Result<(), String> {
    run(Command::new(root.join("browser/js/node_modules/.bin/esbuild"))
        .arg(file)
        .args(["--minify", "--format=esm", "--log-level=warning", "--allow-overwrite"])
        .arg(format!("--outfile={}", file.display())))
}

/// The entry module `index.js`: the wasm-bindgen glue `<name>.js` (its `init()` as the default
/// export), and `DpopKey` (the class of `dpop.js` bound to this glue) with `isKeyboundError`.
fn index_module(name: &str, snippet: &str) -> String {
    format!(
        r#"// keybound-browser: the wasm-bindgen module `{name}.js` and the DpopKey class bound to it.
import * as glue from "./{name}.js";
import {{ dpopKeyClass }} from "{snippet}";

export * from "./{name}.js";
export {{ default }} from "./{name}.js";
export {{ isKeyboundError }} from "{snippet}";

/** A DPoP key for one OAuth client in this origin (see dpop.d.ts). */
export const DpopKey = dpopKeyClass(glue);
"#
    )
}

/// The types of `index.js`.
fn index_types(name: &str) -> String {
    format!(
        r#"export * from "./{name}.js";
export {{ default }} from "./{name}.js";
export * from "./dpop.js";
"#
    )
}

/// The `node` export condition's module for the entry whose glue is `<name>.js`: `index.js`,
/// whose `init()` without a wasm source reads the package's own `<name>_bg.wasm` with
/// fs/promises.
fn node_module(name: &str) -> String {
    format!(
        r#"// keybound-browser under Node 20+ (the `node` export condition): the module `index.js`, whose
// `init()` without a wasm source reads the package's own `{name}_bg.wasm` with fs/promises (its
// loader would fetch() a file: URL, which Node's fetch refuses).
import initWasm from "./index.js";

export * from "./index.js";

/**
 * Loads the wasm: `init()` reads it from this package; `init({{ module_or_path }})` loads the
 * given source, as in browsers.
 */
export default async function init(options) {{
  const plain = options !== null && typeof options === "object" && Object.getPrototypeOf(options) === Object.prototype;
  if (options === undefined || (plain && options.module_or_path === undefined)) {{
    const {{ readFile }} = await import("node:fs/promises");
    const bytes = await readFile(new URL("./{name}_bg.wasm", import.meta.url));
    return initWasm({{ ...options, module_or_path: bytes }});
  }}
  return initWasm(options);
}}
"#
    )
}

/// The package's `package.json`.
fn package_json(version: &str) -> String {
    let mut exports = String::new();
    let mut files = String::new();
    for entry in &ENTRIES {
        let (key, prefix) = if entry.dir.is_empty() {
            (".".to_string(), "./".to_string())
        } else {
            (format!("./{}", entry.dir), format!("./{}/", entry.dir))
        };
        let name = entry.name;
        exports.push_str(&format!(
            r#"    "{key}": {{
      "types": "{prefix}index.d.ts",
      "node": "{prefix}node.js",
      "default": "{prefix}index.js"
    }},
    "{prefix}{name}_bg.wasm": {{
      "types": "{prefix}{name}_bg.wasm.d.ts",
      "default": "{prefix}{name}_bg.wasm"
    }},
"#
        ));
        for file in [
            "index.js".into(),
            "index.d.ts".into(),
            "dpop.d.ts".into(),
            format!("{name}.js"),
            format!("{name}.d.ts"),
            format!("{name}_bg.wasm"),
            format!("{name}_bg.wasm.d.ts"),
            "node.js".into(),
            "snippets/".into(),
        ] {
            files.push_str(&format!("    \"{prefix}{file}\",\n").replacen("./", "", 1));
        }
    }
    format!(
        r#"{{
  "name": "keybound-browser",
  "version": "{version}",
  "description": "DPoP (RFC 9449) for browsers: non-extractable WebCrypto keys, proofs, fetch with nonce retry, and OAuth login (PAR, PKCE)",
  "keywords": ["dpop", "oauth", "rfc9449", "webcrypto", "wasm", "fapi"],
  "license": "Apache-2.0 OR MIT",
  "repository": {{
    "type": "git",
    "url": "git+https://github.com/keybound/keybound.git",
    "directory": "browser"
  }},
  "type": "module",
  "engines": {{
    "node": ">=20"
  }},
  "main": "./index.js",
  "types": "./index.d.ts",
  "exports": {{
{exports}    "./package.json": "./package.json"
  }},
  "files": [
{files}    "LICENSE-APACHE",
    "LICENSE-MIT"
  ],
  "sideEffects": false
}}
"#
    )
}

/// The sizes of an entry's wasm and JS (`index.js`, the glue and its snippets) in `dir`.
fn entry_sizes(dir: &Path, name: &str) -> Result<EntrySizes, String> {
    let wasm = dir.join(format!("{name}_bg.wasm"));
    let mut js = js_files(dir, name);
    js.push(dir.join("index.js"));
    let mut sizes = EntrySizes {
        wasm: file_size(&wasm)?,
        wasm_gzip: gzipped(&wasm)?,
        js: 0,
        js_gzip: 0,
    };
    for file in &js {
        sizes.js += file_size(file)?;
        sizes.js_gzip += gzipped(file)?;
    }
    Ok(sizes)
}

fn file_size(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The size of a file gzipped at level 9 by node's zlib: the measure of the bench's size table
/// (`bench/browser/run.mjs`), so the budget checked here is the number BENCHMARKS.md shows.
fn gzipped(path: &Path) -> Result<u64, String> {
    let out = tools::capture(
        Command::new("node")
            .args([
                "-e",
                "const z=require('node:zlib'),f=require('node:fs');process.stdout.write(String(z.gzipSync(f.readFileSync(process.argv[1]),{level:9}).length))",
            ])
            .arg(path),
    )?;
    out.trim()
        .parse()
        .map_err(|e| format!("gzip size of {}: {e} ({out:?})", path.display()))
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() { walk(&path) } else { vec![path] }
        })
        .collect();
    files.sort();
    files
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("{} to {}: {e}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_json_exports_both_entries_with_types_first() {
        let json = package_json("1.2.3");
        assert!(json.contains(r#""version": "1.2.3""#), "{json}");
        for (key, prefix, name) in [(".", "./", "keybound_browser"), ("./dpop", "./dpop/", "keybound_dpop")] {
            let entry = format!(
                "\"{key}\": {{\n      \"types\": \"{prefix}index.d.ts\",\n      \"node\": \"{prefix}node.js\",\n      \"default\": \"{prefix}index.js\"\n    }}"
            );
            assert!(json.contains(&entry), "{entry}\n{json}");
            assert!(
                json.contains(&format!("\"{prefix}{name}_bg.wasm\": {{\n      \"types\"")),
                "{json}"
            );
        }
        for file in [
            "\"keybound_browser.js\"",
            "\"dpop/keybound_dpop_bg.wasm\"",
            "\"dpop/snippets/\"",
            "\"LICENSE-MIT\"",
        ] {
            assert!(json.contains(file), "{file}\n{json}");
        }
        assert!(json.contains(r#""license": "Apache-2.0 OR MIT""#));
        assert!(json.contains(r#""node": ">=20""#));
        assert!(json.contains(r#""sideEffects": false"#));
        assert!(
            !json.contains(",\n  }") && !json.contains(",\n  ]"),
            "no trailing commas: {json}"
        );
    }

    #[test]
    fn the_node_module_reads_its_own_wasm() {
        let js = node_module("keybound_dpop");
        assert!(js.contains(r#"import initWasm from "./index.js";"#), "{js}");
        assert!(js.contains(r#"export * from "./index.js";"#), "{js}");
        assert!(
            js.contains(r#"new URL("./keybound_dpop_bg.wasm", import.meta.url)"#),
            "{js}"
        );
    }

    #[test]
    fn the_budget_note_says_by_how_much() {
        assert!(budget_note(DPOP_BUDGET_GZIP).contains("within"));
        assert!(budget_note(DPOP_BUDGET_GZIP + 7).ends_with("OVER its budget of 20000 by 7"));
    }

    #[test]
    fn the_build_fails_over_the_budget() {
        let sizes = |wasm_gzip, js_gzip| EntrySizes {
            wasm: 0,
            wasm_gzip,
            js: 0,
            js_gzip,
        };
        assert_eq!(check_budget(&sizes(15_000, 5_000)), Ok(()));
        assert_eq!(
            check_budget(&sizes(15_000, 5_001)),
            Err(budget_note(20_001)),
            "one byte over fails"
        );
    }

    #[test]
    fn the_index_binds_dpop_key_to_its_own_glue() {
        let js = index_module("keybound_dpop", "./snippets/keybound-browser-0123/src/dpop.js");
        assert!(js.contains(r#"import * as glue from "./keybound_dpop.js";"#), "{js}");
        assert!(js.contains(r#"export { default } from "./keybound_dpop.js";"#), "{js}");
        assert!(js.contains("export const DpopKey = dpopKeyClass(glue);"), "{js}");
        assert!(
            js.contains(r#"import { dpopKeyClass } from "./snippets/keybound-browser-0123/src/dpop.js";"#),
            "{js}"
        );
        assert!(index_types("keybound_dpop").contains(r#"export * from "./dpop.js";"#));
    }
}
