// Runs a wasm32-wasip1 program (a criterion benchmark) under node's WASI, in V8, the engine
// Envoy runs the filter in. Usage: node run-wasi.mjs <program.wasm> <work dir> [args...]
// The work dir is the program's current directory (criterion writes its reports there).
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [program, dir, ...args] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: ['bench', ...args],
  env: { ...process.env, PWD: '/' },
  preopens: { '/': dir, '.': dir },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(program));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
