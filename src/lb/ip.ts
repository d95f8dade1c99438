/** IP address and CIDR parsing without I/O: validation, canonical text, ordering. */

export type Family = 4 | 6;

export interface ParsedIp {
  family: Family;
  /** 4 or 16 bytes, network order. */
  bytes: readonly number[];
  /** Canonical text: dotted quad, or RFC 5952 compressed lowercase IPv6. */
  text: string;
}

/**
 * Dotted-quad IPv4 text → 4 bytes; undefined when invalid. Leading zeros are rejected unless
 * `sloppy` (then "010" is decimal 10, as Kubernetes' legacy parser netutils.ParseIPSloppy reads it).
 */
export function parseIpv4Bytes(s: string, sloppy = false): number[] | undefined {
  // Hand-rolled (no split/regex): translate parses every endpoint address.
  const out: number[] = [];
  let n = -1;
  let digits = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || out.length === 4) return undefined;
      out.push(n);
      n = -1;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      // Leading zeros are rejected, as Kubernetes does since 1.20 (some parsers read them as octal).
      if (n === 0 && !sloppy) return undefined;
      n = (n < 0 ? 0 : n * 10) + (c - 48);
      if ((++digits > 3 && !sloppy) || n > 255) return undefined;
    } else return undefined;
  }
  return out.length === 4 ? out : undefined;
}

/**
 * IPv6 text (with "::" and an optional dotted IPv4 tail) → 16 bytes; undefined when invalid.
 * `sloppy` also takes groups of more than 4 hex digits worth at most ffff ("00001") and a sloppy
 * IPv4 tail, as netutils.ParseIPSloppy does.
 */
export function parseIpv6Bytes(s: string, sloppy = false): number[] | undefined {
  if (s.length < 2 || (s.length > 45 && !sloppy)) return undefined;
  let tail: number[] = [];
  let head = s;
  const lastColon = s.lastIndexOf(":");
  if (s.slice(lastColon + 1).includes(".")) {
    const v4 = parseIpv4Bytes(s.slice(lastColon + 1), sloppy);
    if (!v4) return undefined;
    tail = v4;
    head = s.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::"; "a::1.2.3.4" leaves "a::"; "a:b:...:1.2.3.4" leaves a trailing ":".
    if (head.endsWith(":") && !head.endsWith("::")) head = head.slice(0, -1);
  }
  const groups = (text: string): number[] | undefined => {
    if (text === "") return [];
    const out: number[] = [];
    for (const g of text.split(":")) {
      if (!(sloppy ? /^[0-9a-fA-F]+$/ : /^[0-9a-fA-F]{1,4}$/).test(g)) return undefined;
      const n = Number.parseInt(g.replace(/^0+(?=.)/, ""), 16);
      if (n > 0xffff) return undefined;
      out.push(n >> 8, n & 0xff);
    }
    return out;
  };
  const dbl = head.indexOf("::");
  let bytes: number[];
  if (dbl >= 0) {
    if (head.indexOf("::", dbl + 1) >= 0) return undefined;
    const left = groups(head.slice(0, dbl));
    const right = groups(head.slice(dbl + 2));
    if (!left || !right) return undefined;
    const fill = 16 - left.length - right.length - tail.length;
    // "::" stands for at least one zero group.
    if (fill < 2) return undefined;
    bytes = [...left, ...new Array<number>(fill).fill(0), ...right, ...tail];
  } else {
    const all = groups(head);
    if (!all) return undefined;
    bytes = [...all, ...tail];
  }
  return bytes.length === 16 ? bytes : undefined;
}

