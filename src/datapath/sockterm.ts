/**
 * What kpr does when a reconcile removes a UDP backend from a frontend, so that the flows still
 * aimed at it move to a live backend (kube-proxy clears the conntrack entries of removed UDP
 * endpoints; Cilium 1.15 also destroys the sockets its socket LB connected to them):
 *
 *  - tc connection tracking: the kpr_ct4 entries of the frontend that name the backend, and the
 *    kpr_snat4 reply entries from the backend for that frontend, are deleted, so the flow's next
 *    packet is load-balanced again (TCP flows are left alone: they end on their own).
 *  - connected UDP sockets (socket LB): every UDP socket that kpr's connect hook connected to the
 *    backend through that frontend is destroyed with the bpf_sock_destroy kfunc from a socket
 *    iterator (sockterm.bpf.c, kernel ≥ 6.5). The application's next call fails with
 *    ECONNABORTED; connecting again reaches a live backend. The iterator runs in kpr's network
 *    namespace and, unless socketLB.hostNamespaceOnly, in every namespace pinned under /run/netns
 *    and that of every process of the hooked cgroup tree (pods; see hookedNamespaces). Older
 *    kernels: logged once, nothing destroyed (README).
 *
 * Runs after every map write of a reconcile (reconcile.ts executeOps, the one place that both
 * `kpr apply` and the daemon's syncs write through): the removed pairs are read from the writes
 * themselves (slot values before and after).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import type { ConsolaInstance } from "consola";
import type { Config } from "../config/config.ts";
import { log as rootLog } from "../log.ts";
import { BpfLink, BpfMap, type BpfObject, mapInfo, openObject } from "./bpf.ts";
import { checkAgainstBtf, defineStruct, parseIp4 } from "./codec.ts";
import { BpfError, E, inNetns, kernelHasBtfFunc, runIterator } from "./ffi.ts";
import { ct4Entry, ct4Key, lb4Backend, lb4Key, lb4Service, PROTO_NUM, snat4Entry } from "./lbmaps.ts";
import type { MapOp } from "./mapstate.ts";
import { embeddedObjectSync, kernelAtLeast } from "./objects.ts";

/** struct kpr_skterm4_key (abi.h). */
export const skterm4Key = defineStruct("kpr_skterm4_key", {
  address: "ip4",
  port: "be16",
  rev_nat_id: "u16",
});

/** The socket iterator program of sockterm.bpf.c. */
export const SOCKTERM_PROGRAM = "kpr_sockterm_udp4";
/** enum bpf_attach_type BPF_TRACE_ITER. */
const BPF_TRACE_ITER = 28;

/** A UDP backend a reconcile removed from a frontend. */
export interface RemovedUdpBackend {
  /** the frontend's id (rev_nat_id) */
  revNatId: number;
  backendId: number;
  /** backend IPv4, dotted */
  address: string;
  /** backend port, host order */
  port: number;
}

/**
 * The UDP (frontend, backend) pairs that `ops` removed: per frontend (and scope), the backend ids
 * its slots named before minus those they name after. Slots only hold distinct backends, so a
 * backend that stays is in an unchanged slot or among the new values. A backend's address comes
 * from the kpr_lb4_be writes (deleted or changed backends) or, for one that stays programmed for
 * other frontends, from `lookupBackend`; a pair whose backend cannot be found is left out.
 */
