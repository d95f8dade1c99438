/**
 * Kubernetes e2e behaviours around backends that go away or terminate, through kpr on node-1 of
 * the namespace cluster (_cluster.ts):
 *
 *  - "should preserve UDP traffic when a server pod cycles" (test/e2e/network/service.go): a
 *    connected UDP client of a ClusterIP (socket LB) whose backend is replaced gets ECONNABORTED
 *    (kpr destroys the socket, kernel ≥ 6.5) and its new socket reaches the new pod — from the
 *    node itself and from a pod namespace. The old pod's server keeps running, so a client that
 *    was not told would keep getting its answers.
 *  - kube-proxy's conntrack cleanup for removed UDP endpoints (pkg/proxy/conntrack): a UDP flow
 *    from outside to a NodePort moves to a live backend once its backend leaves the service,
 *    also when the backend stays programmed for another service (kpr's CT entry still names it).
 *  - "should keep an established connection to a terminating endpoint" (KEP-1672): TCP
 *    connections to an endpoint that turns terminating (ready=false, serving=true) keep working
 *    through the socket path and tc, while new connections go to the ready endpoint.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { kernelVersion, needs } from "../harness/env.ts";
import { type SpawnHandle, type Topology, useTopology } from "../harness/netns.ts";
import { BUN, httpGet } from "../harness/servers.ts";
import { holdConnection, startAgent } from "./_agent.ts";
import {
  ADDR,
  buildCluster,
  dnsPort,
  HTTP_PORT,
  httpPort,
  kprOk,
  NS,
  POD_NAMES,
  writeManifests,
} from "./_cluster.ts";
import { node, service } from "./_manifests.ts";

const BIN = join(import.meta.dir, "bin");
/** A client-only pod on node-1 (in kpr's cgroup tree, its own network namespace). */
type Endpoint = { ip: string; nodeName: string };
const POD_C = { ns: "pod-c", addr: "10.244.1.12", gw: "10.244.1.1" };

const A: Endpoint = { ip: ADDR.podA, nodeName: "node-1" };
const B: Endpoint = { ip: ADDR.podB, nodeName: "node-1" };

interface State {
  /** the endpoint of service "cycle" (ClusterIP 10.96.0.54:53/UDP) */
  cycle: Endpoint;
  /** the endpoint of service "moving" (NodePort 30055/UDP); "pinned" (30056/UDP) always has A */
  moving: Endpoint;
  /** service "web" (NodePort 30080/TCP): A ready, or A terminating next to B ready */
  web: "A" | "A-terminating+B";
}

/** The whole input for a state (every apply carries every service: only endpoints change). */
function manifests(s: State): object[] {
  const web = service({
    name: "web",
    type: "NodePort",
    clusterIP: "10.96.0.80",
    ports: [httpPort(30080)],
    endpoints: s.web === "A" ? [A] : [A, B],
  });
  if (s.web !== "A") {
    // EndpointSlice conditions of a pod being deleted that still serves (KEP-1672)
    const slice = web[1] as { endpoints: { addresses: string[]; conditions: object }[] };
    for (const e of slice.endpoints)
      if (e.addresses[0] === A.ip) e.conditions = { ready: false, serving: true, terminating: true };
  }
  return [
    node("node-1", ADDR.node1),
    ...service({
      name: "cycle",
      type: "ClusterIP",
      clusterIP: "10.96.0.54",
      ports: [dnsPort()],
      endpoints: [s.cycle],
    }),
    ...service({
      name: "moving",
      type: "NodePort",
      clusterIP: "10.96.0.55",
      ports: [dnsPort(30055)],
      endpoints: [s.moving],
    }),
    ...service({
      name: "pinned",
      type: "NodePort",
      clusterIP: "10.96.0.56",
      ports: [dnsPort(30056)],
      endpoints: [A],
    }),
    ...web,
  ];
}

const INITIAL: State = { cycle: A, moving: A, web: "A" };

