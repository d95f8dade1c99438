/**
 * Loads kpr's datapath onto the node: the sock, tc (and, with loadBalancer.acceleration, xdp)
 * objects from the embedded bytes, maps sized from bpf.lbMapMax and pinned under
 * `${bpf.root}/maps` (reused when pinned), cgroup socket hooks at cgroup.root, tc ingress/egress
 * and native XDP on every configured device through links pinned under `${bpf.root}/links`, and
 * the kpr_config / kpr_dev4 entries. Re-running swaps
 * programs atomically (link update) only when their code changed, and keeps the maps.
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  statSync,
  unlinkSync,
} from "node:fs";
import type { ConsolaInstance } from "consola";
import type { Config } from "../config/config.ts";
import { configSource } from "../config/load.ts";
import { EXIT_INPUT, KprError } from "../errors.ts";
import { log as rootLog } from "../log.ts";
import {
  attachCgroup,
  attachTc,
  attachXdp,
  type CgroupHook,
  detachPinnedLink,
  detachTc,
  hasTcx,
} from "./attach.ts";
import {
  BpfLink,
  BpfMap,
  type BpfObject,
  type BpfProgram,
  LinkType,
  MapType,
  openObject,
  progInfo,
} from "./bpf.ts";
import { ensureBpffs, ensureCgroup2, mountOf } from "./bpffs.ts";
import { isKprMapName } from "./cleanup.ts";
import { faultPoint } from "./crashmark.ts";
import { closeFd, type IfAddr, interfaceAddresses, netnsCookie, unsafeLibbpf } from "./ffi.ts";
import {
  CFG_F,
  checkLbCodecs,
  dev4,
  kprConfig,
  LB_MODE,
  LB_STATE_MAPS,
  type LbStateMap,
  MAP_CODECS,
  u32Id,
} from "./lbmaps.ts";
import { embeddedObject } from "./objects.ts";
import { recordSettings, settingsOf } from "./settings.ts";
import { bindCleanup } from "./sockterm.ts";

/** Socket hooks kpr attaches, with the sock object's program for each (v6 ones when built). */
export const CGROUP_PROGRAMS: { hook: CgroupHook; prog: string }[] = [
  { hook: "connect4", prog: "kpr_sock4_connect" },
  { hook: "sendmsg4", prog: "kpr_sock4_sendmsg" },
  { hook: "recvmsg4", prog: "kpr_sock4_recvmsg" },
  { hook: "getpeername4", prog: "kpr_sock4_getpeername" },
  { hook: "connect6", prog: "kpr_sock6_connect" },
  { hook: "sendmsg6", prog: "kpr_sock6_sendmsg" },
  { hook: "recvmsg6", prog: "kpr_sock6_recvmsg" },
  { hook: "getpeername6", prog: "kpr_sock6_getpeername" },
];

/** tc programs per direction. */
export const TC_PROGRAMS = { ingress: "kpr_tc_ingress", egress: "kpr_tc_egress" } as const;
/** The XDP program (loadBalancer.acceleration native / best-effort). */
export const XDP_PROGRAM = "kpr_xdp";

/** Source-range LPM entries (all frontends together). */
export const SRCR_MAX_ENTRIES = 16384;
/**
 * Entries of the maps keyed by frontend id: ids are 1..65535 (a 16-bit reverse-NAT index), so
 * more would be memory the kernel preallocates for nothing (416 MiB at lbMapMax 1M).
 */
const FRONTEND_ID_ENTRIES = 65536;

/**
 * max_entries of every map loadDatapath sizes from the config (the others keep the object's
 * size): bpf.lbMapMax for the maps keyed by frontend address or backend id, at most 65,536 for
 * those keyed by frontend id, Cilium's CT/NAT keys for connection tracking and SNAT.
 */
