/**
 * A Kubernetes API server for tests, on 127.0.0.1 (port 0), speaking the real protocol for the
 * resources kpr reads: TLS with a CA generated at start (openssl), bearer-token auth, discovery,
 * list (resourceVersion and resourceVersionMatch, limit/continue, label and field selectors), get,
 * and watch as a chunked stream of newline-delimited JSON events (ADDED/MODIFIED/DELETED, BOOKMARK
 * when asked for, timeoutSeconds, `410 Gone` as an ERROR event with an `Expired` Status for a
 * compacted version). The test drives it: create/update/delete objects, compact() the history,
 * dropWatches() and setDown() (connection refused or reset). It writes a kubeconfig that kubectl
 * and @kubernetes/client-node use as they would against a real cluster.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";

/** A resource the server serves. */
interface Resource {
  /** plural, as in the URL */
  plural: string;
  kind: string;
  /** "" for the core group */
  group: string;
  version: string;
  namespaced: boolean;
  shortNames: string[];
  /** field selector keys it supports, with how to read them */
  fields: Record<string, (o: KubeObject) => string | undefined>;
}

/** Any Kubernetes object as JSON. */
// biome-ignore lint/suspicious/noExplicitAny: objects are free-form JSON
export type KubeObject = { kind?: string; apiVersion?: string; metadata?: any; [k: string]: any };

const metaFields = {
  "metadata.name": (o: KubeObject) => o.metadata?.name,
  "metadata.namespace": (o: KubeObject) => o.metadata?.namespace ?? "",
};

const RESOURCES: Resource[] = [
  {
    plural: "services",
    kind: "Service",
    group: "",
    version: "v1",
    namespaced: true,
    shortNames: ["svc"],
    fields: metaFields,
  },
  {
    plural: "endpoints",
    kind: "Endpoints",
    group: "",
    version: "v1",
    namespaced: true,
    shortNames: ["ep"],
    fields: metaFields,
  },
  {
    plural: "pods",
    kind: "Pod",
    group: "",
    version: "v1",
    namespaced: true,
    shortNames: ["po"],
    fields: {
      ...metaFields,
      "spec.nodeName": (o) => o.spec?.nodeName ?? "",
      "status.phase": (o) => o.status?.phase ?? "",
    },
  },
  {
    plural: "nodes",
    kind: "Node",
    group: "",
    version: "v1",
    namespaced: false,
    shortNames: ["no"],
    fields: metaFields,
  },
  {
    plural: "endpointslices",
    kind: "EndpointSlice",
    group: "discovery.k8s.io",
    version: "v1",
    namespaced: true,
    shortNames: [],
    fields: metaFields,
  },
];

const byKind = new Map(RESOURCES.map((r) => [r.kind, r]));
const apiVersionOf = (r: Resource) => (r.group ? `${r.group}/${r.version}` : r.version);

/** One change in the server's history. */
interface HistoryEntry {
  rv: number;
  res: Resource;
  key: string;
  type: "ADDED" | "MODIFIED" | "DELETED";
  /** the object after the change (for DELETED: the object as deleted, with the deletion's rv) */
  obj: KubeObject;
  /** the object before the change */
  prev: KubeObject | undefined;
}

interface Watcher {
  res: Resource;
  ns: string | undefined;
  match: (o: KubeObject) => boolean;
  bookmarks: boolean;
  res_: ServerResponse;
  /** events held back while the server hangs (as a stalled TCP connection buffers them); "" is
   *  the end of the stream */
  held: string[];
  write(line: string): void;
  timers: ReturnType<typeof setTimeout>[];
  close(how: "end" | "reset"): void;
}

