import type { Config } from "../config/config.ts";
import { InputError, type InputProblem } from "../errors.ts";
import type { ClusterState, EndpointPort, EndpointSlice, Pod, Service, ServicePort } from "../k8s/types.ts";
import { checkSpecialAddresses } from "./addresses.ts";
import { addrSortKey, type Family, ipSortKey, l4Key, parseCidrSloppy, parseIp, parseIpSloppy } from "./ip.ts";
import type {
  Backend,
  BackendState,
  Frontend,
  FrontendType,
  LbModel,
  NodeInfo,
  PreviousIds,
  Protocol,
  Scope,
  SourceRanges,
} from "./model.ts";
import { matchesSelector, parseSelector } from "./selector.ts";

export interface TranslateOptions {
  /** Addresses NodePorts are exposed on (read from the configured devices); default: the Node object's. */
  nodeAddresses?: string[];
  /** Ids in use on the node, kept for frontends and backends that still exist. */
  previous?: PreviousIds;
  /** called now and then with how many services are translated (for progress lines) */
  progress?: (done: number, total: number) => void;
}

/** Label and annotation names (Kubernetes and Cilium). */
export const LABEL_SERVICE_NAME = "kubernetes.io/service-name";
export const LABEL_HEADLESS = "service.kubernetes.io/headless";
export const LABEL_PROXY_NAME = "service.kubernetes.io/service-proxy-name";
export const LABEL_ZONE = "topology.kubernetes.io/zone";
export const ANN_TYPE = "service.cilium.io/type";
export const ANN_NODE = "service.cilium.io/node";
export const ANN_NODE_SELECTOR = "service.cilium.io/node-selector";
export const ANN_SRC_RANGES_POLICY = "service.cilium.io/src-ranges-policy";
export const ANN_LB_SOURCE_RANGES = "service.beta.kubernetes.io/load-balancer-source-ranges";
/** Node label that service.cilium.io/node names (Cilium's selective node exposure). */
export const NODE_LABEL_EXPOSE = "service.cilium.io/node";

export const DEFAULT_AFFINITY_TIMEOUT = 10800;
export const MAX_AFFINITY_TIMEOUT = 86400;
export const MAX_FRONTEND_ID = 65535;
export const MAX_BACKEND_ID = 0xffff_ffff;

const PROTOCOLS: readonly Protocol[] = ["TCP", "UDP", "SCTP"];
const SERVICE_TYPES = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
/** Order of frontend kinds inside one service, for id assignment and in-service dedup. */
const TYPE_ORDER: readonly FrontendType[] = [
  "ClusterIP",
  "ExternalIPs",
  "LoadBalancer",
  "NodePort",
  "HostPort",
];
const ANN_TYPE_VALUES: readonly FrontendType[] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalIPs"];
const IANA_SVC_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

/** One usable address of an endpoint, with its conditions, for one service port. */
interface Candidate {
  address: string;
  /** Sorts backends by address, port, protocol: ipSortKey(address), port as a char, protocol. */
  sort: string;
  /** l4Key of the backend this candidate becomes */
  key: string;
  family: Family;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName?: string;
  zone?: string;
  /** hints.forZones names; undefined when the endpoint has none. */
  hints?: string[];
  /** hints.forNodes names; undefined when the endpoint has none. */
  nodeHints?: string[];
}

/** A frontend before ids are assigned. */
interface Planned {
  key: string;
  frontend: { address: string; port: number; protocol: Protocol };
  type: FrontendType;
  service: string;
  portName: string;
  backends: Omit<Backend, "id">[];
  /** l4Key of each backend, and a key that sorts backends by address, port, protocol. */
  backendKeys: { key: string; sort: string }[];
  /** the in-cluster set of a two-scope frontend (Frontend.internalBackends), with its keys */
  internalBackends?: Omit<Backend, "id">[];
  internalBackendKeys?: { key: string; sort: string }[];
  scope: Scope;
  affinityTimeoutSeconds?: number;
  sourceRanges?: SourceRanges;
  healthCheckNodePort?: number;
  /** Local scope with no local backend while other nodes have some: drop, not reject. */
  dropNoLocal?: boolean;
  /** For conflict messages: "Service ns/name" or "Pod ns/name". */
  owner: string;
}

/** Where a problem is: file, line, object, field. */
type Where = Omit<InputProblem, "message">;

const cmpStr = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function rank(c: Candidate): number {
  return c.ready ? 2 : c.serving && c.terminating ? 1 : 0;
}

/**
 * Translates a cluster-state snapshot into this node's LB model. Pure and deterministic. Throws
 * InputError carrying every problem found (each naming file, object and field).
 */
export function translate(state: ClusterState, cfg: Config, opts: TranslateOptions = {}): LbModel {
  const problems: InputProblem[] = [];
  const node = nodeInfo(state, cfg, opts, problems);
  const ours = selectEndpointObjects(state, cfg);
  const special = checkSpecialAddresses(ours, node.addresses);
  problems.push(...special.problems);
  const planned = new Map<string, Planned>();

  const claim = (p: Planned, where: Where) => {
    const prev = planned.get(p.key);
    if (prev === undefined) {
      planned.set(p.key, p);
    } else if (prev.owner !== p.owner) {
      problems.push({
        ...where,
        message: `frontend ${p.key} (${p.type}) is also claimed by ${prev.owner} (${prev.type})`,
      });
    }
    // Same owner (e.g. an externalIP equal to the clusterIP): the first kind in TYPE_ORDER wins.
  };

  const slicesBySvc = new Map<string, EndpointSlice[]>();
  for (const s of ours.endpointSlices) {
    const svc = s.metadata.labels?.[LABEL_SERVICE_NAME];
    if (svc === undefined) continue;
    const k = `${s.metadata.namespace ?? "default"}/${svc}`;
    const list = slicesBySvc.get(k);
    if (list) list.push(s);
    else slicesBySvc.set(k, [s]);
  }
  const endpointsByName = new Map(
    ours.endpoints.map((e) => [`${e.metadata.namespace ?? "default"}/${e.metadata.name}`, e]),
  );

  // Names computed once (not in the comparator): sorting 10k services compares ~140k pairs.
  const services = state.services
    .map((svc) => ({ svc, name: svcName(svc) }))
    .sort((a, b) => cmpStr(a.name, b.name));
  let done = 0;
  for (const { svc, name } of services) {
    if ((++done & 511) === 0) opts.progress?.(done, services.length);
    const slices = [...(slicesBySvc.get(name) ?? [])].sort((a, b) =>
      cmpStr(a.metadata.name ?? "", b.metadata.name ?? ""),
    );
    for (const p of serviceFrontends(svc, slices, endpointsByName.get(name), cfg, node, problems)) {
      claim(p, { file: svc.source?.file, line: svc.source?.line, object: `Service ${name}` });
    }
  }

  if (cfg.nodePort.enabled) {
    const pods = [...state.pods].sort((a, b) => cmpStr(podName(a), podName(b)));
    for (const pod of pods) {
      for (const p of hostPortFrontends(pod, cfg, node, problems)) {
        claim(p, { file: pod.source?.file, line: pod.source?.line, object: `Pod ${podName(pod)}` });
      }
    }
  }

  const list = [...planned.values()];
  // One id slot per distinct backend; frontends sharing a backend array (e.g. every NodePort
  // address of a port) share the slot array too.
  const slots = new Map<string, IdSlot>();
  const slotArrays = new Map<object, IdSlot[]>();
  const slotsOf = (keys: { key: string; sort: string }[]) => {
    let arr = slotArrays.get(keys);
    if (!arr) {
      arr = keys.map((k) => {
        let r = slots.get(k.key);
        if (!r) {
          r = { key: k.key, sort: k.sort, id: 0 };
          slots.set(k.key, r);
        }
        return r;
      });
      slotArrays.set(keys, arr);
    }
    return arr;
  };
  const beSlots = list.map((p) => slotsOf(p.backendKeys));
  const intSlots = list.map((p) => (p.internalBackendKeys ? slotsOf(p.internalBackendKeys) : undefined));
  const limit = Math.min(cfg.bpf.lbMapMax, MAX_FRONTEND_ID);
  if (list.length > limit) {
    problems.push({
      field: "bpf.lbMapMax",
      message:
        limit < MAX_FRONTEND_ID
          ? `${list.length} frontends exceed the capacity of ${limit} (raise bpf.lbMapMax; at most ${MAX_FRONTEND_ID})`
          : `${list.length} frontends exceed the ${MAX_FRONTEND_ID} one node can hold (apply fewer services, ports or external addresses)`,
    });
  }
  if (slots.size > cfg.bpf.lbMapMax) {
    problems.push({
      field: "bpf.lbMapMax",
      message: `${slots.size} backends exceed bpf.lbMapMax (${cfg.bpf.lbMapMax})`,
    });
  }
  if (problems.length > 0) throw new InputError(problems);

  const bySort = (a: { sort: string }, b: { sort: string }) =>
    a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0;
  assignSlots([...slots.values()].sort(bySort), opts.previous?.backends, MAX_BACKEND_ID);
  const frontends = buildFrontends(list, beSlots, intSlots, opts.previous?.frontends);
  return special.warnings.length > 0 ? { node, frontends, warnings: special.warnings } : { node, frontends };
}

