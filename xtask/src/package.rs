//! `cargo xtask package [TARGET...] [--pin]`: builds what keybound ships as artifacts, into
//! `<target>/package/`. With no target it builds every one in [`TARGETS`]; runs no tests.
//!
//! - `filter-oci`: the filter (release, `wasm32-wasip1`) as an OCI image that Istio's
//!   `WasmPlugin` pulls (`url: oci://…`), an OCI image layout in `<target>/package/filter-oci`
//!   tagged with the workspace version. Prints the image's (manifest) digest and the sha256 of
//!   `plugin.wasm`, and whether `envoy/istio/` pins this image; `--pin` rewrites those pins.
//! - `npm`: the browser module as the npm package `keybound-browser`, the tarball
//!   `<target>/package/keybound-browser-<version>.tgz` (`npm pack` of `<target>/package/npm`), with
//!   its two entry points `keybound-browser` and `keybound-browser/dpop`; prints its path, sha256
//!   and sizes (see `npm.rs`).
//!
//! # The image format
//!
//! Istio's image fetcher (`pkg/wasm/imagefetcher.go`) takes three forms: a Docker image, or an
//! OCI image whose last layer is a `tar+gzip` layer holding `plugin.wasm` (both the *compat*
//! variant of the Wasm image spec), or the *oci* artifact variant with custom media types
//! (`application/vnd.module.wasm.config.v1+json` config, a raw `…content.layer.v1+wasm` layer).
//! We build the OCI compat image: umoci writes exactly that (standard OCI media types, one
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer made from a file), skopeo copies it to and
//! from any registry unchanged (`--preserve-digests`), and every registry and tool understands
//! it. Neither tool writes custom artifact media types, and Istio's fetcher reads the artifact
//! variant only in one particular two-layer shape. The manifest carries the annotation
//! `module.wasm.image/variant: compat` that the compat spec asks of OCI-typed images.
//!
//! # Reproducible
//!
//! The same source, Rust toolchain and umoci give the same image digest on every build, from any
//! checkout path: the wasm itself does not depend on the checkout path, and its dependencies'
//! source paths under `CARGO_HOME` are remapped (see [`tools::build_filter`]); `plugin.wasm` is
//! staged with mode 0644 and mtime 0 and owned by uid/gid 0 in the layer; the image config has
//! `created` 1970-01-01T00:00:00Z, no history, and platform `wasm`/`wasip1` (not the build
//! machine's). The gzip stream is umoci's: another umoci version may compress differently.
//!
//! # Pins
//!
//! For `oci://` URLs Istio compares a WasmPlugin's `sha256` with the digest of the image's
//! manifest (not with `plugin.wasm`'s sha256, which it checks only for `http(s)://` URLs), and a
//! URL `oci://repo@sha256:<hex>` is fetched by that digest and verified. The WasmPlugins in
//! `envoy/istio/` carry both; [`rewrite_pins`] sets them, [`check_pins`] compares them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::tools;

/// A package target: its name on the command line, what it builds, and how.
pub struct Target {
    /// The name `cargo xtask package NAME` selects it by.
    pub name: &'static str,
    /// One line for the usage text.
    pub about: &'static str,
    /// Builds it and prints what it built.
    pub build: fn(&Path, &Options) -> Result<(), String>,
}

/// Every package target, in build order.
pub const TARGETS: &[Target] = &[
    Target {
        name: "filter-oci",
        about: "the filter as an OCI image for Istio's WasmPlugin (target/package/filter-oci)",
        build: filter_oci,
    },
    Target {
        name: "npm",
        about: "the browser module as an npm tarball (target/package/keybound-browser-<version>.tgz)",
        build: npm,
    },
];

/// Flags of `cargo xtask package`.
pub struct Options {
    /// `--pin`: rewrite the image pins in `envoy/istio/*.yaml` to the built image.
    pub pin: bool,
}

/// The repository the WasmPlugins name (the placeholder registry is the user's to change; the
/// last path segment identifies our image).
pub const IMAGE_NAME: &str = "keybound-filter";

/// The tag of the image in the layout (and the one to push): the workspace version, which the
/// filter crate shares. It is not part of the manifest, so it does not change the digest.
pub const IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");

/// The manifest annotation of the Wasm image spec's compat variant with OCI media types.
const VARIANT_ANNOTATION: &str = "module.wasm.image/variant=compat";

