/**
 * The daemon's runtime record for `kpr status`: who runs for this bpf root (pid), what it follows
 * and how its last sync went. One JSON file per bpf root under /run/kpr (KPR_RUN_DIR overrides),
 * written atomically and removed on a clean exit. It is not state: the pinned maps are.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../config/config.ts";

/** The record. */
export interface AgentState {
  pid: number;
  /** the source's description ("manifest /etc/kpr/manifests", "api https://…") */
  source: string;
  startedAt: string;
  /** the config file the daemon runs with */
  config?: string;
  lastSync?: { at: string; ok: boolean; error?: string; durationMs: number };
  /** frontends programmed after the last good sync */
  frontends?: number;
  /** the source's problem now (API unreachable, a manifest rejected with file:line), if any */
  sourceError?: string;
}

/** Directory of the records. */
export function runDir(): string {
  return process.env.KPR_RUN_DIR ?? "/run/kpr";
}

/** Path of the record of `cfg.bpf.root`. */
export function agentStatePath(cfg: Config): string {
  const h = createHash("sha256").update(cfg.bpf.root).digest("hex").slice(0, 12);
  return join(runDir(), `agent-${h}.json`);
}

/** Writes the record (tmp + rename). */
export function writeAgentState(cfg: Config, st: AgentState): void {
  const path = agentStatePath(cfg);
  mkdirSync(runDir(), { recursive: true, mode: 0o755 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(st)}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

/** Removes the record (clean exit). */
export function removeAgentState(cfg: Config): void {
  rmSync(agentStatePath(cfg), { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The record for `cfg.bpf.root` with whether its process still runs; undefined when none. */
export function readAgentState(cfg: Config): (AgentState & { running: boolean }) | undefined {
  let text: string;
  try {
    text = readFileSync(agentStatePath(cfg), "utf8");
  } catch {
    return undefined;
  }
  try {
    const st = JSON.parse(text) as AgentState;
    if (typeof st.pid !== "number") return undefined;
    return { ...st, running: alive(st.pid) };
  } catch {
    return undefined;
  }
}

/** What `kpr status` shows of the daemon of this bpf root. */
export interface AgentStatus {
  running: boolean;
  pid?: number;
  source?: string;
  config?: string;
  startedAt?: string;
  lastSync?: AgentState["lastSync"];
  frontends?: number;
  sourceError?: string;
  /** set when a record exists but its process is gone (killed without cleaning up) */
  note?: string;
}

/** The daemon's status for `kpr status` (running: false when there is no daemon). */
export function agentStatus(cfg: Config): AgentStatus {
  const st = readAgentState(cfg);
  if (!st) return { running: false };
  const { running, ...rest } = st;
  return {
    ...rest,
    running,
    ...(running ? {} : { note: `pid ${st.pid} is gone without removing ${agentStatePath(cfg)} (killed?)` }),
  };
}

/** The Agent lines of `kpr status` (none when no daemon ever ran for this bpf root). */
export function formatAgentStatus(a: AgentStatus): string {
  const kv = (k: string, v: string) => `${`${k}:`.padEnd(26)}${v}\n`;
  if (!a.running) return a.note ? kv("Agent", `not running (${a.note})`) : "";
  let out = kv("Agent", `running (pid ${a.pid}), ${a.source}`);
  const l = a.lastSync;
  if (!l) out += kv("Last sync", "none yet (waiting for the first complete sync)");
  else
    out += kv(
      "Last sync",
      `${l.at} ${l.ok ? "ok" : "failed"} in ${l.durationMs} ms${l.ok && a.frontends !== undefined ? `, ${a.frontends} frontends` : ""}${l.error ? `: ${l.error.split("\n")[0]}` : ""}`,
    );
  if (a.sourceError) out += kv("Source error", a.sourceError.split("\n").join("; "));
  return out;
}