/**
 * Whether an EndpointSlice (or Endpoints object) is kpr's: kube-proxy's informer label selector
 * (`!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`, the one the API
 * source sends, see serviceLabelSelector in src/k8s/api.ts), or, with k8s.serviceProxyName, the
 * label equal to that name. The EndpointSlice controller copies a Service's labels to its slices.
 */
export function endpointObjectSelected(labels: Record<string, string> | undefined, cfg: Config): boolean {
  const l = labels ?? {};
  if (cfg.k8s.serviceProxyName !== "") return l[LABEL_PROXY_NAME] === cfg.k8s.serviceProxyName;
  return !Object.hasOwn(l, LABEL_PROXY_NAME) && !Object.hasOwn(l, LABEL_HEADLESS);
}

/** The snapshot with only the EndpointSlices and Endpoints that endpointObjectSelected keeps. */
function selectEndpointObjects(state: ClusterState, cfg: Config): ClusterState {
  const keep = (o: { metadata: { labels?: Record<string, string> } }) =>
    endpointObjectSelected(o.metadata.labels, cfg);
  if (state.endpointSlices.every(keep) && state.endpoints.every(keep)) return state;
  return {
    ...state,
    endpointSlices: state.endpointSlices.filter(keep),
    endpoints: state.endpoints.filter(keep),
  };
}

function svcName(s: { metadata: { namespace?: string; name?: string } }): string {
  return `${s.metadata.namespace ?? "default"}/${s.metadata.name ?? ""}`;
}
const podName = svcName;

/** A Node object's InternalIP and ExternalIP addresses (the ones NodePorts use), with their index. */
export function nodeAddressEntries(
  node: ClusterState["nodes"][number],
): { address: string; index: number }[] {
  const out: { address: string; index: number }[] = [];
  (node.status?.addresses ?? []).forEach((a, index) => {
    if ((a.type === "InternalIP" || a.type === "ExternalIP") && a.address !== undefined)
      out.push({ address: a.address, index });
  });
  return out;
}

function nodeInfo(
  state: ClusterState,
  cfg: Config,
  opts: TranslateOptions,
  problems: InputProblem[],
): NodeInfo {
  const obj = state.nodes.find((n) => n.metadata.name === cfg.nodeName);
  const labels = { ...(obj?.metadata.labels ?? {}) };
  const addresses: string[] = [];
  const add = (a: string, where: Where) => {
    const ip = parseIp(a);
    if (!ip) problems.push({ ...where, message: `invalid IP address "${a}"` });
    else if (!addresses.includes(ip.text)) addresses.push(ip.text);
  };
  if (opts.nodeAddresses !== undefined) {
    for (const a of opts.nodeAddresses) add(a, { file: "<devices>", field: "devices" });
  } else if (obj) {
    for (const { address, index } of nodeAddressEntries(obj))
      add(address, {
        file: obj.source?.file,
        line: obj.source?.line,
        object: `Node ${cfg.nodeName}`,
        field: `status.addresses[${index}].address`,
      });
  }
  const zone = labels[LABEL_ZONE];
  return { name: cfg.nodeName, addresses, ...(zone !== undefined ? { zone } : {}), labels };
}

/** Checks a port number; pushes a problem and returns undefined when absent (if required) or out of range. */
function checkPort(
  v: number | undefined,
  field: string,
  where: Where,
  problems: InputProblem[],
  required = true,
) {
  if (v === undefined) {
    if (required) problems.push({ ...where, field, message: "required" });
    return undefined;
  }
  if (!Number.isInteger(v) || v < 1 || v > 65535) {
    problems.push({ ...where, field, message: `port ${v} out of range 1-65535` });
    return undefined;
  }
  return v;
}

function checkProtocol(v: string | undefined, field: string, where: Where, problems: InputProblem[]) {
  const p = v ?? "TCP";
  if (!(PROTOCOLS as readonly string[]).includes(p)) {
    problems.push({ ...where, field, message: `unknown protocol "${p}" (expected TCP, UDP or SCTP)` });
    return undefined;
  }
  return p as Protocol;
}

function oneOf<T extends string>(
  v: string | undefined,
  allowed: readonly T[],
  dflt: T,
  field: string,
  where: Where,
  problems: InputProblem[],
): T {
  if (v === undefined || v === "") return dflt;
  if ((allowed as readonly string[]).includes(v)) return v as T;
  problems.push({ ...where, field, message: `got "${v}", expected one of ${allowed.join(", ")}` });
  return dflt;
}

/** Validated, defaulted service port. */
interface Port {
  name: string;
  protocol: Protocol;
  port: number;
  targetPort: number | string;
  nodePort?: number;
}

