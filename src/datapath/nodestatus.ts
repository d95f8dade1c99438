/**
 * What kpr has programmed on this node, read from the kernel: pinned maps and their contents,
 * pinned links (are they live, on which device), the kpr_config entry. `kpr status` and
 * `kpr bpf lb list` print from here; nothing comes from a cache.
 */

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { type Config, defaultConfig } from "../config/config.ts";
import { compareAddr } from "../lb/ip.ts";
import { type XdpDeviceStatus, xdpAccelerationText, xdpDevices } from "./accel.ts";
import { hasTcx } from "./attach.ts";
import { BpfLink, BpfMap, LinkType } from "./bpf.ts";
import { ifNameToIndex, interfaceAddresses } from "./ffi.ts";
import {
  CFG_F,
  type KprConfigValue,
  kprConfig,
  LB_MODE,
  lb4Backend,
  lb4Key,
  lb4Service,
  protoName,
  u32Id,
} from "./lbmaps.ts";
import { CGROUP_PROGRAMS, paths, readDevice, TC_PROGRAMS } from "./loader.ts";
import { type MapState, mapStateToFrontends } from "./mapstate.ts";
import { readPinnedState } from "./reconcile.ts";
import { type ProgrammedSettings, readSettings, type SettingDrift, settingsDrift } from "./settings.ts";
import { toolPath } from "./tools.ts";

/** One tc hook of a device. */
export interface TcHookStatus {
  direction: "ingress" | "egress";
  /** "tcx" (pinned link), "clsact" (kpr's filter), or undefined when nothing is attached */
  mode?: "tcx" | "clsact";
}

export interface DeviceStatus {
  name: string;
  address: string;
  /** false when the device does not exist in this network namespace */
  present: boolean;
  hooks: TcHookStatus[];
}

/** The node's kpr state. */
export interface NodeStatus {
  bpfRoot: string;
  cgroupRoot: string;
  /** the config file read now (or a note that the built-in defaults are in use) */
  configFile?: string;
  /** maps are pinned under the bpf root */
  programmed: boolean;
  config?: KprConfigValue;
  /** what the last apply recorded (absent before the first apply of this version) */
  settings?: ProgrammedSettings;
  /** socket hooks with a live pinned link */
  cgroupHooks: string[];
  devices: DeviceStatus[];
  counts: { frontends: number; services: number; backends: number };
  state?: MapState;
  /** another bpf root that holds kpr state, when this one holds none */
  otherRoot?: string;
  /** the XDP hook of each device */
  xdp?: XdpDeviceStatus[];
}

function liveLink(path: string, linkType: number, ifindex?: number): boolean {
  if (!existsSync(path)) return false;
  try {
    using link = BpfLink.openPinned(path);
    const info = link.info();
    if (info.type !== linkType || !info.progId) return false;
    return ifindex === undefined || info.ifindex === ifindex;
  } catch {
    return false;
  }
}

/** Whether kpr's clsact filter is on a device hook (`tc filter show`, names kpr's program). */
function clsactAttached(dev: string, dir: "ingress" | "egress"): boolean {
  const r = Bun.spawnSync([toolPath("tc"), "filter", "show", "dev", dev, dir], {
    stdout: "pipe",
    stderr: "pipe",
  });
  return r.exitCode === 0 && r.stdout.toString().includes(TC_PROGRAMS[dir]);
}

function readConfigEntry(cfg: Config): KprConfigValue | undefined {
  const path = `${paths.maps(cfg)}/kpr_config`;
  if (!existsSync(path)) return undefined;
  using m = BpfMap.openPinned(path);
  const v = m.lookup(u32Id.encode({ v: 0 }));
  return v ? kprConfig.decode(v) : undefined;
}

const DEFAULT_BPF_ROOT = defaultConfig().bpf.root;

