/**
 * Fixture tables for the XDP program (bpf/xdp.bpf.c). It runs the same core as tc ingress, so
 * every tc fixture is mirrored: each tc ingress step runs through kpr_xdp instead and must give
 * the same reason and the same output frame (headers and checksums), with the XDP verdict
 * (OK → XDP_PASS, SHOT → XDP_DROP, REDIRECT → XDP_REDIRECT). Egress steps stay on tc. What XDP
 * hands to tc (XDP_PASS_TC: the RST of a frontend without backends, a backend without a
 * neighbour entry) passes the frame unchanged and is then finished by the tc step, on the
 * decision XDP left in the maps.
 */
import { ct4Key } from "../../src/datapath/lbmaps.ts";
import type { Lab } from "./_lab.ts";
import { type Case, FIB, type FibEnv, fibCases, hostCases, type Step, tcp } from "./_tc_cases.ts";

const XDP_VERDICT = { OK: "XDP_PASS", SHOT: "XDP_DROP", REDIRECT: "XDP_REDIRECT" } as const;

/** The XDP counterpart of one tc step (one or two steps). */
function mirrorStep(s: Step): Step[] {
  if (s.prog !== "kpr_tc_ingress") return [s];
  if (s.reason === "REJECT_RST") {
    const { before, ...rest } = s;
    return [
      {
        ...s,
        what: `${s.what} (XDP hands it to tc)`,
        prog: "kpr_xdp",
        verdict: "XDP_PASS",
        reason: "XDP_PASS_TC",
        output: "unchanged",
      },
      rest,
    ];
  }
  // the ICMP error leaves where the datagram came in: XDP_TX, not a redirect
  if (s.reason === "REJECT_ICMP") return [{ ...s, prog: "kpr_xdp", verdict: "XDP_TX" }];
  const verdict = XDP_VERDICT[s.verdict as keyof typeof XDP_VERDICT];
  if (!verdict) throw new Error(`mirror: no XDP verdict for ${s.verdict} (${s.what})`);
  return [{ ...s, prog: "kpr_xdp", verdict }];
}

/** The XDP mirror of a tc case. */
export function xdpMirror(c: Case): Case {
  return { ...c, name: `xdp: ${c.name}`, steps: c.steps.flatMap(mirrorStep) };
}

/** tc's in-process cases, through XDP. */
export function xdpHostCases(): Case[] {
  return hostCases().map(xdpMirror);
}

const NO_NEIGH_CASE = "backend without a neighbour entry: redirect_neigh, MACs left to the kernel";

/** tc's FIB cases through XDP, and what XDP hands to tc when the FIB has no neighbour. */
export function xdpFibCases(env: FibEnv): Case[] {
  const fe = { src: FIB.client, sport: 12345, dst: FIB.nodeAddr, dport: 30080 };
  const inMacs: [string, string] = [FIB.clientMac, FIB.nodeMac];
  const mirrored = fibCases(env)
    .filter((c) => c.name !== NO_NEIGH_CASE)
    .map(xdpMirror);
  const noNeigh: Case = {
    name: "xdp: backend without a neighbour entry: XDP selects and tracks, tc SNATs and resolves",
    setup: (lab: Lab) => {
      lab.setConfig({ snatPorts: [40000, 40000] });
      lab.setDevice(env.ifindex, FIB.nodeAddr);
      lab.addService({
        address: FIB.nodeAddr,
        port: 30080,
        revNatId: 9,
        flags: ["NODEPORT"],
        backends: [{ id: 21, address: FIB.noNeighBe, port: 8080 }],
      });
    },
    steps: [
      {
        what: "SYN through XDP: passed untouched",
        prog: "kpr_xdp",
        input: tcp(fe, { macs: inMacs }),
        verdict: "XDP_PASS",
        reason: "XDP_PASS_TC",
        output: "unchanged",
      },
      {
        what: "the same SYN in tc: the tracked flow gets its SNAT port, redirect_neigh",
        prog: "kpr_tc_ingress",
        input: tcp(fe, { macs: inMacs }),
        verdict: "REDIRECT",
        reason: "SNAT_FWD",
        output: tcp(
          { src: FIB.nodeAddr, sport: 40000, dst: FIB.noNeighBe, dport: 8080 },
          { macs: inMacs, ttl: 63 },
        ),
      },
    ],
    probe: (lab: Lab) => {
      const v = lab.obj.map("kpr_ct4").lookup(ct4Key.encode({ ...flowKey(fe), proto: 6, dir: 0 }));
      return v ? "tracked" : "missing";
    },
    expectProbe: "tracked",
  };
  return [...mirrored, noNeigh];
}

function flowKey(f: { src: string; sport: number; dst: string; dport: number }) {
  return { saddr: f.src, daddr: f.dst, sport: f.sport, dport: f.dport };
}
