/**
 * Helpers for end-to-end tests of the node agent (`kpr run`) on the namespace cluster of
 * _cluster.ts: start the daemon inside a node's netns (nsenter, so bpffs and the cgroup tree stay
 * visible) with its logs in a file of the topology's scratch dir, a NOTIFY_SOCKET the test binds
 * (a python3 datagram listener), readiness, SIGTERM / kill -9, and read-backs of what the
 * datapath holds (`kpr service list`, raw map dumps, pinned links) to compare before and after.
 *
 *   const agent = startAgent(topo(), NS.node1, ["--manifest", dir]);
 *   await agent.waitReady();
 *   await pollFrontends(topo(), "web appears", (f) => f.has("10.96.0.80:80/TCP"));
 *   expect(await agent.stop(), `SIGTERM exit code\n${agent.tail()}`).toBe(0);
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { KPR_BIN, pollUntil, REPO_ROOT, type SpawnHandle, type Topology } from "../harness/netns.ts";
import { httpGet } from "../harness/servers.ts";

/** KPR_RUN_DIR of every agent (and every `kpr status`) of a topology: its agent-state files. */
export function runDir(topo: Topology): string {
  return join(topo.tmpDir, "run");
}

/** Environment for `kpr` commands that read the agent's runtime record (`kpr status`). */
export function agentEnv(topo: Topology): Record<string, string> {
  return { KPR_RUN_DIR: runDir(topo), KPR_LOG_FORMAT: "text" };
}

const NOTIFY_LISTENER = `
import json, os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
print("listening " + path, flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps(data.decode("utf-8", "replace")), flush=True)
`;

/**
 * The system's python3 (what scripts/bootstrap.sh installs); a python3 found first on PATH may be
 * a version manager's shim that takes seconds to start on a busy machine.
 */
const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

