/**
 * The cluster-state snapshot every source produces (manifest files today, the live API later): the
 * subset of Kubernetes objects kpr reads, with the API's field names and optionality. Values have
 * the API's JSON types (a source checks those); their meaning (IPs, ranges, required fields) is
 * checked by translate().
 */

/** Where an object came from, for error messages. */
export interface ObjectSource {
  file: string;
  /** 1-based line of the object's start, when known. */
  line?: number;
}

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface ServicePort {
  name?: string;
  protocol?: string;
  port?: number;
  targetPort?: number | string;
  nodePort?: number;
}

export interface LoadBalancerIngress {
  ip?: string;
  hostname?: string;
  /** "VIP" (default) or "Proxy" (the LB proxies: no frontend on the node). */
  ipMode?: string;
}

export interface Service {
  kind: "Service";
  metadata: ObjectMeta;
  spec?: {
    type?: string;
    clusterIP?: string;
    clusterIPs?: string[];
    ipFamilies?: string[];
    ports?: ServicePort[];
    externalIPs?: string[];
    externalName?: string;
    externalTrafficPolicy?: string;
    internalTrafficPolicy?: string;
    healthCheckNodePort?: number;
    sessionAffinity?: string;
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
    loadBalancerSourceRanges?: string[];
    publishNotReadyAddresses?: boolean;
    selector?: Record<string, string>;
  };
  status?: { loadBalancer?: { ingress?: LoadBalancerIngress[] } };
  source?: ObjectSource;
}

export interface EndpointConditions {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export interface Endpoint {
  addresses?: string[];
  conditions?: EndpointConditions;
  nodeName?: string;
  zone?: string;
  /** Topology hints the EndpointSlice controller derives from the Service's trafficDistribution. */
  hints?: { forZones?: { name?: string }[]; forNodes?: { name?: string }[] };
}

export interface EndpointPort {
  name?: string;
  protocol?: string;
  port?: number;
}

/** discovery.k8s.io/v1 EndpointSlice; its service is the label kubernetes.io/service-name. */
export interface EndpointSlice {
  kind: "EndpointSlice";
  metadata: ObjectMeta;
  addressType?: string;
  endpoints?: Endpoint[];
  ports?: EndpointPort[];
  source?: ObjectSource;
}

export interface EndpointAddress {
  ip?: string;
  nodeName?: string;
}

/** core/v1 Endpoints (legacy): used for a Service only when it has no EndpointSlice. */
export interface Endpoints {
  kind: "Endpoints";
  metadata: ObjectMeta;
  subsets?: {
    addresses?: EndpointAddress[];
    notReadyAddresses?: EndpointAddress[];
    ports?: EndpointPort[];
  }[];
  source?: ObjectSource;
}

export interface ContainerPort {
  name?: string;
  containerPort?: number;
  hostPort?: number;
  hostIP?: string;
  protocol?: string;
}

export interface Pod {
  kind: "Pod";
  metadata: ObjectMeta;
  spec?: {
    nodeName?: string;
    hostNetwork?: boolean;
    containers?: { name?: string; ports?: ContainerPort[] }[];
  };
  status?: { phase?: string; podIP?: string; podIPs?: { ip?: string }[] };
  source?: ObjectSource;
}

export interface Node {
  kind: "Node";
  metadata: ObjectMeta;
  status?: { addresses?: { type?: string; address?: string }[] };
  source?: ObjectSource;
}

/** Everything translate() reads. Order is irrelevant: translate sorts. */
export interface ClusterState {
  services: Service[];
  endpointSlices: EndpointSlice[];
  endpoints: Endpoints[];
  pods: Pod[];
  nodes: Node[];
}

/** An empty snapshot. */
export function emptyClusterState(): ClusterState {
  return { services: [], endpointSlices: [], endpoints: [], pods: [], nodes: [] };
}