export function configuredMapSizes(cfg: Config): Record<string, number> {
  const n = cfg.bpf.lbMapMax;
  const ids = Math.min(n, FRONTEND_ID_ENTRIES);
  return {
    kpr_lb4_svc: n,
    kpr_lb4_be: n,
    kpr_lb4_aff: n,
    kpr_be_stats: n,
    kpr_lb4_rnat: ids,
    kpr_svc_meta: ids,
    kpr_svc_stats: ids,
    kpr_lb4_srcr: SRCR_MAX_ENTRIES,
    ...ctNatMaxEntries(cfg),
  };
}

/** max_entries of each LB state map that loadDatapath creates for `cfg`. */
export function lbMapMaxEntries(cfg: Config): Record<LbStateMap, number> {
  const s = configuredMapSizes(cfg);
  return {
    kpr_lb4_svc: s.kpr_lb4_svc!,
    kpr_lb4_be: s.kpr_lb4_be!,
    kpr_lb4_rnat: s.kpr_lb4_rnat!,
    kpr_svc_meta: s.kpr_svc_meta!,
    kpr_lb4_srcr: s.kpr_lb4_srcr!,
  };
}

/**
 * Sizes Cilium's keys set for the CT and SNAT maps: bpf.ctTcpMax + bpf.ctAnyMax for kpr's one
 * CT map (either alone adds to the object's default share of the other), bpf.natMax for SNAT.
 */
export function ctNatMaxEntries(cfg: Config): Record<string, number> {
  const out: Record<string, number> = {};
  const { ctTcpMax, ctAnyMax, natMax } = cfg.bpf;
  if (ctTcpMax !== undefined || ctAnyMax !== undefined)
    out.kpr_ct4 = (ctTcpMax ?? 196608) + (ctAnyMax ?? 65536);
  if (natMax !== undefined) out.kpr_snat4 = natMax;
  return out;
}

/** With cgroup.autoMount.enabled=false kpr mounts nothing: the root must already be on cgroup2. */
function requireCgroup2(root: string): void {
  if (!existsSync(root) || mountOf(root)?.fsType !== "cgroup2")
    throw new KprError(
      `attach socket hooks: ${root} is not a cgroup2 directory (cgroup.autoMount.enabled=false: mount cgroup2 there, or enable autoMount)`,
    );
}

/** Paths under the bpf root (the layout cleanup and status rely on). */
export const paths = {
  maps: (cfg: Config) => `${cfg.bpf.root}/maps`,
  /** maps being resized, until they replace their pins under maps/ (bpffs names take no dots) */
  resizing: (cfg: Config) => `${cfg.bpf.root}/maps-resizing`,
  links: (cfg: Config) => `${cfg.bpf.root}/links`,
  tcLink: (cfg: Config, dir: "ingress" | "egress", dev: string) => `${cfg.bpf.root}/links/tc-${dir}-${dev}`,
  cgroupLink: (cfg: Config, hook: string) => `${cfg.bpf.root}/links/cgroup-${hook}`,
  xdpLink: (cfg: Config, dev: string) => `${cfg.bpf.root}/links/xdp-${dev}`,
};

/** A device as the datapath needs it. */
export interface DeviceInfo {
  name: string;
  ifindex: number;
  /** primary (first global) IPv4, "" when the device has none */
  address: string;
  mac: Uint8Array;
}

/**
 * Reads ifindex, primary IPv4 and MAC of `dev` in the current network namespace (getifaddrs;
 * `all`: a list read once for several devices).
 */
export function readDevice(dev: string, all: IfAddr[] = interfaceAddresses()): DeviceInfo {
  const mine = all.filter((a) => a.name === dev);
  const link = mine.find((a) => a.family === "link");
  if (!link?.index) throw new KprError(`read device ${dev}: no such device (check devices in the config)`);
  const v4 = mine.filter((a) => a.family === "inet");
  const primary = v4.find((a) => a.scope === "global") ?? v4[0];
  const mac = new Uint8Array(6);
  mac.set((link.mac ?? new Uint8Array(0)).subarray(0, 6));
  return { name: dev, ifindex: link.index, address: primary?.address ?? "", mac };
}

