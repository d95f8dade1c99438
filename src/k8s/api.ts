/**
 * The live Kubernetes API as a ClusterSource: list+watch informers (@kubernetes/client-node's
 * ListWatch) on Services and EndpointSlices with kube-proxy's server-side label selector, on the
 * Pods of this node and on this node's Node object. Objects are converted to kpr's shapes as
 * they arrive, so the informers' caches hold only what translate() reads. A failed list or watch
 * is retried with capped, jittered exponential backoff; a `410 Gone` relists (deleting what
 * vanished); while the API is away the last snapshot stays and `lastError` says why.
 */

import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import {
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  type KubeConfig,
  ListWatch,
  RequestContext,
  Watch,
} from "@kubernetes/client-node";
import type { ConsolaInstance } from "consola";
import { log as rootLog } from "../log.ts";
import { type KubeconfigChoice, type KubeconfigInputs, resolveKubeconfig } from "./kubeconfig.ts";
import type { ClusterSource, SourceChanges } from "./source.ts";
import type {
  ClusterState,
  Endpoint,
  EndpointSlice,
  Node,
  ObjectMeta,
  Pod,
  Service,
  ServicePort,
} from "./types.ts";

/** kube-proxy's label that hands a Service to another proxy. */
export const LABEL_SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name";
/** The label the EndpointSlice controller puts on a headless Service's slices. */
export const LABEL_HEADLESS = "service.kubernetes.io/headless";
/** The label naming an EndpointSlice's Service. */
export const LABEL_SERVICE_NAME = "kubernetes.io/service-name";

/** kube-proxy's server-side selector for Services and EndpointSlices. */
export function serviceLabelSelector(serviceProxyName?: string): string {
  return serviceProxyName
    ? `${LABEL_SERVICE_PROXY_NAME}=${serviceProxyName}`
    : `!${LABEL_SERVICE_PROXY_NAME},!${LABEL_HEADLESS}`;
}

/** Options of ApiSource. */
export interface ApiSourceOptions {
  /** the `--kubeconfig` flag */
  kubeconfig?: string;
  /** this node's name: selects its Pods (hostPort) and its Node object */
  nodeName: string;
  /** `k8s.serviceProxyName`: follow only Services labelled with it */
  serviceProxyName?: string;
  log?: ConsolaInstance;
  /** overrides of the kubeconfig search (tests) */
  kubeconfigInputs?: Omit<KubeconfigInputs, "flag">;
  /** first retry delay after a failure (default 250 ms); doubles per failure up to maxBackoffMs */
  initialBackoffMs?: number;
  /** retry delay cap (default 3000 ms): after the API returns, state converges within about this */
  maxBackoffMs?: number;
  /** page size of lists (default 500, as client-go's pager) */
  pageSize?: number;
  /** server-side watch timeout range in seconds (default [300, 600], as client-go's reflector) */
  watchTimeoutSeconds?: [number, number];
  /** a list page or a watch's response that takes longer fails (default 60000 ms): a silent
   *  network path must not hang the source */
  requestTimeoutMs?: number;
  /** a watch still open this long after its timeoutSeconds is taken for dead and reopened
   *  (default 30000 ms) */
  watchGraceMs?: number;
}

/** Metadata kept for a cached object: what translate reads plus the resourceVersion informers track. */
type Meta = ObjectMeta & { resourceVersion?: string };
type Cached = { metadata: Meta; kind: string };

// biome-ignore lint/suspicious/noExplicitAny: raw JSON or client-node models, read field by field
type Raw = any;

const DROPPED_ANNOTATIONS = new Set(["kubectl.kubernetes.io/last-applied-configuration"]);

function pick<T>(o: Raw, keys: readonly string[]): T {
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    const v = o?.[k];
    if (v !== undefined && v !== null) out[k] = v;
  }
  return out as T;
}

function meta(m: Raw): Meta {
  const out: Meta = pick(m, ["name", "namespace", "resourceVersion"]);
  if (m?.labels) out.labels = { ...m.labels };
  if (m?.annotations) {
    const a: Record<string, string> = {};
    for (const [k, v] of Object.entries(m.annotations as Record<string, string>))
      if (!DROPPED_ANNOTATIONS.has(k)) a[k] = v;
    out.annotations = a;
  }
  return out;
}