function servicePorts(
  svc: Service,
  type: string,
  cfg: Config,
  where: Where,
  problems: InputProblem[],
): Port[] {
  const raw: ServicePort[] = svc.spec?.ports ?? [];
  if (raw.length === 0)
    problems.push({ ...where, field: "spec.ports", message: "required: at least one port" });
  const out: Port[] = [];
  const names = new Set<string>();
  const seen = new Set<string>();
  /** nodePort/protocol → index of the first port using it (Kubernetes rejects a second one). */
  const nodePorts = new Map<string, number>();
  raw.forEach((sp, i) => {
    const f = `spec.ports[${i}]`;
    const before = problems.length;
    const protocol = checkProtocol(sp.protocol, `${f}.protocol`, where, problems);
    const port = checkPort(sp.port, `${f}.port`, where, problems);
    const name = sp.name ?? "";
    if (raw.length > 1 && name === "") {
      problems.push({
        ...where,
        field: `${f}.name`,
        message: "required when the service has more than one port",
      });
    } else if (names.has(name) && name !== "") {
      problems.push({ ...where, field: `${f}.name`, message: `duplicate port name "${name}"` });
    }
    names.add(name);
    if (port !== undefined && protocol !== undefined) {
      const k = `${port}/${protocol}`;
      if (seen.has(k)) problems.push({ ...where, field: f, message: `duplicate port ${k}` });
      seen.add(k);
    }
    let targetPort: number | string | undefined = sp.targetPort ?? port;
    // A quoted number ("8080") is taken as the number: a common slip that Kubernetes would reject.
    if (typeof targetPort === "string" && /^\d+$/.test(targetPort)) targetPort = Number(targetPort);
    if (typeof targetPort === "number") {
      targetPort = checkPort(targetPort, `${f}.targetPort`, where, problems);
    } else if (typeof targetPort === "string" && !IANA_SVC_NAME.test(targetPort)) {
      problems.push({
        ...where,
        field: `${f}.targetPort`,
        message: `"${targetPort}" is neither a port number nor a port name (lowercase, 1-15 chars, a letter)`,
      });
      targetPort = undefined;
    }
    let nodePort: number | undefined;
    if (type === "NodePort" || type === "LoadBalancer") {
      // Without an API server nobody allocates node ports: a NodePort service must name its own.
      nodePort = checkPort(sp.nodePort, `${f}.nodePort`, where, problems, type === "NodePort");
      const [lo, hi] = cfg.nodePort.range;
      if (nodePort !== undefined && (nodePort < lo || nodePort > hi)) {
        problems.push({
          ...where,
          field: `${f}.nodePort`,
          message: `${nodePort} is outside nodePort.range ${lo}-${hi}`,
        });
        nodePort = undefined;
      }
      if (nodePort !== undefined && protocol !== undefined) {
        const k = `${nodePort}/${protocol}`;
        const first = nodePorts.get(k);
        if (first !== undefined) {
          problems.push({
            ...where,
            field: `${f}.nodePort`,
            message: `duplicate nodePort ${k} (also spec.ports[${first}])`,
          });
        } else nodePorts.set(k, i);
      }
    }
    if (problems.length > before || protocol === undefined || port === undefined || targetPort === undefined)
      return;
    out.push({ name, protocol, port, targetPort, ...(nodePort !== undefined ? { nodePort } : {}) });
  });
  return out;
}

/**
 * Port of an EndpointSlice (or Endpoints subset) for a service port: by name and protocol, as
 * kube-proxy matches them (an absent name or protocol is "" / TCP, the API's defaults), else by
 * targetPort name. A matching port without a number gives no endpoints, as in kube-proxy's
 * endpointslicecache.go ("Ignoring invalid endpoint port"): the Service's targetPort is not used.
 */
function matchPort(ports: EndpointPort[] | undefined, sp: Port): number | undefined {
  const list = ports ?? [];
  const sameProto = (p: EndpointPort) => (p.protocol ?? "TCP") === sp.protocol;
  const byName = list.find((p) => (p.name ?? "") === sp.name && sameProto(p));
  if (byName) return byName.port;
  // Hand-written slices often name their port after the container port (the targetPort name).
  if (typeof sp.targetPort === "string") {
    const byTarget = list.find((p) => p.name === sp.targetPort && sameProto(p));
    if (byTarget?.port !== undefined) return byTarget.port;
  }
  return undefined;
}

/** Endpoint candidates of one service port, from its EndpointSlices (or its Endpoints when it has none). */
function candidates(
  sp: Port,
  slices: EndpointSlice[],
  legacy: ClusterState["endpoints"][number] | undefined,
  problems: InputProblem[],
  validated: Set<object>,
): Candidate[] {
  const byKey = new Map<string, Candidate>();
  const put = (c: Candidate) => {
    const prev = byKey.get(c.key);
    // The same address in two slices (possible during a slice handover): keep the better state.
    if (!prev || rank(c) > rank(prev)) byKey.set(c.key, c);
  };
  const report = (
    o: { source?: { file: string; line?: number } },
    object: string,
    p: Omit<InputProblem, "file">,
  ) => {
    if (!validated.has(o)) problems.push({ file: o.source?.file, line: o.source?.line, object, ...p });
  };
  const checkSlicePorts = (
    o: { source?: { file: string; line?: number } },
    object: string,
    ports: EndpointPort[] | undefined,
    base: string,
  ) => {
    (ports ?? []).forEach((p, i) => {
      if (p.port !== undefined && (p.port < 1 || p.port > 65535)) {
        report(o, object, { field: `${base}[${i}].port`, message: `port ${p.port} out of range 1-65535` });
      }
      if (p.protocol !== undefined && !(PROTOCOLS as readonly string[]).includes(p.protocol)) {
        report(o, object, { field: `${base}[${i}].protocol`, message: `unknown protocol "${p.protocol}"` });
      }
    });
  };

  if (slices.length > 0) {
    for (const s of slices) {
      const object = `EndpointSlice ${svcName(s)}`;
      const at = s.addressType ?? "";
      if (!["IPv4", "IPv6", "FQDN"].includes(at)) {
        report(s, object, { field: "addressType", message: `got "${at}", expected IPv4, IPv6 or FQDN` });
      }
      checkSlicePorts(s, object, s.ports, "ports");
      const port = matchPort(s.ports, sp);
      (s.endpoints ?? []).forEach((ep, j) => {
        const addr = ep.addresses?.[0];
        if (addr === undefined) {
          report(s, object, {
            field: `endpoints[${j}].addresses`,
            message: "required: at least one address",
          });
          return;
        }
        if (at === "FQDN") return;
        // Leading zeros are decimal, as kube-proxy reads them (addresses.ts warns).
        const ip = parseIpSloppy(addr);
        if (!ip) {
          report(s, object, {
            field: `endpoints[${j}].addresses[0]`,
            message: `invalid IP address "${addr}"`,
          });
          return;
        }
        if ((at === "IPv4" && ip.family !== 4) || (at === "IPv6" && ip.family !== 6)) {
          report(s, object, {
            field: `endpoints[${j}].addresses[0]`,
            message: `"${addr}" is not an ${at} address`,
          });
          return;
        }
        if (port === undefined || port < 1 || port > 65535) return;
        const cond = ep.conditions ?? {};
        // discovery/v1: ready and serving unset mean true, terminating unset means false (kube-proxy
        // reads them the same way, also for a terminating endpoint whose ready is unset).
        const terminating = cond.terminating ?? false;
        const ready = cond.ready ?? true;
        // As kube-proxy's endpointslicecache.go: a missing name is "" (Go's zero value).
        const zones = ep.hints?.forZones?.map((z) => z.name ?? "");
        const nodes = ep.hints?.forNodes?.map((n) => n.name ?? "");
        const c: Candidate = {
          address: ip.text,
          sort: `${ipSortKey(ip)}${String.fromCharCode(port)}${sp.protocol}`,
          key: l4Key({ address: ip.text, port, protocol: sp.protocol }),
          family: ip.family,
          port,
          ready,
          serving: cond.serving ?? true,
          terminating,
        };
        if (ep.nodeName !== undefined) c.nodeName = ep.nodeName;
        if (ep.zone !== undefined) c.zone = ep.zone;
        if (zones !== undefined && zones.length > 0) c.hints = zones;
        if (nodes !== undefined && nodes.length > 0) c.nodeHints = nodes;
        put(c);
      });
      validated.add(s);
    }
  } else if (legacy) {
    const object = `Endpoints ${svcName(legacy)}`;
    (legacy.subsets ?? []).forEach((sub, i) => {
      checkSlicePorts(legacy, object, sub.ports, `subsets[${i}].ports`);
      const port = matchPort(sub.ports, sp);
      const each = (list: typeof sub.addresses, ready: boolean, field: string) =>
        (list ?? []).forEach((a, j) => {
          const ip = a.ip === undefined ? undefined : parseIpSloppy(a.ip);
          if (!ip) {
            report(legacy, object, {
              field: `subsets[${i}].${field}[${j}].ip`,
              message: a.ip === undefined ? "required" : `invalid IP address "${a.ip}"`,
            });
            return;
          }
          if (port === undefined || port < 1 || port > 65535) return;
          put({
            address: ip.text,
            sort: `${ipSortKey(ip)}${String.fromCharCode(port)}${sp.protocol}`,
            key: l4Key({ address: ip.text, port, protocol: sp.protocol }),
            family: ip.family,
            port,
            ready,
            serving: ready,
            terminating: false,
            ...(a.nodeName !== undefined ? { nodeName: a.nodeName } : {}),
          });
        });
      each(sub.addresses, true, "addresses");
      each(sub.notReadyAddresses, false, "notReadyAddresses");
    });
    validated.add(legacy);
  }
  return [...byKey.values()];
}

