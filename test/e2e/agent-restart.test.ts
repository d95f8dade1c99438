/**
 * End-to-end: restarting the node agent is never an outage. On node-1 of the namespace cluster
 * (see _cluster.ts), `kpr run --manifest DIR` serves a NodePort and a ClusterIP service while
 * long-lived keep-alive TCP connections (bin/hold.ts) run through both; then the daemon is
 * stopped with SIGTERM and restarted, and replaced by a genuinely different build (another
 * version, a changed tc program): no connection breaks, the datapath keeps serving while no
 * daemon runs, and the programmed maps are not rewritten. Finally the daemon is killed with
 * SIGKILL in the middle of a sync, and a restart converges with nothing orphaned.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { needs } from "../harness/env.ts";
import { pollUntil, useTopology } from "../harness/netns.ts";
import {
  type Agent,
  agentMissing,
  answers,
  buildVariant,
  datapathSnapshot,
  frontends,
  type HeldConnection,
  holdConnection,
  killAtSyscall,
  mapCounts,
  pollFrontends,
  pollTraffic,
  serviceList,
  showFrontends,
  startAgent,
  type VariantBuild,
} from "./_agent.ts";
import { ADDR, buildCluster, DEVICE, httpPort, NS, POD_NAMES } from "./_cluster.ts";
import { type EndpointSpec, node, service } from "./_manifests.ts";

const A: EndpointSpec = { ip: ADDR.podA, nodeName: "node-1" };
const B: EndpointSpec = { ip: ADDR.podB, nodeName: "node-1" };
const WEB_IP = "10.96.0.80";
const WEB_NP = 30080;

/** `n` ClusterIP services (10.97.x.y:80, two endpoints each): a sync that takes a while. */
function many(n: number): object[] {
  const out: object[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      ...service({
        name: `bulk-${i}`,
        type: "ClusterIP",
        clusterIP: `10.97.${i >> 8}.${i & 255}`,
        ports: [httpPort()],
        endpoints: [A, B],
      }),
    );
  }
  return out;
}

const skip =
  needs(
    { root: true, built: true, tools: ["ip", "nsenter", "curl", "python3", "bpftool", "clang", "strace"] },
    "e2e agent restarts",
  ) ?? agentMissing("e2e agent restarts");