/** A Service from the API (raw JSON or a client-node model) in kpr's shape. */
export function toService(o: Raw): Service {
  const s = o.spec;
  const svc: Service = { kind: "Service", metadata: meta(o.metadata) };
  if (s) {
    const spec: NonNullable<Service["spec"]> = pick(s, [
      "type",
      "clusterIP",
      "clusterIPs",
      "ipFamilies",
      "externalIPs",
      "externalName",
      "externalTrafficPolicy",
      "internalTrafficPolicy",
      "healthCheckNodePort",
      "sessionAffinity",
      "loadBalancerSourceRanges",
      "publishNotReadyAddresses",
      "selector",
    ]);
    if (s.ports)
      spec.ports = (s.ports as Raw[]).map((p) =>
        pick<ServicePort>(p, ["name", "protocol", "port", "targetPort", "nodePort"]),
      );
    const t = s.sessionAffinityConfig?.clientIP?.timeoutSeconds;
    if (s.sessionAffinityConfig)
      spec.sessionAffinityConfig = { clientIP: t == null ? {} : { timeoutSeconds: t } };
    svc.spec = spec;
  }
  const ingress = o.status?.loadBalancer?.ingress as Raw[] | undefined;
  if (ingress)
    svc.status = { loadBalancer: { ingress: ingress.map((i) => pick(i, ["ip", "hostname", "ipMode"])) } };
  return svc;
}

/** An EndpointSlice from the API in kpr's shape. */
export function toEndpointSlice(o: Raw): EndpointSlice {
  const es: EndpointSlice = { kind: "EndpointSlice", metadata: meta(o.metadata) };
  if (o.addressType != null) es.addressType = o.addressType;
  if (o.endpoints)
    es.endpoints = (o.endpoints as Raw[]).map((e) => {
      const ep: Endpoint = pick(e, ["nodeName", "zone"]);
      if (e.addresses) ep.addresses = [...e.addresses];
      if (e.conditions) ep.conditions = pick(e.conditions, ["ready", "serving", "terminating"]);
      if (e.hints?.forZones || e.hints?.forNodes) {
        const names = (l: Raw[]) => l.map((z) => pick<{ name?: string }>(z, ["name"]));
        ep.hints = {
          ...(e.hints.forZones ? { forZones: names(e.hints.forZones) } : {}),
          ...(e.hints.forNodes ? { forNodes: names(e.hints.forNodes) } : {}),
        };
      }
      return ep;
    });
  if (o.ports) es.ports = (o.ports as Raw[]).map((p) => pick(p, ["name", "protocol", "port"]));
  return es;
}

/** A Pod from the API in kpr's shape (only what hostPort needs). */
export function toPod(o: Raw): Pod {
  const pod: Pod = { kind: "Pod", metadata: meta(o.metadata) };
  if (o.spec)
    pod.spec = {
      ...pick(o.spec, ["nodeName", "hostNetwork"]),
      containers: ((o.spec.containers ?? []) as Raw[]).map((c) => ({
        ...pick<{ name?: string }>(c, ["name"]),
        ...(c.ports
          ? {
              ports: (c.ports as Raw[]).map((p) =>
                pick(p, ["name", "containerPort", "hostPort", "hostIP", "protocol"]),
              ),
            }
          : {}),
      })),
    };
  if (o.status) {
    const st: NonNullable<Pod["status"]> = pick(o.status, ["phase", "podIP"]);
    if (o.status.podIPs) st.podIPs = (o.status.podIPs as Raw[]).map((p) => pick(p, ["ip"]));
    pod.status = st;
  }
  return pod;
}

/** A Node from the API in kpr's shape (addresses, labels). */
export function toNode(o: Raw): Node {
  const node: Node = { kind: "Node", metadata: meta(o.metadata) };
  if (o.status?.addresses)
    node.status = { addresses: (o.status.addresses as Raw[]).map((a) => pick(a, ["type", "address"])) };
  return node;
}

function key(m: ObjectMeta): string {
  return `${m.namespace ?? ""}/${m.name ?? ""}`;
}