/** Reads the node's kpr state under cfg's bpf root; devices from what was programmed when recorded. */
export function readNodeStatus(cfg: Config, configFile?: string): NodeStatus {
  const state = readPinnedState(cfg);
  const config = state ? readConfigEntry(cfg) : undefined;
  const settings = state ? readSettings(cfg) : undefined;
  const cgroupRoot = settings?.cgroupRoot ?? cfg.cgroup.root;
  const cgroupHooks = CGROUP_PROGRAMS.map((p) => p.hook).filter((h) =>
    liveLink(paths.cgroupLink(cfg, h), LinkType.CGROUP),
  );
  const tcx = hasTcx();
  const devNames = settings?.devices ?? cfg.devices.filter((d) => !d.endsWith("+"));
  const addrs = interfaceAddresses();
  const devices: DeviceStatus[] = devNames.map((name) => {
    let idx: number | undefined;
    let address = "";
    try {
      idx = ifNameToIndex(name);
      address = readDevice(name, addrs).address;
    } catch {
      return { name, address, present: false, hooks: [] };
    }
    const hooks: TcHookStatus[] = (["ingress", "egress"] as const).map((direction) => {
      if (tcx && liveLink(paths.tcLink(cfg, direction, name), LinkType.TCX, idx))
        return { direction, mode: "tcx" };
      if (clsactAttached(name, direction)) return { direction, mode: "clsact" };
      return { direction };
    });
    return { name, address, present: true, hooks };
  });
  let counts = { frontends: 0, services: 0, backends: 0 };
  if (state) {
    const { frontends } = mapStateToFrontends(state);
    counts = {
      frontends: frontends.length,
      services: new Set(frontends.map((f) => f.service)).size,
      backends: state.kpr_lb4_be.size,
    };
  }
  const otherRoot =
    !state && cfg.bpf.root !== DEFAULT_BPF_ROOT && existsSync(`${DEFAULT_BPF_ROOT}/maps/kpr_config`)
      ? DEFAULT_BPF_ROOT
      : undefined;
  return {
    bpfRoot: cfg.bpf.root,
    cgroupRoot,
    ...(configFile !== undefined ? { configFile } : {}),
    programmed: state !== undefined,
    ...(config ? { config } : {}),
    ...(settings ? { settings } : {}),
    cgroupHooks,
    devices,
    counts,
    ...(state ? { state } : {}),
    ...(otherRoot ? { otherRoot } : {}),
    xdp: xdpDevices({ ...cfg, devices: devNames }),
  };
}

/** `kpr status` as data: booleans, enums and numbers; human notes apart in `notes`. */
export interface StatusReport {
  /** "true": services are served (socket LB or tc attached); "false": kubeProxyReplacement=false */
  kubeProxyReplacement: "true" | "false" | "not-programmed";
  programmed: boolean;
  bpfRoot: string;
  /** the config file read now */
  configFile: string;
  /** the config file the programmed state was applied from, when recorded */
  appliedConfigFile?: string;
  devices: {
    name: string;
    address: string;
    directRouting: boolean;
    hooks: { direction: "ingress" | "egress"; mode: "tcx" | "clsact" }[];
  }[];
  socketLB: { enabled: boolean; hostNamespaceOnly: boolean; tracing: boolean };
  /** how remote backends are reached by the datapath (only snat is implemented) */
  mode: "snat";
  backendSelection: "random" | "maglev";
  /** Maglev's table size, when backendSelection is maglev */
  maglevTableSize?: number;
  sessionAffinity: boolean;
  gracefulTermination: boolean;
  nat46x64: boolean;
  /** the acceleration setting programmed */
  xdpAcceleration: "disabled" | "native" | "best-effort";
  /** per configured device: the XDP hook's mode and whether it is kpr's program (empty when disabled) */
  xdpDevices: XdpDeviceStatus[];
  services: {
    clusterIP: boolean;
    nodePort: boolean;
    /** programmed NodePort range, when NodePort is served */
    nodePortRange?: [number, number];
    loadBalancer: boolean;
    externalIPs: boolean;
    hostPort: boolean;
  };
  annotations: string[];
  counts: { frontends: number; services: number; backends: number };
  hooks: { cgroup: { root: string; hooks: string[] }; devices: { name: string; hooks: string[] }[] };
  /** settings where the config read now differs from what is programmed */
  drift: SettingDrift[];
  /** human-readable remarks (not-implemented settings, missing state, drift) */
  notes: string[];
  /** each pinned map (verbose / JSON): entries held, capacity and the kernel memory it takes */
  maps?: MapUsage[];
}

/** Cilium annotations translate honours. */
export const SUPPORTED_ANNOTATIONS = [
  "service.cilium.io/node",
  "service.cilium.io/node-selector",
  "service.cilium.io/src-ranges-policy",
  "service.cilium.io/type",
];

/**
 * Turns the node state into `cilium status`-style values. Every value says what the kernel does
 * now: a feature is on only when its programs are attached and the config entry turns it on.
 * Settings come from what the last apply recorded; the config given now is only compared.
 */
