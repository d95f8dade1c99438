/**
 * `kpr explain --local`: one connect() from a process on this node through the real socket-LB
 * program (cgroup/connect4) against the real load-balancing maps, without changing kpr's state
 * and without sending a packet.
 *
 * The kernel has no test run for cgroup sock_addr programs, so the connect is real, made by this
 * process under controlled conditions:
 * - a second instance of the embedded sock object reuses every pinned map the program only reads;
 *   the maps it writes (affinity, socket reverse-NAT, counters) and its config are private scratch
 *   maps (the config copied, its host-namespace cookie pointed at the namespace below as asked);
 * - its connect4 program is attached to a scratch cgroup outside cgroup.root where possible, and
 *   this process moves into that cgroup for the one socket() call, then back;
 * - the socket is made in a fresh, empty network namespace (this thread only, unshare(2)), so after
 *   the program rewrote the destination the kernel finds no route and fails the connect with
 *   ENETUNREACH: no SYN, no datagram, no neighbour lookup on the node;
 * - what the program decided is read back from the scratch maps: the reverse-NAT entry it wrote
 *   (frontend and backend), the backend counter it bumped, the reason it counted, the affinity it
 *   recorded; the connect's errno says whether it refused the call (EPERM).
 * With cgroup.root at the root of the cgroup2 hierarchy (the default), kpr's real connect4 program
 * also runs on that socket after the scratch one (cgroup programs of every ancestor run): it sees
 * the rewritten backend address (or, when the scratch program refused, the frontend, which it
 * refuses the same way) and only counts one verdict in kpr_reasons. That counter is the one
 * change explain --local can make; it is reported.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Config } from "../config/config.ts";
import { KprError } from "../errors.ts";
import { BpfLink, type BpfObject } from "./bpf.ts";
import { cgroup2Mounts } from "./bpffs.ts";
import {
  backendView,
  countedReason,
  type Endpoint,
  type ExplainResult,
  frontendView,
  openPinned,
  openScratch,
} from "./explain.ts";
import { errnoName, localConnect } from "./ffi.ts";
import { CFG_F, kprConfig, lb4Key, lb4Service, PROTO_NUM, SVC_F, sk4RnatKey, u32Id } from "./lbmaps.ts";
import { paths } from "./loader.ts";

const CONNECT_PROG = "kpr_sock4_connect";
/** BPF_CGROUP_INET4_CONNECT */
const ATTACH_INET4_CONNECT = 10;

/** What to explain: a connect() from a process on this node. */
export interface ConnectInput {
  /** the socket's bound source (default: unbound, the route picks it) */
  src?: Endpoint;
  dst: Endpoint;
  proto: "tcp" | "udp";
  /** the process's network namespace: the node's own, or a pod's */
  from: "node" | "pod";
}

/** The cgroup2 directory this process is in, under the first cgroup2 mount. */
function ownCgroup(mount: string): string {
  const line = readFileSync("/proc/self/cgroup", "utf8")
    .split("\n")
    .find((l) => l.startsWith("0::"));
  if (!line)
    throw new KprError("explain --local: this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)");
  const dir = join(mount, line.slice(3));
  if (!existsSync(join(dir, "cgroup.procs")))
    throw new KprError(`explain --local: cannot find this process's cgroup at ${dir}`);
  return dir;
}

/** Runs `fn` with this process in cgroup `dir`, then moves it back to `home` (also on failure). */
function inCgroup<T>(dir: string, home: string, fn: () => T): T {
  writeFileSync(join(dir, "cgroup.procs"), String(process.pid));
  try {
    return fn();
  } finally {
    writeFileSync(join(home, "cgroup.procs"), String(process.pid));
  }
}