/** One line for an error from client-node (ApiException, FetchError, a watch's HTTP status). */
export function describeApiError(e: unknown): string {
  const err = e as { code?: unknown; statusCode?: unknown; body?: unknown; message?: string };
  const code =
    typeof err?.code === "number"
      ? err.code
      : typeof err?.statusCode === "number"
        ? err.statusCode
        : undefined;
  if (code !== undefined) {
    let msg: string | undefined;
    try {
      const body = typeof err.body === "string" ? JSON.parse(err.body) : err.body;
      msg = (body as { message?: string })?.message;
    } catch {}
    return `HTTP ${code}${msg ? ` ${msg}` : err.message && !err.message.includes("\n") ? ` ${err.message}` : ""}`;
  }
  const msg = err?.message ?? String(e);
  return msg.split("\n")[0]!.replace(/\s*For more information, pass `verbose: true`.*$/, "");
}

interface ListPage {
  items: Raw[];
  metadata?: { resourceVersion?: string; _continue?: string };
}

const http = new IsomorphicFetchHttpLibrary();

/**
 * Sends a prepared GET. With a plain agent (no proxy) it goes through the runtime's own fetch with
 * the agent's TLS material: listing 10k EndpointSlices took 2.5–3× longer through Bun's node:https
 * client than through its fetch. Anything else (a proxy agent) goes through client-node's HTTP
 * library.
 */
async function send(ctx: RequestContext): Promise<{ code: number; text: string }> {
  const agent = ctx.getAgent() as { constructor: unknown; options?: Record<string, unknown> } | undefined;
  const plainAgents: unknown[] = [HttpsAgent, HttpAgent];
  if (agent === undefined || plainAgents.includes(agent.constructor)) {
    const o = (agent?.options ?? {}) as {
      ca?: string | Buffer;
      cert?: string | Buffer;
      key?: string | Buffer;
      rejectUnauthorized?: boolean;
      servername?: string;
    };
    const r = await fetch(ctx.getUrl(), {
      headers: ctx.getHeaders(),
      signal: ctx.getSignal(),
      tls: {
        ...(o.ca ? { ca: o.ca } : {}),
        ...(o.cert ? { cert: o.cert } : {}),
        ...(o.key ? { key: o.key } : {}),
        ...(o.rejectUnauthorized === false ? { rejectUnauthorized: false } : {}),
        ...(o.servername ? { serverName: o.servername } : {}),
      },
    });
    return { code: r.status, text: await r.text() };
  }
  const resp = await http.send(ctx).toPromise();
  return { code: resp.httpStatusCode, text: await resp.body.text() };
}

/**
 * One page of a list, as raw JSON, through client-node's HTTP stack and the kubeconfig's
 * authentication. Raw JSON, not the generated models: their deserialisation made a 10k-object
 * list ~8× slower and far heavier, and every object is converted to kpr's shapes anyway.
 */
async function listPage(
  kc: KubeConfig,
  path: string,
  query: Record<string, string | number | undefined>,
  timeoutMs: number,
): Promise<ListPage> {
  const url = new URL(`${kc.getCurrentCluster()!.server}${path}`);
  for (const [k, v] of Object.entries(query))
    if (v !== undefined && v !== "") url.searchParams.set(k, String(v));
  const ctx = new RequestContext(url.toString(), HttpMethod.GET);
  ctx.setHeaderParam("Accept", "application/json");
  ctx.setSignal(AbortSignal.timeout(timeoutMs));
  await kc.applySecurityAuthentication(ctx);
  let text: string;
  let code: number;
  try {
    ({ code, text } = await send(ctx));
  } catch (e) {
    if ((e as Error).name === "TimeoutError" || (e as Error).name === "AbortError")
      throw new Error(`list: no response after ${(timeoutMs / 1000).toFixed(0)}s`);
    throw e;
  }
  if (code !== 200) throw Object.assign(new Error(`HTTP ${code}`), { code, body: text });
  const body = JSON.parse(text) as {
    items?: Raw[] | null;
    metadata?: { resourceVersion?: string; continue?: string };
  };
  return {
    items: body.items ?? [],
    metadata: { resourceVersion: body.metadata?.resourceVersion, _continue: body.metadata?.continue },
  };
}

interface InformerSpec<T extends Cached> {
  name: string;
  path: string;
  convert: (raw: Raw) => T;
  labelSelector?: string;
  fieldSelector?: string;
}