/// The layer media type Istio's compat path reads.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `cargo xtask package [TARGET...] [--pin]`.
pub fn package(root: &Path, args: &[String]) -> ExitCode {
    let mut names = Vec::new();
    let mut options = Options { pin: false };
    for arg in args {
        match arg.as_str() {
            "--pin" => options.pin = true,
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            name if TARGETS.iter().any(|t| t.name == name) => names.push(name),
            other => {
                eprintln!("xtask package: unknown target or flag {other:?}\n{}", usage());
                return ExitCode::from(2);
            }
        }
    }
    let selected: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| names.is_empty() || names.contains(&t.name))
        .collect();
    if options.pin && !selected.iter().any(|t| t.name == "filter-oci") {
        eprintln!("xtask package: --pin pins the filter-oci image, which is not among the targets");
        return ExitCode::from(2);
    }
    for target in selected {
        println!("==> package {}", target.name);
        let start = Instant::now();
        if let Err(e) = (target.build)(root, &options) {
            eprintln!("xtask package {}: {e}", target.name);
            return ExitCode::FAILURE;
        }
        println!(
            "<== package {}: ok ({:.1} s)",
            target.name,
            start.elapsed().as_secs_f64()
        );
    }
    ExitCode::SUCCESS
}

/// The usage text of `cargo xtask package`.
pub fn usage() -> String {
    let mut text = String::from("usage: cargo xtask package [TARGET...] [--pin]\n  targets (default: all):");
    for t in TARGETS {
        text.push_str(&format!("\n    {:<12} {}", t.name, t.about));
    }
    text.push_str("\n  --pin        rewrite the image pins in envoy/istio/*.yaml to the image just built");
    text
}

/// The `npm` target.
fn npm(root: &Path, _options: &Options) -> Result<(), String> {
    crate::npm::package(root)
}

/// The `filter-oci` target.
fn filter_oci(root: &Path, options: &Options) -> Result<(), String> {
    let image = build_filter_image(root)?;
    let layout = image.layout.display();
    println!("filter-oci: OCI image layout {layout}, tag {IMAGE_TAG} (one {OCI_LAYER} layer holding plugin.wasm)");
    println!("  image digest (manifest): {}", image.digest);
    println!("  plugin.wasm sha256:      {}", image.wasm_sha256);
    if options.pin {
        let changed = pin_files(root, &image.digest)?;
        if changed.is_empty() {
            println!("  envoy/istio: already pins {}", image.digest);
        } else {
            println!(
                "  envoy/istio: now pins {} in {} (commit the change)",
                image.digest,
                changed.join(", ")
            );
        }
    } else {
        match check_pins(&istio_manifests(root)?, &image.digest) {
            Ok(()) => println!("  envoy/istio: pins this image"),
            Err(e) => println!("  envoy/istio: {e}"),
        }
    }
    println!("  push it: skopeo copy oci:{layout}:{IMAGE_TAG} docker://<registry>/<path>/{IMAGE_NAME}:{IMAGE_TAG}");
    Ok(())
}

/// The image `cargo xtask package filter-oci` built.
pub struct FilterImage {
    /// The OCI image layout (`<target>/package/filter-oci`), tagged [`IMAGE_TAG`].
    pub layout: PathBuf,
    /// The digest of its manifest: what Istio pins.
    pub digest: Digest,
    /// The filter the image holds as `plugin.wasm`.
    pub wasm: PathBuf,
    /// The sha256 of that file.
    pub wasm_sha256: Digest,
}

/// Installs the OCI tools, builds the filter and makes its image in `<target>/package/filter-oci`.
///
/// # Errors
/// A tool missing or failing, naming it.
pub fn build_filter_image(root: &Path) -> Result<FilterImage, String> {
    tools::oci_tools()?;
    tools::build_filter(root)?;
    let target = tools::target_dir(root);
    let wasm = target.join("wasm32-wasip1/release/keybound_filter.wasm");
    let out = target.join("package");
    let layout = out.join("filter-oci");
    let digest = make_image(&wasm, &layout, &out.join("filter-oci.stage"))?;
    let wasm_sha256 = sha256_file(&wasm)?;
    Ok(FilterImage {
        layout,
        digest,
        wasm,
        wasm_sha256,
    })
}

