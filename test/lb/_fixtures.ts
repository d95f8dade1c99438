import { type Config, defaultConfig } from "../../src/config/config.ts";
import { InputError } from "../../src/errors.ts";
import type {
  ClusterState,
  Endpoint,
  EndpointPort,
  EndpointSlice,
  Node,
  Pod,
  Service,
} from "../../src/k8s/types.ts";
import { l4Key } from "../../src/lb/ip.ts";
import type { LbModel } from "../../src/lb/model.ts";
import { type TranslateOptions, translate } from "../../src/lb/translate.ts";

export const NODE = "node-1";

/** A config for node-1 with the defaults otherwise. */
export function cfg(mut?: (c: Config) => void): Config {
  const c = defaultConfig();
  c.nodeName = NODE;
  mut?.(c);
  return c;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> | T[K] : T[K] };

/** A Service default/NAME with one TCP port 80 → 8080 unless overridden. */
export function svc(
  name: string,
  spec: NonNullable<Service["spec"]> = {},
  extra: {
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    status?: Service["status"];
  } = {},
): Service {
  return {
    kind: "Service",
    metadata: {
      name,
      namespace: "default",
      labels: extra.labels ?? {},
      annotations: extra.annotations ?? {},
    },
    spec: { clusterIP: "10.96.0.1", ports: [{ port: 80, targetPort: 8080 }], ...spec },
    ...(extra.status ? { status: extra.status } : {}),
    source: { file: `${name}.yaml`, line: 1 },
  };
}

/** An endpoint on node-1 (ready) unless overridden. */
export function ep(address: string, more: DeepPartial<Endpoint> = {}): Endpoint {
  return { addresses: [address], conditions: { ready: true }, nodeName: NODE, ...(more as Endpoint) };
}

/** An EndpointSlice of service default/SVC. */
export function slice(
  service: string,
  name: string,
  ports: EndpointPort[],
  endpoints: Endpoint[],
  addressType = "IPv4",
): EndpointSlice {
  return {
    kind: "EndpointSlice",
    metadata: { name, namespace: "default", labels: { "kubernetes.io/service-name": service } },
    addressType,
    ports,
    endpoints,
    source: { file: `${name}.yaml`, line: 1 },
  };
}

export function node(name: string, addresses: string[], labels: Record<string, string> = {}): Node {
  return {
    kind: "Node",
    metadata: { name, labels },
    status: { addresses: addresses.map((address) => ({ type: "InternalIP", address })) },
    source: { file: "node.yaml", line: 1 },
  };
}

export function pod(
  name: string,
  podIP: string,
  ports: NonNullable<NonNullable<Pod["spec"]>["containers"]>[number]["ports"],
  opts: { nodeName?: string; phase?: string } = {},
): Pod {
  return {
    kind: "Pod",
    metadata: { name, namespace: "default" },
    spec: { nodeName: opts.nodeName ?? NODE, containers: [{ name: "c", ports }] },
    status: { phase: opts.phase ?? "Running", podIP },
    source: { file: `${name}.yaml`, line: 1 },
  };
}

export function state(parts: Partial<ClusterState>): ClusterState {
  return { services: [], endpointSlices: [], endpoints: [], pods: [], nodes: [], ...parts };
}

/**
 * One line per frontend: `TYPE key => backend(state),... [flags]`, then ` in-cluster => ...` for a
 * two-scope frontend's internal backends; sorted, ids left out.
 */
export function rows(m: LbModel): string[] {
  return m.frontends
    .map((f) => {
      const bs = f.backends.map((b) => `${l4Key(b)}${b.state === "terminating" ? "(t)" : ""}`).join(",");
      const flags = [
        f.scope === "Local" ? "local" : "",
        f.affinityTimeoutSeconds !== undefined ? `affinity=${f.affinityTimeoutSeconds}` : "",
        f.sourceRanges ? `src=${f.sourceRanges.policy}:${f.sourceRanges.cidrs.join(",")}` : "",
        f.healthCheckNodePort !== undefined ? `hc=${f.healthCheckNodePort}` : "",
        f.reject ? "reject" : "",
        f.dropNoLocal ? "drop" : "",
      ].filter((s) => s !== "");
      const internal = f.internalBackends
        ?.map((b) => `${l4Key(b)}${b.state === "terminating" ? "(t)" : ""}`)
        .join(",");
      return `${f.type} ${l4Key(f.frontend)} => ${bs}${flags.length ? ` [${flags.join(" ")}]` : ""}${internal !== undefined ? ` in-cluster => ${internal}` : ""}`;
    })
    .sort();
}

/** translate() then rows(). */
export function plan(s: ClusterState, c: Config = cfg(), opts?: TranslateOptions): string[] {
  return rows(translate(s, c, opts));
}

/** The formatted problems of the InputError translate() throws. */
export function problems(s: ClusterState, c: Config = cfg(), opts?: TranslateOptions): string[] {
  try {
    translate(s, c, opts);
  } catch (e) {
    if (e instanceof InputError) {
      return e.problems.map((p) =>
        [p.file, p.object, p.field, p.message].filter((x) => x !== undefined).join(" | "),
      );
    }
    throw e;
  }
  throw new Error("expected translate() to throw an InputError");
}