/** A ListWatch kept alive: restarted with backoff after errors, tracking its list state. */
class Informer<T extends Cached> {
  readonly lw: ListWatch<T & { metadata: Meta }>;
  /** the last list completed and no relist is pending */
  listed = false;
  everListed = false;
  error: string | undefined;
  /** failures since the last list or watch that worked; the next retry's backoff grows with it */
  failures = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private listing = false;
  /** stop() was called: nothing restarts */
  stopped = true;

  constructor(
    private readonly spec: InformerSpec<T>,
    private readonly kc: KubeConfig,
    private readonly opts: Required<
      Pick<
        ApiSourceOptions,
        "initialBackoffMs" | "maxBackoffMs" | "pageSize" | "requestTimeoutMs" | "watchGraceMs"
      >
    > & {
      watchTimeoutSeconds: [number, number];
    },
    private readonly log: ConsolaInstance,
    private readonly changed: () => void,
    private readonly relisted: () => void,
  ) {
    const self = this;
    class HookedWatch extends Watch {
      override async watch(
        path: string,
        params: Record<string, string | number | boolean | undefined>,
        cb: (phase: string, obj: Raw, watchObj?: Raw) => void,
        done: (err: unknown) => void,
      ): Promise<AbortController> {
        if (self.stopped) return new AbortController();
        self.listDone();
        const [lo, hi] = self.opts.watchTimeoutSeconds;
        const timeoutSeconds = Math.round(lo + Math.random() * (hi - lo));
        let finished = false;
        let ctl: AbortController | undefined;
        let dog: ReturnType<typeof setTimeout> | undefined;
        const opened = performance.now();
        let events = 0;
        const finish = (err: unknown) => {
          if (finished) return;
          finished = true;
          clearTimeout(dog);
          ctl?.abort();
          // ListWatch re-watches at once after a clean end: one that ends as soon as it opened,
          // with nothing in it, goes through the backoff instead of a tight loop
          const early = !err && events === 0 && performance.now() - opened < 1000;
          if (!early && (events > 0 || performance.now() - opened >= 1000)) self.failures = 0;
          done(early ? new Error("watch: closed by the server as soon as it opened") : err);
        };
        const stall = (ms: number, what: string) => {
          clearTimeout(dog);
          dog = setTimeout(() => finish(new Error(`${what} after ${(ms / 1000).toFixed(0)}s`)), ms);
        };
        stall(self.opts.requestTimeoutMs, "watch: no response");
        try {
          ctl = await super.watch(
            path,
            { ...params, allowWatchBookmarks: true, timeoutSeconds },
            (phase, obj, raw) => {
              if (finished) return;
              events++;
              self.event(phase, obj, raw, cb);
            },
            finish,
          );
        } catch (e) {
          finish(e);
        }
        if (finished) {
          ctl?.abort();
          return ctl ?? new AbortController();
        }
        stall(
          timeoutSeconds * 1000 + self.opts.watchGraceMs,
          "watch: stream silent and not closed by the server",
        );
        self.connected();
        return ctl!;
      }
    }
    this.lw = new ListWatch(
      spec.path,
      new HookedWatch(kc),
      () => this.list(),
      false,
      spec.labelSelector,
      spec.fieldSelector,
    );
    this.lw.on("error", (err) => this.failed(err));
  }

  private async list(): Promise<{
    items: (T & { metadata: Meta })[];
    metadata: { resourceVersion?: string };
  }> {
    this.listing = true;
    if (this.listed) {
      this.listed = false;
      this.changed();
    }
    const items: (T & { metadata: Meta })[] = [];
    let cont: string | undefined;
    let rv: string | undefined;
    do {
      const page = await listPage(
        this.kc,
        this.spec.path,
        {
          labelSelector: this.spec.labelSelector,
          fieldSelector: this.spec.fieldSelector,
          limit: this.opts.pageSize,
          continue: cont,
        },
        this.opts.requestTimeoutMs,
      );
      for (const o of page.items) items.push(this.spec.convert(o) as T & { metadata: Meta });
      cont = page.metadata?._continue || undefined;
      rv = page.metadata?.resourceVersion;
    } while (cont);
    return { items, metadata: { resourceVersion: rv } };
  }

