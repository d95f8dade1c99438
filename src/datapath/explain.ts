/**
 * `kpr explain`: runs one synthesized packet through the real tc ingress program against the real
 * load-balancing maps, without changing any state. A second instance of the embedded tc object
 * reuses every pinned map the program only reads (generic over the object's maps, so maps added
 * later are reused too), while every map it writes (WRITTEN_MAPS) is a fresh private scratch map.
 * The scratch connection-tracking, SNAT and affinity maps are seeded with copies of the real
 * entries of this flow, so a CT hit or an affinity decision is explained as it would happen.
 */
import { existsSync } from "node:fs";
import type { Config } from "../config/config.ts";
import { InputError, KprError } from "../errors.ts";
import { BpfMap, type BpfObject } from "./bpf.ts";
import {
  BE_F,
  BE_STATE,
  ct4Entry,
  ct4Key,
  dev4,
  kprConfig,
  lb4Backend,
  lb4Key,
  lb4Service,
  PROTO_NUM,
  REASON_NAMES,
  SVC_F,
  snat4Entry,
  svcMeta,
  u16Id,
  u32Id,
} from "./lbmaps.ts";
import { paths } from "./loader.ts";
import { openEmbedded } from "./objects.ts";

/** Maps the datapath programs write (bpf/lib/maps.h): private scratch copies in an explain run. */
export const WRITTEN_MAPS = [
  "kpr_ct4",
  "kpr_snat4",
  "kpr_lb4_aff",
  "kpr_sk4_rnat",
  "kpr_svc_stats",
  "kpr_be_stats",
  "kpr_reasons",
] as const;

const SCRATCH_MAX_ENTRIES = 1024;
const INGRESS_PROG = "kpr_tc_ingress";
const CT_INGRESS = 0;
const CT_REPLY = 1;
const CT_F_SNAT = 1;
const TC_ACT: Record<number, string> = { 0: "pass", 2: "drop", 7: "redirect" };
const SK_BUFF_SIZE = 192;
const SK_BUFF_IFINDEX_OFF = 40;

/** One endpoint of the explained packet. */
export interface Endpoint {
  address: string;
  port: number;
}

/** What to explain. */
export interface ExplainInput {
  src: Endpoint;
  dst: Endpoint;
  proto: "tcp" | "udp";
  /** ingress ifindex; default: the first device kpr programmed (kpr_dev4) */
  ifindex?: number;
}

/** The backend an explained packet goes to. */
export interface ExplainBackend {
  id: number;
  address: string;
  port: number;
  state: "active" | "terminating" | "unknown";
  local: boolean;
}

/** The outcome of one explain run. */
export interface ExplainResult {
  /** src is "(unbound)" for a socket that is not bound; ifindex 0 for a socket's connect */
  packet: { src: string; dst: string; proto: "tcp" | "udp"; ifindex: number };
  /** a connect() from a process on this node (explain --local) rather than a packet on a device */
  context?: { kind: "socket"; from: "node" | "pod"; syscall: "connect" };
  /** state explain changed after all (explain --local: a verdict counted by kpr's own hook) */
  sideEffects?: string[];
  /** tc verdict of the program: pass (TC_ACT_OK), drop (TC_ACT_SHOT), redirect */
  verdict: string;
  retval: number;
  /** the kpr_reason counted by the program */
  reason: string;
  frontend?: {
    id: number;
    address: string;
    port: number;
    wildcard: boolean;
    name?: string;
    types: string[];
    trafficPolicy: "Cluster" | "Local";
    backends: number;
    affinityTimeout?: number;
    sourceRanges: boolean;
  };
  backend?: ExplainBackend;
  /** the packet as the program left it (rewritten destination / SNAT source); addresses only for
   * an ICMP error (reject-icmp) */
  output?: { src: string; dst: string };
  /** the decisions behind the verdict, in order */
  why: string[];
  /** the flow's connection-tracking entry existed before (a tracked flow) */
  ctHit: boolean;
  /** the client's affinity entry for this frontend existed and chose the backend */
  affinity: boolean;
}

function ip4(text: string, what: string): Uint8Array {
  const parts = text.split(".");
  const b = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : Number.NaN));
  if (b.length !== 4 || b.some((x) => !(x >= 0 && x <= 255)))
    throw new InputError([
      {
        file: "<flags>",
        field: `--${what}`,
        message: `"${text}" is not an IPv4 address (explain covers IPv4)`,
      },
    ]);
  return new Uint8Array(b);
}

