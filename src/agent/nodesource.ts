/**
 * The node's own source address for loadBalancerSourceRanges in the socket path. A node process's
 * unbound socket gets its source from the route only after kpr's connect hook has run, so the hook
 * cannot check it; instead kpr asks the kernel which source the node's routes pick for each guarded
 * frontend (as kube-proxy's rules see the packet: "node to LB1 (allowed by LoadBalancerSourceRanges)"
 * in its TestLoadBalancer) and marks the frontend when that source is in the list (mapstate.ts
 * writes the marker, bpf/sock.bpf.c reads it for sockets of the node's network namespace).
 */
import { routeSource } from "../datapath/ffi.ts";
import { parseCidr, parseIp } from "../lb/ip.ts";
import type { Frontend } from "../lb/model.ts";

/** A port for the route query: the discard port, not a frontend's (kpr's hook would translate it). */
const PROBE_PORT = 9;

function inCidr(addr: string, cidr: string): boolean {
  const ip = parseIp(addr);
  const c = parseCidr(cidr);
  if (!ip || !c || ip.family !== c.ip.family) return false;
  for (let bit = 0; bit < c.prefix; bit++) {
    const m = 0x80 >> (bit & 7);
    if ((ip.bytes[bit >> 3]! & m) !== (c.ip.bytes[bit >> 3]! & m)) return false;
  }
  return true;
}

/**
 * Sets sourceRanges.nodeSourceInList on each IPv4 frontend with source ranges whose node source
 * (the route's pick for its address, in this network namespace) is in its ranges, and clears it
 * elsewhere. Replaces the frontend's sourceRanges object (the services' frontends share one).
 * `source` is the route lookup (tests give their own).
 */
export function markNodeSources(
  frontends: readonly Frontend[],
  source: (address: string) => string | undefined = (a) => routeSource(a, PROBE_PORT),
): void {
  const cache = new Map<string, string | undefined>();
  for (const f of frontends) {
    const sr = f.sourceRanges;
    if (!sr || f.frontend.address.includes(":")) continue;
    const a = f.frontend.address;
    if (!cache.has(a)) cache.set(a, source(a));
    const src = cache.get(a);
    // a 0.0.0.0/0 range matches every source already (and the marker is not written then)
    const all = sr.cidrs.some((c) => parseCidr(c)?.prefix === 0 && !c.includes(":"));
    const inList = !all && src !== undefined && sr.cidrs.some((c) => inCidr(src, c));
    const { nodeSourceInList: _old, ...rest } = sr;
    f.sourceRanges = inList ? { ...rest, nodeSourceInList: true } : rest;
  }
}
