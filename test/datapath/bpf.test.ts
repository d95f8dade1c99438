import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { attachCgroup, detachPinnedLink } from "../../src/datapath/attach.ts";
import {
  BPF_NOEXIST,
  BpfLink,
  BpfMap,
  type BpfObject,
  LinkType,
  MapType,
  openObject,
  possibleCpus,
} from "../../src/datapath/bpf.ts";
import { cgroup2Mounts, ensureBpffs, ensureCgroup2 } from "../../src/datapath/bpffs.ts";
import { checkAgainstBtf, decodePerCpu, defineStruct, scalar } from "../../src/datapath/codec.ts";
import { BpfError } from "../../src/datapath/ffi.ts";
import { needs } from "../harness/env.ts";
import { compileFixture, uniquePrefix } from "./_fixtures.ts";

const skip = needs({ root: true, tools: ["clang"] }, "datapath bpf tests");

const fxKey = defineStruct("fx_key", { address: "ip4", port: "be16", proto: "u8", pad: ["pad", 1] });
const fxVal = defineStruct("fx_val", { counter: "u64", backend: "ip4", flags: "u16", pad: ["pad", 2] });
const fxSmall = defineStruct("fx_small", { a: "u32", b: "u32", c: "u32" });
const fxLpmKey = defineStruct("fx_lpm_key", { prefixlen: "u32", address: "ip4" });
const u32 = scalar("u32", "u32");

