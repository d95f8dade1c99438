import { compareAddr, l4Key } from "./ip.ts";
import type { BackendState, Frontend, L4Addr, ServiceEntryJson } from "./model.ts";

/** The JSON entry of one frontend (DESIGN.md's shape, plus flags when set). */
export function toServiceEntryJson(f: Frontend): ServiceEntryJson {
  return {
    id: f.id,
    frontend: { address: f.frontend.address, port: f.frontend.port, protocol: f.frontend.protocol },
    type: f.type,
    service: f.service,
    backends: f.backends.map(backendJson),
    ...(f.internalBackends ? { internalBackends: f.internalBackends.map(backendJson) } : {}),
    scope: f.scope,
    ...(f.affinityTimeoutSeconds !== undefined ? { affinityTimeoutSeconds: f.affinityTimeoutSeconds } : {}),
    ...(f.sourceRanges !== undefined ? { sourceRanges: f.sourceRanges } : {}),
    ...(f.healthCheckNodePort !== undefined ? { healthCheckNodePort: f.healthCheckNodePort } : {}),
    ...(f.reject ? { reject: true } : {}),
    ...(f.dropNoLocal ? { dropNoLocal: true } : {}),
  };
}

function backendJson(b: Frontend["backends"][number]): ServiceEntryJson["backends"][number] {
  return { address: b.address, port: b.port, protocol: b.protocol, state: b.state };
}

/** "10.0.0.1:80/TCP" or "[fd00::1]:80/TCP". */
export function formatL4(a: L4Addr): string {
  return l4Key(a);
}

/** Orders entries by id, then frontend. */
function byId(a: ServiceEntryJson, b: ServiceEntryJson): number {
  return (
    a.id - b.id ||
    compareAddr(a.frontend.address, b.frontend.address) ||
    a.frontend.port - b.frontend.port ||
    (a.frontend.protocol < b.frontend.protocol ? -1 : a.frontend.protocol > b.frontend.protocol ? 1 : 0)
  );
}

/** Lays out rows as columns padded to the widest cell plus 3 spaces (Cilium's tabwriter), no trailing blanks. */
export function columns(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) {
    r.forEach((c, i) => {
      widths[i] = Math.max(widths[i] ?? 0, c.length);
    });
  }
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(Math.max(5, widths[i]! + 3))))
        .join("")
        .trimEnd(),
    )
    .join("\n");
}

/**
 * `cilium service list`'s layout: ID, Frontend, Service Type, Backend; the first backend on the
 * entry's row as `1 => 10.3.0.150:80/TCP (active)`, further backends on their own rows below it.
 * A two-scope frontend's in-cluster backends follow, marked `internal 1 => ...`.
 */
export function formatServiceTable(entries: ServiceEntryJson[]): string {
  const rows: string[][] = [["ID", "Frontend", "Service Type", "Backend"]];
  for (const e of [...entries].sort(byId)) {
    const bs = e.backends.map((b, i) => `${i + 1} => ${l4Key(b)} (${b.state})`);
    for (const [i, b] of (e.internalBackends ?? []).entries())
      bs.push(`internal ${i + 1} => ${l4Key(b)} (${b.state})`);
    rows.push([String(e.id), l4Key(e.frontend), e.type, bs[0] ?? ""]);
    for (const b of bs.slice(1)) rows.push(["", "", "", b]);
  }
  return `${columns(rows)}\n`;
}

type BackendJson = ServiceEntryJson["backends"][number];

/** How one frontend's entry differs between two plans. */
export interface EntryChange {
  /** Frontend key "addr:port/PROTO". */
  key: string;
  before: ServiceEntryJson;
  after: ServiceEntryJson;
  /** Top-level fields other than backends whose value changed (e.g. "id", "type", "scope"). */
  fields: string[];
  backendsAdded: BackendJson[];
  backendsRemoved: BackendJson[];
  backendStateChanged: { backend: BackendJson; from: BackendState; to: BackendState }[];
}