/** Options of startApiServer. */
export interface ApiServerOptions {
  /** the bearer token clients must send (default: random) */
  token?: string;
  /** interval between BOOKMARK events for watches that allow them (default 1000 ms) */
  bookmarkIntervalMs?: number;
  /** how the kubeconfig it writes authenticates: a bearer token (default) or a client
   *  certificate signed by the server's CA, as k3s's kubeconfig does. The server accepts both. */
  kubeconfigAuth?: "token" | "client-cert";
  /** objects to create before the server answers */
  objects?: KubeObject[];
  /** ends every watch this long after it opened, whatever its timeoutSeconds (an overloaded
   *  server shedding watches) */
  maxWatchMs?: number;
}

/** A running test API server. */
export interface ApiServer {
  /** https://127.0.0.1:PORT */
  url: string;
  token: string;
  /** PEM file of the CA that signed the server's certificate */
  caFile: string;
  /** a kubeconfig (cluster, user with the token, current context) for this server */
  kubeconfigPath: string;
  /** the current resourceVersion (the last change's) */
  readonly resourceVersion: number;
  /** requests served so far, by "METHOD path?query", for tests that check what a client asked */
  readonly requests: string[];
  /** performance.now() of each request in `requests` */
  readonly requestTimes: number[];
  /** creates an object (its kind names the resource); returns the stored copy */
  create(obj: KubeObject): KubeObject;
  /** replaces an existing object; returns the stored copy */
  update(obj: KubeObject): KubeObject;
  /** creates or replaces */
  apply(obj: KubeObject): KubeObject;
  /** deletes an object (kind + metadata.namespace/name are enough) */
  delete(obj: KubeObject): void;
  /** the stored copy of an object, if present */
  get(kind: string, namespace: string | undefined, name: string): KubeObject | undefined;
  /** forgets the history up to now: watches and exact lists from an older version get 410 Gone */
  compact(): void;
  /** ends every open watch: "end" closes the stream cleanly, "reset" destroys the connection,
   *  "expire" sends an ERROR 410 Expired event first (as a watch that fell behind gets) */
  dropWatches(how?: "end" | "reset" | "expire"): void;
  /** open watch streams */
  readonly watchCount: number;
  /** unreachable mode: "refuse" closes the listener (connection refused), "reset" accepts and
   *  destroys every connection (both drop every open connection); "hang" keeps connections open
   *  but silent (no response, no watch event, no bookmark), as a network partition does. false
   *  listens again on the same port, or answers what was held back. */
  setDown(down: boolean, how?: "refuse" | "reset" | "hang"): Promise<void>;
  stop(): Promise<void>;
}

function status(code: number, reason: string, message: string): KubeObject {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

const reasons: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  404: "NotFound",
  405: "MethodNotAllowed",
  410: "Expired",
  504: "Timeout",
};

class HttpError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

function labelRequirement(p: string): (l: Record<string, string>) => boolean {
  const not = p.match(/^!\s*([\w./-]+)$/);
  if (not) {
    const k = not[1]!;
    return (l) => !(k in l);
  }
  const set = p.match(/^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/);
  if (set) {
    const [k, op] = [set[1]!, set[2]!];
    const vals = new Set(set[3]!.split(",").map((v) => v.trim()));
    return op === "in" ? (l) => k in l && vals.has(l[k]!) : (l) => !(k in l) || !vals.has(l[k]!);
  }
  const eq = p.match(/^([\w./-]+)\s*(!=|==|=)\s*([\w.-]*)$/);
  if (eq) {
    const [k, op, v] = [eq[1]!, eq[2]!, eq[3]!];
    return op === "!=" ? (l) => l[k] !== v : (l) => l[k] === v;
  }
  const exists = p.match(/^([\w./-]+)$/);
  if (exists) {
    const k = exists[1]!;
    return (l) => k in l;
  }
  throw new HttpError(400, `unable to parse requirement: ${JSON.stringify(p)}`);
}

/** A parsed label selector: a predicate on labels. Throws HttpError 400 on a bad selector. */
export function parseLabelSelector(sel: string): (labels: Record<string, string> | undefined) => boolean {
  const reqs: ((l: Record<string, string>) => boolean)[] = [];
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of sel) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  for (const raw of parts) {
    const p = raw.trim();
    if (p) reqs.push(labelRequirement(p));
  }
  return (labels) => reqs.every((r) => r(labels ?? {}));
}

