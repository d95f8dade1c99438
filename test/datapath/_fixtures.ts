/**
 * Test helpers for the datapath tests: compiles test/fixtures/bpf/*.bpf.c with clang into a
 * temp dir (build.ts's flags, scripts/bpf-cflags.ts), and gives each test file a unique bpffs dir.
 */
import { afterAll } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { bpfClangArgs } from "../../scripts/bpf-cflags.ts";

export const FIXTURES = resolve(import.meta.dir, "../fixtures/bpf");

const outDir = mkdtempSync(join(tmpdir(), "kprt-fixtures-"));
afterAll(() => rmSync(outDir, { recursive: true, force: true }));

/** Compiles test/fixtures/bpf/NAME.bpf.c; returns the object's bytes. Throws clang's output. */
export function compileFixture(name: string): Uint8Array {
  const out = join(outDir, `${name}.bpf.o`);
  const r = Bun.spawnSync(bpfClangArgs(join(FIXTURES, `${name}.bpf.c`), out), { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`clang ${name}.bpf.c: ${r.stderr.toString()}`);
  return new Uint8Array(readFileSync(out));
}

/** A unique name for things a test creates (bpffs dirs, cgroups, netns). */
export function uniquePrefix(): string {
  return `kprt${Math.random().toString(36).slice(2, 8)}`;
}