async function apply(t: Topology, s: State, file: string): Promise<string> {
  const path = await writeManifests(t, file, manifests(s));
  const r = await kprOk(t, ["apply", "-f", path]);
  return r.stdout + r.stderr;
}

/** A client pod namespace routed like the others (node-1 holds the gateway address). */
async function addClientPod(t: Topology): Promise<void> {
  await t.addNs(POD_C.ns);
  await t.veth(NS.node1, "vpc", POD_C.ns, "pod0", { addrA: `${POD_C.gw}/32`, addrB: `${POD_C.addr}/32` });
  await t.route(NS.node1, `${POD_C.addr}/32`, { dev: "vpc" });
  await t.run(POD_C.ns, ["ip", "route", "add", `${POD_C.gw}/32`, "dev", "pod0", "scope", "link"]);
  await t.route(POD_C.ns, "default", { via: POD_C.gw, dev: "pod0" });
}

/**
 * The first error a connected UDP client sees once kpr destroyed its socket: the socket's
 * ECONNABORTED, or, when the client's next send comes before the event loop reports that,
 * EDESTADDRREQ (bpf_sock_destroy also disconnected the socket, which nothing else here does).
 */
const DESTROYED_SOCKET_ERROR = /^error (ECONNABORTED|EDESTADDRREQ)/;

/** A running udp-hold.ts client: its replies (backend names) and errors, in order. */
class UdpHold {
  constructor(
    readonly what: string,
    readonly handle: SpawnHandle,
  ) {}
  lines(): string[] {
    return this.handle.output().split("\n");
  }
  /** backend names of the replies, in order */
  replies(): string[] {
    return this.lines()
      .filter((l) => l.startsWith("#"))
      .map((l) => l.split(" ")[1]!);
  }
  errors(): string[] {
    return this.lines().filter((l) => l.startsWith("error"));
  }
  /** Waits until `pred` holds on the output; throws with the output after timeoutMs. */
  async until(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > end)
        throw new Error(`${this.what}: ${what} within ${timeoutMs} ms; output:\n${this.handle.output()}`);
      await Bun.sleep(20);
    }
  }
}

function startUdpHold(
  t: Topology,
  ns: string,
  addr: string,
  port: number,
  opts: { cgroup?: boolean; sport?: number } = {},
): UdpHold {
  const argv = [BUN, join(BIN, "udp-hold.ts"), addr, String(port), "50"];
  if (opts.sport) argv.push("--sport", String(opts.sport));
  const handle = opts.cgroup ? t.spawnInCgroup(ns, argv) : t.spawn(ns, argv, { nsenter: true });
  return new UdpHold(`udp client ${ns} → ${addr}:${port}`, handle);
}

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "curl", "sysctl"] },
  "e2e semantics (UDP, terminating)",
);
const [kMaj, kMin] = kernelVersion();
const noSockDestroy =
  kMaj < 6 || (kMaj === 6 && kMin < 5)
    ? `kernel ${kMaj}.${kMin} has no bpf_sock_destroy (needs ≥ 6.5)`
    : undefined;

