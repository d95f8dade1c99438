/**
 * Fixture tables for the tc programs: (setup, input packet, expected verdict + reason, expected
 * output packet) per step. `hostCases` run in the test process; `fibCases` need a FIB (routes and
 * neighbours) and run in a network namespace built by tc.test.ts (see _tc_fib_runner.ts).
 * No bun:test import here: the netns runner executes these outside the test runner.
 */
import { ct4Entry, ct4Key } from "../../src/datapath/lbmaps.ts";
import { buildPacket, type PacketSpec, toHex } from "../harness/packet.ts";
import { type Lab, REASONS, type VERDICT } from "./_lab.ts";

export interface Step {
  what: string;
  prog: "kpr_tc_ingress" | "kpr_tc_egress" | "kpr_xdp";
  input: PacketSpec | Uint8Array;
  /** map changes between steps (backend set changes, ...) */
  before?: (lab: Lab) => void;
  verdict: keyof typeof VERDICT;
  /** kpr_reason without the KPR_R_ prefix: the only counter that must move, by exactly 1 */
  reason: string;
  /** expected frame; "unchanged" = byte-identical to the input; absent = not checked */
  output?: PacketSpec | "unchanged";
}

export interface Case {
  name: string;
  setup: (lab: Lab) => void;
  steps: Step[];
  /** reads map state after the steps (JSON-able); compared with `expectProbe` */
  probe?: (lab: Lab) => unknown;
  expectProbe?: unknown;
}

export interface StepResult {
  retval: number;
  hex: string;
  reasons: Record<string, number>;
}

export interface CaseResult {
  steps: StepResult[];
  probe?: unknown;
}

export const inputBytes = (i: PacketSpec | Uint8Array): Uint8Array =>
  i instanceof Uint8Array ? i : buildPacket(i);

/** Resets the lab, runs c's setup and steps; returns what each step did. */
export function executeCase(lab: Lab, c: Case, ifindex: number): CaseResult {
  lab.reset();
  c.setup(lab);
  const steps: StepResult[] = [];
  let before = lab.reasons();
  for (const s of c.steps) {
    s.before?.(lab);
    const r = lab.run(s.prog, inputBytes(s.input), ifindex);
    const after = lab.reasons();
    const delta: Record<string, number> = {};
    for (const name of REASONS) {
      const d = (after[name] ?? 0) - (before[name] ?? 0);
      if (d) delta[name] = d;
    }
    before = after;
    steps.push({ retval: r.retval, hex: toHex(r.data), reasons: delta });
  }
  return c.probe ? { steps, probe: c.probe(lab) } : { steps };
}

// ---------------------------------------------------------------------------------------------
// Packets

export const CLIENT_MAC = "02:00:00:00:00:aa";
export const NODE_MAC = "02:00:00:00:00:01";

interface Flow {
  src: string;
  sport: number;
  dst: string;
  dport: number;
}

interface PktOpts {
  flags?: string;
  seq?: number;
  ack?: number;
  ttl?: number;
  payload?: string;
  options?: number[];
  ipOptions?: number[];
  macs?: [string, string];
  udpNoCsum?: boolean;
}

export function tcp(f: Flow, o: PktOpts = {}): PacketSpec {
  const [src, dst] = o.macs ?? [CLIENT_MAC, NODE_MAC];
  return {
    eth: { src, dst },
    ip4: {
      src: f.src,
      dst: f.dst,
      ttl: o.ttl ?? 64,
      id: 0x1234,
      ...(o.ipOptions ? { options: o.ipOptions } : {}),
    },
    tcp: {
      sport: f.sport,
      dport: f.dport,
      seq: o.seq ?? 1000,
      ack: o.ack ?? 0,
      flags: o.flags ?? "S",
      window: 64240,
      ...(o.options ? { options: o.options } : {}),
    },
    ...(o.payload ? { payload: o.payload } : {}),
  };
}

export function udp(f: Flow, o: PktOpts = {}): PacketSpec {
  const [src, dst] = o.macs ?? [CLIENT_MAC, NODE_MAC];
  return {
    eth: { src, dst },
    ip4: { src: f.src, dst: f.dst, ttl: o.ttl ?? 64, id: 0x1234 },
    udp: { sport: f.sport, dport: f.dport, ...(o.udpNoCsum ? { checksum: "none" as const } : {}) },
    payload: o.payload ?? "ping",
  };
}