/** Parses "IP:PORT" as given to --src/--dst. */
export function parseEndpoint(text: string, what: string): Endpoint {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port < 1 || port > 65535)
    throw new InputError([
      { file: "<flags>", field: `--${what}`, message: `"${text}" is not IP:PORT (port 1-65535)` },
    ]);
  ip4(m[1] as string, what);
  return { address: m[1] as string, port };
}

function checksum(b: Uint8Array, init = 0): number {
  let sum = init;
  for (let i = 0; i + 1 < b.length; i += 2) sum += ((b[i] as number) << 8) | (b[i + 1] as number);
  if (b.length % 2) sum += (b[b.length - 1] as number) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * An Ethernet/IPv4 frame with a TCP SYN (no payload) or a UDP datagram (8 bytes of payload),
 * valid IPv4 and L4 checksums.
 */
export function buildProbePacket(
  src: Endpoint,
  dst: Endpoint,
  proto: "tcp" | "udp",
  macs: { src: Uint8Array; dst: Uint8Array } = { src: new Uint8Array(6), dst: new Uint8Array(6) },
): Uint8Array {
  const l4Len = proto === "tcp" ? 20 : 16;
  const pkt = new Uint8Array(14 + 20 + l4Len);
  const dv = new DataView(pkt.buffer);
  pkt.set(macs.dst, 0);
  pkt.set(macs.src, 6);
  dv.setUint16(12, 0x0800);
  const ip = 14;
  pkt[ip] = 0x45;
  dv.setUint16(ip + 2, 20 + l4Len);
  dv.setUint16(ip + 4, 0x4b50);
  dv.setUint16(ip + 6, 0x4000);
  pkt[ip + 8] = 64;
  pkt[ip + 9] = proto === "tcp" ? PROTO_NUM.TCP : PROTO_NUM.UDP;
  pkt.set(ip4(src.address, "src"), ip + 12);
  pkt.set(ip4(dst.address, "dst"), ip + 16);
  dv.setUint16(ip + 10, checksum(pkt.subarray(ip, ip + 20)));
  const l4 = ip + 20;
  dv.setUint16(l4, src.port);
  dv.setUint16(l4 + 2, dst.port);
  if (proto === "tcp") {
    dv.setUint32(l4 + 4, 0x6b707201);
    pkt[l4 + 12] = 5 << 4;
    pkt[l4 + 13] = 0x02;
    dv.setUint16(l4 + 14, 64240);
  } else {
    dv.setUint16(l4 + 4, l4Len);
    pkt.set(new TextEncoder().encode("kprprobe"), l4 + 8);
  }
  const pseudo = new Uint8Array(12);
  pseudo.set(pkt.subarray(ip + 12, ip + 20), 0);
  pseudo[9] = pkt[ip + 9] as number;
  new DataView(pseudo.buffer).setUint16(10, l4Len);
  let sum = 0;
  for (let i = 0; i < 12; i += 2) sum += ((pseudo[i] as number) << 8) | (pseudo[i + 1] as number);
  let c = checksum(pkt.subarray(l4), sum);
  if (proto === "udp" && c === 0) c = 0xffff;
  dv.setUint16(l4 + (proto === "tcp" ? 16 : 6), c);
  return pkt;
}

function tupleOf(pkt: Uint8Array): { src: string; dst: string } | undefined {
  if (pkt.length < 34 + 4) return undefined;
  const dv = new DataView(pkt.buffer, pkt.byteOffset, pkt.byteLength);
  const l4 = 14 + ((pkt[14] as number) & 0xf) * 4;
  if (pkt.length < l4 + 4) return undefined;
  const a = (o: number) => [...pkt.subarray(o, o + 4)].join(".");
  // an ICMP error (reject-icmp) has no ports
  if (pkt[23] === 1) return { src: a(26), dst: a(30) };
  return { src: `${a(26)}:${dv.getUint16(l4)}`, dst: `${a(30)}:${dv.getUint16(l4 + 2)}` };
}

export function openPinned(cfg: Config, name: string): BpfMap | undefined {
  const p = `${paths.maps(cfg)}/${name}`;
  return existsSync(p) ? BpfMap.openPinned(p) : undefined;
}

function perCpuSum(v: Uint8Array): bigint {
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  let s = 0n;
  for (let o = 0; o + 8 <= v.length; o += 8) s += dv.getBigUint64(o, true);
  return s;
}

/** The first device kpr programmed (lowest ifindex in kpr_dev4), with its address and MAC. */
function programmedDevice(cfg: Config, ifindex?: number): { ifindex: number; mac: Uint8Array } {
  using devs = openPinned(cfg, "kpr_dev4");
  const all: { ifindex: number; mac: Uint8Array }[] = [];
  if (devs)
    for (const [k, v] of devs.entries())
      all.push({ ifindex: Number(u32Id.decode(k).v), mac: dev4.decode(v).mac as Uint8Array });
  all.sort((a, b) => a.ifindex - b.ifindex);
  if (ifindex !== undefined)
    return all.find((d) => d.ifindex === ifindex) ?? { ifindex, mac: new Uint8Array(6) };
  const first = all[0];
  if (!first)
    throw new KprError("explain: no device is programmed (kpr_dev4 is empty; name one with --device)");
  return first;
}

function svcTypes(flags: number): string[] {
  const out: string[] = [];
  if (flags & SVC_F.CLUSTERIP) out.push("ClusterIP");
  if (flags & SVC_F.NODEPORT) out.push("NodePort");
  if (flags & SVC_F.EXTERNALIP) out.push("ExternalIP");
  if (flags & SVC_F.LOADBALANCER) out.push("LoadBalancer");
  if (flags & SVC_F.HOSTPORT) out.push("HostPort");
  return out;
}

/** The verdict reason a scratch instance's program counted (its private kpr_reasons). */
export function countedReason(obj: BpfObject): string {
  const reasons = obj.map("kpr_reasons");
  let reason = "unknown";
  for (let i = 0; i < REASON_NAMES.length; i++) {
    const v = reasons.lookup(u32Id.encode({ v: i }));
    if (v && perCpuSum(v) > 0n) reason = REASON_NAMES[i] as string;
  }
  return reason;
}

/** How an explain shows backend `id` (from the pinned kpr_lb4_be); undefined when it is not there. */
export function backendView(cfg: Config, id: number): ExplainBackend | undefined {
  using beMap = openPinned(cfg, "kpr_lb4_be");
  const bv = beMap?.lookup(u32Id.encode({ v: id }));
  if (!bv) return undefined;
  const b = lb4Backend.decode(bv);
  const state =
    b.state === BE_STATE.ACTIVE ? "active" : b.state === BE_STATE.TERMINATING ? "terminating" : "unknown";
  return { id, address: b.address, port: b.port, state, local: (b.flags & BE_F.LOCAL) !== 0 };
}

/** How an explain shows a frontend (master entry `fe` of address:port), named from kpr_svc_meta. */
export function frontendView(
  cfg: Config,
  fe: ReturnType<typeof lb4Service.decode>,
  address: string,
  port: number,
  wildcard: boolean,
): NonNullable<ExplainResult["frontend"]> {
  using meta = openPinned(cfg, "kpr_svc_meta");
  const mv = meta?.lookup(u16Id.encode({ v: fe.rev_nat_id }));
  const name = mv ? svcMeta.decode(mv) : undefined;
  return {
    id: fe.rev_nat_id,
    address,
    port,
    wildcard,
    ...(name?.name ? { name: name.port_name ? `${name.name}:${name.port_name}` : name.name } : {}),
    types: svcTypes(fe.flags),
    trafficPolicy: fe.flags & SVC_F.LOCAL_SCOPE ? "Local" : "Cluster",
    backends: fe.count,
    ...(fe.flags & SVC_F.AFFINITY ? { affinityTimeout: fe.affinity_timeout } : {}),
    sourceRanges: (fe.flags & SVC_F.SRC_RANGES) !== 0,
  };
}

/**
 * Opens a scratch instance of an embedded object with only `progs` loaded: the maps it reads reuse
 * the pins, the maps it writes (WRITTEN_MAPS, plus `private`) are private scratch maps.
 */
export async function openScratch(
  cfg: Config,
  name: "tc" | "sock",
  progs: string[],
  priv: string[] = [],
): Promise<BpfObject> {
  const dir = paths.maps(cfg);
  const obj = await openEmbedded(name);
  try {
    const written = new Set<string>([...WRITTEN_MAPS, ...priv]);
    for (const name of obj.maps()) {
      if (written.has(name)) {
        if (name !== "kpr_reasons" && name !== "kpr_config") obj.setMaxEntries(name, SCRATCH_MAX_ENTRIES);
        continue;
      }
      const path = `${dir}/${name}`;
      if (!existsSync(path))
        throw new KprError(`explain: map ${name} is not pinned at ${path} (run kpr apply first)`);
      obj.reusePinned(name, path);
    }
    for (const p of obj.programs()) obj.setAutoload(p, progs.includes(p));
    obj.load();
    return obj;
  } catch (e) {
    obj.close();
    throw e;
  }
}

function copyEntry(from: BpfMap | undefined, to: BpfMap, key: Uint8Array): Uint8Array | undefined {
  const v = from?.lookup(key);
  if (v) to.update(key, v);
  return v;
}

/** Runs the packet through the real ingress program on scratch state and explains the outcome. */
export async function explainPacket(cfg: Config, input: ExplainInput): Promise<ExplainResult> {
  if (!existsSync(`${paths.maps(cfg)}/kpr_lb4_svc`))
    throw new KprError(`explain: nothing is programmed under ${paths.maps(cfg)} (run kpr apply first)`);
  const dev = programmedDevice(cfg, input.ifindex);
  const proto = input.proto === "tcp" ? PROTO_NUM.TCP : PROTO_NUM.UDP;
  using obj = await openScratch(cfg, "tc", [INGRESS_PROG]);
  using realCt = openPinned(cfg, "kpr_ct4");
  using realSnat = openPinned(cfg, "kpr_snat4");
  using realAff = openPinned(cfg, "kpr_lb4_aff");

  // seed: this flow's CT entry (and its reverse entries), a SNAT reply's entry, the client's affinity
  const ck = ct4Key.encode({
    saddr: input.src.address,
    daddr: input.dst.address,
    sport: input.src.port,
    dport: input.dst.port,
    proto,
    dir: CT_INGRESS,
  });
  const scratchCt = obj.map("kpr_ct4");
  const scratchSnat = obj.map("kpr_snat4");
  const seededCt = copyEntry(realCt, scratchCt, ck);
  const seeded = seededCt ? ct4Entry.decode(seededCt) : undefined;
  if (seeded) {
    using realBe = openPinned(cfg, "kpr_lb4_be");
    const bev = realBe?.lookup(u32Id.encode({ v: seeded.backend_id }));
    if (bev) {
      const be = lb4Backend.decode(bev);
      const snat = (seeded.flags & CT_F_SNAT) !== 0;
      const rk = ct4Key.encode({
        saddr: be.address,
        daddr: snat ? seeded.nat_addr : input.src.address,
        sport: be.port,
        dport: snat ? seeded.nat_port : input.src.port,
        proto,
        dir: CT_REPLY,
      });
      copyEntry(snat ? realSnat : realCt, snat ? scratchSnat : scratchCt, rk);
    }
  }
  const replyKey = ct4Key.encode({
    saddr: input.src.address,
    daddr: input.dst.address,
    sport: input.src.port,
    dport: input.dst.port,
    proto,
    dir: CT_REPLY,
  });
  const seededSnat = copyEntry(realSnat, scratchSnat, replyKey);
  const srcBytes = ip4(input.src.address, "src");
  const seededAff = new Map<number, number>();
  if (realAff) {
    const scratchAff = obj.map("kpr_lb4_aff");
    for (const [k, v] of realAff.entries()) {
      if (k[10] !== 0) continue;
      if (k.subarray(0, 4).some((b, i) => b !== srcBytes[i]) || k.subarray(4, 8).some((b) => b !== 0))
        continue;
      scratchAff.update(k, v);
      seededAff.set(
        new DataView(k.buffer, k.byteOffset).getUint16(8, true),
        u32Id.decode(v.subarray(0, 4)).v,
      );
    }
  }

  const data = buildProbePacket(input.src, input.dst, input.proto, { src: new Uint8Array(6), dst: dev.mac });
  const ctx = new Uint8Array(SK_BUFF_SIZE);
  new DataView(ctx.buffer).setUint32(SK_BUFF_IFINDEX_OFF, dev.ifindex, true);
  const run = obj.program(INGRESS_PROG).testRun({ data, ctx });

  const reason = countedReason(obj);

  const why: string[] = [];
  const result: ExplainResult = {
    packet: {
      src: `${input.src.address}:${input.src.port}`,
      dst: `${input.dst.address}:${input.dst.port}`,
      proto: input.proto,
      ifindex: dev.ifindex,
    },
    verdict: TC_ACT[run.retval] ?? `tc action ${run.retval}`,
    retval: run.retval,
    reason,
    why,
    ctHit: false,
    affinity: false,
  };
  const out = tupleOf(run.data);
  if (out && (out.src !== result.packet.src || out.dst !== result.packet.dst)) result.output = out;

  if (seededSnat && reason === "snat-reply") {
    const se = snat4Entry.decode(seededSnat);
    why.push(
      `reply of a SNATed flow: restored to ${se.fe_addr}:${se.fe_port} -> ${se.client_addr}:${se.client_port}`,
    );
  }

  using svcMap = openPinned(cfg, "kpr_lb4_svc");
  let fe: ReturnType<typeof lb4Service.decode> | undefined;
  let wildcard = false;
  const feKey = (address: string) =>
    lb4Key.encode({ address, dport: input.dst.port, slot: 0, proto, scope: 0 });
  const exact = svcMap?.lookup(feKey(input.dst.address));
  if (exact) fe = lb4Service.decode(exact);
  else if (reason !== "pass") {
    const w = svcMap?.lookup(feKey("0.0.0.0"));
    if (w) {
      fe = lb4Service.decode(w);
      wildcard = true;
    }
  }
  if (fe) {
    result.frontend = frontendView(
      cfg,
      fe,
      wildcard ? "0.0.0.0" : input.dst.address,
      input.dst.port,
      wildcard,
    );
    why.push(
      `frontend ${wildcard ? `0.0.0.0:${input.dst.port} (NodePort on the device's address)` : result.packet.dst} matched: ${result.frontend.types.join(", ")}${result.frontend.name ? ` ${result.frontend.name}` : ""}, ${fe.count} backend(s), traffic policy ${result.frontend.trafficPolicy}`,
    );
  } else if (reason === "pass") {
    why.push(`no frontend ${result.packet.dst}/${input.proto.toUpperCase()}: not kpr's, the stack decides`);
  }

  let backendId: number | undefined;
  if (reason === "lb-ct" || reason === "snat-fwd") {
    result.ctHit = true;
    backendId = seeded?.backend_id;
    why.push(`tracked flow: connection-tracking entry exists, same backend as before (id ${backendId})`);
  } else if (reason === "lb-new" || reason === "snat-new") {
    if (seeded) why.push("connection-tracking entry existed but its backend is gone: re-balanced");
    const after = scratchCt.lookup(ck);
    if (after) backendId = ct4Entry.decode(after).backend_id;
    const affBid = fe ? seededAff.get(fe.rev_nat_id) : undefined;
    if (fe && fe.flags & SVC_F.AFFINITY) {
      if (affBid !== undefined && affBid === backendId) {
        result.affinity = true;
        why.push(`ClientIP affinity: ${input.src.address} is bound to backend ${affBid}`);
      } else
        why.push(
          affBid !== undefined
            ? `ClientIP affinity entry (backend ${affBid}) expired or its backend left: new choice, affinity recorded`
            : "ClientIP affinity: no entry for this client yet, new choice (the entry would be recorded)",
        );
    }
    if (fe && fe.flags & SVC_F.SRC_RANGES)
      why.push(`source ${input.src.address} is within the source ranges`);
    if (!result.affinity) why.push(`new flow: backend selected among ${fe?.count ?? 0}`);
  }
  if (reason === "drop-src-range")
    why.push(`source ${input.src.address} is outside the frontend's source ranges`);
  if (reason === "drop-no-backend")
    why.push(
      fe && fe.flags & SVC_F.DROP_NO_LOCAL
        ? "traffic policy Local and no endpoint on this node (endpoints elsewhere only): dropped, as kube-proxy does"
        : "no endpoints: dropped (neither a payload-less TCP segment a RST refuses nor a datagram an ICMP error may answer)",
    );
  if (reason === "reject-rst") why.push("no endpoints: refused with a TCP RST from the frontend");
  if (reason === "reject-icmp")
    why.push("no endpoints: refused with an ICMP port unreachable from the frontend");
  if (reason === "pass-clusterip")
    why.push("ClusterIP frontend: not reachable from outside, the stack decides");
  if (reason === "drop-backend-gone")
    why.push("the chosen slot names a missing backend (an update is in flight)");

  const b = backendId !== undefined ? backendView(cfg, backendId) : undefined;
  if (b) {
    result.backend = b;
    why.push(
      b.local
        ? `backend ${b.address}:${b.port} is on this node: DNAT only, the client address is kept`
        : `backend ${b.address}:${b.port} is on another node: DNAT + SNAT to this node's address, redirected`,
    );
  }
  using cfgMap = openPinned(cfg, "kpr_config");
  const cv = cfgMap?.lookup(u32Id.encode({ v: 0 }));
  if (cv && reason === "pass" && !fe) {
    const c = kprConfig.decode(cv);
    if (input.dst.port >= c.nodeport_min && input.dst.port <= c.nodeport_max)
      why.push(
        `port ${input.dst.port} is in the NodePort range but ${input.dst.address} is not the device's address`,
      );
  }
  why.push(`verdict: ${result.verdict} (${reason})`);
  return result;
}
