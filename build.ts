/**
 * Builds kpr: compiles every bpf/*.bpf.c into .build/bpf/*.bpf.o (clang, -O2 -g -target bpf,
 * kernel UAPI headers only, warnings are errors), then `bun build --compile` src/main.ts into
 * dist/kpr with the objects embedded. Rebuilds only what is older than its inputs.
 *
 *   bun build.ts                 build for this machine's architecture (dist/kpr)
 *   bun build.ts --arch arm64    also cross-build dist/kpr-linux-arm64 (and --arch x64 likewise)
 *   bun build.ts --bpf-only      compile the eBPF objects only
 *   bun build.ts --force         rebuild everything
 */
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { bpfClangArgs } from "./scripts/bpf-cflags.ts";

const root = import.meta.dir;
const bpfDir = join(root, "bpf");
const outBpf = join(root, ".build", "bpf");
const dist = join(root, "dist");

const argv = process.argv.slice(2);
const force = argv.includes("--force");
const bpfOnly = argv.includes("--bpf-only");
const arches: string[] = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--arch") {
    const a = argv[++i];
    if (a !== "arm64" && a !== "x64") {
      console.error(`build: --arch wants arm64 or x64, got ${a ?? "nothing"}`);
      process.exit(2);
    }
    arches.push(a);
  }
}

function mtime(p: string): number {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

function newestIn(dir: string, filter: (f: string) => boolean): number {
  let newest = 0;
  if (!existsSync(dir)) return 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    if (filter(p)) newest = Math.max(newest, mtime(p));
  }
  return newest;
}

function run(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) {
    console.error(`build: failed: ${cmd.join(" ")}`);
    process.exit(1);
  }
}

// 1. eBPF objects
mkdirSync(outBpf, { recursive: true });
// headers, this script and the shared clang flags are inputs of every object
const sharedNewest = Math.max(
  newestIn(join(bpfDir, "lib"), (f) => f.endsWith(".h")),
  mtime(import.meta.path),
  mtime(join(root, "scripts", "bpf-cflags.ts")),
);
const sources = readdirSync(bpfDir).filter((f) => f.endsWith(".bpf.c"));
let compiled = 0;
for (const src of sources) {
  const inPath = join(bpfDir, src);
  const outPath = join(outBpf, basename(src, ".c") + ".o");
  if (!force && mtime(outPath) > Math.max(mtime(inPath), sharedNewest)) continue;
  console.log(`build: clang ${src}`);
  run(bpfClangArgs(inPath, outPath, [join(bpfDir, "lib")]));
  compiled++;
}
console.log(`build: eBPF objects: ${compiled} compiled, ${sources.length - compiled} up to date`);
if (bpfOnly) process.exit(0);

// 2. the binary (embeds .build/bpf/*.o through src/datapath/objects.ts)
mkdirSync(dist, { recursive: true });
const inputsNewest = Math.max(
  newestIn(join(root, "src"), (f) => f.endsWith(".ts")),
  newestIn(outBpf, (f) => f.endsWith(".o")),
  mtime(join(root, "package.json")),
  mtime(import.meta.path),
);
const hostArch = process.arch === "arm64" ? "arm64" : "x64";
const targets = [
  { arch: hostArch, out: join(dist, "kpr") },
  ...arches.filter((a) => a !== hostArch).map((a) => ({ arch: a, out: join(dist, `kpr-linux-${a}`) })),
];
for (const t of targets) {
  if (!force && mtime(t.out) > inputsNewest) {
    console.log(`build: ${basename(t.out)} up to date`);
    continue;
  }
  console.log(`build: bun build --compile → ${t.out} (linux-${t.arch})`);
  run([
    process.execPath,
    "build",
    "--compile",
    // kpr runs as root: it must not load code or settings from the directory it is run in
    // (bunfig.toml can preload scripts). BUN_BE_BUN and BUN_OPTIONS cannot be turned off here:
    // see README "Running it on a node".
    "--no-compile-autoload-bunfig",
    "--no-compile-autoload-dotenv",
    "--no-compile-autoload-tsconfig",
    "--no-compile-autoload-package-json",
    "--minify-syntax",
    "--sourcemap=inline",
    `--target=bun-linux-${t.arch}`,
    join(root, "src", "main.ts"),
    "--outfile",
    t.out,
  ]);
}
