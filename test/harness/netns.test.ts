import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { startCapture } from "./capture.ts";
import { isBuilt, needs } from "./env.ts";
import { cgroup2Mount, createTopology, pollUntil, type Topology, useTopology } from "./netns.ts";
import { buildPacket, parsePacket, verifyChecksums } from "./packet.ts";
import { httpGet, startHttpEcho, startUdpEcho, udpRequest } from "./servers.ts";

const A_MAC = "02:00:00:00:0a:01";
const B_MAC = "02:00:00:00:0b:01";

/** What is left on the host of a topology with this prefix (empty = clean). */
function leftovers(prefix: string): string[] {
  const out: string[] = [];
  const netns = Bun.spawnSync(["ip", "netns", "list"]).stdout.toString();
  for (const l of netns.split("\n")) if (l.startsWith(`${prefix}-`)) out.push(`netns ${l.split(" ")[0]}`);
  const links = Bun.spawnSync(["ip", "-o", "link"]).stdout.toString();
  if (links.includes(prefix)) out.push("host link with the prefix");
  if (existsSync(`/sys/fs/bpf/${prefix}`)) out.push(`/sys/fs/bpf/${prefix}`);
  if (existsSync(join(cgroup2Mount(), prefix))) out.push(`cgroup ${prefix}`);
  if (existsSync(`/tmp/${prefix}`)) out.push(`/tmp/${prefix}`);
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      if (cmd.includes(prefix) && !cmd.includes("KPR_FIXTURE")) out.push(`process ${pid}: ${cmd}`);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

// Namespaces, servers and child test runs take longer than bun's 5 s default.
setDefaultTimeout(60_000);

const skip = needs(
  { root: true, tools: ["ip", "nsenter", "ping", "curl", "socat", "tcpdump", "ethtool"] },
  "harness netns",
);

describe.skipIf(!!skip)("topology: two namespaces, one veth pair", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("a");
      await t.addNs("b");
      await t.veth("a", "eth0", "b", "eth0", {
        addrA: ["10.0.0.1/24", "fd00::1/64"],
        addrB: ["10.0.0.2/24", "fd00::2/64"],
        macA: A_MAC,
        macB: B_MAC,
      });
    },
  });

  test("names carry the prefix; bpffs and the cgroup are there", () => {
    const t = topo();
    expect(t.prefix).toMatch(/^kt[a-z0-9]{6}$/);
    expect(t.ns("a")).toBe(`${t.prefix}-a`);
    const netns = Bun.spawnSync(["ip", "netns", "list"]).stdout.toString();
    expect(netns).toContain(`${t.prefix}-a`);
    expect(readFileSync("/proc/self/mountinfo", "utf8")).toMatch(/ \/sys\/fs\/bpf .* - bpf /);
    expect(t.cgroupDir).toBe(join(cgroup2Mount(), t.prefix));
    expect(existsSync(join(t.cgroupDir, "cgroup.procs"))).toBe(true);
    expect(t.bpfRoot).toBe(`/sys/fs/bpf/${t.prefix}`);
  });

  test.each([["10.0.0.2"], ["fd00::2"]])("ping %s across the veth", async (addr) => {
    const r = await topo().exec("a", ["ping", "-c", "1", "-W", "2", addr]);
    expect({ code: r.code, out: r.stdout }).toMatchObject({
      code: 0,
      out: expect.stringContaining("1 received"),
    });
  });

  test("exec, run, timeouts", async () => {
    const t = topo();
    expect(await t.exec("b", ["sh", "-c", "cat; echo err >&2; exit 3"], { input: "in" })).toEqual({
      code: 3,
      stdout: "in",
      stderr: "err\n",
    });
    await expect(t.run("b", ["false"])).rejects.toThrow(/false: exit 1/);
    const slow = await t.exec("b", ["sleep", "30"], { timeoutMs: 200 });
    expect(slow.code).toBe(124);
    await expect(t.exec("zz", ["true"])).rejects.toThrow(/not created by this topology/);
  });

  test("spawn: waitForOutput matches, and rejects when the process exits", async () => {
    const t = topo();
    const h = t.spawn("a", ["sh", "-c", "echo one; echo two >&2; read x"]);
    expect((await h.waitForOutput(/two/, 5000))[0]).toBe("two");
    await h.kill();
    const gone = t.spawn("a", ["sh", "-c", "echo bye"]);
    await expect(gone.waitForOutput(/never/, 5000)).rejects.toThrow(/exited 0; output:\nbye/);
  });

  test("runInCgroup: the process is in the netns and in the test cgroup", async () => {
    const t = topo();
    const inNs = (await t.run("a", ["readlink", "/proc/self/ns/net"])).trim();
    const r = await t.runInCgroup("a", [
      "sh",
      "-c",
      "readlink /proc/self/ns/net; grep '^0::' /proc/self/cgroup",
    ]);
    expect(r.stdout).toBe(`${inNs}\n0::/${t.prefix}\n`);
  });

  test("writeConfig: topology and per-namespace roots", () => {
    const t = topo();
    const p = t.writeConfig({ devices: ["eth0"], bpf: { lbMapMax: 1024 } });
    expect(p).toBe(t.configPath);
    expect(parse(readFileSync(p, "utf8"))).toEqual({
      bpf: { root: t.bpfRoot, lbMapMax: 1024 },
      cgroup: { root: t.cgroupDir },
      devices: ["eth0"],
    });
    const pb = t.writeConfig({}, { ns: "b" });
    expect(parse(readFileSync(pb, "utf8"))).toEqual({
      bpf: { root: `${t.bpfRoot}/b` },
      cgroup: { root: `${t.cgroupDir}/b` },
    });
    expect(existsSync(`${t.cgroupDir}/b`)).toBe(true);
    expect(() => t.writeConfig({ bpf: { root: "/sys/fs/bpf/kpr" } })).toThrow(/fixed by the topology/);
  });

  test.skipIf(!isBuilt())("kpr runs in the netns with the topology config", async () => {
    const r = await topo().kpr("a", ["version"]);
    expect({ code: r.code, stdout: r.stdout }).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/^kpr /),
    });
    const h = topo().kprSpawn("b", ["version"]);
    expect(await h.exited).toBe(0);
    expect(h.output()).toMatch(/^kpr /);
  });

  test("servers: HTTP and UDP echo see the client address", async () => {
    const t = topo();
    const http = await startHttpEcho(t, "b", "backend-b", { host: "::" });
    const udp = await startUdpEcho(t, "b", "udp-b", { host: "::" });
    try {
      expect(await httpGet(t, "a", `http://10.0.0.2:${http.port}/`)).toMatchObject({
        ok: true,
        status: 200,
        echo: { name: "backend-b", client: "10.0.0.1" },
      });
      expect((await httpGet(t, "a", `http://[fd00::2]:${http.port}/`)).echo).toMatchObject({
        client: "fd00::1",
      });
      expect(await udpRequest(t, "a", "10.0.0.2", udp.port, "hi")).toMatchObject({
        ok: true,
        echo: { name: "udp-b", client: "10.0.0.1", rest: "hi" },
      });
      expect(
        (await udpRequest(t, "a", "fd00::2", udp.port, "hi6", { sendto: true, sport: 40123 })).echo,
      ).toEqual({
        name: "udp-b",
        client: "fd00::1",
        clientPort: 40123,
        rest: "hi6",
      });
      expect((await udpRequest(t, "a", "10.0.0.2", udp.port, "c", { cgroup: true })).ok).toBe(true);
      const refused = await httpGet(t, "a", "http://10.0.0.2:1/", { timeoutMs: 2000 });
      expect({ ok: refused.ok, curlCode: refused.curlCode, status: refused.status }).toEqual({
        ok: false,
        curlCode: 7,
        status: 0,
      });
    } finally {
      await http.stop();
      await udp.stop();
    }
  });

  test("capture: kernel-built packets verify; builder-built packets are accepted by the kernel", async () => {
    const t = topo();
    // Without this the veth sender leaves CHECKSUM_PARTIAL and captured checksums look wrong.
    await t.run("a", ["ethtool", "-K", "eth0", "tx", "off"]);
    await t.run("b", ["ethtool", "-K", "eth0", "tx", "off"]);
    const http = await startHttpEcho(t, "b", "web", { port: 80 });
    const udp = await startUdpEcho(t, "b", "dns", { port: 53, host: "::" });
    const cap = await startCapture(t, "a", "eth0", { filter: "tcp or udp" });
    try {
      expect((await httpGet(t, "a", "http://10.0.0.2/")).ok).toBe(true);
      // SYN-ACK, the response and FIN at least
      const seen = await cap.waitForFrames(3, { match: (f) => parsePacket(f).tcp?.sport === 80 });
      for (const f of seen) expect(verifyChecksums(f)).toEqual({ ok: true, errors: [] });

      const inject = (frame: Uint8Array) =>
        t.run("a", ["socat", "-u", "STDIN", "INTERFACE:eth0"], { input: frame });
      // IPv6 UDP behind hop-by-hop and destination options headers: answered only if it checks.
      await inject(
        buildPacket({
          eth: { src: A_MAC, dst: B_MAC },
          ip6: {
            src: "fd00::1",
            dst: "fd00::2",
            ext: [
              { type: "hop", options: [{ type: 1, data: [0, 0, 0, 0] }] },
              { type: "dst", options: [] },
            ],
          },
          udp: { sport: 40000, dport: 53 },
          payload: "crafted",
        }),
      );
      const [reply] = await cap.waitForFrames(1, { match: (f) => parsePacket(f).udp?.sport === 53 });
      expect(new TextDecoder().decode(parsePacket(reply!).payload)).toBe("dns fd00::1:40000 crafted");
      // IPv4 with options (NOP, NOP, NOP, EOL) and a TCP SYN: answered by a SYN-ACK.
      await inject(
        buildPacket({
          eth: { src: A_MAC, dst: B_MAC },
          ip4: { src: "10.0.0.1", dst: "10.0.0.2", options: [1, 1, 1, 0] },
          tcp: { sport: 41000, dport: 80, seq: 1000, flags: "S", options: [2, 4, 0x05, 0xb4] },
        }),
      );
      const [synack] = await cap.waitForFrames(1, { match: (f) => parsePacket(f).tcp?.dport === 41000 });
      expect(parsePacket(synack!).tcp).toMatchObject({ flags: "SA", ack: 1001 });

      // A wrong UDP checksum is counted as such by the receiving kernel.
      const csumErrors = async () => {
        const snmp = (await t.run("b", ["cat", "/proc/net/snmp"]))
          .split("\n")
          .filter((l) => l.startsWith("Udp:"));
        const names = snmp[0]!.split(/\s+/);
        return Number(snmp[1]!.split(/\s+/)[names.indexOf("InCsumErrors")]);
      };
      const before = await csumErrors();
      await inject(
        buildPacket({
          eth: { src: A_MAC, dst: B_MAC },
          ip4: { src: "10.0.0.1", dst: "10.0.0.2" },
          udp: { sport: 40001, dport: 53, checksum: 0x1234 },
          payload: "bad",
        }),
      );
      await pollUntil("Udp InCsumErrors increments", async () => (await csumErrors()) > before, 5000);
    } finally {
      await cap.stop();
      await http.stop();
      await udp.stop();
    }
  });
});

