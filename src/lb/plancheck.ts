/**
 * What a plan leaves out, and why, so a dry run shows it before an apply does: Services translate
 * ignores (ExternalName, headless, another proxy's service-proxy-name) and frontends the datapath
 * cannot program (IPv6). Pure: no I/O.
 */
import type { Config } from "../config/config.ts";
import type { ClusterState } from "../k8s/types.ts";
import { LABEL_HEADLESS, LABEL_PROXY_NAME } from "./translate.ts";

/** A Service or frontend left out of the plan. */
export interface Skipped {
  /** "Service ns/name" or a frontend "addr:port/PROTO" */
  what: string;
  reason: string;
}

/** The Services of `state` that translate leaves out under `cfg`, with the reason for each. */
export function skippedServices(state: ClusterState, cfg: Config): Skipped[] {
  const out: Skipped[] = [];
  for (const s of state.services) {
    const what = `Service ${s.metadata?.namespace ?? "default"}/${s.metadata?.name ?? "?"}`;
    const labels = (s.metadata?.labels ?? {}) as Record<string, string>;
    const spec = s.spec ?? {};
    const proxyName = labels[LABEL_PROXY_NAME];
    const ips = spec.clusterIPs?.length
      ? spec.clusterIPs
      : spec.clusterIP !== undefined
        ? [spec.clusterIP]
        : [];
    if (spec.type === "ExternalName")
      out.push({ what, reason: "type ExternalName (DNS only, nothing to program)" });
    else if (Object.hasOwn(labels, LABEL_HEADLESS))
      out.push({ what, reason: `headless (label ${LABEL_HEADLESS})` });
    else if (cfg.k8s.serviceProxyName === "" && proxyName !== undefined)
      out.push({
        what,
        reason: `label ${LABEL_PROXY_NAME}=${proxyName}: served by another proxy (k8s.serviceProxyName is unset)`,
      });
    else if (cfg.k8s.serviceProxyName !== "" && proxyName !== cfg.k8s.serviceProxyName)
      out.push({
        what,
        reason: `${LABEL_PROXY_NAME} is ${proxyName === undefined ? "unset" : `"${proxyName}"`}, not k8s.serviceProxyName "${cfg.k8s.serviceProxyName}"`,
      });
    else if (ips[0] === "None") out.push({ what, reason: "headless (clusterIP: None)" });
  }
  return out;
}

/** The skipped list as a dry run prints it under the plan. */
export function formatSkipped(skipped: Skipped[]): string {
  if (skipped.length === 0) return "";
  return `\nSkipped (${skipped.length}):\n${skipped.map((s) => `  ${s.what}: ${s.reason}`).join("\n")}\n`;
}

/** What `kpr apply -o json|yaml` prints: the outcome as data. */
export interface ApplyResultJson {
  changed: boolean;
  summary: string;
  writes: number;
  planned: "digests" | "full";
  datapathChanges: string[];
  skipped: Skipped[];
  ms: number;
}

/** The apply result (reconcile's ApplyResult) as data, with the skipped Services and frontends. */
export function applyResultJson(
  r: {
    changed: boolean;
    summary: string;
    writes: number;
    planned: "digests" | "full";
    datapathChanges: string[];
    skipped: { frontend: string; reason: string }[];
    ms: number;
  },
  skippedServices: Skipped[],
): ApplyResultJson {
  return {
    changed: r.changed,
    summary: r.summary,
    writes: r.writes,
    planned: r.planned,
    datapathChanges: r.datapathChanges,
    skipped: [...skippedServices, ...r.skipped.map((s) => ({ what: s.frontend, reason: s.reason }))],
    ms: Math.round(r.ms),
  };
}