export function removedUdpBackends(
  ops: readonly MapOp[],
  lookupBackend: (id: number) => { address: string; port: number } | undefined = () => undefined,
): RemovedUdpBackend[] {
  const fes = new Map<string, { revNatId: number; before: Set<number>; after: Set<number> }>();
  const known = new Map<number, { address: string; port: number }>();
  for (const op of ops) {
    if (op.map === "kpr_lb4_be") {
      const v = op.prev ?? op.value;
      if (!v) continue;
      const id = new DataView(op.key.buffer, op.key.byteOffset, 4).getUint32(0, true);
      const be = lb4Backend.decode(v);
      if (be.proto === PROTO_NUM.UDP) known.set(id, { address: be.address, port: be.port });
      continue;
    }
    if (op.map !== "kpr_lb4_svc") continue;
    const k = lb4Key.decode(op.key);
    if (k.slot === 0 || k.proto !== PROTO_NUM.UDP) continue;
    const fe = `${k.address}:${k.dport}/${k.scope}`;
    let e = fes.get(fe);
    if (!e) {
      e = { revNatId: 0, before: new Set(), after: new Set() };
      fes.set(fe, e);
    }
    if (op.prev) {
      const v = lb4Service.decode(op.prev);
      e.before.add(v.backend_id);
      e.revNatId = v.rev_nat_id;
    }
    if (op.kind === "update" && op.value) e.after.add(lb4Service.decode(op.value).backend_id);
  }
  const out: RemovedUdpBackend[] = [];
  const seen = new Set<string>();
  for (const e of fes.values())
    for (const id of e.before) {
      if (e.after.has(id)) continue;
      const key = `${e.revNatId}/${id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const be = known.get(id) ?? lookupBackend(id);
      if (be) out.push({ revNatId: e.revNatId, backendId: id, address: be.address, port: be.port });
    }
  return out;
}

const off = (codec: { fields: readonly { name: string; offset: number }[] }, name: string) =>
  codec.fields.find((f) => f.name === name)!.offset;
const CT_KEY_PROTO = off(ct4Key, "proto");
const CT_KEY_DIR = off(ct4Key, "dir");
const CT_KEY_SADDR = off(ct4Key, "saddr");
const CT_KEY_SPORT = off(ct4Key, "sport");
const CT_BACKEND_ID = off(ct4Entry, "backend_id");
const CT_REV_NAT_ID = off(ct4Entry, "rev_nat_id");
const SNAT_REV_NAT_ID = off(snat4Entry, "rev_nat_id");
/** struct kpr_ct4_key.dir KPR_CT_REPLY */
const CT_REPLY = 1;

/** A map's content as BpfMap.lookupBatch returns it. */
export interface Batch {
  keys: Uint8Array;
  values: Uint8Array;
  count: number;
}

/**
 * Keys of the UDP kpr_ct4 entries (both directions) that belong to a removed pair: the entry's
 * frontend (rev_nat_id) and backend (backend_id) match. Returns the keys, concatenated.
 */
export function staleCt4Keys(
  batch: Batch,
  removed: readonly RemovedUdpBackend[],
  valueStride: number,
): Uint8Array {
  const ks = ct4Key.size;
  const want = new Set(removed.map((r) => r.revNatId * 2 ** 32 + r.backendId));
  const kv = new DataView(batch.keys.buffer, batch.keys.byteOffset, batch.keys.byteLength);
  const vv = new DataView(batch.values.buffer, batch.values.byteOffset, batch.values.byteLength);
  const hits: number[] = [];
  for (let i = 0; i < batch.count; i++) {
    if (kv.getUint8(i * ks + CT_KEY_PROTO) !== PROTO_NUM.UDP) continue;
    const v = i * valueStride;
    const id = vv.getUint16(v + CT_REV_NAT_ID, true) * 2 ** 32 + vv.getUint32(v + CT_BACKEND_ID, true);
    if (want.has(id)) hits.push(i);
  }
  return gather(batch.keys, ks, hits);
}

/**
 * Keys of the UDP kpr_snat4 reply entries (backend → SNAT address:port) that belong to a removed
 * pair: source = the backend's address and port, and the entry's rev_nat_id is the frontend.
 */
export function staleSnat4Keys(
  batch: Batch,
  removed: readonly RemovedUdpBackend[],
  valueStride: number,
): Uint8Array {
  const ks = ct4Key.size;
  const want = new Set<string>();
  for (const r of removed) {
    const a = parseIp4(r.address);
    want.add(`${a.join(".")}:${r.port}/${r.revNatId}`);
  }
  const kv = new DataView(batch.keys.buffer, batch.keys.byteOffset, batch.keys.byteLength);
  const vv = new DataView(batch.values.buffer, batch.values.byteOffset, batch.values.byteLength);
  const hits: number[] = [];
  for (let i = 0; i < batch.count; i++) {
    const k = i * ks;
    if (kv.getUint8(k + CT_KEY_PROTO) !== PROTO_NUM.UDP || kv.getUint8(k + CT_KEY_DIR) !== CT_REPLY) continue;
    const s = k + CT_KEY_SADDR;
    const addr = `${kv.getUint8(s)}.${kv.getUint8(s + 1)}.${kv.getUint8(s + 2)}.${kv.getUint8(s + 3)}`;
    const port = kv.getUint16(k + CT_KEY_SPORT, false);
    const rev = vv.getUint16(i * valueStride + SNAT_REV_NAT_ID, true);
    if (want.has(`${addr}:${port}/${rev}`)) hits.push(i);
  }
  return gather(batch.keys, ks, hits);
}

function gather(keys: Uint8Array, size: number, idx: number[]): Uint8Array {
  const out = new Uint8Array(idx.length * size);
  for (let n = 0; n < idx.length; n++) out.set(keys.subarray(idx[n]! * size, (idx[n]! + 1) * size), n * size);
  return out;
}

/** Deletes the tc CT and SNAT entries of the removed pairs; returns how many of each. */
export function clearConntrack(
  ct4: BpfMap,
  snat4: BpfMap,
  removed: readonly RemovedUdpBackend[],
): { ct: number; snat: number } {
  if (removed.length === 0) return { ct: 0, snat: 0 };
  // batched deletes; a key the datapath or the LRU removed meanwhile is skipped
  const ctKeys = staleCt4Keys(ct4.lookupBatch(), removed, ct4.valueSize);
  const ct = ct4.deleteBatch(ctKeys, ctKeys.length / ct4.keySize);
  const snatKeys = staleSnat4Keys(snat4.lookupBatch(), removed, snat4.valueSize);
  const snat = snat4.deleteBatch(snatKeys, snatKeys.length / snat4.keySize);
  return { ct, snat };
}

// ---- socket destruction ------------------------------------------------------------------------

/** Whether this kernel can destroy sockets from an iterator, and why not. */
export interface SockDestroySupport {
  supported: boolean;
  detail: string;
}

let support: SockDestroySupport | undefined;

/**
 * Kernel ≥ 6.5 whose BTF has the bpf_sock_destroy kfunc (CONFIG_DEBUG_INFO_BTF); memoized. Loading
 * the iterator is the last word: a failed load marks it unsupported too.
 */
export function sockDestroySupport(): SockDestroySupport {
  if (support) return support;
  const rel = release();
  if (!kernelAtLeast(rel, 6, 5)) support = { supported: false, detail: `kernel ${rel} < 6.5` };
  else if (!kernelHasBtfFunc("bpf_sock_destroy"))
    support = { supported: false, detail: `kernel ${rel}: no bpf_sock_destroy in /sys/kernel/btf/vmlinux` };
  else support = { supported: true, detail: `kernel ${rel}: bpf_sock_destroy kfunc in the kernel's BTF` };
  return support;
}

/** Where named network namespaces are pinned (`ip netns`; containerd and CRI-O pin pods' here). */
export const NETNS_PIN_DIRS = ["/run/netns", "/var/run/netns"];

/**
 * Network namespaces whose UDP sockets kpr's hooks may have connected, each as a path setns can
 * open, kpr's own first (undefined path: the current one). Unless hostNamespaceOnly, also every
 * namespace pinned under /run/netns (pods of CRI runtimes, `ip netns`) and the namespace of every
 * process in the cgroup tree under cgroup.root; one path per namespace.
 */
export function hookedNamespaces(
  cfg: Config,
  pinDirs: readonly string[] = NETNS_PIN_DIRS,
): { path: string | undefined; what: string }[] {
  const out: { path: string | undefined; what: string }[] = [{ path: undefined, what: "kpr's" }];
  if (cfg.socketLB.hostNamespaceOnly) return out;
  const idOf = (p: string) => {
    const st = statSync(p, { bigint: true });
    return `${st.dev}:${st.ino}`;
  };
  const seen = new Set<string>([idOf("/proc/thread-self/ns/net")]);
  const add = (p: string, what: string) => {
    try {
      const k = idOf(p);
      if (seen.has(k)) return;
      seen.add(k);
      out.push({ path: p, what });
    } catch {
      // gone meanwhile (a process exited, a pod was deleted)
    }
  };
  for (const dir of pinDirs) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) add(join(dir, n), join(dir, n));
  }
  const dirs = [cfg.cgroup.root];
  while (dirs.length > 0) {
    const dir = dirs.pop()!;
    let entries: import("node:fs").Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) if (e.isDirectory()) dirs.push(join(dir, e.name));
    let procs: string;
    try {
      procs = readFileSync(join(dir, "cgroup.procs"), "utf8");
    } catch {
      continue;
    }
    for (const pid of procs.split("\n")) if (pid) add(`/proc/${pid}/ns/net`, `pid ${pid}'s`);
  }
  return out;
}