/** A NOTIFY_SOCKET bound by the test: every datagram the daemon sends, in arrival order. */
export interface NotifyListener {
  readonly path: string;
  /** The datagrams received so far (each may hold several `KEY=value` lines). */
  datagrams(): string[];
  /** Every `KEY=value` assignment received so far, in order. */
  assignments(): { key: string; value: string }[];
  /** Resolves with the first assignment `key` (whose value matches `value`, when given). */
  waitFor(key: string, value?: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

/** Binds a unix datagram socket at `path` (from inside ns; the path is a host path) and records what arrives. */
export async function startNotifyListener(topo: Topology, ns: string, path: string): Promise<NotifyListener> {
  const h = topo.spawn(ns, [PYTHON, "-u", "-c", NOTIFY_LISTENER, path], { nsenter: true });
  await h.waitForOutput(/^listening /m, 10_000);
  const datagrams = () =>
    h
      .output()
      .split("\n")
      .filter((l) => l.startsWith('"'))
      .map((l) => JSON.parse(l) as string);
  const assignments = () =>
    datagrams().flatMap((d) =>
      d
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => ({ key: l.slice(0, l.indexOf("=")), value: l.slice(l.indexOf("=") + 1) })),
    );
  return {
    path,
    datagrams,
    assignments,
    async waitFor(key, value, timeoutMs = 15_000) {
      let found: string | undefined;
      await pollUntil(
        `NOTIFY_SOCKET ${path}: ${key}=${value ?? "*"} (got ${JSON.stringify(datagrams())})`,
        () => {
          found = assignments().find((a) => a.key === key && (!value || value.test(a.value)))?.value;
          return found !== undefined;
        },
        timeoutMs,
      );
      return found!;
    },
    stop: () => h.kill(),
  };
}

export interface AgentOptions {
  /** The binary to run (default dist/kpr); a copy or another build for upgrade tests. */
  bin?: string;
  /** Config file (default: the topology's config). */
  config?: string;
  env?: Record<string, string>;
  /** Bind a NOTIFY_SOCKET for this agent (default true); waitReady() then waits for READY=1. */
  notify?: boolean;
  /** Label of this agent in file names and messages (default agent-<n>). */
  name?: string;
}

/** A running `kpr run`. */
export interface Agent {
  readonly name: string;
  readonly pid: number;
  readonly handle: SpawnHandle;
  /** The file holding the daemon's stdout and stderr. */
  readonly logPath: string;
  readonly notify: NotifyListener | undefined;
  /** Everything the daemon logged so far. */
  log(): string;
  /** The last lines of the log, for failure messages. */
  tail(lines?: number): string;
  /**
   * Resolves with the first match of re in the log (from character offset `from`, e.g. an earlier
   * `log().length`); rejects on timeout or exit, with the log's tail.
   */
  waitLog(re: RegExp, timeoutMs?: number, from?: number): Promise<RegExpMatchArray>;
  /** Waits for READY=1 on the notify socket (or, without one, for a first sync in `kpr status`). */
  waitReady(timeoutMs?: number): Promise<void>;
  /** True while the process runs. */
  running(): boolean;
  /** SIGTERM; resolves with the exit code (SIGKILL and a rejection after graceMs). */
  stop(graceMs?: number): Promise<number>;
  /** kill -9; resolves when it is gone. */
  kill9(): Promise<void>;
}

let agentSeq = 0;

/**
 * Starts `BIN run ARGS --config CFG` in ns, stdout+stderr appended to `${tmpDir}/NAME.log`,
 * KPR_RUN_DIR = runDir(topo), text logs. Killed by the topology's destroy() if still running.
 */
export async function startAgent(
  topo: Topology,
  ns: string,
  args: string[],
  opts: AgentOptions = {},
): Promise<Agent> {
  const name = opts.name ?? `agent-${++agentSeq}`;
  const bin = opts.bin ?? KPR_BIN;
  if (!existsSync(bin))
    throw new Error(`startAgent: ${bin} not built (run ./node_modules/.bin/bun build.ts)`);
  const logPath = join(topo.tmpDir, `${name}.log`);
  const notify =
    opts.notify === false
      ? undefined
      : await startNotifyListener(topo, ns, join(topo.tmpDir, `${name}.sock`));
  const env: Record<string, string> = { ...agentEnv(topo), ...opts.env };
  if (notify) env.NOTIFY_SOCKET = notify.path;
  const argv = [bin, "run", ...args, "--config", opts.config ?? topo.configPath];
  // sh appends the output to the log file, then execs nsenter's command: the pid stays kpr's.
  const handle = topo.spawn(ns, ["sh", "-c", 'exec "$@" >>"$0" 2>&1', logPath, ...argv], {
    nsenter: true,
    env,
  });
  const log = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };
  const tail = (lines = 40) => {
    const all = log().trimEnd().split("\n");
    return `--- ${name} (${argv.join(" ")}), last ${Math.min(lines, all.length)} log lines:\n${all.slice(-lines).join("\n")}`;
  };
  let exitCode: number | undefined;
  handle.exited.then((c) => {
    exitCode = c;
  });
  const running = () => exitCode === undefined;
  const agent: Agent = {
    name,
    pid: handle.pid,
    handle,
    logPath,
    notify,
    log,
    tail,
    running,
    async waitLog(re, timeoutMs = 10_000, from = 0) {
      let m: RegExpMatchArray | null = null;
      await pollUntil(
        `${name}: log line ${re}`,
        () => {
          m = log().slice(from).match(re);
          if (!m && !running())
            throw new Error(`${name}: exited ${exitCode} before logging ${re}\n${tail()}`);
          return m !== null;
        },
        timeoutMs,
      ).catch((e: Error) => {
        throw new Error(`${e.message}\n${tail()}`);
      });
      return m!;
    },
    async waitReady(timeoutMs = 20_000) {
      const failIfExited = () => {
        if (!running()) throw new Error(`${name}: exited ${exitCode} before it was ready\n${tail()}`);
      };
      try {
        if (notify) {
          await pollUntil(
            `${name}: READY=1 on ${notify.path}`,
            () => {
              failIfExited();
              return notify.assignments().some((a) => a.key === "READY" && a.value === "1");
            },
            timeoutMs,
          );
        } else {
          await pollUntil(
            `${name}: a first sync in kpr status`,
            async () => {
              failIfExited();
              return (await agentStatus(topo, ns, opts.config))?.lastSync?.ok === true;
            },
            timeoutMs,
          );
        }
      } catch (e) {
        const msg = (e as Error).message;
        throw new Error(msg.includes("--- ") ? msg : `${msg}\n${tail()}`);
      }
    },
    async stop(graceMs = 10_000) {
      if (!running()) return exitCode!;
      handle.proc.kill("SIGTERM");
      const t = setTimeout(() => handle.proc.kill("SIGKILL"), graceMs);
      const code = await handle.exited;
      clearTimeout(t);
      if (code === 128 + 9)
        throw new Error(`${name}: still running ${graceMs} ms after SIGTERM (killed)\n${tail()}`);
      await notify?.stop();
      return code;
    },
    async kill9() {
      handle.proc.kill("SIGKILL");
      await handle.exited;
      await notify?.stop();
    },
  };
  return agent;
}