export function statusReport(cfg: Config, st: NodeStatus): StatusReport {
  const c = st.config;
  const applied = st.settings;
  const sockHooks = ["connect4", "sendmsg4", "recvmsg4", "getpeername4"];
  const socketLB =
    !!c && (c.flags & CFG_F.SOCKET_LB) !== 0 && sockHooks.every((h) => st.cgroupHooks.includes(h));
  const tcDevices = st.devices.filter((d) => d.hooks.some((h) => h.mode) && d.hooks.every((h) => h.mode));
  const northSouth = !!c && tcDevices.length > 0;
  const nodePortOn = !!c && (c.flags & CFG_F.NODEPORT) !== 0 && (northSouth || socketLB);
  const programmedSomething = st.programmed && (socketLB || northSouth);
  const modeName = Object.entries(LB_MODE).find(([, v]) => v === c?.lb_mode)?.[0] ?? "snat";
  const lb = applied?.loadBalancer ?? cfg.loadBalancer;
  const kprOn = applied?.kubeProxyReplacement ?? cfg.kubeProxyReplacement;
  const notes: string[] = [];
  const configFile = st.configFile ?? "(not given)";
  if (!st.programmed) {
    notes.push(`no kpr state under ${st.bpfRoot} (bpf.root from ${configFile})`);
    if (st.otherRoot) notes.push(`kpr state exists under ${st.otherRoot}: is --config the one applied?`);
  } else if (!applied)
    notes.push(
      "the programmed settings were not recorded (applied by an older kpr): values from the config read now",
    );
  if (modeName !== "snat" || lb.mode !== "snat")
    notes.push(
      `loadBalancer.mode=${lb.mode} is not implemented by this datapath: remote backends are reached with SNAT`,
    );
  const drift = applied ? settingsDrift(cfg, applied) : [];
  for (const d of drift)
    notes.push(
      `config differs from what is programmed: ${d.key} is ${JSON.stringify(d.configured)} in ${configFile}, programmed ${JSON.stringify(d.programmed)} (run kpr apply to program it)`,
    );
  for (const d of st.devices.filter((x) => !x.present))
    notes.push(`device ${d.name} does not exist in this network namespace`);
  const devices = st.devices
    .filter((d) => d.present)
    .map((d, i) => ({
      name: d.name,
      address: d.address,
      directRouting: i === 0,
      hooks: d.hooks.flatMap((h) => (h.mode ? [{ direction: h.direction, mode: h.mode }] : [])),
    }));
  return {
    kubeProxyReplacement: !kprOn ? "false" : programmedSomething ? "true" : "not-programmed",
    programmed: st.programmed,
    bpfRoot: st.bpfRoot,
    configFile,
    ...(applied ? { appliedConfigFile: applied.configFile } : {}),
    devices,
    socketLB: {
      enabled: socketLB,
      hostNamespaceOnly: !!c && (c.flags & CFG_F.HOST_NS_ONLY) !== 0,
      tracing: false,
    },
    mode: "snat",
    backendSelection: lb.algorithm,
    ...(lb.algorithm === "maglev"
      ? { maglevTableSize: applied?.maglevTableSize ?? cfg.maglev.tableSize }
      : {}),
    sessionAffinity: socketLB || northSouth,
    gracefulTermination: socketLB || northSouth,
    nat46x64: false,
    xdpAcceleration: lb.acceleration,
    xdpDevices: lb.acceleration === "disabled" ? [] : (st.xdp ?? []),
    services: {
      clusterIP: socketLB,
      nodePort: nodePortOn,
      ...(nodePortOn ? { nodePortRange: [c!.nodeport_min, c!.nodeport_max] as [number, number] } : {}),
      loadBalancer: socketLB || northSouth,
      externalIPs: socketLB || northSouth,
      hostPort: nodePortOn,
    },
    annotations: SUPPORTED_ANNOTATIONS,
    counts: st.counts,
    hooks: {
      cgroup: { root: st.cgroupRoot, hooks: st.cgroupHooks },
      devices: devices.map((d) => ({ name: d.name, hooks: d.hooks.map((h) => `${h.mode} ${h.direction}`) })),
    },
    drift,
    notes,
  };
}

const KPR_TEXT = { true: "True", false: "False", "not-programmed": "Not programmed" } as const;

/** A pinned map's use. */
export interface MapUsage {
  name: string;
  /** entries held now (array maps: their size) */
  entries: number;
  maxEntries: number;
  /** kernel memory charged to the map (fdinfo memlock), bytes */
  memoryBytes: number;
}

