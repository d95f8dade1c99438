import type { ClusterState } from "./types.ts";

/**
 * What changed since the last takeChanges(): "ns/name" keys of Services whose Service object or
 * EndpointSlices/Endpoints changed; `pods`: a Pod of this node changed (hostPort); `all`: resync
 * or Node object change — retranslate everything.
 */
export interface SourceChanges {
  all: boolean;
  services: Set<string>;
  pods: boolean;
}

/** A follower of cluster state (the live API or a manifest directory) that the agent polls. */
export interface ClusterSource {
  /** for logs and `kpr status`: e.g. "api https://10.0.0.1:6443 (kubeconfig /etc/rancher/k3s/k3s.yaml)" or "manifest /etc/kpr/manifests" */
  readonly description: string;
  /** starts following; `onChange` is called (synchronously, cheaply) whenever takeChanges() may be non-empty or `synced`/`lastError` changed. Coalescing is the caller's. */
  start(onChange: () => void): Promise<void>;
  /** true once every informer completed its initial list (and, after a 410/relist, again when the relist completed). The agent removes nothing before the first true. */
  readonly synced: boolean;
  /** last error (API unreachable, manifest invalid with file:line problems, …); undefined when healthy */
  readonly lastError: string | undefined;
  /** the whole current snapshot (objects carry `kind`), built on demand */
  snapshot(): ClusterState;
  /** the objects of one service, for incremental translation */
  serviceObjects(key: string): Pick<ClusterState, "services" | "endpointSlices" | "endpoints">;
  /** changes since the previous call (and resets them) */
  takeChanges(): SourceChanges;
  stop(): Promise<void>;
}

/** An empty change set. */
export function noChanges(): SourceChanges {
  return { all: false, services: new Set(), pods: false };
}