  /** Called as the watch starts: when a list preceded it, ListWatch has applied it by now. */
  private listDone(): void {
    if (!this.listing) return;
    this.listing = false;
    const first = !this.everListed;
    this.listed = true;
    this.everListed = true;
    this.failures = 0;
    this.log.debug(
      `${this.spec.name}: listed ${this.lw.list().length} (${first ? "initial list" : "relist"})`,
    );
    this.relisted();
    this.changed();
  }

  private connected(): void {
    if (this.error !== undefined) {
      this.log.info(`${this.spec.name}: watching again`);
      this.error = undefined;
      this.changed();
    }
  }

  private event(phase: string, obj: Raw, raw: Raw, cb: (phase: string, obj: Raw, raw?: Raw) => void): void {
    if (phase === "ADDED" || phase === "MODIFIED" || phase === "DELETED") {
      cb(phase, this.spec.convert(obj), raw);
      return;
    }
    if (phase === "ERROR" && obj?.code === 410) {
      this.log.info(`${this.spec.name}: watch expired (${obj.message ?? "410 Gone"}), relisting`);
      if (this.listed) {
        this.listed = false;
        this.changed();
      }
    }
    cb(phase, obj, raw);
  }

  private failed(err: unknown): void {
    if (this.stopped) return;
    this.listing = false;
    this.failures++;
    const delay =
      Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** (this.failures - 1)) *
      (0.5 + Math.random() * 0.5);
    const msg = `${this.spec.name}: ${describeApiError(err)}`;
    if (msg !== this.error) this.log.warn(`${msg} (retrying in ${(delay / 1000).toFixed(1)}s)`);
    else this.log.debug(`${msg} (retry ${this.failures} in ${(delay / 1000).toFixed(1)}s)`);
    this.error = msg;
    this.changed();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run();
    }, delay);
  }

  private run(): void {
    if (this.stopped) return;
    this.lw.start().catch((e) => this.failed(e));
  }

  start(): void {
    this.stopped = false;
    this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.lw.stop();
  }
}

/** The live API source. Construction resolves the kubeconfig (KprError, exit 2, when none fits). */
export class ApiSource implements ClusterSource {
  readonly description: string;
  /** the kubeconfig in use */
  readonly kubeconfig: KubeconfigChoice;
  private readonly log: ConsolaInstance;
  private readonly services: Informer<Service>;
  private readonly slices: Informer<EndpointSlice>;
  private readonly pods: Informer<Pod>;
  private readonly nodes: Informer<Node>;
  private readonly all: Informer<Cached>[];
  private onChange: () => void = () => {};
  private changes: SourceChanges = { all: false, services: new Set(), pods: false };
  /** EndpointSlice "ns/name" → its Service "ns/name", and the reverse */
  private readonly sliceService = new Map<string, string>();
  private readonly serviceSlices = new Map<string, Set<string>>();

