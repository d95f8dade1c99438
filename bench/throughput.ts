import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  cleanupKprRoot,
  createNetns,
  fmtRatio,
  KPR,
  median,
  printTable,
  run,
  runSync,
  startBench,
  writeKprConfig,
  writeManifests,
} from "./_lib.ts";

const NODE = "bench-node";
const CLIENT_IP = "10.0.1.2";
const NODE_IP = "10.0.1.1";
const NODE_POD_GW = "10.244.0.1";
const BACKEND_IP = "10.244.0.10";
const PORT = 5201;
const KPR_NODEPORT = 30000;
const IPT_NODEPORT = 30001;

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await Bun.sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: "string", default: "5" }, repeat: { type: "string", default: "3" } },
  });
  const seconds = Number(values.seconds);
  const repeat = Math.max(1, Number(values.repeat));
  const {
    cleanup,
    prefix: p,
    tmp,
  } = startBench("throughput", {
    tools: ["ip", "nsenter", "iperf3", "iptables", "ss"],
    files: [KPR],
  });

  const cl = createNetns(cleanup, `${p}-cl`);
  const nd = createNetns(cleanup, `${p}-nd`);
  const be = createNetns(cleanup, `${p}-be`);
  const sh = (ns: string, argv: string[]) => runSync(["ip", "-n", ns, ...argv]);
  runSync(["ip", "-n", cl, "link", "add", `${p}c`, "type", "veth", "peer", "name", `${p}n`, "netns", nd]);
  runSync(["ip", "-n", nd, "link", "add", `${p}m`, "type", "veth", "peer", "name", `${p}b`, "netns", be]);
  sh(cl, ["addr", "add", `${CLIENT_IP}/24`, "dev", `${p}c`]);
  sh(nd, ["addr", "add", `${NODE_IP}/24`, "dev", `${p}n`]);
  sh(nd, ["addr", "add", `${NODE_POD_GW}/24`, "dev", `${p}m`]);
  sh(be, ["addr", "add", `${BACKEND_IP}/24`, "dev", `${p}b`]);
  for (const [ns, dev] of [
    [cl, `${p}c`],
    [nd, `${p}n`],
    [nd, `${p}m`],
    [be, `${p}b`],
  ] as const)
    sh(ns, ["link", "set", dev, "up"]);
  sh(cl, ["route", "add", "default", "via", NODE_IP]);
  sh(be, ["route", "add", "default", "via", NODE_POD_GW]);
  runSync(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], { ns: nd });

  // iperf3 server in the backend namespace, killed at cleanup
  const server = Bun.spawn(["nsenter", `--net=/run/netns/${be}`, "--", "iperf3", "-s", "-p", String(PORT)], {
    stdout: "ignore",
    stderr: "ignore",
  });
  // unref: the server must not keep this script alive once the table is printed
  server.unref();
  cleanup.add("stop iperf3 server", () => server.kill("SIGKILL"));
  await waitFor("iperf3 server", async () => {
    const r = await run(["ss", "-Hltn", `sport = :${PORT}`], { ns: be, allowFail: true });
    return r.stdout.includes(`:${PORT}`);
  });

  const iperf = async (label: string, addr: string, port: number): Promise<number> => {
    const gbps: number[] = [];
    for (let i = 0; i < repeat; i++) {
      const r = await run(["iperf3", "-c", addr, "-p", String(port), "-t", String(seconds), "-J"], {
        ns: cl,
        allowFail: true,
        timeoutMs: (seconds + 20) * 1000,
      });
      if (r.code !== 0)
        throw new Error(`iperf3 ${label}: exit ${r.code} (${(r.stdout + r.stderr).slice(-400)})`);
      const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second?: number } } };
      gbps.push((j.end?.sum_received?.bits_per_second ?? 0) / 1e9);
    }
    console.log(`${label}: ${gbps.map((g) => g.toFixed(2)).join(", ")} Gbit/s`);
    return median(gbps);
  };

  const results: Record<string, number> = {};
  results.direct = await iperf("direct", BACKEND_IP, PORT);

  // kpr: NodePort 30000 → backend, the node's client-facing device in `devices`
  const dir = join(tmp, "m");
  writeManifests(
    dir,
    [
      {
        namespace: "bench",
        name: "iperf",
        portName: "iperf",
        clusterIP: "10.96.0.10",
        port: PORT,
        targetPort: PORT,
        protocol: "TCP",
        nodePort: KPR_NODEPORT,
        endpoints: [{ ip: BACKEND_IP, nodeName: NODE }],
      },
    ],
    { format: "yaml", nodeName: NODE, nodeAddress: NODE_IP },
  );
  const bpfRoot = `/sys/fs/bpf/${p}`;
  const cfgPath = writeKprConfig(tmp, {
    bpf: { root: bpfRoot },
    socketLB: { enabled: false },
    devices: [`${p}n`],
    nodeName: NODE,
  });
  cleanupKprRoot(cleanup, nd, cfgPath, bpfRoot);
  await run([KPR, "apply", "-f", dir, "--config", cfgPath], { ns: nd, env: { KPR_LOG_LEVEL: "warn" } });
  results.kpr = await iperf("kpr NodePort", NODE_IP, KPR_NODEPORT);
  await run([KPR, "cleanup", "--config", cfgPath], { ns: nd, env: { KPR_LOG_LEVEL: "warn" } });

  // iptables DNAT, kpr gone
  await run(
    [
      "iptables",
      "-t",
      "nat",
      "-A",
      "PREROUTING",
      "-d",
      NODE_IP,
      "-p",
      "tcp",
      "--dport",
      String(IPT_NODEPORT),
      "-j",
      "DNAT",
      "--to-destination",
      `${BACKEND_IP}:${PORT}`,
    ],
    { ns: nd },
  );
  results.iptables = await iperf("iptables DNAT", NODE_IP, IPT_NODEPORT);

  console.log("");
  printTable(
    ["path", "Gbit/s (median)", "vs direct"],
    [
      ["direct to the backend (routed by the node)", results.direct!.toFixed(2), "1.00×"],
      ["NodePort via kpr (tc DNAT)", results.kpr!.toFixed(2), fmtRatio(results.kpr, results.direct)],
      [
        "NodePort via iptables DNAT",
        results.iptables!.toFixed(2),
        fmtRatio(results.iptables, results.direct),
      ],
    ],
  );
  console.log(`kpr / iptables: ${fmtRatio(results.kpr, results.iptables)}`);
  cleanup.runAll();
}

try {
  await main();
} catch (e) {
  console.error(`bench/throughput: ${(e as Error).message}`);
  process.exitCode = 1;
}