/** The backends of one frontend, with their keys (see Planned). */
interface Selected {
  backends: Omit<Backend, "id">[];
  keys: { key: string; sort: string }[];
}

/** kube-proxy's topology modes (pkg/proxy/topology.go); "" is no topology. */
type TopologyMode = "" | "PreferSameNode" | "PreferSameZone";

/**
 * kube-proxy's topologyModeFromHints: PreferSameNode when every ready endpoint has a node hint and
 * one names this node; else PreferSameZone when every ready endpoint has a zone hint and one names
 * this node's zone; else none. The Service's trafficDistribution is not read here: the EndpointSlice
 * controller turns it into these hints.
 */
function topologyMode(pool: Candidate[], isReady: (c: Candidate) => boolean, node: NodeInfo): TopologyMode {
  // kube-proxy compares with "" when the node has no zone label (Go's zero value).
  const zone = node.zone ?? "";
  let hasReady = false;
  let forNode = false;
  let allNode = true;
  let forZone = false;
  let allZone = true;
  for (const c of pool) {
    if (!isReady(c)) continue;
    hasReady = true;
    if (c.nodeHints === undefined) allNode = false;
    else if (c.nodeHints.includes(node.name)) forNode = true;
    if (c.hints === undefined) allZone = false;
    else if (c.hints.includes(zone)) forZone = true;
  }
  if (!hasReady) return "";
  if (allNode && forNode) return "PreferSameNode";
  if (allZone && forZone) return "PreferSameZone";
  return "";
}

/** kube-proxy's availableForTopology: no fallback here (it is in the choice of the mode). */
function availableForTopology(c: Candidate, mode: TopologyMode, node: NodeInfo): boolean {
  if (mode === "PreferSameNode") return c.nodeHints?.includes(node.name) ?? false;
  if (mode === "PreferSameZone") return c.hints?.includes(node.zone ?? "") ?? false;
  return true;
}

/**
 * Picks the backends of one frontend as kube-proxy's CategorizeEndpoints does: for Cluster scope,
 * the Ready endpoints narrowed by topology (node hints before zone hints); for Local scope, this
 * node's Ready endpoints (no topology). When that leaves none, the Serving+Terminating ones of the
 * same scope (for Cluster scope without topology). With publishNotReadyAddresses every endpoint
 * counts as Ready, as the EndpointSlice controller publishes them.
 */
function selectBackends(
  all: Candidate[],
  family: Family,
  scope: Scope,
  publishNotReady: boolean,
  protocol: Protocol,
  node: NodeInfo,
): Selected {
  const pool = all.filter((c) => c.family === family && (scope === "Cluster" || c.nodeName === node.name));
  const isReady = (c: Candidate) => publishNotReady || c.ready;
  let state: BackendState = "active";
  let chosen: Candidate[];
  if (scope === "Cluster") {
    const mode = topologyMode(pool, isReady, node);
    chosen = pool.filter((c) => isReady(c) && availableForTopology(c, mode, node));
  } else chosen = pool.filter(isReady);
  // Serving+terminating endpoints: the set when nothing is ready (kube-proxy's fallback); while
  // ready ones exist they stay programmed as terminating slots, which new connections never pick
  // (the datapath selects among the active slots), so flows tracked to them keep their backend
  // until they close, as Cilium keeps terminating backends. kube-proxy gets the same from
  // conntrack, which keeps a DNATed flow whatever the rules say.
  const draining = new Set<Candidate>();
  if (chosen.length === 0) {
    chosen = pool.filter((c) => c.serving && c.terminating);
    state = "terminating";
  } else if (!publishNotReady) {
    const inChosen = new Set(chosen);
    for (const c of pool) if (c.serving && c.terminating && !inChosen.has(c)) draining.add(c);
    if (draining.size > 0) chosen = [...chosen, ...draining];
  }
  const sorted = [...chosen].sort((a, b) => (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0));
  const backends: Omit<Backend, "id">[] = [];
  const keys: { key: string; sort: string }[] = [];
  for (const c of sorted) {
    const b: Omit<Backend, "id"> = {
      address: c.address,
      port: c.port,
      protocol,
      state: draining.has(c) ? "terminating" : state,
      local: c.nodeName === node.name,
    };
    if (c.nodeName !== undefined) b.nodeName = c.nodeName;
    if (c.zone !== undefined) b.zone = c.zone;
    backends.push(b);
    keys.push({ key: c.key, sort: c.sort });
  }
  return { backends, keys };
}

