// The test app (copied into each project's src/index.js by entries.mjs): for each entry point of keybound-browser (src/keybound-entries.js, written by
// ../entries.mjs from the installed package's exports), loads the module with its default `init()`
// (no arguments: the wasm is found where the bundler put it), opens a DPoP key, and offers
// `window.keybound.entries[name].call(url, token)`, which calls the URL with the module's `fetch`
// and the token. Progress goes to #log, failures to #error; <body data-ready> is "yes" when every
// entry is ready, "error" if one failed. tests/tests/bundlers.rs drives it in headless Chromium.
import entries from "./keybound-entries.js";

const log = (m) => {
  document.getElementById("log").textContent += `${m}\n`;
};
const describe = (e) => `${e && e.name}: ${e && e.message} (${e && e.code} ${e && e.reason})`;

async function open(name, { init, DpopKey }) {
  await init();
  const key = await DpopKey.open({ clientId: `bundler-test-${name.replace(/\W/g, "-")}` });
  log(`${name}: key ${key.thumbprint()} (${key.storage})`);
  return {
    thumbprint: key.thumbprint(),
    storage: key.storage,
    async call(url, token) {
      try {
        const response = await key.fetch(url, { method: "GET" }, token);
        const result = { ok: true, status: response.status, body: await response.text(), nonce: key.nonceFor(url) ?? null };
        log(`${name}: ${url} ${result.status}`);
        return result;
      } catch (e) {
        log(`${name}: ${url} ${describe(e)}`);
        return { ok: false, error: describe(e) };
      }
    },
  };
}

async function main() {
  const ready = {};
  for (const [name, module] of Object.entries(entries)) {
    ready[name] = await open(name, module);
  }
  window.keybound = { entries: ready };
  document.body.dataset.ready = "yes";
}

main().catch((e) => {
  document.getElementById("error").textContent = describe(e);
  document.body.dataset.ready = "error";
});
