/**
 * The settings an apply programmed, kept in the pinned state itself: one pinned array map
 * (`kpr_settings`, one entry) holding them as JSON. `kpr status` reports from here rather than from
 * whatever config file it is given now, and flags a config that differs.
 */

import { existsSync } from "node:fs";
import type { Config } from "../config/config.ts";
import { deviceMatches } from "../config/devices.ts";
import { VERSION } from "../version.ts";
import { BpfMap, MapType } from "./bpf.ts";
import { u32Id } from "./lbmaps.ts";

/** Name of the pinned map under `${bpf.root}/maps`. */
export const SETTINGS_MAP = "kpr_settings";
const VALUE_SIZE = 4096;

/** What an apply programmed (the config's values that shape the datapath). */
export interface ProgrammedSettings {
  /** format version of this record */
  v: 1;
  kprVersion: string;
  /** the config file the apply read, or a note that built-in defaults were used */
  configFile: string;
  kubeProxyReplacement: boolean;
  devices: string[];
  socketLB: { enabled: boolean; hostNamespaceOnly: boolean };
  cgroupRoot: string;
  nodePort: { enabled: boolean; range: [number, number]; addresses: string[] };
  loadBalancer: Config["loadBalancer"];
  maglevTableSize: number;
  bpf: { lbMapMax: number; ctTcpMax?: number; ctAnyMax?: number; natMax?: number };
  nodeName: string;
  serviceProxyName: string;
}

/** The settings record of `cfg` (configFile names where it came from). */
export function settingsOf(cfg: Config, configFile: string): ProgrammedSettings {
  return {
    v: 1,
    kprVersion: VERSION,
    configFile,
    kubeProxyReplacement: cfg.kubeProxyReplacement,
    devices: [...cfg.devices],
    socketLB: { ...cfg.socketLB },
    cgroupRoot: cfg.cgroup.root,
    nodePort: {
      enabled: cfg.nodePort.enabled,
      range: cfg.nodePort.range,
      addresses: cfg.nodePort.addresses ?? [],
    },
    loadBalancer: { ...cfg.loadBalancer },
    maglevTableSize: cfg.maglev.tableSize,
    bpf: {
      lbMapMax: cfg.bpf.lbMapMax,
      ...(cfg.bpf.ctTcpMax !== undefined ? { ctTcpMax: cfg.bpf.ctTcpMax } : {}),
      ...(cfg.bpf.ctAnyMax !== undefined ? { ctAnyMax: cfg.bpf.ctAnyMax } : {}),
      ...(cfg.bpf.natMax !== undefined ? { natMax: cfg.bpf.natMax } : {}),
    },
    nodeName: cfg.nodeName,
    serviceProxyName: cfg.k8s.serviceProxyName,
  };
}

const path = (cfg: Config) => `${cfg.bpf.root}/maps/${SETTINGS_MAP}`;

/** Stores the settings in the pinned map (created and pinned on first use); writes only on change. */
export function recordSettings(cfg: Config, settings: ProgrammedSettings): void {
  const p = path(cfg);
  const bytes = new TextEncoder().encode(JSON.stringify(settings));
  if (bytes.length > VALUE_SIZE)
    throw new Error(`record settings: ${bytes.length} bytes exceed ${VALUE_SIZE}`);
  const value = new Uint8Array(VALUE_SIZE);
  value.set(bytes);
  let m: BpfMap;
  if (existsSync(p)) m = BpfMap.openPinned(p);
  else {
    m = BpfMap.create({
      type: MapType.ARRAY,
      name: SETTINGS_MAP,
      keySize: 4,
      valueSize: VALUE_SIZE,
      maxEntries: 1,
    });
    try {
      m.pin(p);
    } catch (e) {
      m.close();
      throw e;
    }
  }
  using _m = m;
  const key = u32Id.encode({ v: 0 });
  const cur = m.lookup(key);
  if (cur && cur.length === value.length && cur.every((b, i) => b === value[i])) return;
  m.update(key, value);
}

/** The settings the last apply recorded under cfg's bpf root; undefined when there are none. */
export function readSettings(cfg: Config): ProgrammedSettings | undefined {
  const p = path(cfg);
  if (!existsSync(p)) return undefined;
  using m = BpfMap.openPinned(p);
  const v = m.lookup(u32Id.encode({ v: 0 }));
  if (!v) return undefined;
  const end = v.indexOf(0);
  const text = new TextDecoder().decode(end < 0 ? v : v.subarray(0, end));
  if (text === "") return undefined;
  try {
    const s = JSON.parse(text) as ProgrammedSettings;
    return s.v === 1 ? s : undefined;
  } catch {
    return undefined;
  }
}

/** One setting where the config given now differs from what is programmed. */
export interface SettingDrift {
  key: string;
  configured: unknown;
  programmed: unknown;
}

/**
 * Whether programmed device names are what the configured patterns give: each named device is
 * there, each programmed one matches a pattern (Cilium's `eth+` is a prefix).
 */
function devicesMatch(patterns: string[], programmed: string[]): boolean {
  return (
    patterns.every((p) => p.endsWith("+") || programmed.includes(p)) &&
    programmed.every((n) => patterns.some((p) => deviceMatches(p, n)))
  );
}

/** The settings that differ between `cfg` and the programmed record (configFile, version left out). */
export function settingsDrift(cfg: Config, programmed: ProgrammedSettings): SettingDrift[] {
  const now = settingsOf(cfg, programmed.configFile) as unknown as Record<string, unknown>;
  const was = programmed as unknown as Record<string, unknown>;
  const out: SettingDrift[] = [];
  const walk = (a: unknown, b: unknown, key: string) => {
    const isObj = (x: unknown) => typeof x === "object" && x !== null && !Array.isArray(x);
    if (isObj(a) && isObj(b)) {
      const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
      for (const k of keys)
        walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${key}.${k}`);
    } else if (JSON.stringify(a) !== JSON.stringify(b)) out.push({ key, configured: a, programmed: b });
  };
  for (const k of Object.keys(now)) {
    if (k === "v" || k === "kprVersion" || k === "configFile") continue;
    // devices: [] means "detected": what was detected is not a difference; wildcards (eth+) are
    // matched against the devices they expanded to
    if (k === "devices" && (cfg.devices.length === 0 || devicesMatch(cfg.devices, programmed.devices)))
      continue;
    walk(now[k], was[k], k);
  }
  return out;
}
