/**
 * What kpr has programmed on this node, read from the kernel: pinned maps and their contents,
 * pinned links (are they live, on which device), the kpr_config entry. `kpr status` and
 * `kpr bpf lb list` print from here; nothing comes from a cache.
 */
import { existsSync } from "node:fs";
import type { Config } from "../config/config.ts";
import { compareAddr } from "../lb/ip.ts";
import { hasTcx } from "./attach.ts";
import { BpfLink, BpfMap, LinkType } from "./bpf.ts";
import { ifNameToIndex } from "./ffi.ts";
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
  /** maps are pinned under the bpf root */
  programmed: boolean;
  config?: KprConfigValue;
  /** socket hooks with a live pinned link */
  cgroupHooks: string[];
  devices: DeviceStatus[];
  counts: { frontends: number; services: number; backends: number };
  state?: MapState;
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

/** Reads the node's kpr state for `cfg` (its bpf root, cgroup root and devices). */
export function readNodeStatus(cfg: Config): NodeStatus {
  const state = readPinnedState(cfg);
  const config = state ? readConfigEntry(cfg) : undefined;
  const cgroupHooks = CGROUP_PROGRAMS.map((p) => p.hook).filter((h) =>
    liveLink(paths.cgroupLink(cfg, h), LinkType.CGROUP),
  );
  const tcx = hasTcx();
  const devices: DeviceStatus[] = cfg.devices.map((name) => {
    let idx: number | undefined;
    let address = "";
    try {
      idx = ifNameToIndex(name);
      address = readDevice(name).address;
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
  return {
    bpfRoot: cfg.bpf.root,
    cgroupRoot: cfg.cgroup.root,
    programmed: state !== undefined,
    ...(config ? { config } : {}),
    cgroupHooks,
    devices,
    counts,
    ...(state ? { state } : {}),
  };
}

/** A status line's value and, when it differs from the config, why. */
export interface StatusReport {
  kubeProxyReplacement: "True" | "False" | "Not programmed";
  devices: { name: string; address: string; directRouting: boolean; hooks: string[] }[];
  socketLB: "Enabled" | "Disabled";
  socketLBTracing: "Disabled";
  socketLBCoverage: "Full" | "Hostns-only";
  mode: string;
  backendSelection: string;
  sessionAffinity: "Enabled" | "Disabled";
  gracefulTermination: "Enabled" | "Disabled";
  nat46x64: "Disabled";
  xdpAcceleration: string;
  services: {
    clusterIP: string;
    nodePort: string;
    loadBalancer: string;
    externalIPs: string;
    hostPort: string;
  };
  annotations: string[];
  programmed: { frontends: number; services: number; backends: number };
  hooks: { cgroup: { root: string; hooks: string[] }; devices: { name: string; hooks: string[] }[] };
  bpfRoot: string;
}

/** Cilium annotations translate honours. */
export const SUPPORTED_ANNOTATIONS = [
  "service.cilium.io/node",
  "service.cilium.io/node-selector",
  "service.cilium.io/src-ranges-policy",
  "service.cilium.io/type",
];

/**
 * Turns the node state into `cilium status`-style values. Every value says what the kernel
 * does now: a feature is Enabled only when its programs are attached and the config entry turns
 * it on; a configured but unimplemented choice is named as such.
 */
export function statusReport(cfg: Config, st: NodeStatus): StatusReport {
  const c = st.config;
  const sockHooks = ["connect4", "sendmsg4", "recvmsg4", "getpeername4"];
  const socketLB =
    !!c && (c.flags & CFG_F.SOCKET_LB) !== 0 && sockHooks.every((h) => st.cgroupHooks.includes(h));
  const tcDevices = st.devices.filter((d) => d.hooks.some((h) => h.mode) && d.hooks.every((h) => h.mode));
  const northSouth = !!c && tcDevices.length > 0;
  const nodePortOn = !!c && (c.flags & CFG_F.NODEPORT) !== 0 && (northSouth || socketLB);
  const programmedSomething = st.programmed && (socketLB || northSouth);
  const modeName = Object.entries(LB_MODE).find(([, v]) => v === c?.lb_mode)?.[0] ?? "snat";
  const enabled = (on: boolean) => (on ? "Enabled" : "Disabled");
  const devices = st.devices
    .filter((d) => d.present)
    .map((d, i) => ({
      name: d.name,
      address: d.address,
      directRouting: i === 0,
      hooks: d.hooks.filter((h) => h.mode).map((h) => `${h.mode} ${h.direction}`),
    }));
  return {
    kubeProxyReplacement: !cfg.kubeProxyReplacement
      ? "False"
      : programmedSomething
        ? "True"
        : "Not programmed",
    devices,
    socketLB: enabled(socketLB) as "Enabled" | "Disabled",
    socketLBTracing: "Disabled",
    socketLBCoverage: c && c.flags & CFG_F.HOST_NS_ONLY ? "Hostns-only" : "Full",
    // the tc datapath forwards to remote backends with SNAT only
    mode:
      modeName === "snat"
        ? "SNAT"
        : `SNAT (loadBalancer.mode=${modeName} is not implemented by this datapath)`,
    backendSelection:
      cfg.loadBalancer.algorithm === "maglev"
        ? "Random (loadBalancer.algorithm=maglev is not implemented yet)"
        : "Random",
    sessionAffinity: enabled(socketLB || northSouth) as "Enabled" | "Disabled",
    gracefulTermination: enabled(socketLB || northSouth) as "Enabled" | "Disabled",
    nat46x64: "Disabled",
    xdpAcceleration:
      cfg.loadBalancer.acceleration === "disabled"
        ? "Disabled"
        : `Disabled (loadBalancer.acceleration=${cfg.loadBalancer.acceleration}: no XDP program yet)`,
    services: {
      clusterIP: enabled(socketLB),
      nodePort: nodePortOn ? `Enabled (Range: ${c!.nodeport_min}-${c!.nodeport_max})` : "Disabled",
      loadBalancer: enabled(socketLB || northSouth),
      externalIPs: enabled(socketLB || northSouth),
      hostPort: enabled(nodePortOn),
    },
    annotations: SUPPORTED_ANNOTATIONS,
    programmed: st.counts,
    hooks: {
      cgroup: { root: st.cgroupRoot, hooks: st.cgroupHooks },
      devices: devices.map((d) => ({ name: d.name, hooks: d.hooks })),
    },
    bpfRoot: st.bpfRoot,
  };
}

/** `cilium status --verbose`'s KubeProxyReplacement block (verbose) or its first line. */
export function formatStatus(r: StatusReport, verbose: boolean): string {
  const devText = r.devices.map((d) => `${d.name} ${d.address}${d.directRouting ? " (Direct Routing)" : ""}`);
  const first =
    r.kubeProxyReplacement === "True" && devText.length > 0
      ? `KubeProxyReplacement:    True   [${devText.join(", ")}]`
      : `KubeProxyReplacement:    ${r.kubeProxyReplacement}`;
  if (!verbose) return `${first.trimEnd()}\n`;
  const kv = (k: string, v: string, indent = "  ") => `${indent}${`${k}:`.padEnd(23)}${v}`;
  const lines = [
    first.trimEnd(),
    "KubeProxyReplacement Details:",
    kv("Status", r.kubeProxyReplacement),
    kv("Socket LB", r.socketLB),
    kv("Socket LB Tracing", r.socketLBTracing),
    kv("Socket LB Coverage", r.socketLBCoverage),
    kv(
      "Devices",
      r.devices.length
        ? r.devices
            .map((d) => `${d.name}   ${d.address}${d.directRouting ? " (Direct Routing)" : ""}`)
            .join(", ")
        : "(none)",
    ),
    kv("Mode", r.mode),
    kv("Backend Selection", r.backendSelection),
    kv("Session Affinity", r.sessionAffinity),
    kv("Graceful Termination", r.gracefulTermination),
    kv("NAT46/64 Support", r.nat46x64),
    kv("XDP Acceleration", r.xdpAcceleration),
    "  Services:",
    `  - ${"ClusterIP:".padEnd(16)}${r.services.clusterIP}`,
    `  - ${"NodePort:".padEnd(16)}${r.services.nodePort}`,
    `  - ${"LoadBalancer:".padEnd(16)}${r.services.loadBalancer}`,
    `  - ${"externalIPs:".padEnd(16)}${r.services.externalIPs}`,
    `  - ${"HostPort:".padEnd(16)}${r.services.hostPort}`,
    "  Annotations:",
    ...r.annotations.map((a) => `  - ${a}`),
    kv(
      "Programmed",
      `${r.programmed.frontends} frontends (${r.programmed.services} services), ${r.programmed.backends} backends`,
    ),
    "  Hooks:",
    `  - ${`cgroup ${r.hooks.cgroup.root}:`} ${r.hooks.cgroup.hooks.length ? r.hooks.cgroup.hooks.join(", ") : "(none)"}`,
    ...r.hooks.devices.map((d) => `  - ${d.name}: ${d.hooks.length ? d.hooks.join(", ") : "(none)"}`),
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
