/**
 * Packet builder, parser and checksum verifier for datapath tests: Ethernet (optional 802.1Q),
 * IPv4 (options), IPv6 (extension headers), TCP, UDP, ICMP/ICMPv6 and payload.
 *
 *   const bytes = buildPacket({ eth: { src, dst }, ip4: { src: "10.0.0.1", dst: "10.0.0.2" },
 *                               tcp: { sport: 1234, dport: 80, flags: "S" }, payload: "hi" });
 *   expect(parsePacket(out)).toMatchObject({ ip4: { dst: "10.0.0.9" }, tcp: { dport: 8080 } });
 *   expect(verifyChecksums(out)).toEqual({ ok: true, errors: [] });
 *
 * Checksums and lengths are computed unless a spec overrides them (to craft broken packets).
 */

import { formatIp4, formatIp6, parseIp4, parseIp6 } from "../../src/datapath/codec.ts";

// ---------------------------------------------------------------------------------------------
// Addresses

/** Parses dotted-quad IPv4 text into 4 bytes; throws on anything else. */
export function ip4Bytes(text: string): Uint8Array {
  return parseIp4(text);
}

/** Parses IPv6 text ("fd00::1", "::ffff:10.0.0.1") into 16 bytes; throws on anything else. */
export function ip6Bytes(text: string): Uint8Array {
  return parseIp6(text);
}

/** Parses IPv4 or IPv6 text (by the presence of ':'). */
export function ipBytes(text: string): Uint8Array {
  return text.includes(":") ? ip6Bytes(text) : ip4Bytes(text);
}

/** Formats 4 or 16 bytes as IPv4 dotted quad or RFC 5952 IPv6 text. */
export function ipText(b: Uint8Array): string {
  if (b.length === 4) return formatIp4(b);
  if (b.length !== 16) throw new Error(`format IP address: ${b.length} bytes (want 4 or 16)`);
  return formatIp6(b);
}

/** Parses "02:00:00:00:00:01" into 6 bytes. */
export function macBytes(text: string): Uint8Array {
  const parts = text.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new Error(`parse MAC address "${text}": want 6 hex octets separated by ':'`);
  }
  return Uint8Array.from(parts.map((p) => Number.parseInt(p, 16)));
}

/** Formats 6 bytes as lowercase "02:00:00:00:00:01". */
export function macText(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");
}

/** Lowercase hex of bytes, e.g. for assertion labels. */
export function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Bytes from hex text (whitespace ignored). */
export function fromHex(text: string): Uint8Array {
  const s = text.replace(/\s+/g, "");
  if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) throw new Error("parse hex: odd length or non-hex digit");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Checksums

/** Ones'-complement sum of big-endian 16-bit words of b[start, end) added to init (unfolded). */
function sum16(b: Uint8Array, start = 0, end = b.length, init = 0): number {
  let s = init;
  let i = start;
  for (; i + 1 < end; i += 2) s += ((b[i] ?? 0) << 8) | (b[i + 1] ?? 0);
  if (i < end) s += (b[i] ?? 0) << 8;
  return s;
}

function fold(s: number): number {
  let x = s;
  while (x > 0xffff) x = (x & 0xffff) + Math.floor(x / 0x10000);
  return x;
}

/** RFC 1071 Internet checksum of bytes (optionally continuing from an unfolded partial sum). */
export function internetChecksum(b: Uint8Array, init = 0): number {
  return ~fold(sum16(b, 0, b.length, init)) & 0xffff;
}