  constructor(readonly opts: ApiSourceOptions) {
    this.log = (opts.log ?? rootLog).withTag("k8s");
    if (!opts.nodeName) throw new Error("ApiSource: nodeName is required");
    this.kubeconfig = resolveKubeconfig({ ...opts.kubeconfigInputs, flag: opts.kubeconfig });
    const { kc, origin, path, server } = this.kubeconfig;
    this.description =
      origin === "in-cluster"
        ? `api ${server} (in-cluster service account)`
        : `api ${server} (kubeconfig ${path})`;
    this.log.info(
      `API server ${server}, from ${origin === "in-cluster" ? "the in-cluster service account" : `kubeconfig ${path} (${origin})`}`,
    );
    if (origin === "in-cluster")
      this.log.warn(
        `in-cluster config reaches the API server at KUBERNETES_SERVICE_HOST (${server}): it must be the API server's real address, not the kubernetes ClusterIP that kpr itself programs`,
      );
    const iopts = {
      initialBackoffMs: opts.initialBackoffMs ?? 250,
      maxBackoffMs: opts.maxBackoffMs ?? 3000,
      pageSize: opts.pageSize ?? 500,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? ([300, 600] as [number, number]),
      requestTimeoutMs: opts.requestTimeoutMs ?? 60_000,
      watchGraceMs: opts.watchGraceMs ?? 30_000,
    };
    const selector = serviceLabelSelector(opts.serviceProxyName);
    const changed = () => this.onChange();
    const relisted = () => {
      this.changes.all = true;
    };
    const make = <T extends Cached>(spec: InformerSpec<T>) =>
      new Informer<T>(spec, kc, iopts, this.log, changed, relisted);
    this.services = make({
      name: "services",
      path: "/api/v1/services",
      labelSelector: selector,
      convert: toService,
    });
    this.slices = make({
      name: "endpointslices",
      path: "/apis/discovery.k8s.io/v1/endpointslices",
      labelSelector: selector,
      convert: toEndpointSlice,
    });
    const onNode = `spec.nodeName=${opts.nodeName}`;
    this.pods = make({
      name: "pods",
      path: "/api/v1/pods",
      fieldSelector: onNode,
      convert: toPod,
    });
    const self = `metadata.name=${opts.nodeName}`;
    this.nodes = make({
      name: "nodes",
      path: "/api/v1/nodes",
      fieldSelector: self,
      convert: toNode,
    });
    this.all = [this.services, this.slices, this.pods, this.nodes] as Informer<Cached>[];

    const svcChanged = (s: Service) => {
      this.changes.services.add(key(s.metadata));
      this.onChange();
    };
    for (const verb of ["add", "update", "delete"] as const) this.services.lw.on(verb, svcChanged);
    const sliceChanged = (verb: "add" | "update" | "delete") => (es: EndpointSlice) => {
      const k = key(es.metadata);
      const before = this.sliceService.get(k);
      const name = es.metadata.labels?.[LABEL_SERVICE_NAME];
      const now = verb !== "delete" && name ? `${es.metadata.namespace ?? ""}/${name}` : undefined;
      if (before !== undefined && before !== now) {
        this.changes.services.add(before);
        const set = this.serviceSlices.get(before);
        set?.delete(k);
        if (set?.size === 0) this.serviceSlices.delete(before);
        this.sliceService.delete(k);
      }
      if (now !== undefined) {
        this.changes.services.add(now);
        this.sliceService.set(k, now);
        const set = this.serviceSlices.get(now);
        if (set) set.add(k);
        else this.serviceSlices.set(now, new Set([k]));
      }
      this.onChange();
    };
    for (const verb of ["add", "update", "delete"] as const) this.slices.lw.on(verb, sliceChanged(verb));
    for (const verb of ["add", "update", "delete"] as const)
      this.pods.lw.on(verb, () => {
        this.changes.pods = true;
        this.onChange();
      });
    for (const verb of ["add", "update", "delete"] as const)
      this.nodes.lw.on(verb, () => {
        this.changes.all = true;
        this.onChange();
      });
  }

  get synced(): boolean {
    return this.all.every((i) => i.listed);
  }

  get lastError(): string | undefined {
    const errs = this.all.map((i) => i.error).filter((e) => e !== undefined);
    return errs.length ? `api ${this.kubeconfig.server}: ${errs.join("; ")}` : undefined;
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    for (const i of this.all) i.start();
  }

  /** The current objects. They are the informers' cached copies: read them, do not change them. */
  snapshot(): ClusterState {
    return {
      services: [...this.services.lw.list()],
      endpointSlices: [...this.slices.lw.list()],
      endpoints: [],
      pods: [...this.pods.lw.list()],
      nodes: [...this.nodes.lw.list()],
    };
  }

  serviceObjects(k: string): Pick<ClusterState, "services" | "endpointSlices" | "endpoints"> {
    const slash = k.indexOf("/");
    const [ns, name] = [k.slice(0, slash), k.slice(slash + 1)];
    const svc = this.services.lw.get(name, ns);
    const slices: EndpointSlice[] = [];
    for (const sk of this.serviceSlices.get(k) ?? []) {
      const i = sk.indexOf("/");
      const es = this.slices.lw.get(sk.slice(i + 1), sk.slice(0, i));
      if (es) slices.push(es);
    }
    return { services: svc ? [svc] : [], endpointSlices: slices, endpoints: [] };
  }

  takeChanges(): SourceChanges {
    const c = this.changes;
    this.changes = { all: false, services: new Set(), pods: false };
    return c;
  }

  async stop(): Promise<void> {
    await Promise.all(this.all.map((i) => i.stop()));
  }
}
