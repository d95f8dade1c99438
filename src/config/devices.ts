import { type IfAddr, interfaceAddresses } from "../datapath/ffi.ts";
import { toolPath } from "../datapath/tools.ts";
import { InputError, type InputProblem, KprError } from "../errors.ts";
import type { Config } from "./config.ts";

interface IpAddrJson {
  ifname?: string;
  addr_info?: { family?: string; local?: string; scope?: string }[];
}

/**
 * Parses `ip -j addr show` output into the node addresses NodePorts are exposed on: global-scope
 * IPv4 and IPv6 addresses in the order given (link-local and host-scope addresses are not reachable
 * from other nodes, so they are left out).
 */
export function addressesFromIpJson(json: string): string[] {
  const links = JSON.parse(json) as IpAddrJson[];
  const out: string[] = [];
  for (const l of links) {
    for (const a of l.addr_info ?? []) {
      if (
        (a.family === "inet" || a.family === "inet6") &&
        a.scope === "global" &&
        a.local &&
        !out.includes(a.local)
      ) {
        out.push(a.local);
      }
    }
  }
  return out;
}

/**
 * Reads the addresses of the configured devices in the current network namespace (getifaddrs,
 * no `ip` process): their global-scope IPv4 and IPv6 addresses, as addressesFromIpJson picks
 * them. A device that does not exist is bad config (InputError naming `configFile`).
 */
export function readDeviceAddresses(
  devices: string[],
  configFile: string,
  all: IfAddr[] = interfaceAddresses(),
): string[] {
  const out: string[] = [];
  const problems: InputProblem[] = [];
  for (const dev of devices) {
    const mine = all.filter((a) => a.name === dev);
    if (!mine.some((a) => a.family === "link")) {
      problems.push({ file: configFile, field: "devices", message: `device "${dev}" not found` });
      continue;
    }
    for (const fam of ["inet", "inet6"] as const)
      for (const a of mine)
        if (a.family === fam && a.scope === "global" && !out.includes(a.address)) out.push(a.address);
  }
  if (problems.length > 0) throw new InputError(problems);
  return out;
}

interface LinkJson {
  ifname?: string;
  flags?: string[];
  link_type?: string;
  master?: string;
  linkinfo?: { info_kind?: string; info_slave_kind?: string };
  addr_info?: { family?: string; local?: string; scope?: string }[];
}

interface RouteJson {
  dst?: string;
  dev?: string;
  nexthops?: { dev?: string }[];
}

/** Name prefixes of interfaces that never face clients (Cilium excludes the same kinds). */
const EXCLUDED_PREFIXES = [
  "lo",
  "cilium_",
  "lxc",
  "cni",
  "docker",
  "kube-ipvs",
  "flannel.",
  "vxlan",
  "genev",
];

/** What the device detection reads from the network namespace (`ip -j` output, parsed). */
export interface NetSnapshot {
  links: LinkJson[];
  routes: RouteJson[];
}

function ipJson<T>(args: string[]): T[] {
  let r: ReturnType<typeof Bun.spawnSync>;
  try {
    r = Bun.spawnSync([toolPath("ip"), "-j", ...args], { stdout: "pipe", stderr: "pipe" });
  } catch (e) {
    throw new KprError(`detect devices: ${(e as Error).message} (is iproute2 installed?)`);
  }
  if (r.exitCode !== 0)
    throw new KprError(`detect devices: ip ${args.join(" ")}: ${r.stderr?.toString().trim()}`);
  const text = r.stdout?.toString().trim() ?? "";
  return text === "" ? [] : (JSON.parse(text) as T[]);
}

/** Reads links with addresses and the default routes (IPv4 and IPv6) of the current netns. */
export function readNetSnapshot(): NetSnapshot {
  return {
    links: ipJson<LinkJson>(["-d", "addr", "show"]),
    routes: [
      ...ipJson<RouteJson>(["-4", "route", "show", "default"]),
      ...ipJson<RouteJson>(["-6", "route", "show", "default"]),
    ],
  };
}

/** Whether `name` matches a configured device: equal, or Cilium's wildcard `eth+` (prefix). */
export function deviceMatches(pattern: string, name: string): boolean {
  return pattern.endsWith("+") ? name.startsWith(pattern.slice(0, -1)) : pattern === name;
}

/** The outcome of device resolution. */
export interface ResolvedDevices {
  /** interface names, in order */
  devices: string[];
  /** true when `devices` was empty in the config and these were detected */
  detected: boolean;
  warnings: string[];
}