describe.skipIf(!!skip)("e2e: kpr run restarts and upgrades without breaking a connection", () => {
  let dir = "";
  let variant: VariantBuild;
  const write = (file: string, objects: object[]) =>
    writeFileSync(join(dir, file), objects.map((o) => stringify(o)).join("---\n"));
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      dir = join(t.tmpDir, "manifests");
      mkdirSync(dir);
      writeFileSync(join(dir, "node.yaml"), stringify(node("node-1", ADDR.node1)));
      variant = await buildVariant(join(t.tmpDir, "variant"));
    },
  });
  let agent: Agent;
  let held: HeldConnection[] = [];

  /** Every held connection answers n more times, from one backend, on one TCP connection. */
  async function allAlive(n: number, when: string): Promise<void> {
    for (const c of held) {
      await c.more(n).catch((e: Error) => {
        throw new Error(`${when}: ${e.message}\n${agent.tail()}`);
      });
      expect(c.errors(), `${c.what} ${when}: no error`).toEqual([]);
      expect(c.backends().length, `${c.what} ${when}: one backend throughout (${c.backends()})`).toBe(1);
      expect(c.clientEnds().length, `${c.what} ${when}: one TCP connection throughout`).toBe(1);
    }
  }

  test("SIGTERM leaves the datapath serving; a restart keeps held connections and rewrites nothing", async () => {
    write(
      "web.yaml",
      service({
        name: "web",
        type: "NodePort",
        clusterIP: WEB_IP,
        ports: [httpPort(WEB_NP)],
        endpoints: [A, B],
      }),
    );
    agent = await startAgent(topo(), NS.node1, ["--manifest", dir], { name: "first" });
    await agent.waitReady();
    held = [
      await holdConnection(topo(), NS.client, ADDR.node1, WEB_NP),
      await holdConnection(topo(), NS.node1, WEB_IP, 80, { cgroup: true }),
    ];
    await allAlive(3, "before the restart");
    const list = showFrontends(frontends(await serviceList(topo(), NS.node1)));
    const snap = datapathSnapshot(topo());

    expect(await agent.stop(), `exit code after SIGTERM\n${agent.tail()}`).toBe(0);
    await allAlive(5, "while no daemon runs");
    expect(showFrontends(frontends(await serviceList(topo(), NS.node1))), "service list with no daemon").toBe(
      list,
    );
    expect(datapathSnapshot(topo()), "maps and pinned links with no daemon").toEqual(snap);
    const fresh = await answers(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, 6);
    expect(
      Object.keys(fresh).every((k) => k === POD_NAMES.podA || k === POD_NAMES.podB),
      `new NodePort connections with no daemon: ${JSON.stringify(fresh)}`,
    ).toBe(true);

    agent = await startAgent(topo(), NS.node1, ["--manifest", dir], { name: "second" });
    await agent.waitReady();
    await allAlive(5, "after the restart");
    expect(
      datapathSnapshot(topo()),
      "after a restart with the same binary and input: byte-identical maps, the same links and programs",
    ).toEqual(snap);
    expect(showFrontends(frontends(await serviceList(topo(), NS.node1))), "service list after restart").toBe(
      list,
    );
  });

  test("an upgrade to a different build keeps held connections and loads the new programs", async () => {
    const before = datapathSnapshot(topo());
    const v = await topo().exec(NS.node1, [variant.bin, "version"]);
    expect(v.stdout, "the upgrade binary reports its own version").toContain(variant.version);

    expect(await agent.stop(), `exit code of the old daemon after SIGTERM\n${agent.tail()}`).toBe(0);
    agent = await startAgent(topo(), NS.node1, ["--manifest", dir], { name: "upgraded", bin: variant.bin });
    await agent.waitReady();
    await allAlive(5, "after the upgrade");
    const after = datapathSnapshot(topo());
    // kpr_config records the digest of the datapath objects, which an upgrade changes by design.
    const { kpr_config: cfgBefore, ...mapsBefore } = before.maps;
    const { kpr_config: cfgAfter, ...mapsAfter } = after.maps;
    expect(mapsAfter, "the upgrade leaves every service, backend and device map entry as it was").toEqual(
      mapsBefore,
    );
    const digest = (dump?: string) =>
      (JSON.parse(dump ?? "[]") as { formatted?: { value?: { datapath_digest?: number } } }[])[0]?.formatted
        ?.value?.datapath_digest;
    expect(digest(cfgAfter), "kpr_config records the upgraded datapath (its digest changed)").not.toBe(
      digest(cfgBefore),
    );
    // The changed constant is in the ingress program (it sends the RSTs); an identical program
    // (egress) may stay attached as it is.
    const ingress = Object.keys(before.links).filter((l) => l.startsWith("tc-ingress-"));
    expect(ingress.length, "tc ingress links pinned before the upgrade").toBeGreaterThan(0);
    for (const l of ingress) {
      expect(after.links[l]?.link, `${l}: the same link (updated in place, never detached)`).toBe(
        before.links[l]?.link,
      );
      expect(after.links[l]?.prog, `${l}: the upgraded tc program is attached (a new program id)`).not.toBe(
        before.links[l]?.prog,
      );
    }
    // Back on dist/kpr for the rest of the file (a downgrade is an upgrade too).
    expect(await agent.stop(), `exit code of the upgraded daemon after SIGTERM\n${agent.tail()}`).toBe(0);
    agent = await startAgent(topo(), NS.node1, ["--manifest", dir], { name: "downgraded" });
    await agent.waitReady();
    await allAlive(5, "after going back to dist/kpr");
    for (const c of held) await c.stop();
    held = [];
  });

  test("SIGHUP reloads the config (socket LB off, then on again) without breaking a held connection", async () => {
    const base = {
      devices: [DEVICE],
      nodeName: "node-1",
      loadBalancer: { mode: "snat", acceleration: "disabled", algorithm: "random" },
    };
    held = [
      await holdConnection(topo(), NS.client, ADDR.node1, WEB_NP),
      await holdConnection(topo(), NS.node1, WEB_IP, 80, { cgroup: true }),
    ];
    const reload = async (socketLB: boolean) => {
      topo().writeConfig({ ...base, socketLB: { enabled: socketLB } });
      const from = agent.log().length;
      agent.handle.proc.kill("SIGHUP");
      await agent.waitLog(/SIGHUP: reloaded/, 10_000, from);
    };
    await reload(false);
    await allAlive(5, "after a SIGHUP that detached the socket hooks");
    const hooks = () => Object.keys(datapathSnapshot(topo()).links).filter((l) => l.startsWith("cgroup-"));
    await pollUntil("the socket hooks are detached after the reload", () => hooks().length === 0, 5000).catch(
      (e: Error) => {
        throw new Error(`${e.message}: still pinned ${hooks().join(", ")}\n${agent.tail()}`);
      },
    );
    await pollTraffic(topo(), NS.node1, `http://${WEB_IP}/`, [], {
      cgroup: true,
      what: "a new ClusterIP connection from the cgroup is not balanced without socket LB",
    });
    await reload(true);
    await allAlive(5, "after a SIGHUP that attached the socket hooks again");
    await pollTraffic(topo(), NS.node1, `http://${WEB_IP}/`, [POD_NAMES.podA, POD_NAMES.podB], {
      cgroup: true,
    });
    expect(agent.running(), "the daemon runs on after two reloads").toBe(true);
    for (const c of held) await c.stop();
    held = [];
  });

  test("kill -9 in the middle of a sync, then a restart: converges, nothing orphaned", async () => {
    const small = showFrontends(frontends(await serviceList(topo(), NS.node1)));
    const smallCounts = mapCounts(topo());
    const N = 200;
    const bulkCounts = { ...smallCounts };
    for (const [cycle, adding] of [
      [1, true],
      [2, false],
    ] as const) {
      const start = mapCounts(topo());
      // strace SIGKILLs the daemon as it enters its third bpf() call after attaching: the sync's
      // map writes have begun and are not finished.
      const tracer = await killAtSyscall(topo(), NS.node1, agent.pid, "bpf", 3);
      if (adding) write("bulk.yaml", many(N));
      else rmSync(join(dir, "bulk.yaml"));
      await agent.handle.exited;
      await tracer.kill();
      const atKill = mapCounts(topo());
      const what = `${adding ? "adding" : "removing"} ${N} services`;
      expect(agent.handle.proc.signalCode, `cycle ${cycle}: the daemon was SIGKILLed while ${what}`).toBe(
        "SIGKILL",
      );
      expect(atKill, `cycle ${cycle}: the kill left a partial sync (${what})`).not.toEqual(start);
      const finalCounts = adding
        ? [smallCounts.kpr_svc_meta! + N, smallCounts.kpr_lb4_rnat! + N, smallCounts.kpr_lb4_svc! + 3 * N]
        : [smallCounts.kpr_svc_meta, smallCounts.kpr_lb4_rnat, smallCounts.kpr_lb4_svc];
      expect(
        [atKill.kpr_svc_meta, atKill.kpr_lb4_rnat, atKill.kpr_lb4_svc],
        `cycle ${cycle}: the sync had not finished when the daemon died (${what})`,
      ).not.toEqual(finalCounts);
      console.log(`kill -9 while ${what}: entries at the kill ${JSON.stringify(atKill)}`);

      agent = await startAgent(topo(), NS.node1, ["--manifest", dir], { name: `after-kill-${cycle}` });
      await agent.waitReady(60_000);
      const f = await pollFrontends(
        topo(),
        NS.node1,
        `converges after kill -9 while ${what}`,
        (fr) => [...fr.keys()].filter((k) => k.startsWith("10.97.")).length === (adding ? N : 0),
        30_000,
      );
      if (adding) {
        const bad = [...f].filter(
          ([k, v]) => k.startsWith("10.97.") && v.join() !== `${ADDR.podA}:8080,${ADDR.podB}:8080`,
        );
        expect(bad.slice(0, 3), "every bulk service has both backends after the restart").toEqual([]);
        Object.assign(bulkCounts, mapCounts(topo()));
        expect(
          [bulkCounts.kpr_svc_meta, bulkCounts.kpr_lb4_rnat, bulkCounts.kpr_lb4_svc],
          "entries after converging: small state + N frontends (meta, rnat) + N×3 service slots, nothing orphaned",
        ).toEqual([
          smallCounts.kpr_svc_meta! + N,
          smallCounts.kpr_lb4_rnat! + N,
          smallCounts.kpr_lb4_svc! + 3 * N,
        ]);
      }
    }
    expect(showFrontends(frontends(await serviceList(topo(), NS.node1))), "back to the small state").toBe(
      small,
    );
    expect(mapCounts(topo()), "map entry counts equal the small state's: nothing orphaned").toEqual(
      smallCounts,
    );
    const got = await answers(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, 3);
    expect(
      Object.keys(got).every((k) => k === POD_NAMES.podA || k === POD_NAMES.podB),
      `web NodePort after the kill -9 cycles: ${JSON.stringify(got)}`,
    ).toBe(true);
    expect(await agent.stop(), `exit code after SIGTERM\n${agent.tail()}`).toBe(0);
  });
});
