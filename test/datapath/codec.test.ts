import { describe, expect, it, test } from "bun:test";
import { defineStruct, formatIp6, parseIp4, parseIp6, scalar } from "../../src/datapath/codec.ts";

const key = defineStruct("kpr_lb4_key", {
  address: "ip4",
  dport: "be16",
  slot: "u16",
  proto: "u8",
  scope: "u8",
  pad: ["pad", 2],
});

const val = defineStruct("fx_val", { counter: "u64", backend: "be32", flags: "u16", pad: ["pad", 2] });

describe("codec layout", () => {
  it("lays fields out with C alignment", () => {
    expect({ size: key.size, offsets: key.fields.map((f) => [f.name, f.offset, f.size]) }).toEqual({
      size: 12,
      offsets: [
        ["address", 0, 4],
        ["dport", 4, 2],
        ["slot", 6, 2],
        ["proto", 8, 1],
        ["scope", 9, 1],
        ["pad", 10, 2],
      ],
    });
  });
  it("aligns u64 and rounds the size to the largest alignment", () => {
    const s = defineStruct("s", { a: "u8", b: "u64", c: "u16" });
    expect(s.fields.map((f) => f.offset)).toEqual([0, 8, 16]);
    expect(s.size).toBe(24);
  });
});

describe("codec encode/decode", () => {
  it("encodes network-order and little-endian fields byte by byte", () => {
    const b = key.encode({ address: "10.0.0.1", dport: 80, slot: 3, proto: 6, scope: 0 });
    expect([...b]).toEqual([10, 0, 0, 1, 0, 80, 3, 0, 6, 0, 0, 0]);
  });
  it("round-trips", () => {
    const v = { counter: 2n ** 40n + 5n, backend: 0x0a000002, flags: 0x1234 };
    expect(val.decode(val.encode(v))).toEqual(v);
  });
  test.each([["0.0.0.0"], ["255.255.255.255"], ["192.168.1.20"]])("ip4 %s round-trips", (ip) => {
    expect(key.decode(key.encode({ address: ip, dport: 1, slot: 0, proto: 17, scope: 0 })).address).toBe(ip);
  });
  test.each([
    ["::", "::"],
    ["::1", "::1"],
    ["2001:db8::1", "2001:db8::1"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["fd00:1:0:0:1:0:0:2", "fd00:1::1:0:0:2"],
    ["::ffff:10.0.0.1", "::ffff:a00:1"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
  ])("ip6 %s → %s", (text, canonical) => {
    expect(formatIp6(parseIp6(text))).toBe(canonical);
  });
  test.each([["10.0.0"], ["10.0.0.256"], ["a.b.c.d"]])("bad ip4 %s throws", (s) => {
    expect(() => parseIp4(s)).toThrow(/parse IPv4 address/);
  });
  test.each([["1::2::3"], ["1:2:3"], ["12345::"]])("bad ip6 %s throws", (s) => {
    expect(() => parseIp6(s)).toThrow(/parse IPv6 address/);
  });
  it("rejects non-integers with the struct and field named", () => {
    expect(() => val.encode({ counter: 1n, backend: 1.5, flags: 0 })).toThrow("encode fx_val.backend");
  });
  it("strings and bytes", () => {
    const m = defineStruct("meta", { name: ["str", 8], raw: ["bytes", 3], n: "u8" });
    const b = m.encode({ name: "ns/a", raw: new Uint8Array([1, 2, 3]), n: 9 });
    expect(m.decode(b)).toEqual({ name: "ns/a", raw: new Uint8Array([1, 2, 3]), n: 9 });
    expect(() => m.encode({ name: "too-long-name", raw: new Uint8Array(0), n: 0 })).toThrow("meta.name");
  });
  it("encodeMany/decodeMany handle 100k entries", () => {
    const items = Array.from({ length: 100_000 }, (_, i) => ({
      address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      dport: i & 0xffff,
      slot: i % 7,
      proto: 6,
      scope: 0,
    }));
    const buf = key.encodeMany(items);
    expect(buf.length).toBe(1_200_000);
    const back = key.decodeMany(buf, items.length);
    expect(back[99_999]).toEqual(items[99_999]!);
    expect(back[12345]).toEqual(items[12345]!);
  });
  it("scalar codec", () => {
    const u32 = scalar("u32", "u32");
    expect([...u32.encode({ v: 0x01020304 })]).toEqual([4, 3, 2, 1]);
  });
});
