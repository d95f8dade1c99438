/**
 * Attaching programs: tc (tcx links where the kernel has them, clsact filters otherwise), XDP
 * links (native or generic) and cgroup links. Links are pinned so programs outlive kpr.
 */
import { closeSync, existsSync, openSync, statSync } from "node:fs";
import { BpfLink, type BpfProgram, LinkType, unpin } from "./bpf.ts";
import { BpfError, check, E, ifNameToIndex, Struct, unsafeLibbpf } from "./ffi.ts";

/** enum bpf_attach_type values kpr uses. */
export const AttachType = {
  cgroupInetIngress: 0,
  connect4: 10,
  connect6: 11,
  sendmsg4: 14,
  sendmsg6: 15,
  recvmsg4: 19,
  recvmsg6: 20,
  getpeername4: 29,
  getpeername6: 30,
  xdp: 37,
  tcxIngress: 46,
  tcxEgress: 47,
} as const;

/** Socket-address hooks by name. */
export type CgroupHook =
  | "connect4"
  | "connect6"
  | "sendmsg4"
  | "sendmsg6"
  | "recvmsg4"
  | "recvmsg6"
  | "getpeername4"
  | "getpeername6";

export type TcDirection = "ingress" | "egress";
export type TcMode = "tcx" | "clsact";
export type XdpMode = "native" | "generic";

/** The clsact filter handle and priority kpr uses, so cleanup finds exactly its own filters. */
export const KPR_TC_HANDLE = 0x6b7072; // "kpr"
export const KPR_TC_PRIORITY = 0x6b;

const XDP_FLAGS_SKB_MODE = 1 << 1;
const XDP_FLAGS_DRV_MODE = 1 << 2;
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
const BPF_TC_F_REPLACE = 1;

/** Interface index by name, in the current network namespace. */
export function ifindex(dev: string | number): number {
  return typeof dev === "number" ? dev : ifNameToIndex(dev);
}

let tcxCache: boolean | undefined;
/** Whether the kernel has tcx (6.6+): a read-only BPF_PROG_QUERY on lo's tcx ingress. */
export function hasTcx(): boolean {
  if (tcxCache === undefined) {
    const cnt = new Uint32Array([0]);
    const r = unsafeLibbpf().bpf_prog_query(ifindex("lo"), AttachType.tcxIngress, 0, null, null, cnt);
    tcxCache = r === 0;
  }
  return tcxCache;
}

/** Program ids attached to a device's tcx hook (empty without tcx). */
export function tcxPrograms(dev: string | number, dir: TcDirection): number[] {
  const ids = new Uint32Array(64);
  const cnt = new Uint32Array([ids.length]);
  const type = dir === "ingress" ? AttachType.tcxIngress : AttachType.tcxEgress;
  const r = unsafeLibbpf().bpf_prog_query(ifindex(dev), type, 0, null, ids, cnt);
  if (r < 0) return [];
  return [...ids.subarray(0, cnt[0]!)];
}

/** Pins a new link so it outlives this process; if pinning fails, the attachment is undone. */
function pinOrDetach(link: BpfLink, pinPath: string): BpfLink {
  try {
    link.pin(pinPath);
  } catch (e) {
    link.detach();
    link.close();
    throw e;
  }
  return link;
}

/**
 * Replaces the program of the link pinned at `pinPath`, if one is pinned and live; a stale pin
 * (link defunct, e.g. its device was deleted) is removed. Returns the link when updated.
 */
function updatePinned(
  pinPath: string,
  prog: BpfProgram,
  wantType: number,
  sameTarget: (info: ReturnType<BpfLink["info"]>) => boolean = () => true,
): BpfLink | undefined {
  if (!existsSync(pinPath)) return undefined;
  const link = BpfLink.openPinned(pinPath);
  try {
    const info = link.info();
    if (info.type === wantType && sameTarget(info)) {
      link.update(prog);
      return link;
    }
  } catch (e) {
    if (!(e instanceof BpfError) || (e.errno !== E.ENOLINK && e.errno !== E.EINVAL)) {
      link.close();
      throw e;
    }
  }
  link.close();
  unpin(pinPath);
  return undefined;
}

