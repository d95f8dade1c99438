import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { defaultConfig } from "../../src/config/config.ts";
import { BpfMap } from "../../src/datapath/bpf.ts";
import { buildProbePacket, explainPacket, parseEndpoint } from "../../src/datapath/explain.ts";
import { InputError } from "../../src/errors.ts";
import { Lab } from "../bpf/_lab.ts";
import { needs } from "../harness/env.ts";
import { parsePacket, verifyChecksums } from "../harness/packet.ts";

const skip = needs({ root: true, bpfObjects: ["tc"] }, "explain");

/** Every pinned map's entries as hex, sorted: equal dumps mean no byte changed (counters included). */
function dumpMaps(dir: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const name of readdirSync(dir).sort()) {
    using m = BpfMap.openPinned(`${dir}/${name}`);
    out[name] = [...m.entries()]
      .map(([k, v]) => `${Buffer.from(k).toString("hex")}=${Buffer.from(v).toString("hex")}`)
      .sort();
  }
  return out;
}

describe("explain input", () => {
  it("parses IP:PORT and rejects the rest as input errors", () => {
    expect(parseEndpoint("10.0.0.5:41000", "src"), "valid").toEqual({ address: "10.0.0.5", port: 41000 });
    for (const bad of ["10.0.0.5", "10.0.0.5:0", "10.0.0.5:70000", "10.0.0:80", "fd00::1:80", "x:80"])
      expect(() => parseEndpoint(bad, "src"), `rejects ${bad}`).toThrow(InputError);
  });

  it("builds frames with valid checksums", () => {
    for (const proto of ["tcp", "udp"] as const) {
      const pkt = buildProbePacket(
        { address: "10.0.0.5", port: 41000 },
        { address: "192.168.1.10", port: 30080 },
        proto,
      );
      const report = verifyChecksums(pkt);
      expect(report.ok, `${proto} checksums: ${JSON.stringify(report)}`).toBe(true);
      const p = parsePacket(pkt);
      expect(p.ip4?.src, `${proto} source`).toBe("10.0.0.5");
      expect(p.ip4?.dst, `${proto} destination`).toBe("192.168.1.10");
    }
  });
});

