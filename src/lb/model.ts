/**
 * The desired load-balancing model: what translate() produces from cluster state and what the
 * datapath reconciler programs into the kernel. Pure data, JSON-serialisable, deterministic for
 * the same input (sorted, stable ids).
 */

export type Protocol = "TCP" | "UDP" | "SCTP";

/** Frontend kinds, named as in `cilium service list`'s "Service Type" column. */
export type FrontendType = "ClusterIP" | "NodePort" | "ExternalIPs" | "LoadBalancer" | "HostPort";

/** active: Ready endpoint; terminating: Serving+Terminating, used only as fallback. */
export type BackendState = "active" | "terminating";

export interface L4Addr {
  /** IPv4 or IPv6 address in canonical text form ("10.0.0.1", "fd00::1"). */
  address: string;
  port: number;
  protocol: Protocol;
}

export interface Backend extends L4Addr {
  /** Stable backend id (1..2^32-1), shared by every frontend that uses the same address:port/protocol. */
  id: number;
  state: BackendState;
  /** Node the endpoint runs on (from EndpointSlice endpoints[].nodeName), when known. */
  nodeName?: string;
  /** True when nodeName is this node. */
  local: boolean;
  zone?: string;
}

/** Traffic policy scope of the frontend's backend set. */
export type Scope = "Cluster" | "Local";

export interface SourceRanges {
  /** CIDRs from loadBalancerSourceRanges. */
  cidrs: string[];
  /** allow (default): only these sources; deny: everything but these. */
  policy: "allow" | "deny";
  /**
   * True when the source address this node's routes pick for the frontend is in `cidrs` (set by
   * the agent after translation, from the kernel's route lookup): the socket hooks then treat a
   * node process's unbound socket as that source.
   */
  nodeSourceInList?: boolean;
}

/** One frontend (address:port/protocol) and the backends it balances to. */
export interface Frontend {
  /**
   * Stable frontend id (1..65535), shown as ID in `service list`. As in Cilium, it is also the
   * reverse-NAT index: every frontend has its own.
   */
  id: number;
  frontend: L4Addr;
  type: FrontendType;
  /** "namespace/name" of the Service. */
  service: string;
  /** Service port name ("" when unnamed). */
  portName: string;
  /** Backends in stable order (sorted by address, port). Active first is not implied: see state. */
  backends: Backend[];
  /** Traffic policy that selected the backends: eTP for external frontends, iTP for ClusterIP. */
  scope: Scope;
  /**
   * The backends of traffic from inside the cluster (this node's processes and pods, through the
   * socket hooks), when they differ in kind from `backends` (which then serve traffic arriving
   * from outside, through tc/XDP): set on the NodePort, ExternalIPs and LoadBalancer frontends of
   * an externalTrafficPolicy Local service, to the cluster-wide set. kube-proxy short-circuits
   * in-cluster traffic to such frontends to every endpoint (its UsesClusterEndpoints: "even if
   * the external traffic policy is Local, we need Cluster endpoints to implement short
   * circuiting"); Cilium calls this a two-scope service. Absent: one set serves both.
   */
  internalBackends?: Backend[];
  /** ClientIP session affinity timeout in seconds; absent when there is no affinity. */
  affinityTimeoutSeconds?: number;
  /** loadBalancerSourceRanges, for LoadBalancer frontends (and NodePort when Cilium would apply them). */
  sourceRanges?: SourceRanges;
  /** healthCheckNodePort of an eTP=Local LoadBalancer/NodePort service. */
  healthCheckNodePort?: number;
  /** True when the service has no usable endpoint at all: the datapath rejects (TCP RST). */
  reject?: boolean;
  /**
   * True when the scope is Local and the service's usable endpoints are all on other nodes: the
   * datapath drops (as kube-proxy does, so a load balancer's health check steers clients away)
   * rather than rejects. backends is empty.
   */
  dropNoLocal?: boolean;
}

/** Node facts the translation used. */
export interface NodeInfo {
  name: string;
  /** Addresses NodePorts are exposed on (from devices or the Node object). */
  addresses: string[];
  zone?: string;
  labels: Record<string, string>;
}

/** The whole desired state for this node. */
export interface LbModel {
  node: NodeInfo;
  /** Sorted by frontend id. */
  frontends: Frontend[];
  /** Input kpr accepts but the operator should hear about (special addresses), one line each. */
  warnings?: string[];
}

/** The JSON shape promised by DESIGN.md for `service list -o json` and `apply --dry-run -o json`. */
export interface ServiceEntryJson {
  id: number;
  frontend: L4Addr;
  type: FrontendType;
  service: string;
  backends: { address: string; port: number; protocol: Protocol; state: BackendState }[];
  /** Frontend.internalBackends, when set */
  internalBackends?: { address: string; port: number; protocol: Protocol; state: BackendState }[];
  [extra: string]: unknown;
}

/**
 * Ids already in use on the node (read back from the kernel maps), so a re-translation keeps them:
 * keys are "address:port/PROTO" for frontends ("[v6]:port/PROTO" for IPv6) and backends alike.
 */
export interface PreviousIds {
  frontends: Map<string, number>;
  backends: Map<string, number>;
}