/** The use of every map pinned under the bpf root (maps/ and, mid-resize, maps-resizing/). */
export function mapUsage(cfg: Config): MapUsage[] {
  const dir = paths.maps(cfg);
  if (!existsSync(dir)) return [];
  const out: MapUsage[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (!name.startsWith("kpr_")) continue;
    try {
      using m = BpfMap.openPinned(`${dir}/${name}`);
      const fdinfo = readFileSync(`/proc/self/fdinfo/${m.fd}`, "utf8");
      const memlock = Number(/^memlock:\s*(\d+)/m.exec(fdinfo)?.[1] ?? 0);
      out.push({ name, entries: m.entryCount(), maxEntries: m.maxEntries, memoryBytes: memlock });
    } catch {
      // a map that cannot be opened is reported by the other checks
    }
  }
  return out;
}

function fmtBytes(n: number): string {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}

/** `cilium status --verbose`'s KubeProxyReplacement block (verbose) or its first line, then the notes. */
export function formatStatus(r: StatusReport, verbose: boolean): string {
  const devText = r.devices.map((d) => `${d.name} ${d.address}${d.directRouting ? " (Direct Routing)" : ""}`);
  const status = KPR_TEXT[r.kubeProxyReplacement];
  const first =
    r.kubeProxyReplacement === "true" && devText.length > 0
      ? `KubeProxyReplacement:    True   [${devText.join(", ")}]`
      : `KubeProxyReplacement:    ${status}`;
  const enabled = (on: boolean) => (on ? "Enabled" : "Disabled");
  const notes = r.notes.map((n) => `  Note: ${n}`);
  if (!verbose) return `${[first.trimEnd(), ...notes].join("\n")}\n`;
  const kv = (k: string, v: string, indent = "  ") => `${indent}${`${k}:`.padEnd(23)}${v}`;
  const lines = [
    first.trimEnd(),
    "KubeProxyReplacement Details:",
    kv("Status", status),
    kv("Socket LB", enabled(r.socketLB.enabled)),
    kv("Socket LB Tracing", enabled(r.socketLB.tracing)),
    kv("Socket LB Coverage", r.socketLB.hostNamespaceOnly ? "Hostns-only" : "Full"),
    kv(
      "Devices",
      r.devices.length
        ? r.devices
            .map((d) => `${d.name}   ${d.address}${d.directRouting ? " (Direct Routing)" : ""}`)
            .join(", ")
        : "(none)",
    ),
    kv("Mode", "SNAT"),
    kv(
      "Backend Selection",
      r.backendSelection === "maglev" ? `Maglev (Table Size: ${r.maglevTableSize})` : "Random",
    ),
    kv("Session Affinity", enabled(r.sessionAffinity)),
    kv("Graceful Termination", enabled(r.gracefulTermination)),
    kv("NAT46/64 Support", enabled(r.nat46x64)),
    kv("XDP Acceleration", xdpAccelerationText(r.xdpAcceleration, r.xdpDevices)),
    "  Services:",
    `  - ${"ClusterIP:".padEnd(16)}${enabled(r.services.clusterIP)}`,
    `  - ${"NodePort:".padEnd(16)}${r.services.nodePortRange ? `Enabled (Range: ${r.services.nodePortRange[0]}-${r.services.nodePortRange[1]})` : enabled(r.services.nodePort)}`,
    `  - ${"LoadBalancer:".padEnd(16)}${enabled(r.services.loadBalancer)}`,
    `  - ${"externalIPs:".padEnd(16)}${enabled(r.services.externalIPs)}`,
    `  - ${"HostPort:".padEnd(16)}${enabled(r.services.hostPort)}`,
    "  Annotations:",
    ...r.annotations.map((a) => `  - ${a}`),
    kv(
      "Programmed",
      `${r.counts.frontends} frontends (${r.counts.services} services), ${r.counts.backends} backends`,
    ),
    kv("BPF root", r.bpfRoot),
    kv("Config", r.configFile),
    ...(r.appliedConfigFile !== undefined ? [kv("Applied from", r.appliedConfigFile)] : []),
    "  Hooks:",
    `  - ${`cgroup ${r.hooks.cgroup.root}:`} ${r.hooks.cgroup.hooks.length ? r.hooks.cgroup.hooks.join(", ") : "(none)"}`,
    ...r.hooks.devices.map((d) => `  - ${d.name}: ${d.hooks.length ? d.hooks.join(", ") : "(none)"}`),
    ...(r.maps && r.maps.length > 0
      ? [
          `  BPF maps (entries / max, kernel memory; total ${fmtBytes(r.maps.reduce((a, m) => a + m.memoryBytes, 0))}):`,
          ...r.maps.map(
            (m) =>
              `  - ${`${m.name}:`.padEnd(17)}${`${m.entries} / ${m.maxEntries}`.padEnd(20)}${fmtBytes(m.memoryBytes)}`,
          ),
        ]
      : []),
    ...notes,
  ];
  return `${lines.join("\n")}\n`;
}