/** What destroyStaleSockets did. */
export interface SocketResult {
  /** sockets destroyed */
  destroyed: number;
  /** namespaces searched */
  namespaces: number;
  /** set when nothing was done: why */
  skipped?: string;
  /** namespaces that could not be searched (not vanished ones): what, and the error */
  failed: string[];
}

/** Pairs the loaded iterator's filter holds at once (more are done in rounds). */
const FILTER_CAPACITY = 1024;

/**
 * The socket iterator, loaded once and kept for the process (loading and verifying it costs tens
 * of milliseconds, which an agent's sync should not pay for every removed UDP backend), for the
 * pinned kpr_sk4_rnat it was loaded against (a resized map is a new one: then it is reloaded).
 */
interface Terminator {
  obj: BpfObject;
  link: BpfLink;
  filter: BpfMap;
  rnatId: number;
}
let terminator: Terminator | undefined;

function closeTerminator(): void {
  terminator?.link.close();
  terminator?.obj.close();
  terminator = undefined;
}

/** The loaded iterator for `rnatPin`, or why there is none. */
function terminatorFor(rnatPin: string): Terminator | { skipped: string } {
  const sup = sockDestroySupport();
  if (!sup.supported) return { skipped: sup.detail };
  let rnatId: number;
  {
    using rnat = BpfMap.openPinned(rnatPin);
    rnatId = mapInfo(rnat.fd).id;
  }
  if (terminator?.rnatId === rnatId) return terminator;
  closeTerminator();
  const obj = openObject(embeddedObjectSync("sockterm"), "kpr_sockterm");
  try {
    obj.reusePinned("kpr_sk4_rnat", rnatPin);
    obj.setMaxEntries("kpr_skterm4", FILTER_CAPACITY);
    try {
      obj.load();
    } catch (e) {
      support = { supported: false, detail: `loading the socket iterator failed: ${(e as Error).message}` };
      obj.close();
      return { skipped: support.detail };
    }
    checkAgainstBtf(obj.btf, skterm4Key, "kpr_sockterm");
    const link = BpfLink.create(obj.program(SOCKTERM_PROGRAM), 0, BPF_TRACE_ITER, "iter/udp");
    terminator = { obj, link, filter: obj.map("kpr_skterm4"), rnatId };
    return terminator;
  } catch (e) {
    obj.close();
    throw e;
  }
}