/**
 * The devices kpr attaches to: the configured ones with wildcards (`eth+`) expanded, or, with
 * `devices: []`, the detected ones as Cilium picks them: interfaces carrying a default route and
 * those carrying one of `nodeAddresses` (the Node's InternalIP/ExternalIP), loopback, bridge or bond
 * ports and container-side interfaces left out. A wildcard that matches nothing is a warning.
 */
export function resolveDevices(
  cfg: Config,
  opts: { nodeAddresses?: string[]; net?: NetSnapshot } = {},
): ResolvedDevices {
  const warnings: string[] = [];
  if (cfg.devices.length > 0 && !cfg.devices.some((d) => d.endsWith("+")))
    return { devices: [...new Set(cfg.devices)], detected: false, warnings };
  const net = opts.net ?? readNetSnapshot();
  const names = net.links.map((l) => l.ifname ?? "").filter((n) => n !== "");
  if (cfg.devices.length > 0) {
    const out: string[] = [];
    for (const p of cfg.devices) {
      if (!p.endsWith("+")) {
        if (!out.includes(p)) out.push(p);
        continue;
      }
      const hits = names.filter((n) => deviceMatches(p, n) && !out.includes(n));
      if (hits.length === 0) warnings.push(`devices: "${p}" matches no interface`);
      out.push(...hits);
    }
    return { devices: out, detected: false, warnings };
  }
  const eligible = (l: LinkJson) => {
    const n = l.ifname ?? "";
    if (n === "" || EXCLUDED_PREFIXES.some((p) => n.startsWith(p))) return false;
    if (l.link_type === "loopback" || (l.flags ?? []).includes("LOOPBACK")) return false;
    if (l.master || l.linkinfo?.info_slave_kind) return false;
    return true;
  };
  const byName = new Map(net.links.map((l) => [l.ifname ?? "", l]));
  const picked: string[] = [];
  const add = (n: string | undefined) => {
    const l = n ? byName.get(n) : undefined;
    if (l && eligible(l) && !picked.includes(n!)) picked.push(n!);
  };
  for (const r of net.routes) {
    add(r.dev);
    for (const h of r.nexthops ?? []) add(h.dev);
  }
  const nodeAddrs = new Set(opts.nodeAddresses ?? []);
  for (const l of net.links)
    if ((l.addr_info ?? []).some((a) => a.local !== undefined && nodeAddrs.has(a.local))) add(l.ifname);
  return { devices: picked, detected: true, warnings };
}

/** Service types that need a device (tc) to be reachable from outside the node. */
const NORTH_SOUTH = new Set(["NodePort", "ExternalIPs", "LoadBalancer", "HostPort"]);

/**
 * A warning when frontends of `types` (e.g. "NodePort") exist that only a device serves but no
 * device is in use; undefined otherwise.
 */
export function unservedFrontendsWarning(devices: string[], types: string[]): string | undefined {
  if (devices.length > 0) return undefined;
  const counts = new Map<string, number>();
  for (const t of types) if (NORTH_SOUTH.has(t)) counts.set(t, (counts.get(t) ?? 0) + 1);
  if (counts.size === 0) return undefined;
  const what = [...counts].map(([t, n]) => `${n} ${t}`).join(", ");
  return `${what} frontend(s) but no device to serve them: clients outside this node cannot reach them (set devices, or give the node a default route)`;
}

function ipInCidr(addr: string, cidr: string): boolean {
  const [net, bitsText] = cidr.split("/");
  const bits = Number(bitsText);
  const toBits = (a: string): bigint | undefined => {
    if (a.includes(":")) {
      const [head, tail] = a.split("::");
      const h = head ? head.split(":") : [];
      const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
      const parts = a.includes("::") ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t] : h;
      if (parts.length !== 8) return undefined;
      return parts.reduce((acc, p) => (acc << 16n) | BigInt(Number.parseInt(p || "0", 16)), 0n);
    }
    const o = a.split(".").map(Number);
    return o.length === 4 ? o.reduce((acc, x) => (acc << 8n) | BigInt(x), 0n) : undefined;
  };
  const v6 = addr.includes(":");
  if (v6 !== net!.includes(":")) return false;
  const a = toBits(addr);
  const n = toBits(net!);
  if (a === undefined || n === undefined) return false;
  const width = v6 ? 128n : 32n;
  const shift = width - BigInt(bits);
  return a >> shift === n >> shift;
}

/** The node addresses that may serve NodePorts under `nodePort.addresses` (all when it is empty). */
export function nodePortAddresses(cfg: Config, addrs: string[]): string[] {
  const cidrs = cfg.nodePort.addresses ?? [];
  if (cidrs.length === 0) return addrs;
  return addrs.filter((a) => cidrs.some((c) => ipInCidr(a, c)));
}