/** One row of `kpr bpf lb list`: a raw kpr_lb4_svc entry with what it points at. */
export interface LbListRow {
  service: { address: string; port: number; protocol: string };
  revNatId: number;
  slot: number;
  /** master: "0.0.0.0:0"; slot: the backend's address, or "<missing backend N>" */
  backend: string;
  backendId: number;
  /** master only: count, active_count, flags decoded */
  master?: { count: number; activeCount: number; flags: string[] };
}

const FLAG_NAMES: [number, string][] = [
  [1 << 0, "ClusterIP"],
  [1 << 1, "NodePort"],
  [1 << 2, "ExternalIPs"],
  [1 << 3, "LoadBalancer"],
  [1 << 4, "HostPort"],
  [1 << 8, "Local"],
  [1 << 9, "sessionAffinity"],
  [1 << 10, "sourceRanges"],
  [1 << 11, "sourceRangesDeny"],
  [1 << 12, "loopback"],
  [1 << 13, "wildcard"],
];

/** Names of the set KPR_SVC_F_* flags. */
export function flagNames(flags: number): string[] {
  return FLAG_NAMES.filter(([f]) => flags & f).map(([, n]) => n);
}

/** Every kpr_lb4_svc entry as a row, ordered by frontend then slot (master first). */
export function lbListRows(st: MapState): LbListRow[] {
  const bes = new Map<number, string>();
  for (const e of st.kpr_lb4_be.values()) {
    const b = lb4Backend.decode(e.value);
    bes.set(u32Id.decode(e.key).v, `${b.address}:${b.port}/${protoName(b.proto) ?? b.proto}`);
  }
  const rows: LbListRow[] = [];
  for (const e of st.kpr_lb4_svc.values()) {
    const k = lb4Key.decode(e.key);
    const v = lb4Service.decode(e.value);
    const service = { address: k.address, port: k.dport, protocol: protoName(k.proto) ?? String(k.proto) };
    if (k.slot === 0)
      rows.push({
        service,
        revNatId: v.rev_nat_id,
        slot: 0,
        backend: "0.0.0.0:0",
        backendId: 0,
        master: { count: v.count, activeCount: v.active_count, flags: flagNames(v.flags) },
      });
    else
      rows.push({
        service,
        revNatId: v.rev_nat_id,
        slot: k.slot,
        backend: bes.get(v.backend_id) ?? `<missing backend ${v.backend_id}>`,
        backendId: v.backend_id,
      });
  }
  rows.sort(
    (a, b) =>
      compareAddr(a.service.address, b.service.address) ||
      a.service.port - b.service.port ||
      (a.service.protocol < b.service.protocol ? -1 : a.service.protocol > b.service.protocol ? 1 : 0) ||
      a.slot - b.slot,
  );
  return rows;
}

/** `cilium bpf lb list`'s layout: SERVICE ADDRESS, BACKEND ADDRESS (REVNAT_ID) (SLOT). */
export function formatLbList(rows: LbListRow[]): string {
  const cells = rows.map((r) => {
    const svc = `${r.service.address}:${r.service.port}/${r.service.protocol} (${r.revNatId})`;
    const be = r.master
      ? `${r.backend} (${r.revNatId}) (0) [${r.master.flags.join(", ")}]`
      : `${r.backend} (${r.revNatId}) (${r.slot})`;
    return [svc, be] as const;
  });
  const width = Math.max("SERVICE ADDRESS".length, ...cells.map(([s]) => s.length)) + 3;
  const lines = ["SERVICE ADDRESS".padEnd(width) + "BACKEND ADDRESS (REVNAT_ID) (SLOT)"];
  for (const [s, b] of cells) lines.push(s.padEnd(width) + b);
  return `${lines.join("\n")}\n`;
}