/** Explains a connect() from a process on this node; see the module comment. */
export async function explainConnect(cfg: Config, input: ConnectInput): Promise<ExplainResult> {
  if (!existsSync(`${paths.maps(cfg)}/kpr_lb4_svc`))
    throw new KprError(`explain: nothing is programmed under ${paths.maps(cfg)} (run kpr apply first)`);
  const mount = cgroup2Mounts()[0];
  if (!mount) throw new KprError("explain --local: no cgroup2 filesystem is mounted");
  const home = ownCgroup(mount);
  const proto = input.proto === "tcp" ? PROTO_NUM.TCP : PROTO_NUM.UDP;
  using obj = await openScratch(cfg, "sock", [CONNECT_PROG], ["kpr_config"]);
  using realCfg = openPinned(cfg, "kpr_config");
  const cv = realCfg?.lookup(u32Id.encode({ v: 0 }));
  if (!cv) throw new KprError(`explain: kpr_config is empty under ${paths.maps(cfg)} (run kpr apply first)`);
  const config = kprConfig.decode(cv);
  const scratchCfg = obj.map("kpr_config");

  // scratch cgroups of explains that were killed (their process is gone; rmdir fails if not empty)
  for (const d of readdirSync(mount))
    if (/^kpr-explain-\d+$/.test(d) && !existsSync(`/proc/${d.slice(12)}`))
      try {
        rmdirSync(join(mount, d));
      } catch {}
  const cg = join(mount, `kpr-explain-${process.pid}`);
  mkdirSync(cg);
  let conn: ReturnType<typeof localConnect>;
  const seeded = new Map<number, number>();
  try {
    const fd = openSync(cg, "r");
    try {
      using _link = BpfLink.create(
        obj.program(CONNECT_PROG),
        fd,
        ATTACH_INET4_CONNECT,
        `cgroup connect4 to ${cg}`,
      );
      conn = inCgroup(cg, home, () =>
        localConnect(input.proto, input.dst, input.src, (netnsCookie) => {
          // the fresh namespace is the node's (host_netns_cookie) or a pod's (any other)
          const hostCookie = input.from === "node" ? netnsCookie : config.host_netns_cookie;
          scratchCfg.update(
            u32Id.encode({ v: 0 }),
            kprConfig.encode({ ...config, host_netns_cookie: hostCookie }),
          );
          seedAffinity(
            cfg,
            obj,
            input.from === "node" ? config.host_netns_cookie : undefined,
            netnsCookie,
            seeded,
          );
        }),
      );
    } finally {
      closeSync(fd);
    }
  } finally {
    try {
      rmdirSync(cg);
    } catch {}
  }
  return describe(cfg, obj, input, proto, conn, seeded, realHooksAbove(cfg, config));
}

/**
 * Copies the node namespace's socket-LB affinity entries into `seeded` (frontend id → backend id)
 * and the scratch map, re-keyed to the scratch namespace's cookie.
 */
function seedAffinity(
  cfg: Config,
  obj: BpfObject,
  hostCookie: bigint | undefined,
  scratch: bigint,
  seeded: Map<number, number>,
): void {
  if (hostCookie === undefined || hostCookie === 0n) return;
  using real = openPinned(cfg, "kpr_lb4_aff");
  if (!real) return;
  const to = obj.map("kpr_lb4_aff");
  for (const [k, v] of real.entries()) {
    const dv = new DataView(k.buffer, k.byteOffset, k.byteLength);
    if (k[10] !== 1 || dv.getBigUint64(0, true) !== hostCookie) continue;
    const nk = new Uint8Array(k);
    new DataView(nk.buffer).setBigUint64(0, scratch, true);
    to.update(nk, v);
    seeded.set(dv.getUint16(8, true), u32Id.decode(v.subarray(0, 4)).v);
  }
}