function serviceFrontends(
  svc: Service,
  slices: EndpointSlice[],
  legacy: ClusterState["endpoints"][number] | undefined,
  cfg: Config,
  node: NodeInfo,
  problems: InputProblem[],
): Planned[] {
  const name = svcName(svc);
  const where: Where = {
    file: svc.source?.file,
    line: svc.source?.line,
    object: `Service ${name}`,
  };
  const spec = svc.spec ?? {};
  const labels = svc.metadata.labels ?? {};
  const ann = svc.metadata.annotations ?? {};

  const type = spec.type ?? "ClusterIP";
  if (!SERVICE_TYPES.includes(type)) {
    problems.push({
      ...where,
      field: "spec.type",
      message: `got "${type}", expected one of ${SERVICE_TYPES.join(", ")}`,
    });
    return [];
  }
  if (type === "ExternalName") return [];
  if (Object.hasOwn(labels, LABEL_HEADLESS)) return [];
  const proxyName = labels[LABEL_PROXY_NAME];
  // As kube-proxy and Cilium: without a configured name, only services without the label are ours.
  if (cfg.k8s.serviceProxyName === "" ? proxyName !== undefined : proxyName !== cfg.k8s.serviceProxyName)
    return [];

  const fromList = spec.clusterIPs !== undefined && spec.clusterIPs.length > 0;
  const clusterIPs = fromList ? spec.clusterIPs! : spec.clusterIP !== undefined ? [spec.clusterIP] : [];
  if (clusterIPs[0] === "None") return []; // headless
  if (clusterIPs.length === 0) {
    problems.push({
      ...where,
      field: "spec.clusterIP",
      message: 'required (kpr allocates no ClusterIPs: set an address, or "None" for a headless service)',
    });
  }
  if (fromList && spec.clusterIP !== undefined && spec.clusterIP !== clusterIPs[0]) {
    problems.push({ ...where, field: "spec.clusterIP", message: "must equal spec.clusterIPs[0]" });
  }
  const vips: { text: string; family: Family }[] = [];
  clusterIPs.forEach((a, i) => {
    const ip = parseIpSloppy(a);
    const field = fromList ? `spec.clusterIPs[${i}]` : "spec.clusterIP";
    if (!ip) problems.push({ ...where, field, message: `invalid IP address "${a}"` });
    else if (vips.some((v) => v.family === ip.family)) {
      problems.push({ ...where, field, message: "dual-stack needs one address per family" });
    } else vips.push({ text: ip.text, family: ip.family });
  });
  (spec.ipFamilies ?? []).forEach((f, i) => {
    if (f !== "IPv4" && f !== "IPv6") {
      problems.push({
        ...where,
        field: `spec.ipFamilies[${i}]`,
        message: `got "${f}", expected IPv4 or IPv6`,
      });
    }
  });
  const families: Family[] = vips.length > 0 ? [...new Set(vips.map((v) => v.family))].sort() : [4];

  const etp = oneOf(
    spec.externalTrafficPolicy,
    ["Cluster", "Local"],
    "Cluster",
    "spec.externalTrafficPolicy",
    where,
    problems,
  );
  const itp = oneOf(
    spec.internalTrafficPolicy,
    ["Cluster", "Local"],
    "Cluster",
    "spec.internalTrafficPolicy",
    where,
    problems,
  );
  const hcnp = checkPort(spec.healthCheckNodePort, "spec.healthCheckNodePort", where, problems, false);

  let affinity: number | undefined;
  const sa = oneOf(
    spec.sessionAffinity,
    ["None", "ClientIP"],
    "None",
    "spec.sessionAffinity",
    where,
    problems,
  );
  if (sa === "ClientIP") {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT;
    if (t < 1 || t > MAX_AFFINITY_TIMEOUT) {
      problems.push({
        ...where,
        field: "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        message: `${t} out of range 1-${MAX_AFFINITY_TIMEOUT}`,
      });
    } else affinity = t;
  }

  const externalIPs: string[] = [];
  (spec.externalIPs ?? []).forEach((a, i) => {
    const ip = parseIpSloppy(a);
    if (!ip)
      problems.push({ ...where, field: `spec.externalIPs[${i}]`, message: `invalid IP address "${a}"` });
    else externalIPs.push(ip.text);
  });

  const lbIPs: string[] = [];
  (svc.status?.loadBalancer?.ingress ?? []).forEach((ing, i) => {
    const f = `status.loadBalancer.ingress[${i}]`;
    const mode = oneOf(ing.ipMode, ["VIP", "Proxy"], "VIP", `${f}.ipMode`, where, problems);
    if (ing.ip === undefined) return; // hostname-only ingress: nothing to program
    const ip = parseIpSloppy(ing.ip);
    if (!ip) problems.push({ ...where, field: `${f}.ip`, message: `invalid IP address "${ing.ip}"` });
    // ipMode Proxy: the load balancer proxies and sends from its own address; the node needs no VIP.
    else if (mode === "VIP") lbIPs.push(ip.text);
  });

  let sourceRanges: SourceRanges | undefined;
  {
    const fromField = spec.loadBalancerSourceRanges ?? [];
    const raw =
      fromField.length > 0
        ? fromField.map((c, i) => ({ c, field: `spec.loadBalancerSourceRanges[${i}]` }))
        : (ann[ANN_LB_SOURCE_RANGES] ?? "")
            .split(",")
            .map((c) => c.trim())
            .filter((c) => c !== "")
            .map((c) => ({ c, field: `metadata.annotations[${ANN_LB_SOURCE_RANGES}]` }));
    const cidrs: string[] = [];
    for (const { c, field } of raw) {
      const p = parseCidrSloppy(c);
      if (!p) problems.push({ ...where, field, message: `invalid CIDR "${c}"` });
      else if (!cidrs.includes(p.text)) cidrs.push(p.text);
    }
    const policy = oneOf(
      ann[ANN_SRC_RANGES_POLICY],
      ["allow", "deny"],
      "allow",
      `metadata.annotations[${ANN_SRC_RANGES_POLICY}]`,
      where,
      problems,
    );
    if (cidrs.length > 0) sourceRanges = { cidrs, policy };
  }

  let allowedTypes: Set<FrontendType> | undefined;
  if (ann[ANN_TYPE] !== undefined) {
    allowedTypes = new Set();
    for (const t of ann[ANN_TYPE].split(",").map((s) => s.trim())) {
      if ((ANN_TYPE_VALUES as readonly string[]).includes(t)) allowedTypes.add(t as FrontendType);
      else {
        problems.push({
          ...where,
          field: `metadata.annotations[${ANN_TYPE}]`,
          message: `got "${t}", expected a comma list of ${ANN_TYPE_VALUES.join(", ")}`,
        });
      }
    }
  }

  // Cilium's selective node exposure: the service exists only on nodes that match.
  let exposed = true;
  if (ann[ANN_NODE] !== undefined) {
    const wanted = ann[ANN_NODE].split(",").map((s) => s.trim());
    const mine = node.labels[NODE_LABEL_EXPOSE];
    exposed &&= mine !== undefined && wanted.includes(mine);
  }
  if (ann[ANN_NODE_SELECTOR] !== undefined) {
    const sel = parseSelector(ann[ANN_NODE_SELECTOR]);
    if (typeof sel === "string") {
      problems.push({ ...where, field: `metadata.annotations[${ANN_NODE_SELECTOR}]`, message: sel });
    } else exposed &&= matchesSelector(sel, node.labels);
  }

  const ports = servicePorts(svc, type, cfg, where, problems);
  const validated = new Set<object>();
  const out: Planned[] = [];
  const allow = (t: FrontendType) => allowedTypes === undefined || allowedTypes.has(t);
  for (const sp of ports) {
    const cands = candidates(sp, slices, legacy, problems, validated);
    const memo = new Map<string, Selected>();
    const backendsFor = (family: Family, scope: Scope) => {
      const k = `${family}/${scope}`;
      let b = memo.get(k);
      if (!b) {
        b = selectBackends(cands, family, scope, spec.publishNotReadyAddresses === true, sp.protocol, node);
        memo.set(k, b);
      }
      return b;
    };
    const add = (address: string, port: number, t: FrontendType, scope: Scope) => {
      const family: Family = address.includes(":") ? 6 : 4;
      const external = t !== "ClusterIP";
      const dropNoLocal =
        scope === "Local" &&
        backendsFor(family, scope).backends.length === 0 &&
        backendsFor(family, "Cluster").backends.length > 0;
      // Two scopes (kube-proxy's short-circuit): traffic from inside the cluster to an external
      // frontend of an eTP=Local service goes to the cluster-wide endpoints, whatever iTP says.
      const internal = external && scope === "Local" ? backendsFor(family, "Cluster") : undefined;
      out.push({
        key: l4Key({ address, port, protocol: sp.protocol }),
        frontend: { address, port, protocol: sp.protocol },
        type: t,
        service: name,
        portName: sp.name,
        ...(({ backends, keys }) => ({ backends, backendKeys: keys }))(backendsFor(family, scope)),
        ...(internal ? { internalBackends: internal.backends, internalBackendKeys: internal.keys } : {}),
        scope,
        ...(affinity !== undefined ? { affinityTimeoutSeconds: affinity } : {}),
        // Source ranges guard LoadBalancer frontends only: Cilium's default (NodePort and ClusterIP
        // only with --bpf-lb-source-range-all-types) and kube-proxy's (its firewall chain is per LB IP).
        ...(sourceRanges !== undefined && t === "LoadBalancer" ? { sourceRanges } : {}),
        ...(external && etp === "Local" && hcnp !== undefined ? { healthCheckNodePort: hcnp } : {}),
        ...(dropNoLocal ? { dropNoLocal } : {}),
        owner: `Service ${name}`,
      });
    };
    if (allow("ClusterIP")) for (const v of vips) add(v.text, sp.port, "ClusterIP", itp);
    // As kube-proxy: external and LoadBalancer IPs of a family the service does not have are not
    // programmed (there would be no backends of that family, so the frontend could only reject).
    const ofFamily = (a: string) => families.includes(a.includes(":") ? 6 : 4);
    if (allow("ExternalIPs"))
      for (const a of externalIPs) if (ofFamily(a)) add(a, sp.port, "ExternalIPs", etp);
    if (type === "LoadBalancer" && allow("LoadBalancer"))
      for (const a of lbIPs) if (ofFamily(a)) add(a, sp.port, "LoadBalancer", etp);
    if (sp.nodePort !== undefined && cfg.nodePort.enabled && allow("NodePort")) {
      for (const a of nodePortAddresses(node, families)) add(a, sp.nodePort, "NodePort", etp);
    }
  }
  return exposed ? out : [];
}

