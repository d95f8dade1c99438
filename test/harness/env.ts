/**
 * Preconditions for tests that need root, tools, the compiled binary or a kernel version. A test
 * file says `const skip = needs({ root: true, tools: ["ip"] }, "e2e: ping")` and
 * `describe.skipIf(!!skip)(...)`: `needs` prints the reason, so a skip is never silent.
 */
import { existsSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { KPR_BIN, REPO_ROOT } from "./netns.ts";

/** True when running as uid 0. */
export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** True when `tool` is on PATH (or in /usr/sbin, /sbin). */
export function have(tool: string): boolean {
  return Bun.which(tool, { PATH: `${process.env.PATH ?? ""}:/usr/sbin:/sbin` }) !== null;
}

/** True when dist/kpr exists. */
export function isBuilt(): boolean {
  return existsSync(KPR_BIN);
}

/** Kernel version as [major, minor]. */
export function kernelVersion(): [number, number] {
  const m = release().match(/^(\d+)\.(\d+)/);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

export interface Needs {
  root?: boolean;
  tools?: string[];
  /** dist/kpr must exist (`bun build.ts`). */
  built?: boolean;
  /** eBPF objects by name ("tc" → .build/bpf/tc.bpf.o; `bun build.ts --bpf-only`). */
  bpfObjects?: string[];
  /** Minimum kernel, "6.6". */
  kernel?: string;
}

/** Why the conditions are not met, or undefined when they are; pure (prints nothing). */
export function unmet(n: Needs): string | undefined {
  const why: string[] = [];
  if (n.root && !isRoot()) why.push("needs root");
  const missing = (n.tools ?? []).filter((t) => !have(t));
  if (missing.length) why.push(`missing tools: ${missing.join(", ")} (scripts/bootstrap.sh installs them)`);
  if (n.built && !isBuilt()) why.push(`${KPR_BIN} not built (run ./node_modules/.bin/bun build.ts)`);
  const objs = (n.bpfObjects ?? []).filter((o) => !existsSync(join(REPO_ROOT, ".build/bpf", `${o}.bpf.o`)));
  if (objs.length)
    why.push(`missing eBPF objects: ${objs.join(", ")} (run ./node_modules/.bin/bun build.ts --bpf-only)`);
  if (n.kernel) {
    const [wa, wb] = n.kernel.split(".").map(Number) as [number, number];
    const [ka, kb] = kernelVersion();
    if (ka < wa || (ka === wa && kb < (wb ?? 0))) why.push(`needs kernel ≥ ${n.kernel} (have ${release()})`);
  }
  return why.length ? why.join("; ") : undefined;
}

/**
 * Checks the conditions; when unmet, prints `skip <label>: <reason>` (console.warn) and returns
 * the reason for `describe.skipIf(!!reason)`.
 */
export function needs(n: Needs, label = "tests"): string | undefined {
  const reason = unmet(n);
  if (reason) console.warn(`skip ${label}: ${reason}`);
  return reason;
}

/** Alias of needs. */
export const requireOrSkip = needs;

/**
 * A command prefix that runs a `kpr` process in a network namespace of its own (`unshare --net`:
 * only a loopback that is down, gone when the process exits), so what kpr detects from the
 * network (devices with `devices: []`) never depends on this machine's interfaces, and nothing it
 * programs can reach them. Without root (no unshare) the prefix is empty.
 */
export function ownNetns(): string[] {
  return isRoot() && have("unshare") ? ["unshare", "--net"] : [];
}
