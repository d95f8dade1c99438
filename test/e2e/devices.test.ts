/**
 * End-to-end: devices on node-1 of the namespace cluster (see _cluster.ts), as an operator meets
 * them. `devices: []` detects the interface that carries the Node's address and attaches to it,
 * so outside clients reach NodePorts without any device configured; `kpr run` follows devices: an
 * interface that appears (matching a wildcard, or named in the config but absent at start) is
 * attached and its address serves NodePorts within seconds, one that goes away is detached and its
 * NodePort frontends removed, the daemon keeps running throughout.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { needs } from "../harness/env.ts";
import { pollUntil, type Topology, useTopology } from "../harness/netns.ts";
import {
  type Agent,
  agentMissing,
  answers,
  frontends,
  pollFrontends,
  pollTraffic,
  serviceList,
  startAgent,
} from "./_agent.ts";
import { ADDR, buildCluster, DEVICE, httpPort, LOCAL_ENDPOINTS, NS, POD_NAMES } from "./_cluster.ts";
import { node, service } from "./_manifests.ts";

const NP = 30080;
/** A second link between the client and node-1, added while the daemon runs. */
const EXTRA = { node: "veth1", client: "cx1", nodeAddr: "192.168.70.2", clientAddr: "192.168.70.1" };

const MANIFESTS = [
  node("node-1", ADDR.node1),
  ...service({
    name: "web",
    type: "NodePort",
    clusterIP: "10.96.0.80",
    ports: [httpPort(NP)],
    endpoints: LOCAL_ENDPOINTS,
  }),
];

const BASE_CONFIG = {
  nodeName: "node-1",
  loadBalancer: { mode: "snat", acceleration: "disabled", algorithm: "random" },
  socketLB: { enabled: true },
};

const skip =
  needs({ root: true, built: true, tools: ["ip", "nsenter", "curl", "python3", "bpftool"] }, "e2e devices") ??
  agentMissing("e2e devices");

/** The devices `kpr status -o json` reports on node-1, with how many hooks each has. */
async function statusDevices(t: Topology, config: string): Promise<[string, number][]> {
  const r = await t.kpr(NS.node1, ["status", "-o", "json"], { config });
  expect(r.code, r.stderr).toBe(0);
  const j = JSON.parse(r.stdout) as { devices: { name: string; hooks: unknown[] }[] };
  return j.devices.map((d) => [d.name, d.hooks.length]);
}

async function addExtraLink(t: Topology): Promise<void> {
  await t.veth(NS.node1, EXTRA.node, NS.client, EXTRA.client, {
    addrA: `${EXTRA.nodeAddr}/24`,
    addrB: `${EXTRA.clientAddr}/24`,
  });
}

