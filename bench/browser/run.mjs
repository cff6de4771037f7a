// The browser benchmark (bench/browser/README.md): proof creation time of keybound-browser beside
// the npm `dpop` package in the same headless Chromium, and what each ships to the browser.
//
// usage: node bench/browser/run.mjs [--pkg DIR] [--rounds N] [--samples N] [--batch N]
//                                   [--chromium PATH] [--chromedriver PATH] [--out FILE]
//   --pkg: the keybound-browser npm package (default bench/browser/node_modules/keybound-browser,
//          installed from the tarball of `cargo xtask package npm` by `cargo xtask bench`)
// Serves the page, the package and `dpop` on 127.0.0.1 (free port), drives Chromium through
// chromedriver (free port, fresh profile), runs `rounds` rounds in one page (each: median of
// `samples` batches of `batch` operations for each library, then crypto.subtle.sign alone), and
// writes the medians over the rounds (after one discarded warm-up round) and the sizes to target/bench/browser.json.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const pkg = resolve(flag("--pkg", join(here, "node_modules/keybound-browser")));
const rounds = Number(flag("--rounds", "5"));
const samples = Number(flag("--samples", "101"));
const batch = Number(flag("--batch", "20"));
const chromium = flag("--chromium", "/usr/bin/chromium");
const chromedriver = flag("--chromedriver", "/usr/bin/chromedriver");
const out = resolve(flag("--out", join(root, "target/bench/browser.json")));
const dpopDir = join(here, "node_modules/dpop");
const oauth4webapiDir = join(here, "node_modules/oauth4webapi");

function fail(message) {
  console.error(`bench-browser: ${message}`);
  process.exit(1);
}
try {
  statSync(join(pkg, "keybound_browser_bg.wasm"));
} catch {
  fail(
    `${pkg}/keybound_browser_bg.wasm is missing: build the package and install it here first ` +
      "(cargo xtask package npm && cd bench/browser && npm install --no-save ../../target/package/keybound-browser-*.tgz)",
  );
}
try {
  statSync(join(dpopDir, "build/index.js"));
} catch {
  fail("bench/browser/node_modules/dpop is missing: run `npm ci` in bench/browser");
}
try {
  statSync(join(oauth4webapiDir, "build/index.js"));
} catch {
  fail("bench/browser/node_modules/oauth4webapi is missing: run `npm ci` in bench/browser");
}

// Sizes: raw and gzip -9, of what each library makes the browser download.
const gz = (file) => gzipSync(readFileSync(file), { level: 9 }).length;
const size = (file) => statSync(file).size;
function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  );
}
// An entry of the package: its wasm, and its JS (index.js, the glue and its snippets), raw and
// gzipped.
function entry(dir, name) {
  const js = [
    join(dir, "index.js"),
    join(dir, `${name}.js`),
    ...walk(join(dir, "snippets")).filter((f) => f.endsWith(".js")),
  ];
  const wasm = join(dir, `${name}_bg.wasm`);
  return {
    wasm: size(wasm),
    wasm_gzip: gz(wasm),
    js: js.reduce((a, f) => a + size(f), 0),
    js_gzip: js.reduce((a, f) => a + gz(f), 0),
  };
}
const full = entry(pkg, "keybound_browser");
const small = entry(join(pkg, "dpop"), "keybound_dpop");
const sizes = {
  keybound_wasm: full.wasm,
  keybound_wasm_gzip: full.wasm_gzip,
  keybound_js: full.js,
  keybound_js_gzip: full.js_gzip,
  keybound_dpop_wasm: small.wasm,
  keybound_dpop_wasm_gzip: small.wasm_gzip,
  keybound_dpop_js: small.js,
  keybound_dpop_js_gzip: small.js_gzip,
  dpop_js: size(join(dpopDir, "build/index.js")),
  dpop_js_gzip: gz(join(dpopDir, "build/index.js")),
  oauth4webapi_js: size(join(oauth4webapiDir, "build/index.js")),
  oauth4webapi_js_gzip: gz(join(oauth4webapiDir, "build/index.js")),
};
const dpopVersion = JSON.parse(readFileSync(join(dpopDir, "package.json"), "utf8")).version;
const oauth4webapiVersion = JSON.parse(readFileSync(join(oauth4webapiDir, "package.json"), "utf8")).version;