describe.skipIf(!!skip)("explainPacket on pinned maps (real tc program, scratch state)", () => {
  const root = `/sys/fs/bpf/kt${Math.random().toString(36).slice(2, 8).padEnd(6, "0")}`;
  const dir = `${root}/maps`;
  const cfg = defaultConfig();
  cfg.bpf.root = root;
  let lab: Lab;
  const client = { address: "10.0.0.5", port: 41000 };

  beforeAll(() => {
    mkdirSync(dir, { recursive: true });
    lab = Lab.open("tc", dir);
    lab.setConfig({ flags: ["NODEPORT"], snatPorts: [40000, 40999], nodePorts: [30000, 32767] });
    lab.setDevice(1, "127.0.0.1");
    // NodePort with two local backends
    lab.addService({
      address: "192.168.1.10",
      port: 30080,
      revNatId: 1,
      flags: ["NODEPORT"],
      backends: [
        { id: 11, address: "10.244.0.11", port: 8080, local: true },
        { id: 12, address: "10.244.0.12", port: 8080, local: true },
      ],
    });
    // ClientIP affinity
    lab.addService({
      address: "192.168.1.10",
      port: 30081,
      revNatId: 2,
      flags: ["NODEPORT", "AFFINITY"],
      affinityTimeout: 600,
      backends: [
        { id: 21, address: "10.244.0.21", port: 8080, local: true },
        { id: 22, address: "10.244.0.22", port: 8080, local: true },
        { id: 23, address: "10.244.0.23", port: 8080, local: true },
      ],
    });
    // source ranges allowing 172.16.0.0/12 only
    lab.addService({
      address: "192.168.1.20",
      port: 443,
      revNatId: 3,
      flags: ["LOADBALANCER", "SRC_RANGES"],
      backends: [{ id: 31, address: "10.244.0.31", port: 8443, local: true }],
    });
    lab.addSourceRange(3, "172.16.0.0/12");
    // no endpoints (reject) and eTP=Local with endpoints elsewhere only (drop)
    lab.addService({ address: "192.168.1.10", port: 30082, revNatId: 4, flags: ["NODEPORT"], backends: [] });
    lab.addService({
      address: "192.168.1.10",
      port: 30083,
      revNatId: 5,
      flags: ["NODEPORT", "LOCAL_SCOPE", "DROP_NO_LOCAL"],
      backends: [],
    });
  });
  afterAll(() => {
    lab?.close();
    rmSync(root, { recursive: true, force: true });
  });

  async function explainUnchanged(src: typeof client, dst: string, proto: "tcp" | "udp" = "tcp") {
    const before = dumpMaps(dir);
    const r = await explainPacket(cfg, { src, dst: parseEndpoint(dst, "dst"), proto, ifindex: 1 });
    expect(dumpMaps(dir), `pinned maps byte-identical after explaining ${dst}`).toEqual(before);
    return r;
  }

  it("new flow to a local backend: frontend, backend, DNAT", async () => {
    const r = await explainUnchanged(client, "192.168.1.10:30080");
    expect(r.reason, "reason").toBe("lb-new");
    expect(r.verdict, "verdict").toBe("pass");
    expect(r.frontend?.id, "frontend").toBe(1);
    expect([11, 12], "backend is one of the frontend's").toContain(r.backend?.id ?? -1);
    expect(r.backend?.local, "local backend").toBe(true);
    expect(r.output?.dst, "destination rewritten to the backend").toBe(`${r.backend?.address}:8080`);
    expect(r.output?.src, "client address kept").toBe("10.0.0.5:41000");
    expect(r.ctHit, "no CT hit").toBe(false);
  });

  it("tracked flow: the real CT entry decides (CT hit), maps untouched", async () => {
    const pkt = buildProbePacket(client, { address: "192.168.1.10", port: 30080 }, "tcp");
    expect(lab.run("kpr_tc_ingress", pkt).retval, "real program accepted the flow").toBe(0);
    const ct = lab.ct({
      saddr: client.address,
      daddr: "192.168.1.10",
      sport: client.port,
      dport: 30080,
      proto: 6,
      dir: 0,
    });
    expect(ct, "real CT entry").toBeDefined();
    for (let i = 0; i < 5; i++) {
      const r = await explainUnchanged(client, "192.168.1.10:30080");
      expect(r.reason, "reason").toBe("lb-ct");
      expect(r.ctHit, "CT hit").toBe(true);
      expect(r.backend?.id, "the tracked backend").toBe(ct?.backend_id ?? -1);
    }
  });

  it("affinity: the client's real entry chooses the backend", async () => {
    const src = { address: "10.0.0.6", port: 41001 };
    const pkt = buildProbePacket(src, { address: "192.168.1.10", port: 30081 }, "tcp");
    expect(lab.run("kpr_tc_ingress", pkt).retval, "real program accepted the flow").toBe(0);
    const ct = lab.ct({
      saddr: src.address,
      daddr: "192.168.1.10",
      sport: src.port,
      dport: 30081,
      proto: 6,
      dir: 0,
    });
    expect(ct, "real CT entry").toBeDefined();
    // other source ports: no CT entry, affinity decides every time
    for (let port = 42000; port < 42008; port++) {
      const r = await explainUnchanged({ address: src.address, port }, "192.168.1.10:30081");
      expect(r.reason, "reason").toBe("lb-new");
      expect(r.affinity, "affinity decided").toBe(true);
      expect(r.backend?.id, "the client's affinity backend").toBe(ct?.backend_id ?? -1);
    }
    const fresh = await explainUnchanged({ address: "10.0.0.7", port: 42000 }, "192.168.1.10:30081");
    expect(fresh.affinity, "a client without an entry has no affinity yet").toBe(false);
    expect(fresh.frontend?.affinityTimeout, "timeout shown").toBe(600);
  });

  it("source range miss and hit", async () => {
    const miss = await explainUnchanged(client, "192.168.1.20:443");
    expect(miss.reason, "outside the ranges").toBe("drop-src-range");
    expect(miss.verdict, "dropped").toBe("drop");
    expect(miss.frontend?.sourceRanges, "frontend has ranges").toBe(true);
    const hit = await explainUnchanged({ address: "172.16.3.4", port: 5000 }, "192.168.1.20:443");
    expect(hit.reason, "inside the ranges").toBe("lb-new");
    expect(hit.backend?.id, "backend").toBe(31);
  });

  it("no endpoints: TCP SYN refused; the UDP port has no frontend", async () => {
    const tcp = await explainUnchanged(client, "192.168.1.10:30082");
    expect(tcp.reason, "tcp").toBe("reject-rst");
    expect(tcp.verdict, "RST sent back").toBe("redirect");
    expect(tcp.output, "RST goes back to the client").toEqual({
      src: "192.168.1.10:30082",
      dst: "10.0.0.5:41000",
    });
    const udp = await explainUnchanged(client, "192.168.1.10:30082", "udp");
    expect(udp.frontend, "no UDP frontend on that port").toBeUndefined();
    expect(udp.reason, "udp: not a frontend").toBe("pass");
  });

  it("traffic policy Local with endpoints elsewhere only: dropped", async () => {
    const r = await explainUnchanged(client, "192.168.1.10:30083");
    expect(r.reason, "reason").toBe("drop-no-backend");
    expect(r.frontend?.trafficPolicy, "policy").toBe("Local");
    expect(r.why.join("\n"), "why names the policy").toContain("traffic policy Local");
  });

  it("no frontend: passed to the stack", async () => {
    const r = await explainUnchanged(client, "192.168.1.99:80");
    expect(r.reason, "reason").toBe("pass");
    expect(r.frontend, "no frontend").toBeUndefined();
  });
});