describe.skipIf(!!skip)("e2e: devices: [] detects node-1's device", () => {
  let manifests = "";
  let config = "";
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      config = t.writeConfig({ ...BASE_CONFIG, devices: [] });
      manifests = join(t.tmpDir, "web.yaml");
      writeFileSync(manifests, MANIFESTS.map((o) => stringify(o)).join("---\n"));
    },
  });

  test("apply attaches to the interface carrying the Node's address; the client reaches the NodePort", async () => {
    const a = await topo().kpr(NS.node1, ["apply", "-f", manifests], { config });
    expect(a.code, a.stderr).toBe(0);
    expect(a.stderr, "apply says what it detected").toContain(`devices (detected): ${DEVICE}`);
    expect(a.stderr, "no 'no device' warning").not.toContain("no device to serve them");
    expect(await statusDevices(topo(), config), "status: the detected device and its hooks").toEqual([
      [DEVICE, 2],
    ]);
    const st = await topo().kpr(NS.node1, ["status"], { config });
    expect(st.stdout + st.stderr, "detected devices are not a config drift").not.toMatch(/differ/i);
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${NP}/`, [POD_NAMES.podA, POD_NAMES.podB]);
  });

  test("cleanup detaches what detection attached", async () => {
    const c = await topo().kpr(NS.node1, ["cleanup"], { config });
    expect(c.code, c.stderr).toBe(0);
    const r = await topo().kpr(NS.node1, ["status", "-o", "json"], { config });
    const j = JSON.parse(r.stdout) as { programmed: boolean; devices: { hooks: unknown[] }[] };
    expect(
      { code: r.code, programmed: j.programmed, hooks: j.devices.flatMap((d) => d.hooks) },
      "status after cleanup: not programmed (exit 1), no hooks",
    ).toEqual({ code: 1, programmed: false, hooks: [] });
  });
});

describe.skipIf(!!skip)("e2e: kpr run follows devices", () => {
  let dir = "";
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      dir = join(t.tmpDir, "manifests");
      mkdirSync(dir);
      writeFileSync(join(dir, "web.yaml"), MANIFESTS.map((o) => stringify(o)).join("---\n"));
    },
  });
  let agent: Agent;
  const extraNodePort = `${EXTRA.nodeAddr}:${NP}/TCP`;

  test("an interface matching a wildcard that appears is attached and serves NodePorts; renamed, it is followed; gone, it is detached", async () => {
    const config = topo().writeConfig({ ...BASE_CONFIG, devices: ["veth+"] });
    agent = await startAgent(topo(), NS.node1, ["--manifest", dir], { config });
    await agent.waitReady();
    expect(await statusDevices(topo(), config), "at start: veth0 only").toEqual([[DEVICE, 2]]);
    const before = frontends(await serviceList(topo(), NS.node1, config));
    expect(before.has(extraNodePort), "no NodePort on an address that is not there").toBe(false);

    const from = agent.log().length;
    await addExtraLink(topo());
    await agent.waitLog(/devices changed \(veth1 appeared\)/, 15_000, from);
    await pollFrontends(topo(), NS.node1, "a NodePort frontend on veth1's address", (f) =>
      f.has(extraNodePort),
    );
    expect(await statusDevices(topo(), config), "both attached").toEqual([
      [DEVICE, 2],
      [EXTRA.node, 2],
    ]);
    await pollTraffic(topo(), NS.client, `http://${EXTRA.nodeAddr}:${NP}/`, [POD_NAMES.podA, POD_NAMES.podB]);
    const still = await answers(topo(), NS.client, `http://${ADDR.node1}:${NP}/`, 2);
    expect(
      Object.keys(still).every((k) => k === POD_NAMES.podA || k === POD_NAMES.podB),
      `veth0's NodePort still answers from the pods: ${JSON.stringify(still)}`,
    ).toBe(true);

    // renamed (still matching veth+): the old name is detached, the new one attached
    const fromRename = agent.log().length;
    for (const argv of [
      ["ip", "link", "set", EXTRA.node, "down"],
      ["ip", "link", "set", EXTRA.node, "name", "veth2"],
      ["ip", "link", "set", "veth2", "up"],
    ]) {
      const r = await topo().exec(NS.node1, argv);
      expect(r.code, `${argv.join(" ")}: ${r.stderr}`).toBe(0);
    }
    await agent.waitLog(/devices changed \(veth2 appeared; veth1 gone\)/, 15_000, fromRename);
    await pollUntil("status shows veth0 and veth2 attached", async () => {
      const d = await statusDevices(topo(), config);
      return (
        JSON.stringify(d) ===
        JSON.stringify([
          [DEVICE, 2],
          ["veth2", 2],
        ])
      );
    });
    await pollTraffic(topo(), NS.client, `http://${EXTRA.nodeAddr}:${NP}/`, [POD_NAMES.podA, POD_NAMES.podB]);

    const from2 = agent.log().length;
    const del = await topo().exec(NS.node1, ["ip", "link", "del", "veth2"]);
    expect(del.code, del.stderr).toBe(0);
    await agent.waitLog(/devices changed \(veth2 gone\)/, 15_000, from2);
    await pollFrontends(topo(), NS.node1, "veth1's NodePort frontend removed", (f) => !f.has(extraNodePort));
    expect(await statusDevices(topo(), config), "veth0 only again").toEqual([[DEVICE, 2]]);
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${NP}/`, [POD_NAMES.podA, POD_NAMES.podB]);
    expect(agent.running(), `the daemon keeps running\n${agent.tail()}`).toBe(true);
    expect(await agent.stop(), `SIGTERM exit code\n${agent.tail()}`).toBe(0);
  });

  test("a configured device absent at start is a warning, and is attached when it appears", async () => {
    const config = topo().writeConfig({ ...BASE_CONFIG, devices: [DEVICE, EXTRA.node] });
    agent = await startAgent(topo(), NS.node1, ["--manifest", dir], { config });
    await agent.waitReady();
    expect(agent.log(), "the warning names the absent device").toContain(
      `devices: ${EXTRA.node} not there now: left out until it appears`,
    );
    expect(await statusDevices(topo(), config), "at start: veth0 only").toEqual([[DEVICE, 2]]);
    const from = agent.log().length;
    await addExtraLink(topo());
    await agent.waitLog(/devices changed \(veth1 appeared\)/, 15_000, from);
    await pollTraffic(topo(), NS.client, `http://${EXTRA.nodeAddr}:${NP}/`, [POD_NAMES.podA, POD_NAMES.podB]);
    expect(await agent.stop(), `SIGTERM exit code\n${agent.tail()}`).toBe(0);
    const c = await topo().kpr(NS.node1, ["cleanup"], { config });
    expect(c.code, c.stderr).toBe(0);
  });
});