const rev = (f: Flow): Flow => ({ src: f.dst, sport: f.dport, dst: f.src, dport: f.sport });

// ---------------------------------------------------------------------------------------------
// In-process cases (no FIB needed; skb->ifindex is lo = 1)

const CLIENT = "203.0.113.7";
const CLIENT2 = "198.51.100.9";
const NODE = "192.168.77.1";
const LO_IFINDEX = 1;
const BE_A = { id: 11, address: "10.244.1.5", port: 8080, local: true };
const BE_B = { id: 12, address: "10.244.1.6", port: 8081, local: true };

const np = (dport = 30080): Flow => ({ src: CLIENT, sport: 40001, dst: NODE, dport });
const toA = (f: Flow): Flow => ({ ...f, dst: BE_A.address, dport: BE_A.port });
const toB = (f: Flow): Flow => ({ ...f, dst: BE_B.address, dport: BE_B.port });

/** kpr_ct4 key of backend A's replies to np(). */
const replyKeyA = (proto: number) => ({
  saddr: BE_A.address,
  daddr: CLIENT,
  sport: BE_A.port,
  dport: 40001,
  proto,
  dir: 1,
});

/** Moves a kpr_ct4 entry's last_seen `seconds` into the past (time passing, without waiting). */
function ageCt(lab: Lab, key: Parameters<typeof ct4Key.encode>[0], seconds: number): void {
  const e = lab.ct(key);
  if (!e) throw new Error(`ageCt: no kpr_ct4 entry ${JSON.stringify(key)}`);
  e.last_seen_ns -= BigInt(seconds) * 1_000_000_000n;
  lab.obj.map("kpr_ct4").update(ct4Key.encode(key), ct4Entry.encode(e));
}

function nodePort(lab: Lab, extra: Partial<Parameters<Lab["addService"]>[0]> = {}): void {
  lab.addService({
    address: NODE,
    port: 30080,
    revNatId: 7,
    flags: ["NODEPORT"],
    backends: [BE_A],
    ...extra,
  });
}

/**
 * The ICMP port unreachable kpr sends for `datagram` (an Ethernet frame it received): from the
 * frontend back to the client with the MACs swapped, a fresh IPv4 header (TTL 64, TOS 0xc0,
 * DF, id 0) and the quote: the datagram's IPv4 header (with options) and its first 8 payload
 * bytes, byte for byte.
 */
export function portUnreachable(datagram: PacketSpec): PacketSpec {
  const ip = buildPacket({ ...datagram, eth: undefined });
  const hl = ((ip[0] ?? 0) & 0x0f) * 4;
  return {
    eth: { src: datagram.eth!.dst, dst: datagram.eth!.src },
    ip4: { src: datagram.ip4!.dst, dst: datagram.ip4!.src, ttl: 64, tos: 0xc0, id: 0, df: true },
    icmp: { type: "dest-unreach", code: 3, rest: [0, 0, 0, 0], inner: ip.slice(0, hl + 8) },
  };
}

/** UDP to a frontend without backends: ICMP port unreachable (kube-proxy's REJECT). */
function icmpCases(): Case[] {
  const setup = (lab: Lab) => nodePort(lab, { backends: [], proto: "udp" });
  const dgram = udp(np());
  const withOpts: PacketSpec = { ...dgram, ip4: { ...dgram.ip4!, options: [0x94, 4, 0, 0, 1, 1, 1, 0] } };
  const long = udp(np(), { payload: "x".repeat(1200) });
  const bcast = udp(np(), { macs: [CLIENT_MAC, "ff:ff:ff:ff:ff:ff"] });
  const fromZero = udp({ ...np(), src: "0.0.0.0" });
  const step = (what: string, input: PacketSpec): Step => ({
    what,
    prog: "kpr_tc_ingress",
    input,
    verdict: "REDIRECT",
    reason: "REJECT_ICMP",
    output: portUnreachable(input),
  });
  return [
    {
      name: "no backends: UDP answered with ICMP port unreachable quoting the IPv4 header + 8 bytes",
      setup,
      steps: [
        step("datagram", dgram),
        step("datagram without UDP checksum", udp({ ...np(), sport: 40002 }, { udpNoCsum: true })),
        step("datagram with IPv4 options: quoted with them", withOpts),
        step("1200-byte datagram: the reply is cut to the quote", long),
        step("datagram without payload", { ...dgram, payload: "" }),
      ],
    },
    {
      name: "no backends: no ICMP error about a link-layer broadcast or to a source that is not one host",
      setup,
      steps: [
        {
          what: "broadcast frame",
          prog: "kpr_tc_ingress",
          input: bcast,
          verdict: "SHOT",
          reason: "DROP_NO_BACKEND",
        },
        {
          what: "from 0.0.0.0",
          prog: "kpr_tc_ingress",
          input: fromZero,
          verdict: "SHOT",
          reason: "DROP_NO_BACKEND",
        },
        {
          what: "from a multicast source",
          prog: "kpr_tc_ingress",
          input: udp({ ...np(), src: "224.0.0.9" }),
          verdict: "SHOT",
          reason: "DROP_NO_BACKEND",
        },
      ],
    },
  ];
}

