/**
 * Test helpers for the datapath tests: compiles test/fixtures/bpf/*.bpf.c with clang into a
 * temp dir (the same flags as build.ts), and gives each test file a unique bpffs dir.
 */
import { afterAll } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const FIXTURES = resolve(import.meta.dir, "../fixtures/bpf");

const outDir = mkdtempSync(join(tmpdir(), "kprt-fixtures-"));
afterAll(() => rmSync(outDir, { recursive: true, force: true }));

function multiarch(): string[] {
  const r = Bun.spawnSync(["gcc", "-print-multiarch"]);
  const t = r.exitCode === 0 ? r.stdout.toString().trim() : "";
  return t ? [`-I/usr/include/${t}`] : [];
}

/** Compiles test/fixtures/bpf/NAME.bpf.c; returns the object's bytes. Throws clang's output. */
export function compileFixture(name: string): Uint8Array {
  const out = join(outDir, `${name}.bpf.o`);
  const r = Bun.spawnSync(
    [
      "clang",
      "-O2",
      "-g",
      "-target",
      "bpfel",
      "-mcpu=v3",
      "-Wall",
      "-Werror",
      "-Wno-unused-parameter",
      ...multiarch(),
      "-c",
      join(FIXTURES, `${name}.bpf.c`),
      "-o",
      out,
    ],
    { stderr: "pipe" },
  );
  if (r.exitCode !== 0) throw new Error(`clang ${name}.bpf.c: ${r.stderr.toString()}`);
  return new Uint8Array(readFileSync(out));
}

/** A unique name for things a test creates (bpffs dirs, cgroups, netns). */
export function uniquePrefix(): string {
  return `kprt${Math.random().toString(36).slice(2, 8)}`;
}
