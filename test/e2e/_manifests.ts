/**
 * Builders of the Kubernetes objects the end-to-end tests apply: Services with one EndpointSlice,
 * as `kubectl get -o yaml` shows them, and the Node object of node-1.
 */

export interface PortSpec {
  name: string;
  port: number;
  targetPort: number;
  protocol: "TCP" | "UDP";
  nodePort?: number;
}

export interface EndpointSpec {
  ip: string;
  nodeName: string;
  ready?: boolean;
}

export interface ServiceSpec {
  name: string;
  type: "ClusterIP" | "NodePort" | "LoadBalancer";
  clusterIP: string;
  ports: PortSpec[];
  externalIPs?: string[];
  /** ClientIP session affinity with this timeout (seconds). */
  affinitySeconds?: number;
  externalTrafficPolicy?: "Cluster" | "Local";
  internalTrafficPolicy?: "Cluster" | "Local";
  /** status.loadBalancer.ingress[].ip (type LoadBalancer). */
  loadBalancerIPs?: string[];
  endpoints: EndpointSpec[];
}

/** The Service and its EndpointSlice (port names shared; the slice's ports are the targetPorts). */
export function service(s: ServiceSpec): object[] {
  const svc = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: s.name, namespace: "default" },
    spec: {
      type: s.type,
      clusterIP: s.clusterIP,
      clusterIPs: [s.clusterIP],
      ipFamilies: ["IPv4"],
      selector: { app: s.name },
      ports: s.ports.map((p) => ({
        name: p.name,
        port: p.port,
        targetPort: p.targetPort,
        protocol: p.protocol,
        ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
      })),
      ...(s.externalIPs ? { externalIPs: s.externalIPs } : {}),
      ...(s.affinitySeconds !== undefined
        ? {
            sessionAffinity: "ClientIP",
            sessionAffinityConfig: { clientIP: { timeoutSeconds: s.affinitySeconds } },
          }
        : {}),
      ...(s.externalTrafficPolicy ? { externalTrafficPolicy: s.externalTrafficPolicy } : {}),
      ...(s.internalTrafficPolicy ? { internalTrafficPolicy: s.internalTrafficPolicy } : {}),
    },
    ...(s.loadBalancerIPs
      ? { status: { loadBalancer: { ingress: s.loadBalancerIPs.map((ip) => ({ ip })) } } }
      : {}),
  };
  const slice = {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `${s.name}-e2e`,
      namespace: "default",
      labels: { "kubernetes.io/service-name": s.name },
    },
    addressType: "IPv4",
    endpoints: s.endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false },
      nodeName: e.nodeName,
    })),
    ports: s.ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: p.protocol })),
  };
  return [svc, slice];
}

/** The Node object of a node with one InternalIP. */
export function node(name: string, internalIP: string): object {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name, labels: { "kubernetes.io/hostname": name } },
    status: { addresses: [{ type: "InternalIP", address: internalIP }] },
  };
}

export interface HostPortSpec {
  hostPort: number;
  containerPort: number;
  protocol: "TCP" | "UDP";
}

/** A Running Pod scheduled on nodeName with podIP whose one container exposes hostPorts. */
export function hostPortPod(name: string, nodeName: string, podIP: string, ports: HostPortSpec[]): object {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: "default", labels: { app: name } },
    spec: {
      nodeName,
      containers: [
        {
          name: "echo",
          ports: ports.map((p) => ({
            containerPort: p.containerPort,
            hostPort: p.hostPort,
            protocol: p.protocol,
          })),
        },
      ],
    },
    status: { phase: "Running", podIP, podIPs: [{ ip: podIP }] },
  };
}