function tcHook(idx: number, dir: TcDirection): Struct {
  // struct bpf_tc_hook: sz, ifindex @8, attach_point @12, parent @16 (24 bytes)
  return new Struct(24)
    .withSz()
    .i32(8, idx)
    .u32(12, dir === "ingress" ? BPF_TC_INGRESS : BPF_TC_EGRESS);
}

function tcOpts(progFd: number, flags: number): Struct {
  // struct bpf_tc_opts: sz, prog_fd @8, flags @12, prog_id @16, handle @20, priority @24 (32 bytes)
  return new Struct(32)
    .withSz()
    .i32(8, progFd)
    .u32(12, flags)
    .u32(20, KPR_TC_HANDLE)
    .u32(24, KPR_TC_PRIORITY);
}

/** Result of a tc attach: the mode used and, for tcx, the (pinned) link. */
export interface TcAttachment {
  mode: TcMode;
  link?: BpfLink;
  /** true when an existing pinned link got the new program */
  updated: boolean;
}

/**
 * Attaches a tc program to a device's ingress or egress: a tcx link pinned at `pinPath` when the
 * kernel has tcx (an existing pin is updated in place), else a clsact filter with kpr's handle
 * and priority (replacing kpr's previous filter). The caller closes the returned link.
 */
export function attachTc(
  prog: BpfProgram,
  dev: string | number,
  dir: TcDirection,
  pinPath: string,
  opts: { mode?: TcMode | "auto" } = {},
): TcAttachment {
  const idx = ifindex(dev);
  const mode = !opts.mode || opts.mode === "auto" ? (hasTcx() ? "tcx" : "clsact") : opts.mode;
  const what = `tc ${dir} of ${dev}`;
  if (mode === "tcx") {
    const updated = updatePinned(pinPath, prog, LinkType.TCX);
    if (updated) return { mode, link: updated, updated: true };
    const link = BpfLink.create(
      prog,
      idx,
      dir === "ingress" ? AttachType.tcxIngress : AttachType.tcxEgress,
      what,
    );
    return { mode, link: pinOrDetach(link, pinPath), updated: false };
  }
  const lib = unsafeLibbpf();
  const hook = tcHook(idx, dir);
  const r = lib.bpf_tc_hook_create(hook.bytes);
  if (r !== -E.EEXIST) check(`create clsact qdisc on ${dev}`, r);
  check(`attach ${what} (clsact)`, lib.bpf_tc_attach(hook.bytes, tcOpts(prog.fd, BPF_TC_F_REPLACE).bytes));
  return { mode, updated: false };
}

/**
 * Removes kpr's tc program from a device hook: the pinned tcx link at `pinPath` and kpr's clsact
 * filter (by handle and priority). Returns what it removed ("tcx link", "clsact filter").
 */
export function detachTc(dev: string | number, dir: TcDirection, pinPath?: string): string[] {
  const removed: string[] = [];
  if (pinPath && detachPinnedLink(pinPath)) removed.push(`tcx link ${pinPath}`);
  let idx: number;
  try {
    idx = ifindex(dev);
  } catch {
    return removed;
  }
  if (detachClsact(idx, dir)) removed.push(`clsact ${dir} filter on ${dev}`);
  return removed;
}

/** Deletes kpr's clsact filter on a hook; false when there was none. */
export function detachClsact(idx: number, dir: TcDirection): boolean {
  const lib = unsafeLibbpf();
  const hook = tcHook(idx, dir);
  // bpf_tc_query/detach want prog_fd, prog_id and flags zero, handle and priority set
  const q = tcOpts(0, 0);
  if (lib.bpf_tc_query(hook.bytes, q.bytes) < 0) return false;
  check(
    `detach kpr's clsact ${dir} filter from ifindex ${idx}`,
    lib.bpf_tc_detach(hook.bytes, tcOpts(0, 0).bytes),
  );
  return true;
}

