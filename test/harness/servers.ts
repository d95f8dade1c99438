/**
 * Tiny backends and clients for end-to-end tests, run inside a topology's namespaces.
 *
 *   const a = await startHttpEcho(topo, "srv", "backend-a", { port: 8080 });
 *   const r = await httpGet(topo, "cli", "http://10.96.0.10/");   // r.echo?.name === "backend-a"
 */
import { join } from "node:path";
import type { SpawnHandle, Topology } from "./netns.ts";

const BIN = join(import.meta.dir, "bin");

/** Path of the Bun runtime running the tests (used to start the helper scripts). */
export const BUN = process.execPath;

export interface Backend {
  name: string;
  ns: string;
  host: string;
  /** The port actually bound (useful with port 0). */
  port: number;
  handle: SpawnHandle;
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** Default 0 (kernel picks; read Backend.port). */
  port?: number;
  /** Bind address; default 0.0.0.0 ("::" for dual-stack). */
  host?: string;
  timeoutMs?: number;
}

async function startScript(
  topo: Topology,
  ns: string,
  script: string,
  name: string,
  opts: ServerOptions,
): Promise<Backend> {
  const host = opts.host ?? "0.0.0.0";
  const handle = topo.spawn(ns, [BUN, join(BIN, script), name, String(opts.port ?? 0), host]);
  const m = await handle.waitForOutput(/^listening \S+ (\d+)$/m, opts.timeoutMs ?? 10_000);
  return { name, ns, host, port: Number(m[1]), handle, stop: () => handle.kill() };
}

/** Starts an HTTP server answering "<name> <client addr>:<client port>\n"; resolves when it listens. */
export function startHttpEcho(
  topo: Topology,
  ns: string,
  name: string,
  opts: ServerOptions = {},
): Promise<Backend> {
  return startScript(topo, ns, "http-echo.ts", name, opts);
}

/** Starts a UDP server answering "<name> <client addr>:<client port> <payload>"; resolves when bound. */
export function startUdpEcho(
  topo: Topology,
  ns: string,
  name: string,
  opts: ServerOptions = {},
): Promise<Backend> {
  return startScript(topo, ns, "udp-echo.ts", name, opts);
}

/** A parsed echo-server answer. */
export interface Echo {
  /** The backend's name. */
  name: string;
  /** The client address the backend saw (shows SNAT or client-IP preservation). */
  client: string;
  clientPort: number;
  /** What followed (the UDP payload). */
  rest: string;
}

/** Parses "<name> <addr>:<port>[ rest]" (IPv6 addresses contain ':', the port is after the last one). */
export function parseEcho(text: string): Echo | undefined {
  const m = text.replace(/\n$/, "").match(/^(\S+) (\S+):(\d+)(?: ([\s\S]*))?$/);
  if (!m) return undefined;
  return { name: m[1]!, client: m[2]!, clientPort: Number(m[3]), rest: m[4] ?? "" };
}

export interface ClientOptions {
  timeoutMs?: number;
  /** Run the client inside the topology's cgroup too (socket-LB tests). */
  cgroup?: boolean;
}

export interface HttpResult {
  /** curl succeeded and the status is 2xx. */
  ok: boolean;
  /** curl's exit code (7 refused, 28 timeout, 56 reset, ...). */
  curlCode: number;
  /** HTTP status, 0 when there was no response. */
  status: number;
  body: string;
  echo?: Echo;
  stderr: string;
}

/** GET url with curl from inside ns. Never throws on network failures: inspect the result. */
export async function httpGet(
  topo: Topology,
  ns: string,
  url: string,
  opts: ClientOptions & { curlArgs?: string[] } = {},
): Promise<HttpResult> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  // -g: URLs like http://[fd00::1]:80/ must not be globbed.
  const argv = [
    "curl",
    "-sS",
    "-g",
    "-m",
    String(timeoutMs / 1000),
    "-w",
    "\n%{http_code}",
    ...(opts.curlArgs ?? []),
    url,
  ];
  const run = opts.cgroup ? topo.runInCgroup.bind(topo) : topo.exec.bind(topo);
  const r = await run(ns, argv, { timeoutMs: timeoutMs + 5000, nsenter: true });
  const cut = r.stdout.lastIndexOf("\n");
  const status = Number(r.stdout.slice(cut + 1)) || 0;
  const body = cut >= 0 ? r.stdout.slice(0, cut) : "";
  return {
    ok: r.code === 0 && status >= 200 && status < 300,
    curlCode: r.code,
    status,
    body,
    echo: parseEcho(body),
    stderr: r.stderr,
  };
}

export interface UdpResult {
  /** A reply arrived. */
  ok: boolean;
  reply: string;
  echo?: Echo;
  stderr: string;
}

/** Sends one UDP datagram from ns and waits for one reply (connected socket unless sendto). */
export async function udpRequest(
  topo: Topology,
  ns: string,
  addr: string,
  port: number,
  payload: string,
  opts: ClientOptions & { sendto?: boolean; sport?: number } = {},
): Promise<UdpResult> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  const argv = [BUN, join(BIN, "udp-client.ts"), addr, String(port), payload, "--timeout", String(timeoutMs)];
  if (opts.sendto) argv.push("--sendto");
  if (opts.sport) argv.push("--sport", String(opts.sport));
  const run = opts.cgroup ? topo.runInCgroup.bind(topo) : topo.exec.bind(topo);
  const r = await run(ns, argv, { timeoutMs: timeoutMs + 10_000, nsenter: true });
  return {
    ok: r.code === 0,
    reply: r.stdout,
    echo: r.code === 0 ? parseEcho(r.stdout) : undefined,
    stderr: r.stderr,
  };
}
