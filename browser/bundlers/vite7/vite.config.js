import { defineConfig } from "vite";

// Vite 7's dev server pre-bundles dependencies into node_modules/.vite/deps/, where the
// package's `new URL("keybound_browser_bg.wasm", import.meta.url)` finds no wasm (the page gets
// index.html instead: "expected magic word 00 61 73 6d"). Vite 8 needs no configuration.
export default defineConfig({
  optimizeDeps: { exclude: ["keybound-browser"] },
});