/**
 * Loads the socket iterator ahead of need when `lbMaps`' datapath destroys sockets (socket LB on,
 * kernel ≥ 6.5): the agent calls it while idle, so the first removed UDP backend does not pay for
 * the load inside a sync. Never throws (a failure shows when the iterator is needed).
 */
export function prepareSocketCleanup(lbMaps: object): void {
  const ctx = contexts.get(lbMaps);
  if (!ctx?.cfg.socketLB.enabled) return;
  try {
    terminatorFor(ctx.rnatPin);
  } catch {}
}

/**
 * Destroys the UDP sockets kpr connected to a removed pair, in every hooked namespace (see
 * hookedNamespaces). `rnatPin` is the pinned kpr_sk4_rnat. Returns what was done, or why not.
 */
export function destroyStaleSockets(
  cfg: Config,
  rnatPin: string,
  removed: readonly RemovedUdpBackend[],
): SocketResult {
  const t = terminatorFor(rnatPin);
  if ("skipped" in t) return { destroyed: 0, namespaces: 0, skipped: t.skipped, failed: [] };
  let destroyed = 0;
  const failed: string[] = [];
  const namespaces = hookedNamespaces(cfg);
  for (let at = 0; at < removed.length; at += FILTER_CAPACITY) {
    const round = removed.slice(at, at + FILTER_CAPACITY);
    const keys = skterm4Key.encodeMany(
      round.map((r) => ({ address: r.address, port: r.port, rev_nat_id: r.revNatId })),
    );
    t.filter.updateBatch(keys, new Uint8Array(round.length * t.filter.valueStride).fill(1), round.length);
    try {
      for (const ns of namespaces) {
        try {
          const out = ns.path
            ? inNetns(ns.path, () => runIterator(t.link.fd, "iter/udp"))
            : runIterator(t.link.fd, "iter/udp");
          destroyed += out.length / 8;
        } catch (e) {
          if (e instanceof BpfError && e.op.startsWith("return to")) throw e;
          // a namespace that vanished meanwhile (ENOENT, ESRCH) has no sockets left to destroy; a
          // file under /run/netns that is no namespace (EINVAL from setns: a leftover of `ip netns`)
          // has none either
          const gone = [E.ENOENT, 3, E.EINVAL] as number[];
          if (e instanceof BpfError && !e.op.startsWith("create iterator") && gone.includes(e.errno))
            continue;
          if (at === 0) failed.push(`${ns.what}: ${(e as Error).message}`);
        }
      }
    } finally {
      // the filter is empty between rounds and calls
      t.filter.deleteBatch(keys, round.length);
    }
  }
  return { destroyed, namespaces: namespaces.length, failed };
}