/// Makes the image of `wasm` as a fresh OCI layout `layout` (tag [`IMAGE_TAG`]), staging the file
/// in `stage`; returns the manifest's digest. See the module docs for what makes it reproducible.
fn make_image(wasm: &Path, layout: &Path, stage: &Path) -> Result<Digest, String> {
    for dir in [layout, stage] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    let plugin = stage.join("plugin.wasm");
    std::fs::copy(wasm, &plugin).map_err(|e| format!("{} to {}: {e}", wasm.display(), plugin.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("{}: {e}", plugin.display()))?;
    }
    std::fs::File::options()
        .write(true)
        .open(&plugin)
        .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH))
        .map_err(|e| format!("{}: setting its mtime: {e}", plugin.display()))?;
    let image = format!("{}:{IMAGE_TAG}", layout.display());
    quiet(Command::new(tools::UMOCI).args(["init", "--layout"]).arg(layout))?;
    quiet(Command::new(tools::UMOCI).args(["new", "--image", &image]))?;
    quiet(
        Command::new(tools::UMOCI)
            .args(["insert", "--no-history", "--image", &image])
            .args(owner_flags()?)
            .arg(&plugin)
            .arg("/plugin.wasm"),
    )?;
    quiet(Command::new(tools::UMOCI).args([
        "config",
        "--no-history",
        "--created",
        "1970-01-01T00:00:00Z",
        "--architecture",
        "wasm",
        "--os",
        "wasip1",
        "--manifest.annotation",
        VARIANT_ANNOTATION,
        "--image",
        &image,
    ]))?;
    quiet(Command::new(tools::UMOCI).args(["gc", "--layout"]).arg(layout))?;
    let digest = oci_digest(layout)?;
    // The manifest blob must hash to the digest skopeo reports (the layout is consistent).
    let blob = layout.join("blobs/sha256").join(digest.hex());
    let actual = sha256_file(&blob)?;
    if actual != digest {
        return Err(format!("{} hashes to {actual}, not {digest}", blob.display()));
    }
    Ok(digest)
}

/// umoci's flags for the owner of the inserted file: uid and gid 0 in the layer whoever builds
/// (as root the file is root's; otherwise umoci's rootless mode maps our ids to 0).
fn owner_flags() -> Result<Vec<String>, String> {
    let id = |flag: &str| tools::capture(Command::new("id").arg(flag)).map(|s| s.trim().to_string());
    let (uid, gid) = (id("-u")?, id("-g")?);
    let mut flags = vec![
        "--uid-map".to_string(),
        format!("0:{uid}:1"),
        "--gid-map".to_string(),
        format!("0:{gid}:1"),
    ];
    if uid != "0" {
        flags.push("--rootless".into());
    }
    Ok(flags)
}

/// The manifest digest of the image tagged [`IMAGE_TAG`] in the OCI layout `layout`.
fn oci_digest(layout: &Path) -> Result<Digest, String> {
    let out = tools::capture(
        Command::new(tools::SKOPEO)
            .args(["inspect", "--format", "{{.Digest}}"])
            .arg(format!("oci:{}:{IMAGE_TAG}", layout.display())),
    )?;
    Digest::parse(out.trim())
}

/// The sha256 of a file, by `sha256sum`.
fn sha256_file(path: &Path) -> Result<Digest, String> {
    parse_sha256sum(&tools::capture(Command::new("sha256sum").arg(path))?)
}

/// The digest in `sha256sum`'s output (`<hex>  <file>`).
fn parse_sha256sum(out: &str) -> Result<Digest, String> {
    let hex = out.split_whitespace().next().unwrap_or_default();
    Digest::from_hex(hex).map_err(|e| format!("sha256sum said {out:?}: {e}"))
}

/// A sha256 content digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// 64 lower-case hex digits.
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lower-case hex digits>`.
    ///
    /// # Errors
    /// Anything else, quoted.
    pub fn parse(s: &str) -> Result<Digest, String> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("{s:?} is no sha256 digest (sha256:<64 hex digits>)"))?;
        Digest::from_hex(hex)
    }

    /// From the 64 lower-case hex digits alone (the form of a WasmPlugin's `sha256`).
    ///
    /// # Errors
    /// Anything else, quoted.
    pub fn from_hex(hex: &str) -> Result<Digest, String> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Digest { hex: hex.to_string() })
        } else {
            Err(format!("{hex:?} is not 64 lower-case hex digits"))
        }
    }

    /// The hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

// ---------------------------------------------------------------------------------------------
// Pins in envoy/istio/*.yaml

/// One place a WasmPlugin pins the image: the `url` (`oci://…@sha256:<hex>`) or the `sha256`
/// field, with its 1-based line and the digest it names (`None`: unpinned or not a digest).
#[derive(Debug, PartialEq, Eq)]
pub struct Pin {
    /// 1-based line number.
    pub line: usize,
    /// `url` or `sha256`.
    pub field: &'static str,
    /// The digest pinned there.
    pub digest: Option<Digest>,
}

