/**
 * Special addresses as service addresses and endpoints. An external IP or endpoint of 0.0.0.0,
 * loopback or link-local would hijack the node's own listeners: the Kubernetes API rejects
 * those (ValidateNonSpecialIP, ValidateEndpointIP), and so does kpr. A ClusterIP is allocated
 * from the service range, which never holds such addresses. Where the API and kube-proxy go
 * along (an external IP equal to a node address, CVE-2020-8554; multicast or broadcast; an
 * address that is also a pod's), kpr warns, naming the object and field. An address or CIDR with
 * leading zeros ("172.30.0.041", stored before the API refused them) is read as decimal, as
 * kube-proxy's legacy parser (netutils.ParseIPSloppy / ParseCIDRSloppy) reads it, with a warning.
 */
import type { InputProblem } from "../errors.ts";
import type { ClusterState } from "../k8s/types.ts";
import { parseCidrSloppy, parseIpSloppy } from "./ip.ts";

/** The annotation older clusters used for loadBalancerSourceRanges (kpr reads it when the field is empty). */
const ANN_LB_SOURCE_RANGES = "service.beta.kubernetes.io/load-balancer-source-ranges";

/** The special range an address is in, or undefined for an ordinary unicast address. */
export function specialRange(address: string): string | undefined {
  const ip = parseIpSloppy(address);
  if (!ip) return undefined;
  const b = ip.bytes;
  if (ip.family === 4) {
    if (b.every((x) => x === 0)) return "unspecified (0.0.0.0)";
    if (b[0] === 127) return "loopback (127.0.0.0/8)";
    if (b[0] === 169 && b[1] === 254) return "link-local (169.254.0.0/16)";
    if (b[0] === 224 && b[1] === 0 && b[2] === 0) return "link-local multicast (224.0.0.0/24)";
    if (b[0]! >= 224 && b[0]! <= 239) return "multicast (224.0.0.0/4)";
    if (b.every((x) => x === 255)) return "broadcast (255.255.255.255)";
    return undefined;
  }
  if (b.every((x) => x === 0)) return "unspecified (::)";
  if (b.slice(0, 15).every((x) => x === 0) && b[15] === 1) return "loopback (::1)";
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return "link-local (fe80::/10)";
  if (b[0] === 0xff && (b[1]! & 0x0f) === 0x02) return "link-local multicast (ff02::/16)";
  if (b[0] === 0xff) return "multicast (ff00::/8)";
  return undefined;
}

/** Ranges the Kubernetes API refuses for external IPs and endpoints. */
const API_REJECTS = /^(unspecified|loopback|link-local) /;

/** Problems (rejected addresses) and warnings (accepted but suspicious ones) of a snapshot. */
export interface AddressFindings {
  problems: InputProblem[];
  warnings: string[];
}

/**
 * Checks every ClusterIP, external IP, LoadBalancer ingress IP and endpoint address of `state`
 * against the special ranges, this node's addresses and the pods' addresses.
 */
/** How a kind of service address is checked (checkSpecialAddresses). */
interface AddressRule {
  /** whether a special range is an error (else a warning) */
  rejects: (range: string) => boolean;
  rejected: string;
  node: (address: string) => string;
  pods: boolean;
}
const TAKES_OVER_NODE = (c: string) =>
  `${c} is this node's address: the service takes over the node's own ${c} on its ports`;
const CLUSTER_IP: AddressRule = {
  rejects: () => true,
  rejected: "not an address the Kubernetes API allocates to a service",
  node: TAKES_OVER_NODE,
  pods: true,
};
const EXTERNAL_IP: AddressRule = {
  rejects: (r) => API_REJECTS.test(r),
  rejected: "the Kubernetes API rejects it",
  node: (c) =>
    `${c} is this node's address: connections to ${c} on the service's ports go to the service, not the node (CVE-2020-8554)`,
  pods: true,
};
const LB_INGRESS: AddressRule = {
  rejects: (r) => API_REJECTS.test(r),
  rejected: "not a load balancer address",
  node: TAKES_OVER_NODE,
  pods: false,
};

