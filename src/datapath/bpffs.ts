/** bpffs and cgroup2 mounts: kpr's pins live on bpffs, its socket hooks on a cgroup2 tree. */
import { mkdirSync, readFileSync } from "node:fs";
import { BpfError, E, errno, mountFs } from "./ffi.ts";

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** The mounts this process sees (its mount namespace), in mount order. */
export function mounts(): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    if (!line) continue;
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    const [left, right] = line.split(" - ");
    const l = left?.split(" ") ?? [];
    const r = right?.split(" ") ?? [];
    if (l.length < 5 || r.length < 2) continue;
    out.push({ mountPoint: unescapeMount(l[4]!), fsType: r[0]!, source: unescapeMount(r[1]!) });
  }
  return out;
}

/** The mount that holds `path` (the last, longest mount point that is a prefix of it). */
export function mountOf(path: string, all: MountEntry[] = mounts()): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of all) {
    const mp = m.mountPoint;
    const covers = mp === "/" || path === mp || path.startsWith(mp.endsWith("/") ? mp : `${mp}/`);
    if (covers && (!best || mp.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/** Mount points of every cgroup2 filesystem. */
export function cgroup2Mounts(all: MountEntry[] = mounts()): string[] {
  return all.filter((m) => m.fsType === "cgroup2").map((m) => m.mountPoint);
}

function mountIfNeeded(target: string, fsType: string, what: string): boolean {
  mkdirSync(target, { recursive: true });
  try {
    mountFs(fsType, target, fsType);
    return true;
  } catch (e) {
    // another kpr (or a test) may have mounted it meanwhile
    if (mountOf(target)?.fsType === fsType && mountOf(target)?.mountPoint === target) return false;
    if (e instanceof BpfError) throw new BpfError(`mount ${what} at ${target}`, e.errno, "kpr needs root");
    throw e;
  }
}

/**
 * Makes `root` a directory on bpffs: mounts bpffs at /sys/fs/bpf when root is under it and
 * nothing is mounted there, or at root itself otherwise. Returns whether it mounted.
 */
export function ensureBpffs(root: string): boolean {
  let mounted = false;
  if (mountOf(root)?.fsType !== "bpf") {
    const target = root === "/sys/fs/bpf" || root.startsWith("/sys/fs/bpf/") ? "/sys/fs/bpf" : root;
    mounted = mountIfNeeded(target, "bpf", "bpffs");
  }
  mkdirSync(root, { recursive: true });
  if (mountOf(root)?.fsType !== "bpf")
    throw new BpfError(`use bpf root ${root}`, errno() || E.EINVAL, "not on a bpf filesystem");
  return mounted;
}

/** Makes `root` a cgroup2 directory: mounts cgroup2 there when root is not on cgroup2. */
export function ensureCgroup2(root: string): boolean {
  let mounted = false;
  if (mountOf(root)?.fsType !== "cgroup2") mounted = mountIfNeeded(root, "cgroup2", "cgroup2");
  mkdirSync(root, { recursive: true });
  return mounted;
}