/** 4 bytes at `off` → dotted quad. */
export function formatIpv4Bytes(b: ArrayLike<number>, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** 16 bytes at `off` → RFC 5952 text ("2001:db8::1"). */
export function formatIpv6Bytes(b: ArrayLike<number>, off = 0): string {
  const g: number[] = [];
  for (let i = off; i < off + 16; i += 2) g.push((b[i]! << 8) | b[i + 1]!);
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on a tie.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** Parses an IPv4 or IPv6 address; undefined when invalid. */
export function parseIp(s: string): ParsedIp | undefined {
  if (s.includes(":")) {
    const b = parseIpv6Bytes(s);
    if (!b) return undefined;
    return { family: 6, bytes: b, text: formatIpv6Bytes(b) };
  }
  const b = parseIpv4Bytes(s);
  if (!b) return undefined;
  // Valid IPv4 text is canonical already (digits only, no leading zeros): no need to rebuild it.
  return { family: 4, bytes: b, text: s };
}

/**
 * Parses an address as kube-proxy does (netutils.ParseIPSloppy, Kubernetes' legacy parser, kept for
 * objects stored before the API rejected leading zeros): "172.30.0.041" is 172.30.0.41, decimal.
 * `sloppy` is set when only the legacy parser takes the text.
 */
export function parseIpSloppy(s: string): (ParsedIp & { sloppy?: true }) | undefined {
  const strict = parseIp(s);
  if (strict) return strict;
  const b = s.includes(":") ? parseIpv6Bytes(s, true) : parseIpv4Bytes(s, true);
  if (!b) return undefined;
  const family: Family = b.length === 4 ? 4 : 6;
  return { family, bytes: b, text: family === 4 ? formatIpv4Bytes(b) : formatIpv6Bytes(b), sloppy: true };
}

export interface ParsedCidr {
  ip: ParsedIp;
  prefix: number;
  /** Canonical "addr/prefix" with host bits cleared. */
  text: string;
}

/** Parses "addr/prefix"; undefined when invalid. Host bits are cleared in `text`. */
export function parseCidr(s: string): ParsedCidr | undefined {
  return cidr(s, false);
}

/**
 * Parses "addr/prefix" as kube-proxy does (netutils.ParseCIDRSloppy): leading zeros in the address
 * and the prefix length are decimal ("203.0.113.000/025" is 203.0.113.0/25). `sloppy` is set when
 * only the legacy parser takes the text.
 */
export function parseCidrSloppy(s: string): (ParsedCidr & { sloppy?: true }) | undefined {
  return cidr(s, false) ?? cidr(s, true);
}

function cidr(s: string, sloppy: boolean): (ParsedCidr & { sloppy?: true }) | undefined {
  // Strict: no leading zeros in the prefix length either ("/08" is for the legacy parser only).
  const m = (sloppy ? /^([^/]+)\/(\d+)$/ : /^([^/]+)\/(0|[1-9]\d{0,2})$/).exec(s.trim());
  if (!m) return undefined;
  const ip = sloppy ? parseIpSloppy(m[1]!) : parseIp(m[1]!);
  const prefix = Number(m[2]);
  if (!ip || prefix > ip.bytes.length * 8) return undefined;
  const bytes = [...ip.bytes];
  for (let bit = prefix; bit < bytes.length * 8; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  const net = ip.family === 4 ? bytes.join(".") : formatIpv6Bytes(bytes);
  return { ip, prefix, text: `${net}/${prefix}`, ...(sloppy ? { sloppy: true as const } : {}) };
}

/** Orders IPv4 before IPv6, then numerically. */
export function compareIp(a: ParsedIp, b: ParsedIp): number {
  if (a.family !== b.family) return a.family - b.family;
  for (let i = 0; i < a.bytes.length; i++) {
    const d = a.bytes[i]! - b.bytes[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** A string that sorts like the address (IPv4 before IPv6, then numerically): family and bytes as chars. */
export function ipSortKey(p: ParsedIp): string {
  const b = p.bytes;
  if (p.family === 4) return String.fromCharCode(4, b[0]!, b[1]!, b[2]!, b[3]!);
  return String.fromCharCode(6, ...b);
}

const sortKeys = new Map<string, string>();

/** ipSortKey of an address string (invalid ones last, by text). Memoised for repeated sorting. */
export function addrSortKey(a: string): string {
  let k = sortKeys.get(a);
  if (k === undefined) {
    const p = parseIp(a);
    k = p ? ipSortKey(p) : `\u0009${a}`;
    // Bounded so a long-running daemon does not keep every address it ever saw.
    if (sortKeys.size >= 1 << 20) sortKeys.clear();
    sortKeys.set(a, k);
  }
  return k;
}

/** Compares two address strings (canonical or not); invalid ones sort last, by text. */
export function compareAddr(a: string, b: string): number {
  if (a === b) return 0;
  const ka = addrSortKey(a);
  const kb = addrSortKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** "addr:port/PROTO", with IPv6 addresses in brackets: the key of frontends and backends. */
export function l4Key(a: { address: string; port: number; protocol: string }): string {
  const host = a.address.includes(":") ? `[${a.address}]` : a.address;
  return `${host}:${a.port}/${a.protocol}`;
}
