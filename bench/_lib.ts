/**
 * Shared pieces of the benchmarks: process running and timing, the scratch environment (network
 * namespace, bpffs dir, cgroup) with cleanup that also runs on Ctrl-C, a deterministic service set
 * and its three renderings — Kubernetes manifests for kpr, kube-proxy's iptables-restore input and
 * kube-proxy's nftables input — and the table printer.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dir, "..");
export const KPR = join(REPO, "dist", "kpr");

// ---------------------------------------------------------------------------------------------
// processes and time

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** wall time of the process, milliseconds */
  ms: number;
  /** killed after RunOptions.timeoutMs */
  timedOut: boolean;
}

export interface RunOptions {
  /** run inside this network namespace: `nsenter --net=/run/netns/NS` (keeps the mount ns, so bpffs stays visible) */
  ns?: string;
  input?: string | Uint8Array;
  /** do not throw on a non-zero exit */
  allowFail?: boolean;
  env?: Record<string, string>;
  /** kill the process (SIGKILL) after this long; the result then has timedOut set */
  timeoutMs?: number;
  /** write stdout to this file instead of capturing it (RunResult.stdout is then "") */
  stdoutTo?: string;
}

const live = new Set<Bun.Subprocess>();

function toCmd(argv: string[], opts: RunOptions): string[] {
  return opts.ns ? ["nsenter", `--net=/run/netns/${opts.ns}`, "--", ...argv] : argv;
}

function finish(argv: string[], res: RunResult, opts: RunOptions): RunResult {
  if (res.timedOut || res.code === 0 || opts.allowFail) return res;
  const tail = (res.stderr || res.stdout).trim().split("\n").slice(-12).join("\n");
  throw new Error(`run ${argv.slice(0, 3).join(" ")}: exit ${res.code} (${tail})`);
}

/**
 * Runs argv to completion and measures its wall time; throws "run CMD: exit N (stderr tail)"
 * unless allowFail. Asynchronous so that Ctrl-C is handled while it runs (Cleanup kills it).
 */
