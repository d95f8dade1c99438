/**
 * kpr's configuration: the YAML config file with the key names of Cilium's Helm values, plus
 * built-in defaults. Every command takes `--config FILE` (default /etc/kpr/config.yaml; defaults
 * when that default file is absent).
 */

import { hostname } from "node:os";

export type LbMode = "snat" | "dsr" | "hybrid";
export type DsrDispatch = "opt" | "ipip";
export type Acceleration = "disabled" | "native" | "best-effort";
export type Algorithm = "random" | "maglev";

export interface Config {
  /** "true" | "false" (Cilium's values; booleans accepted). */
  kubeProxyReplacement: boolean;
  /** host:port of the /healthz server of `kpr run` ("" = off). */
  kubeProxyReplacementHealthzBindAddr: string;
  loadBalancer: {
    mode: LbMode;
    dsrDispatch: DsrDispatch;
    acceleration: Acceleration;
    algorithm: Algorithm;
  };
  /** tableSize: a prime of MAGLEV_TABLE_SIZES; hashSeed: 12 bytes base64, the same on every node. */
  maglev: { tableSize: number; hashSeed: string };
  /** `addresses`: CIDRs a node address must be in to serve NodePorts (empty: every address). */
  nodePort: { enabled: boolean; range: [number, number]; addresses?: string[] };
  /** Interfaces facing clients and other nodes; tc (and XDP) programs attach here. */
  devices: string[];
  socketLB: { enabled: boolean; hostNamespaceOnly: boolean };
  /** `autoMount.enabled`: mount cgroup2 at root when it is not mounted (Cilium's cgroup.autoMount). */
  cgroup: { root: string; autoMount?: { enabled: boolean } };
  /** Map sizes; ctTcpMax + ctAnyMax size the CT map and natMax the SNAT map when set (Cilium's names). */
  bpf: { root: string; lbMapMax: number; ctTcpMax?: number; ctAnyMax?: number; natMax?: number };
  /** This node's name (default: the hostname, lower-cased as kubelet and kube-proxy do). */
  nodeName: string;
  k8s: { serviceProxyName: string };
  /** host:port of the Prometheus /metrics server of `kpr run` ("" = off). */
  prometheus: { serveAddr: string };
}

export const DEFAULT_CONFIG_PATH = "/etc/kpr/config.yaml";

/** Built-in defaults (Cilium's where a Cilium default exists). */
export function defaultConfig(): Config {
  return {
    kubeProxyReplacement: true,
    kubeProxyReplacementHealthzBindAddr: "",
    loadBalancer: { mode: "snat", dsrDispatch: "opt", acceleration: "disabled", algorithm: "random" },
    maglev: { tableSize: 16381, hashSeed: "JLfvgnHc2kaSUFaI" },
    nodePort: { enabled: true, range: [30000, 32767], addresses: [] },
    devices: [],
    socketLB: { enabled: true, hostNamespaceOnly: false },
    cgroup: { root: "/run/kpr/cgroupv2", autoMount: { enabled: true } },
    bpf: { root: "/sys/fs/bpf/kpr", lbMapMax: 65536 },
    nodeName: process.env.KPR_NODE_NAME ?? hostname().toLowerCase(),
    k8s: { serviceProxyName: "" },
    prometheus: { serveAddr: "127.0.0.1:10249" },
  };
}