/** The agent part of `kpr status -o json` (whatever shape CORE gives it), or undefined. */
export interface AgentStatusView {
  running?: boolean;
  pid?: number;
  source?: string;
  lastSync?: { at?: string; ok?: boolean; error?: string; durationMs?: number };
  /** the source's current problem (a rejected manifest, an unreachable API) */
  sourceError?: string;
}

/** `kpr status -o json` of ns, with the topology's agent run dir; its agent section, if any. */
export async function agentStatus(
  topo: Topology,
  ns: string,
  config?: string,
): Promise<AgentStatusView | undefined> {
  const r = await topo.kpr(ns, ["status", "-o", "json"], { env: agentEnv(topo), config });
  if (r.code !== 0) throw new Error(`kpr status -o json: exit ${r.code}: ${r.stderr.trim()}`);
  const j = JSON.parse(r.stdout) as { agent?: AgentStatusView; daemon?: AgentStatusView };
  return j.agent ?? j.daemon;
}

/** One entry of `kpr service list -o json`. */
export interface ServiceEntry {
  id: number;
  frontend: { address: string; port: number; protocol: string };
  type: string;
  service: string;
  backends: { address: string; port: number; protocol: string; state: string }[];
}

/** `kpr service list -o json` of ns. */
export async function serviceList(topo: Topology, ns: string, config?: string): Promise<ServiceEntry[]> {
  const r = await topo.kpr(ns, ["service", "list", "-o", "json"], { config });
  if (r.code !== 0) throw new Error(`kpr service list -o json: exit ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as ServiceEntry[];
}

/** Frontends as "addr:port/PROTO" → sorted "ip:port" of their backends. */
export type Frontends = Map<string, string[]>;

/** service list entries → Frontends. */
export function frontends(entries: ServiceEntry[]): Frontends {
  return new Map(
    entries.map((e) => [
      `${e.frontend.address}:${e.frontend.port}/${e.frontend.protocol}`,
      e.backends.map((b) => `${b.address}:${b.port}`).sort(),
    ]),
  );
}

/** Printable Frontends for messages. */
export function showFrontends(f: Frontends): string {
  return [...f].map(([k, v]) => `${k} => ${v.join(",") || "(none)"}`).join("; ") || "(no frontends)";
}

/** Polls `kpr service list` until cond(frontends) holds; returns them. Times out naming what and the last state. */
export async function pollFrontends(
  topo: Topology,
  ns: string,
  what: string,
  cond: (f: Frontends) => boolean,
  timeoutMs = 10_000,
): Promise<Frontends> {
  let last: Frontends = new Map();
  try {
    await pollUntil(
      what,
      async () => {
        last = frontends(await serviceList(topo, ns));
        return cond(last);
      },
      timeoutMs,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}; last service list: ${showFrontends(last)}`);
  }
  return last;
}

/** One HTTP GET: the name of the echo server that answered, or "error(<curl exit>/<status>)". */
export async function answer(
  topo: Topology,
  ns: string,
  url: string,
  opts: { cgroup?: boolean; timeoutMs?: number } = {},
): Promise<string> {
  const r = await httpGet(topo, ns, url, { cgroup: opts.cgroup, timeoutMs: opts.timeoutMs ?? 2000 });
  return r.echo?.name ?? `error(${r.curlCode}/${r.status})`;
}

/** `n` GETs; how often each backend (or error) answered. */
export async function answers(
  topo: Topology,
  ns: string,
  url: string,
  n: number,
  opts: { cgroup?: boolean; timeoutMs?: number } = {},
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const a = await answer(topo, ns, url, opts);
    out[a] = (out[a] ?? 0) + 1;
  }
  return out;
}