/// A YAML line `url: oci://…/keybound-filter…` (our image in any registry): its indentation,
/// the image reference without its tag or digest (`repo`), and a trailing comment, if any.
fn image_url(line: &str) -> Option<(usize, &str, &str, &str)> {
    let indent = line.len() - line.trim_start().len();
    let value = line.trim_start().strip_prefix("url:")?.trim_start();
    let (value, comment) = match value.find(" #") {
        Some(i) => (value.get(..i)?, value.get(i..)?),
        None => (value, ""),
    };
    let reference = value.trim().strip_prefix("oci://")?;
    let (named, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, d),
        None => (reference, ""),
    };
    // A tag is after the last `/` (a `:` before it is the registry's port).
    let last_slash = named.rfind('/').unwrap_or(0);
    let repo = match named.rfind(':') {
        Some(colon) if colon > last_slash => named.get(..colon)?,
        _ => named,
    };
    if repo.rsplit('/').next() != Some(IMAGE_NAME) {
        return None;
    }
    Some((indent, repo, digest, comment))
}

/// A YAML line `sha256: <value>`: its indentation and value (comment removed).
fn sha256_field(line: &str) -> Option<(usize, &str)> {
    let indent = line.len() - line.trim_start().len();
    let value = line.trim_start().strip_prefix("sha256:")?;
    let value = value.split(" #").next().unwrap_or_default().trim();
    Some((indent, value.trim_matches('"')))
}

/// The documents of a YAML stream as line ranges (split at `---` lines), with 0-based lines.
fn documents(lines: &[&str]) -> Vec<std::ops::Range<usize>> {
    let mut docs = Vec::new();
    let mut start = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_end() == "---" {
            docs.push(start..i);
            start = i + 1;
        }
    }
    docs.push(start..lines.len());
    docs
}

/// The pins of our image in a YAML file: every `url` naming it, and every `sha256` field at the
/// same indentation in the same document.
pub fn find_pins(text: &str) -> Vec<Pin> {
    let lines: Vec<&str> = text.lines().collect();
    let mut pins = Vec::new();
    for doc in documents(&lines) {
        let mut indents = Vec::new();
        for i in doc.clone() {
            if let Some((indent, _, digest, _)) = lines.get(i).and_then(|l| image_url(l)) {
                indents.push(indent);
                pins.push(Pin {
                    line: i + 1,
                    field: "url",
                    digest: Digest::parse(digest).ok(),
                });
            }
        }
        for i in doc {
            if let Some((indent, value)) = lines.get(i).and_then(|l| sha256_field(l))
                && indents.contains(&indent)
            {
                pins.push(Pin {
                    line: i + 1,
                    field: "sha256",
                    digest: Digest::from_hex(value).ok(),
                });
            }
        }
    }
    pins.sort_by_key(|p| p.line);
    pins
}

/// `text` with every pin of our image set to `digest`: each `url` becomes
/// `oci://<repo>@sha256:<hex>` (a tag is dropped: Istio fetches by the digest), each `sha256`
/// field `<hex>`; a document whose `url` has no `sha256` field gets one right after the `url`.
pub fn rewrite_pins(text: &str, digest: &Digest) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 2);
    for doc in documents(&lines) {
        let urls: Vec<(usize, usize)> = doc
            .clone()
            .filter_map(|i| lines.get(i).and_then(|l| image_url(l)).map(|(indent, ..)| (i, indent)))
            .collect();
        let has_field = doc.clone().any(|i| {
            lines
                .get(i)
                .and_then(|l| sha256_field(l))
                .is_some_and(|(indent, _)| urls.iter().any(|(_, u)| *u == indent))
        });
        for i in doc.clone() {
            let Some(line) = lines.get(i) else { continue };
            if let Some((indent, repo, _, comment)) = image_url(line) {
                let pad = " ".repeat(indent);
                out.push(format!("{pad}url: oci://{repo}@{digest}{comment}"));
                if !has_field && urls.first().is_some_and(|(first, _)| *first == i) {
                    out.push(format!("{pad}sha256: {}", digest.hex()));
                }
            } else if let Some((indent, _)) = sha256_field(line)
                && urls.iter().any(|(_, u)| *u == indent)
            {
                let comment = line.find(" #").and_then(|c| line.get(c..)).unwrap_or_default();
                out.push(format!("{}sha256: {}{comment}", " ".repeat(indent), digest.hex()));
            } else {
                out.push((*line).to_string());
            }
        }
        if doc.end < lines.len() {
            out.push("---".into());
        }
    }
    let mut text_out = out.join("\n");
    if text.ends_with('\n') {
        text_out.push('\n');
    }
    text_out
}