/** NodePort addresses: the node's addresses of the service's families, the wildcard, and IPv4 loopback. */
function nodePortAddresses(node: NodeInfo, families: Family[]): string[] {
  const out: string[] = [];
  for (const f of families) {
    for (const a of node.addresses) if (a.includes(":") === (f === 6) && !out.includes(a)) out.push(a);
    // Loopback NodePorts exist for IPv4 only, as in kube-proxy (route_localnet) and Cilium.
    for (const a of f === 4 ? ["0.0.0.0", "127.0.0.1"] : ["::"]) if (!out.includes(a)) out.push(a);
  }
  return out;
}

function hostPortFrontends(pod: Pod, cfg: Config, node: NodeInfo, problems: InputProblem[]): Planned[] {
  if (pod.spec?.nodeName !== cfg.nodeName || pod.status?.phase !== "Running") return [];
  // hostNetwork pods listen on the node itself (the API defaults their hostPort to containerPort):
  // nothing to translate, as the CNI portmap plugin does not run for them.
  if (pod.spec.hostNetwork === true) return [];
  const name = podName(pod);
  const where: Where = {
    file: pod.source?.file,
    line: pod.source?.line,
    object: `Pod ${name}`,
  };
  const podIPs = new Map<Family, string>();
  const rawIPs = [pod.status.podIP, ...(pod.status.podIPs ?? []).map((p) => p.ip)];
  for (const a of rawIPs) {
    if (a === undefined) continue;
    const ip = parseIp(a);
    if (!ip) problems.push({ ...where, field: "status.podIP", message: `invalid IP address "${a}"` });
    else if (!podIPs.has(ip.family)) podIPs.set(ip.family, ip.text);
  }
  const out: Planned[] = [];
  (pod.spec.containers ?? []).forEach((c, i) => {
    (c.ports ?? []).forEach((cp, j) => {
      if (cp.hostPort === undefined || cp.hostPort === 0) return;
      const f = `spec.containers[${i}].ports[${j}]`;
      const before = problems.length;
      const protocol = checkProtocol(cp.protocol, `${f}.protocol`, where, problems);
      const hostPort = checkPort(cp.hostPort, `${f}.hostPort`, where, problems);
      const containerPort = checkPort(cp.containerPort, `${f}.containerPort`, where, problems);
      let hostIP: string | undefined;
      if (cp.hostIP !== undefined && cp.hostIP !== "") {
        const ip = parseIp(cp.hostIP);
        if (!ip)
          problems.push({ ...where, field: `${f}.hostIP`, message: `invalid IP address "${cp.hostIP}"` });
        else if (ip.text !== "0.0.0.0" && ip.text !== "::") hostIP = ip.text;
      }
      if (problems.length > before || !protocol || !hostPort || !containerPort) return;
      for (const [family, podIP] of [...podIPs].sort((a, b) => a[0] - b[0])) {
        const addrs = hostIP
          ? [hostIP].filter((a) => a.includes(":") === (family === 6))
          : [
              ...node.addresses.filter((a) => a.includes(":") === (family === 6)),
              family === 4 ? "0.0.0.0" : "::",
            ];
        for (const address of addrs) {
          out.push({
            key: l4Key({ address, port: hostPort, protocol }),
            frontend: { address, port: hostPort, protocol },
            type: "HostPort",
            service: name,
            portName: cp.name ?? "",
            backends: [
              {
                address: podIP,
                port: containerPort,
                protocol,
                state: "active",
                nodeName: cfg.nodeName,
                local: true,
                ...(node.zone !== undefined ? { zone: node.zone } : {}),
              },
            ],
            backendKeys: [
              {
                key: l4Key({ address: podIP, port: containerPort, protocol }),
                sort: `${addrSortKey(podIP)}${String.fromCharCode(containerPort)}${protocol}`,
              },
            ],
            scope: "Cluster",
            owner: `Pod ${name}`,
          });
        }
      }
    });
  });
  return out;
}

/** A key that gets an id; `sort` orders new ids. */
interface IdSlot {
  key: string;
  sort: string;
  id: number;
}

/** Sort key of a frontend for id assignment: service, kind, address, port, protocol ("\0" sorts a name before its extensions). */
function frontendSort(p: Planned): string {
  return `${p.service}\0${String.fromCharCode(TYPE_ORDER.indexOf(p.type))}${addrSortKey(p.frontend.address)}${String.fromCharCode(p.frontend.port)}${p.frontend.protocol}`;
}

/** Backends with their ids. */
function withIds(list: Omit<Backend, "id">[], ids: { id: number }[]): Backend[] {
  return list.map((b, j) => {
    const be: Backend = {
      id: ids[j]!.id,
      address: b.address,
      port: b.port,
      protocol: b.protocol,
      state: b.state,
      local: b.local,
    };
    if (b.nodeName !== undefined) be.nodeName = b.nodeName;
    if (b.zone !== undefined) be.zone = b.zone;
    return be;
  });
}

/** The model frontend of a planned one, with its id and its backends' ids (and internal ones'). */
function toFrontend(p: Planned, id: number, ids: { id: number }[], intIds?: { id: number }[]): Frontend {
  const f: Frontend = {
    id,
    frontend: p.frontend,
    type: p.type,
    service: p.service,
    portName: p.portName,
    backends: withIds(p.backends, ids),
    scope: p.scope,
  };
  if (p.internalBackends && intIds) f.internalBackends = withIds(p.internalBackends, intIds);
  if (p.affinityTimeoutSeconds !== undefined) f.affinityTimeoutSeconds = p.affinityTimeoutSeconds;
  if (p.sourceRanges !== undefined) f.sourceRanges = p.sourceRanges;
  if (p.healthCheckNodePort !== undefined) f.healthCheckNodePort = p.healthCheckNodePort;
  if (p.dropNoLocal) f.dropNoLocal = true;
  else if (p.backends.length === 0) f.reject = true;
  return f;
}