/**
 * Polls until GETs to url are answered, each by one of `want`, and every one of `want` answered
 * (within 40 tries per round); returns the elapsed ms. `want` empty: until requests fail.
 */
export async function pollTraffic(
  topo: Topology,
  ns: string,
  url: string,
  want: readonly string[],
  opts: { cgroup?: boolean; timeoutMs?: number; what?: string } = {},
): Promise<number> {
  const t0 = performance.now();
  let last: Record<string, number> = {};
  const what =
    opts.what ?? `GET ${url} from ${ns}${opts.cgroup ? " (cgroup)" : ""} answered by [${want.join(", ")}]`;
  try {
    await pollUntil(
      what,
      async () => {
        last = {};
        if (want.length === 0) {
          const a = await answer(topo, ns, url, { cgroup: opts.cgroup, timeoutMs: 1000 });
          last[a] = 1;
          return a.startsWith("error");
        }
        for (let i = 0; i < 40; i++) {
          const a = await answer(topo, ns, url, { cgroup: opts.cgroup, timeoutMs: 1000 });
          last[a] = (last[a] ?? 0) + 1;
          if (!want.includes(a)) return false;
          if (want.every((w) => last[w])) return true;
        }
        return false;
      },
      opts.timeoutMs ?? 10_000,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}; last round: ${JSON.stringify(last)}`);
  }
  return performance.now() - t0;
}

/** Maps that hold programmed state (not traffic state such as conntrack, NAT, affinity or counters). */
export const PROGRAMMED_MAPS = [
  "kpr_lb4_svc",
  "kpr_lb4_be",
  "kpr_svc_meta",
  "kpr_lb4_rnat",
  "kpr_lb4_srcr",
  "kpr_config",
  "kpr_dev4",
] as const;

/** What the datapath holds: raw dumps of the programmed maps and the program behind each pinned link. */
export interface DatapathSnapshot {
  maps: Record<string, string>;
  links: Record<string, { link: number; prog: number }>;
}

function bpftool(args: string[]): string {
  const r = Bun.spawnSync(["bpftool", "-j", ...args], { stderr: "pipe" });
  // with -j, bpftool reports its errors as JSON on stdout
  if (r.exitCode !== 0)
    throw new Error(`bpftool ${args.join(" ")}: ${(r.stderr.toString() + r.stdout.toString()).trim()}`);
  return r.stdout.toString();
}

/** Snapshot of the topology's pinned state (bpftool in the host namespace: pins are host paths). */
export function datapathSnapshot(topo: Topology): DatapathSnapshot {
  const maps: Record<string, string> = {};
  for (const m of PROGRAMMED_MAPS) {
    const p = join(topo.bpfRoot, "maps", m);
    if (existsSync(p)) maps[m] = bpftool(["map", "dump", "pinned", p]);
  }
  const links: DatapathSnapshot["links"] = {};
  const dir = join(topo.bpfRoot, "links");
  for (const l of existsSync(dir) ? readdirSync(dir).sort() : []) {
    let info: { id: number; prog_id: number };
    try {
      info = JSON.parse(bpftool(["link", "show", "pinned", join(dir, l)]));
    } catch (e) {
      if (!existsSync(join(dir, l))) continue; // unpinned while we looked
      throw e;
    }
    links[l] = { link: info.id, prog: info.prog_id };
  }
  return { maps, links };
}

/** Long-lived keep-alive HTTP connections (test/e2e/bin/hold.ts), one answer every 50 ms. */
export interface HeldConnection {
  readonly what: string;
  readonly handle: SpawnHandle;
  /** Answers so far. */
  count(): number;
  /** "error ..." lines (the connection broke). */
  errors(): string[];
  /** Backend names that answered on it. */
  backends(): string[];
  /** The client address:port the backend saw, per answer (one value = one connection). */
  clientEnds(): string[];
  /** Waits for n more answers than now. */
  more(n: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Opens a held connection (hold.ts) from ns to addr:port (in the node's cgroup when cgroup); waits for its first answer. */
export async function holdConnection(
  topo: Topology,
  ns: string,
  addr: string,
  port: number,
  opts: { cgroup?: boolean } = {},
): Promise<HeldConnection> {
  const { BUN } = await import("../harness/servers.ts");
  const argv = [BUN, join(import.meta.dir, "bin", "hold.ts"), addr, String(port)];
  const handle = opts.cgroup ? topo.spawnInCgroup(ns, argv) : topo.spawn(ns, argv, { nsenter: true });
  const what = `held connection ${ns}${opts.cgroup ? " (cgroup)" : ""} → ${addr}:${port}`;
  await handle.waitForOutput(/^#1 /m, 10_000);
  const lines = () => handle.output().split("\n");
  const answersOf = () =>
    lines()
      .filter((l) => l.startsWith("#"))
      .map((l) => l.split(" "));
  const conn: HeldConnection = {
    what,
    handle,
    count: () => answersOf().length,
    errors: () => lines().filter((l) => l.startsWith("error")),
    backends: () => [...new Set(answersOf().map((a) => a[1]!))],
    clientEnds: () => [...new Set(answersOf().map((a) => a[2]!))],
    async more(n, timeoutMs = 10_000) {
      const target = conn.count() + n;
      await pollUntil(
        `${what}: ${n} more answers (errors: ${conn.errors().join("; ") || "none"})`,
        () => {
          if (conn.errors().length) throw new Error(`${what} broke: ${conn.errors().join("; ")}`);
          return conn.count() >= target;
        },
        timeoutMs,
      );
    },
    stop: () => handle.kill(),
  };
  return conn;
}

/** A second build of kpr, for upgrade tests. */
export interface VariantBuild {
  bin: string;
  version: string;
  /** sha256 of the embedded tc object: differs from the one dist/kpr carries. */
  tcObjectSha256: string;
}

function runOk(argv: string[], cwd?: string): void {
  const r = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0)
    throw new Error(
      `${argv.join(" ")}: exit ${r.exitCode}: ${r.stderr.toString().trim() || r.stdout.toString()}`,
    );
}

/**
 * Builds a genuinely different kpr into outDir, as a rebuilt release would be: the same sources
 * with another version string, and eBPF objects compiled with a changed tunable (the TTL of the
 * RSTs tc sends, `-DKPR_RST_TTL=63`), so the embedded tc program differs from dist/kpr's.
 */
export async function buildVariant(outDir: string): Promise<VariantBuild> {
  const { bpfClangArgs } = await import("../../scripts/bpf-cflags.ts");
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
  const version = `${pkg.version}-upgrade.1`;
  mkdirSync(join(outDir, ".build", "bpf"), { recursive: true });
  runOk(["cp", "-r", join(REPO_ROOT, "src"), join(outDir, "src")]);
  symlinkSync(join(REPO_ROOT, "node_modules"), join(outDir, "node_modules"));
  writeFileSync(join(outDir, "package.json"), JSON.stringify({ ...pkg, version }, null, 2));
  // every object build.ts embeds: one per bpf/*.bpf.c
  const objects = readdirSync(join(REPO_ROOT, "bpf"))
    .filter((f) => f.endsWith(".bpf.c"))
    .map((f) => f.slice(0, -".bpf.c".length));
  for (const obj of objects) {
    const argv = bpfClangArgs(
      join(REPO_ROOT, "bpf", `${obj}.bpf.c`),
      join(outDir, ".build", "bpf", `${obj}.bpf.o`),
      [join(REPO_ROOT, "bpf", "lib")],
    );
    runOk([argv[0]!, "-DKPR_RST_TTL=63", ...argv.slice(1)]);
  }
  const bin = join(outDir, "kpr-next");
  runOk([
    process.execPath,
    "build",
    "--compile",
    "--minify-syntax",
    "--sourcemap=inline",
    join(outDir, "src", "main.ts"),
    "--outfile",
    bin,
  ]);
  const sha = (p: string) => new Bun.CryptoHasher("sha256").update(readFileSync(p)).digest("hex");
  const tcObjectSha256 = sha(join(outDir, ".build", "bpf", "tc.bpf.o"));
  if (tcObjectSha256 === sha(join(REPO_ROOT, ".build", "bpf", "tc.bpf.o")))
    throw new Error("buildVariant: the variant's tc object is identical to dist/kpr's");
  return { bin, version, tcObjectSha256 };
}

/** Entry counts of the programmed maps (bpftool dumps), to look for orphans. */
export function mapCounts(topo: Topology): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of PROGRAMMED_MAPS) {
    const p = join(topo.bpfRoot, "maps", m);
    out[m] = existsSync(p) ? (JSON.parse(bpftool(["map", "dump", "pinned", p])) as unknown[]).length : 0;
  }
  return out;
}

/** Why agent tests cannot run in this tree (the daemon is not there yet), printed; undefined once it is. */
export function agentMissing(label: string): string | undefined {
  if (existsSync(join(REPO_ROOT, "src", "commands", "run.ts"))) return undefined;
  const why = "kpr run is not in this tree yet (src/commands/run.ts)";
  console.warn(`skip ${label}: ${why}`);
  return why;
}

/** A relay that makes a loopback TCP server of the test process reachable on the same port inside a netns. */
export interface LoopbackRelay {
  readonly port: number;
  /** Connections relayed so far. */
  readonly connections: number;
  stop(): Promise<void>;
}

/**
 * Makes 127.0.0.1:port of the test process (e.g. startApiServer()'s) reachable as 127.0.0.1:port
 * inside ns, so a kubeconfig naming https://127.0.0.1:PORT works unchanged for a daemon running
 * there: socat listens on the namespace's loopback and connects to a unix socket in the topology's
 * scratch dir, which this process accepts and pipes to its own loopback (a unix socket crosses
 * network namespaces; TLS passes through untouched). When the server is down, relayed connections
 * are reset.
 */
export async function relayLoopback(topo: Topology, ns: string, port: number): Promise<LoopbackRelay> {
  const { createConnection, createServer } = await import("node:net");
  const path = join(topo.tmpDir, `relay-${port}.sock`);
  let connections = 0;
  const open = new Set<import("node:net").Socket>();
  const server = createServer((inbound) => {
    connections++;
    const outbound = createConnection({ host: "127.0.0.1", port });
    open.add(inbound);
    open.add(outbound);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const close = () => {
      inbound.destroy();
      outbound.destroy();
      open.delete(inbound);
      open.delete(outbound);
    };
    inbound.on("error", close);
    outbound.on("error", close);
    inbound.on("close", close);
    outbound.on("close", close);
  });
  await new Promise<void>((res, rej) => {
    server.once("error", rej);
    server.listen(path, () => res());
  });
  const socat = topo.spawn(
    ns,
    ["socat", `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `UNIX-CONNECT:${path}`],
    { nsenter: true },
  );
  await pollUntil(`relay: socat listening on 127.0.0.1:${port} in ${ns}`, async () => {
    if (socat.proc.exitCode !== null) throw new Error(`relay: socat exited: ${socat.output()}`);
    const r = await topo.exec(ns, ["ss", "-Hltn", `sport = :${port}`]);
    return r.stdout.includes(`:${port}`);
  });
  return {
    port,
    get connections() {
      return connections;
    },
    async stop() {
      await socat.kill();
      for (const s of open) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
      rmSync(path, { force: true });
    },
  };
}

/**
 * Attaches strace to pid and has it SIGKILL the process when it enters its `nth` `syscall` call
 * after the attach (strace's fault injection): a kill at a chosen point, e.g. in the middle of a
 * sync's map writes. Resolves once strace is attached; kill() the handle afterwards.
 */
export async function killAtSyscall(
  topo: Topology,
  ns: string,
  pid: number,
  syscall: string,
  nth: number,
): Promise<SpawnHandle> {
  const h = topo.spawn(
    ns,
    [
      "strace",
      "-f",
      "-qq",
      "-p",
      String(pid),
      "-e",
      `trace=${syscall}`,
      "-e",
      `inject=${syscall}:signal=SIGKILL:when=${nth}`,
      "-o",
      "/dev/null",
    ],
    { nsenter: true },
  );
  await pollUntil(`strace attached to ${pid}`, () => {
    if (h.proc.exitCode !== null) throw new Error(`strace -p ${pid} exited: ${h.output()}`);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return !/^TracerPid:\s+0$/m.test(status);
  });
  return h;
}
