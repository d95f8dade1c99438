/**
 * End-to-end topology builder: network namespaces, veth pairs, routes, processes, a per-topology
 * bpffs dir and cgroup, and `dist/kpr` runs against a per-topology config. Everything it creates
 * carries one unique prefix (`kt` + 6 random chars) and is removed by `destroy()`, which
 * `useTopology()` registers in afterAll; an exit/SIGINT hook is the last resort.
 *
 * Interfaces are created directly inside their namespaces (`ip -n NS link add ...`), so they never
 * appear in the host namespace and their names (≤ 15 chars) only need to be unique per namespace.
 */
import { afterAll, beforeAll } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { stringify } from "yaml";

/** Repository root (this file is test/harness/netns.ts). */
export const REPO_ROOT = resolve(import.meta.dir, "../..");
/** The compiled binary that e2e tests drive. */
export const KPR_BIN = join(REPO_ROOT, "dist/kpr");

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  input?: string | Uint8Array;
  /** Kill the process (SIGKILL) after this long; the result then has code 124. Default 30 s. */
  timeoutMs?: number;
  env?: Record<string, string>;
  /**
   * Enter the namespace with `nsenter --net` (keeps the host mount namespace, so bpffs and the
   * cgroup tree stay visible) instead of `ip netns exec` (remounts /sys for the namespace).
   */
  nsenter?: boolean;
}

/** A background process; killed by `destroy()` if still running. */
export interface SpawnHandle {
  readonly pid: number;
  readonly proc: Subprocess;
  /** Exit code once exited (signal deaths give 128 + n). */
  readonly exited: Promise<number>;
  /** stdout and stderr so far, interleaved in arrival order. */
  output(): string;
  /** Resolves with the first match of re in the output; rejects on exit or after timeoutMs. */
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
  kill(graceMs?: number): Promise<void>;
}

export interface VethOptions {
  /** Address(es) with prefix length, v4 or v6 ("10.0.0.1/24", "fd00::1/64"). */
  addrA?: string | string[];
  addrB?: string | string[];
  macA?: string;
  macB?: string;
  mtu?: number;
}

export interface NsOptions {
  /** Sets net.ipv4.ip_forward=1 and net.ipv6.conf.all.forwarding=1. */
  forwarding?: boolean;
}

export interface TopologyOptions {
  /** Fixed prefix (tests should let it be random). Must match /^[a-z][a-z0-9]{1,9}$/. */
  prefix?: string;
}

