/**
 * The apply-in-progress marker: a directory `${bpf.root}/apply-in-progress` on bpffs, made
 * before an apply's first map write and removed after its last one. Per-frontend digests vouch
 * only for the frontends they name; entries an interrupted apply wrote before their metadata
 * have no digest at all. While the marker exists, the next apply diffs every entry (the full
 * plan) and so deletes whatever no desired frontend accounts for.
 */
import { existsSync, mkdirSync, rmdirSync } from "node:fs";
import { join } from "node:path";

/** Name of the marker under bpf.root (cleanup.ts removes it with kpr's other names). */
export const APPLY_MARKER = "apply-in-progress";

const markerPath = (root: string) => join(root, APPLY_MARKER);

/** Whether an apply was interrupted after it began writing the maps under `root`. */
export function applyInterrupted(root: string): boolean {
  return existsSync(markerPath(root));
}

/** Records that map writes begin (call before the first write; idempotent). */
export function markApplyStarted(root: string): void {
  mkdirSync(markerPath(root), { recursive: true, mode: 0o700 });
}

/** Records that every planned write is done (call after the last write). */
export function markApplyDone(root: string): void {
  try {
    rmdirSync(markerPath(root));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

/**
 * Fault injection for the crash-consistency test: `KPR_FAULT_KILL_AFTER_GROUPS=N` kills the
 * process (SIGKILL, no rollback, no cleanup) after its Nth batch of map writes.
 */
export function crashPoint(groupsDone: number): void {
  const at = process.env.KPR_FAULT_KILL_AFTER_GROUPS;
  if (at !== undefined && groupsDone === Number(at)) process.kill(process.pid, "SIGKILL");
}

/**
 * Fault injection for named points (`KPR_FAULT_KILL_AT=name`): the map resize's steps
 * ("resize-copied", "resize-relinked", "resize-renamed-1").
 */
export function faultPoint(name: string): void {
  if (process.env.KPR_FAULT_KILL_AT === name) process.kill(process.pid, "SIGKILL");
}