export function hostCases(): Case[] {
  const syn = tcp(np());
  const reply = tcp(rev(toA(np())), { flags: "SA", seq: 5000, ack: 1001, macs: [NODE_MAC, CLIENT_MAC] });
  return [
    {
      name: "ARP is passed untouched",
      setup: nodePort,
      steps: [
        {
          what: "arp",
          prog: "kpr_tc_ingress",
          input: new Uint8Array([
            ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0xaa, 0x08, 0x06],
            ...new Array(28).fill(0),
          ]),
          verdict: "OK",
          reason: "PASS_NOT_L4",
          output: "unchanged",
        },
      ],
    },
    {
      name: "ICMP echo is passed untouched",
      setup: nodePort,
      steps: [
        {
          what: "ping",
          prog: "kpr_tc_ingress",
          input: {
            eth: { src: CLIENT_MAC, dst: NODE_MAC },
            ip4: { src: CLIENT, dst: NODE },
            icmp: { type: "echo-request", id: 1, seq: 1 },
          },
          verdict: "OK",
          reason: "PASS_NOT_L4",
          output: "unchanged",
        },
      ],
    },
    {
      name: "TCP to a port without frontend is passed untouched",
      setup: nodePort,
      steps: [
        {
          what: "syn",
          prog: "kpr_tc_ingress",
          input: tcp(np(22)),
          verdict: "OK",
          reason: "PASS",
          output: "unchanged",
        },
      ],
    },
    {
      name: "IPv4 fragment to a frontend is passed untouched",
      setup: nodePort,
      steps: [
        {
          what: "first fragment",
          prog: "kpr_tc_ingress",
          input: { ...syn, ip4: { ...syn.ip4!, mf: true } },
          verdict: "OK",
          reason: "PASS_FRAGMENT",
          output: "unchanged",
        },
      ],
    },
    ...["127.0.0.1", "127.9.9.9", "0.0.0.0"].map(
      (dst): Case => ({
        name: `a SYN from a device to ${dst}:30080 (a loopback or 0.0.0.0 frontend) is dropped (CVE-2020-8558)`,
        setup: (lab) => {
          nodePort(lab);
          nodePort(lab, { address: dst, revNatId: 8 });
        },
        steps: [
          {
            what: "syn",
            prog: "kpr_tc_ingress",
            input: tcp({ src: CLIENT, sport: 40001, dst, dport: 30080 }),
            verdict: "SHOT",
            reason: "DROP_LOOPBACK_DST",
          },
        ],
      }),
    ),
    {
      name: "truncated TCP header is dropped",
      setup: nodePort,
      steps: [
        {
          what: "IP says 40 bytes, frame carries 14+30",
          prog: "kpr_tc_ingress",
          input: buildPacket(syn).slice(0, 14 + 30),
          verdict: "SHOT",
          reason: "DROP_MALFORMED",
        },
      ],
    },
    {
      name: "ClusterIP-only frontend reached from outside is passed",
      setup: (lab) =>
        lab.addService({
          address: "10.96.0.10",
          port: 80,
          revNatId: 3,
          flags: ["CLUSTERIP"],
          backends: [BE_A],
        }),
      steps: [
        {
          what: "syn to ClusterIP",
          prog: "kpr_tc_ingress",
          input: tcp({ src: CLIENT, sport: 40001, dst: "10.96.0.10", dport: 80 }),
          verdict: "OK",
          reason: "PASS_CLUSTERIP",
          output: "unchanged",
        },
      ],
    },
    {
      name: "NodePort to a local backend: DNAT, reverse NAT on egress, tracked flow",
      setup: nodePort,
      steps: [
        {
          what: "SYN is DNATed",
          prog: "kpr_tc_ingress",
          input: syn,
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toA(np())),
        },
        {
          what: "SYN-ACK gets the frontend as source",
          prog: "kpr_tc_egress",
          input: reply,
          verdict: "OK",
          reason: "LB_REVNAT",
          output: tcp(rev(np()), { flags: "SA", seq: 5000, ack: 1001, macs: [NODE_MAC, CLIENT_MAC] }),
        },
        {
          what: "ACK with payload follows the flow",
          prog: "kpr_tc_ingress",
          input: tcp(np(), { flags: "PA", seq: 1001, ack: 5001, payload: "GET / HTTP/1.0\r\n\r\n" }),
          verdict: "OK",
          reason: "LB_CT",
          output: tcp(toA(np()), { flags: "PA", seq: 1001, ack: 5001, payload: "GET / HTTP/1.0\r\n\r\n" }),
        },
        {
          what: "unrelated egress packet is untouched",
          prog: "kpr_tc_egress",
          input: tcp({ src: NODE, sport: 22, dst: CLIENT, dport: 40001 }, { flags: "A" }),
          verdict: "OK",
          reason: "PASS",
          output: "unchanged",
        },
      ],
      probe: (lab) => {
        const e = lab.ct({ saddr: CLIENT, daddr: NODE, sport: 40001, dport: 30080, proto: 6, dir: 0 });
        const r = lab.ct({
          saddr: BE_A.address,
          daddr: CLIENT,
          sport: BE_A.port,
          dport: 40001,
          proto: 6,
          dir: 1,
        });
        return {
          fwd: e && { backend: e.backend_id, rev: e.rev_nat_id, flags: e.flags, packets: Number(e.packets) },
          reply: r && { backend: r.backend_id, nat: `${r.nat_addr}:${r.nat_port}` },
        };
      },
      expectProbe: {
        fwd: { backend: 11, rev: 7, flags: 0, packets: 2 },
        reply: { backend: 11, nat: `${NODE}:30080` },
      },
    },
    {
      name: "IPv4 options: the L4 header is found after them",
      setup: nodePort,
      steps: [
        {
          what: "SYN with a 4-byte option",
          prog: "kpr_tc_ingress",
          input: tcp(np(), { ipOptions: [1, 1, 1, 0] }),
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toA(np()), { ipOptions: [1, 1, 1, 0] }),
        },
      ],
    },
    {
      name: "UDP NodePort to a local backend, with and without checksum",
      setup: (lab) => nodePort(lab, { proto: "udp" }),
      steps: [
        {
          what: "checksummed",
          prog: "kpr_tc_ingress",
          input: udp(np()),
          verdict: "OK",
          reason: "LB_NEW",
          output: udp(toA(np())),
        },
        {
          what: "checksum 0 stays 0",
          prog: "kpr_tc_ingress",
          input: udp({ ...np(), sport: 40002 }, { udpNoCsum: true }),
          verdict: "OK",
          reason: "LB_NEW",
          output: udp(toA({ ...np(), sport: 40002 }), { udpNoCsum: true }),
        },
        {
          what: "reply",
          prog: "kpr_tc_egress",
          input: udp(rev(toA(np())), { macs: [NODE_MAC, CLIENT_MAC] }),
          verdict: "OK",
          reason: "LB_REVNAT",
          output: udp(rev(np()), { macs: [NODE_MAC, CLIENT_MAC] }),
        },
      ],
    },
    {
      name: "a flow the client keeps alive keeps its reply entry alive (local backend answers late)",
      setup: (lab) => nodePort(lab, { proto: "udp" }),
      steps: [
        {
          what: "first datagram",
          prog: "kpr_tc_ingress",
          input: udp(np()),
          verdict: "OK",
          reason: "LB_NEW",
          output: udp(toA(np())),
        },
        {
          what: "59 s later (only the client spoke): the next datagram refreshes the flow",
          before: (lab) => {
            ageCt(lab, { saddr: CLIENT, daddr: NODE, sport: 40001, dport: 30080, proto: 17, dir: 0 }, 2);
            ageCt(lab, replyKeyA(17), 59);
          },
          prog: "kpr_tc_ingress",
          input: udp(np()),
          verdict: "OK",
          reason: "LB_CT",
          output: udp(toA(np())),
        },
        {
          what: "2 s later the backend answers: still reverse-NATed",
          before: (lab) => {
            ageCt(lab, { saddr: CLIENT, daddr: NODE, sport: 40001, dport: 30080, proto: 17, dir: 0 }, 2);
            ageCt(lab, replyKeyA(17), 2);
          },
          prog: "kpr_tc_egress",
          input: udp(rev(toA(np())), { macs: [NODE_MAC, CLIENT_MAC] }),
          verdict: "OK",
          reason: "LB_REVNAT",
          output: udp(rev(np()), { macs: [NODE_MAC, CLIENT_MAC] }),
        },
      ],
    },
    {
      name: "source ranges (allow list): inside is served, outside dropped",
      setup: (lab) => {
        nodePort(lab, { flags: ["LOADBALANCER", "SRC_RANGES"] });
        lab.addSourceRange(7, "203.0.113.0/24");
      },
      steps: [
        {
          what: "inside",
          prog: "kpr_tc_ingress",
          input: syn,
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toA(np())),
        },
        {
          what: "outside",
          prog: "kpr_tc_ingress",
          input: tcp({ ...np(), src: CLIENT2 }),
          verdict: "SHOT",
          reason: "DROP_SRC_RANGE",
        },
      ],
    },
    {
      name: "source ranges (deny list): listed is dropped, others served",
      setup: (lab) => {
        nodePort(lab, { flags: ["LOADBALANCER", "SRC_RANGES", "SRC_DENY"] });
        lab.addSourceRange(7, "203.0.113.7/32");
      },
      steps: [
        { what: "listed", prog: "kpr_tc_ingress", input: syn, verdict: "SHOT", reason: "DROP_SRC_RANGE" },
        {
          what: "other",
          prog: "kpr_tc_ingress",
          input: tcp({ ...np(), src: CLIENT2 }),
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toA({ ...np(), src: CLIENT2 })),
        },
      ],
    },
    ...icmpCases(),
    {
      name: "no backends: TCP SYN answered with RST, data dropped",
      setup: (lab) => {
        nodePort(lab, { backends: [] });
        nodePort(lab, { backends: [], proto: "udp" });
      },
      steps: [
        {
          what: "SYN (with MSS option) → RST+ACK from the frontend",
          prog: "kpr_tc_ingress",
          input: tcp(np(), { ttl: 50, options: [2, 4, 5, 0xb4] }),
          verdict: "REDIRECT",
          reason: "REJECT_RST",
          output: tcp(rev(np()), {
            flags: "RA",
            seq: 0,
            ack: 1001,
            options: [2, 4, 5, 0xb4],
            macs: [NODE_MAC, CLIENT_MAC],
          }),
        },
        {
          what: "ACK → RST with seq = its ack",
          prog: "kpr_tc_ingress",
          input: tcp(np(), { flags: "A", seq: 1001, ack: 777 }),
          verdict: "REDIRECT",
          reason: "REJECT_RST",
          output: tcp(rev(np()), { flags: "R", seq: 777, ack: 0, macs: [NODE_MAC, CLIENT_MAC] }),
        },
        {
          what: "segment with payload",
          prog: "kpr_tc_ingress",
          input: tcp(np(), { flags: "PA", payload: "x" }),
          verdict: "SHOT",
          reason: "DROP_NO_BACKEND",
        },
        {
          what: "RST is never answered",
          prog: "kpr_tc_ingress",
          input: tcp(np(), { flags: "R" }),
          verdict: "SHOT",
          reason: "DROP_NO_BACKEND",
        },
      ],
    },
    {
      name: "Local policy, endpoints only on other nodes: dropped, not refused (kube-proxy)",
      setup: (lab) => {
        nodePort(lab, { backends: [], flags: ["NODEPORT", "LOCAL_SCOPE", "DROP_NO_LOCAL"] });
        nodePort(lab, { backends: [], proto: "udp", flags: ["NODEPORT", "LOCAL_SCOPE", "DROP_NO_LOCAL"] });
      },
      steps: [
        {
          what: "SYN gets no RST",
          prog: "kpr_tc_ingress",
          input: tcp(np()),
          verdict: "SHOT",
          reason: "DROP_NO_BACKEND",
        },
        {
          what: "UDP gets no ICMP error",
          prog: "kpr_tc_ingress",
          input: udp(np()),
          verdict: "SHOT",
          reason: "DROP_NO_BACKEND",
        },
      ],
    },
    {
      name: "NodePort on 0.0.0.0 serves the ingress device's address",
      setup: (lab) => {
        lab.setConfig({ flags: ["NODEPORT"], nodePorts: [30000, 32767] });
        lab.setDevice(LO_IFINDEX, NODE);
        nodePort(lab, { address: "0.0.0.0" });
      },
      steps: [
        {
          what: "SYN to the device address",
          prog: "kpr_tc_ingress",
          input: syn,
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toA(np())),
        },
        {
          what: "reply restores the device address",
          prog: "kpr_tc_egress",
          input: reply,
          verdict: "OK",
          reason: "LB_REVNAT",
          output: tcp(rev(np()), { flags: "SA", seq: 5000, ack: 1001, macs: [NODE_MAC, CLIENT_MAC] }),
        },
        {
          what: "another address is not a NodePort",
          prog: "kpr_tc_ingress",
          input: tcp({ ...np(), dst: "192.168.77.2" }),
          verdict: "OK",
          reason: "PASS",
          output: "unchanged",
        },
      ],
    },
    {
      name: "tracked flows survive backend-set changes; a removed backend is re-selected",
      setup: nodePort,
      steps: [
        {
          what: "SYN → A",
          prog: "kpr_tc_ingress",
          input: syn,
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toA(np())),
        },
        {
          what: "service now has only B: the flow stays on A",
          before: (lab) => nodePort(lab, { backends: [BE_B] }),
          prog: "kpr_tc_ingress",
          input: tcp(np(), { flags: "A", seq: 1001, ack: 1 }),
          verdict: "OK",
          reason: "LB_CT",
          output: tcp(toA(np()), { flags: "A", seq: 1001, ack: 1 }),
        },
        {
          what: "A removed: re-selected to B",
          before: (lab) => lab.deleteBackend(BE_A.id),
          prog: "kpr_tc_ingress",
          input: tcp(np(), { flags: "A", seq: 1001, ack: 1 }),
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toB(np()), { flags: "A", seq: 1001, ack: 1 }),
        },
      ],
    },
    {
      name: "TCP FIN marks the flow closed",
      setup: nodePort,
      steps: [
        {
          what: "SYN",
          prog: "kpr_tc_ingress",
          input: syn,
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toA(np())),
        },
        {
          what: "FIN",
          prog: "kpr_tc_ingress",
          input: tcp(np(), { flags: "FA", seq: 1001, ack: 1 }),
          verdict: "OK",
          reason: "LB_CT",
          output: tcp(toA(np()), { flags: "FA", seq: 1001, ack: 1 }),
        },
      ],
      probe: (lab) =>
        lab.ct({ saddr: CLIENT, daddr: NODE, sport: 40001, dport: 30080, proto: 6, dir: 0 })?.flags,
      expectProbe: 2, // KPR_CT_F_CLOSED
    },
    {
      name: "a fresh SYN on a closed flow reopens it on the same backend",
      setup: nodePort,
      steps: [
        {
          what: "SYN",
          prog: "kpr_tc_ingress",
          input: syn,
          verdict: "OK",
          reason: "LB_NEW",
          output: tcp(toA(np())),
        },
        {
          what: "RST",
          prog: "kpr_tc_ingress",
          input: tcp(np(), { flags: "R", seq: 1001 }),
          verdict: "OK",
          reason: "LB_CT",
          output: tcp(toA(np()), { flags: "R", seq: 1001 }),
        },
        {
          what: "SYN again",
          prog: "kpr_tc_ingress",
          input: syn,
          verdict: "OK",
          reason: "LB_CT",
          output: tcp(toA(np())),
        },
      ],
      probe: (lab) =>
        lab.ct({ saddr: CLIENT, daddr: NODE, sport: 40001, dport: 30080, proto: 6, dir: 0 })?.flags,
      expectProbe: 0,
    },
    {
      name: "a slot naming a missing backend drops",
      setup: (lab) => {
        nodePort(lab);
        lab.deleteBackend(BE_A.id);
      },
      steps: [
        { what: "SYN", prog: "kpr_tc_ingress", input: syn, verdict: "SHOT", reason: "DROP_BACKEND_GONE" },
      ],
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Cases that need a FIB: run inside the netns built by tc.test.ts

/** The netns the FIB cases expect (tc.test.ts builds it; see there). */
export interface FibEnv {
  /** ifindex of d0 (MTU 1400), the device the packets arrive on */
  ifindex: number;
}

export const FIB = {
  nodeAddr: "10.77.0.1",
  nodeMac: "02:00:00:00:00:d0",
  remoteBe: { addr: "10.77.0.2", mac: "02:00:00:00:00:b2" },
  noNeighBe: "10.77.0.9",
  unreachableBe: "10.99.0.4",
  gw: { addr: "10.77.0.3", mac: "02:00:00:00:00:c3" },
  client: "10.88.0.5",
  client2: "10.88.0.6",
  clientMac: "02:00:00:00:00:c3", // clients sit behind the gateway
} as const;

export function fibCases(env: FibEnv): Case[] {
  const fe: Flow = { src: FIB.client, sport: 12345, dst: FIB.nodeAddr, dport: 30080 };
  const inMacs: [string, string] = [FIB.clientMac, FIB.nodeMac];
  const remote = (lab: Lab, be: string, proto: "tcp" | "udp" = "tcp", withDev = true) => {
    lab.setConfig({ snatPorts: [40000, 40000] });
    if (withDev) lab.setDevice(env.ifindex, FIB.nodeAddr);
    lab.addService({
      address: FIB.nodeAddr,
      port: 30080,
      proto,
      revNatId: 9,
      flags: ["NODEPORT"],
      backends: [{ id: 21, address: be, port: 8080 }],
    });
  };
  // after DNAT+SNAT: node:40000 → backend:8080
  const snated = (be: string): Flow => ({ src: FIB.nodeAddr, sport: 40000, dst: be, dport: 8080 });
  const toBeMacs: [string, string] = [FIB.nodeMac, FIB.remoteBe.mac];
  return [
    {
      name: "NodePort to a remote backend: DNAT+SNAT, FIB MACs, redirect; reply restored",
      setup: (lab) => remote(lab, FIB.remoteBe.addr),
      steps: [
        {
          what: "SYN → node:40000 → backend, TTL-1",
          prog: "kpr_tc_ingress",
          input: tcp(fe, { macs: inMacs }),
          verdict: "REDIRECT",
          reason: "SNAT_NEW",
          output: tcp(snated(FIB.remoteBe.addr), { macs: toBeMacs, ttl: 63 }),
        },
        {
          what: "SYN-ACK from the backend → frontend → client via the gateway",
          prog: "kpr_tc_ingress",
          input: tcp(rev(snated(FIB.remoteBe.addr)), {
            flags: "SA",
            seq: 9000,
            ack: 1001,
            macs: [FIB.remoteBe.mac, FIB.nodeMac],
          }),
          verdict: "REDIRECT",
          reason: "SNAT_REPLY",
          output: tcp(rev(fe), {
            flags: "SA",
            seq: 9000,
            ack: 1001,
            ttl: 63,
            macs: [FIB.nodeMac, FIB.gw.mac],
          }),
        },
        {
          what: "ACK keeps the SNAT port",
          prog: "kpr_tc_ingress",
          input: tcp(fe, { flags: "A", seq: 1001, ack: 9001, macs: inMacs }),
          verdict: "REDIRECT",
          reason: "SNAT_FWD",
          output: tcp(snated(FIB.remoteBe.addr), {
            flags: "A",
            seq: 1001,
            ack: 9001,
            macs: toBeMacs,
            ttl: 63,
          }),
        },
        {
          what: "a second client finds no free SNAT port (range of one)",
          prog: "kpr_tc_ingress",
          input: tcp({ ...fe, src: FIB.client2 }, { macs: inMacs }),
          verdict: "SHOT",
          reason: "DROP_SNAT_PORTS",
        },
      ],
      probe: (lab) =>
        lab.snatEntries().map((e) => ({
          key: `${e.key.saddr}:${e.key.sport}>${e.key.daddr}:${e.key.dport}/${e.key.proto}/${e.key.dir}`,
          restore: `${e.value.fe_addr}:${e.value.fe_port}>${e.value.client_addr}:${e.value.client_port}`,
          rev: e.value.rev_nat_id,
        })),
      expectProbe: [
        {
          key: `${FIB.remoteBe.addr}:8080>${FIB.nodeAddr}:40000/6/1`,
          restore: `${FIB.nodeAddr}:30080>${FIB.client}:12345`,
          rev: 9,
        },
      ],
    },
    {
      name: "UDP to a remote backend: DNAT+SNAT with checksums; reply restored",
      setup: (lab) => remote(lab, FIB.remoteBe.addr, "udp"),
      steps: [
        {
          what: "datagram",
          prog: "kpr_tc_ingress",
          input: udp(fe, { macs: inMacs }),
          verdict: "REDIRECT",
          reason: "SNAT_NEW",
          output: udp(snated(FIB.remoteBe.addr), { macs: toBeMacs, ttl: 63 }),
        },
        {
          what: "reply",
          prog: "kpr_tc_ingress",
          input: udp(rev(snated(FIB.remoteBe.addr)), {
            macs: [FIB.remoteBe.mac, FIB.nodeMac],
            payload: "pong",
          }),
          verdict: "REDIRECT",
          reason: "SNAT_REPLY",
          output: udp(rev(fe), { macs: [FIB.nodeMac, FIB.gw.mac], ttl: 63, payload: "pong" }),
        },
      ],
    },
    {
      name: "backend without a neighbour entry: redirect_neigh, MACs left to the kernel",
      setup: (lab) => remote(lab, FIB.noNeighBe),
      steps: [
        {
          what: "SYN",
          prog: "kpr_tc_ingress",
          input: tcp(fe, { macs: inMacs }),
          verdict: "REDIRECT",
          reason: "SNAT_NEW",
          output: tcp(snated(FIB.noNeighBe), { macs: inMacs, ttl: 63 }),
        },
      ],
    },
    {
      name: "unreachable backend: dropped (a DNAT+SNATed packet cannot go back to the stack)",
      setup: (lab) => remote(lab, FIB.unreachableBe),
      steps: [
        {
          what: "SYN",
          prog: "kpr_tc_ingress",
          input: tcp(fe, { macs: inMacs }),
          verdict: "SHOT",
          reason: "DROP_FIB",
        },
      ],
    },
    {
      name: "egress device without kpr_dev4 entry: no SNAT address, dropped",
      setup: (lab) => remote(lab, FIB.remoteBe.addr, "tcp", false),
      steps: [
        {
          what: "SYN",
          prog: "kpr_tc_ingress",
          input: tcp(fe, { macs: inMacs }),
          verdict: "SHOT",
          reason: "DROP_NO_DEVICE",
        },
      ],
    },
    {
      name: "egress device without an IPv4 address (kpr_dev4 0.0.0.0): no SNAT address, dropped",
      setup: (lab) => {
        remote(lab, FIB.remoteBe.addr, "tcp", false);
        lab.setDevice(env.ifindex, "0.0.0.0");
      },
      steps: [
        {
          what: "SYN",
          prog: "kpr_tc_ingress",
          input: tcp(fe, { macs: inMacs }),
          verdict: "SHOT",
          reason: "DROP_NO_DEVICE",
        },
      ],
    },
    {
      name: "packet larger than the egress MTU (d0: 1400) is dropped, not sent",
      setup: (lab) => remote(lab, FIB.remoteBe.addr),
      steps: [
        {
          what: "1500-byte IP packet",
          prog: "kpr_tc_ingress",
          input: tcp(fe, { macs: inMacs, flags: "A", payload: "x".repeat(1460) }),
          verdict: "SHOT",
          reason: "DROP_FRAG_NEEDED",
        },
      ],
    },
    {
      name: "TTL 1 is not forwarded",
      setup: (lab) => remote(lab, FIB.remoteBe.addr),
      steps: [
        {
          what: "SYN ttl 1",
          prog: "kpr_tc_ingress",
          input: tcp(fe, { macs: inMacs, ttl: 1 }),
          verdict: "SHOT",
          reason: "DROP_TTL",
        },
      ],
    },
  ];
}
