import { describe, expect, it } from "bun:test";
import { join } from "node:path";
import { openObject } from "../../src/datapath/bpf.ts";
import { defineStruct } from "../../src/datapath/codec.ts";
import {
  checkLbCodecs,
  dev4,
  kprConfig,
  lb4Backend,
  lb4Key,
  lb4Revnat,
  lb4Service,
  lb4SrcrKey,
  MAP_CODECS,
  svcMeta,
} from "../../src/datapath/lbmaps.ts";
import { needs } from "../harness/env.ts";
import { REPO_ROOT } from "../harness/netns.ts";

describe("lbmaps codecs", () => {
  it("encodes kpr_lb4_key with network-order address/port and host-order slot", () => {
    const b = lb4Key.encode({ address: "10.96.0.10", dport: 53, slot: 2, proto: 17, scope: 0 });
    expect([...b]).toEqual([10, 96, 0, 10, 0, 53, 2, 0, 17, 0, 0, 0]);
  });

  it("encodes kpr_lb4_service with the master fields at abi.h's offsets", () => {
    const b = lb4Service.encode({
      backend_id: 0x01020304,
      affinity_timeout: 10800,
      count: 3,
      rev_nat_id: 7,
      flags: 0x0102,
      algorithm: 1,
      active_count: 2,
    });
    expect([...b]).toEqual([4, 3, 2, 1, 0x30, 0x2a, 0, 0, 3, 0, 7, 0, 2, 1, 1, 2]);
  });

  const roundTrips: [string, { encode(v: never): Uint8Array; decode(b: Uint8Array): unknown }, unknown][] = [
    ["kpr_lb4_key", lb4Key, { address: "10.0.0.1", dport: 80, slot: 0, proto: 6, scope: 0 }],
    [
      "kpr_lb4_service",
      lb4Service,
      {
        backend_id: 9,
        affinity_timeout: 0,
        count: 1,
        rev_nat_id: 65535,
        flags: 1,
        algorithm: 0,
        active_count: 255,
      },
    ],
    ["kpr_lb4_backend", lb4Backend, { address: "10.244.1.10", port: 8080, proto: 6, state: 1, flags: 1 }],
    ["kpr_lb4_revnat", lb4Revnat, { address: "192.168.50.2", port: 30080 }],
    [
      "kpr_svc_meta",
      svcMeta,
      {
        name: "default/my-nginx",
        port_name: "http",
        health_check_port: 32000,
        reject: 1,
        proto: 17,
        address: "10.96.0.10",
        port: 53,
        digest: 0x0123456789abcdefn,
      },
    ],
    ["kpr_lb4_srcr_key", lb4SrcrKey, { prefixlen: 56, rev_nat_id: 3, address: "10.1.0.0" }],
    ["kpr_dev4", dev4, { address: "192.168.50.2", mac: new Uint8Array([2, 0, 0, 0, 0, 1]) }],
    [
      "kpr_config",
      kprConfig,
      {
        flags: 5,
        snat_port_min: 0,
        snat_port_max: 0,
        nodeport_min: 30000,
        nodeport_max: 32767,
        lb_mode: 0,
        host_netns_cookie: 4096n,
        datapath_digest: 0xfedcba9876543210n,
      },
    ],
  ];
  it.each(roundTrips)("%s round-trips", (_name, codec, value) => {
    expect(codec.decode(codec.encode(value as never))).toEqual(value);
  });

  it.each([
    ["kpr_lb4_key", lb4Key.size, 12],
    ["kpr_lb4_service", lb4Service.size, 16],
    ["kpr_lb4_backend", lb4Backend.size, 12],
    ["kpr_lb4_revnat", lb4Revnat.size, 8],
    ["kpr_svc_meta", svcMeta.size, 152],
    ["kpr_lb4_srcr_key", lb4SrcrKey.size, 12],
    ["kpr_dev4", dev4.size, 12],
    ["kpr_config", kprConfig.size, 32],
  ])("%s is %i bytes (abi.h's _Static_assert: %i)", (_n, size, want) => {
    expect(size).toBe(want);
  });
});

const skip = needs({ root: true, bpfObjects: ["sock", "tc"] }, "lbmaps BTF checks");

describe.skipIf(!!skip)("checkLbCodecs against the built objects", () => {
  const open = async (name: string) =>
    openObject(
      new Uint8Array(await Bun.file(join(REPO_ROOT, ".build/bpf", `${name}.bpf.o`)).arrayBuffer()),
      name,
    );

  it.each(["sock", "tc"])("every map of %s.bpf.o matches its codec", async (name) => {
    using obj = await open(name);
    const checked = checkLbCodecs(obj);
    // every map the object declares has a codec, and all were checked
    expect(checked.sort()).toEqual(obj.maps().sort());
    expect(checked).toContain("kpr_lb4_svc");
  });

  it("names the struct and field when a codec drifts from abi.h", async () => {
    using obj = await open("tc");
    const saved = MAP_CODECS.kpr_lb4_be!;
    // same size, but port and proto swapped
    MAP_CODECS.kpr_lb4_be = {
      key: saved.key,
      value: defineStruct("kpr_lb4_backend", {
        address: "ip4",
        proto: "u8",
        state: "u8",
        port: "be16",
        flags: "u8",
        pad: ["pad", 3],
      }) as never,
    };
    try {
      expect(() => checkLbCodecs(obj)).toThrow(/kpr_lb4_backend.*field (port|proto)/);
    } finally {
      MAP_CODECS.kpr_lb4_be = saved;
    }
  });
});