/** Unfolded sum of the TCP/UDP/ICMPv6 pseudo-header. */
function pseudoSum(src: Uint8Array, dst: Uint8Array, proto: number, l4len: number): number {
  let s = sum16(src) + sum16(dst);
  if (src.length === 4) s += proto + l4len;
  else s += (l4len >>> 16) + (l4len & 0xffff) + proto;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Specs

export const IPPROTO = {
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  IPIP: 4,
  IPV6: 41,
  ICMPV6: 58,
  NONE: 59,
  SCTP: 132,
} as const;
export const ETH_P = { IP: 0x0800, ARP: 0x0806, VLAN: 0x8100, IPV6: 0x86dd } as const;

export interface EthSpec {
  src: string;
  dst: string;
  /** EtherType; default from the L3 header. */
  type?: number;
  /** 802.1Q VLAN id: inserts a tag. */
  vlan?: number;
}

export interface Ip4Spec {
  src: string;
  dst: string;
  ttl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** Fragment offset in 8-byte units. */
  fragOffset?: number;
  /** Default from the L4 header; required without one (else 253, "experimental"). */
  protocol?: number;
  /** Raw option bytes; padded with zeros (End of Options) to a multiple of 4. */
  options?: Uint8Array | number[];
  checksum?: number;
  totalLength?: number;
}

export interface Ip6OptionSpec {
  type: number;
  data: Uint8Array | number[];
}

/** One IPv6 extension header. For hop/dst give `options` (padded to 8n) or raw `data`. */
export interface Ip6ExtSpec {
  type: "hop" | "dst" | "routing" | "fragment" | number;
  /** Header bytes after the next-header and length bytes (hop/dst/routing/other). */
  data?: Uint8Array | number[];
  options?: Ip6OptionSpec[];
  /** routing: type (0, 2, 4=SRH), segments left and addresses (SRH: segment list in wire order). */
  routingType?: number;
  segmentsLeft?: number;
  addresses?: string[];
  /** fragment: offset in 8-byte units, more-fragments flag, identification. */
  offset?: number;
  more?: boolean;
  ident?: number;
}

export interface Ip6Spec {
  src: string;
  dst: string;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  /** Next header after the extension headers; default from the L4 header (else 59, none). */
  nextHeader?: number;
  ext?: Ip6ExtSpec[];
  payloadLength?: number;
}

export interface TcpSpec {
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  /** Letters F S R P A U E C (e.g. "SA", "PA") or the flag byte. Default none. */
  flags?: string | number;
  window?: number;
  urg?: number;
  /** Raw option bytes; padded with zeros (End of Options) to a multiple of 4. */
  options?: Uint8Array | number[];
  checksum?: number;
}

export interface UdpSpec {
  sport: number;
  dport: number;
  /** A value, or "none" for 0 (no checksum; valid on IPv4 only). */
  checksum?: number | "none";
  length?: number;
}

export type IcmpTypeName =
  | "echo-request"
  | "echo-reply"
  | "dest-unreach"
  | "time-exceeded"
  | "param-problem"
  | "packet-too-big";

/** ICMP (over ip4) or ICMPv6 (over ip6). */
export interface IcmpSpec {
  type: number | IcmpTypeName;
  code?: number;
  /** Echo identifier and sequence (bytes 4..7). */
  id?: number;
  seq?: number;
  /** Bytes 4..7 verbatim (unused/MTU/pointer); overrides id/seq. */
  rest?: Uint8Array | number[];
  /** Quoted packet of an error message (raw IP bytes or a spec without eth); goes before payload. */
  inner?: Uint8Array | PacketSpec;
  checksum?: number;
}

export interface PacketSpec {
  /** Omit for a packet that starts at the IP header. */
  eth?: EthSpec;
  ip4?: Ip4Spec;
  ip6?: Ip6Spec;
  tcp?: TcpSpec;
  udp?: UdpSpec;
  icmp?: IcmpSpec;
  /** Bytes or UTF-8 text after the L4 header. */
  payload?: Uint8Array | string;
}

const ICMP4_TYPES: Record<IcmpTypeName, number> = {
  "echo-reply": 0,
  "dest-unreach": 3,
  "echo-request": 8,
  "time-exceeded": 11,
  "param-problem": 12,
  "packet-too-big": 3, // v4: dest-unreach code 4 (frag needed)
};
const ICMP6_TYPES: Record<IcmpTypeName, number> = {
  "dest-unreach": 1,
  "packet-too-big": 2,
  "time-exceeded": 3,
  "param-problem": 4,
  "echo-request": 128,
  "echo-reply": 129,
};

const TCP_FLAG_LETTERS = "FSRPAUEC";

/** Flag byte from letters "FSRPAUEC" (any order). */
export function tcpFlagBits(flags: string | number): number {
  if (typeof flags === "number") return flags & 0xff;
  let bits = 0;
  for (const ch of flags.toUpperCase()) {
    const i = TCP_FLAG_LETTERS.indexOf(ch);
    if (i < 0) throw new Error(`tcp flags "${flags}": unknown letter "${ch}" (want F S R P A U E C)`);
    bits |= 1 << i;
  }
  return bits;
}

/** Letters of a flag byte in bit order, e.g. 0x12 → "SA", 0x18 → "PA". */
export function tcpFlagText(bits: number): string {
  let s = "";
  for (let i = 0; i < 8; i++) if (bits & (1 << i)) s += TCP_FLAG_LETTERS[i];
  return s;
}

// ---------------------------------------------------------------------------------------------
// Builder

const u8 = (x: Uint8Array | number[] | undefined): Uint8Array =>
  x === undefined ? new Uint8Array(0) : x instanceof Uint8Array ? x : Uint8Array.from(x);

function padTo(b: Uint8Array, n: number): Uint8Array {
  const len = Math.ceil(b.length / n) * n;
  if (len === b.length) return b;
  const out = new Uint8Array(len);
  out.set(b);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function ext6Number(t: Ip6ExtSpec["type"]): number {
  if (typeof t === "number") return t;
  return { hop: 0, routing: 43, fragment: 44, dst: 60 }[t];
}

/** Hop-by-hop / destination options body padded with Pad1/PadN so that 2 + body is 8n. */
function tlvOptions(opts: Ip6OptionSpec[]): Uint8Array {
  const parts: number[] = [];
  for (const o of opts) {
    const d = u8(o.data);
    parts.push(o.type, d.length, ...d);
  }
  const pad = (8 - ((2 + parts.length) % 8)) % 8;
  if (pad === 1) parts.push(0);
  else if (pad > 1) parts.push(1, pad - 2, ...new Array<number>(pad - 2).fill(0));
  return Uint8Array.from(parts);
}

function buildExt6(e: Ip6ExtSpec, next: number): Uint8Array {
  const t = ext6Number(e.type);
  if (t === 44) {
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    b[0] = next;
    dv.setUint16(2, (((e.offset ?? 0) & 0x1fff) << 3) | (e.more ? 1 : 0));
    dv.setUint32(4, (e.ident ?? 0) >>> 0);
    return b;
  }
  let body: Uint8Array;
  if (e.data !== undefined) body = u8(e.data);
  else if ((t === 0 || t === 60) && e.options) body = tlvOptions(e.options);
  else if (t === 43) {
    const addrs = (e.addresses ?? []).map(ip6Bytes);
    const rt = e.routingType ?? 4;
    const hdr = new Uint8Array(6);
    hdr[0] = rt;
    hdr[1] = e.segmentsLeft ?? Math.max(addrs.length - 1, 0);
    if (rt === 4) hdr[2] = Math.max(addrs.length - 1, 0); // SRH last entry; flags and tag stay 0
    body = concat([hdr, ...addrs]);
  } else body = tlvOptions([]);
  if ((2 + body.length) % 8 !== 0) {
    throw new Error(`ipv6 extension header ${t}: 2 + ${body.length} body bytes is not a multiple of 8`);
  }
  const b = new Uint8Array(2 + body.length);
  b[0] = next;
  b[1] = (b.length >> 3) - 1;
  b.set(body, 2);
  return b;
}

/** Final destination for the pseudo-header: the last routing-header address when one is present. */
function finalDst6(dst: Uint8Array, exts: { type: number; data: Uint8Array }[]): Uint8Array {
  let out = dst;
  for (const e of exts) {
    if (e.type !== 43 || e.data.length < 6) continue;
    const segLeft = e.data[1] ?? 0;
    if (segLeft === 0) continue;
    const rt = e.data[0];
    const n = Math.floor((e.data.length - 6) / 16);
    if (n === 0) continue;
    // SRH (type 4) lists segments in reverse order: the final one is entry 0.
    const idx = rt === 4 ? 0 : n - 1;
    out = e.data.slice(6 + 16 * idx, 6 + 16 * idx + 16);
  }
  return out;
}

function icmpTypeNumber(t: IcmpSpec["type"], v6: boolean): number {
  if (typeof t === "number") return t;
  return (v6 ? ICMP6_TYPES : ICMP4_TYPES)[t];
}

/** Builds the L4 header + payload with checksum, given the pseudo-header addresses. */
function buildL4(spec: PacketSpec, src: Uint8Array, dst: Uint8Array): { proto: number; bytes: Uint8Array } {
  const payload =
    typeof spec.payload === "string" ? new TextEncoder().encode(spec.payload) : u8(spec.payload);
  const v6 = src.length === 16;
  const chosen = [spec.tcp, spec.udp, spec.icmp].filter((x) => x !== undefined).length;
  if (chosen > 1) throw new Error("build packet: give at most one of tcp, udp, icmp");
  if (spec.tcp) {
    const t = spec.tcp;
    const opts = padTo(u8(t.options), 4);
    const hl = 20 + opts.length;
    const b = new Uint8Array(hl + payload.length);
    const dv = new DataView(b.buffer);
    dv.setUint16(0, t.sport);
    dv.setUint16(2, t.dport);
    dv.setUint32(4, (t.seq ?? 0) >>> 0);
    dv.setUint32(8, (t.ack ?? 0) >>> 0);
    b[12] = (hl / 4) << 4;
    b[13] = tcpFlagBits(t.flags ?? 0);
    dv.setUint16(14, t.window ?? 65535);
    dv.setUint16(18, t.urg ?? 0);
    b.set(opts, 20);
    b.set(payload, hl);
    dv.setUint16(16, t.checksum ?? internetChecksum(b, pseudoSum(src, dst, IPPROTO.TCP, b.length)));
    return { proto: IPPROTO.TCP, bytes: b };
  }
  if (spec.udp) {
    const u = spec.udp;
    const b = new Uint8Array(8 + payload.length);
    const dv = new DataView(b.buffer);
    dv.setUint16(0, u.sport);
    dv.setUint16(2, u.dport);
    dv.setUint16(4, u.length ?? b.length);
    b.set(payload, 8);
    let c: number;
    if (u.checksum === "none") c = 0;
    else if (u.checksum !== undefined) c = u.checksum;
    else {
      c = internetChecksum(b, pseudoSum(src, dst, IPPROTO.UDP, b.length));
      if (c === 0) c = 0xffff; // RFC 768: a computed zero is sent as all ones
    }
    dv.setUint16(6, c);
    return { proto: IPPROTO.UDP, bytes: b };
  }
  if (spec.icmp) {
    const ic = spec.icmp;
    const inner =
      ic.inner === undefined
        ? new Uint8Array(0)
        : ic.inner instanceof Uint8Array
          ? ic.inner
          : buildPacket(ic.inner);
    const b = new Uint8Array(8 + inner.length + payload.length);
    const dv = new DataView(b.buffer);
    b[0] = icmpTypeNumber(ic.type, v6);
    b[1] = ic.code ?? (ic.type === "packet-too-big" && !v6 ? 4 : 0);
    if (ic.rest !== undefined) b.set(u8(ic.rest).slice(0, 4), 4);
    else {
      dv.setUint16(4, ic.id ?? 0);
      dv.setUint16(6, ic.seq ?? 0);
    }
    b.set(inner, 8);
    b.set(payload, 8 + inner.length);
    const c = v6 ? internetChecksum(b, pseudoSum(src, dst, IPPROTO.ICMPV6, b.length)) : internetChecksum(b);
    dv.setUint16(2, ic.checksum ?? c);
    return { proto: v6 ? IPPROTO.ICMPV6 : IPPROTO.ICMP, bytes: b };
  }
  return { proto: v6 ? IPPROTO.NONE : 253, bytes: payload };
}

/** Builds a packet from a spec: Ethernet (optional) + IPv4/IPv6 + TCP/UDP/ICMP + payload. */
export function buildPacket(spec: PacketSpec): Uint8Array {
  if (!!spec.ip4 === !!spec.ip6) throw new Error("build packet: give exactly one of ip4, ip6");
  let l3: Uint8Array;
  let ethType: number;
  if (spec.ip4) {
    const ip = spec.ip4;
    const src = ip4Bytes(ip.src);
    const dst = ip4Bytes(ip.dst);
    const l4 = buildL4(spec, src, dst);
    const opts = padTo(u8(ip.options), 4);
    const hl = 20 + opts.length;
    if (hl > 60) throw new Error(`build packet: ${opts.length} bytes of IPv4 options (at most 40)`);
    l3 = new Uint8Array(hl + l4.bytes.length);
    const dv = new DataView(l3.buffer);
    l3[0] = 0x40 | (hl / 4);
    l3[1] = ip.tos ?? 0;
    dv.setUint16(2, ip.totalLength ?? l3.length);
    dv.setUint16(4, ip.id ?? 0);
    dv.setUint16(6, (ip.df ? 0x4000 : 0) | (ip.mf ? 0x2000 : 0) | ((ip.fragOffset ?? 0) & 0x1fff));
    l3[8] = ip.ttl ?? 64;
    l3[9] = ip.protocol ?? l4.proto;
    l3.set(src, 12);
    l3.set(dst, 16);
    l3.set(opts, 20);
    dv.setUint16(10, ip.checksum ?? internetChecksum(l3.subarray(0, hl)));
    l3.set(l4.bytes, hl);
    ethType = ETH_P.IP;
  } else {
    const ip = spec.ip6!;
    const src = ip6Bytes(ip.src);
    const dst = ip6Bytes(ip.dst);
    const exts = ip.ext ?? [];
    // The pseudo-header needs the final destination (a routing header's last address); extension
    // headers are then built back to front so each knows its next header.
    const bodies = exts.map((e) => ({ type: ext6Number(e.type), data: buildExt6(e, 0).subarray(2) }));
    const l4 = buildL4(spec, src, finalDst6(dst, bodies));
    let next = ip.nextHeader ?? l4.proto;
    const built: Uint8Array[] = [];
    for (let i = exts.length - 1; i >= 0; i--) {
      const e = exts[i]!;
      built.unshift(buildExt6(e, next));
      next = ext6Number(e.type);
    }
    const extBytes = concat(built);
    l3 = new Uint8Array(40 + extBytes.length + l4.bytes.length);
    const dv = new DataView(l3.buffer);
    dv.setUint32(0, (6 << 28) | ((ip.trafficClass ?? 0) << 20) | ((ip.flowLabel ?? 0) & 0xfffff));
    dv.setUint16(4, ip.payloadLength ?? extBytes.length + l4.bytes.length);
    l3[6] = next;
    l3[7] = ip.hopLimit ?? 64;
    l3.set(src, 8);
    l3.set(dst, 24);
    l3.set(extBytes, 40);
    l3.set(l4.bytes, 40 + extBytes.length);
    ethType = ETH_P.IPV6;
  }
  if (!spec.eth) return l3;
  const e = spec.eth;
  const hdr = new Uint8Array(e.vlan !== undefined ? 18 : 14);
  const dv = new DataView(hdr.buffer);
  hdr.set(macBytes(e.dst), 0);
  hdr.set(macBytes(e.src), 6);
  if (e.vlan !== undefined) {
    dv.setUint16(12, ETH_P.VLAN);
    dv.setUint16(14, e.vlan & 0xfff);
    dv.setUint16(16, e.type ?? ethType);
  } else dv.setUint16(12, e.type ?? ethType);
  return concat([hdr, l3]);
}

// ---------------------------------------------------------------------------------------------
// Parser

export interface ParsedEth {
  dst: string;
  src: string;
  /** EtherType of the payload (after a VLAN tag, if any). */
  type: number;
  vlan?: number;
}

export interface ParsedIp4 {
  ihl: number;
  tos: number;
  totalLength: number;
  id: number;
  df: boolean;
  mf: boolean;
  fragOffset: number;
  ttl: number;
  protocol: number;
  checksum: number;
  src: string;
  dst: string;
  options: Uint8Array;
}

export interface ParsedIp6Ext {
  type: number;
  nextHeader: number;
  /** Bytes after the next-header and length bytes (fragment: the 6 bytes after next-header+reserved). */
  data: Uint8Array;
  options?: { type: number; data: Uint8Array }[];
  routing?: { routingType: number; segmentsLeft: number; addresses: string[] };
  fragment?: { offset: number; more: boolean; ident: number };
}

export interface ParsedIp6 {
  trafficClass: number;
  flowLabel: number;
  payloadLength: number;
  /** The first next-header value (after the fixed header). */
  nextHeader: number;
  hopLimit: number;
  src: string;
  dst: string;
  ext: ParsedIp6Ext[];
  /** The upper-layer protocol after all extension headers. */
  protocol: number;
}

export interface ParsedTcp {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  dataOffset: number;
  /** Letters in bit order: "S", "SA", "PA", "FA", "R", ... */
  flags: string;
  flagBits: number;
  window: number;
  checksum: number;
  urg: number;
  options: Uint8Array;
}

export interface ParsedUdp {
  sport: number;
  dport: number;
  length: number;
  checksum: number;
}

export interface ParsedIcmp {
  type: number;
  code: number;
  checksum: number;
  /** Bytes 4..7. */
  rest: Uint8Array;
  /** Echo request/reply only. */
  id?: number;
  seq?: number;
  /** Packet-too-big (v6) / fragmentation-needed (v4) only. */
  mtu?: number;
  /** The quoted packet of an error message, parsed from its IP header (possibly truncated). */
  inner?: ParsedPacket;
}

export interface ParsedPacket {
  eth?: ParsedEth;
  ip4?: ParsedIp4;
  ip6?: ParsedIp6;
  tcp?: ParsedTcp;
  udp?: ParsedUdp;
  icmp?: ParsedIcmp;
  /** Bytes after the last parsed header, up to the IP length (Ethernet padding excluded). */
  payload: Uint8Array;
  /** Byte offsets of the headers found. */
  offsets: { l3?: number; l4?: number; payload: number };
  /** Set when the bytes end before a header or the IP length says they should. */
  truncated?: true;
}

export interface ParseOptions {
  /** Where the bytes start: "eth" (default) or "ip" (version nibble decides v4/v6). */
  from?: "eth" | "ip";
}

const ICMP4_ERRORS = new Set([3, 4, 5, 11, 12]);
const ICMP6_ERRORS = new Set([1, 2, 3, 4]);
const EXT6 = new Set([0, 43, 44, 60, 51, 135, 139, 140]);

/**
 * Parses a packet. Unknown EtherTypes/protocols stop parsing and leave the rest in `payload`;
 * non-first fragments are not parsed past L3. Truncated input parses as far as it goes.
 */
export function parsePacket(bytes: Uint8Array, opts: ParseOptions = {}): ParsedPacket {
  const b = bytes;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: ParsedPacket = { payload: new Uint8Array(0), offsets: { payload: 0 } };
  const rest = (o: number, end = b.length) => {
    out.payload = b.slice(Math.min(o, end), end);
    out.offsets.payload = o;
    return out;
  };
  const trunc = (o: number) => {
    out.truncated = true;
    return rest(o);
  };
  let o = 0;
  let l3type: number;
  if ((opts.from ?? "eth") === "eth") {
    if (b.length < 14) return trunc(0);
    let type = dv.getUint16(12);
    let vlan: number | undefined;
    o = 14;
    if (type === ETH_P.VLAN) {
      if (b.length < 18) return trunc(0);
      vlan = dv.getUint16(14) & 0xfff;
      type = dv.getUint16(16);
      o = 18;
    }
    out.eth = { dst: macText(b.subarray(0, 6)), src: macText(b.subarray(6, 12)), type };
    if (vlan !== undefined) out.eth.vlan = vlan;
    l3type = type;
  } else {
    if (b.length < 1) return trunc(0);
    l3type = (b[0] ?? 0) >> 4 === 6 ? ETH_P.IPV6 : ETH_P.IP;
  }
  let proto: number;
  let end: number;
  if (l3type === ETH_P.IP) {
    if (b.length < o + 20) return trunc(o);
    const ihl = (b[o] ?? 0) & 0x0f;
    if (b.length < o + ihl * 4) return trunc(o);
    const frag = dv.getUint16(o + 6);
    const ip: ParsedIp4 = {
      ihl,
      tos: b[o + 1] ?? 0,
      totalLength: dv.getUint16(o + 2),
      id: dv.getUint16(o + 4),
      df: (frag & 0x4000) !== 0,
      mf: (frag & 0x2000) !== 0,
      fragOffset: frag & 0x1fff,
      ttl: b[o + 8] ?? 0,
      protocol: b[o + 9] ?? 0,
      checksum: dv.getUint16(o + 10),
      src: ipText(b.subarray(o + 12, o + 16)),
      dst: ipText(b.subarray(o + 16, o + 20)),
      options: b.slice(o + 20, o + ihl * 4),
    };
    out.ip4 = ip;
    out.offsets.l3 = o;
    end = o + ip.totalLength;
    if (end > b.length) {
      out.truncated = true;
      end = b.length;
    }
    o += ihl * 4;
    proto = ip.protocol;
    if (ip.fragOffset !== 0) return rest(o, end);
  } else if (l3type === ETH_P.IPV6) {
    if (b.length < o + 40) return trunc(o);
    const w0 = dv.getUint32(o);
    const ip: ParsedIp6 = {
      trafficClass: (w0 >>> 20) & 0xff,
      flowLabel: w0 & 0xfffff,
      payloadLength: dv.getUint16(o + 4),
      nextHeader: b[o + 6] ?? 0,
      hopLimit: b[o + 7] ?? 0,
      src: ipText(b.subarray(o + 8, o + 24)),
      dst: ipText(b.subarray(o + 24, o + 40)),
      ext: [],
      protocol: b[o + 6] ?? 0,
    };
    out.ip6 = ip;
    out.offsets.l3 = o;
    end = o + 40 + ip.payloadLength;
    if (end > b.length) {
      out.truncated = true;
      end = b.length;
    }
    o += 40;
    proto = ip.nextHeader;
    let laterFragment = false;
    while (EXT6.has(proto)) {
      if (end < o + 8) return trunc(o);
      const next = b[o] ?? 0;
      // AH (51) counts its length in 4-byte units; the others in 8-byte units beyond the first 8.
      const len = proto === 44 ? 8 : proto === 51 ? ((b[o + 1] ?? 0) + 2) * 4 : ((b[o + 1] ?? 0) + 1) * 8;
      if (end < o + len) return trunc(o);
      const data = b.slice(o + 2, o + len);
      const x: ParsedIp6Ext = { type: proto, nextHeader: next, data };
      if (proto === 0 || proto === 60) x.options = parseTlv(data);
      if (proto === 43 && data.length >= 6) {
        const n = Math.floor((data.length - 6) / 16);
        const addresses: string[] = [];
        for (let i = 0; i < n; i++) addresses.push(ipText(data.subarray(6 + 16 * i, 22 + 16 * i)));
        x.routing = { routingType: data[0] ?? 0, segmentsLeft: data[1] ?? 0, addresses };
      }
      if (proto === 44) {
        const fo = dv.getUint16(o + 2);
        x.fragment = { offset: fo >> 3, more: (fo & 1) !== 0, ident: dv.getUint32(o + 4) };
        if (x.fragment.offset !== 0) laterFragment = true;
      }
      ip.ext.push(x);
      o += len;
      proto = next;
    }
    ip.protocol = proto;
    if (laterFragment) return rest(o, end);
  } else {
    return rest(o);
  }
  out.offsets.l4 = o;
  const avail = end - o;
  if (proto === IPPROTO.TCP) {
    if (avail < 8) return trunc(o);
    const tcp: Partial<ParsedTcp> = {
      sport: dv.getUint16(o),
      dport: dv.getUint16(o + 2),
      seq: dv.getUint32(o + 4),
    };
    // ICMP errors may quote only 8 bytes of TCP: keep what is there.
    if (avail < 20) {
      out.tcp = tcp as ParsedTcp;
      return trunc(o + avail);
    }
    const doff = (b[o + 12] ?? 0) >> 4;
    Object.assign(tcp, {
      ack: dv.getUint32(o + 8),
      dataOffset: doff,
      flagBits: b[o + 13] ?? 0,
      flags: tcpFlagText(b[o + 13] ?? 0),
      window: dv.getUint16(o + 14),
      checksum: dv.getUint16(o + 16),
      urg: dv.getUint16(o + 18),
      options: b.slice(o + 20, Math.min(o + doff * 4, end)),
    });
    out.tcp = tcp as ParsedTcp;
    if (avail < doff * 4) return trunc(end);
    return rest(o + doff * 4, end);
  }
  if (proto === IPPROTO.UDP) {
    if (avail < 8) return trunc(o);
    out.udp = {
      sport: dv.getUint16(o),
      dport: dv.getUint16(o + 2),
      length: dv.getUint16(o + 4),
      checksum: dv.getUint16(o + 6),
    };
    return rest(o + 8, end);
  }
  if (proto === IPPROTO.ICMP || proto === IPPROTO.ICMPV6) {
    if (avail < 8) return trunc(o);
    const v6 = proto === IPPROTO.ICMPV6;
    const type = b[o] ?? 0;
    const ic: ParsedIcmp = {
      type,
      code: b[o + 1] ?? 0,
      checksum: dv.getUint16(o + 2),
      rest: b.slice(o + 4, o + 8),
    };
    if (v6 ? type === 128 || type === 129 : type === 0 || type === 8) {
      ic.id = dv.getUint16(o + 4);
      ic.seq = dv.getUint16(o + 6);
    }
    if (v6 && type === 2) ic.mtu = dv.getUint32(o + 4);
    if (!v6 && type === 3 && ic.code === 4) ic.mtu = dv.getUint16(o + 6);
    if ((v6 ? ICMP6_ERRORS : ICMP4_ERRORS).has(type) && avail > 8) {
      ic.inner = parsePacket(b.subarray(o + 8, end), { from: "ip" });
    }
    out.icmp = ic;
    return rest(o + 8, end);
  }
  return rest(o, end);
}

function parseTlv(data: Uint8Array): { type: number; data: Uint8Array }[] {
  const opts: { type: number; data: Uint8Array }[] = [];
  for (let i = 0; i < data.length; ) {
    const t = data[i] ?? 0;
    if (t === 0) {
      i++;
      continue;
    }
    const len = data[i + 1] ?? 0;
    if (t !== 1) opts.push({ type: t, data: data.slice(i + 2, i + 2 + len) });
    i += 2 + len;
  }
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Verifier

export interface ChecksumReport {
  ok: boolean;
  errors: string[];
}

const hex4 = (x: number) => `0x${x.toString(16).padStart(4, "0")}`;

/**
 * Checks the IPv4 header checksum, the TCP/UDP/ICMP/ICMPv6 checksums (with pseudo-header) and the
 * length fields they depend on; recurses into the quoted packet of ICMP errors (its L4 checksum
 * only when it is quoted whole). UDP over IPv4 with checksum 0 is valid; over IPv6 it is not.
 */
export function verifyChecksums(bytes: Uint8Array, opts: ParseOptions = {}): ChecksumReport {
  const errors: string[] = [];
  verifyInto(bytes, opts, "", errors, false);
  return { ok: errors.length === 0, errors };
}

function verifyInto(
  bytes: Uint8Array,
  opts: ParseOptions,
  where: string,
  errors: string[],
  quoted: boolean,
): void {
  const p = parsePacket(bytes, opts);
  const l3 = p.offsets.l3;
  if (l3 === undefined) {
    if (!quoted) errors.push(`${where}no IPv4/IPv6 header found`);
    return;
  }
  let src: Uint8Array;
  let dst: Uint8Array;
  let l4len: number;
  if (p.ip4) {
    const hl = p.ip4.ihl * 4;
    if (p.ip4.ihl < 5) errors.push(`${where}ip4 header length ${hl} < 20`);
    const got = p.ip4.checksum;
    const want = internetChecksum(withZeroAt(bytes.subarray(l3, l3 + hl), 10));
    if (fold(sum16(bytes, l3, l3 + hl)) !== 0xffff) {
      errors.push(`${where}ip4 header checksum ${hex4(got)}, want ${hex4(want)}`);
    }
    if (!quoted && l3 + p.ip4.totalLength > bytes.length) {
      errors.push(
        `${where}ip4 total length ${p.ip4.totalLength} exceeds the ${bytes.length - l3} bytes present`,
      );
    }
    if (p.ip4.mf || p.ip4.fragOffset !== 0) return;
    src = bytes.subarray(l3 + 12, l3 + 16);
    dst = bytes.subarray(l3 + 16, l3 + 20);
    l4len = p.ip4.totalLength - hl;
  } else {
    const ip6 = p.ip6!;
    if (!quoted && l3 + 40 + ip6.payloadLength > bytes.length) {
      errors.push(
        `${where}ip6 payload length ${ip6.payloadLength} exceeds the ${bytes.length - l3 - 40} bytes present`,
      );
    }
    if (ip6.ext.some((e) => e.type === 44)) return;
    src = bytes.subarray(l3 + 8, l3 + 24);
    dst = finalDst6(bytes.subarray(l3 + 24, l3 + 40), ip6.ext);
    l4len = 40 + ip6.payloadLength - ((p.offsets.l4 ?? 0) - l3);
  }
  const l4 = p.offsets.l4;
  if (l4 === undefined) return;
  const whole = l4 + l4len <= bytes.length;
  if (!whole) {
    // A quoted packet is usually cut short: its L4 checksum cannot be checked.
    if (!quoted && (p.tcp || p.udp || p.icmp))
      errors.push(`${where}l4 truncated: cannot verify its checksum`);
    return;
  }
  const seg = bytes.subarray(l4, l4 + l4len);
  const check = (name: string, got: number, csumAt: number, init: number) => {
    if (fold(sum16(seg, 0, seg.length, init)) !== 0xffff) {
      const want = internetChecksum(withZeroAt(seg, csumAt), init);
      errors.push(`${where}${name} checksum ${hex4(got)}, want ${hex4(want)}`);
    }
  };
  if (p.tcp) check("tcp", p.tcp.checksum, 16, pseudoSum(src, dst, IPPROTO.TCP, l4len));
  else if (p.udp) {
    if (p.udp.length !== l4len) errors.push(`${where}udp length ${p.udp.length}, IP says ${l4len}`);
    if (p.udp.checksum === 0) {
      if (p.ip6) errors.push(`${where}udp checksum 0 over IPv6 (mandatory there)`);
    } else check("udp", p.udp.checksum, 6, pseudoSum(src, dst, IPPROTO.UDP, l4len));
  } else if (p.icmp) {
    if (p.ip6) check("icmp6", p.icmp.checksum, 2, pseudoSum(src, dst, IPPROTO.ICMPV6, l4len));
    else check("icmp", p.icmp.checksum, 2, 0);
    if (p.icmp.inner) verifyInto(seg.subarray(8), { from: "ip" }, `${where}icmp inner: `, errors, true);
  }
}

function withZeroAt(b: Uint8Array, at: number): Uint8Array {
  const c = b.slice();
  c[at] = 0;
  c[at + 1] = 0;
  return c;
}

/** One-line tcpdump-like summary, for assertion labels. */
export function formatPacket(pkt: Uint8Array | ParsedPacket, opts: ParseOptions = {}): string {
  const p = pkt instanceof Uint8Array ? parsePacket(pkt, opts) : pkt;
  const parts: string[] = [];
  if (p.eth)
    parts.push(`${p.eth.src} > ${p.eth.dst}${p.eth.vlan !== undefined ? ` vlan ${p.eth.vlan}` : ""}`);
  const ip = p.ip4 ?? p.ip6;
  const port = (a: string, n?: number) =>
    n === undefined ? a : a.includes(":") ? `[${a}]:${n}` : `${a}:${n}`;
  const l4 = p.tcp ?? p.udp;
  if (ip) parts.push(`${port(ip.src, l4?.sport)} > ${port(ip.dst, l4?.dport)}`);
  if (p.ip4) parts.push(`ttl ${p.ip4.ttl}`);
  if (p.ip6)
    parts.push(
      `hlim ${p.ip6.hopLimit}${p.ip6.ext.length ? ` ext ${p.ip6.ext.map((e) => e.type).join(",")}` : ""}`,
    );
  if (p.tcp) parts.push(`tcp [${p.tcp.flags ?? "?"}] seq ${p.tcp.seq} ack ${p.tcp.ack ?? "?"}`);
  if (p.udp) parts.push("udp");
  if (p.icmp) {
    parts.push(`icmp type ${p.icmp.type} code ${p.icmp.code}`);
    if (p.icmp.inner) parts.push(`(inner: ${formatPacket(p.icmp.inner)})`);
  }
  parts.push(`len ${p.payload.length}`);
  if (p.truncated) parts.push("truncated");
  return parts.join(" ");
}