export async function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const t0 = Bun.nanoseconds();
  const proc = Bun.spawn(toCmd(argv, opts), {
    stdin: opts.input === undefined ? "ignore" : new Blob([opts.input]),
    stdout: opts.stdoutTo ? Bun.file(opts.stdoutTo) : "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
  });
  live.add(proc);
  let timedOut = false;
  const timer = opts.timeoutMs
    ? setTimeout(() => {
        timedOut = true;
        proc.kill("SIGKILL");
      }, opts.timeoutMs)
    : undefined;
  try {
    const [stdout, stderr, code] = await Promise.all([
      proc.stdout instanceof ReadableStream ? new Response(proc.stdout).text() : Promise.resolve(""),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    const ms = (Bun.nanoseconds() - t0) / 1e6;
    return finish(argv, { code, stdout, stderr, ms, timedOut }, opts);
  } finally {
    if (timer) clearTimeout(timer);
    live.delete(proc);
  }
}

/** run() without awaiting: for cleanup steps. */
export function runSync(argv: string[], opts: RunOptions = {}): RunResult {
  const t0 = Bun.nanoseconds();
  const r = Bun.spawnSync(toCmd(argv, opts), {
    stdin: opts.input === undefined ? "ignore" : Buffer.from(opts.input),
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
  });
  const ms = (Bun.nanoseconds() - t0) / 1e6;
  const res = {
    code: r.exitCode ?? -1,
    stdout: r.stdout.toString(),
    stderr: r.stderr.toString(),
    ms,
    timedOut: false,
  };
  return finish(argv, res, opts);
}

/** True when `tool` is on PATH (or in /usr/sbin, /sbin). */
export function have(tool: string): boolean {
  return Bun.which(tool, { PATH: `${process.env.PATH ?? ""}:/usr/sbin:/sbin` }) !== null;
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

// ---------------------------------------------------------------------------------------------
// scratch environment and cleanup

type CleanupStep = { what: string; fn: () => void };

/**
 * Cleanup steps run in reverse order of registration, once, on normal exit, on an exception
 * and on SIGINT/SIGTERM; a failing step is reported and the others still run.
 */
export class Cleanup {
  private steps: CleanupStep[] = [];
  private done = false;

  constructor() {
    const onSignal = (sig: NodeJS.Signals) => {
      console.error(`\n${sig}: cleaning up`);
      for (const p of live) p.kill("SIGKILL");
      this.runAll();
      process.exit(130);
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    process.once("exit", () => this.runAll());
  }

  add(what: string, fn: () => void): void {
    this.steps.push({ what, fn });
  }

  runAll(): void {
    if (this.done) return;
    this.done = true;
    for (const s of this.steps.reverse()) {
      try {
        s.fn();
      } catch (e) {
        console.error(`cleanup: ${s.what}: ${(e as Error).message}`);
      }
    }
  }
}

/** A short unique name prefix for everything one benchmark run creates: "kb" + 6 random chars. */
export function uniquePrefix(tag = "kb"): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const b = randomBytes(6);
  let s = tag;
  for (const x of b) s += alphabet[x % alphabet.length];
  return s;
}

/** Creates netns NAME (lo up) and registers its deletion. */
export function createNetns(cleanup: Cleanup, name: string): string {
  runSync(["ip", "netns", "add", name]);
  cleanup.add(`delete netns ${name}`, () => runSync(["ip", "netns", "delete", name], { allowFail: true }));
  runSync(["ip", "-n", name, "link", "set", "lo", "up"]);
  return name;
}

/**
 * A veth pair with both ends inside `ns` (never in the host namespace), `a` addressed `addrA`
 * ("192.168.77.1/24"), both up. Deleted with the namespace.
 */
export function vethInNs(ns: string, a: string, b: string, addrA: string, addrB?: string): void {
  runSync(["ip", "-n", ns, "link", "add", a, "type", "veth", "peer", "name", b]);
  runSync(["ip", "-n", ns, "addr", "add", addrA, "dev", a]);
  if (addrB) runSync(["ip", "-n", ns, "addr", "add", addrB, "dev", b]);
  runSync(["ip", "-n", ns, "link", "set", a, "up"]);
  runSync(["ip", "-n", ns, "link", "set", b, "up"]);
}

function mountsOfType(fstype: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const [type] = line.slice(sep + 3).split(" ");
    if (type === fstype) out.push(line.split(" ")[4]!);
  }
  return out;
}

/** Makes sure bpffs is mounted at /sys/fs/bpf (nothing is mounted there on a fresh machine). */
export function ensureBpffs(): void {
  if (!mountsOfType("bpf").includes("/sys/fs/bpf")) runSync(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"]);
}

/** Creates a child cgroup `${cgroup2 mount}/${name}` and registers its removal. */
export function createCgroup(cleanup: Cleanup, name: string): string {
  const mount = mountsOfType("cgroup2")[0];
  if (!mount) throw new Error("create cgroup: no cgroup2 mount found in /proc/self/mountinfo");
  const dir = join(mount, name);
  mkdirSync(dir);
  cleanup.add(`remove cgroup ${dir}`, () => {
    if (existsSync(dir)) rmdirSync(dir);
  });
  return dir;
}

/**
 * Registers, for a kpr node whose bpf root is `bpfRoot`: `kpr cleanup` inside `ns` (detaches
 * links, unpins maps), then removal of whatever is left under the root.
 */
export function cleanupKprRoot(cleanup: Cleanup, ns: string, cfgPath: string, bpfRoot: string): void {
  cleanup.add(`remove ${bpfRoot}`, () => {
    if (existsSync(bpfRoot)) rmSync(bpfRoot, { recursive: true, force: true });
  });
  cleanup.add(`kpr cleanup (${bpfRoot})`, () => {
    if (existsSync(bpfRoot) && existsSync(KPR))
      runSync([KPR, "cleanup", "--config", cfgPath], { ns, allowFail: true });
  });
}

/** Writes a kpr config file (JSON is valid YAML) and returns its path. */
export function writeKprConfig(dir: string, cfg: Record<string, unknown>): string {
  const p = join(dir, "config.yaml");
  writeFileSync(p, JSON.stringify(cfg, null, 2));
  return p;
}

// ---------------------------------------------------------------------------------------------
// the service set

export interface BenchEndpoint {
  ip: string;
  nodeName: string;
}

export interface BenchService {
  namespace: string;
  name: string;
  /** Service port name */
  portName: string;
  clusterIP: string;
  port: number;
  targetPort: number;
  protocol: "TCP" | "UDP";
  nodePort?: number;
  endpoints: BenchEndpoint[];
}

export interface ServiceSetOptions {
  services: number;
  endpoints: number;
  /** Share of services that are type NodePort (capped by the port range's size). Default 0.2. */
  nodePortShare?: number;
  nodePortRange?: [number, number];
  /** Name of the node the benchmark plays; every `localEvery`-th endpoint runs on it. */
  nodeName: string;
  localEvery?: number;
}

/** Pod CIDR of the generated endpoints (kube-proxy's --cluster-cidr for its masquerade rule). */
export const CLUSTER_CIDR = "10.128.0.0/9";

function ip4(base: number, i: number): string {
  const v = (base + i) >>> 0;
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

const SVC_BASE = (10 << 24) | (96 << 16); // 10.96.0.0/12: room for 1M ClusterIPs
const POD_BASE = ((10 << 24) | (128 << 16)) >>> 0; // 10.128.0.0/9

/**
 * A deterministic set of services: ClusterIP 10.96.x.y, every k-th service a NodePort (TCP),
 * every 10th UDP, endpoints in 10.128.0.0/9 spread over three node names with every
 * `localEvery`-th on this node.
 */
export function makeServiceSet(o: ServiceSetOptions): BenchService[] {
  const [npLo, npHi] = o.nodePortRange ?? [30000, 32767];
  const npMax = npHi - npLo + 1;
  const share = o.nodePortShare ?? 0.2;
  const wantNp = Math.min(Math.floor(o.services * share), npMax);
  const npEvery = wantNp > 0 ? o.services / wantNp : Number.POSITIVE_INFINITY;
  const localEvery = o.localEvery ?? 3;
  const out: BenchService[] = [];
  let np = 0;
  for (let i = 0; i < o.services; i++) {
    const isNp = np < wantNp && Math.floor(np * npEvery) === i;
    const udp = !isNp && i % 10 === 9;
    const endpoints: BenchEndpoint[] = [];
    for (let j = 0; j < o.endpoints; j++) {
      const k = i * o.endpoints + j;
      endpoints.push({
        ip: ip4(POD_BASE, k + 1),
        nodeName: k % localEvery === 0 ? o.nodeName : `peer-${k % 2}`,
      });
    }
    out.push({
      namespace: `bench${i % 10}`,
      name: `svc-${i}`,
      portName: udp ? "dns" : "http",
      clusterIP: ip4(SVC_BASE, i + 1),
      port: udp ? 53 : 80,
      targetPort: udp ? 5353 : 8080,
      protocol: udp ? "UDP" : "TCP",
      nodePort: isNp ? npLo + np++ : undefined,
      endpoints,
    });
  }
  return out;
}

/** A copy of `set` with the first endpoint of service `index` moved to a new pod address. */
export function withOneEndpointChanged(set: BenchService[], index: number): BenchService[] {
  const copy = [...set];
  const s = set[index]!;
  const fresh = ip4(POD_BASE, set.length * Math.max(1, s.endpoints.length) + 1000 + index);
  copy[index] = { ...s, endpoints: [{ ...s.endpoints[0]!, ip: fresh }, ...s.endpoints.slice(1)] };
  return copy;
}

// ---------------------------------------------------------------------------------------------
// kpr's input: Kubernetes manifests

function serviceObject(s: BenchService): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: s.name, namespace: s.namespace },
    spec: {
      type: s.nodePort ? "NodePort" : "ClusterIP",
      clusterIP: s.clusterIP,
      clusterIPs: [s.clusterIP],
      selector: { app: s.name },
      ports: [
        {
          name: s.portName,
          port: s.port,
          targetPort: s.targetPort,
          protocol: s.protocol,
          ...(s.nodePort ? { nodePort: s.nodePort } : {}),
        },
      ],
    },
  };
}

