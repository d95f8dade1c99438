/**
 * The test API server checked with real clients before anything trusts it: kubectl (discovery,
 * list, selectors, chunked lists, watch) and @kubernetes/client-node (Watch, ListWatch informers),
 * plus raw HTTP for what clients hide (401, 410 on list and watch, bookmarks, timeoutSeconds,
 * dropped and refused connections).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig, ListWatch, Watch } from "@kubernetes/client-node";
import { type ApiServer, type KubeObject, parseLabelSelector, startApiServer } from "./apiserver.ts";
import { needs } from "./env.ts";

setDefaultTimeout(60_000);

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await Bun.sleep(20);
  }
}

const svc = (ns: string, name: string, labels: Record<string, string> = {}): KubeObject => ({
  kind: "Service",
  metadata: { namespace: ns, name, labels },
  spec: { type: "ClusterIP", clusterIP: "10.96.0.10", ports: [{ port: 80, protocol: "TCP" }] },
});
const pod = (ns: string, name: string, nodeName: string): KubeObject => ({
  kind: "Pod",
  metadata: { namespace: ns, name },
  spec: { nodeName, containers: [{ name: "c" }] },
});

describe("label selectors (the forms kube-proxy sends)", () => {
  test.each([
    ["!service.kubernetes.io/headless", {}, true],
    ["!service.kubernetes.io/headless", { "service.kubernetes.io/headless": "" }, false],
    [
      "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
      { "service.kubernetes.io/service-proxy-name": "x" },
      false,
    ],
    [
      "service.kubernetes.io/service-proxy-name=kpr",
      { "service.kubernetes.io/service-proxy-name": "kpr" },
      true,
    ],
    [
      "service.kubernetes.io/service-proxy-name=kpr",
      { "service.kubernetes.io/service-proxy-name": "x" },
      false,
    ],
    ["app!=web", { app: "db" }, true],
    ["app!=web", {}, true],
    ["app!=web", { app: "web" }, false],
    ["app in (web, db)", { app: "db" }, true],
    ["app in (web,db),tier", { app: "db" }, false],
    ["app notin (web,db)", { app: "api" }, true],
    ["app notin (web,db)", {}, true],
    ["app notin (web,db)", { app: "web" }, false],
    ["app==web", { app: "web" }, true],
    ["app", {}, false],
    ["", { any: "thing" }, true],
  ] as [string, Record<string, string>, boolean][])("%p on %j → %p", (sel, labels, want) => {
    expect(parseLabelSelector(sel)(labels)).toBe(want);
  });
});

const noOpenssl = needs({ tools: ["openssl"] }, "test API server");
describe.skipIf(!!noOpenssl)("test API server", () => {
  let api: ApiServer;
  let ca: string;
  const get = (path: string, token: string | null = api.token) =>
    fetch(`${api.url}${path}`, {
      headers: token !== null ? { Authorization: `Bearer ${token}` } : {},
      tls: { ca },
    });

  beforeAll(async () => {
    api = await startApiServer({
      bookmarkIntervalMs: 100,
      objects: [
        svc("default", "web", { app: "web" }),
        svc("default", "db", { app: "db" }),
        svc("kube-system", "dns", { app: "dns", "service.kubernetes.io/headless": "" }),
        svc("other", "mesh", { "service.kubernetes.io/service-proxy-name": "mesh" }),
        pod("default", "a", "node-1"),
        pod("default", "b", "node-2"),
        { kind: "Node", metadata: { name: "node-1" } },
        { kind: "Node", metadata: { name: "node-2" } },
      ],
    });
    ca = readFileSync(api.caFile, "utf8");
  });
  afterAll(async () => {
    await api?.stop();
  });

  test("TLS with the generated CA, and 401 with a Status without the bearer token", async () => {
    const anon = await get("/api/v1/services", null);
    expect(anon.status, "no token").toBe(401);
    expect(await anon.json(), "401 body").toMatchObject({
      kind: "Status",
      reason: "Unauthorized",
      code: 401,
    });
    expect((await get("/api/v1/services", "wrong")).status, "wrong token").toBe(401);
    const ok = await get("/api/v1/services");
    expect(ok.status, "with token").toBe(200);
    const untrusted = await fetch(`${api.url}/api/v1/services`).then(
      () => "accepted",
      (e: Error) => e.message,
    );
    expect(untrusted, "a client without the CA refuses the certificate").not.toBe("accepted");
    const dir = api.caFile.replace(/ca\.crt$/, "");
    const mtls = await fetch(`${api.url}/api/v1/services`, {
      tls: {
        ca,
        cert: readFileSync(`${dir}client.crt`, "utf8"),
        key: readFileSync(`${dir}client.key`, "utf8"),
      },
    });
    expect(mtls.status, "a client certificate signed by the CA, no token").toBe(200);
  });

  describe("kubectl", () => {
    const noKubectl = needs({ tools: ["kubectl"] }, "test API server with kubectl");
    let cache: string;
    beforeAll(() => {
      cache = mkdtempSync(join(tmpdir(), "kpr-kubectl-cache-"));
    });
    afterAll(() => {
      if (cache) rmSync(cache, { recursive: true, force: true });
    });
    const kubectl = async (args: string[]) => {
      const p = Bun.spawn(["kubectl", "--kubeconfig", api.kubeconfigPath, "--cache-dir", cache, ...args], {
        stdout: "pipe",
        stderr: "pipe",
        env: { ...process.env, HOME: cache },
      });
      const [out, err, code] = await Promise.all([
        new Response(p.stdout).text(),
        new Response(p.stderr).text(),
        p.exited,
      ]);
      return { out, err, code };
    };
    const names = async (args: string[]) => {
      const r = await kubectl([...args, "-o", "name"]);
      expect(r.code, `kubectl ${args.join(" ")}: ${r.err}`).toBe(0);
      return r.out.trim().split("\n").filter(Boolean).sort();
    };

    test.skipIf(!!noKubectl)(
      "get: discovery, all-namespace and namespaced lists, single objects",
      async () => {
        expect(await names(["get", "services", "-A"]), "all services").toEqual([
          "service/db",
          "service/dns",
          "service/mesh",
          "service/web",
        ]);
        expect(await names(["get", "svc", "-n", "kube-system"]), "namespaced").toEqual(["service/dns"]);
        const one = await kubectl(["get", "svc", "web", "-n", "default", "-o", "json"]);
        expect(JSON.parse(one.out), "single object").toMatchObject({
          kind: "Service",
          apiVersion: "v1",
          metadata: { name: "web", namespace: "default" },
        });
        expect(await names(["get", "nodes"]), "cluster-scoped").toEqual(["node/node-1", "node/node-2"]);
        expect(await names(["get", "endpointslices", "-A"]), "discovery.k8s.io group").toEqual([]);
        const missing = await kubectl(["get", "svc", "nope", "-n", "default"]);
        expect(missing.code, "missing object").not.toBe(0);
        expect(missing.err, "NotFound message").toContain('"nope" not found');
      },
    );

    test.skipIf(!!noKubectl)("get: label and field selectors", async () => {
      expect(
        await names([
          "get",
          "svc",
          "-A",
          "-l",
          "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
        ]),
        "kube-proxy's selector",
      ).toEqual(["service/db", "service/web"]);
      expect(
        await names(["get", "svc", "-A", "-l", "service.kubernetes.io/service-proxy-name=mesh"]),
        "proxy name",
      ).toEqual(["service/mesh"]);
      expect(await names(["get", "svc", "-A", "-l", "app in (web,dns)"]), "in").toEqual([
        "service/dns",
        "service/web",
      ]);
      expect(await names(["get", "svc", "-A", "-l", "app notin (web,dns)"]), "notin").toEqual([
        "service/db",
        "service/mesh",
      ]);
      expect(await names(["get", "svc", "-A", "-l", "app!=web"]), "!=").toEqual([
        "service/db",
        "service/dns",
        "service/mesh",
      ]);
      expect(
        await names(["get", "pods", "-A", "--field-selector", "spec.nodeName=node-1"]),
        "pods of node-1",
      ).toEqual(["pod/a"]);
      expect(
        await names(["get", "nodes", "--field-selector", "metadata.name=node-2"]),
        "node by name",
      ).toEqual(["node/node-2"]);
      const bad = await kubectl(["get", "svc", "-A", "--field-selector", "spec.nodeName=x"]);
      expect(bad.code, "unsupported field label").not.toBe(0);
      expect(bad.err, "field label message").toContain("field label not supported");
    });

    test.skipIf(!!noKubectl)("a kubeconfig with a client certificate (as k3s writes) works too", async () => {
      const certApi = await startApiServer({
        kubeconfigAuth: "client-cert",
        objects: [svc("default", "web")],
      });
      try {
        expect(readFileSync(certApi.kubeconfigPath, "utf8"), "no token in it").not.toContain("token:");
        const p = Bun.spawn(
          [
            "kubectl",
            "--kubeconfig",
            certApi.kubeconfigPath,
            "--cache-dir",
            cache,
            "get",
            "svc",
            "-A",
            "-o",
            "name",
          ],
          { stdout: "pipe", stderr: "pipe", env: { ...process.env, HOME: cache } },
        );
        const [out, err, code] = await Promise.all([
          new Response(p.stdout).text(),
          new Response(p.stderr).text(),
          p.exited,
        ]);
        expect({ code, out: out.trim() }, `kubectl with a client certificate: ${err}`).toEqual({
          code: 0,
          out: "service/web",
        });
      } finally {
        await certApi.stop();
      }
    });

    test.skipIf(!!noKubectl)("get --chunk-size: limit/continue pages return every object once", async () => {
      const before = api.requests.length;
      expect(await names(["get", "svc", "-A", "--chunk-size", "1"]), "all pages").toEqual([
        "service/db",
        "service/dns",
        "service/mesh",
        "service/web",
      ]);
      const conts = api.requests.slice(before).filter((r) => r.includes("continue="));
      expect(conts.length, "continue requests").toBe(3);
    });

    test.skipIf(!!noKubectl)("get --watch: ADDED, MODIFIED and DELETED events as they happen", async () => {
      const p = Bun.spawn(
        [
          "kubectl",
          "--kubeconfig",
          api.kubeconfigPath,
          "--cache-dir",
          cache,
          "get",
          "svc",
          "-n",
          "watched",
          "--watch",
          "--output-watch-events",
          "-o",
          'jsonpath={.type} {.object.metadata.name} {.object.metadata.labels.v}{"\\n"}',
        ],
        { stdout: "pipe", stderr: "pipe", env: { ...process.env, HOME: cache } },
      );
      let out = "";
      const reader = (async () => {
        for await (const chunk of p.stdout) out += new TextDecoder().decode(chunk);
      })();
      try {
        const watchesBefore = api.watchCount;
        await until("kubectl's watch is open", () => api.watchCount > watchesBefore);
        api.create(svc("watched", "w1", { v: "1" }));
        api.update(svc("watched", "w1", { v: "2" }));
        api.create(svc("elsewhere", "w2"));
        api.delete(svc("watched", "w1"));
        await until("kubectl printed the delete", () => out.includes("DELETED"));
        expect(out.trim().split("\n"), "kubectl's watch output").toEqual([
          "ADDED w1 1",
          "MODIFIED w1 2",
          "DELETED w1 2",
        ]);
      } finally {
        p.kill();
        await p.exited;
        await reader;
      }
    });
  });

  test("list: resourceVersion, exact lists of the past, 410 Expired once compacted", async () => {
    const list = async (q: string) => {
      const r = await get(`/api/v1/namespaces/rv/services?${q}`);
      return { status: r.status, body: (await r.json()) as KubeObject };
    };
    api.create(svc("rv", "one"));
    const at = api.resourceVersion;
    api.create(svc("rv", "two"));
    const now = await list("");
    expect(
      now.body.items.map((o: KubeObject) => o.metadata.name),
      "current",
    ).toEqual(["one", "two"]);
    expect(Number(now.body.metadata.resourceVersion), "list resourceVersion").toBe(api.resourceVersion);
    const past = await list(`resourceVersion=${at}&resourceVersionMatch=Exact`);
    expect(
      past.body.items.map((o: KubeObject) => o.metadata.name),
      "exact list in the past",
    ).toEqual(["one"]);
    const page = await list("limit=1");
    expect(page.body.metadata.continue, "a continue token").toBeString();
    api.delete(svc("rv", "one"));
    const next = await list(`limit=1&continue=${page.body.metadata.continue}`);
    expect(
      next.body.items.map((o: KubeObject) => o.metadata.name),
      "next page is of the first page's version",
    ).toEqual(["two"]);
    api.compact();
    const gone = await list(`resourceVersion=${at}&resourceVersionMatch=Exact`);
    expect(gone.status, "exact list of a compacted version").toBe(410);
    expect(gone.body, "410 Status").toMatchObject({ kind: "Status", reason: "Expired", code: 410 });
    const goneLimit = await list(`resourceVersion=${at}&limit=10`);
    expect(goneLimit.status, "paged list of a compacted version (exact semantics)").toBe(410);
    expect((await list(`limit=1&continue=${page.body.metadata.continue}`)).status, "compacted continue").toBe(
      410,
    );
    expect((await list(`resourceVersion=${at}`)).status, "not-older-than list is served").toBe(200);
  });

  test("watch: chunked events, bookmarks, timeoutSeconds, ERROR 410 Expired for a compacted version", async () => {
    const rv0 = api.resourceVersion;
    api.create(svc("stream", "s1"));
    const r = await get(
      `/api/v1/namespaces/stream/services?watch=1&resourceVersion=${rv0}&allowWatchBookmarks=true&timeoutSeconds=1`,
    );
    expect(r.status, "watch status").toBe(200);
    expect(r.headers.get("transfer-encoding"), "chunked").toBe("chunked");
    const started = Date.now();
    const events = (await r.text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as KubeObject);
    expect(Date.now() - started, "stream ended by timeoutSeconds=1").toBeGreaterThanOrEqual(900);
    expect(events[0], "replayed event after the given version").toMatchObject({
      type: "ADDED",
      object: { kind: "Service", apiVersion: "v1", metadata: { name: "s1" } },
    });
    const bookmarks = events.filter((e) => e.type === "BOOKMARK");
    expect(bookmarks.length, "bookmarks every 100 ms").toBeGreaterThanOrEqual(3);
    expect(bookmarks[0]!.object.metadata.resourceVersion, "bookmark carries the current version").toBe(
      String(api.resourceVersion),
    );
    api.compact();
    const old = await get(`/api/v1/namespaces/stream/services?watch=1&resourceVersion=${rv0}`);
    expect(old.status, "an expired watch still answers 200").toBe(200);
    expect(JSON.parse((await old.text()).trim()), "ERROR event").toEqual({
      type: "ERROR",
      object: expect.objectContaining({ kind: "Status", code: 410, reason: "Expired" }),
    });
  });

  test("client-node Watch: selection changes become ADDED/DELETED; dropped connections end the watch", async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(api.kubeconfigPath);
    const seen: string[] = [];
    const ends: unknown[] = [];
    const watch = async () =>
      new Watch(kc).watch(
        "/api/v1/namespaces/sel/services",
        { labelSelector: "tier=front", resourceVersion: String(api.resourceVersion) },
        (type, obj) => seen.push(`${type} ${obj.metadata.name}`),
        (err) => ends.push(err ?? "clean"),
      );
    const before = api.watchCount;
    await watch();
    await until("watch open", () => api.watchCount === before + 1);
    api.create(svc("sel", "x", { tier: "back" }));
    api.update(svc("sel", "x", { tier: "front" }));
    api.update(svc("sel", "x", { tier: "back" }));
    await until("the leave event", () => seen.length >= 2);
    expect(seen, "events through the selector").toEqual(["ADDED x", "DELETED x"]);
    api.dropWatches("end");
    await until("clean end reported", () => ends.length === 1);
    expect(ends[0], "clean end").toBe("clean");
    await watch();
    await until("watch open again", () => api.watchCount === before + 1);
    api.dropWatches("reset");
    await until("reset reported", () => ends.length === 2);
    expect(ends[1], "reset is an error or a close").toBeDefined();
  });

  test("client-node ListWatch informer: sync, events, relist after 410 deletes what vanished", async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(api.kubeconfigPath);
    const { CoreV1Api } = await import("@kubernetes/client-node");
    const core = kc.makeApiClient(CoreV1Api);
    api.create(svc("inf", "keep"));
    api.create(svc("inf", "vanish"));
    const errors: unknown[] = [];
    const lw = new ListWatch(
      "/api/v1/namespaces/inf/services",
      new Watch(kc),
      () => core.listNamespacedService({ namespace: "inf" }),
      false,
    );
    lw.on("error", (e) => errors.push(e));
    const names = () =>
      lw
        .list()
        .map((o) => o.metadata?.name)
        .sort();
    try {
      await lw.start();
      expect(names(), "initial list").toEqual(["keep", "vanish"]);
      api.create(svc("inf", "new"));
      await until("ADDED seen", () => names().includes("new"));
      const watchesBefore = api.watchCount;
      api.dropWatches("expire");
      await until("rewatch after the expired watch", () => api.watchCount === watchesBefore);
      api.delete(svc("inf", "vanish"));
      await until("delete seen", () => !names().includes("vanish"));
      expect(names(), "after relist and delete").toEqual(["keep", "new"]);
      await api.setDown(true);
      await until("informer error while down", () => errors.length > 0);
      api.delete(svc("inf", "new"));
      api.compact();
      await api.setDown(false);
      await lw.start();
      await until("relist after 410 removed the object deleted while away", () => !names().includes("new"));
      expect(names(), "converged").toEqual(["keep"]);
      expect(
        api.requests.filter(
          (r) => /^GET \/api\/v1\/namespaces\/inf\/services(\?|$)/.test(r) && !r.includes("watch="),
        ).length,
        "lists: initial, after expire, after 410",
      ).toBeGreaterThanOrEqual(3);
    } finally {
      await lw.stop();
    }
  });

  test("unreachable: refused, then reset, then hanging, then back on the same URL", async () => {
    await api.setDown(true, "refuse");
    const refused = await get("/api/v1/services").then(
      () => "answered",
      (e: Error & { code?: string }) => e.code ?? e.message,
    );
    expect(["ConnectionRefused", "ECONNREFUSED"], "connection refused").toContain(refused);
    await api.setDown(false);
    await api.setDown(true, "reset");
    const reset = await get("/api/v1/services").then(
      () => "answered",
      () => "failed",
    );
    expect(reset, "connection reset").toBe("failed");
    await api.setDown(false);
    expect((await get("/api/v1/services")).status, "back up").toBe(200);
    await api.setDown(true, "hang");
    let answered = false;
    const held = get("/api/v1/services").then((r) => {
      answered = true;
      return r.status;
    });
    await until("the held request reached the server", () => api.requests.at(-1) === "GET /api/v1/services");
    expect(answered, "no answer while hanging").toBe(false);
    await api.setDown(false);
    expect(await held, "answered once back").toBe(200);
  });
});
