import { describe, expect, it } from "bun:test";
import { defaultConfig } from "../../src/config/config.ts";
import {
  deviceMatches,
  type NetSnapshot,
  nodePortAddresses,
  resolveDevices,
  unservedFrontendsWarning,
} from "../../src/config/devices.ts";

const link = (ifname: string, addrs: string[] = [], extra: object = {}) => ({
  ifname,
  addr_info: addrs.map((local) => ({
    family: local.includes(":") ? "inet6" : "inet",
    local,
    scope: "global",
  })),
  ...extra,
});

const NET: NetSnapshot = {
  links: [
    link("lo", ["127.0.0.1"], { link_type: "loopback", flags: ["LOOPBACK", "UP"] }),
    link("eth0", ["192.168.1.10"]),
    link("eth1", ["10.0.0.5"]),
    link("ens5", ["172.16.0.2"]),
    link("lxc12ab", ["10.244.0.1"]),
    link("veth-br", [], { master: "br0", linkinfo: { info_slave_kind: "bridge" } }),
    link("cilium_host", ["10.244.0.2"]),
  ],
  routes: [
    { dst: "default", dev: "eth0" },
    { dst: "default", nexthops: [{ dev: "ens5" }] },
  ],
};

const cfg = (devices: string[] = [], addresses: string[] = []) => {
  const c = defaultConfig();
  c.devices = devices;
  c.nodePort.addresses = addresses;
  return c;
};

describe("resolveDevices", () => {
  it("devices: [] detects default-route interfaces and those with the node's addresses", () => {
    expect(resolveDevices(cfg(), { net: NET, nodeAddresses: ["10.0.0.5", "10.244.0.2"] })).toEqual({
      devices: ["eth0", "ens5", "eth1"],
      detected: true,
      warnings: [],
    });
  });

  it("loopback, bridge ports and container-side interfaces are never picked", () => {
    const net: NetSnapshot = { links: NET.links, routes: [{ dst: "default", dev: "lxc12ab" }] };
    const r = resolveDevices(cfg(), { net, nodeAddresses: ["127.0.0.1"] });
    expect(r.devices).toEqual([]);
    // nothing detected is no warning by itself: unservedFrontendsWarning names the frontends
    // that then go unserved, when there are any
    expect(r.warnings).toEqual([]);
  });

  it("configured names are kept; wildcards expand in link order", () => {
    expect(resolveDevices(cfg(["eth+", "bond0"]), { net: NET })).toEqual({
      devices: ["eth0", "eth1", "bond0"],
      detected: false,
      warnings: [],
    });
    expect(deviceMatches("eth+", "eth10")).toBe(true);
    expect(deviceMatches("eth0", "eth01")).toBe(false);
  });
});

describe("frontends without a device", () => {
  it("warns when NodePort/ExternalIP/LoadBalancer frontends exist but no device serves them", () => {
    expect(unservedFrontendsWarning([], ["ClusterIP", "NodePort", "NodePort", "LoadBalancer"])).toBe(
      "2 NodePort, 1 LoadBalancer frontend(s) but no device to serve them: clients outside this node cannot reach them (set devices, or give the node a default route)",
    );
    expect(unservedFrontendsWarning(["eth0"], ["NodePort"]), "a device serves them").toBeUndefined();
    expect(unservedFrontendsWarning([], ["ClusterIP"]), "socket LB serves ClusterIP").toBeUndefined();
  });
});

describe("nodePort.addresses", () => {
  it("keeps only node addresses inside the CIDRs (all when empty)", () => {
    const addrs = ["192.168.1.10", "10.0.0.5", "fd00::5", "2001:db8::1"];
    expect(nodePortAddresses(cfg([], []), addrs)).toEqual(addrs);
    expect(nodePortAddresses(cfg([], ["10.0.0.0/8", "fd00::/64"]), addrs)).toEqual(["10.0.0.5", "fd00::5"]);
  });
});