function sliceObject(s: BenchService): Record<string, unknown> {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `${s.name}-abcde`,
      namespace: s.namespace,
      labels: { "kubernetes.io/service-name": s.name },
    },
    addressType: "IPv4",
    ports: [{ name: s.portName, port: s.targetPort, protocol: s.protocol }],
    endpoints: s.endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: e.nodeName,
    })),
  };
}

function yamlScalar(v: unknown): string {
  if (typeof v === "string") return /^[A-Za-z][A-Za-z0-9_./-]*$/.test(v) ? v : JSON.stringify(v);
  return String(v);
}

/** Block-style YAML of a plain JSON value (just enough for the generated objects). */
function toYaml(v: unknown, indent = ""): string {
  if (Array.isArray(v)) {
    if (v.length === 0) return "[]";
    return v
      .map((x) => {
        const inner = toYaml(x, `${indent}  `);
        return `\n${indent}- ${typeof x === "object" && x !== null ? inner.trimStart() : inner}`;
      })
      .join("");
  }
  if (typeof v === "object" && v !== null) {
    const entries = Object.entries(v);
    if (entries.length === 0) return "{}";
    return entries
      .map(([k, x]) => {
        const key = yamlScalar(k);
        if (typeof x === "object" && x !== null) return `\n${indent}${key}:${toYaml(x, `${indent}  `)}`;
        return `\n${indent}${key}: ${yamlScalar(x)}`;
      })
      .join("");
  }
  return yamlScalar(v);
}