export interface Topology {
  /** Unique prefix of every name this topology creates. */
  readonly prefix: string;
  /** bpffs dir of this topology: `/sys/fs/bpf/${prefix}` (created on demand by kpr). */
  readonly bpfRoot: string;
  /** cgroup v2 dir of this topology: `${cgroup2 mount}/${prefix}`. */
  readonly cgroupDir: string;
  /** Scratch dir for configs and files: `/tmp/${prefix}`. */
  readonly tmpDir: string;
  /** Path of the default config (written at creation; rewritten by writeConfig). */
  readonly configPath: string;
  /** Full netns name of a short name ("a" → "kt1x2y3z-a"); full names pass through. */
  ns(short: string): string;
  /** Creates netns `${prefix}-${short}` with lo up and IPv6 DAD off; returns its full name. */
  addNs(short: string, opts?: NsOptions): Promise<string>;
  /** Creates a veth pair ifA (in nsA) ↔ ifB (in nsB), sets addresses/MACs, brings both up. */
  veth(nsA: string, ifA: string, nsB: string, ifB: string, opts?: VethOptions): Promise<void>;
  /** `ip route replace dst via X` (an IP) or `dev X` (anything else); or give both. */
  route(ns: string, dst: string, via: string | { via?: string; dev?: string }): Promise<void>;
  /** Runs argv in the namespace; never throws on a non-zero exit. */
  exec(ns: string, argv: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Like exec, but throws `op: stderr` unless the exit code is 0; returns stdout. */
  run(ns: string, argv: string[], opts?: ExecOptions): Promise<string>;
  /** Starts argv in the namespace in the background. */
  spawn(ns: string, argv: string[], opts?: Omit<ExecOptions, "input" | "timeoutMs">): SpawnHandle;
  /**
   * Runs dist/kpr in the namespace (nsenter, so bpffs is visible) with `--config` of this
   * namespace's config (writeConfig with {ns}) or the topology's default config.
   */
  kpr(ns: string, args: string[], opts?: ExecOptions & { config?: string }): Promise<ExecResult>;
  /** Starts dist/kpr in the background (e.g. `run`), like kpr(); killed by destroy(). */
  kprSpawn(ns: string, args: string[], opts?: { config?: string; env?: Record<string, string> }): SpawnHandle;
  /**
   * Writes a YAML config: obj merged over { bpf.root, cgroup.root } of this topology (or, with
   * `ns`, of that namespace's own subdirs, for one kpr instance per namespace). Returns its path.
   */
  writeConfig(obj?: Record<string, unknown>, opts?: { ns?: string }): string;
  /** Runs argv inside the namespace AND the test cgroup (or the namespace's own cgroup). */
  runInCgroup(ns: string, argv: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Background variant of runInCgroup. */
  spawnInCgroup(ns: string, argv: string[], opts?: Omit<ExecOptions, "input" | "timeoutMs">): SpawnHandle;
  /** Removes everything; idempotent; throws listing what could not be removed. */
  destroy(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Host helpers

interface MountInfo {
  point: string;
  fstype: string;
}

function mounts(): MountInfo[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const f = l.split(" ");
      const sep = f.indexOf("-");
      // mountinfo escapes spaces etc. as octal (\040).
      const point = (f[4] ?? "").replace(/\\(\d{3})/g, (_, o: string) =>
        String.fromCharCode(Number.parseInt(o, 8)),
      );
      return { point, fstype: f[sep + 1] ?? "" };
    });
}

/** Mounts bpffs at /sys/fs/bpf unless one is there already. */
export function ensureBpffs(): void {
  if (mounts().some((m) => m.point === "/sys/fs/bpf" && m.fstype === "bpf")) return;
  const r = Bun.spawnSync(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], { stderr: "pipe" });
  if (r.exitCode !== 0)
    throw new Error(`mount bpffs at /sys/fs/bpf: ${r.stderr.toString().trim()} (need root)`);
}

const CGROUP2_FALLBACK = "/run/kpr-test/cgroup2";

/** The first cgroup2 mount point (mounting one at /run/kpr-test/cgroup2 if there is none). */
export function cgroup2Mount(): string {
  const m = mounts().find((x) => x.fstype === "cgroup2");
  if (m) return m.point;
  mkdirSync(CGROUP2_FALLBACK, { recursive: true });
  const r = Bun.spawnSync(["mount", "-t", "cgroup2", "none", CGROUP2_FALLBACK], { stderr: "pipe" });
  if (r.exitCode !== 0)
    throw new Error(`mount cgroup2 at ${CGROUP2_FALLBACK}: ${r.stderr.toString().trim()}`);
  return CGROUP2_FALLBACK;
}

function randomPrefix(): string {
  const abc = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return `kt${Array.from(bytes, (b) => abc[b % abc.length]).join("")}`;
}

async function readAll(stream: ReadableStream<Uint8Array> | undefined): Promise<string> {
  return stream ? new Response(stream).text() : "";
}

async function execArgv(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const proc = Bun.spawn(argv, {
    stdin: opts.input === undefined ? "ignore" : "pipe",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
  });
  if (opts.input !== undefined && proc.stdin) {
    proc.stdin.write(opts.input);
    await proc.stdin.end();
  }
  let timedOut = false;
  const timer = setTimeout(
    () => {
      timedOut = true;
      proc.kill("SIGKILL");
    },
    (opts.timeoutMs ?? 30_000) * TIME_SCALE,
  );
  const [stdout, stderr, code] = await Promise.all([readAll(proc.stdout), readAll(proc.stderr), proc.exited]);
  clearTimeout(timer);
  if (timedOut) {
    return {
      code: 124,
      stdout,
      stderr: `${stderr}\n(killed after ${opts.timeoutMs ?? 30_000} ms: ${argv.join(" ")})`,
    };
  }
  return { code, stdout, stderr };
}

async function must(argv: string[], opts?: ExecOptions): Promise<string> {
  const r = await execArgv(argv, opts);
  if (r.code !== 0)
    throw new Error(`${argv.join(" ")}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
  return r.stdout;
}

function spawnArgv(argv: string[], env?: Record<string, string>): SpawnHandle {
  const proc = Bun.spawn(argv, {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...env },
  });
  let out = "";
  let done = false;
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of s) {
      out += dec.decode(chunk, { stream: true });
      notify();
    }
  };
  const pumps = Promise.all([pump(proc.stdout), pump(proc.stderr)]).catch(() => {});
  const exited = proc.exited.then(async (c) => {
    await pumps;
    done = true;
    notify();
    return c;
  });
  const handle: SpawnHandle = {
    pid: proc.pid,
    proc,
    exited,
    output: () => out,
    waitForOutput(re, timeoutMs = 10_000) {
      return new Promise((resolveP, rejectP) => {
        const check = () => {
          const m = out.match(re);
          if (m) finish(() => resolveP(m));
          else if (done) {
            finish(() =>
              rejectP(
                new Error(`wait for ${re} from ${argv.join(" ")}: exited ${proc.exitCode}; output:\n${out}`),
              ),
            );
          }
        };
        const timer = setTimeout(
          () =>
            finish(() =>
              rejectP(
                new Error(
                  `wait for ${re} from ${argv.join(" ")}: timed out after ${timeoutMs} ms; output:\n${out}`,
                ),
              ),
            ),
          timeoutMs * TIME_SCALE,
        );
        const finish = (f: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    async kill(graceMs = 2000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
      await proc.exited;
      clearTimeout(t);
    },
  };
  return handle;
}

function pidsIn(file: string): number[] {
  try {
    return readFileSync(file, "utf8").split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function killPids(pids: number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isPlainObject(b) && isPlainObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function sleepTick(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Factor applied to the harness's deadlines (KPR_TEST_TIME_SCALE, default 1): the kernel matrix
 * runs the suites in emulated VMs (qemu TCG), where a process starts about 20 times slower.
 */
export const TIME_SCALE = Math.max(1, Number(process.env.KPR_TEST_TIME_SCALE) || 1);

/** Polls cond until true or the deadline; throws `what: timed out`. */
export async function pollUntil(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs * TIME_SCALE;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`${what}: timed out after ${timeoutMs} ms`);
    await sleepTick(delay);
  }
}

// ---------------------------------------------------------------------------------------------
// Last-resort cleanup

const live = new Set<TopologyImpl>();
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", () => {
    for (const t of live) t.destroySync();
  });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      for (const t of live) t.destroySync();
      process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const)[sig]);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Topology

class TopologyImpl implements Topology {
  readonly prefix: string;
  readonly bpfRoot: string;
  readonly cgroupDir: string;
  readonly tmpDir: string;
  readonly configPath: string;
  private readonly namespaces: string[] = [];
  private readonly procs = new Set<SpawnHandle>();
  private readonly nsConfigs = new Map<string, string>();
  private readonly configs = new Set<string>();
  private destroying: Promise<void> | undefined;
  private kprUsed = false;

  constructor(prefix: string, cgroupMount: string) {
    this.prefix = prefix;
    this.bpfRoot = `/sys/fs/bpf/${prefix}`;
    this.cgroupDir = join(cgroupMount, prefix);
    this.tmpDir = `/tmp/${prefix}`;
    this.configPath = join(this.tmpDir, "config.yaml");
  }

  ns(short: string): string {
    return short.startsWith(`${this.prefix}-`) ? short : `${this.prefix}-${short}`;
  }

  private short(ns: string): string {
    return this.ns(ns).slice(this.prefix.length + 1);
  }

  private nsArgv(ns: string, argv: string[], nsenter?: boolean): string[] {
    const name = this.ns(ns);
    if (!this.namespaces.includes(name))
      throw new Error(`netns ${name}: not created by this topology (addNs first)`);
    return nsenter
      ? ["nsenter", `--net=/run/netns/${name}`, "--", ...argv]
      : ["ip", "netns", "exec", name, ...argv];
  }

  async addNs(short: string, opts: NsOptions = {}): Promise<string> {
    const name = this.ns(short);
    if (name.length > 60 || !/^[a-z0-9-]+$/.test(name))
      throw new Error(`addNs ${short}: want [a-z0-9-], short name`);
    await must(["ip", "netns", "add", name]);
    this.namespaces.push(name);
    await must(["ip", "-n", name, "link", "set", "lo", "up"]);
    const sysctls = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"];
    if (opts.forwarding) sysctls.push("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1");
    await must(this.nsArgv(name, ["sysctl", "-q", "-w", ...sysctls]));
    return name;
  }

  async veth(nsA: string, ifA: string, nsB: string, ifB: string, opts: VethOptions = {}): Promise<void> {
    for (const n of [ifA, ifB]) {
      if (n.length > 15 || !/^[A-Za-z0-9_.-]+$/.test(n))
        throw new Error(`veth ${n}: interface names are ≤ 15 of [A-Za-z0-9_.-]`);
    }
    const a = this.ns(nsA);
    const b = this.ns(nsB);
    for (const n of [a, b])
      if (!this.namespaces.includes(n)) throw new Error(`veth: netns ${n} not created by this topology`);
    const peer = ["peer", "name", ifB, "netns", b];
    if (opts.macB) peer.push("address", opts.macB);
    const link = ["ip", "-n", a, "link", "add", ifA];
    if (opts.macA) link.push("address", opts.macA);
    if (opts.mtu) link.push("mtu", String(opts.mtu));
    await must([...link, "type", "veth", ...peer]);
    if (opts.mtu) await must(["ip", "-n", b, "link", "set", ifB, "mtu", String(opts.mtu)]);
    const addrs = (x?: string | string[]) => (x === undefined ? [] : Array.isArray(x) ? x : [x]);
    for (const [ns, dev, list] of [
      [a, ifA, addrs(opts.addrA)],
      [b, ifB, addrs(opts.addrB)],
    ] as const) {
      for (const addr of list) {
        // nodad: an IPv6 address is usable at once instead of "tentative" for ~1 s.
        await must([
          "ip",
          "-n",
          ns,
          "addr",
          "add",
          addr,
          "dev",
          dev,
          ...(addr.includes(":") ? ["nodad"] : []),
        ]);
      }
      await must(["ip", "-n", ns, "link", "set", dev, "up"]);
    }
    // Carrier-on reaches operstate (and the real qdisc) through linkwatch, up to ~1 s later; until
    // then the noop qdisc drops packets, e.g. the first neighbour solicitation.
    for (const [ns, dev] of [
      [a, ifA],
      [b, ifB],
    ] as const) {
      await pollUntil(`veth ${ns}/${dev} operstate UP`, async () =>
        (await must(["ip", "-n", ns, "-o", "link", "show", "dev", dev])).includes("state UP"),
      );
    }
  }

  async route(ns: string, dst: string, via: string | { via?: string; dev?: string }): Promise<void> {
    const spec =
      typeof via === "string"
        ? /^[0-9a-fA-F.:]+$/.test(via) && /[.:]/.test(via)
          ? { via }
          : { dev: via }
        : via;
    const argv = ["ip", "-n", this.ns(ns)];
    if (dst.includes(":") || spec.via?.includes(":")) argv.push("-6");
    argv.push("route", "replace", dst);
    if (spec.via) argv.push("via", spec.via);
    if (spec.dev) argv.push("dev", spec.dev);
    await must(argv);
  }

  async exec(ns: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return execArgv(this.nsArgv(ns, argv, opts.nsenter), opts);
  }

  async run(ns: string, argv: string[], opts: ExecOptions = {}): Promise<string> {
    return must(this.nsArgv(ns, argv, opts.nsenter), opts);
  }

  private track(h: SpawnHandle): SpawnHandle {
    this.procs.add(h);
    h.exited.then(() => this.procs.delete(h));
    return h;
  }

  spawn(ns: string, argv: string[], opts: Omit<ExecOptions, "input" | "timeoutMs"> = {}): SpawnHandle {
    return this.track(spawnArgv(this.nsArgv(ns, argv, opts.nsenter), opts.env));
  }

  private cgroupFor(ns: string): string {
    return this.nsConfigs.has(this.ns(ns)) ? join(this.cgroupDir, this.short(ns)) : this.cgroupDir;
  }

  private cgroupArgv(ns: string, argv: string[]): string[] {
    const cg = this.cgroupFor(ns);
    // The shell joins the cgroup first, then nsenter execs the command: every process it starts
    // is born inside both the test cgroup and the netns.
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg, ...this.nsArgv(ns, argv, true)];
  }

  async runInCgroup(ns: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return execArgv(this.cgroupArgv(ns, argv), opts);
  }

  spawnInCgroup(
    ns: string,
    argv: string[],
    opts: Omit<ExecOptions, "input" | "timeoutMs"> = {},
  ): SpawnHandle {
    return this.track(spawnArgv(this.cgroupArgv(ns, argv), opts.env));
  }

  writeConfig(obj: Record<string, unknown> = {}, opts: { ns?: string } = {}): string {
    let bpfRoot = this.bpfRoot;
    let cgroupRoot = this.cgroupDir;
    let path = this.configPath;
    if (opts.ns !== undefined) {
      const short = this.short(opts.ns);
      bpfRoot = join(this.bpfRoot, short);
      cgroupRoot = join(this.cgroupDir, short);
      path = join(this.tmpDir, `config-${short}.yaml`);
      mkdirSync(cgroupRoot, { recursive: true });
      this.nsConfigs.set(this.ns(opts.ns), path);
    }
    const bpf = isPlainObject(obj.bpf) ? obj.bpf : {};
    const cg = isPlainObject(obj.cgroup) ? obj.cgroup : {};
    // Another root would escape this topology's cleanup (and could touch the host's kpr state).
    if (
      (bpf.root !== undefined && bpf.root !== bpfRoot) ||
      (cg.root !== undefined && cg.root !== cgroupRoot)
    ) {
      throw new Error(
        `writeConfig: bpf.root/cgroup.root are fixed by the topology (${bpfRoot}, ${cgroupRoot})`,
      );
    }
    const cfg = deepMerge({ bpf: { root: bpfRoot }, cgroup: { root: cgroupRoot } }, obj);
    mkdirSync(this.tmpDir, { recursive: true });
    writeFileSync(path, stringify(cfg));
    this.configs.add(path);
    return path;
  }

  private kprArgv(ns: string, args: string[], config?: string): string[] {
    if (!existsSync(KPR_BIN))
      throw new Error(`kpr: ${KPR_BIN} not built (run ./node_modules/.bin/bun build.ts)`);
    this.kprUsed = true;
    const cfg = config ?? this.nsConfigs.get(this.ns(ns)) ?? this.configPath;
    return this.nsArgv(
      ns,
      [KPR_BIN, ...(args.includes("--config") ? args : [...args, "--config", cfg])],
      true,
    );
  }

  async kpr(ns: string, args: string[], opts: ExecOptions & { config?: string } = {}): Promise<ExecResult> {
    return execArgv(this.kprArgv(ns, args, opts.config), { timeoutMs: 60_000, ...opts });
  }

  kprSpawn(
    ns: string,
    args: string[],
    opts: { config?: string; env?: Record<string, string> } = {},
  ): SpawnHandle {
    return this.track(spawnArgv(this.kprArgv(ns, args, opts.config), opts.env));
  }

  /** Creates the netns-independent pieces: cgroup dir, scratch dir, default config. */
  init(): void {
    ensureBpffs();
    mkdirSync(this.cgroupDir);
    this.writeConfig();
  }

  private allCgroups(): string[] {
    if (!existsSync(this.cgroupDir)) return [];
    const out: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
      out.push(d);
    };
    walk(this.cgroupDir);
    return out; // deepest first
  }

  private cgroupPids(): number[] {
    return this.allCgroups().flatMap((d) => pidsIn(join(d, "cgroup.procs")));
  }

  private netnsPids(): number[] {
    return this.namespaces.flatMap((n) => {
      const r = Bun.spawnSync(["ip", "netns", "pids", n], { stderr: "ignore" });
      return r.stdout.toString().split(/\s+/).filter(Boolean).map(Number);
    });
  }

  destroy(): Promise<void> {
    this.destroying ??= this.doDestroy();
    return this.destroying;
  }

  private async doDestroy(): Promise<void> {
    const problems: string[] = [];
    const step = async (what: string, f: () => unknown) => {
      try {
        await f();
      } catch (e) {
        problems.push(`${what}: ${(e as Error).message}`);
      }
    };
    await step("stop processes", () => Promise.all([...this.procs].map((h) => h.kill(1000))));
    if (this.kprUsed && existsSync(KPR_BIN)) {
      for (const cfg of this.configs) {
        const ns = [...this.nsConfigs].find(([, p]) => p === cfg)?.[0] ?? this.namespaces[0];
        if (!ns) continue;
        // Best effort: the rm -rf of the bpffs dir below detaches pinned links anyway.
        await step("kpr cleanup", async () => {
          const argv = ["nsenter", `--net=/run/netns/${ns}`, "--", KPR_BIN, "cleanup", "--config", cfg];
          const r = await execArgv(argv, { timeoutMs: 20_000 });
          if (r.code !== 0)
            console.warn(`destroy ${this.prefix}: ${argv.join(" ")}: exit ${r.code}: ${r.stderr.trim()}`);
        });
      }
    }
    await step("kill leftover processes", async () => {
      await pollUntil(
        "kill processes in the netns and cgroup",
        () => {
          const pids = [...this.netnsPids(), ...this.cgroupPids()];
          killPids(pids);
          return pids.length === 0;
        },
        5000,
      );
    });
    await step(`remove ${this.bpfRoot}`, () => rmSync(this.bpfRoot, { recursive: true, force: true }));
    for (const n of [...this.namespaces].reverse()) {
      await step(`delete netns ${n}`, async () => {
        const r = await execArgv(["ip", "netns", "del", n]);
        if (r.code !== 0 && existsSync(`/run/netns/${n}`)) throw new Error(r.stderr.trim());
      });
    }
    this.namespaces.length = 0;
    await step(`remove cgroup ${this.cgroupDir}`, () =>
      pollUntil(
        `rmdir ${this.cgroupDir}`,
        () => {
          for (const d of this.allCgroups()) {
            try {
              rmdirSync(d);
            } catch {
              // EBUSY until its last process is reaped: retried until the deadline
            }
          }
          return !existsSync(this.cgroupDir);
        },
        5000,
      ),
    );
    await step(`remove ${this.tmpDir}`, () => rmSync(this.tmpDir, { recursive: true, force: true }));
    live.delete(this);
    if (problems.length) throw new Error(`destroy topology ${this.prefix}:\n  ${problems.join("\n  ")}`);
  }

  /** Synchronous best-effort teardown for process exit hooks. */
  destroySync(): void {
    for (const h of this.procs) {
      try {
        h.proc.kill("SIGKILL");
      } catch {}
    }
    killPids([...this.netnsPids(), ...this.cgroupPids()]);
    rmSync(this.bpfRoot, { recursive: true, force: true });
    for (const n of this.namespaces) Bun.spawnSync(["ip", "netns", "del", n], { stderr: "ignore" });
    this.namespaces.length = 0;
    for (const d of this.allCgroups()) {
      try {
        rmdirSync(d);
      } catch {}
    }
    rmSync(this.tmpDir, { recursive: true, force: true });
    live.delete(this);
  }
}

/** Creates an empty topology (no namespaces yet). Needs root. */
export async function createTopology(opts: TopologyOptions = {}): Promise<Topology> {
  const prefix = opts.prefix ?? randomPrefix();
  if (!/^[a-z][a-z0-9]{1,9}$/.test(prefix))
    throw new Error(`createTopology: prefix "${prefix}" must match [a-z][a-z0-9]{1,9}`);
  const t = new TopologyImpl(prefix, cgroup2Mount());
  installExitHooks();
  live.add(t);
  try {
    t.init();
  } catch (e) {
    await t.destroy().catch(() => {});
    throw e;
  }
  return t;
}

/**
 * Registers beforeAll (create + setup) and afterAll (destroy) in the current describe block and
 * returns a getter for the topology. Teardown runs even when setup or a test throws.
 *
 *   const topo = useTopology({ setup: async (t) => { await t.addNs("a"); ... } });
 *   test("...", async () => { await topo().exec("a", ["true"]); });
 */
export function useTopology(
  opts: TopologyOptions & { setup?: (t: Topology) => Promise<void> } = {},
): () => Topology {
  let topo: Topology | undefined;
  beforeAll(async () => {
    topo = await createTopology(opts);
    try {
      await opts.setup?.(topo);
    } catch (e) {
      // afterAll may not run when beforeAll fails: tear down here too (destroy is idempotent).
      await topo.destroy().catch(() => {});
      throw e;
    }
  });
  afterAll(async () => {
    await topo?.destroy();
  });
  return () => {
    if (!topo) throw new Error("useTopology: topology not created (beforeAll failed or not yet run)");
    return topo;
  };
}