describe.skipIf(!!skip)(
  "e2e: removed and terminating backends (kube-proxy / Kubernetes e2e semantics)",
  () => {
    const topo = useTopology({
      setup: async (t) => {
        await buildCluster(t);
        await addClientPod(t);
        await apply(t, INITIAL, "initial.yaml");
      },
    });

    test.skipIf(!!noSockDestroy)(
      "should preserve UDP traffic when a server pod cycles (ClusterIP, connected sockets on the node and in a pod)",
      async () => {
        const t = topo();
        // the probe says why this test can run
        const probe = await kprOk(t, ["bpf", "probe", "-o", "json"]);
        const feature = (
          JSON.parse(probe.stdout).features as { name: string; present: boolean; detail: string }[]
        ).find((f) => f.name.includes("bpf_sock_destroy"));
        expect(feature?.present, `kpr bpf probe: bpf_sock_destroy feature: ${JSON.stringify(feature)}`).toBe(
          true,
        );

        await apply(t, INITIAL, "cycle-0.yaml");
        const clients = [
          startUdpHold(t, NS.node1, "10.96.0.54", 53, { cgroup: true }),
          startUdpHold(t, POD_C.ns, "10.96.0.54", 53, { cgroup: true }),
        ];
        try {
          for (const c of clients)
            await c.until("a reply from pod-a", () => c.replies().includes(POD_NAMES.podA));
          // pod-a is replaced by pod-b; pod-a's server keeps answering whoever still sends to it
          const out = await apply(t, { ...INITIAL, cycle: B }, "cycle-1.yaml");
          for (const c of clients) {
            await c.until("an error on the old socket", () => c.errors().length > 0);
            expect(c.errors()[0], `${c.what}: the first error is the destroyed socket's`).toMatch(
              DESTROYED_SOCKET_ERROR,
            );
            await c.until(
              "replies from pod-b after reconnecting",
              () =>
                c
                  .replies()
                  .slice(-3)
                  .every((n) => n === POD_NAMES.podB) && c.replies().slice(-3).length === 3,
            );
            expect(c.errors().length, `${c.what}: one error, then the new socket works: ${c.errors()}`).toBe(
              1,
            );
          }
          expect(out, "apply says what it destroyed").toMatch(/2 sockets destroyed/);
        } finally {
          for (const c of clients) await c.handle.kill();
          await apply(t, INITIAL, "cycle-2.yaml");
        }
      },
    );

    test("should clear conntrack for a removed UDP endpoint: a NodePort flow from outside moves to a live backend (tc)", async () => {
      const t = topo();
      await apply(t, INITIAL, "ct-0.yaml");
      // one 5-tuple for the whole test: the client's connected socket on a fixed source port
      const c = startUdpHold(t, NS.client, ADDR.node1, 30055, { sport: 40555 });
      try {
        await c.until("a reply from pod-a", () => c.replies().includes(POD_NAMES.podA));
        // pod-a leaves "moving" but stays the backend of "pinned": kpr_lb4_be keeps it, so only the
        // CT entry's cleanup can move the flow
        const out = await apply(t, { ...INITIAL, moving: B }, "ct-1.yaml");
        const before = c.replies().length;
        await c.until(
          "replies from pod-b on the same flow",
          () =>
            c
              .replies()
              .slice(before)
              .filter((n) => n === POD_NAMES.podB).length >= 3,
        );
        const after = c.replies().slice(before);
        const lastA = after.lastIndexOf(POD_NAMES.podA);
        expect(
          after.slice(lastA + 1).every((n) => n === POD_NAMES.podB),
          `once moved, the flow stays on pod-b: ${after.join(" ")}`,
        ).toBe(true);
        expect(c.errors(), `${c.what}: no errors`).toEqual([]);
        expect(out, "apply reports the cleared CT entries").toMatch(
          /UDP backends removed \(10\.244\.1\.10:5353; 4 frontend\/backend pairs\): [1-9]\d* CT/,
        );
        // the other service's flows to pod-a are left alone
        const p = startUdpHold(t, NS.client, ADDR.node1, 30056);
        try {
          await p.until("pinned still answers from pod-a", () => p.replies().includes(POD_NAMES.podA));
        } finally {
          await p.handle.kill();
        }
      } finally {
        await c.handle.kill();
        await apply(t, INITIAL, "ct-2.yaml");
      }
    });

    /**
     * One held TCP connection through `path` while pod-a turns terminating next to a ready pod-b:
     * it must keep answering from pod-a on the same connection, and new connections must go to
     * pod-b only.
     */
    async function terminatingCase(path: "socket" | "tc"): Promise<void> {
      const t = topo();
      await apply(t, INITIAL, `term-${path}-0.yaml`);
      const h =
        path === "socket"
          ? await holdConnection(t, NS.node1, "10.96.0.80", 80, { cgroup: true })
          : await holdConnection(t, NS.client, ADDR.node1, 30080);
      try {
        expect(h.backends(), `${h.what} starts on pod-a`).toEqual([POD_NAMES.podA]);
        await apply(t, { ...INITIAL, web: "A-terminating+B" }, `term-${path}-1.yaml`);
        await h.more(10);
        expect(h.errors(), `${h.what}: no errors after pod-a turned terminating`).toEqual([]);
        expect(h.backends(), `${h.what}: still on pod-a`).toEqual([POD_NAMES.podA]);
        expect(h.clientEnds().length, `${h.what}: one connection throughout`).toBe(1);
        const fresh: string[] = [];
        for (let i = 0; i < 8; i++) {
          const r =
            path === "socket"
              ? await httpGet(t, NS.node1, "http://10.96.0.80:80/", { cgroup: true, timeoutMs: 3000 })
              : await httpGet(t, NS.client, `http://${ADDR.node1}:30080/`, { timeoutMs: 3000 });
          fresh.push(r.echo?.name ?? `error ${r.curlCode}`);
        }
        expect(fresh, `new connections (${path}) go to the ready endpoint only`).toEqual(
          Array(8).fill(POD_NAMES.podB),
        );
      } finally {
        await h.stop();
        await apply(t, INITIAL, `term-${path}-2.yaml`);
      }
    }

    test("should keep an established connection to a terminating endpoint (socket path: ClusterIP from the node); new connections go to the ready one", () =>
      terminatingCase("socket"));

    // Fails before main's 983c396 (terminating endpoints behind ready ones stay programmed): the
    // backend was deleted and tc re-balanced the tracked flow to pod-b, which reset it.
    test("should keep an established connection to a terminating endpoint (tc: NodePort from a client namespace); new connections go to the ready one", () =>
      terminatingCase("tc"));

    test.skipIf(!!noSockDestroy)(
      "should preserve UDP traffic when a server pod cycles under kpr run --manifest (the daemon's incremental sync)",
      async () => {
        const t = topo();
        await apply(t, INITIAL, "daemon-0.yaml");
        const dir = join(t.tmpDir, "daemon-manifests");
        mkdirSync(dir, { recursive: true });
        const write = (st: State) =>
          writeFileSync(
            join(dir, "all.yaml"),
            manifests(st)
              .map((o) => stringify(o))
              .join("---\n"),
          );
        write(INITIAL);
        const agent = await startAgent(t, NS.node1, ["--manifest", dir]);
        const c = startUdpHold(t, NS.node1, "10.96.0.54", 53, { cgroup: true });
        try {
          await agent.waitReady();
          await c.until("a reply from pod-a", () => c.replies().includes(POD_NAMES.podA));
          const from = agent.log().length;
          write({ ...INITIAL, cycle: B });
          await agent.waitLog(/sockets destroyed/, 10_000, from);
          await c.until("an error on the old socket", () => c.errors().length > 0);
          expect(c.errors()[0], `${c.what}: the first error is the destroyed socket's`).toMatch(
            DESTROYED_SOCKET_ERROR,
          );
          await c.until(
            "replies from pod-b after reconnecting",
            () =>
              c.replies().slice(-3).length === 3 &&
              c
                .replies()
                .slice(-3)
                .every((n) => n === POD_NAMES.podB),
          );
          expect(agent.log().slice(from), "the sync says what it destroyed").toMatch(/1 sockets destroyed/);
        } finally {
          await c.handle.kill();
          expect(await agent.stop(), `kpr run exits 0 on SIGTERM: ${agent.tail()}`).toBe(0);
          await apply(t, INITIAL, "daemon-1.yaml");
        }
      },
    );

    test("pod-a still serves directly (the tests above reach it only through kpr)", async () => {
      const r = await httpGet(topo(), NS.node1, `http://${ADDR.podA}:${HTTP_PORT}/`, { timeoutMs: 3000 });
      expect(r.echo?.name, `pod-a: ${r.stderr}`).toBe(POD_NAMES.podA);
    });
  },
);