/// Checks that `files` (name, text) pin `digest` everywhere they name our image, and name it
/// somewhere, pinned both by `url` and by `sha256`.
///
/// # Errors
/// Every stale, missing or malformed pin, and what to run.
pub fn check_pins(files: &[(String, String)], digest: &Digest) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut urls = 0;
    for (name, text) in files {
        let pins = find_pins(text);
        let count = |field: &str| pins.iter().filter(|p| p.field == field).count();
        if count("url") > 0 && count("sha256") == 0 {
            problems.push(format!("{name}: no sha256 field"));
        }
        urls += count("url");
        for pin in pins {
            match &pin.digest {
                Some(d) if d == digest => {}
                Some(d) => problems.push(format!("{name}:{} {} pins {d}", pin.line, pin.field)),
                None => problems.push(format!("{name}:{} {} pins no digest", pin.line, pin.field)),
            }
        }
    }
    if urls == 0 {
        problems.push(format!("no WasmPlugin url names the {IMAGE_NAME} image"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the filter builds the image {digest}, but {}: run `cargo xtask package --pin` and commit the change",
            problems.join("; ")
        ))
    }
}

/// The Istio manifests (`envoy/istio/*.yaml`, sorted) as (path relative to `root`, text).
fn istio_manifests(root: &Path) -> Result<Vec<(String, String)>, String> {
    let dir = root.join("envoy/istio");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let name = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            Ok((name, text))
        })
        .collect()
}

/// `--pin`: rewrites the pins in `envoy/istio/*.yaml`; returns the files it changed.
fn pin_files(root: &Path, digest: &Digest) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for (name, text) in istio_manifests(root)? {
        let new = rewrite_pins(&text, digest);
        if new != text {
            let path = root.join(&name);
            std::fs::write(&path, &new).map_err(|e| format!("{}: {e}", path.display()))?;
            changed.push(name);
        }
    }
    Ok(changed)
}

// ---------------------------------------------------------------------------------------------
// The step of `cargo xtask test`

/// The package step of `cargo xtask test`: builds the image (twice, to see it is reproducible),
/// pushes it to a local `docker-registry` with skopeo, pulls it back by its digest into a fresh
/// layout, checks the digest, the manifest's form and `plugin.wasm` byte for byte, loads the
/// pulled-back `plugin.wasm` with each WasmPlugin's configuration in Envoy (`--mode validate`,
/// the ignored test `tests/tests/oci_image.rs`), and checks the pins in `envoy/istio/`.
///
/// # Errors
/// The first check that failed; a stale pin says to run `cargo xtask package --pin`.
pub fn test(root: &Path) -> Result<(), String> {
    tools::envoy(root)?;
    let image = build_filter_image(root)?;
    println!("package: built {} (plugin.wasm {})", image.digest, image.wasm_sha256);
    let tmp = TempDir::new("keybound-package-test")?;

    let again = make_image(&image.wasm, &tmp.0.join("again"), &tmp.0.join("again.stage"))?;
    if again != image.digest {
        return Err(format!(
            "the image is not reproducible: a second build gave {again}, the first {}",
            image.digest
        ));
    }
    println!("package: a second build gives the same digest");

    let start = Instant::now();
    let registry = Registry::start(&tmp.0.join("registry"))?;
    let repo = format!("127.0.0.1:{}/keybound/{IMAGE_NAME}", registry.port);
    println!(
        "package: docker-registry (pid {}) on 127.0.0.1:{} ({:.1} s)",
        registry.child.id(),
        registry.port,
        start.elapsed().as_secs_f64()
    );
    let result = push_and_pull(&image, &repo, &tmp.0);
    let result = result.map_err(|e| format!("{e}\nregistry log (last lines):\n{}", registry.log_tail()));
    drop(registry);
    let plugin = result?;

    println!("package: the pulled-back plugin.wasm in Envoy (--mode validate), each WasmPlugin's config");
    crate::e2e_ignored(root, "oci_image", &[("KEYBOUND_OCI_PLUGIN_WASM", &plugin)], false)?;

    check_pins(&istio_manifests(root)?, &image.digest)?;
    println!("package: envoy/istio pins {}", image.digest);
    Ok(())
}