/** Structured difference between two entry lists, matched by frontend address:port/protocol. */
export interface EntriesDiff {
  added: ServiceEntryJson[];
  removed: ServiceEntryJson[];
  changed: EntryChange[];
  unchanged: number;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Compares two entry lists (e.g. the kernel's and a new plan) frontend by frontend. */
export function diffEntries(before: ServiceEntryJson[], after: ServiceEntryJson[]): EntriesDiff {
  const old = new Map(before.map((e) => [l4Key(e.frontend), e]));
  const diff: EntriesDiff = { added: [], removed: [], changed: [], unchanged: 0 };
  const seen = new Set<string>();
  for (const a of [...after].sort(byId)) {
    const key = l4Key(a.frontend);
    seen.add(key);
    const b = old.get(key);
    if (b === undefined) {
      diff.added.push(a);
      continue;
    }
    const fields = [...new Set([...Object.keys(b), ...Object.keys(a)])]
      .filter((k) => k !== "backends" && k !== "frontend" && !sameJson(b[k], a[k]))
      .sort();
    const oldB = new Map(b.backends.map((x) => [l4Key(x), x]));
    const newB = new Map(a.backends.map((x) => [l4Key(x), x]));
    const backendsAdded = a.backends.filter((x) => !oldB.has(l4Key(x)));
    const backendsRemoved = b.backends.filter((x) => !newB.has(l4Key(x)));
    const backendStateChanged = a.backends.flatMap((x) => {
      const prev = oldB.get(l4Key(x));
      return prev && prev.state !== x.state ? [{ backend: x, from: prev.state, to: x.state }] : [];
    });
    if (fields.length + backendsAdded.length + backendsRemoved.length + backendStateChanged.length === 0) {
      diff.unchanged++;
    } else {
      diff.changed.push({
        key,
        before: b,
        after: a,
        fields,
        backendsAdded,
        backendsRemoved,
        backendStateChanged,
      });
    }
  }
  diff.removed = [...before].filter((e) => !seen.has(l4Key(e.frontend))).sort(byId);
  return diff;
}

function entryLine(mark: string, e: ServiceEntryJson): string {
  const n = e.backends.length;
  const what = e.reject
    ? "no backends: reject"
    : e.dropNoLocal
      ? "no local backends: drop"
      : `${n} backend${n === 1 ? "" : "s"}`;
  const internal =
    e.internalBackends !== undefined
      ? `; in-cluster: ${e.internalBackends.length} backend${e.internalBackends.length === 1 ? "" : "s"}`
      : "";
  return `${mark} ${e.id} ${l4Key(e.frontend)} ${e.type} ${e.service} (${what}${internal})`;
}

function backendLine(mark: string, b: BackendJson): string {
  return `    ${mark} ${l4Key(b)} (${b.state})`;
}

/**
 * A readable plan, as `apply --dry-run` prints it against the node's current state: `+` added, `-`
 * removed, `~` changed entries with their backend and field changes, then a summary line.
 */
export function formatPlanDiff(before: ServiceEntryJson[], after: ServiceEntryJson[]): string {
  const d = diffEntries(before, after);
  const lines: string[] = [];
  for (const e of d.added) {
    lines.push(entryLine("+", e));
    for (const b of e.backends) lines.push(backendLine("+", b));
  }
  for (const c of d.changed) {
    lines.push(entryLine("~", c.after));
    for (const f of c.fields) {
      lines.push(
        `    ~ ${f}: ${JSON.stringify(c.before[f]) ?? "unset"} -> ${JSON.stringify(c.after[f]) ?? "unset"}`,
      );
    }
    for (const b of c.backendsAdded) lines.push(backendLine("+", b));
    for (const b of c.backendsRemoved) lines.push(backendLine("-", b));
    for (const s of c.backendStateChanged) lines.push(`    ~ ${l4Key(s.backend)} (${s.from} -> ${s.to})`);
  }
  for (const e of d.removed) lines.push(entryLine("-", e));
  lines.push(
    `Plan: ${d.added.length} to add, ${d.changed.length} to change, ${d.removed.length} to remove, ${d.unchanged} unchanged.`,
  );
  return `${lines.join("\n")}\n`;
}

/** Traffic counters as the stats columns print them. */
export interface TrafficJson {
  packets: bigint | number;
  bytes: bigint | number;
}

/** A service entry with the frontend's and each backend's counters. */
export interface EntryWithStats {
  id: number;
  frontend: L4Addr;
  type: ServiceEntryJson["type"];
  service: string;
  stats: TrafficJson;
  backends: (ServiceEntryJson["backends"][number] & { stats: TrafficJson })[];
}

/**
 * `kpr service list --stats`: the service table with packets and bytes per frontend (on its row)
 * and per backend (on each backend's row). tc counts packets, socket LB counts connections and
 * sendmsg calls (bytes 0).
 */
export function formatServiceStatsTable(entries: EntryWithStats[]): string {
  const rows: string[][] = [
    ["ID", "Frontend", "Service Type", "Packets", "Bytes", "Backend", "Packets", "Bytes"],
  ];
  const n = (v: bigint | number) => String(v);
  for (const e of [...entries].sort((a, b) =>
    byId(a as unknown as ServiceEntryJson, b as unknown as ServiceEntryJson),
  )) {
    const first = e.backends[0];
    rows.push([
      String(e.id),
      l4Key(e.frontend),
      e.type,
      n(e.stats.packets),
      n(e.stats.bytes),
      first ? `1 => ${l4Key(first)} (${first.state})` : "",
      first ? n(first.stats.packets) : "",
      first ? n(first.stats.bytes) : "",
    ]);
    e.backends.slice(1).forEach((b, i) => {
      rows.push([
        "",
        "",
        "",
        "",
        "",
        `${i + 2} => ${l4Key(b)} (${b.state})`,
        n(b.stats.packets),
        n(b.stats.bytes),
      ]);
    });
  }
  return `${columns(rows)}\n`;
}
