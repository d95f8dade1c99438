import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileArgs, unsupportedSettings } from "../../src/commands/apply.ts";
import { type Config, defaultConfig } from "../../src/config/config.ts";
import { ownNetns } from "../harness/env.ts";

const ROOT = resolve(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/main.ts");
const DEMO = join(ROOT, "examples/demo");
const CONFIG = join(ROOT, "examples/config.yaml");
const tmp = mkdtempSync(join(tmpdir(), "kprB-apply-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Run {
  code: number;
  stdout: string;
  /** Log messages (stderr is JSON lines when not a TTY). */
  messages: string[];
}

async function kpr(args: string[], opts: { stdin?: string; prefix?: string[] } = {}): Promise<Run> {
  // a network namespace of its own unless the test picks one: what device detection finds does
  // not depend on this machine's interfaces
  const proc = Bun.spawn([...(opts.prefix ?? ownNetns()), process.execPath, MAIN, ...args], {
    cwd: ROOT,
    stdin: opts.stdin !== undefined ? new Blob([opts.stdin]) : "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, KPR_LOG_FORMAT: "json", KPR_NODE_NAME: "node-1" },
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const messages = stderr
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      try {
        return (JSON.parse(l) as { msg: string }).msg;
      } catch {
        return l;
      }
    });
  return { code, stdout, messages };
}

const DEMO_TABLE = [
  "ID   Frontend                 Service Type   Backend",
  "1    10.96.0.53:53/UDP        ClusterIP      1 => 10.244.1.30:5353/UDP (active)",
  "2    10.96.0.81:8080/TCP      ClusterIP      1 => 10.244.1.20:8080/TCP (active)",
  "3    10.96.0.80:80/TCP        ClusterIP      1 => 10.244.1.10:80/TCP (active)",
  "                                             2 => 10.244.1.11:80/TCP (active)",
  "4    0.0.0.0:30080/TCP        NodePort       1 => 10.244.1.10:80/TCP (active)",
  "                                             2 => 10.244.1.11:80/TCP (active)",
  "5    127.0.0.1:30080/TCP      NodePort       1 => 10.244.1.10:80/TCP (active)",
  "                                             2 => 10.244.1.11:80/TCP (active)",
  "6    192.168.50.2:30080/TCP   NodePort       1 => 10.244.1.10:80/TCP (active)",
  "                                             2 => 10.244.1.11:80/TCP (active)",
  "",
].join("\n");

describe("fileArgs", () => {
  it.each<[string[], string[]]>([
    [
      ["-f", "a", "--file", "b", "--file=c", "-fd", "-f=e"],
      ["a", "b", "c", "d", "e"],
    ],
    [["--dry-run", "-f", "-"], ["-"]],
    [["-o", "json"], []],
    [["-f", "a", "--", "-f", "b"], ["a"]],
  ])("%p", (raw, want) => {
    expect(fileArgs(raw)).toEqual(want);
  });
});

describe("kpr apply --dry-run", () => {
  it("writes all of a large plan to a pipe before exiting (3000 services, > 128 KiB of JSON)", async () => {
    const items = [];
    for (let i = 0; i < 3000; i++) {
      const ip = `10.96.${(i / 250) | 0}.${(i % 250) + 1}`;
      items.push(
        {
          apiVersion: "v1",
          kind: "Service",
          metadata: { name: `s${i}`, namespace: "big" },
          spec: { clusterIP: ip, clusterIPs: [ip], ports: [{ port: 80, protocol: "TCP", targetPort: 8080 }] },
        },
        {
          apiVersion: "discovery.k8s.io/v1",
          kind: "EndpointSlice",
          metadata: { name: `s${i}-a`, namespace: "big", labels: { "kubernetes.io/service-name": `s${i}` } },
          addressType: "IPv4",
          ports: [{ port: 8080, protocol: "TCP" }],
          endpoints: [
            { addresses: [`10.244.${(i / 250) | 0}.${(i % 250) + 1}`], conditions: { ready: true } },
          ],
        },
      );
    }
    const file = join(tmp, "big.json");
    writeFileSync(file, JSON.stringify({ apiVersion: "v1", kind: "List", items }));
    const r = await kpr(["apply", "--config", CONFIG, "--dry-run", "-o", "json", "-f", file]);
    expect(r.code, r.messages.join("\n")).toBe(0);
    expect(r.stdout.length, "plan bytes on the pipe").toBeGreaterThan(128 * 1024);
    expect((JSON.parse(r.stdout) as unknown[]).length, "entries in the piped plan").toBe(3000);
  });

  it("prints the demo plan as cilium service list does (exit 0)", async () => {
    const r = await kpr(["apply", "--config", CONFIG, "--dry-run", "-f", DEMO]);
    expect(r.messages, "the example config sets no devices").toEqual([
      "3 NodePort frontend(s) but no device to serve them: clients outside this node cannot reach them (set devices, or give the node a default route)",
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(DEMO_TABLE);
  });

  it("-o json prints DESIGN's entry shape; several -f equal the directory", async () => {
    const files = ["dns-echo.yaml", "echo.yaml", "my-nginx.yaml", "node.yaml"].map((f) => join(DEMO, f));
    const r = await kpr([
      "apply",
      "--config",
      CONFIG,
      "--dry-run",
      "-o",
      "json",
      ...files.flatMap((f) => ["-f", f]),
    ]);
    expect(r.code).toBe(0);
    const entries = JSON.parse(r.stdout) as unknown[];
    expect(entries.length).toBe(6);
    expect(entries[3]).toEqual({
      id: 4,
      frontend: { address: "0.0.0.0", port: 30080, protocol: "TCP" },
      type: "NodePort",
      service: "default/my-nginx",
      backends: [
        { address: "10.244.1.10", port: 80, protocol: "TCP", state: "active" },
        { address: "10.244.1.11", port: 80, protocol: "TCP", state: "active" },
      ],
      scope: "Cluster",
    });
  });

  it("reads - from stdin", async () => {
    const text = await Bun.file(join(DEMO, "dns-echo.yaml")).text();
    const r = await kpr(["apply", "--dry-run", "-f", "-"], { stdin: text });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("1    10.96.0.53:53/UDP   ClusterIP      1 => 10.244.1.30:5353/UDP (active)");
  });

  it("exits 2 and names every problem (file:line, object, field)", async () => {
    const bad = join(tmp, "bad.yaml");
    writeFileSync(
      bad,
      `apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  clusterIP: 10.96.0.300
  ports: [{port: 70000, protocol: ICMP}]
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec:
  type: NodePort
  clusterIP: 10.96.0.2
  ports: [{port: 80, nodePort: 99}]
`,
    );
    const r = await kpr(["apply", "--dry-run", "-f", bad]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const msg = r.messages.join("\n");
    for (const want of [
      `${bad}:1: Service default/a: spec.clusterIP: invalid IP address "10.96.0.300"`,
      `${bad}:1: Service default/a: spec.ports[0].protocol: unknown protocol "ICMP"`,
      `${bad}:1: Service default/a: spec.ports[0].port: port 70000 out of range 1-65535`,
      `${bad}:8: Service default/b: spec.ports[0].nodePort: 99 is outside nodePort.range 30000-32767`,
    ]) {
      expect(msg).toContain(want);
    }
  });

  it.each<[string, string[], string]>([
    ["no -f", ["apply", "--dry-run"], "<flags>: -f: required"],
    [
      "bad -o",
      ["apply", "--dry-run", "-o", "xml", "-f", DEMO],
      'kpr apply: -o: got "xml", expected one of table, json, yaml',
    ],
    [
      "explicit config absent",
      ["apply", "--dry-run", "--config", "/nonexistent/kpr.yaml", "-f", DEMO],
      "config file not found",
    ],
    [
      "manifest path absent",
      ["apply", "--dry-run", "-f", "/nonexistent/m.yaml"],
      "/nonexistent/m.yaml: cannot read: ENOENT",
    ],
  ])("exits 2: %s", async (_name, args, want) => {
    const r = await kpr(args);
    expect(r.code).toBe(2);
    expect(r.messages.join("\n")).toContain(want);
  });
});

describe("kpr apply with devices (netns)", () => {
  const ns = `kprB-apply-${process.pid}`;
  const isRoot = process.getuid?.() === 0;
  const haveIp = Bun.which("ip") !== null && Bun.which("nsenter") !== null;
  const skip = !isRoot || !haveIp;
  if (skip) console.log(`skip: devices test needs root, ip and nsenter (root=${isRoot}, tools=${haveIp})`);

  beforeAll(() => {
    if (skip) return;
    const sh = (cmd: string[]) => {
      const r = Bun.spawnSync(cmd, { stderr: "pipe" });
      if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
    };
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "add", "kprb0", "type", "veth", "peer", "name", "kprb1"]);
    sh(["ip", "-n", ns, "addr", "add", "192.0.2.10/24", "dev", "kprb0"]);
    sh(["ip", "-n", ns, "addr", "add", "2001:db8::10/64", "dev", "kprb0", "nodad"]);
    sh(["ip", "-n", ns, "link", "set", "kprb1", "up"]);
    sh(["ip", "-n", ns, "link", "set", "kprb0", "up"]);
  });
  afterAll(() => {
    if (!skip) Bun.spawnSync(["ip", "netns", "del", ns]);
  });

  it.skipIf(skip)(
    "exposes NodePorts on the devices' global addresses instead of the Node object's",
    async () => {
      const c = join(tmp, "devices.yaml");
      writeFileSync(c, "nodeName: node-1\ndevices: kprb0\n");
      const r = await kpr(["apply", "--config", c, "--dry-run", "-o", "json", "-f", DEMO], {
        prefix: ["nsenter", `--net=/run/netns/${ns}`],
      });
      expect(r.messages).toEqual([]);
      expect(r.code).toBe(0);
      const addrs = (JSON.parse(r.stdout) as { type: string; frontend: { address: string } }[])
        .filter((e) => e.type === "NodePort")
        .map((e) => e.frontend.address);
      expect(addrs).toEqual(["0.0.0.0", "127.0.0.1", "192.0.2.10"]);
    },
  );

  it.skipIf(skip)("a device that does not exist is bad config (exit 2)", async () => {
    const c = join(tmp, "nodev.yaml");
    writeFileSync(c, "devices: [kprb-none]\n");
    const r = await kpr(["apply", "--config", c, "--dry-run", "-f", DEMO], {
      prefix: ["nsenter", `--net=/run/netns/${ns}`],
    });
    expect(r.code).toBe(2);
    expect(r.messages.join("\n")).toContain(`${c}: devices: device "kprb-none" not found`);
  });
});

describe("settings this version does not carry out", () => {
  it.each([
    ["defaults", {}, []],
    [
      "the seed's DSR + best-effort XDP + maglev",
      { mode: "dsr", acceleration: "best-effort", algorithm: "maglev" },
      ["loadBalancer.mode=dsr is not implemented yet: remote backends are reached with SNAT"],
    ],
  ] as const)("%s", (_name, over, want) => {
    const base = defaultConfig();
    const cfg = { ...base, loadBalancer: { ...base.loadBalancer, ...(over as object) } } as Config;
    expect(unsupportedSettings(cfg)).toEqual([...want]);
  });

  it("apply --dry-run says so on stderr and still prints the plan", async () => {
    const file = join(tmp, "dsr.yaml");
    writeFileSync(file, "loadBalancer:\n  mode: hybrid\n");
    const r = await kpr(["apply", "--config", file, "--dry-run", "-f", DEMO]);
    expect(r.code).toBe(0);
    expect(r.messages).toContain(
      "loadBalancer.mode=hybrid is not implemented yet: remote backends are reached with SNAT",
    );
    expect(r.stdout, "plan").toContain("10.96.0.80:80/TCP");
  });
});