/// Pushes the image to `repo` (tag [`IMAGE_TAG`]), pulls it back by digest into `<tmp>/pulled`
/// and unpacks it into `<tmp>/rootfs`; checks digests, form and bytes; returns the pulled-back
/// `plugin.wasm`.
fn push_and_pull(image: &FilterImage, repo: &str, tmp: &Path) -> Result<PathBuf, String> {
    let start = Instant::now();
    let pushed_file = tmp.join("pushed-digest");
    quiet(
        Command::new(tools::SKOPEO)
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false", "--digestfile"])
            .arg(&pushed_file)
            .arg(format!("oci:{}:{IMAGE_TAG}", image.layout.display()))
            .arg(format!("docker://{repo}:{IMAGE_TAG}")),
    )?;
    let pushed = std::fs::read_to_string(&pushed_file).map_err(|e| format!("{}: {e}", pushed_file.display()))?;
    expect_digest("skopeo pushed", &Digest::parse(pushed.trim())?, &image.digest)?;
    let tagged = tools::capture(
        Command::new(tools::SKOPEO)
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{repo}:{IMAGE_TAG}")),
    )?;
    expect_digest(
        &format!("the registry's tag {IMAGE_TAG}"),
        &Digest::parse(tagged.trim())?,
        &image.digest,
    )?;
    println!(
        "package: pushed {repo}:{IMAGE_TAG} ({:.1} s)",
        start.elapsed().as_secs_f64()
    );

    // Pulled back as a pinned WasmPlugin pulls it: by digest.
    let start = Instant::now();
    let pulled = tmp.join("pulled");
    quiet(
        Command::new(tools::SKOPEO)
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{repo}@{}", image.digest))
            .arg(format!("oci:{}:{IMAGE_TAG}", pulled.display())),
    )?;
    expect_digest("the pulled-back image", &oci_digest(&pulled)?, &image.digest)?;
    let manifest = tools::capture(
        Command::new(tools::SKOPEO)
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:{IMAGE_TAG}", pulled.display())),
    )?;
    check_manifest(&manifest)?;
    let rootfs = tmp.join("rootfs");
    quiet(
        Command::new(tools::UMOCI)
            .args(["raw", "unpack"])
            .args(owner_flags()?)
            .args(["--image", &format!("{}:{IMAGE_TAG}", pulled.display())])
            .arg(&rootfs),
    )?;
    let mut entries: Vec<String> = std::fs::read_dir(&rootfs)
        .map_err(|e| format!("{}: {e}", rootfs.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    entries.sort();
    if entries != ["plugin.wasm"] {
        return Err(format!("the image's layer holds {entries:?}, not just plugin.wasm"));
    }
    let plugin = rootfs.join("plugin.wasm");
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    if read(&plugin)? != read(&image.wasm)? {
        return Err(format!(
            "the pulled-back plugin.wasm differs from {}",
            image.wasm.display()
        ));
    }
    println!(
        "package: pulled back by digest; the manifest is {}, plugin.wasm equals the built filter byte for byte ({:.1} s)",
        image.digest,
        start.elapsed().as_secs_f64()
    );
    Ok(plugin)
}

fn expect_digest(what: &str, actual: &Digest, built: &Digest) -> Result<(), String> {
    if actual == built {
        Ok(())
    } else {
        Err(format!("{what} has the digest {actual}, the built image {built}"))
    }
}

/// Checks the raw manifest has the form Istio's compat path reads: exactly one layer, of media
/// type [`OCI_LAYER`], and the compat annotation.
fn check_manifest(manifest: &str) -> Result<(), String> {
    let types = layer_media_types(manifest).ok_or_else(|| format!("no layers in the manifest {manifest}"))?;
    if types != [OCI_LAYER] {
        return Err(format!(
            "the manifest's layers are {types:?}, not one {OCI_LAYER}: {manifest}"
        ));
    }
    if !manifest.contains(r#""module.wasm.image/variant":"compat""#) {
        return Err(format!("the manifest lacks the compat annotation: {manifest}"));
    }
    Ok(())
}

/// The `mediaType`s in the `layers` array of an image manifest, as umoci writes it (compact
/// JSON; a layer descriptor holds no nested array or object before its `mediaType`).
fn layer_media_types(manifest: &str) -> Option<Vec<&str>> {
    let layers = manifest.split_once(r#""layers":["#)?.1;
    let layers = layers.get(..layers.find(']')?)?;
    let key = r#""mediaType":""#;
    Some(
        layers
            .match_indices(key)
            .filter_map(|(i, _)| {
                let rest = layers.get(i + key.len()..)?;
                rest.get(..rest.find('"')?)
            })
            .collect(),
    )
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Debian's `docker-registry`, started with `setsid` on a free 127.0.0.1 port with its own
/// config (filesystem storage under its directory); stopped by its PID when dropped.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Registry {
    /// Starts it in `dir` and waits until `/v2/` answers 200 (a port taken meanwhile: retried).
    fn start(dir: &Path) -> Result<Registry, String> {
        std::fs::create_dir_all(dir.join("storage")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let config = dir.join("config.yml");
            std::fs::write(&config, registry_config(&dir.join("storage"), port))
                .map_err(|e| format!("{}: {e}", config.display()))?;
            let log = dir.join("registry.log");
            let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err_file = log_file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
            // In its own session (setsid): no signal meant for our terminal reaches it; it is
            // stopped by its PID when dropped (an interrupted xtask leaves it running).
            let child = Command::new("setsid")
                .arg(tools::DOCKER_REGISTRY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(err_file)
                .spawn()
                .map_err(|e| format!("could not start setsid {}: {e}", tools::DOCKER_REGISTRY))?;
            let mut registry = Registry { child, port, log };
            match registry.wait_ready() {
                Ok(()) => return Ok(registry),
                Err(e) => last = format!("{e}\n{}", registry.log_tail()),
            }
        }
        Err(format!("docker-registry did not start: {last}"))
    }

    /// Polls `GET /v2/` for up to 10 s; fails early if the registry exited.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("docker-registry exited with {status}"));
            }
            if http_status(self.port, "/v2/").is_some_and(|s| s == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("docker-registry did not answer GET /v2/ within 10 s".into())
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let skip = text.lines().count().saturating_sub(20);
        text.lines().skip(skip).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // By PID: the child is the registry itself (setsid execs it in place).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry's configuration: filesystem storage in `storage`, 127.0.0.1:`port`, quiet logs.
fn registry_config(storage: &Path, port: u16) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: keybound-package-test\n",
        yaml_string(&storage.display().to_string())
    )
}

/// `s` as a double-quoted YAML scalar (JSON escaping is valid YAML).
fn yaml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The status of a plain `GET path` to 127.0.0.1:`port`, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

/// Runs a command with its output captured, shown only if it fails.
fn quiet(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "9c4476169fad0cae30d2d3ba63ee10aad6b5fb9157ff72dd66ce523b3088ef79";
    const B: &str = "41ea948a49cd62ff46e4875f8b990161bab2a9199ae655a2996fe658954c64b0";

    fn d(hex: &str) -> Digest {
        Digest::from_hex(hex).unwrap()
    }

    #[test]
    fn parses_digests_and_refuses_anything_else() {
        assert_eq!(Digest::parse(&format!("sha256:{A}")).unwrap().hex(), A);
        assert_eq!(d(A).to_string(), format!("sha256:{A}"));
        assert!(Digest::parse(A).is_err(), "the algorithm is required");
        assert!(Digest::parse(&format!("sha512:{A}")).is_err());
        assert!(Digest::from_hex(&A.to_uppercase()).is_err());
        assert!(Digest::from_hex(&A[1..]).is_err());
        assert!(Digest::from_hex(&format!("{}g", &A[1..])).is_err());
        assert_eq!(
            parse_sha256sum(&format!("{B}  /x/keybound_filter.wasm\n")).unwrap(),
            d(B)
        );
        assert!(parse_sha256sum("").is_err());
    }

    const PLUGIN: &str = "# a comment: url: oci://ghcr.io/keybound/keybound-filter:0.1.0
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
spec:
  phase: AUTHN
  url: oci://ghcr.io/keybound/keybound-filter:0.1.0
  imagePullPolicy: IfNotPresent
  pluginConfig:
    issuers:
    - issuer: https://as.example.com
      sha256: not-our-field
";

    #[test]
    fn pins_an_unpinned_plugin_by_url_digest_and_sha256_field() {
        assert_eq!(
            find_pins(PLUGIN),
            [Pin {
                line: 6,
                field: "url",
                digest: None
            }]
        );
        let pinned = rewrite_pins(PLUGIN, &d(A));
        assert_eq!(
            pinned,
            PLUGIN.replace(
                "  url: oci://ghcr.io/keybound/keybound-filter:0.1.0\n",
                &format!("  url: oci://ghcr.io/keybound/keybound-filter@sha256:{A}\n  sha256: {A}\n")
            )
        );
        assert!(check_pins(&[("p.yaml".into(), pinned.clone())], &d(A)).is_ok());
        // Pinning again changes nothing; pinning another digest changes both places only.
        assert_eq!(rewrite_pins(&pinned, &d(A)), pinned);
        let repinned = rewrite_pins(&pinned, &d(B));
        assert_eq!(repinned, pinned.replace(A, B));
        assert_eq!(
            find_pins(&repinned)
                .iter()
                .map(|p| (p.line, p.field))
                .collect::<Vec<_>>(),
            [(6, "url"), (7, "sha256")]
        );
    }

    #[test]
    fn a_stale_or_missing_pin_fails_and_says_to_run_pin() {
        let stale = rewrite_pins(PLUGIN, &d(B));
        let err = check_pins(&[("envoy/istio/p.yaml".into(), stale)], &d(A)).unwrap_err();
        assert!(
            err.contains(&format!("envoy/istio/p.yaml:6 url pins sha256:{B}")),
            "{err}"
        );
        assert!(err.contains("envoy/istio/p.yaml:7 sha256 pins"), "{err}");
        assert!(
            err.ends_with("run `cargo xtask package --pin` and commit the change"),
            "{err}"
        );
        let err = check_pins(&[("p.yaml".into(), PLUGIN.into())], &d(A)).unwrap_err();
        assert!(
            err.contains("p.yaml: no sha256 field") && err.contains("p.yaml:6 url pins no digest"),
            "{err}"
        );
        let err = check_pins(&[("other.yaml".into(), "kind: Gateway\n".into())], &d(A)).unwrap_err();
        assert!(
            err.contains("no WasmPlugin url names the keybound-filter image"),
            "{err}"
        );
        // Only one of the two places pinned is stale too.
        let half = rewrite_pins(PLUGIN, &d(A)).replace(&format!("  sha256: {A}"), &format!("  sha256: {B}"));
        assert!(check_pins(&[("p.yaml".into(), half)], &d(A)).is_err());
    }

    #[test]
    fn keeps_registry_ports_comments_and_other_documents() {
        let text = format!(
            "kind: Gateway\n---\nspec:\n  url: oci://localhost:5000/team/keybound-filter # ours\n  sha256: {B} # pinned\n---\n  url: oci://ghcr.io/other/image:1\n"
        );
        let pinned = rewrite_pins(&text, &d(A));
        assert_eq!(
            pinned,
            format!(
                "kind: Gateway\n---\nspec:\n  url: oci://localhost:5000/team/keybound-filter@sha256:{A} # ours\n  sha256: {A} # pinned\n---\n  url: oci://ghcr.io/other/image:1\n"
            )
        );
        assert_eq!(find_pins(&pinned).len(), 2);
        assert_eq!(image_url("  url: oci://ghcr.io/keybound/keybound-filter-old:1"), None);
        assert_eq!(image_url("  url: https://example.com/keybound-filter"), None);
    }

    #[test]
    fn reads_the_layer_media_types_of_a_umoci_manifest() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{B}","size":197}},"layers":[{{"mediaType":"{OCI_LAYER}","digest":"sha256:{A}","size":318735}}],"annotations":{{"module.wasm.image/variant":"compat"}}}}"#
        );
        assert_eq!(layer_media_types(&manifest), Some(vec![OCI_LAYER]));
        assert!(check_manifest(&manifest).is_ok());
        let two = manifest.replace(
            r#""layers":["#,
            r#""layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"x","size":1},"#,
        );
        assert!(check_manifest(&two).is_err());
        assert!(
            check_manifest(&manifest.replace(r#","annotations":{"module.wasm.image/variant":"compat"}"#, "")).is_err()
        );
        assert_eq!(layer_media_types("{}"), None);
    }

    #[test]
    fn the_registry_config_listens_on_loopback_with_its_own_storage() {
        let config = registry_config(Path::new("/tmp/x \"y\"/storage"), 5123);
        assert!(config.contains("  addr: 127.0.0.1:5123\n"), "{config}");
        assert!(
            config.contains(r#"    rootdirectory: "/tmp/x \"y\"/storage""#),
            "{config}"
        );
    }

    #[test]
    fn the_usage_lists_every_target() {
        let text = usage();
        for t in TARGETS {
            assert!(text.contains(t.name), "{text}");
        }
    }
}