function parseFieldSelector(sel: string, res: Resource): (o: KubeObject) => boolean {
  const reqs: ((o: KubeObject) => boolean)[] = [];
  for (const raw of sel.split(",")) {
    const p = raw.trim();
    if (!p) continue;
    const m = p.match(/^([\w.]+)\s*(!=|==|=)\s*(.*)$/);
    if (!m) throw new HttpError(400, `invalid field selector: ${JSON.stringify(p)}`);
    const [f, op, v] = [m[1]!, m[2]!, m[3]!];
    const get = res.fields[f];
    if (!get) throw new HttpError(400, `field label not supported: ${f}`);
    reqs.push(op === "!=" ? (o) => get(o) !== v : (o) => get(o) === v);
  }
  return (o) => reqs.every((r) => r(o));
}

function objKey(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;
}

interface Certs {
  caFile: string;
  certFile: string;
  keyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
}

function generateCerts(dir: string): Certs {
  const run = (args: string[]) => {
    const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.error?.message ?? r.stderr.trim()}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "2",
    "-subj",
    "/CN=kpr-test-ca",
  ]);
  const issue = (name: string, subject: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    run(["req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject]);
    const sign = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"];
    run(["x509", "-req", "-in", `${name}.csr`, ...sign, "-extfile", `${name}.ext`, "-out", `${name}.crt`]);
  };
  const leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n";
  issue(
    "server",
    "/CN=kpr-test-apiserver",
    `subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n${leaf}`,
  );
  issue("client", "/O=system:nodes/CN=system:kube-proxy", `extendedKeyUsage=clientAuth\n${leaf}`);
  return {
    caFile: join(dir, "ca.crt"),
    certFile: join(dir, "server.crt"),
    keyFile: join(dir, "server.key"),
    clientCertFile: join(dir, "client.crt"),
    clientKeyFile: join(dir, "client.key"),
  };
}

/** Starts a test API server on 127.0.0.1 (port 0). Needs `openssl`. */
export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServer> {
  const token = opts.token ?? crypto.randomUUID().replaceAll("-", "");
  const bookmarkMs = opts.bookmarkIntervalMs ?? 1000;
  const dir = mkdtempSync(join(tmpdir(), "kpr-apiserver-"));
  let certs: Certs;
  try {
    certs = generateCerts(dir);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  const store = new Map<Resource, Map<string, KubeObject>>(RESOURCES.map((r) => [r, new Map()]));
  let history: HistoryEntry[] = [];
  let rv = 1;
  let compactedRv = 0;
  const watchers = new Set<Watcher>();
  const sockets = new Set<Socket>();
  const requests: string[] = [];
  const requestTimes: number[] = [];
  let mode: "up" | "refuse" | "reset" | "hang" = "up";
  const heldRequests: [IncomingMessage, ServerResponse][] = [];

  const resolve = (obj: KubeObject): Resource => {
    const r = obj.kind ? byKind.get(obj.kind) : undefined;
    if (!r) throw new Error(`apiserver: unknown kind ${obj.kind}`);
    return r;
  };

  const wire = (res: Resource, o: KubeObject): KubeObject => ({
    ...o,
    kind: res.kind,
    apiVersion: apiVersionOf(res),
  });

  /** The event a watcher sees for a change: objects entering or leaving its selection are
   *  ADDED/DELETED, as the real watch cache does. */
  const eventFor = (w: Watcher, e: HistoryEntry): string | undefined => {
    if (w.res !== e.res) return undefined;
    const inNs = (o: KubeObject | undefined) => !!o && (w.ns === undefined || o.metadata?.namespace === w.ns);
    const was = inNs(e.prev) && w.match(e.prev!);
    const is = e.type !== "DELETED" && inNs(e.obj) && w.match(e.obj);
    if (e.type === "DELETED") return was ? "DELETED" : undefined;
    if (is) return was ? "MODIFIED" : "ADDED";
    return was ? "DELETED" : undefined;
  };

  const notify = (e: HistoryEntry) => {
    for (const w of watchers) {
      const type = eventFor(w, e);
      if (type) w.write(`${JSON.stringify({ type, object: wire(e.res, e.obj) })}\n`);
    }
  };

  const record = (
    res: Resource,
    type: HistoryEntry["type"],
    obj: KubeObject,
    prev: KubeObject | undefined,
  ) => {
    const e: HistoryEntry = { rv, res, key: objKey(obj), type, obj, prev };
    history.push(e);
    notify(e);
  };

  const store_ = (obj: KubeObject, want: "create" | "update" | "apply"): KubeObject => {
    const res = resolve(obj);
    const key = objKey(obj);
    const m = store.get(res)!;
    const prev = m.get(key);
    if (want === "create" && prev) throw new Error(`apiserver: ${res.kind} ${key} exists`);
    if (want === "update" && !prev) throw new Error(`apiserver: ${res.kind} ${key} not found`);
    rv++;
    const { kind: _k, apiVersion: _a, ...rest } = structuredClone(obj);
    const stored: KubeObject = {
      ...rest,
      metadata: {
        ...rest.metadata,
        ...(res.namespaced ? { namespace: rest.metadata?.namespace ?? "default" } : {}),
        uid: prev?.metadata?.uid ?? crypto.randomUUID(),
        creationTimestamp:
          prev?.metadata?.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        resourceVersion: String(rv),
      },
    };
    if (!res.namespaced) delete stored.metadata.namespace;
    m.set(objKey(stored), stored);
    record(res, prev ? "MODIFIED" : "ADDED", stored, prev);
    return wire(res, stored);
  };

  /** The objects of a resource as they were at `at` (undoing newer history). */
  const stateAt = (res: Resource, at: number): Map<string, KubeObject> => {
    const m = new Map(store.get(res)!);
    for (let i = history.length - 1; i >= 0 && history[i]!.rv > at; i--) {
      const e = history[i]!;
      if (e.res !== res) continue;
      if (e.prev) m.set(e.key, e.prev);
      else m.delete(e.key);
    }
    return m;
  };

  const tooOld = (v: number) => `too old resource version: ${v} (${compactedRv})`;

  const sendJson = (r: ServerResponse, code: number, body: unknown) => {
    const text = JSON.stringify(body);
    r.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
    r.end(text);
  };

  const discovery = (path: string): unknown | undefined => {
    if (path === "/version")
      return { major: "1", minor: "32", gitVersion: "v1.32.0-kpr-test", platform: "linux/amd64" };
    if (path === "/api")
      return {
        kind: "APIVersions",
        versions: ["v1"],
        serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1" }],
      };
    const groups = [...new Set(RESOURCES.filter((r) => r.group).map((r) => r.group))];
    if (path === "/apis")
      return {
        kind: "APIGroupList",
        apiVersion: "v1",
        groups: groups.map((g) => {
          const v = { groupVersion: `${g}/v1`, version: "v1" };
          return { name: g, versions: [v], preferredVersion: v };
        }),
      };
    const gv = path === "/api/v1" ? "v1" : path.startsWith("/apis/") ? path.slice(6) : undefined;
    if (!gv) return undefined;
    const rs = RESOURCES.filter((r) => apiVersionOf(r) === gv);
    if (!rs.length) return undefined;
    return {
      kind: "APIResourceList",
      apiVersion: "v1",
      groupVersion: gv,
      resources: rs.map((r) => ({
        name: r.plural,
        singularName: r.kind.toLowerCase(),
        namespaced: r.namespaced,
        kind: r.kind,
        verbs: ["get", "list", "watch"],
        shortNames: r.shortNames.length ? r.shortNames : undefined,
      })),
    };
  };

  /** /api/v1/[namespaces/NS/]PLURAL[/NAME] or /apis/G/V/... → resource, namespace, name */
  const route = (path: string): { res: Resource; ns?: string; name?: string } | undefined => {
    const m = path.match(
      /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))\/(?:namespaces\/([^/]+)\/)?([^/]+)(?:\/([^/]+))?$/,
    );
    if (!m) return undefined;
    const gv = m[1] ?? `${m[2]}/${m[3]}`;
    const res = RESOURCES.find((r) => apiVersionOf(r) === gv && r.plural === m[5]);
    if (!res) return undefined;
    if (m[4] !== undefined && !res.namespaced) return undefined;
    return { res, ns: m[4], name: m[6] };
  };

  const list = (
    r: ServerResponse,
    res: Resource,
    ns: string | undefined,
    q: URLSearchParams,
    match: (o: KubeObject) => boolean,
  ) => {
    const limit = Number(q.get("limit") ?? 0);
    const cont = q.get("continue");
    const rvParam = q.get("resourceVersion") ?? "";
    const rvMatch = q.get("resourceVersionMatch") ?? "";
    let at = rv;
    let after = "";
    if (cont) {
      let token: { rv: number; start: string };
      try {
        token = JSON.parse(Buffer.from(cont, "base64url").toString());
      } catch {
        throw new HttpError(400, "continue key is not valid");
      }
      if (token.rv < compactedRv)
        throw new HttpError(
          410,
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        );
      at = token.rv;
      after = token.start;
    } else if (rvParam !== "" && rvParam !== "0") {
      const want = Number(rvParam);
      if (!Number.isInteger(want) || want < 0)
        throw new HttpError(400, `invalid resource version ${rvParam}`);
      const exact = rvMatch === "Exact" || (rvMatch === "" && limit > 0);
      if (want > rv) throw new HttpError(504, `Too large resource version: ${want}, current: ${rv}`);
      if (exact) {
        if (want < compactedRv) throw new HttpError(410, tooOld(want));
        at = want;
      }
    }
    const objs = [...stateAt(res, at).entries()]
      .filter(([k, o]) => (ns === undefined || o.metadata?.namespace === ns) && k > after && match(o))
      .sort(([a], [b]) => (a < b ? -1 : 1));
    const page = limit > 0 ? objs.slice(0, limit) : objs;
    const more = limit > 0 && objs.length > limit;
    const metadata: Record<string, unknown> = { resourceVersion: String(at) };
    if (more) {
      metadata.continue = Buffer.from(JSON.stringify({ rv: at, start: page.at(-1)![0] })).toString(
        "base64url",
      );
      metadata.remainingItemCount = objs.length - page.length;
    }
    sendJson(r, 200, {
      kind: `${res.kind}List`,
      apiVersion: apiVersionOf(res),
      metadata,
      items: page.map(([, o]) => o),
    });
  };

  const watch = (
    req: IncomingMessage,
    r: ServerResponse,
    res: Resource,
    ns: string | undefined,
    q: URLSearchParams,
    match: (o: KubeObject) => boolean,
  ) => {
    const rvParam = q.get("resourceVersion") ?? "";
    const from = rvParam === "" || rvParam === "0" ? undefined : Number(rvParam);
    if (from !== undefined && (!Number.isInteger(from) || from < 0))
      throw new HttpError(400, `invalid resource version ${rvParam}`);
    r.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked" });
    r.flushHeaders();
    const send = (ev: unknown) => r.write(`${JSON.stringify(ev)}\n`);
    if (from !== undefined && from < compactedRv) {
      send({ type: "ERROR", object: status(410, "Expired", tooOld(from)) });
      r.end();
      return;
    }
    const w: Watcher = {
      res,
      ns,
      match,
      bookmarks: q.get("allowWatchBookmarks") === "true",
      res_: r,
      held: [],
      write(line) {
        if (mode === "hang") w.held.push(line);
        else r.write(line);
      },
      timers: [],
      close(how) {
        if (!watchers.delete(w)) return;
        for (const t of w.timers) clearTimeout(t);
        if (how === "reset") req.socket.destroy();
        else r.end();
      },
    };
    if (from === undefined) {
      for (const o of [...store.get(res)!.values()].filter(
        (o) => ns === undefined || o.metadata?.namespace === ns,
      ))
        if (match(o)) send({ type: "ADDED", object: wire(res, o) });
    } else {
      for (const e of history) {
        if (e.rv <= from) continue;
        const type = eventFor(w, e);
        if (type) send({ type, object: wire(res, e.obj) });
      }
    }
    watchers.add(w);
    const asked = Number(q.get("timeoutSeconds") ?? 0) * 1000;
    const timeout =
      opts.maxWatchMs !== undefined && (asked === 0 || opts.maxWatchMs < asked) ? opts.maxWatchMs : asked;
    if (timeout > 0 || opts.maxWatchMs !== undefined)
      w.timers.push(
        setTimeout(() => {
          if (mode === "hang") w.held.push("");
          else w.close("end");
        }, timeout),
      );
    if (w.bookmarks) {
      const tick = () => {
        if (mode !== "hang")
          send({
            type: "BOOKMARK",
            object: {
              kind: res.kind,
              apiVersion: apiVersionOf(res),
              metadata: { resourceVersion: String(rv), annotations: { "k8s.io/initial-events-end": "true" } },
            },
          });
        w.timers[1] = setTimeout(tick, bookmarkMs);
      };
      w.timers[1] = setTimeout(tick, bookmarkMs);
    }
    r.on("close", () => w.close("end"));
  };

  const handle = (req: IncomingMessage, r: ServerResponse) => {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    requests.push(`${req.method} ${url.pathname}${url.search}`);
    requestTimes.push(performance.now());
    if (mode === "hang") {
      heldRequests.push([req, r]);
      return;
    }
    serve(req, r, url);
  };

  const serve = (req: IncomingMessage, r: ServerResponse, url: URL) => {
    try {
      const certOk = (req.socket as TLSSocket).authorized === true;
      if (req.headers.authorization !== `Bearer ${token}` && !certOk)
        throw new HttpError(401, "Unauthorized");
      if (req.method !== "GET")
        throw new HttpError(405, `method ${req.method} not allowed (the test server is read-only)`);
      const d = discovery(url.pathname);
      if (d) return sendJson(r, 200, d);
      const rt = route(url.pathname);
      if (!rt) throw new HttpError(404, `the server could not find the requested resource (${url.pathname})`);
      const q = url.searchParams;
      if (rt.name !== undefined) {
        const o = store.get(rt.res)!.get(`${rt.ns ?? ""}/${rt.name}`);
        if (!o) throw new HttpError(404, `${rt.res.plural} "${rt.name}" not found`);
        return sendJson(r, 200, wire(rt.res, o));
      }
      const labels = parseLabelSelector(q.get("labelSelector") ?? "");
      const fields = parseFieldSelector(q.get("fieldSelector") ?? "", rt.res);
      const match = (o: KubeObject) => labels(o.metadata?.labels) && fields(o);
      const isWatch = q.get("watch") === "true" || q.get("watch") === "1";
      if (isWatch) watch(req, r, rt.res, rt.ns, q, match);
      else list(r, rt.res, rt.ns, q, match);
    } catch (e) {
      if (!(e instanceof HttpError)) throw e;
      sendJson(r, e.code, status(e.code, reasons[e.code] ?? "InternalError", e.message));
    }
  };

  const server: Server = createServer(
    {
      cert: readFileSync(certs.certFile),
      key: readFileSync(certs.keyFile),
      ca: readFileSync(certs.caFile),
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, r) => {
      try {
        handle(req, r);
      } catch (e) {
        if (!r.headersSent) sendJson(r, 500, status(500, "InternalError", String(e)));
        else r.destroy();
      }
    },
  );
  const track = (s: Socket) => {
    if (mode === "reset") {
      s.destroy();
      return;
    }
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  };
  server.on("connection", track);
  server.on("tlsClientError", (_e, s) => s.destroy());

  const listen = (port: number) =>
    new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", fail);
        ok();
      });
    });
  const closeListener = () => new Promise<void>((ok) => server.close(() => ok()));
  const dropAll = () => {
    for (const w of [...watchers]) w.close("reset");
    for (const s of sockets) s.destroy();
    sockets.clear();
  };

  for (const o of opts.objects ?? []) store_(o, "create");
  await listen(0);
  const addr = server.address();
  if (!addr || typeof addr === "string") throw new Error("apiserver: no address");
  const port = addr.port;
  const url = `https://127.0.0.1:${port}`;
  const kubeconfigPath = join(dir, "kubeconfig");
  writeFileSync(
    kubeconfigPath,
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: kpr-test",
      "  cluster:",
      `    server: ${url}`,
      `    certificate-authority: ${certs.caFile}`,
      "users:",
      "- name: kpr-test",
      "  user:",
      ...(opts.kubeconfigAuth === "client-cert"
        ? [`    client-certificate: ${certs.clientCertFile}`, `    client-key: ${certs.clientKeyFile}`]
        : [`    token: ${token}`]),
      "contexts:",
      "- name: kpr-test",
      "  context:",
      "    cluster: kpr-test",
      "    user: kpr-test",
      "current-context: kpr-test",
      "",
    ].join("\n"),
  );

  let stopped = false;
  return {
    url,
    token,
    caFile: certs.caFile,
    kubeconfigPath,
    get resourceVersion() {
      return rv;
    },
    requests,
    requestTimes,
    create: (o) => store_(o, "create"),
    update: (o) => store_(o, "update"),
    apply: (o) => store_(o, "apply"),
    delete(obj) {
      const res = resolve(obj);
      const key = `${res.namespaced ? (obj.metadata?.namespace ?? "default") : ""}/${obj.metadata?.name ?? ""}`;
      const m = store.get(res)!;
      const prev = m.get(key);
      if (!prev) throw new Error(`apiserver: ${res.kind} ${key} not found`);
      m.delete(key);
      rv++;
      record(res, "DELETED", { ...prev, metadata: { ...prev.metadata, resourceVersion: String(rv) } }, prev);
    },
    get(kind, namespace, name) {
      const res = byKind.get(kind);
      const o = res && store.get(res)!.get(`${res.namespaced ? (namespace ?? "default") : ""}/${name}`);
      return o && res ? wire(res, structuredClone(o)) : undefined;
    },
    compact() {
      compactedRv = rv;
      history = [];
    },
    dropWatches(how = "end") {
      for (const w of [...watchers]) {
        if (how === "expire") {
          w.write(`${JSON.stringify({ type: "ERROR", object: status(410, "Expired", tooOld(0)) })}\n`);
          w.close("end");
        } else w.close(how);
      }
    },
    get watchCount() {
      return watchers.size;
    },
    async setDown(down, how = "refuse") {
      if (stopped) return;
      if (down) {
        if (mode === "refuse") return;
        mode = how;
        if (how === "refuse") {
          const closed = closeListener();
          dropAll();
          await closed;
        } else if (how === "reset") dropAll();
      } else {
        if (mode === "up") return;
        const was = mode;
        mode = "up";
        if (was === "refuse") await listen(port);
        if (was === "hang") {
          for (const w of [...watchers])
            for (const line of w.held.splice(0)) {
              if (line === "") w.close("end");
              else w.res_.write(line);
            }
          for (const [req, r] of heldRequests.splice(0))
            if (!r.destroyed && !req.socket.destroyed)
              serve(req, r, new URL(req.url ?? "/", "https://127.0.0.1"));
        }
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      const closed = mode === "refuse" ? Promise.resolve() : closeListener();
      dropAll();
      await closed;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
