/**
 * Prints one line per kpr program (name kpr_*) attached to a network interface: tcx, XDP and
 * netkit links anywhere on the machine (`bpftool link show`; bpftool 7.1 prints tcx as type 11),
 * and tc filters / XDP in the current network namespace (`bpftool net show`). scripts/test.sh runs
 * it before and after the tests: once every namespace a test made is gone, a line that was not
 * there before is a program a test left attached, or attached to the host's own interfaces.
 */
const LINK_TYPES = new Set(["tcx", "xdp", "netkit", 6, 11, 13]); // 6 xdp, 11 tcx, 13 netkit

function bpftool<T>(args: string[]): T | undefined {
  const r = Bun.spawnSync(["bpftool", "-j", ...args], { stdout: "pipe", stderr: "ignore" });
  if (r.exitCode !== 0) return undefined;
  try {
    return JSON.parse(r.stdout.toString()) as T;
  } catch {
    return undefined;
  }
}

const names = new Map<number, string>();
for (const p of bpftool<{ id: number; name?: string }[]>(["prog", "show"]) ?? [])
  names.set(p.id, p.name ?? "");
const out: string[] = [];
for (const l of bpftool<{ type: string | number; prog_id?: number; ifindex?: number }[]>(["link", "show"]) ??
  []) {
  const name = names.get(l.prog_id ?? -1) ?? "";
  if (LINK_TYPES.has(l.type) && name.startsWith("kpr_"))
    out.push(`link ${l.type === 11 ? "tcx" : l.type} ${name}${l.ifindex ? ` ifindex ${l.ifindex}` : ""}`);
}
type NetEntry = { devname?: string; name?: string; kind?: string };
for (const ns of bpftool<{ xdp?: NetEntry[]; tc?: NetEntry[] }[]>(["net", "show"]) ?? [])
  for (const e of [...(ns.xdp ?? []), ...(ns.tc ?? [])])
    if ((e.name ?? "").startsWith("kpr_")) out.push(`this netns: ${e.devname} ${e.kind ?? "xdp"} ${e.name}`);
for (const l of out.sort()) console.log(l);