/** Builds the frontends with their ids, sorted by id; backend ids come from their (assigned) slots. */
function buildFrontends(
  list: Planned[],
  beSlots: IdSlot[][],
  intSlots: (IdSlot[] | undefined)[],
  previous: Map<string, number> | undefined,
): Frontend[] {
  // Sort keys: service, kind, address, port, protocol ("\0" sorts a name before its extensions).
  const fe = list.map((p, i) => ({ i, slot: { key: p.key, sort: frontendSort(p), id: 0 } }));
  fe.sort((a, b) => (a.slot.sort < b.slot.sort ? -1 : a.slot.sort > b.slot.sort ? 1 : 0));
  assignSlots(
    fe.map((x) => x.slot),
    previous,
    MAX_FRONTEND_ID,
  );
  const out = fe.map(({ i, slot }) => toFrontend(list[i]!, slot.id, beSlots[i]!, intSlots[i]));
  return out.sort((a, b) => a.id - b.id);
}

/**
 * Sets each slot's id (slots in sorted order): its previous id when it had one (each id once);
 * otherwise the lowest id not taken and not held by any previous entry.
 */
function assignSlots(slots: IdSlot[], previous: Map<string, number> | undefined, max: number): void {
  const used = new Set<number>();
  if (previous && previous.size > 0) {
    for (const s of slots) {
      const id = previous.get(s.key);
      if (id !== undefined && Number.isInteger(id) && id >= 1 && id <= max && !used.has(id)) {
        s.id = id;
        used.add(id);
      }
    }
    // Ids of entries that go away stay reserved in this round: the kernel may still hold connection
    // tracking entries naming them, which must not reverse-translate to a different frontend.
    for (const id of previous.values()) used.add(id);
  }
  // `next` only grows, so only previous ids need a lookup. When the reserved ids leave no free
  // id up to `max`, the reservation gives way: a departing entry's id is reused rather than an
  // id past what the kernel maps can hold (a frontend id is a 16-bit reverse-NAT index).
  const held = new Set<number>();
  for (const s of slots) if (s.id !== 0) held.add(s.id);
  let taken = used;
  let next = 1;
  for (const s of slots) {
    if (s.id !== 0) continue;
    while (taken.has(next)) next++;
    if (next > max && taken !== held) {
      taken = held;
      next = 1;
      while (taken.has(next)) next++;
    }
    s.id = next++;
    held.add(s.id);
  }
}

/** Group key of the hostPort frontends of this node's pods (no Service name contains a NUL). */
const POD_GROUP = "\0pods";

/** An id allocator: which ids are held, and the lowest that may be free. */
class IdPool {
  private held: Uint8Array;
  private low = 1;
  constructor(private readonly max: number) {
    this.held = new Uint8Array(Math.min(max, 1 << 16) + 1);
  }
  has(id: number): boolean {
    return id < this.held.length && this.held[id] === 1;
  }
  hold(id: number): void {
    if (id >= this.held.length) {
      let n = this.held.length;
      while (n <= id) n *= 2;
      const grown = new Uint8Array(Math.min(n, this.max + 1));
      grown.set(this.held);
      this.held = grown;
    }
    this.held[id] = 1;
  }
  release(id: number): void {
    if (id < this.held.length) this.held[id] = 0;
    if (id < this.low) this.low = id;
  }
  /** The lowest id not held (and holds it); undefined when every id up to max is held. */
  next(): number | undefined {
    let id = this.low;
    while (id < this.held.length && this.held[id] === 1) id++;
    if (id > this.max) return undefined;
    this.low = id + 1;
    this.hold(id);
    return id;
  }
}

/** Thrown by IncrementalTranslation when only a full translation can decide (ids exhausted). */
export class NeedFullTranslation extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "NeedFullTranslation";
  }
}

/** The objects of one service, as a source hands them out. */
export type ServiceObjects = Pick<ClusterState, "services" | "endpointSlices" | "endpoints">;

/** What one incremental update changed: the frontends it replaced and their successors. */
export interface TranslationDelta {
  removed: Frontend[];
  added: Frontend[];
}

/**
 * A translation kept up to date service by service (the daemon's model): seeded from a full
 * translate(), then `update()` retranslates only the services named by a change, with the same
 * rules, the same validation and the same id assignment as a full translation that is given the
 * current ids as `previous` (kept ids stay; new frontends and backends get, in sort order, the
 * lowest ids not in use, and ids of entries that go away are reused only from the next update on).
 * The node itself (addresses, labels) is not followed here: a Node change is a full translation.
 */
export class IncrementalTranslation {
  /** group (service "ns/name", or POD_GROUP) → its frontends */
  private groups = new Map<string, Frontend[]>();
  /** frontend key → owner ("Service ns/name" / "Pod ns/name") and kind, for conflicts */
  private owners = new Map<string, { group: string; owner: string; type: FrontendType }>();
  private feIds = new Map<string, number>();
  private beIds = new Map<string, { id: number; refs: number }>();
  private fePool = new IdPool(MAX_FRONTEND_ID);
  private bePool = new IdPool(MAX_BACKEND_ID);
  private byId: (Frontend | undefined)[] = [];
  private count = 0;

  private constructor(
    readonly node: NodeInfo,
    private readonly cfg: Config,
  ) {}

  /** Starts from a full translation's result (translate() with the same cfg). */
  static seed(model: LbModel, cfg: Config): IncrementalTranslation {
    const t = new IncrementalTranslation(model.node, cfg);
    for (const f of model.frontends) {
      const group = f.type === "HostPort" ? POD_GROUP : f.service;
      const list = t.groups.get(group);
      if (list) list.push(f);
      else t.groups.set(group, [f]);
      t.hold(f, group);
    }
    return t;
  }

  /** Frontends programmed for the model now. */
  get size(): number {
    return this.count;
  }

  private cached: LbModel | undefined;

  /** The current model (frontends sorted by id). */
  model(): LbModel {
    if (this.cached) return this.cached;
    const frontends: Frontend[] = [];
    const byId = this.byId;
    for (let i = 0; i < byId.length; i++) {
      const f = byId[i];
      if (f !== undefined) frontends.push(f);
    }
    this.cached = { node: this.node, frontends };
    return this.cached;
  }

  /** The frontends of one service ("ns/name") now. */
  frontendsOf(service: string): readonly Frontend[] {
    return this.groups.get(service) ?? [];
  }

  /** Services (not pods) with at least one frontend. */
  get serviceCount(): number {
    return this.groups.size - (this.groups.has(POD_GROUP) ? 1 : 0);
  }

  private hold(f: Frontend, group: string): void {
    const key = l4Key(f.frontend);
    this.owners.set(key, {
      group,
      owner: `${group === POD_GROUP ? "Pod" : "Service"} ${f.service}`,
      type: f.type,
    });
    this.feIds.set(key, f.id);
    this.fePool.hold(f.id);
    this.byId[f.id] = f;
    this.count++;
    for (const b of allBackends(f)) {
      const k = l4Key(b);
      const r = this.beIds.get(k);
      if (r) r.refs++;
      else {
        this.beIds.set(k, { id: b.id, refs: 1 });
        this.bePool.hold(b.id);
      }
    }
  }

