/**
 * `kpr cleanup`: removes everything kpr owns on this node (network namespace): the links pinned
 * under `${bpf.root}/links` (detached first, so tcx/XDP/cgroup hooks are free even if something
 * else still holds the link), kpr's clsact filters (by kpr's handle and priority) on the
 * devices, kpr's map pins, the cgroup2 mount and directories kpr made at cgroup.root, then the
 * root directory itself when nothing else is left in it. Only kpr's own names are removed
 * (`maps/kpr_*`, `links/{tc-,xdp-,cgroup-}*`, the apply marker); anything else is left and
 * reported. A bpf.root that is a bpffs mount point is refused. Idempotent.
 */
import { existsSync, lstatSync, readdirSync, rmdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Config } from "../config/config.ts";
import { EXIT_INPUT, KprError } from "../errors.ts";
import { log as rootLog } from "../log.ts";
import { detachClsact, detachPinnedLink, type TcDirection } from "./attach.ts";
import { checkBpfRootOwner, cleanupCgroupRoot, mountOf, resolvedPath } from "./bpffs.ts";
import { APPLY_MARKER } from "./crashmark.ts";
import { BpfError, E, listInterfaces, lockDirectory, unmountLazy } from "./ffi.ts";

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

/** Whether `name` under `${bpf.root}/links` is a link pin kpr makes. */
export const isKprLinkName = (name: string) => /^(tc-(ingress|egress)|xdp|cgroup)-[^/]+$/.test(name);
/** Whether `name` under `${bpf.root}/maps` is a map pin kpr makes. */
export const isKprMapName = (name: string) => /^kpr_[a-z0-9_]+$/.test(name);

function rmdirIfEmpty(path: string): boolean {
  try {
    rmdirSync(path);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOENT" || code === "EBUSY") return false;
    throw e;
  }
}

/** Detaches and removes everything kpr owns under cfg.bpf.root, on the devices and at cgroup.root. */
export function cleanup(cfg: Config): CleanupResult {
  const removed: string[] = [];
  const root = cfg.bpf.root;
  const real = existsSync(root) ? resolvedPath(root) : root;
  const mount = existsSync(root) ? mountOf(real) : undefined;
  const onBpffs = mount?.fsType === "bpf";
  // A bpffs mounted at bpf.root itself holds pins of others; one mounted inside another bpffs
  // is the stray mount older kpr versions made through a symlinked bpf.root: removed below.
  const strayMount = onBpffs && mount.mountPoint === real && mountOf(dirname(real))?.fsType === "bpf";
  if (onBpffs && mount.mountPoint === real && !strayMount)
    throw new KprError(
      `cleanup ${root}: it is a bpffs mount point, whose pins are not all kpr's (nothing was removed; bpf.root must be a directory below it)`,
      EXIT_INPUT,
    );
  // A stray mount is world-writable by how it came about (bpffs mounted without a mode): cleanup
  // only removes kpr's names from it and unmounts it, so that is no reason to refuse.
  if (onBpffs && !strayMount) checkBpfRootOwner(root, real);
  // Not while an apply is writing: wait for it, then remove what it left.
  let lock: Disposable | undefined;
  try {
    lock = onBpffs
      ? lockDirectory(real, () => log.info(`waiting for another kpr process that holds ${root}`))
      : undefined;
  } catch (e) {
    if (!(e instanceof BpfError && e.errno === E.ENOENT)) throw e;
  }
  using _lock = lock;
  const held = lock !== undefined;

  // 1. links: detach, then unpin (a link also pinned elsewhere would otherwise keep its hook)
  const linksDir = join(real, "links");
  if (held && existsSync(linksDir)) {
    for (const name of readdirSync(linksDir)) {
      const p = join(linksDir, name);
      if (!isKprLinkName(name) || lstatSync(p).isDirectory()) continue;
      if (detachPinnedLink(p)) removed.push(`link ${name}`);
      if (existsSync(p)) {
        rmSync(p);
        removed.push(`pin ${join(root, "links", name)}`);
      }
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

  // 3. the cgroup2 mount and directories kpr made for its socket hooks
  for (const r of cleanupCgroupRoot(cfg.cgroup.root, held ? real : undefined)) removed.push(r);

  // 4. kpr's map pins and marker, then its directories when nothing else is in them
  if (held) {
    const mapsPath = join(real, "maps");
    // maps-resizing: new maps of a resize that was interrupted
    const stagingPath = join(real, "maps-resizing");
    for (const [dir, sub] of [
      [mapsPath, "maps"],
      [stagingPath, "maps-resizing"],
    ] as const)
      if (existsSync(dir))
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          if (!isKprMapName(e.name) || e.isDirectory()) continue;
          rmSync(join(dir, e.name));
          removed.push(`pin ${join(root, sub, e.name)}`);
        }
    if (rmdirIfEmpty(join(real, APPLY_MARKER))) removed.push(`marker ${join(root, APPLY_MARKER)}`);
    for (const d of [linksDir, mapsPath, stagingPath]) if (existsSync(d) && !rmdirIfEmpty(d)) leftover(d);
    const others = readdirSync(real).filter((n) => n !== "maps" && n !== "links" && n !== "maps-resizing");
    if (others.length > 0) leftover(real);
    if (strayMount) {
      unmountLazy(real);
      removed.push(`stray bpffs mount at ${real}`);
    }
    if (rmdirIfEmpty(real)) removed.push(`dir ${root}`);
  }

  return { removed };
}

function leftover(dir: string): void {
  const names = readdirSync(dir);
  if (names.length > 0)
    log.warn(
      `left ${dir} in place: it holds ${names.length} entries kpr did not create (${names.slice(0, 5).join(", ")})`,
    );
}