export type ManifestFormat = "yaml" | "json";

/**
 * Writes `set` as Services + EndpointSlices (plus this node's Node object) into `dir`, split in
 * files of `perFile` services: multi-document YAML or JSON `kind: List`. Returns the file count.
 */
export function writeManifests(
  dir: string,
  set: BenchService[],
  o: { format: ManifestFormat; nodeName: string; nodeAddress: string; perFile?: number },
): number {
  mkdirSync(dir, { recursive: true });
  const perFile = o.perFile ?? 1000;
  const node = {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: o.nodeName, labels: { "kubernetes.io/hostname": o.nodeName } },
    status: { addresses: [{ type: "InternalIP", address: o.nodeAddress }] },
  };
  let files = 0;
  const emit = (name: string, objs: Record<string, unknown>[]) => {
    const text =
      o.format === "json"
        ? JSON.stringify({ apiVersion: "v1", kind: "List", items: objs })
        : objs.map((x) => `---${toYaml(x)}\n`).join("");
    writeFileSync(join(dir, `${name}.${o.format}`), text);
    files++;
  };
  emit("node", [node]);
  for (let i = 0; i < set.length; i += perFile) {
    const chunk = set.slice(i, i + perFile);
    emit(`services-${String(i / perFile).padStart(4, "0")}`, [
      ...chunk.map(serviceObject),
      ...chunk.map(sliceObject),
    ]);
  }
  return files;
}

// ---------------------------------------------------------------------------------------------
// kube-proxy's iptables layout (pkg/proxy/iptables, MinimizeIPTablesRestore era)

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** kube-proxy's chain-name hash: base32(sha256(text)), first `n` characters. */
export function kubeHash(text: string, n = 16): string {
  const d = createHash("sha256").update(text).digest();
  let out = "";
  let bits = 0;
  let acc = 0;
  for (const byte of d) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < n) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
    if (out.length >= n) break;
  }
  return out;
}