describe.skipIf(!!skip)("topology: destroy leaves nothing", () => {
  test("destroy removes netns, links, processes, cgroup, bpffs dir, configs; twice is fine", async () => {
    const t: Topology = await createTopology();
    try {
      const { populate } = await import("./fixtures/populate.ts");
      await populate(t);
      mkdirSync(`${t.bpfRoot}/pins`, { recursive: true });
      expect(leftovers(t.prefix).length).toBeGreaterThan(3);
    } finally {
      await t.destroy();
    }
    expect(leftovers(t.prefix)).toEqual([]);
    await t.destroy();
  });

  const fixtures = join(import.meta.dir, "fixtures");
  const child = async (argv: string[], mode: string, signal?: NodeJS.Signals) => {
    const prefix = `kt${Math.random().toString(36).slice(2, 8).padEnd(6, "0")}`;
    const proc = Bun.spawn(argv, {
      cwd: fixtures,
      env: { ...process.env, KPR_FIXTURE_PREFIX: prefix, KPR_FIXTURE_MODE: mode },
      stdout: "pipe",
      stderr: "pipe",
    });
    if (signal) {
      const reader = proc.stdout.getReader();
      let seen = "";
      while (!seen.includes("ready")) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += new TextDecoder().decode(value);
      }
      expect(leftovers(prefix).length).toBeGreaterThan(0);
      proc.kill(signal);
    }
    const code = await proc.exited;
    const stderr = await new Response(proc.stderr).text();
    return { prefix, code, stderr };
  };

  test.each([["test-throws"], ["setup-throws"]])("a failing bun test (%s) still cleans up", async (mode) => {
    const r = await child([process.execPath, "test", "./teardown.fixture.ts"], mode);
    expect({ code: r.code, failed: / 1 fail/.test(r.stderr) }).toEqual({ code: 1, failed: true });
    expect(leftovers(r.prefix)).toEqual([]);
  });

  test.each([
    ["process.exit()", "exit", undefined],
    ["SIGTERM", "signal", "SIGTERM"],
    ["SIGINT", "signal", "SIGINT"],
  ] as const)("last-resort hook: %s", async (_label, mode, signal) => {
    const r = await child([process.execPath, "./exit.fixture.ts"], mode, signal);
    expect(r.code).toBe(mode === "exit" ? 3 : signal === "SIGTERM" ? 143 : 130);
    expect(leftovers(r.prefix)).toEqual([]);
  });
});
