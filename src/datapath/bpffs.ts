/** bpffs and cgroup2 mounts: kpr's pins live on bpffs, its socket hooks on a cgroup2 tree. */
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { EXIT_INPUT, KprError } from "../errors.ts";
import { BpfError, E, mountFs, unmountLazy } from "./ffi.ts";

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

function mountIfNeeded(target: string, fsType: string, what: string, data?: string): boolean {
  mkdirSync(target, { recursive: true, mode: 0o700 });
  try {
    mountFs(fsType, target, fsType, 0, data);
    return true;
  } catch (e) {
    // another kpr (or a test) may have mounted it meanwhile
    if (mountOf(target)?.fsType === fsType && mountOf(target)?.mountPoint === target) return false;
    if (e instanceof BpfError) throw new BpfError(`mount ${what} at ${target}`, e.errno, "kpr needs root");
    throw e;
  }
}

/**
 * `path` with every symlink in its existing part resolved (the part that does not exist yet is
 * appended as written), so mount decisions and checks see the directory the kernel will use.
 */
export function resolvedPath(path: string): string {
  let head = path;
  const tail: string[] = [];
  while (!existsSync(head)) {
    const parent = dirname(head);
    if (parent === head) break;
    tail.unshift(basename(head));
    head = parent;
  }
  return join(realpathSync(head), ...tail);
}

/**
 * Why `dir` (an existing directory) is unsafe for kpr's state, or undefined when it is safe:
 * it and each of its ancestors must be owned by root and not writable by group or others (an
 * ancestor with the sticky bit, like /tmp or a default bpffs, may be: no one can rename or
 * remove another user's entries there).
 */
export function unsafeDirReason(
  dir: string,
  stat: (p: string) => { uid: number; mode: number } = statSync,
): string | undefined {
  for (let p = dir, first = true; ; first = false) {
    const st = stat(p);
    if (st.uid !== 0) return `${p} is owned by uid ${st.uid}, not root`;
    const writable = (st.mode & 0o022) !== 0;
    const sticky = (st.mode & 0o1000) !== 0;
    if (writable && (first || !sticky))
      return `${p} is writable by ${st.mode & 0o002 ? "everyone" : "its group"} (mode ${(st.mode & 0o7777).toString(8)})`;
    const parent = dirname(p);
    if (parent === p) return undefined;
    p = parent;
  }
}

/**
 * Makes `root` (kpr's bpf.root) a safe directory on bpffs and returns its resolved path.
 * Mounts bpffs (mode 0700) at /sys/fs/bpf when root is under it and nothing is mounted there.
 * Refuses a root that is not on bpffs, a root that is a bpffs mount point itself (its other
 * pins are not kpr's), and a root that another user could rename or replace (see
 * unsafeDirReason); creates missing directories 0700.
 */
export function ensureBpffs(root: string): string {
  let real = resolvedPath(root);
  if (mountOf(real)?.fsType !== "bpf" && (real === "/sys/fs/bpf" || real.startsWith("/sys/fs/bpf/"))) {
    mountIfNeeded("/sys/fs/bpf", "bpf", "bpffs", "mode=0700");
    real = resolvedPath(root);
  }
  checkBpfRootPlace(root, real);
  mkdirSync(real, { recursive: true, mode: 0o700 });
  checkBpfRootOwner(root, real);
  return real;
}

/** Throws (exit 2) unless `real` (bpf.root resolved) is a directory below a bpffs mount point. */
export function checkBpfRootPlace(root: string, real: string, all: MountEntry[] = mounts()): void {
  const m = mountOf(real, all);
  if (m?.fsType !== "bpf")
    throw new KprError(
      `use bpf root ${root}: not on a bpf filesystem (put bpf.root under /sys/fs/bpf, or mount one above it: mount -t bpf -o mode=0700 bpf DIR)`,
      EXIT_INPUT,
    );
  if (m.mountPoint === real)
    throw new KprError(
      `use bpf root ${root}: it is a bpffs mount point, whose other pins are not kpr's (set bpf.root to a directory below it, e.g. ${join(real, "kpr")})`,
      EXIT_INPUT,
    );
}

/** Throws unless bpf.root and its maps/ and links/ (where present) are safe (unsafeDirReason). */
export function checkBpfRootOwner(root: string, real: string): void {
  for (const p of [real, join(real, "maps"), join(real, "links"), join(real, "maps-resizing")]) {
    if (!existsSync(p)) continue;
    const why = unsafeDirReason(p);
    if (why)
      throw new BpfError(
        `use bpf root ${root}`,
        E.EPERM,
        `${why}: another user could replace kpr's pins; remove it or fix its owner and mode`,
      );
  }
}

/** Marker under bpf.root: kpr mounted cgroup2 at cgroup.root. */
const CGROUP_MOUNTED = "cgroup-mounted";
/** Marker prefix under bpf.root: kpr made the last N directories of cgroup.root's path. */
const CGROUP_MADE = "cgroup-made-";

/**
 * Makes `root` a cgroup2 directory: mounts cgroup2 there when root is not on cgroup2. With
 * `bpfRoot`, records there (as marker directories) what it mounted and made, so `kpr cleanup`
 * removes exactly that. Returns whether it mounted.
 */
export function ensureCgroup2(root: string, bpfRoot?: string): boolean {
  let made = 0;
  for (let p = root; !existsSync(p) && dirname(p) !== p; p = dirname(p)) made++;
  let mounted = false;
  if (mountOf(root)?.fsType !== "cgroup2") mounted = mountIfNeeded(root, "cgroup2", "cgroup2");
  mkdirSync(root, { recursive: true });
  if (bpfRoot !== undefined && existsSync(bpfRoot)) {
    if (mounted) mkdirSync(join(bpfRoot, CGROUP_MOUNTED), { recursive: true, mode: 0o700 });
    if (made > 0) mkdirSync(join(bpfRoot, `${CGROUP_MADE}${made}`), { recursive: true, mode: 0o700 });
  }
  return mounted;
}

/**
 * Undoes what ensureCgroup2 recorded under `bpfRoot`: unmounts the cgroup2 mount kpr made at
 * `root` and removes the directories it made (when empty). Returns what was removed.
 */
export function cleanupCgroupRoot(root: string, bpfRoot: string | undefined): string[] {
  const out: string[] = [];
  if (bpfRoot === undefined || !existsSync(bpfRoot)) return out;
  const names = readdirSync(bpfRoot);
  if (names.includes(CGROUP_MOUNTED)) {
    const m = mountOf(root);
    if (m?.fsType === "cgroup2" && m.mountPoint === root) {
      unmountLazy(root);
      out.push(`cgroup2 mount at ${root}`);
    }
    rmdirSync(join(bpfRoot, CGROUP_MOUNTED));
  }
  for (const n of names.filter((x) => x.startsWith(CGROUP_MADE))) {
    const levels = Number(n.slice(CGROUP_MADE.length));
    let p = root;
    for (let i = 0; i < levels && dirname(p) !== p; i++, p = dirname(p)) {
      try {
        rmdirSync(p);
        out.push(`dir ${p}`);
      } catch {
        break;
      }
    }
    rmdirSync(join(bpfRoot, n));
  }
  return out;
}