/** "ns/name:port" — kube-proxy's ServicePortName. */
function spn(s: BenchService): string {
  return `${s.namespace}/${s.name}:${s.portName}`;
}

function svcChain(s: BenchService): string {
  return `KUBE-SVC-${kubeHash(spn(s) + s.protocol.toLowerCase())}`;
}
function extChain(s: BenchService): string {
  return `KUBE-EXT-${kubeHash(spn(s) + s.protocol.toLowerCase())}`;
}
function sepChain(s: BenchService, e: BenchEndpoint): string {
  return `KUBE-SEP-${kubeHash(spn(s) + s.protocol.toLowerCase() + `${e.ip}:${s.targetPort}`)}`;
}

interface IptChains {
  /** chain name → its rules (without the "-A CHAIN" prefix) */
  chains: Map<string, string[]>;
}

function iptServiceChains(s: BenchService, into: Map<string, string[]>): void {
  const p = s.protocol.toLowerCase();
  const svc = svcChain(s);
  const n = s.endpoints.length;
  const rules: string[] = [
    `-m comment --comment "${spn(s)} cluster IP" -m ${p} -p ${p} -d ${s.clusterIP}/32 --dport ${s.port} ! -s ${CLUSTER_CIDR} -j KUBE-MARK-MASQ`,
  ];
  s.endpoints.forEach((e, i) => {
    const stat = i < n - 1 ? ` -m statistic --mode random --probability ${(1 / (n - i)).toFixed(10)}` : "";
    rules.push(`-m comment --comment "${spn(s)} -> ${e.ip}:${s.targetPort}"${stat} -j ${sepChain(s, e)}`);
    into.set(sepChain(s, e), [
      `-m comment --comment ${spn(s)} -s ${e.ip}/32 -j KUBE-MARK-MASQ`,
      `-m comment --comment ${spn(s)} -m ${p} -p ${p} -j DNAT --to-destination ${e.ip}:${s.targetPort}`,
    ]);
  });
  into.set(svc, rules);
  if (s.nodePort) {
    into.set(extChain(s), [
      `-m comment --comment "masquerade traffic for ${spn(s)} external destinations" -j KUBE-MARK-MASQ`,
      `-j ${svc}`,
    ]);
  }
}

const natCache = new WeakMap<BenchService[], IptChains>();

/** The nat table's chains for `set`, in kube-proxy's layout (memoized per set: the sets are large). */
function iptNat(set: BenchService[]): IptChains {
  let t = natCache.get(set);
  if (!t) {
    t = buildIptNat(set);
    natCache.set(set, t);
  }
  return t;
}

function buildIptNat(set: BenchService[]): IptChains {
  const chains = new Map<string, string[]>();
  const services: string[] = [];
  const nodeports: string[] = [];
  for (const s of set) {
    const p = s.protocol.toLowerCase();
    if (s.endpoints.length === 0) continue;
    services.push(
      `-m comment --comment "${spn(s)} cluster IP" -m ${p} -p ${p} -d ${s.clusterIP}/32 --dport ${s.port} -j ${svcChain(s)}`,
    );
    if (s.nodePort)
      nodeports.push(
        `-m comment --comment ${spn(s)} -m ${p} -p ${p} --dport ${s.nodePort} -j ${extChain(s)}`,
      );
  }
  services.push(
    `-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
  );
  chains.set("KUBE-SERVICES", services);
  chains.set("KUBE-NODEPORTS", nodeports);
  chains.set("KUBE-POSTROUTING", [
    "-m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-j MARK --xor-mark 0x4000",
    `-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
  ]);
  chains.set("KUBE-MARK-MASQ", ["-j MARK --or-mark 0x4000"]);
  for (const s of set) if (s.endpoints.length > 0) iptServiceChains(s, chains);
  return { chains };
}