// ---- after a reconcile's writes ------------------------------------------------------------------

/** What the cleanup needs of a loaded datapath (loader.ts binds it to the datapath's LB maps). */
export interface CleanupContext {
  cfg: Config;
  map(name: string): BpfMap;
  /** the pinned kpr_sk4_rnat */
  rnatPin: string;
}

const contexts = new WeakMap<object, CleanupContext>();
let warnedUnsupported = false;
let warnedNetns = false;

/** Makes executeOps on `lbMaps` (a loaded datapath's LB maps) clean up after removed UDP backends. */
export function bindCleanup(lbMaps: object, ctx: CleanupContext): void {
  contexts.set(lbMaps, ctx);
}

/** What cleanupRemovedUdp did. */
export interface CleanupResult {
  removed: RemovedUdpBackend[];
  ct: number;
  snat: number;
  sockets?: SocketResult;
}

/**
 * After `ops` were written to `lbMaps`: clears the tc CT/SNAT entries of removed UDP backends and
 * destroys the sockets kpr connected to them. Does not throw (the maps are written; a cleanup that
 * fails only leaves flows that expire on their own): failures are logged, except failing to
 * return to kpr's own network namespace after iterating a pod's. Undefined when nothing
 * was removed or `lbMaps` belongs to no loaded datapath.
 */
export function cleanupRemovedUdp(
  ops: readonly MapOp[],
  lbMaps: object,
  log: ConsolaInstance = rootLog.withTag("reconcile"),
): CleanupResult | undefined {
  const ctx = contexts.get(lbMaps);
  if (!ctx || !ops.some((o) => o.map === "kpr_lb4_svc" && o.prev)) return undefined;
  try {
    const be = ctx.map("kpr_lb4_be");
    const removed = removedUdpBackends(ops, (id) => {
      const k = new Uint8Array(4);
      new DataView(k.buffer).setUint32(0, id, true);
      const v = be.lookup(k);
      return v ? lb4Backend.decode(v) : undefined;
    });
    if (removed.length === 0) return undefined;
    const { ct, snat } = clearConntrack(ctx.map("kpr_ct4"), ctx.map("kpr_snat4"), removed);
    const res: CleanupResult = { removed, ct, snat };
    if (ctx.cfg.socketLB.enabled) {
      res.sockets = destroyStaleSockets(ctx.cfg, ctx.rnatPin, removed);
      const f = res.sockets.failed;
      if (f.length > 0 && !warnedNetns) {
        warnedNetns = true;
        // e.g. EPERM from setns under systemd's RestrictNamespaces=yes (allow "net" for kpr)
        log.warn(
          `stale UDP sockets: ${f.length} network namespaces could not be searched, their sockets to removed backends stay connected (first: ${f[0]}; kpr needs setns(CLONE_NEWNET): CAP_SYS_ADMIN, and RestrictNamespaces= must allow net under systemd)`,
        );
      } else for (const x of f) log.debug(`stale UDP sockets: not searched: ${x}`);
      if (res.sockets.skipped && !warnedUnsupported) {
        warnedUnsupported = true;
        log.warn(
          `connected UDP sockets to removed backends are not destroyed on this node (${res.sockets.skipped}; needs kernel ≥ 6.5 with BTF): such clients keep sending to the old backend until they reconnect (see README, "Stale UDP sockets")`,
        );
      }
    }
    const what = [...new Set(removed.map((r) => `${r.address}:${r.port}`))].join(", ");
    const sock = res.sockets && !res.sockets.skipped ? `, ${res.sockets.destroyed} sockets destroyed` : "";
    log.info(
      `UDP backends removed (${what}; ${removed.length} frontend/backend pairs): ${ct} CT and ${snat} SNAT entries cleared${sock}`,
    );
    return res;
  } catch (e) {
    // a thread stranded in a pod's namespace would open every later socket there: not a warning
    if (e instanceof BpfError && e.op.startsWith("return to")) throw e;
    log.warn(
      `clean up after removed UDP backends: ${(e as Error).message} (their flows stay until they expire)`,
    );
    return undefined;
  }
}
