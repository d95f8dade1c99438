/**
 * `kpr cleanup`: removes everything kpr owns on this node (network namespace): the links pinned
 * under `${bpf.root}/links` (detached first, so tcx/XDP/cgroup hooks are free even if something
 * else still holds the link), kpr's clsact filters (by kpr's handle and priority) on the
 * devices, then every pin (maps, programs) and the root directory itself. Idempotent.
 *
 * Layout under bpf.root: `maps/NAME`, `links/NAME` (tc-ingress-DEV, tc-egress-DEV, xdp-DEV,
 * cgroup-HOOK), anything else is removed too.
 */
import { existsSync, lstatSync, readdirSync, rmdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../config/config.ts";
import { log as rootLog } from "../log.ts";
import { detachClsact, detachPinnedLink, type TcDirection } from "./attach.ts";
import { mountOf } from "./bpffs.ts";
import { listInterfaces, lockDirectory } from "./ffi.ts";

const log = rootLog.withTag("cleanup");

/** Pin names kpr uses for its links under `${bpf.root}/links`. */
export const linkPin = {
  tc: (root: string, dir: TcDirection, dev: string) => `${root}/links/tc-${dir}-${dev}`,
  xdp: (root: string, dev: string) => `${root}/links/xdp-${dev}`,
  cgroup: (root: string, hook: string) => `${root}/links/cgroup-${hook}`,
};

/** Where kpr pins its maps. */
export const mapsDir = (root: string) => `${root}/maps`;

export interface CleanupResult {
  /** what was removed, one readable item each */
  removed: string[];
}

function removeTree(path: string, removed: string[]): void {
  for (const e of readdirSync(path, { withFileTypes: true })) {
    const p = join(path, e.name);
    if (e.isDirectory()) {
      removeTree(p, removed);
      rmdirSync(p);
    } else {
      rmSync(p);
      removed.push(`pin ${p}`);
    }
  }
}

/** Detaches and removes everything kpr owns under cfg.bpf.root and on the devices. */
export function cleanup(cfg: Config): CleanupResult {
  const removed: string[] = [];
  const root = cfg.bpf.root;
  const onBpffs = existsSync(root) && mountOf(root)?.fsType === "bpf";
  // Not while an apply is writing: wait for it, then remove what it left.
  using _lock = onBpffs
    ? lockDirectory(root, () => log.info(`waiting for another kpr process that holds ${root}`))
    : undefined;

  // 1. links: detach, then unpin (a link also pinned elsewhere would otherwise keep its hook)
  const linksDir = join(root, "links");
  if (onBpffs && existsSync(linksDir)) {
    for (const name of readdirSync(linksDir)) {
      const p = join(linksDir, name);
      if (lstatSync(p).isDirectory()) continue;
      if (detachPinnedLink(p)) removed.push(`link ${name}`);
    }
  }

  // 2. clsact filters kpr added (older kernels without tcx), found by kpr's handle and priority
  const present = listInterfaces();
  const devices = cfg.devices.length
    ? present.filter((i) => cfg.devices.includes(i.name))
    : present.filter((i) => i.name !== "lo");
  for (const dev of devices)
    for (const dir of ["ingress", "egress"] as const)
      if (detachClsact(dev.index, dir)) removed.push(`clsact ${dir} filter on ${dev.name}`);

  // 3. every remaining pin (maps, programs), then the directories
  if (onBpffs) {
    removeTree(root, removed);
    rmdirSync(root);
    removed.push(`dir ${root}`);
  }
  return { removed };
}
