/**
 * interfaceAddresses (getifaddrs through the FFI), which replaced `ip -j addr show` on every apply:
 * in a namespace with IPv4 (a labelled secondary included) and IPv6 addresses of every scope, the
 * device addresses, ifindex and MAC kpr reads equal what `ip -j addr show` reports.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { addressesFromIpJson } from "../../src/config/devices.ts";
import { needs } from "../harness/env.ts";
import { REPO_ROOT, useTopology } from "../harness/netns.ts";

const skip = needs({ root: true, tools: ["ip", "nsenter"] }, "interface addresses");

const PROBE = `
import { readDeviceAddresses } from "${join(REPO_ROOT, "src/config/devices.ts")}";
import { readDevice } from "${join(REPO_ROOT, "src/datapath/loader.ts")}";
const d = readDevice("eth0");
let missing = "";
try { readDeviceAddresses(["nope0"], "cfg.yaml"); } catch (e) { missing = String(e.message); }
console.log(JSON.stringify({ addrs: readDeviceAddresses(["eth0", "lo"], "cfg.yaml"), ifindex: d.ifindex, address: d.address, mac: [...d.mac], missing }));
`;

describe.skipIf(!!skip)("interfaceAddresses (getifaddrs)", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("a");
      await t.addNs("b");
      await t.veth("a", "eth0", "b", "eth0", { addrA: "192.0.2.10/24", addrB: "192.0.2.11/24" });
      for (const argv of [
        ["ip", "addr", "add", "198.51.100.7/32", "dev", "eth0", "label", "eth0:vip"],
        ["ip", "addr", "add", "169.254.3.3/16", "dev", "eth0", "scope", "link"],
        ["ip", "-6", "addr", "add", "2001:db8:0:0:1::5/64", "dev", "eth0", "nodad"],
        ["ip", "-6", "addr", "add", "fd00::1:0:0:9/64", "dev", "eth0", "nodad"],
      ])
        await t.run("a", argv);
    },
  });

  test("device addresses, ifindex and MAC equal ip's; a missing device is bad config", async () => {
    const t = topo();
    const ipOut = await t.exec("a", ["ip", "-j", "addr", "show"]);
    const link = await t.exec("a", ["ip", "-j", "link", "show", "dev", "eth0"]);
    const probe = join(t.tmpDir, "probe.ts");
    await Bun.write(probe, PROBE);
    const r = await t.exec("a", [process.execPath, probe]);
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout) as {
      addrs: string[];
      ifindex: number;
      address: string;
      mac: number[];
      missing: string;
    };
    const ipLinks = JSON.parse(ipOut.stdout) as { ifname: string }[];
    const want = addressesFromIpJson(JSON.stringify(ipLinks.filter((l) => l.ifname === "eth0")));
    expect(want, "ip's global addresses (the link-scope one left out)").toContain("198.51.100.7");
    expect(got.addrs, "global addresses of eth0 and lo, in ip's order").toEqual(want);
    const l = (JSON.parse(link.stdout) as { ifindex: number; address: string }[])[0]!;
    expect(got.ifindex, "ifindex").toBe(l.ifindex);
    expect(got.mac.map((b) => b.toString(16).padStart(2, "0")).join(":"), "MAC").toBe(l.address);
    expect(got.address, "primary IPv4").toBe("192.0.2.10");
    expect(got.missing, "a missing device").toContain('device "nope0" not found');
  });
});
