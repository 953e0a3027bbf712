// Copies the browser runtime the package needs out of node_modules into the Python package:
// onnxruntime-web's WASM build (the plain `ort.wasm` bundle: no WebGL/WebGPU code) and its package.json,
// which names its version and its licence (MIT).
// Run by `npm run build` (the Makefile does it after `npm ci`); nothing is fetched at run time.
import { copyFileSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, "node_modules", "onnxruntime-web");
const target = join(here, "..", "src", "mobilenet", "web", "static", "vendor", "onnxruntime-web");
const files = [
  ["dist/ort.wasm.min.js", "ort.wasm.min.js"],
  ["dist/ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.mjs"],
  ["dist/ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.wasm"],
  ["package.json", "package.json"],
];

rmSync(target, { recursive: true, force: true });
mkdirSync(target, { recursive: true });
for (const [from, to] of files) copyFileSync(join(source, from), join(target, to));
const { version } = JSON.parse(readFileSync(join(source, "package.json"), "utf8"));
console.log(`copied onnxruntime-web ${version} into ${target}`);
