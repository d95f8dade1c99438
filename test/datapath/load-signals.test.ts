/**
 * Program load under frequent signals: with a CPU profiler sampling the process, the kernel's
 * verifier gave up with EAGAIN on every load of the tc object (libbpf's own retries ran out).
 * Loads now run with signals blocked; this loads the tc and sock objects under `bun --cpu-prof`.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { needs } from "../harness/env.ts";
import { REPO_ROOT } from "../harness/netns.ts";

const skip = needs({ root: true, tools: ["clang"] }, "program load under signals");
const dir = mkdtempSync(join(tmpdir(), "kprB-sig-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SCRIPT = `
import { readFileSync } from "node:fs";
import { openObject } from "${join(REPO_ROOT, "src/datapath/bpf.ts")}";
const out = [];
for (const name of ["tc", "sock", "tc"]) {
  const obj = openObject(new Uint8Array(readFileSync("${join(REPO_ROOT, ".build/bpf")}/" + name + ".bpf.o")), name);
  try { obj.load(); out.push("ok"); } catch (e) { out.push(String(e.message).split("\\n")[0]); } finally { obj.close(); }
}
console.log(JSON.stringify(out));
`;

describe.skipIf(!!skip)("program load under a CPU profiler's signals", () => {
  test("every load succeeds (no EAGAIN from the verifier)", () => {
    const b = Bun.spawnSync([process.execPath, join(REPO_ROOT, "build.ts"), "--bpf-only"], {
      stderr: "pipe",
    });
    expect(b.exitCode, b.stderr.toString()).toBe(0);
    const script = join(dir, "load.ts");
    writeFileSync(script, SCRIPT);
    const r = Bun.spawnSync([process.execPath, "--cpu-prof", "--cpu-prof-dir", join(dir, "prof"), script], {
      cwd: dir,
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(r.exitCode, r.stderr.toString()).toBe(0);
    expect(JSON.parse(r.stdout.toString().trim().split("\n").pop()!)).toEqual(["ok", "ok", "ok"]);
  });
});