// The static server: the page, the package under /keybound/, dpop under /dpop/, cross-origin isolated.
const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm" };
const routes = [
  ["/keybound/", pkg],
  ["/dpop/", join(dpopDir, "build")],
  ["/", here],
];
const server = createServer((req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  const headers = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cache-control": "no-store",
  };
  if (path === "/") {
    res.writeHead(200, { ...headers, "content-type": "text/html" });
    res.end('<!doctype html><meta charset="utf-8"><title>bench</title><script type="module" src="/page.mjs"></script>');
    return;
  }
  for (const [prefix, dir] of routes) {
    if (!path.startsWith(prefix)) continue;
    const file = resolve(dir, "." + path.slice(prefix.length - 1));
    if (!file.startsWith(dir)) break;
    try {
      const body = readFileSync(file);
      res.writeHead(200, { ...headers, "content-type": types[extname(file)] ?? "application/octet-stream" });
      res.end(body);
      return;
    } catch {
      break;
    }
  }
  res.writeHead(404, headers);
  res.end();
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${server.address().port}`;

// chromedriver on a free port.
const driverPort = await new Promise((ok) => {
  const s = createServer();
  s.listen(0, "127.0.0.1", () => {
    const { port } = s.address();
    s.close(() => ok(port));
  });
});
const driver = spawn(chromedriver, [`--port=${driverPort}`], { stdio: "ignore" });
const profile = mkdtempSync(join(tmpdir(), "keybound-bench-browser-"));
const cleanup = () => {
  driver.kill();
  server.close();
  rmSync(profile, { recursive: true, force: true });
};
process.on("exit", cleanup);
const wd = async (method, path, body) => {
  const r = await fetch(`http://127.0.0.1:${driverPort}${path}`, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json();
  if (!r.ok) throw new Error(`webdriver ${method} ${path}: ${JSON.stringify(j.value)}`);
  return j.value;
};
for (let i = 0; ; i++) {
  try {
    await wd("GET", "/status");
    break;
  } catch (e) {
    if (i > 100) fail(`chromedriver did not start: ${e}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}
const webdriverJson = JSON.parse(readFileSync(join(root, "browser/webdriver.json"), "utf8"));
const chromeArgs = [...webdriverJson["goog:chromeOptions"].args, `--user-data-dir=${profile}`];
const session = await wd("POST", "/session", {
  capabilities: { alwaysMatch: { browserName: "chrome", "goog:chromeOptions": { binary: chromium, args: chromeArgs } } },
});
const sid = session.sessionId;
const browserVersion = session.capabilities.browserVersion;
try {
  await wd("POST", `/session/${sid}/timeouts`, { script: 600_000 });
  await wd("POST", `/session/${sid}/url`, { url: origin + "/" });
  const call = async (expr) => {
    const script = `const done = arguments[arguments.length - 1];
      const wait = async () => { while (!window.setUp) await new Promise((r) => setTimeout(r, 10)); };
      wait().then(() => ${expr}).then((v) => done({ ok: v }), (e) => done({ error: String(e && e.stack || e) }));`;
    const r = await wd("POST", `/session/${sid}/execute/async`, { script, args: [] });
    if (r.error) throw new Error(r.error);
    return r.ok;
  };
  const setup = await call("window.setUp()");
  if (!setup.cross_origin_isolated) console.error("bench-browser: the page is not cross-origin isolated");
  await call(`window.round(${samples}, ${batch}, 1)`); // a warm-up round, discarded
  const results = [];
  for (let i = 0; i < rounds; i++) {
    const r = await call(`window.round(${samples}, ${batch}, ${i})`);
    console.error(
      `bench-browser: round ${i + 1}/${rounds}: keybound createProof ${r.keybound_ms.toFixed(4)} ms, ` +
        `dpop generateProof ${r.dpop_ms.toFixed(4)} ms, crypto.subtle.sign ${r.subtle_sign_ms.toFixed(4)} ms`,
    );
    results.push(r);
  }
  const med = (k) => {
    const v = results.map((r) => r[k]).sort((a, b) => a - b);
    return { median: v[Math.floor(v.length / 2)], min: v[0], max: v[v.length - 1] };
  };
  const report = {
    measured_at: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    chromium: browserVersion,
    dpop_version: dpopVersion,
    oauth4webapi_version: oauth4webapiVersion,
    options: { rounds, samples, batch },
    setup,
    sizes,
    keybound_create_proof_ms: med("keybound_ms"),
    dpop_generate_proof_ms: med("dpop_ms"),
    subtle_sign_ms: med("subtle_sign_ms"),
    rounds: results,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2));
  console.error(`bench-browser: wrote ${out}`);
} finally {
  await wd("DELETE", `/session/${sid}`).catch(() => {});
}
process.exit(0);