function describe(
  cfg: Config,
  obj: BpfObject,
  input: ConnectInput,
  proto: number,
  conn: { errno: number; netnsCookie: bigint },
  seeded: Map<number, number>,
  realHooks: boolean,
): ExplainResult {
  const reason = countedReason(obj);
  const refused = conn.errno === 1; // EPERM: the program failed the call
  const why: string[] = [];
  const dst = `${input.dst.address}:${input.dst.port}`;
  const result: ExplainResult = {
    packet: {
      src: input.src ? `${input.src.address}:${input.src.port}` : "(unbound)",
      dst,
      proto: input.proto,
      ifindex: 0,
    },
    context: { kind: "socket", from: input.from, syscall: "connect" },
    verdict: refused ? "refused (EPERM)" : reason === "sock-lb" ? "translated" : "unchanged",
    retval: refused ? 0 : 1,
    reason,
    why,
    ctHit: false,
    affinity: false,
    sideEffects: realHooks
      ? [
          `kpr's own connect4 program (on cgroup.root ${cfg.cgroup.root}, an ancestor of every cgroup) also ran on the socket: it counted one verdict in kpr_reasons`,
        ]
      : [],
  };
  if (conn.errno !== 1 && conn.errno !== 101 /* ENETUNREACH */)
    why.push(`the connect ended with ${errnoName(conn.errno)} (expected ENETUNREACH in the empty namespace)`);

  if (reason === "sock-disabled")
    why.push("socket LB is disabled (socketLB.enabled: false): the stack decides");
  if (reason === "sock-skip-netns")
    why.push(
      "socketLB.hostNamespaceOnly: a process in a pod's namespace is not translated here (tc decides)",
    );

  using svcMap = openPinned(cfg, "kpr_lb4_svc");
  const raw = svcMap?.lookup(
    lb4Key.encode({ address: input.dst.address, dport: input.dst.port, slot: 0, proto, scope: 0 }),
  );
  const fe = raw ? lb4Service.decode(raw) : undefined;
  if (fe) {
    result.frontend = frontendView(cfg, fe, input.dst.address, input.dst.port, false);
    if (reason !== "sock-disabled" && reason !== "sock-skip-netns")
      why.push(
        `frontend ${dst} matched: ${result.frontend.types.join(", ")}${result.frontend.name ? ` ${result.frontend.name}` : ""}, traffic policy ${result.frontend.trafficPolicy}`,
      );
    if (fe.flags & SVC_F.TWO_SCOPES && reason === "sock-lb")
      why.push(
        "traffic from this node uses the frontend's cluster-wide endpoints (kube-proxy's short-circuit for eTP=Local)",
      );
  } else if (reason === "pass") {
    why.push(`no frontend ${dst}/${input.proto.toUpperCase()}: not kpr's, the connect goes out as it is`);
  }

  // what the program wrote: the socket's reverse-NAT entry names the backend it chose
  const rnat = obj.map("kpr_sk4_rnat");
  let backendAddr: { address: string; port: number } | undefined;
  for (const [k] of rnat.entries()) {
    const rk = sk4RnatKey.decode(k);
    backendAddr = { address: rk.address, port: rk.port };
  }
  let backendId: number | undefined;
  for (const [k] of obj.map("kpr_be_stats").entries()) backendId = u32Id.decode(k).v;

  if (reason === "sock-lb") {
    const aff = fe ? seeded.get(fe.rev_nat_id) : undefined;
    if (fe && fe.flags & SVC_F.AFFINITY) {
      if (aff !== undefined && aff === backendId) {
        result.affinity = true;
        why.push(`ClientIP affinity: this node's namespace is bound to backend ${aff}`);
      } else
        why.push(
          aff !== undefined
            ? `ClientIP affinity entry (backend ${aff}) expired or its backend left: new choice, affinity recorded`
            : input.from === "node"
              ? "ClientIP affinity: no entry for this node's namespace yet, new choice (the entry would be recorded)"
              : "ClientIP affinity: keyed by the pod's namespace; for a new namespace, a new choice",
        );
    }
    if (fe && fe.flags & SVC_F.SRC_RANGES) why.push("the socket's source is within the source ranges");
    if (!result.affinity) why.push(`new connection: backend selected among ${fe?.count ?? 0}`);
  }
  if (reason === "drop-src-range")
    why.push(
      input.src
        ? `source ${input.src.address} is outside the frontend's source ranges: connect() fails with EPERM`
        : `the source this node's routes pick is outside the frontend's source ranges: connect() fails with EPERM`,
    );
  if (reason === "sock-reject")
    why.push("no endpoints: connect() fails at once with EPERM (no SYN, no timeout)");
  if (reason === "sock-reject-no-local")
    why.push("internal traffic policy Local and no endpoint on this node: connect() fails with EPERM");
  if (reason === "drop-backend-gone")
    why.push("the chosen slot names a missing backend (an update is in flight)");

  // the backend as kpr_lb4_be has it; else (removed meanwhile) as the reverse-NAT entry named it
  const be =
    (backendId !== undefined ? backendView(cfg, backendId) : undefined) ??
    (backendAddr
      ? { id: backendId ?? 0, ...backendAddr, state: "unknown" as const, local: false }
      : undefined);
  if (be) {
    result.backend = be;
    result.output = { src: result.packet.src, dst: `${be.address}:${be.port}` };
    why.push(
      `connect() is sent to backend ${be.address}:${be.port}; getpeername() and recvmsg() show ${dst}`,
    );
  }
  why.push(`verdict: ${result.verdict} (${reason})`);
  return result;
}

/**
 * Whether kpr's real connect4 program runs on a socket of the scratch cgroup too: socket LB is
 * on and cgroup.root is the root of the hierarchy (a cgroup2 mount point), so the scratch cgroup
 * (at the top of the hierarchy) is below it. With cgroup.root a subdirectory it is not.
 */
function realHooksAbove(cfg: Config, config: { flags: number }): boolean {
  return (config.flags & CFG_F.SOCKET_LB) !== 0 && cgroup2Mounts().includes(cfg.cgroup.root);
}