  /**
   * Retranslates the services of `services` (key "ns/name" → its objects; no Service object: the
   * service is gone) and, when `pods` is given, this node's hostPort frontends. Throws InputError
   * with every problem of those services (nothing changes then) and NeedFullTranslation when ids
   * run out.
   */
  update(services: ReadonlyMap<string, ServiceObjects>, pods?: readonly Pod[]): TranslationDelta {
    const problems: InputProblem[] = [];
    const cfg = this.cfg;
    const next = new Map<string, Planned[]>();
    for (const [key, objs] of services) {
      const out: Planned[] = [];
      const svc = objs.services.find((s) => svcName(s) === key);
      if (svc) {
        const slices = objs.endpointSlices
          .filter(
            (s) =>
              s.metadata.labels?.[LABEL_SERVICE_NAME] !== undefined &&
              `${s.metadata.namespace ?? "default"}/${s.metadata.labels[LABEL_SERVICE_NAME]}` === key &&
              endpointObjectSelected(s.metadata.labels, cfg),
          )
          .sort((a, b) => cmpStr(a.metadata.name ?? "", b.metadata.name ?? ""));
        const legacy = objs.endpoints.find(
          (e) => svcName(e) === key && endpointObjectSelected(e.metadata.labels, cfg),
        );
        out.push(...serviceFrontends(svc, slices, legacy, cfg, this.node, problems));
      }
      next.set(key, out);
    }
    if (pods !== undefined) {
      const out: Planned[] = [];
      if (cfg.nodePort.enabled)
        for (const pod of [...pods].sort((a, b) => cmpStr(podName(a), podName(b))))
          out.push(...hostPortFrontends(pod, cfg, this.node, problems));
      next.set(POD_GROUP, out);
    }

    // claims: the first of a group wins over its own duplicates; another group's key conflicts
    const claimed = new Map<string, Planned>();
    let frontendCount = this.count;
    for (const [group, list] of next) {
      frontendCount -= this.groups.get(group)?.length ?? 0;
      const kept: Planned[] = [];
      for (const p of list) {
        const other = this.owners.get(p.key);
        const prev = claimed.get(p.key);
        if (prev !== undefined) {
          if (prev.owner !== p.owner)
            problems.push({
              ...plannedWhere(p),
              message: `frontend ${p.key} (${p.type}) is also claimed by ${prev.owner} (${prev.type})`,
            });
          continue;
        }
        if (other !== undefined && !next.has(other.group)) {
          problems.push({
            ...plannedWhere(p),
            message: `frontend ${p.key} (${p.type}) is also claimed by ${other.owner} (${other.type})`,
          });
          continue;
        }
        claimed.set(p.key, p);
        kept.push(p);
      }
      next.set(group, kept);
      frontendCount += kept.length;
    }
    const limit = Math.min(cfg.bpf.lbMapMax, MAX_FRONTEND_ID);
    if (frontendCount > limit)
      problems.push({
        field: "bpf.lbMapMax",
        message: `${frontendCount} frontends exceed the capacity of ${limit} (raise bpf.lbMapMax; at most ${MAX_FRONTEND_ID})`,
      });

    // backend references after the update
    const refDelta = new Map<string, { n: number; sort: string }>();
    for (const [group] of next)
      for (const f of this.groups.get(group) ?? [])
        for (const b of allBackends(f)) {
          const k = l4Key(b);
          const d = refDelta.get(k);
          if (d) d.n--;
          else refDelta.set(k, { n: -1, sort: "" });
        }
    for (const list of next.values())
      for (const p of list)
        for (const bk of allBackendKeys(p)) {
          const d = refDelta.get(bk.key);
          if (d) {
            d.n++;
            d.sort = bk.sort;
          } else refDelta.set(bk.key, { n: 1, sort: bk.sort });
        }
    let backendCount = this.beIds.size;
    const newBackends: { key: string; sort: string }[] = [];
    for (const [k, d] of refDelta) {
      const have = this.beIds.get(k);
      if (!have && d.n > 0) {
        backendCount++;
        newBackends.push({ key: k, sort: d.sort });
      } else if (have && have.refs + d.n === 0) backendCount--;
    }
    if (backendCount > cfg.bpf.lbMapMax)
      problems.push({
        field: "bpf.lbMapMax",
        message: `${backendCount} backends exceed bpf.lbMapMax (${cfg.bpf.lbMapMax})`,
      });
    if (problems.length > 0) throw new InputError(problems);

    // ids: kept ones stay, new ones in sort order from the lowest free (departing ids still held)
    const bySort = (a: { sort: string }, b: { sort: string }) =>
      a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0;
    const newBeIds = new Map<string, number>();
    newBackends.sort(bySort);
    for (const b of newBackends) {
      const id = this.bePool.next();
      if (id === undefined) throw new NeedFullTranslation("backend ids exhausted");
      newBeIds.set(b.key, id);
    }
    const newFe: { p: Planned; sort: string }[] = [];
    for (const list of next.values())
      for (const p of list) if (!this.feIds.has(p.key)) newFe.push({ p, sort: frontendSort(p) });
    newFe.sort(bySort);
    const newFeIds = new Map<string, number>();
    for (const { p } of newFe) {
      const id = this.fePool.next();
      if (id === undefined) throw new NeedFullTranslation("frontend ids exhausted");
      newFeIds.set(p.key, id);
    }

    this.cached = undefined;
    // swap the groups: every old frontend out first (a key may move between two of them)
    const removed: Frontend[] = [];
    const added: Frontend[] = [];
    const releasedFe: number[] = [];
    for (const group of next.keys()) {
      for (const f of this.groups.get(group) ?? []) {
        removed.push(f);
        const key = l4Key(f.frontend);
        this.owners.delete(key);
        this.byId[f.id] = undefined;
        this.count--;
        if (!claimed.has(key)) {
          this.feIds.delete(key);
          releasedFe.push(f.id);
        }
        for (const b of allBackends(f)) this.beIds.get(l4Key(b))!.refs--;
      }
    }
    for (const [group, list] of next) {
      const made: Frontend[] = [];
      for (const p of list) {
        const id = this.feIds.get(p.key) ?? newFeIds.get(p.key)!;
        const idOf = (bk: { key: string }) => {
          const have = this.beIds.get(bk.key);
          if (have) {
            have.refs++;
            return have;
          }
          const r = { id: newBeIds.get(bk.key)!, refs: 1 };
          this.beIds.set(bk.key, r);
          return r;
        };
        const ids = p.backendKeys.map(idOf);
        const f = toFrontend(p, id, ids, p.internalBackendKeys?.map(idOf));
        made.push(f);
        added.push(f);
        this.feIds.set(p.key, id);
        this.owners.set(p.key, { group, owner: p.owner, type: p.type });
        this.byId[id] = f;
        this.count++;
      }
      if (made.length > 0) this.groups.set(group, made);
      else this.groups.delete(group);
    }
    for (const id of releasedFe) this.fePool.release(id);
    for (const [k, d] of refDelta) {
      const have = this.beIds.get(k);
      if (d.n < 0 && have && have.refs === 0) {
        this.beIds.delete(k);
        this.bePool.release(have.id);
      }
    }
    return { removed, added };
  }
}

/** Every backend a frontend names: its backends, then its internal ones (a backend may be in both). */
function* allBackends(f: Frontend): Iterable<Backend> {
  yield* f.backends;
  if (f.internalBackends) yield* f.internalBackends;
}

function* allBackendKeys(p: Planned): Iterable<{ key: string; sort: string }> {
  yield* p.backendKeys;
  if (p.internalBackendKeys) yield* p.internalBackendKeys;
}

function plannedWhere(p: Planned): Where {
  return { object: p.owner };
}