export function checkSpecialAddresses(
  state: ClusterState,
  nodeAddresses: readonly string[],
): AddressFindings {
  const problems: InputProblem[] = [];
  const warnings: string[] = [];
  const canon = (a: string) => parseIpSloppy(a)?.text;
  const node = new Set(nodeAddresses.map(canon).filter((a) => a !== undefined));
  const pods = new Map<string, string>();
  for (const p of state.pods) {
    if (p.spec?.hostNetwork) continue;
    for (const a of [p.status?.podIP, ...(p.status?.podIPs ?? []).map((x) => x.ip)]) {
      const c = a !== undefined ? canon(a) : undefined;
      if (c !== undefined) pods.set(c, `${p.metadata.namespace ?? "default"}/${p.metadata.name}`);
    }
  }
  type Src = { source?: { file?: string; line?: number } };
  const at = (o: Src, object: string, field: string) => ({
    file: o.source?.file,
    line: o.source?.line,
    object,
    field,
  });
  const warn = (o: Src, object: string, field: string, msg: string) => {
    const where = o.source?.file ? `${o.source.file}${o.source.line ? `:${o.source.line}` : ""}: ` : "";
    warnings.push(`${where}${object}: ${field}: ${msg}`);
  };
  /** Warns when `raw` parses only with the legacy parser (leading zeros). */
  const sloppy = (o: Src, object: string, field: string, raw: string | undefined, cidr = false) => {
    if (raw === undefined) return;
    const p = cidr ? parseCidrSloppy(raw) : parseIpSloppy(raw);
    if (p?.sloppy)
      warn(
        o,
        object,
        field,
        `"${raw}" has leading zeros: read as decimal ${p.text}, as kube-proxy's legacy parser reads it`,
      );
  };

  /** One service address against its kind's rule: leading zeros, special ranges, node, pods. */
  const check = (svc: Src, object: string, field: string, raw: string | undefined, rule: AddressRule) => {
    sloppy(svc, object, field, raw);
    const c = raw !== undefined ? canon(raw) : undefined;
    if (c === undefined) return;
    const r = specialRange(c);
    if (r && rule.rejects(r))
      problems.push({ ...at(svc, object, field), message: `${c} is ${r}: ${rule.rejected}` });
    else if (r) warn(svc, object, field, `${c} is ${r}: programmed as given`);
    else if (node.has(c)) warn(svc, object, field, rule.node(c));
    else if (rule.pods && pods.has(c))
      warn(svc, object, field, `${c} is also the address of Pod ${pods.get(c)}`);
  };

  for (const svc of state.services) {
    const object = `Service ${svc.metadata.namespace ?? "default"}/${svc.metadata.name}`;
    const spec = svc.spec ?? {};
    const cips = spec.clusterIPs?.length
      ? spec.clusterIPs
      : spec.clusterIP !== undefined
        ? [spec.clusterIP]
        : [];
    const listed = spec.clusterIPs?.length;
    for (const [i, a] of cips.entries())
      check(svc, object, listed ? `spec.clusterIPs[${i}]` : "spec.clusterIP", a, CLUSTER_IP);
    for (const [i, a] of (spec.externalIPs ?? []).entries())
      check(svc, object, `spec.externalIPs[${i}]`, a, EXTERNAL_IP);
    for (const [i, ing] of (svc.status?.loadBalancer?.ingress ?? []).entries())
      check(svc, object, `status.loadBalancer.ingress[${i}].ip`, ing.ip, LB_INGRESS);
    (spec.loadBalancerSourceRanges ?? []).forEach((c, i) => {
      sloppy(svc, object, `spec.loadBalancerSourceRanges[${i}]`, c, true);
    });
    const ann = svc.metadata.annotations?.[ANN_LB_SOURCE_RANGES];
    if (!spec.loadBalancerSourceRanges?.length && ann !== undefined)
      for (const c of ann.split(",").map((x) => x.trim()))
        if (c !== "") sloppy(svc, object, `metadata.annotations[${ANN_LB_SOURCE_RANGES}]`, c, true);
  }

  const checkEndpoint = (o: Src, object: string, field: string, a: string) => {
    sloppy(o, object, field, a);
    const c = canon(a);
    if (c === undefined) return;
    const r = specialRange(c);
    if (r && API_REJECTS.test(r))
      problems.push({
        ...at(o, object, field),
        message: `${c} is ${r}: the Kubernetes API rejects it as an endpoint`,
      });
    else if (r) warn(o, object, field, `${c} is ${r}: programmed as given`);
  };
  for (const s of state.endpointSlices) {
    const object = `EndpointSlice ${s.metadata.namespace ?? "default"}/${s.metadata.name}`;
    (s.endpoints ?? []).forEach((e, i) => {
      (e.addresses ?? []).forEach((a, j) => {
        checkEndpoint(s, object, `endpoints[${i}].addresses[${j}]`, a);
      });
    });
  }
  for (const ep of state.endpoints) {
    const object = `Endpoints ${ep.metadata.namespace ?? "default"}/${ep.metadata.name}`;
    (ep.subsets ?? []).forEach((sub, i) => {
      for (const list of ["addresses", "notReadyAddresses"] as const)
        (sub[list] ?? []).forEach((a, j) => {
          if (a.ip !== undefined) checkEndpoint(ep, object, `subsets[${i}].${list}[${j}].ip`, a.ip);
        });
    });
  }
  return { problems, warnings };
}
