/**
 * `kpr explain` end to end on node-1 of the namespace cluster: each decision kind of the tc
 * ingress program explained with the real programs and maps, and every pinned map byte-identical
 * (counters included) after each explain.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { BpfMap } from "../../src/datapath/bpf.ts";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";
import { httpGet, udpRequest } from "../harness/servers.ts";
import {
  ADDR,
  buildCluster,
  DEVICE,
  dnsPort,
  httpPort,
  kprOk,
  LOCAL_ENDPOINTS,
  NS,
  POD_NAMES,
  REMOTE_ENDPOINT,
  writeManifests,
} from "./_cluster.ts";
import { node, service } from "./_manifests.ts";

const LB_IP = "203.0.113.20";

function withSourceRanges(objects: object[], ranges: string[]): object[] {
  return objects.map((o) => {
    const svc = o as { kind: string; spec: Record<string, unknown> };
    return svc.kind === "Service" ? { ...svc, spec: { ...svc.spec, loadBalancerSourceRanges: ranges } } : o;
  });
}

const MANIFESTS = [
  node("node-1", ADDR.node1),
  ...service({
    name: "web",
    type: "NodePort",
    clusterIP: "10.96.0.80",
    ports: [httpPort(30080), dnsPort(30053)],
    endpoints: LOCAL_ENDPOINTS,
  }),
  ...service({
    name: "remote",
    type: "NodePort",
    clusterIP: "10.96.0.90",
    ports: [httpPort(30090)],
    endpoints: [REMOTE_ENDPOINT],
  }),
  ...service({
    name: "sticky",
    type: "NodePort",
    clusterIP: "10.96.0.93",
    ports: [httpPort(30093)],
    affinitySeconds: 600,
    endpoints: LOCAL_ENDPOINTS,
  }),
  ...withSourceRanges(
    service({
      name: "ranged",
      type: "LoadBalancer",
      clusterIP: "10.96.0.94",
      ports: [httpPort(30094)],
      loadBalancerIPs: [LB_IP],
      endpoints: LOCAL_ENDPOINTS,
    }),
    ["10.10.0.0/16"],
  ),
  ...service({
    name: "empty",
    type: "NodePort",
    clusterIP: "10.96.0.95",
    ports: [httpPort(30095)],
    endpoints: [],
  }),
  ...service({
    name: "local-only",
    type: "NodePort",
    clusterIP: "10.96.0.96",
    ports: [httpPort(30096)],
    externalTrafficPolicy: "Local",
    endpoints: [REMOTE_ENDPOINT],
  }),
];

interface Explained {
  verdict: string;
  reason: string;
  frontend?: {
    id: number;
    name?: string;
    trafficPolicy: string;
    affinityTimeout?: number;
    sourceRanges: boolean;
  };
  backend?: { id: number; address: string; port: number; local: boolean; state: string };
  output?: { src: string; dst: string };
  why: string[];
  ctHit: boolean;
  affinity: boolean;
  sideEffects?: string[];
}

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter", "curl", "sysctl"] }, "e2e explain");

describe.skipIf(!!skip)("e2e: kpr explain on a programmed node", () => {
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      // IPv6 neighbour discovery / MLD would keep moving the real pass-not-l4 counter
      for (const ns of [NS.fabric, NS.client, NS.node1, NS.node2])
        await t.run(ns, [
          "sysctl",
          "-q",
          "-w",
          "net.ipv6.conf.all.disable_ipv6=1",
          "net.ipv6.conf.default.disable_ipv6=1",
        ]);
      await kprOk(t, ["apply", "-f", await writeManifests(t, "services.yaml", MANIFESTS)]);
    },
  });

  const dumpMaps = (): Record<string, string[]> => {
    const dir = `${topo().bpfRoot}/maps`;
    const out: Record<string, string[]> = {};
    for (const name of readdirSync(dir).sort()) {
      using m = BpfMap.openPinned(`${dir}/${name}`);
      out[name] = [...m.entries()]
        .map(([k, v]) => `${Buffer.from(k).toString("hex")}=${Buffer.from(v).toString("hex")}`)
        .sort();
    }
    return out;
  };

  /** A dump taken once two dumps 500 ms apart agree (background ARP moves pass-not-l4), within 15 s. */
  const quietDump = async (): Promise<Record<string, string[]>> => {
    const deadline = Date.now() + 15_000;
    let prev = dumpMaps();
    for (;;) {
      await Bun.sleep(500);
      const cur = dumpMaps();
      if (Bun.deepEquals(cur, prev) || Date.now() > deadline) return cur;
      prev = cur;
    }
  };

  /**
   * Runs explain -o json and checks every pinned map is byte-identical afterwards. The node's real
   * datapath keeps counting background packets (ARP), so a run whose window saw such a packet is
   * repeated, up to 3 times: a write by explain itself would differ every time.
   */
  const explain = async (
    src: string,
    dst: string,
    proto = "tcp",
    extra: string[] = [],
  ): Promise<Explained> => {
    for (let attempt = 1; ; attempt++) {
      const before = await quietDump();
      const r = await kprOk(topo(), [
        "explain",
        ...(src ? ["--src", src] : []),
        "--dst",
        dst,
        "--proto",
        proto,
        ...extra,
        "-o",
        "json",
      ]);
      const after = dumpMaps();
      if (Bun.deepEquals(after, before) || attempt === 3) {
        expect(after, `pinned maps byte-identical after explain ${src} -> ${dst}/${proto}`).toEqual(before);
        return JSON.parse(r.stdout) as Explained;
      }
    }
  };

  test("NodePort to local backends: new flow, DNAT only", async () => {
    const r = await explain(`${ADDR.client}:41000`, `${ADDR.node1}:30080`);
    expect(r.reason, JSON.stringify(r)).toBe("lb-new");
    expect(r.verdict, "passed to the stack").toBe("pass");
    expect(r.frontend?.name, "frontend named").toContain("default/web");
    expect([ADDR.podA, ADDR.podB] as string[], "a local pod").toContain(r.backend?.address ?? "");
    expect(r.backend?.local, "local").toBe(true);
    expect(r.output, "destination rewritten, client kept").toEqual({
      src: `${ADDR.client}:41000`,
      dst: `${r.backend?.address}:8080`,
    });
  });

  test("NodePort to a remote backend: DNAT + SNAT to the node's address, redirected", async () => {
    const warm = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30090/`, { timeoutMs: 3000 });
    expect(warm.echo?.name, `real traffic reaches the remote pod: ${warm.stderr}`).toBe(POD_NAMES.podR);
    const r = await explain(`${ADDR.client}:41001`, `${ADDR.node1}:30090`);
    expect(r.reason, JSON.stringify(r)).toBe("snat-new");
    expect(r.verdict, "redirected").toBe("redirect");
    expect(r.backend?.address, "remote pod").toBe(REMOTE_ENDPOINT.ip);
    expect(r.backend?.local, "remote").toBe(false);
    expect(r.output?.dst, "to the remote pod").toBe(`${REMOTE_ENDPOINT.ip}:8080`);
    expect(r.output?.src.startsWith(`${ADDR.node1}:`), `SNAT source is node-1: ${r.output?.src}`).toBe(true);
  });

  test("CT hit after real traffic: the tracked backend", async () => {
    const sport = 41234;
    const real = await udpRequest(topo(), NS.client, ADDR.node1, 30053, "hi", { sport });
    expect(real.echo?.name, `real UDP answered: ${real.stderr}`).toBeDefined();
    const r = await explain(`${ADDR.client}:${sport}`, `${ADDR.node1}:30053`, "udp");
    expect(r.reason, JSON.stringify(r)).toBe("lb-ct");
    expect(r.ctHit, "CT hit").toBe(true);
    const want = real.echo?.name === POD_NAMES.podA ? ADDR.podA : ADDR.podB;
    expect(r.backend?.address, "the pod that answered the real flow").toBe(want);
  });

  test("affinity: the client's real entry chooses the backend for a new flow", async () => {
    const real = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30093/`, { timeoutMs: 3000 });
    expect(real.echo?.name, `real traffic: ${real.stderr}`).toBeDefined();
    const want = real.echo?.name === POD_NAMES.podA ? ADDR.podA : ADDR.podB;
    for (const port of [42000, 42001, 42002, 42003]) {
      const r = await explain(`${ADDR.client}:${port}`, `${ADDR.node1}:30093`);
      expect(r.reason, JSON.stringify(r)).toBe("lb-new");
      expect(r.affinity, "affinity decided").toBe(true);
      expect(r.backend?.address, "the client's pinned pod").toBe(want);
    }
  });

  test("source range miss: dropped", async () => {
    const r = await explain(`${ADDR.client}:41002`, `${LB_IP}:80`);
    expect(r.reason, JSON.stringify(r)).toBe("drop-src-range");
    expect(r.verdict, "dropped").toBe("drop");
    expect(r.frontend?.sourceRanges, "frontend has source ranges").toBe(true);
    const ok = await explain("10.10.3.4:41002", `${LB_IP}:80`);
    expect(ok.reason, "a source inside the range is balanced").toBe("lb-new");
  });

  test("no endpoints: a TCP SYN is refused with a RST", async () => {
    const r = await explain(`${ADDR.client}:41003`, `${ADDR.node1}:30095`);
    expect(r.reason, JSON.stringify(r)).toBe("reject-rst");
    expect(r.output, "RST back to the client").toEqual({
      src: `${ADDR.node1}:30095`,
      dst: `${ADDR.client}:41003`,
    });
  });

  test("externalTrafficPolicy Local with endpoints elsewhere only: dropped", async () => {
    const r = await explain(`${ADDR.client}:41004`, `${ADDR.node1}:30096`);
    expect(r.reason, JSON.stringify(r)).toBe("drop-no-backend");
    expect(r.frontend?.trafficPolicy, "policy").toBe("Local");
  });

  test("--local: a ClusterIP connect from node-1 is translated to a pod, nothing leaves, no state changes", async () => {
    for (const proto of ["tcp", "udp"]) {
      const r = await explain("", proto === "tcp" ? "10.96.0.80:80" : "10.96.0.80:53", proto, ["--local"]);
      expect(r.reason, JSON.stringify(r)).toBe("sock-lb");
      expect(r.verdict, "translated").toBe("translated");
      expect(r.frontend?.name, "frontend named").toContain("default/web");
      expect([ADDR.podA, ADDR.podB] as string[], "a local pod").toContain(r.backend?.address ?? "");
      expect(r.output?.dst, "connect goes to the backend").toBe(
        `${r.backend?.address}:${proto === "tcp" ? 8080 : 5353}`,
      );
      expect(r.why.join("\n"), "connect ended in the empty namespace (ENETUNREACH)").not.toContain(
        "expected ENETUNREACH",
      );
      expect(r.sideEffects, "cgroup.root is a subtree here: kpr's own hook did not run").toEqual([]);
    }
  });

  test("--local: ClientIP affinity of node-1's namespace picks the pod a real connect got", async () => {
    const real = await httpGet(topo(), NS.node1, "http://10.96.0.93:80/", { cgroup: true, timeoutMs: 3000 });
    expect(real.echo?.name, `real ClusterIP request from node-1's cgroup: ${real.stderr}`).toBeDefined();
    const want = real.echo?.name === POD_NAMES.podA ? ADDR.podA : ADDR.podB;
    for (let i = 0; i < 4; i++) {
      const r = await explain("", "10.96.0.93:80", "tcp", ["--local"]);
      expect(r.affinity, JSON.stringify(r)).toBe(true);
      expect(r.backend?.address, "the namespace's pinned pod").toBe(want);
    }
    const pod = await explain("", "10.96.0.93:80", "tcp", ["--local", "--from", "pod"]);
    expect(pod.affinity, "a pod's namespace has its own affinity").toBe(false);
  });

  test("--local: no endpoints and a source outside the ranges are refused with EPERM", async () => {
    const empty = await explain("", "10.96.0.95:80", "tcp", ["--local"]);
    expect(empty.reason, JSON.stringify(empty)).toBe("sock-reject");
    expect(empty.verdict).toBe("refused (EPERM)");
    const out = await explain("192.168.99.1:40000", `${LB_IP}:80`, "tcp", ["--local"]);
    expect(out.reason, JSON.stringify(out)).toBe("drop-src-range");
    expect(out.verdict).toBe("refused (EPERM)");
    const inside = await explain("10.10.3.4:40000", `${LB_IP}:80`, "tcp", ["--local"]);
    expect(inside.reason, "a bound source inside the ranges is balanced").toBe("sock-lb");
    const none = await explain("", "10.96.7.7:80", "tcp", ["--local"]);
    expect(none.reason, "not a frontend").toBe("pass");
    expect(none.verdict).toBe("unchanged");
  });

  test("table output and input errors", async () => {
    const t = await kprOk(topo(), [
      "explain",
      "--src",
      `${ADDR.client}:41005`,
      "--dst",
      `${ADDR.node1}:30080`,
      "--device",
      DEVICE,
    ]);
    expect(t.stdout, "table").toContain("Verdict");
    expect(t.stdout, "why").toContain("Why:");
    const bad = await topo().kpr(NS.node1, ["explain", "--src", "10.0.0.1", "--dst", `${ADDR.node1}:30080`]);
    expect(bad.code, `bad --src exits 2: ${bad.stderr}`).toBe(2);
    const dev = await topo().kpr(NS.node1, [
      "explain",
      "--src",
      "10.0.0.1:1",
      "--dst",
      `${ADDR.node1}:30080`,
      "--device",
      "nosuch0",
    ]);
    expect(dev.code, `unknown device exits 2: ${dev.stderr}`).toBe(2);
    const loc = await kprOk(topo(), ["explain", "--local", "--dst", "10.96.0.80:80"]);
    expect(loc.stdout, "--local table").toContain("Connect");
    expect(loc.stdout).toContain("from a process in the node's network namespace");
    const both = await topo().kpr(NS.node1, [
      "explain",
      "--local",
      "--device",
      DEVICE,
      "--dst",
      "10.96.0.80:80",
    ]);
    expect(both.code, `--local with --device exits 2: ${both.stderr}`).toBe(2);
    const nosrc = await topo().kpr(NS.node1, ["explain", "--dst", "10.96.0.80:80"]);
    expect(nosrc.code, `no --src without --local exits 2: ${nosrc.stderr}`).toBe(2);
  });
});