/** The filter table's chains (kube-proxy's forward/firewall chains; no per-service rules here). */
function iptFilter(): IptChains {
  const chains = new Map<string, string[]>();
  chains.set("KUBE-SERVICES", []);
  chains.set("KUBE-EXTERNAL-SERVICES", []);
  chains.set("KUBE-NODEPORTS", []);
  chains.set("KUBE-PROXY-FIREWALL", []);
  chains.set("KUBE-FORWARD", [
    `-m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT`,
    `-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  ]);
  return { chains };
}

function renderTable(table: string, t: IptChains, only?: Set<string>, remove: string[] = []): string {
  const lines = [`*${table}`];
  for (const name of t.chains.keys()) if (!only || only.has(name)) lines.push(`:${name} - [0:0]`);
  // a stale chain is declared (so flushed) before it is deleted, as kube-proxy does
  for (const name of remove) lines.push(`:${name} - [0:0]`);
  for (const [name, rules] of t.chains) {
    if (only && !only.has(name)) continue;
    for (const r of rules) lines.push(`-A ${name} ${r}`);
  }
  for (const name of remove) lines.push(`-X ${name}`);
  lines.push("COMMIT");
  return `${lines.join("\n")}\n`;
}

/**
 * The jumps from the built-in chains into kube-proxy's chains. kube-proxy installs these once
 * at start with `iptables -C/-I`, outside its restore input; here they are one small restore.
 */
export function iptablesJumps(): string {
  return [
    "*filter",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-EXTERNAL-SERVICES - [0:0]",
    ":KUBE-NODEPORTS - [0:0]",
    ":KUBE-PROXY-FIREWALL - [0:0]",
    ":KUBE-FORWARD - [0:0]",
    `-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`,
    `-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS`,
    `-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`,
    `-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`,
    `-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    "COMMIT",
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    `-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
    "COMMIT",
    "",
  ].join("\n");
}

/** kube-proxy's full sync: every chain declared (so flushed) and rewritten; for `iptables-restore --noflush`. */
export function iptablesFull(set: BenchService[]): string {
  return renderTable("filter", iptFilter()) + renderTable("nat", iptNat(set));
}

/**
 * kube-proxy's partial sync after `prev` → `next` (MinimizeIPTablesRestore, the default since
 * 1.27): the top-level chains rewritten whole, only changed services' chains rewritten, stale
 * endpoint chains deleted.
 */
export function iptablesPartial(prev: BenchService[], next: BenchService[]): string {
  const a = iptNat(prev).chains;
  const nat = iptNat(next);
  const only = new Set(["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]);
  for (const [name, rules] of nat.chains) {
    const old = a.get(name);
    if (!old || old.join("\n") !== rules.join("\n")) only.add(name);
  }
  const stale = [...a.keys()].filter((k) => !nat.chains.has(k));
  return renderTable("filter", iptFilter()) + renderTable("nat", nat, only, stale);
}

/** Number of rules in an iptables-restore text. */
export function countIptRules(text: string): number {
  let n = 0;
  for (const line of text.split("\n")) if (line.startsWith("-A ")) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// kube-proxy's nftables layout (pkg/proxy/nftables: verdict maps, one chain per service/endpoint)

const NFT_TABLE = "ip kube-proxy";

function nftSvcChain(s: BenchService): string {
  const p = s.protocol.toLowerCase();
  const id = `${s.namespace}/${s.name}/${p}/${s.portName}`;
  return `service-${kubeHash(spn(s) + p, 8)}-${id}`;
}
function nftExtChain(s: BenchService): string {
  const p = s.protocol.toLowerCase();
  return `external-${kubeHash(spn(s) + p, 8)}-${s.namespace}/${s.name}/${p}/${s.portName}`;
}
function nftEpChain(s: BenchService, e: BenchEndpoint): string {
  const p = s.protocol.toLowerCase();
  const id = `${s.namespace}/${s.name}/${p}/${s.portName}__${e.ip}/${s.targetPort}`;
  return `endpoint-${kubeHash(spn(s) + p + `${e.ip}:${s.targetPort}`, 8)}-${id}`;
}

function nftServiceLines(s: BenchService, out: string[], withChains = true): void {
  const p = s.protocol.toLowerCase();
  const svc = nftSvcChain(s);
  for (const e of s.endpoints) {
    const ep = nftEpChain(s, e);
    if (withChains) out.push(`add chain ${NFT_TABLE} ${ep}`);
    out.push(`add rule ${NFT_TABLE} ${ep} ip saddr ${e.ip} jump mark-for-masquerade`);
    out.push(`add rule ${NFT_TABLE} ${ep} meta l4proto ${p} dnat to ${e.ip}:${s.targetPort}`);
  }
  if (withChains) out.push(`add chain ${NFT_TABLE} ${svc}`);
  out.push(
    `add rule ${NFT_TABLE} ${svc} ip daddr ${s.clusterIP} ${p} dport ${s.port} ip saddr != ${CLUSTER_CIDR} jump mark-for-masquerade`,
  );
  const vmap = s.endpoints.map((e, i) => `${i} : goto ${nftEpChain(s, e)}`).join(" , ");
  out.push(`add rule ${NFT_TABLE} ${svc} numgen random mod ${s.endpoints.length} vmap { ${vmap} }`);
}

/** kube-proxy's nftables ruleset for `set` (one `nft -f` transaction into an empty netns). */
export function nftFull(set: BenchService[]): string {
  const t = NFT_TABLE;
  const out: string[] = [
    `add table ${t} { comment "rules for kube-proxy" ; }`,
    `add chain ${t} nat-prerouting { type nat hook prerouting priority dstnat ; }`,
    `add chain ${t} nat-output { type nat hook output priority -100 ; }`,
    `add chain ${t} nat-postrouting { type nat hook postrouting priority srcnat ; }`,
    `add chain ${t} filter-forward { type filter hook forward priority -110 ; }`,
    `add chain ${t} mark-for-masquerade`,
    `add rule ${t} mark-for-masquerade mark set mark or 0x4000`,
    `add chain ${t} masquerading`,
    `add rule ${t} masquerading mark and 0x4000 == 0 return`,
    `add rule ${t} masquerading mark set mark xor 0x4000`,
    `add rule ${t} masquerading masquerade fully-random`,
    `add set ${t} cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }`,
    `add map ${t} service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`,
    `add map ${t} service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }`,
    `add chain ${t} services`,
    `add rule ${t} services ip daddr . meta l4proto . th dport vmap @service-ips`,
    `add rule ${t} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports`,
    `add rule ${t} nat-prerouting jump services`,
    `add rule ${t} nat-output jump services`,
    `add rule ${t} nat-postrouting jump masquerading`,
    `add rule ${t} filter-forward ct state new ip daddr @cluster-ips accept`,
  ];
  for (const s of set) {
    if (s.endpoints.length === 0) continue;
    const p = s.protocol.toLowerCase();
    nftServiceLines(s, out);
    out.push(`add element ${t} cluster-ips { ${s.clusterIP} }`);
    out.push(`add element ${t} service-ips { ${s.clusterIP} . ${p} . ${s.port} : goto ${nftSvcChain(s)} }`);
    if (s.nodePort) {
      const ext = nftExtChain(s);
      out.push(`add chain ${t} ${ext}`);
      out.push(`add rule ${t} ${ext} jump mark-for-masquerade`);
      out.push(`add rule ${t} ${ext} goto ${nftSvcChain(s)}`);
      out.push(`add element ${t} service-nodeports { ${p} . ${s.nodePort} : goto ${ext} }`);
    }
  }
  return `${out.join("\n")}\n`;
}

/**
 * kube-proxy nftables' incremental transaction for service `index` changing from `prev` to
 * `next`: new endpoint chains added, the service chain flushed and rewritten, stale endpoint
 * chains deleted — all in one `nft -f`.
 */
export function nftOneServiceUpdate(prev: BenchService, next: BenchService): string {
  const t = NFT_TABLE;
  const out: string[] = [];
  const oldEps = new Set(prev.endpoints.map((e) => nftEpChain(prev, e)));
  const newEps = new Set(next.endpoints.map((e) => nftEpChain(next, e)));
  for (const e of next.endpoints) {
    const ep = nftEpChain(next, e);
    if (oldEps.has(ep)) continue;
    out.push(`add chain ${t} ${ep}`);
    out.push(`add rule ${t} ${ep} ip saddr ${e.ip} jump mark-for-masquerade`);
    out.push(
      `add rule ${t} ${ep} meta l4proto ${next.protocol.toLowerCase()} dnat to ${e.ip}:${next.targetPort}`,
    );
  }
  const svc = nftSvcChain(next);
  out.push(`flush chain ${t} ${svc}`);
  const lines: string[] = [];
  nftServiceLines(next, lines, false);
  out.push(...lines.filter((l) => l.startsWith(`add rule ${t} ${svc} `)));
  // a chain must be empty and unreferenced to be deleted: the service chain no longer names it
  // (flushed above) and flushing it first empties it, all in the same transaction
  for (const ep of oldEps) {
    if (newEps.has(ep)) continue;
    out.push(`flush chain ${t} ${ep}`);
    out.push(`delete chain ${t} ${ep}`);
  }
  return `${out.join("\n")}\n`;
}

/** Number of rules plus map elements in an nft script. */
export function countNftStatements(text: string): { rules: number; elements: number } {
  let rules = 0;
  let elements = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("add rule ")) rules++;
    else if (line.startsWith("add element ")) elements++;
  }
  return { rules, elements };
}

// ---------------------------------------------------------------------------------------------
// output

/** Milliseconds with sensible precision. */
export function fmtMs(ms: number | undefined): string {
  if (ms === undefined || Number.isNaN(ms)) return "—";
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 1) return `${ms.toFixed(1)} ms`;
  return `${(ms * 1000).toFixed(0)} µs`;
}

/** "23.4×" for a / b, or "—" when either is missing. */
export function fmtRatio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || b <= 0 || Number.isNaN(a) || Number.isNaN(b)) return "—";
  const r = a / b;
  return r >= 100 ? `${r.toFixed(0)}×` : r >= 10 ? `${r.toFixed(1)}×` : `${r.toFixed(2)}×`;
}

/** Prints a plain-text table with a header rule; the first column left-aligned, the rest right-aligned. */
export function printTable(headers: string[], rows: string[][]): void {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ");
  console.log(line(headers));
  console.log(w.map((n) => "-".repeat(n)).join("  "));
  for (const r of rows) console.log(line(r));
}

/**
 * A benchmark's start: exits 1 naming what is missing (root, tools, built files), else makes
 * bpffs present and returns a Cleanup, a unique `kb…` prefix and a temp dir the Cleanup removes.
 */
export function startBench(
  name: string,
  need: { tools: string[]; files: string[] },
): { cleanup: Cleanup; prefix: string; tmp: string } {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("root");
  for (const t of need.tools) if (!have(t)) missing.push(t);
  for (const f of need.files) if (!existsSync(f)) missing.push(`${f} (run: bun build.ts)`);
  if (missing.length > 0) {
    console.error(`bench/${name}: cannot run, missing: ${missing.join(", ")}`);
    process.exit(1);
  }
  const cleanup = new Cleanup();
  const prefix = uniquePrefix("kb");
  const tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  cleanup.add(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  ensureBpffs();
  return { cleanup, prefix, tmp };
}