/** The tag of the program a pinned link runs and, for tcx/xdp, its ifindex; undefined if none. */
function pinnedLinkProgram(
  path: string,
): { tag: string; type: number; ifindex?: number; cgroupId?: bigint } | undefined {
  if (!existsSync(path)) return undefined;
  try {
    using link = BpfLink.openPinned(path);
    const info = link.info();
    if (!info.progId) return undefined;
    const fd = unsafeLibbpf().bpf_prog_get_fd_by_id(info.progId);
    if (fd < 0) return undefined;
    try {
      return {
        tag: progInfo(fd).tag,
        type: info.type,
        ...(info.ifindex !== undefined ? { ifindex: info.ifindex } : {}),
        ...(info.cgroupId !== undefined ? { cgroupId: info.cgroupId } : {}),
      };
    } finally {
      closeFd(fd);
    }
  } catch {
    return undefined;
  }
}

/** The loaded datapath: maps to program, what changed, and close(). */
export interface Datapath {
  /** the LB state maps (owned by the loaded objects) */
  lbMaps: Record<LbStateMap, BpfMap>;
  /** any map of the objects by name */
  map(name: string): BpfMap;
  /** changes made to programs, links, config and devices (empty when all was up to date) */
  changes: string[];
  /** closes the objects (pinned maps and links keep everything in place) */
  close(): void;
}

/**
 * Opens and loads an embedded object with the config's map sizes, its maps pinned under the bpf
 * root (existing pins reused) — those being resized under the staging directory instead.
 */
function openConfigured(
  bytes: Uint8Array,
  name: string,
  cfg: Config,
  resizing: ReadonlySet<string>,
): BpfObject {
  const obj = openObject(bytes, name);
  try {
    const maps = obj.maps();
    const have = new Set(maps);
    for (const [m, n] of Object.entries(configuredMapSizes(cfg))) if (have.has(m)) obj.setMaxEntries(m, n);
    obj.pinMaps(
      paths.maps(cfg),
      maps.filter((m) => !resizing.has(m)),
    );
    const staged = maps.filter((m) => resizing.has(m));
    if (staged.length > 0) obj.pinMaps(paths.resizing(cfg), staged);
    obj.load();
    checkLbCodecs(obj);
    return obj;
  } catch (e) {
    obj.close();
    throw e;
  }
}