describe.skipIf(!!skip)("bpf objects and maps", () => {
  const prefix = uniquePrefix();
  const root = `/sys/fs/bpf/${prefix}`;
  let bytes: Uint8Array;
  let obj: BpfObject;

  beforeAll(() => {
    ensureBpffs(root);
    bytes = compileFixture("maps");
    obj = openObject(bytes, "fx");
    obj.setMaxEntries("fx_lru", 512);
    obj.pinMaps(`${root}/maps`);
    obj.load();
  });
  afterAll(() => {
    obj?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("lists maps and programs, and applies max entries", () => {
    expect({ maps: obj.maps(), programs: obj.programs(), lru: obj.map("fx_lru").maxEntries }).toEqual({
      maps: ["fx_hash", "fx_lru", "fx_array", "fx_percpu", "fx_lpm"],
      programs: ["fx_xdp", "fx_tc"],
      lru: 512,
    });
  });

  it("pins every map after load", () => {
    expect(readdirSync(`${root}/maps`).sort()).toEqual([
      "fx_array",
      "fx_hash",
      "fx_lpm",
      "fx_lru",
      "fx_percpu",
    ]);
  });

  it("codecs match the object's BTF", () => {
    for (const c of [fxKey, fxVal, fxSmall, fxLpmKey]) checkAgainstBtf(obj.btf, c, "fx");
  });

  it("a codec whose layout differs names the struct and field", () => {
    const wrong = defineStruct("fx_val", { counter: "u64", flags: "u16", backend: "ip4", pad: ["pad", 2] });
    expect(() => checkAgainstBtf(obj.btf, wrong, "fx")).toThrow(
      /struct fx_val .*field backend: offset 8 in BTF != 10 in codec/,
    );
    const missing = defineStruct("fx_key", { address: "ip4", port: "be16", pad: ["pad", 2] });
    expect(() => checkAgainstBtf(obj.btf, missing, "fx")).toThrow(/struct fx_key .*field proto .*missing/);
    const size = defineStruct("fx_small", { a: "u32", b: "u32" });
    expect(() => checkAgainstBtf(obj.btf, size, "fx")).toThrow(/struct fx_small .*size 12 in BTF != 8/);
  });

  it("a struct changed in C (other object) fails against the old codec", () => {
    using other = openObject(compileFixture("codec_mismatch"), "cm");
    expect(() => checkAgainstBtf(other.btf, fxKey, "cm")).toThrow(
      /struct fx_key .*field proto: offset 4 in BTF != 6 in codec/,
    );
  });

  it("hash: update, lookup, delete, NOEXIST, iterate", () => {
    const m = obj.map("fx_hash");
    const k = fxKey.encode({ address: "10.0.0.1", port: 80, proto: 6 });
    const v = fxVal.encode({ counter: 7n, backend: "10.1.0.1", flags: 1 });
    expect(m.lookup(k)).toBeUndefined();
    m.update(k, v);
    expect(fxVal.decode(m.lookup(k)!)).toEqual({ counter: 7n, backend: "10.1.0.1", flags: 1 });
    expect(() => m.update(k, v, BPF_NOEXIST)).toThrow(/update map fx_hash: EEXIST/);
    expect([...m.keys()].map((x) => fxKey.decode(x))).toEqual([{ address: "10.0.0.1", port: 80, proto: 6 }]);
    expect(m.delete(k)).toBe(true);
    expect(m.delete(k)).toBe(false);
    expect(() => m.lookup(new Uint8Array(3))).toThrow(/key is 3 bytes, map wants 8/);
  });

  it("hash: batch update and batch lookup of 10k entries", () => {
    const m = obj.map("fx_hash");
    const n = 10_000;
    const keys = Array.from({ length: n }, (_, i) => ({
      address: `10.9.${i >> 8}.${i & 255}`,
      port: 443,
      proto: 6,
    }));
    const vals = Array.from({ length: n }, (_, i) => ({
      counter: BigInt(i),
      backend: "10.2.0.1",
      flags: i & 0xffff,
    }));
    m.updateBatch(fxKey.encodeMany(keys), fxVal.encodeMany(vals), n);
    const all = m.lookupBatch();
    expect(all.count).toBe(n);
    const got = new Map(
      fxKey
        .decodeMany(all.keys, all.count)
        .map((k, i) => [k.address, fxVal.decode(all.values, i * fxVal.size)]),
    );
    expect(got.size).toBe(n);
    expect(got.get("10.9.39.15")).toEqual(vals[39 * 256 + 15]!);
    expect([...m.entries()].length).toBe(n);

    // batch delete: every other key, with 500 keys that are not there mixed in (the kernel
    // stops at each missing key; deleteBatch skips it and goes on)
    const del: typeof keys = [];
    for (let i = 0; i < n; i += 2) {
      del.push(keys[i]!);
      if (i % 40 === 0) del.push({ address: `10.8.${(i >> 8) & 255}.${i & 255}`, port: 443, proto: 6 });
    }
    expect(m.deleteBatch(fxKey.encodeMany(del), del.length), "keys that existed").toBe(n / 2);
    const left = fxKey.decodeMany(m.lookupBatch().keys, n / 2).map((k) => k.address);
    expect(left.length).toBe(n / 2);
    expect(new Set(left).has("10.9.0.1") && !new Set(left).has("10.9.0.2"), "odd keys stay").toBe(true);
    expect(m.deleteBatch(fxKey.encodeMany(keys), n), "the rest").toBe(n / 2);
    expect(m.lookupBatch().count).toBe(0);
  });

  it("LRU hash evicts beyond max entries", () => {
    const m = obj.map("fx_lru");
    const n = 2000;
    const keys = Array.from({ length: n }, (_, i) => ({
      address: `10.3.${i >> 8}.${i & 255}`,
      port: 53,
      proto: 17,
    }));
    const vals = keys.map(() => ({ counter: 1n, backend: "10.2.0.2", flags: 0 }));
    for (let i = 0; i < n; i++) m.update(fxKey.encode(keys[i]!), fxVal.encode(vals[i]!));
    const count = m.lookupBatch().count;
    expect(count).toBeGreaterThan(0);
    expect(count).toBeLessThanOrEqual(512);
  });

  it("array: every index exists, batch lookup returns max entries", () => {
    const m = obj.map("fx_array");
    m.update(u32.encode({ v: 5 }), fxVal.encode({ counter: 5n, backend: "1.2.3.4", flags: 0 }));
    expect(fxVal.decode(m.lookup(u32.encode({ v: 5 }))!).backend).toBe("1.2.3.4");
    expect(fxVal.decode(m.lookup(u32.encode({ v: 6 }))!).counter).toBe(0n);
    expect(m.lookupBatch().count).toBe(64);
    expect(() => m.update(u32.encode({ v: 64 }), new Uint8Array(16))).toThrow(/E2BIG/);
  });

  it("per-CPU hash: one value slot (rounded to 8 bytes) per possible CPU", () => {
    const m = obj.map("fx_percpu");
    const cpus = possibleCpus();
    expect(m.valueStride).toBe(cpus * 16);
    const buf = new Uint8Array(m.valueStride);
    for (let c = 0; c < cpus; c++) fxSmall.encodeInto({ a: c, b: 100 + c, c: 7 }, buf, c * 16);
    m.update(u32.encode({ v: 1 }), buf);
    const per = decodePerCpu(fxSmall, m.lookup(u32.encode({ v: 1 }))!, cpus);
    expect(per).toEqual(Array.from({ length: cpus }, (_, c) => ({ a: c, b: 100 + c, c: 7 })));
    expect(m.lookupBatch().count).toBe(1);
  });

  it("LPM trie: longest prefix wins; iteration falls back to get_next_key", () => {
    const m = obj.map("fx_lpm");
    m.update(fxLpmKey.encode({ prefixlen: 8, address: "10.0.0.0" }), u32.encode({ v: 8 }));
    m.update(fxLpmKey.encode({ prefixlen: 24, address: "10.1.2.0" }), u32.encode({ v: 24 }));
    const hit = (ip: string) => m.lookup(fxLpmKey.encode({ prefixlen: 32, address: ip }));
    expect(u32.decode(hit("10.1.2.3")!).v).toBe(24);
    expect(u32.decode(hit("10.200.0.1")!).v).toBe(8);
    expect(hit("11.0.0.1")).toBeUndefined();
    expect(m.lookupBatch().count).toBe(2);
    // no batch ops on an LPM trie: deleteBatch falls back to one delete per key
    const two = new Uint8Array(2 * fxLpmKey.size);
    fxLpmKey.encodeInto({ prefixlen: 8, address: "10.0.0.0" }, two, 0);
    fxLpmKey.encodeInto({ prefixlen: 16, address: "10.9.0.0" }, two, fxLpmKey.size);
    expect(m.deleteBatch(two, 2)).toBe(1);
    expect(m.lookupBatch().count).toBe(1);
  });

  it("opens a pinned map with its shape from the kernel", () => {
    using m = BpfMap.openPinned(`${root}/maps/fx_hash`);
    expect({ type: m.type, keySize: m.keySize, valueSize: m.valueSize, maxEntries: m.maxEntries }).toEqual({
      type: MapType.HASH,
      keySize: 8,
      valueSize: 16,
      maxEntries: 16384,
    });
    const k = fxKey.encode({ address: "10.0.0.9", port: 1, proto: 6 });
    m.update(k, fxVal.encode({ counter: 1n, backend: "10.0.0.10", flags: 0 }));
    expect(obj.map("fx_hash").lookup(k)).toBeDefined();
  });

  it("a second object reuses compatible pins (contents survive)", () => {
    const k = fxKey.encode({ address: "10.0.0.77", port: 7, proto: 6 });
    obj.map("fx_hash").update(k, fxVal.encode({ counter: 77n, backend: "10.0.0.78", flags: 0 }));
    using again = openObject(bytes, "fx");
    again.setMaxEntries("fx_lru", 512);
    again.pinMaps(`${root}/maps`);
    again.load();
    expect(fxVal.decode(again.map("fx_hash").lookup(k)!).counter).toBe(77n);
  });

  it("an incompatible pin stops with a clear error", () => {
    using again = openObject(bytes, "fx");
    // fx_lru is pinned with 512 entries; the object now declares 1024
    expect(() => again.pinMaps(`${root}/maps`)).toThrow(
      /reuse pinned map fx_lru: EINVAL \(.*incompatible: max entries 512 \(pinned\) != 1024 \(object\).*run kpr cleanup\)/,
    );
  });

  it("missing pinned map: open fails with ENOENT and the path", () => {
    expect(() => BpfMap.openPinned(`${root}/maps/nope`)).toThrow(`open pinned map ${root}/maps/nope: ENOENT`);
  });

  it("creates maps directly", () => {
    using m = BpfMap.create({
      name: "kprt_direct",
      type: MapType.LPM_TRIE,
      keySize: 8,
      valueSize: 4,
      maxEntries: 8,
    });
    m.update(fxLpmKey.encode({ prefixlen: 16, address: "192.168.0.0" }), u32.encode({ v: 1 }));
    expect(m.lookup(fxLpmKey.encode({ prefixlen: 32, address: "192.168.5.5" }))).toBeDefined();
  });
});

describe.skipIf(!!skip)("programs", () => {
  let obj: BpfObject;
  beforeAll(() => {
    obj = openObject(compileFixture("maps"), "fxprog");
    obj.load();
  });
  afterAll(() => obj?.close());

  function packet(daddr: number[], proto: number, dport: number): Uint8Array {
    const p = new Uint8Array(14 + 20 + 8);
    p[12] = 0x08;
    p[14] = 0x45;
    p[14 + 9] = proto;
    p.set(daddr, 14 + 16);
    p[14 + 20 + 2] = dport >> 8;
    p[14 + 20 + 3] = dport & 255;
    return p;
  }

  it("XDP test run: rewrites a matching packet and counts it", () => {
    const m = obj.map("fx_hash");
    const k = fxKey.encode({ address: "10.96.0.1", port: 80, proto: 6 });
    m.update(k, fxVal.encode({ counter: 0n, backend: "10.244.1.5", flags: 0 }));
    const r = obj.program("fx_xdp").testRun({ data: packet([10, 96, 0, 1], 6, 80) });
    expect({ retval: r.retval, daddr: [...r.data.subarray(30, 34)], len: r.data.length }).toEqual({
      retval: 3, // XDP_TX
      daddr: [10, 244, 1, 5],
      len: 42,
    });
    expect(fxVal.decode(m.lookup(k)!).counter).toBe(1n);
    // repeat runs the program on the same buffer: the first run rewrote it, so later runs miss
    const rep = obj.program("fx_xdp").testRun({ data: packet([10, 96, 0, 1], 6, 80), repeat: 100 });
    expect({ retval: rep.retval, counter: fxVal.decode(m.lookup(k)!).counter }).toEqual({
      retval: 2,
      counter: 2n,
    });
    const miss = obj.program("fx_xdp").testRun({ data: packet([10, 96, 0, 2], 6, 80) });
    expect(miss.retval).toBe(2); // XDP_PASS
  });

  it("tc test run: drops UDP, passes TCP", () => {
    const p = obj.program("fx_tc");
    expect([
      p.testRun({ data: packet([1, 1, 1, 1], 17, 53) }).retval,
      p.testRun({ data: packet([1, 1, 1, 1], 6, 53) }).retval,
    ]).toEqual([2, 0]);
  });

  it("a program the verifier rejects fails with the verifier's message", () => {
    using broken = openObject(compileFixture("broken"), "broken");
    let err: unknown;
    try {
      broken.load();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^load object broken: program broken_xdp rejected by the verifier: EACCES/);
    expect(msg).toContain("invalid access to packet");
    expect(msg.split("\n").length).toBeLessThanOrEqual(22);
  });
});

describe.skipIf(!!skip)("cgroup link", () => {
  const prefix = uniquePrefix();
  const root = `/sys/fs/bpf/${prefix}`;
  let cg = "";
  let obj: BpfObject;
  beforeAll(async () => {
    ensureBpffs(root);
    let base = cgroup2Mounts()[0];
    if (!base) {
      base = `/run/${prefix}/cgroup2`;
      ensureCgroup2(base);
    }
    cg = join(base, prefix);
    mkdirSync(cg);
    obj = openObject(
      new Uint8Array(await Bun.file(join(import.meta.dir, "../../.build/bpf/probe.bpf.o")).arrayBuffer()),
      "probe",
    );
    obj.load();
  });
  afterAll(() => {
    obj?.close();
    rmSync(root, { recursive: true, force: true });
    if (cg && existsSync(cg)) rmdirSync(cg);
  });

  it("attaches connect4 to a child cgroup, pins, updates, detaches", () => {
    const pin = `${root}/links/cgroup-connect4`;
    const link = attachCgroup(obj.program("probe_connect4"), cg, "connect4", pin);
    const info = link.info();
    link.close();
    expect({ type: info.type, attachType: info.attachType, pinned: existsSync(pin) }).toEqual({
      type: LinkType.CGROUP,
      attachType: 10,
      pinned: true,
    });
    // attaching again through the same pin updates the link in place
    const again = attachCgroup(obj.program("probe_connect4"), cg, "connect4", pin);
    expect(again.info().id).toBe(info.id);
    again.close();
    const q = Bun.spawnSync(["bpftool", "cgroup", "show", cg]).stdout.toString();
    expect(q).toContain("connect4");
    expect(detachPinnedLink(pin)).toBe(true);
    expect(existsSync(pin)).toBe(false);
    expect(Bun.spawnSync(["bpftool", "cgroup", "show", cg]).stdout.toString()).not.toContain("connect4");
    expect(detachPinnedLink(pin)).toBe(false);
  });

  it("attaching through the pin of a link on another cgroup moves the hook (cgroup.root changed)", () => {
    const pin = `${root}/links/cgroup-connect4`;
    const other = `${cg}-moved`;
    mkdirSync(other);
    try {
      attachCgroup(obj.program("probe_connect4"), cg, "connect4", pin).close();
      const moved = attachCgroup(obj.program("probe_connect4"), other, "connect4", pin);
      const info = moved.info();
      moved.close();
      const show = (dir: string) => Bun.spawnSync(["bpftool", "cgroup", "show", dir]).stdout.toString();
      expect(
        {
          cgroupId: info.cgroupId,
          onOld: show(cg).includes("connect4"),
          onNew: show(other).includes("connect4"),
        },
        "link after the move",
      ).toEqual({ cgroupId: statSync(other, { bigint: true }).ino, onOld: false, onNew: true });
    } finally {
      detachPinnedLink(pin);
      rmdirSync(other);
    }
  });

  it("opening a pinned link that is not there fails with ENOENT", () => {
    expect(() => BpfLink.openPinned(`${root}/links/none`)).toThrow(/ENOENT/);
  });
});
