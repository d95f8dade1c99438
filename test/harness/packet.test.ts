import { describe, expect, test } from "bun:test";
import {
  buildPacket,
  formatPacket,
  fromHex,
  internetChecksum,
  ip4Bytes,
  ip6Bytes,
  ipText,
  macBytes,
  type PacketSpec,
  parsePacket,
  tcpFlagBits,
  tcpFlagText,
  toHex,
  verifyChecksums,
} from "./packet.ts";

const A = "02:00:00:00:00:01";
const B = "02:00:00:00:00:02";
const ab = { src: A, dst: B };
const ba = { src: B, dst: A };

const udpInner4: PacketSpec = {
  ip4: { src: "10.0.0.1", dst: "10.0.0.2", id: 0x60cf, df: true },
  udp: { sport: 45274, dport: 9999 },
  payload: "x",
};
const udpInner6: PacketSpec = {
  ip6: { src: "fd00::1", dst: "fd00::2", flowLabel: 0x685d0 },
  udp: { sport: 43834, dport: 9999 },
  payload: "y",
};
const seq13 = Uint8Array.from({ length: 13 }, (_, i) => i);

/**
 * Frames captured with tcpdump from real exchanges between two network namespaces (curl, the UDP
 * echo server, ping, ping -R, UDP to a closed port), sender tx checksum offload off, so every
 * checksum was computed by the kernel. Each row also gives the spec that must rebuild it.
 */