function bytesEqual(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Hash of what the attached programs and their maps depend on: the embedded objects' bytes, map
 * sizing, the codec layouts they were checked against and the socket-LB switch and cgroup (which
 * links exist). Stored in kpr_config once everything is attached; while it matches, re-applies
 * skip loading and verifying the objects.
 */
export async function datapathDigest(cfg: Config): Promise<bigint> {
  const layouts = Object.entries(MAP_CODECS).map(([name, c]) => [
    name,
    c.key.name,
    c.key.size,
    c.value.name,
    c.value.size,
    c.value.fields.map((f) => [f.name, f.offset]),
  ]);
  const params = JSON.stringify([
    1,
    ...Object.entries(configuredMapSizes(cfg)).flat(),
    cfg.socketLB.enabled,
    cfg.cgroup.root,
    hasTcx(),
    layouts,
    cfg.loadBalancer.acceleration,
  ]);
  let h = Bun.hash.wyhash(params, 0n);
  for (const name of ["sock", "tc", "xdp"] as const) h = Bun.hash.wyhash(await embeddedObject(name), h);
  return h === 0n ? 1n : h; // 0 means "unknown"
}

/**
 * Loads and attaches the datapath for `cfg` and writes its config and device entries; each
 * write only when the kernel's copy differs. Stale links (devices or hooks no longer
 * configured) are detached. When the pinned links already run the embedded objects (the digest
 * in kpr_config matches and every link is in place), the objects are not loaded again: the
 * pinned maps are opened instead.
 */
export async function loadDatapath(cfg: Config, opts: { log?: ConsolaInstance } = {}): Promise<Datapath> {
  const log = opts.log ?? rootLog.withTag("loader");
  // before anything is pinned: kernels before 5.14 cannot give the cookie (the error says so)
  if (cfg.socketLB.enabled && cfg.socketLB.hostNamespaceOnly) netnsCookie();
  ensureBpffs(cfg.bpf.root);
  const addrs = interfaceAddresses();
  const devices = cfg.devices.map((d) => readDevice(d, addrs));
  const digest = await datapathDigest(cfg);
  const fast = reusePinned(cfg, devices, digest);
  if (fast) {
    recordSettings(cfg, settingsOf(cfg, configSource(cfg)));
    return fast;
  }
  const changes: string[] = [];
  const objects: BpfObject[] = [];
  const closeObjects = () => {
    for (const o of objects.reverse()) o.close();
  };
  // Pinned maps of another size than the config's are migrated: new maps are made under the
  // staging directory and filled, every program is loaded on them and switched over through its
  // link, then each new pin replaces the old one (rename, atomic) and the old map goes with the
  // last program that used it. Entries keep their ids, so connections are kept.
  const resize = resizePlan(cfg);
  const resizing = new Set(resize.map((r) => r.name));
  if (resize.length > 0) {
    log.info(
      `resizing maps (the config's sizes differ from the pinned maps'): ${resize.map((r) => `${r.name} ${r.from} → ${r.to}`).join(", ")}`,
    );
    prepareStaging(cfg);
  }
  try {
    // sock first: it creates and pins the shared maps; tc then reuses them from the pins
    const sock = openConfigured(await embeddedObject("sock"), "kpr_sock", cfg, resizing);
    objects.push(sock);
    const tc = openConfigured(await embeddedObject("tc"), "kpr_tc", cfg, resizing);
    objects.push(tc);
    // every object of this run must be loaded on the new maps before any link switches
    const xdpObj =
      cfg.loadBalancer.acceleration !== "disabled"
        ? openConfigured(await embeddedObject("xdp"), "kpr_xdp", cfg, resizing)
        : undefined;
    if (xdpObj) objects.push(xdpObj);
    for (const r of resize) copyMap(cfg, r, "all");
    if (resize.length > 0) faultPoint("resize-copied");
    const force = resize.length > 0;

    // the digest is cleared while links change, and set once they all run these objects
    const config = configValue(cfg);
    writeConfig(tc.map("kpr_config"), changes, config);
    writeDevices(tc.map("kpr_dev4"), devices, changes);

    const wantLinks = new Set<string>();
    if (cfg.socketLB.enabled) {
      if (cfg.cgroup.autoMount?.enabled === false) requireCgroup2(cfg.cgroup.root);
      else ensureCgroup2(cfg.cgroup.root, cfg.bpf.root);
      // a cgroup v2 directory's id is its inode number: a link on another cgroup is re-attached
      const cgroupId = statSync(cfg.cgroup.root, { bigint: true }).ino;
      const progs = new Set(sock.programs());
      for (const { hook, prog } of CGROUP_PROGRAMS) {
        if (!progs.has(prog)) continue;
        const path = paths.cgroupLink(cfg, hook);
        wantLinks.add(path);
        attachIfChanged(
          sock.program(prog),
          path,
          LinkType.CGROUP,
          { cgroupId },
          `cgroup ${hook}`,
          changes,
          () => attachCgroup(sock.program(prog), cfg.cgroup.root, hook, path).close(),
          force,
        );
      }
    }
    for (const d of devices) {
      for (const dir of ["ingress", "egress"] as const) {
        const path = paths.tcLink(cfg, dir, d.name);
        wantLinks.add(path);
        const prog = tc.program(TC_PROGRAMS[dir]);
        if (!hasTcx()) {
          // clsact filters are replaced in place (kpr's handle/priority); there is no pin to compare
          attachTc(prog, d.ifindex, dir, path);
          changes.push(`attached tc ${dir} on ${d.name} (clsact)`);
          continue;
        }
        attachIfChanged(
          prog,
          path,
          LinkType.TCX,
          { ifindex: d.ifindex },
          `tc ${dir} on ${d.name}`,
          changes,
          () => attachTc(prog, d.ifindex, dir, path).link?.close(),
          force,
        );
      }
    }
    if (xdpObj) attachXdpDevices(cfg, xdpObj.program(XDP_PROGRAM), devices, wantLinks, changes, log, force);
    detachStale(cfg, wantLinks, changes);
    if (resize.length > 0) {
      // what the old programs wrote while the links switched (connections, affinity), then the
      // new pins take the old ones' place
      faultPoint("resize-relinked");
      for (const r of resize) copyMap(cfg, r, "missing");
      finishResize(cfg, resize);
      changes.push(`resized ${resize.map((r) => `${r.name} to ${r.to}`).join(", ")}`);
    }
    // clsact attachments have no pinned link to check: such nodes always take this path
    if (hasTcx()) writeConfig(tc.map("kpr_config"), changes, withDigest(config, digest));
    if (changes.length > 0) log.debug(`datapath: ${changes.join(", ")}`);

    const lbMaps = {
      kpr_lb4_svc: tc.map("kpr_lb4_svc"),
      kpr_lb4_be: tc.map("kpr_lb4_be"),
      kpr_lb4_rnat: tc.map("kpr_lb4_rnat"),
      kpr_svc_meta: tc.map("kpr_svc_meta"),
      kpr_lb4_srcr: tc.map("kpr_lb4_srcr"),
    };
    recordSettings(cfg, settingsOf(cfg, configSource(cfg)));
    bindCleanup(lbMaps, { cfg, map: (n) => tc.map(n), rnatPin: `${paths.maps(cfg)}/kpr_sk4_rnat` });
    return { lbMaps, map: (n) => tc.map(n), changes, close: closeObjects };
  } catch (e) {
    closeObjects();
    throw e;
  }
}

/**
 * Native XDP on every device: `native` fails on a device whose driver cannot run it;
 * `best-effort` leaves such a device to tc alone with a warning naming it.
 */
function attachXdpDevices(
  cfg: Config,
  prog: BpfProgram,
  devices: DeviceInfo[],
  wantLinks: Set<string>,
  changes: string[],
  log: ConsolaInstance,
  force = false,
): void {
  for (const d of devices) {
    const path = paths.xdpLink(cfg, d.name);
    try {
      attachIfChanged(
        prog,
        path,
        LinkType.XDP,
        { ifindex: d.ifindex },
        `xdp (native) on ${d.name}`,
        changes,
        () => attachXdp(prog, d.name, "native", path).close(),
        force,
      );
      wantLinks.add(path);
    } catch (e) {
      if (cfg.loadBalancer.acceleration === "native") throw e;
      log.warn(
        `XDP acceleration on ${d.name}: ${(e as Error).message}; ${d.name} is served by tc only (loadBalancer.acceleration=best-effort)`,
      );
    }
  }
}

function withDigest(config: Uint8Array, digest: bigint): Uint8Array {
  const out = config.slice();
  new DataView(out.buffer).setBigUint64(CONFIG_DIGEST, digest, true);
  return out;
}

const CONFIG_DIGEST = kprConfig.fields.find((f) => f.name === "datapath_digest")!.offset;

/** Whether the pinned link at `path` is live, of `linkType`, on `ifindex`, running program `prog`. */
function linkRuns(path: string, linkType: number, ifindex: number | undefined, prog: string): boolean {
  try {
    using link = BpfLink.openPinned(path);
    const info = link.info();
    if (info.type !== linkType || !info.progId) return false;
    if (ifindex !== undefined && info.ifindex !== ifindex) return false;
    const fd = unsafeLibbpf().bpf_prog_get_fd_by_id(info.progId);
    if (fd < 0) return false;
    try {
      // bpf_prog_info.name holds the first 15 characters
      return progInfo(fd).name === prog.slice(0, 15);
    } finally {
      closeFd(fd);
    }
  } catch {
    return false;
  }
}

/**
 * The datapath from the pins alone, when kpr_config's digest says the attached programs are the
 * embedded ones for this config and every link is in place; undefined otherwise (load it).
 */
function reusePinned(cfg: Config, devices: DeviceInfo[], digest: bigint): Datapath | undefined {
  if (!hasTcx() || !existsSync(`${paths.maps(cfg)}/kpr_config`)) return undefined;
  const opened = new Map<string, BpfMap>();
  const closeAll = () => {
    for (const m of opened.values()) m.close();
    opened.clear();
  };
  const open = (name: string): BpfMap => {
    let m = opened.get(name);
    if (!m) {
      m = BpfMap.openPinned(`${paths.maps(cfg)}/${name}`);
      opened.set(name, m);
    }
    return m;
  };
  try {
    const configMap = open("kpr_config");
    const cur = configMap.lookup(u32Id.encode({ v: 0 }));
    if (!cur || cur.length < CONFIG_DIGEST + 8) return fail();
    if (new DataView(cur.buffer, cur.byteOffset).getBigUint64(CONFIG_DIGEST, true) !== digest) return fail();
    // links: exactly the wanted ones, each live and running the expected program
    const want = new Map<string, [number, number | undefined, string]>();
    if (cfg.socketLB.enabled)
      for (const { hook, prog } of CGROUP_PROGRAMS)
        want.set(paths.cgroupLink(cfg, hook), [LinkType.CGROUP, undefined, prog]);
    for (const d of devices)
      for (const dir of ["ingress", "egress"] as const)
        want.set(paths.tcLink(cfg, dir, d.name), [LinkType.TCX, d.ifindex, TC_PROGRAMS[dir]]);
    // XDP links: a pinned one must be live; native requires one per device, best-effort may lack it
    if (cfg.loadBalancer.acceleration !== "disabled")
      for (const d of devices) want.set(paths.xdpLink(cfg, d.name), [LinkType.XDP, d.ifindex, XDP_PROGRAM]);
    const dir = paths.links(cfg);
    const pinned = existsSync(dir) ? readdirSync(dir).map((n) => `${dir}/${n}`) : [];
    for (const p of pinned) {
      const w = want.get(p);
      if (!w || !linkRuns(p, ...w)) return fail();
    }
    // every tc link, and the socket hooks (the v6 ones only exist when built)
    for (const [p, [type]] of want)
      if (
        (type === LinkType.TCX ||
          p.endsWith("-connect4") ||
          (type === LinkType.XDP && cfg.loadBalancer.acceleration === "native")) &&
        !pinned.includes(p)
      )
        return fail();
    for (const name of [...LB_STATE_MAPS, "kpr_lb4_aff", "kpr_dev4"]) {
      const m = open(name);
      const c = MAP_CODECS[name]!;
      if (m.keySize !== c.key.size || m.valueSize !== c.value.size) return fail();
    }
    const changes: string[] = [];
    writeConfig(configMap, changes, withDigest(configValue(cfg), digest));
    writeDevices(open("kpr_dev4"), devices, changes);
    const lbMaps = Object.fromEntries(LB_STATE_MAPS.map((n) => [n, open(n)])) as Record<LbStateMap, BpfMap>;
    bindCleanup(lbMaps, { cfg, map: open, rnatPin: `${paths.maps(cfg)}/kpr_sk4_rnat` });
    return { lbMaps, map: open, changes, close: closeAll };
  } catch {
    return fail();
  }
  function fail(): undefined {
    closeAll();
    return undefined;
  }
}

function attachIfChanged(
  prog: BpfProgram,
  path: string,
  linkType: number,
  target: { ifindex?: number; cgroupId?: bigint },
  what: string,
  changes: string[],
  attach: () => void,
  /** switch even to the same code (the program was loaded on other maps) */
  force = false,
): void {
  const cur = pinnedLinkProgram(path);
  const fresh =
    !cur ||
    cur.type !== linkType ||
    (target.ifindex !== undefined && cur.ifindex !== target.ifindex) ||
    (target.cgroupId !== undefined && cur.cgroupId !== target.cgroupId);
  // a program's tag covers its instructions, not which maps it uses
  if (!fresh && !force && cur.tag === prog.info().tag) return;
  attach();
  changes.push(fresh ? `attached ${what}` : `replaced program of ${what}`);
}

/** A pinned map whose size differs from the config's. */
interface Resize {
  name: string;
  from: number;
  to: number;
}

/**
 * The pinned maps whose max_entries differ from configuredMapSizes(cfg). Throws (before anything
 * changes) when a map would shrink below what it holds; LRU maps (connections, affinity) shrink
 * by forgetting their least recently used entries, as they do when full.
 */
export function resizePlan(cfg: Config): Resize[] {
  const dir = paths.maps(cfg);
  const out: Resize[] = [];
  for (const [name, to] of Object.entries(configuredMapSizes(cfg))) {
    const path = `${dir}/${name}`;
    if (!existsSync(path)) continue;
    using m = BpfMap.openPinned(path);
    if (m.maxEntries === to) continue;
    if (to < m.maxEntries && m.spec.type !== MapType.LRU_HASH) {
      const held = m.entryCount();
      if (held > to)
        throw new KprError(
          `resize map ${name} from ${m.maxEntries} to ${to} entries: it holds ${held} (apply fewer services first, or keep bpf.lbMapMax at ${held} or more)`,
          EXIT_INPUT,
        );
    }
    out.push({ name, from: m.maxEntries, to });
  }
  return out;
}

/** An empty staging directory (pins left by a resize that was interrupted are dropped). */
function prepareStaging(cfg: Config): void {
  const dir = paths.resizing(cfg);
  if (existsSync(dir)) for (const n of readdirSync(dir)) if (isKprMapName(n)) unlinkSync(`${dir}/${n}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/**
 * Copies a resized map's entries from the old pin to the new one: "all" before the switch,
 * "missing" after it (entries the old programs made meanwhile; existing ones are kept).
 */
function copyMap(cfg: Config, r: Resize, what: "all" | "missing"): void {
  using from = BpfMap.openPinned(`${paths.maps(cfg)}/${r.name}`);
  using to = BpfMap.openPinned(`${paths.resizing(cfg)}/${r.name}`);
  const src = from.lookupBatch();
  if (src.count === 0) return;
  let { keys, values, count } = src;
  if (what === "missing") {
    const have = new Set<string>();
    const cur = to.lookupBatch();
    for (let i = 0; i < cur.count; i++)
      have.add(
        Buffer.from(cur.keys.buffer, cur.keys.byteOffset + i * to.keySize, to.keySize).toString("hex"),
      );
    const ks = new Uint8Array(keys.length);
    const vs = new Uint8Array(values.length);
    let n = 0;
    for (let i = 0; i < count; i++) {
      const k = keys.subarray(i * from.keySize, (i + 1) * from.keySize);
      if (have.has(Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString("hex"))) continue;
      ks.set(k, n * from.keySize);
      vs.set(values.subarray(i * from.valueStride, (i + 1) * from.valueStride), n * from.valueStride);
      n++;
    }
    keys = ks;
    values = vs;
    count = n;
  }
  // an LRU map shrunk below its content keeps the entries written last
  if (count > 0) to.updateBatch(keys, values, count);
}

/** Moves each resized map's new pin over its old one, then removes the staging directory. */
function finishResize(cfg: Config, resize: Resize[]): void {
  resize.forEach((r, i) => {
    renameSync(`${paths.resizing(cfg)}/${r.name}`, `${paths.maps(cfg)}/${r.name}`);
    faultPoint(`resize-renamed-${i + 1}`);
  });
  try {
    rmdirSync(paths.resizing(cfg));
  } catch {
    // something else in it: cleanup reports it
  }
}

function detachStale(cfg: Config, want: Set<string>, changes: string[]): void {
  const dir = paths.links(cfg);
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const path = `${dir}/${name}`;
    if (want.has(path)) continue;
    const tc = /^tc-(ingress|egress)-(.+)$/.exec(name);
    if (tc) {
      detachTc(tc[2]!, tc[1] as "ingress" | "egress", path);
      changes.push(`detached tc ${tc[1]} of ${tc[2]}`);
    } else if (name.startsWith("cgroup-") || name.startsWith("xdp-")) {
      detachPinnedLink(path);
      changes.push(`detached ${name}`);
    }
  }
}

/**
 * Source ports for SNAT to remote backends: above both the kernel's ephemeral range (so a reply
 * to a local socket's connection is never taken for a SNATed flow's) and the NodePort range.
 * `localPortRange` is /proc/sys/net/ipv4/ip_local_port_range ("32768\t60999"). When fewer than
 * 1024 ports are left above them, [0, 0]: the datapath's default range (consts.h).
 */
export function snatPortRange(cfg: Config, localPortRange: string): [number, number] {
  const hi = Number(localPortRange.trim().split(/\s+/)[1]);
  const lo = Math.max(Number.isInteger(hi) ? hi + 1 : 61000, cfg.nodePort.range[1] + 1);
  return 65535 - lo + 1 >= 1024 ? [lo, 65535] : [0, 0];
}

function localPortRange(): string {
  try {
    return readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8");
  } catch {
    return "32768 60999";
  }
}

/** The kpr_config entry for `cfg` (datapath_digest 0). */
function configValue(cfg: Config): Uint8Array {
  let flags = 0;
  if (cfg.socketLB.enabled) flags |= CFG_F.SOCKET_LB;
  if (cfg.socketLB.hostNamespaceOnly) flags |= CFG_F.HOST_NS_ONLY;
  if (cfg.nodePort.enabled) flags |= CFG_F.NODEPORT;
  const [snatMin, snatMax] = snatPortRange(cfg, localPortRange());
  return kprConfig.encode({
    flags,
    snat_port_min: snatMin,
    snat_port_max: snatMax,
    nodeport_min: cfg.nodePort.range[0],
    nodeport_max: cfg.nodePort.range[1],
    lb_mode: LB_MODE[cfg.loadBalancer.mode],
    host_netns_cookie: cfg.socketLB.enabled ? nodeNetnsCookie(cfg) : 0n,
    datapath_digest: 0n,
  });
}

/**
 * This network namespace's cookie: hostNamespaceOnly needs it (an error on kernels before 5.14,
 * which cannot give it); otherwise it only lets the socket hooks tell the node's own sockets
 * (loadBalancerSourceRanges of an unbound socket), and 0 (unknown) is the fallback.
 */
function nodeNetnsCookie(cfg: Config): bigint {
  if (cfg.socketLB.hostNamespaceOnly) return netnsCookie();
  try {
    return netnsCookie();
  } catch {
    return 0n;
  }
}

/** Writes kpr_config when it differs; a change of the digest alone is not reported. */
function writeConfig(map: BpfMap, changes: string[], value: Uint8Array): void {
  const key = u32Id.encode({ v: 0 });
  const cur = map.lookup(key);
  if (bytesEqual(cur, value)) return;
  map.update(key, value);
  const settings = (b: Uint8Array) => b.subarray(0, CONFIG_DIGEST);
  if (!cur || !bytesEqual(settings(cur), settings(value))) changes.push("config updated");
}

function writeDevices(map: BpfMap, devices: DeviceInfo[], changes: string[]): void {
  const want = new Map<number, Uint8Array>();
  for (const d of devices) want.set(d.ifindex, dev4.encode({ address: d.address || "0.0.0.0", mac: d.mac }));
  for (const [k, v] of map.entries()) {
    const idx = u32Id.decode(k).v;
    const w = want.get(idx);
    if (!w) {
      map.delete(k);
      changes.push(`device ifindex ${idx} removed`);
    } else if (bytesEqual(v, w)) want.delete(idx);
  }
  for (const [idx, v] of want) {
    map.update(u32Id.encode({ v: idx }), v);
    changes.push(`device ${devices.find((d) => d.ifindex === idx)?.name ?? idx} set`);
  }
}