/** Detaches and unpins the link pinned at `path`; false when nothing is pinned there. */
export function detachPinnedLink(path: string): boolean {
  if (!existsSync(path)) return false;
  try {
    using link = BpfLink.openPinned(path);
    link.detach();
  } catch (e) {
    // a pin that is not a link (or unreadable) is still removed below
    if (!(e instanceof BpfError)) throw e;
  }
  unpin(path);
  return true;
}

/**
 * Attaches an XDP program through a BPF link pinned at `pinPath` (an existing pin is updated).
 * "native" runs in the driver, "generic" in the stack for any device.
 */
export function attachXdp(prog: BpfProgram, dev: string | number, mode: XdpMode, pinPath: string): BpfLink {
  const idx = ifindex(dev);
  const updated = updatePinned(pinPath, prog, LinkType.XDP);
  if (updated) return updated;
  const hint =
    mode === "native"
      ? "driver has no native XDP or another XDP program is attached; use loadBalancer.acceleration=best-effort"
      : "another XDP program may be attached";
  const link = BpfLink.create(
    prog,
    idx,
    AttachType.xdp,
    `xdp (${mode}) to ${dev}`,
    mode === "native" ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE,
    hint,
  );
  return pinOrDetach(link, pinPath);
}

/** Detaches the pinned XDP link at `pinPath`; false when there was none. */
export function detachXdp(pinPath: string): boolean {
  return detachPinnedLink(pinPath);
}

/** The id of the XDP program attached to a device (any mode), 0 when none. */
export function xdpProgramId(dev: string | number): number {
  const id = new Uint32Array(1);
  const r = unsafeLibbpf().bpf_xdp_query_id(ifindex(dev), 0, id);
  if (r < 0) return 0;
  return id[0]!;
}

/**
 * What runs in a device's XDP hook and in which mode: "native" (driver), "generic" (skb) or
 * "none", with the program id. For `kpr status --verbose` and the tests.
 */
export function xdpAttachment(dev: string | number): { mode: XdpMode | "none"; progId: number } {
  const query = (flags: number) => {
    const id = new Uint32Array(1);
    return unsafeLibbpf().bpf_xdp_query_id(ifindex(dev), flags, id) < 0 ? 0 : id[0]!;
  };
  const native = query(XDP_FLAGS_DRV_MODE);
  if (native) return { mode: "native", progId: native };
  const generic = query(XDP_FLAGS_SKB_MODE);
  if (generic) return { mode: "generic", progId: generic };
  return { mode: "none", progId: 0 };
}

/** Attaches a cgroup program (socket hook by name or attach type number) via a pinned link. */
export function attachCgroup(
  prog: BpfProgram,
  cgroupPath: string,
  hook: CgroupHook | number,
  pinPath: string,
): BpfLink {
  const type = typeof hook === "number" ? hook : AttachType[hook];
  // A pinned link on another cgroup (cgroup.root changed) is replaced, not updated in place: the
  // cgroup id of a cgroup v2 directory is its inode number.
  let cgroupId: bigint;
  try {
    cgroupId = statSync(cgroupPath, { bigint: true }).ino;
  } catch (e) {
    throw new BpfError(`open cgroup ${cgroupPath}`, E.ENOENT, (e as Error).message);
  }
  const updated = updatePinned(pinPath, prog, LinkType.CGROUP, (i) => i.cgroupId === cgroupId);
  if (updated) return updated;
  let cgFd: number;
  try {
    cgFd = openSync(cgroupPath, "r");
  } catch (e) {
    throw new BpfError(`open cgroup ${cgroupPath}`, E.ENOENT, (e as Error).message);
  }
  try {
    const link = BpfLink.create(prog, cgFd, type, `cgroup ${hook} to ${cgroupPath}`);
    return pinOrDetach(link, pinPath);
  } finally {
    closeSync(cgFd);
  }
}