const captured: { name: string; hex: string; spec: PacketSpec; summary: string }[] = [
  {
    name: "tcp syn v4 with options",
    hex: "02000000000202000000000108004500003c637340004006c3460a0000010a000002d2500050bfe28fd500000000a002faf01ecb0000020405b40402080a075ef087000000000103030a",
    spec: {
      eth: ab,
      ip4: { src: "10.0.0.1", dst: "10.0.0.2", id: 0x6373, df: true },
      tcp: {
        sport: 53840,
        dport: 80,
        seq: 0xbfe28fd5,
        flags: "S",
        window: 0xfaf0,
        options: fromHex("020405b40402080a075ef087000000000103030a"),
      },
    },
    summary: `${A} > ${B} 10.0.0.1:53840 > 10.0.0.2:80 ttl 64 tcp [S] seq 3219296213 ack 0 len 0`,
  },
  {
    name: "tcp psh-ack v4 with payload",
    hex: "02000000000202000000000108004500007c637540004006c3040a0000010a000002d2500050bfe28fd634ab91588018003f89b700000101080a075ef08831b5f0ad474554202f20485454502f312e310d0a486f73743a2031302e302e302e320d0a557365722d4167656e743a206375726c2f372e38382e310d0a4163636570743a202a2f2a0d0a0d0a",
    spec: {
      eth: ab,
      ip4: { src: "10.0.0.1", dst: "10.0.0.2", id: 0x6375, df: true },
      tcp: {
        sport: 53840,
        dport: 80,
        seq: 0xbfe28fd6,
        ack: 0x34ab9158,
        flags: "PA",
        window: 0x3f,
        options: fromHex("0101080a075ef08831b5f0ad"),
      },
      payload: "GET / HTTP/1.1\r\nHost: 10.0.0.2\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    },
    summary: `${A} > ${B} 10.0.0.1:53840 > 10.0.0.2:80 ttl 64 tcp [PA] seq 3219296214 ack 883659096 len 72`,
  },
  {
    name: "tcp syn v6",
    hex: "02000000000202000000000186dd6008661d00280640fd000000000000000000000000000001fd000000000000000000000000000002807c0050bb29372400000000a002fd20eecc0000020405a00402080a3945b5bf000000000103030a",
    spec: {
      eth: ab,
      ip6: { src: "fd00::1", dst: "fd00::2", flowLabel: 0x8661d },
      tcp: {
        sport: 32892,
        dport: 80,
        seq: 0xbb293724,
        flags: "S",
        window: 0xfd20,
        options: fromHex("020405a00402080a3945b5bf000000000103030a"),
      },
    },
    summary: `${A} > ${B} [fd00::1]:32892 > [fd00::2]:80 hlim 64 tcp [S] seq 3140040484 ack 0 len 0`,
  },
  {
    name: "udp v4",
    hex: "02000000000202000000000108004500002118a2400040110e280a0000010a000002ba300035000ded9968656c6c6f",
    spec: {
      eth: ab,
      ip4: { src: "10.0.0.1", dst: "10.0.0.2", id: 0x18a2, df: true },
      udp: { sport: 47664, dport: 53 },
      payload: "hello",
    },
    summary: `${A} > ${B} 10.0.0.1:47664 > 10.0.0.2:53 ttl 64 udp len 5`,
  },
  {
    name: "udp v6",
    hex: "02000000000202000000000186dd600b63fe000e1140fd000000000000000000000000000001fd000000000000000000000000000002c8290035000ef96668656c6c6f36",
    spec: {
      eth: ab,
      ip6: { src: "fd00::1", dst: "fd00::2", flowLabel: 0xb63fe },
      udp: { sport: 51241, dport: 53 },
      payload: "hello6",
    },
    summary: `${A} > ${B} [fd00::1]:51241 > [fd00::2]:53 hlim 64 udp len 6`,
  },
  {
    name: "icmp echo v4",
    hex: "020000000002020000000001080045000029442140004001e2b00a0000010a0000020800a93e249c0001000102030405060708090a0b0c",
    spec: {
      eth: ab,
      ip4: { src: "10.0.0.1", dst: "10.0.0.2", id: 0x4421, df: true },
      icmp: { type: "echo-request", id: 0x249c, seq: 1 },
      payload: seq13,
    },
    summary: `${A} > ${B} 10.0.0.1 > 10.0.0.2 ttl 64 icmp type 8 code 0 len 13`,
  },
  {
    name: "icmp6 echo",
    hex: "02000000000202000000000186dd600136ea00153a40fd000000000000000000000000000001fd000000000000000000000000000002800036e9249d0001000102030405060708090a0b0c",
    spec: {
      eth: ab,
      ip6: { src: "fd00::1", dst: "fd00::2", flowLabel: 0x136ea },
      icmp: { type: "echo-request", id: 0x249d, seq: 1 },
      payload: seq13,
    },
    summary: `${A} > ${B} fd00::1 > fd00::2 hlim 64 icmp type 128 code 0 len 13`,
  },
  {
    name: "icmp echo v4 with record-route option (ping -R)",
    hex: "02000000000202000000000108004f0000499a1b4000400150860a0000010a000002010727080a00000100000000000000000000000000000000000000000000000000000000000000000800cccb252f00010001020304",
    spec: {
      eth: ab,
      ip4: {
        src: "10.0.0.1",
        dst: "10.0.0.2",
        id: 0x9a1b,
        df: true,
        options: [1, 7, 39, 8, 10, 0, 0, 1, ...new Array<number>(32).fill(0)],
      },
      icmp: { type: "echo-request", id: 0x252f, seq: 1 },
      payload: seq13.subarray(0, 5),
    },
    summary: `${A} > ${B} 10.0.0.1 > 10.0.0.2 ttl 64 icmp type 8 code 0 len 5`,
  },
  {
    name: "icmp port unreachable v4 quoting udp",
    hex: "020000000001020000000002080045c00039012a0000400164d80a0000020a0000010303111a000000004500001d60cf40004011c5fe0a0000010a000002b0da270f00099bef78",
    spec: {
      eth: ba,
      ip4: { src: "10.0.0.2", dst: "10.0.0.1", tos: 0xc0, id: 0x012a },
      icmp: { type: "dest-unreach", code: 3, inner: udpInner4 },
    },
    summary: `${B} > ${A} 10.0.0.2 > 10.0.0.1 ttl 64 icmp type 3 code 3 (inner: 10.0.0.1:45274 > 10.0.0.2:9999 ttl 64 udp len 1) len 29`,
  },
  {
    name: "icmp6 port unreachable quoting udp",
    hex: "02000000000102000000000286dd6001ad4b00393a40fd000000000000000000000000000002fd00000000000000000000000000000101040d7e00000000600685d000091140fd000000000000000000000000000001fd000000000000000000000000000002ab3a270f0009ba8d79",
    spec: {
      eth: ba,
      ip6: { src: "fd00::2", dst: "fd00::1", flowLabel: 0x1ad4b },
      icmp: { type: "dest-unreach", code: 4, inner: udpInner6 },
    },
    summary: `${B} > ${A} fd00::2 > fd00::1 hlim 64 icmp type 1 code 4 (inner: [fd00::1]:43834 > [fd00::2]:9999 hlim 64 udp len 1) len 49`,
  },
  {
    name: "icmp6 neighbour solicitation",
    hex: "3333ff00000202000000000186dd6000000000203afffd000000000000000000000000000001ff0200000000000000000001ff00000287007d9700000000fd0000000000000000000000000000020101020000000001",
    spec: {
      eth: { src: A, dst: "33:33:ff:00:00:02" },
      ip6: { src: "fd00::1", dst: "ff02::1:ff00:2", hopLimit: 255 },
      icmp: { type: 135, rest: [0, 0, 0, 0] },
      payload: Uint8Array.from([...ip6Bytes("fd00::2"), 1, 1, ...macBytes(A)]),
    },
    summary: `${A} > 33:33:ff:00:00:02 fd00::1 > ff02::1:ff00:2 hlim 255 icmp type 135 code 0 len 24`,
  },
];

describe("packet: kernel-captured frames", () => {
  test.each(captured)("$name: checksums verify", ({ hex }) => {
    expect(verifyChecksums(fromHex(hex))).toEqual({ ok: true, errors: [] });
  });

  test.each(captured)("$name: buildPacket reproduces the bytes", ({ hex, spec }) => {
    expect(toHex(buildPacket(spec))).toBe(hex);
  });

  test.each(captured)("$name: parse summary", ({ hex, summary }) => {
    expect(formatPacket(fromHex(hex))).toBe(summary);
  });

  test.each(captured)("$name: one flipped bit is reported", ({ hex }) => {
    const bytes = fromHex(hex);
    // The last byte is L4 payload or header: covered by the L4 checksum in every row.
    bytes[bytes.length - 1]! ^= 0x01;
    const r = verifyChecksums(bytes);
    expect(r.ok).toBe(false);
    expect(r.errors.join("\n")).toMatch(/(tcp|udp|icmp6?) checksum 0x[0-9a-f]{4}, want 0x[0-9a-f]{4}/);
  });
});

describe("packet: parse", () => {
  test("tcp syn v4 as an object", () => {
    expect(parsePacket(fromHex(captured[0]!.hex))).toMatchObject({
      eth: { src: A, dst: B, type: 0x0800 },
      ip4: { src: "10.0.0.1", dst: "10.0.0.2", ttl: 64, protocol: 6, df: true, ihl: 5, totalLength: 60 },
      tcp: { sport: 53840, dport: 80, flags: "S", flagBits: 0x02, seq: 0xbfe28fd5, ack: 0, window: 0xfaf0 },
      payload: new Uint8Array(0),
      offsets: { l3: 14, l4: 34, payload: 74 },
    });
  });

  test("icmp error: inner packet", () => {
    const p = parsePacket(fromHex(captured[8]!.hex));
    expect(p.icmp).toMatchObject({
      type: 3,
      code: 3,
      inner: { ip4: { src: "10.0.0.1", dst: "10.0.0.2" }, udp: { sport: 45274, dport: 9999, length: 9 } },
    });
    expect(new TextDecoder().decode(p.icmp?.inner?.payload)).toBe("x");
  });

  test("Ethernet padding is not payload", () => {
    const bytes = buildPacket({
      eth: ab,
      ip4: { src: "1.1.1.1", dst: "2.2.2.2" },
      udp: { sport: 1, dport: 2 },
      payload: "ab",
    });
    const padded = new Uint8Array(60);
    padded.set(bytes);
    expect(parsePacket(padded).payload).toEqual(new TextEncoder().encode("ab"));
    expect(verifyChecksums(padded).ok).toBe(true);
  });

  test("raw IP start, VLAN tag", () => {
    const spec: PacketSpec = { ip6: { src: "fd00::1", dst: "fd00::2" }, udp: { sport: 7, dport: 8 } };
    expect(parsePacket(buildPacket(spec), { from: "ip" })).toMatchObject({
      ip6: { src: "fd00::1" },
      udp: { dport: 8 },
    });
    const tagged = buildPacket({ ...spec, eth: { ...ab, vlan: 42 } });
    expect(toHex(tagged.subarray(12, 18))).toBe("8100002a86dd");
    expect(parsePacket(tagged)).toMatchObject({ eth: { vlan: 42, type: 0x86dd }, udp: { sport: 7 } });
  });

  test("truncated input parses as far as it goes", () => {
    const bytes = fromHex(captured[0]!.hex).subarray(0, 40);
    const p = parsePacket(bytes);
    expect(p.truncated).toBe(true);
    expect(p.ip4?.dst).toBe("10.0.0.2");
    expect(verifyChecksums(bytes).errors).toEqual(["ip4 total length 60 exceeds the 26 bytes present"]);
  });

  test("non-first fragment: no L4 parse", () => {
    const bytes = buildPacket({
      ip4: { src: "1.1.1.1", dst: "2.2.2.2", fragOffset: 10, protocol: 17 },
      payload: "zz",
    });
    const p = parsePacket(bytes, { from: "ip" });
    expect(p.udp).toBeUndefined();
    expect(p.ip4).toMatchObject({ fragOffset: 10, protocol: 17 });
    expect(verifyChecksums(bytes, { from: "ip" }).ok).toBe(true);
  });
});

describe("packet: checksums computed by hand", () => {
  test("RFC 1071 example", () => {
    // 0001 + f203 + f4f5 + f6f7 = 0x2ddf0 → fold 0xddf2 → complement 0x220d
    expect(internetChecksum(fromHex("0001f203f4f5f6f7"))).toBe(0x220d);
    // odd length: the last byte is padded with a zero byte
    expect(internetChecksum(fromHex("0001f203f4f5f6"))).toBe(0x2304);
  });

  test("ipv4 with router-alert option, tcp syn (values from an independent one-off)", () => {
    const bytes = buildPacket({
      ip4: { src: "192.168.1.10", dst: "192.168.1.20", id: 7, ttl: 32, options: [0x94, 4, 0, 0] },
      tcp: { sport: 40000, dport: 443, seq: 1, flags: "S", window: 1024 },
    });
    const p = parsePacket(bytes, { from: "ip" });
    expect({ ip: p.ip4?.checksum, tcp: p.tcp?.checksum, ihl: p.ip4?.ihl }).toEqual({
      ip: 0x8252,
      tcp: 0x8a77,
      ihl: 6,
    });
    expect(verifyChecksums(bytes, { from: "ip" }).ok).toBe(true);
  });

  test("ipv6 routing header: pseudo-header uses the final destination", () => {
    const spec: PacketSpec = {
      ip6: {
        src: "fd00::1",
        dst: "fd00::50",
        ext: [{ type: "routing", routingType: 4, segmentsLeft: 1, addresses: ["fd00::99", "fd00::50"] }],
      },
      udp: { sport: 1000, dport: 2000 },
      payload: "srh",
    };
    const bytes = buildPacket(spec);
    const p = parsePacket(bytes, { from: "ip" });
    expect(p.udp?.checksum).toBe(0x1e12);
    expect(p.ip6?.ext[0]?.routing).toEqual({
      routingType: 4,
      segmentsLeft: 1,
      addresses: ["fd00::99", "fd00::50"],
    });
    expect(verifyChecksums(bytes, { from: "ip" }).ok).toBe(true);
  });

  test("udp: computed zero is sent as 0xffff; 'none' is 0 and valid on v4 only", () => {
    const base = { ip4: { src: "10.1.1.1", dst: "10.2.2.2" }, udp: { sport: 5, dport: 6 } };
    const c = parsePacket(buildPacket({ ...base, payload: new Uint8Array(2) }), { from: "ip" }).udp!.checksum;
    // Adding the checksum value as a payload word makes the ones'-complement sum 0xffff.
    const zeroing = buildPacket({ ...base, payload: Uint8Array.of(c >> 8, c & 0xff) });
    expect(parsePacket(zeroing, { from: "ip" }).udp?.checksum).toBe(0xffff);
    expect(verifyChecksums(zeroing, { from: "ip" }).ok).toBe(true);

    const none4 = buildPacket({ ...base, udp: { ...base.udp, checksum: "none" } });
    expect(verifyChecksums(none4, { from: "ip" })).toEqual({ ok: true, errors: [] });
    const none6 = buildPacket({
      ip6: { src: "fd00::1", dst: "fd00::2" },
      udp: { sport: 5, dport: 6, checksum: "none" },
    });
    expect(verifyChecksums(none6, { from: "ip" }).errors).toEqual([
      "udp checksum 0 over IPv6 (mandatory there)",
    ]);
  });

  test.each([
    [
      "ip4 header",
      { ip4: { src: "10.0.0.1", dst: "10.0.0.2", checksum: 0x1234 }, udp: { sport: 1, dport: 2 } },
      /^ip4 header checksum 0x1234, want 0x[0-9a-f]{4}$/,
    ],
    [
      "tcp",
      { ip4: { src: "10.0.0.1", dst: "10.0.0.2" }, tcp: { sport: 1, dport: 2, checksum: 0x1234 } },
      /^tcp checksum 0x1234/,
    ],
    [
      "udp length",
      { ip4: { src: "10.0.0.1", dst: "10.0.0.2" }, udp: { sport: 1, dport: 2, length: 20 } },
      /^udp length 20, IP says 8$/,
    ],
    [
      "icmp6",
      { ip6: { src: "fd00::1", dst: "fd00::2" }, icmp: { type: "echo-reply", checksum: 0x1234 } },
      /^icmp6 checksum 0x1234/,
    ],
  ] as [string, PacketSpec, RegExp][])("override %s is reported", (_name, spec, re) => {
    const r = verifyChecksums(buildPacket(spec), { from: "ip" });
    expect(r.ok).toBe(false);
    expect(r.errors[0]).toMatch(re);
  });
});

describe("packet: ipv6 extension headers", () => {
  test("hop-by-hop + destination options + fragment header round trip", () => {
    const bytes = buildPacket({
      eth: ab,
      ip6: {
        src: "fd00::1",
        dst: "fd00::2",
        ext: [
          { type: "hop", options: [{ type: 5, data: [0, 0] }] },
          { type: "dst", options: [{ type: 0x1e, data: [...ip6Bytes("fd00::10"), 0x1f, 0x90] }] },
        ],
      },
      tcp: { sport: 1, dport: 80, flags: "S" },
    });
    const p = parsePacket(bytes);
    expect(p.ip6).toMatchObject({ nextHeader: 0, protocol: 6, payloadLength: 8 + 24 + 20 });
    expect(p.ip6?.ext.map((e) => [e.type, e.nextHeader, e.data.length + 2])).toEqual([
      [0, 60, 8],
      [60, 6, 24],
    ]);
    expect(p.ip6?.ext[0]?.options).toEqual([{ type: 5, data: Uint8Array.of(0, 0) }]);
    expect(p.ip6?.ext[1]?.options?.[0]?.type).toBe(0x1e);
    expect(p.tcp).toMatchObject({ sport: 1, dport: 80, flags: "S" });
    expect(verifyChecksums(bytes)).toEqual({ ok: true, errors: [] });

    const frag = buildPacket({
      ip6: {
        src: "fd00::1",
        dst: "fd00::2",
        ext: [{ type: "fragment", offset: 0, more: true, ident: 0xabcdef }],
      },
      udp: { sport: 9, dport: 9 },
    });
    expect(parsePacket(frag, { from: "ip" }).ip6?.ext[0]?.fragment).toEqual({
      offset: 0,
      more: true,
      ident: 0xabcdef,
    });
  });

  test("a body that is not 8n-2 bytes is refused", () => {
    expect(() =>
      buildPacket({ ip6: { src: "fd00::1", dst: "fd00::2", ext: [{ type: 60, data: [1, 2, 3] }] } }),
    ).toThrow(/not a multiple of 8/);
  });
});

describe("packet: addresses and flags", () => {
  test.each([
    ["fd00::1", "fd00::1"],
    ["FD00:0:0:0:0:0:0:1", "fd00::1"],
    ["::", "::"],
    ["::1", "::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8::0:1", "2001:db8::1"],
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"],
    ["::ffff:10.0.0.1", "::ffff:a00:1"],
  ])("ipv6 %s → %s", (text, canon) => {
    expect(ipText(ip6Bytes(text))).toBe(canon);
  });

  test.each([
    "1.2.3",
    "1.2.3.256",
    "a.b.c.d",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    "12345::1",
  ])("bad address %s", (t) => {
    expect(() => (t.includes(":") ? ip6Bytes(t) : ip4Bytes(t))).toThrow(/parse IPv[46] address/);
  });

  test("mac and flags", () => {
    expect(() => macBytes("02:00:00:00:00")).toThrow(/parse MAC/);
    expect(tcpFlagBits("SA")).toBe(0x12);
    expect(tcpFlagText(0x11)).toBe("FA");
    expect(() => tcpFlagBits("SX")).toThrow(/unknown letter "X"/);
  });
});
