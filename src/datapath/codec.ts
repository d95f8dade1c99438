/**
 * Declarative struct codecs for map keys and values, checked against the object's BTF so a
 * layout drift between bpf/lib/abi.h and TypeScript stops at load with the struct and field named.
 */
import { KprError } from "../errors.ts";
import { formatIpv4Bytes, formatIpv6Bytes, parseIpv4Bytes, parseIpv6Bytes } from "../lb/ip.ts";
import type { Btf } from "./btf.ts";

/** Field kinds: little-endian integers, network-order be16/be32, addresses, bytes, padding. */
export type FieldKind =
  | "u8"
  | "u16"
  | "u32"
  | "u64"
  | "be16"
  | "be32"
  | "ip4"
  | "ip6"
  | readonly ["bytes", number]
  | readonly ["str", number]
  | readonly ["pad", number];

type FieldValue<K> = K extends "u64"
  ? bigint
  : K extends "ip4" | "ip6"
    ? string
    : K extends readonly ["bytes", number]
      ? Uint8Array
      : K extends readonly ["str", number]
        ? string
        : number;

type PadKeys<S> = { [F in keyof S]: S[F] extends readonly ["pad", number] ? F : never }[keyof S];

/** The JS object a struct spec describes (padding fields omitted). */
export type StructValue<S extends Record<string, FieldKind>> = {
  [F in Exclude<keyof S, PadKeys<S>>]: FieldValue<S[F]>;
};

/** One field's place in the struct. */
export interface FieldLayout {
  name: string;
  kind: FieldKind;
  offset: number;
  size: number;
  pad: boolean;
}

/** A struct codec: fixed size, encode/decode, field offsets. */
export interface StructCodec<T> {
  /** the C struct name (as in BTF) */
  readonly name: string;
  readonly size: number;
  readonly fields: readonly FieldLayout[];
  encode(value: T): Uint8Array;
  /** Encodes into `buf` at byte `offset` (for batch buffers). */
  encodeInto(value: T, buf: Uint8Array, offset?: number): void;
  /** Encodes many values into one buffer (count × size bytes). */
  encodeMany(values: readonly T[]): Uint8Array;
  decode(bytes: Uint8Array, offset?: number): T;
  /** Decodes count consecutive structs spaced `stride` bytes apart (default size). */
  decodeMany(bytes: Uint8Array, count: number, stride?: number): T[];
}

function kindSize(k: FieldKind): number {
  if (typeof k !== "string") return k[1];
  switch (k) {
    case "u8":
      return 1;
    case "u16":
    case "be16":
      return 2;
    case "u32":
    case "be32":
    case "ip4":
      return 4;
    case "u64":
      return 8;
    case "ip6":
      return 16;
  }
}

function kindAlign(k: FieldKind): number {
  if (typeof k !== "string") return 1;
  if (k === "ip4" || k === "ip6") return 1;
  return kindSize(k);
}

/** "10.0.0.1" → 4 bytes (written into `out` at `off`); throws on bad text. */
export function parseIp4(s: string, out: Uint8Array = new Uint8Array(4), off = 0): Uint8Array {
  const b = parseIpv4Bytes(s);
  if (!b)
    throw new KprError(`parse IPv4 address "${s}": want a.b.c.d (decimal octets 0-255, no leading zeros)`);
  out.set(b, off);
  return out;
}

/** 4 bytes → "10.0.0.1". */
export const formatIp4: (b: Uint8Array, off?: number) => string = formatIpv4Bytes;

/** IPv6 text (with "::" and an optional dotted IPv4 tail) → 16 bytes; throws on bad text. */
export function parseIp6(s: string, out: Uint8Array = new Uint8Array(16), off = 0): Uint8Array {
  const b = parseIpv6Bytes(s);
  if (!b)
    throw new KprError(`parse IPv6 address "${s}": want 8 hex groups of up to 4 digits, at most one "::"`);
  out.set(b, off);
  return out;
}

/** 16 bytes → RFC 5952 text ("2001:db8::1"). */
export const formatIp6: (b: Uint8Array, off?: number) => string = formatIpv6Bytes;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

type Writer = (dv: DataView, u8: Uint8Array, off: number, v: unknown) => void;
type Reader = (dv: DataView, u8: Uint8Array, off: number) => unknown;

function fieldIo(structName: string, f: FieldLayout): { write: Writer; read: Reader } {
  const o = f.offset;
  const where = `${structName}.${f.name}`;
  const num = (v: unknown): number => {
    if (typeof v !== "number" || !Number.isInteger(v))
      throw new KprError(`encode ${where}: want an integer, got ${String(v)}`);
    return v;
  };
  const k = f.kind;
  if (typeof k !== "string") {
    const [what, n] = k;
    if (what === "pad") return { write: () => {}, read: () => undefined };
    if (what === "str")
      return {
        write: (_dv, u8, off, v) => {
          const b = textEncoder.encode(String(v ?? ""));
          if (b.length > n) throw new KprError(`encode ${where}: "${String(v)}" is longer than ${n} bytes`);
          u8.set(b, off + o);
        },
        read: (_dv, u8, off) => {
          const s = u8.subarray(off + o, off + o + n);
          const z = s.indexOf(0);
          return textDecoder.decode(z < 0 ? s : s.subarray(0, z));
        },
      };
    return {
      write: (_dv, u8, off, v) => {
        if (!(v instanceof Uint8Array) || v.length > n)
          throw new KprError(`encode ${where}: want up to ${n} bytes`);
        u8.set(v, off + o);
      },
      read: (_dv, u8, off) => u8.slice(off + o, off + o + n),
    };
  }
  switch (k) {
    case "u8":
      return {
        write: (dv, _u, off, v) => dv.setUint8(off + o, num(v)),
        read: (dv, _u, off) => dv.getUint8(off + o),
      };
    case "u16":
      return {
        write: (dv, _u, off, v) => dv.setUint16(off + o, num(v), true),
        read: (dv, _u, off) => dv.getUint16(off + o, true),
      };
    case "be16":
      return {
        write: (dv, _u, off, v) => dv.setUint16(off + o, num(v), false),
        read: (dv, _u, off) => dv.getUint16(off + o, false),
      };
    case "u32":
      return {
        write: (dv, _u, off, v) => dv.setUint32(off + o, num(v), true),
        read: (dv, _u, off) => dv.getUint32(off + o, true),
      };
    case "be32":
      return {
        write: (dv, _u, off, v) => dv.setUint32(off + o, num(v), false),
        read: (dv, _u, off) => dv.getUint32(off + o, false),
      };
    case "u64":
      return {
        write: (dv, _u, off, v) => dv.setBigUint64(off + o, typeof v === "bigint" ? v : BigInt(num(v)), true),
        read: (dv, _u, off) => dv.getBigUint64(off + o, true),
      };
    case "ip4":
      return {
        write: (_dv, u8, off, v) => parseIp4(String(v), u8, off + o),
        read: (_dv, u8, off) => formatIp4(u8, off + o),
      };
    case "ip6":
      return {
        write: (_dv, u8, off, v) => parseIp6(String(v), u8, off + o),
        read: (_dv, u8, off) => formatIp6(u8, off + o),
      };
  }
}

/**
 * Defines a codec for C struct `name`. Fields are laid out in order with C alignment of the
 * integer kinds (so a spec mirroring the C struct, explicit padding included, gets the same
 * offsets); checkAgainstBtf verifies that.
 */
export function defineStruct<S extends Record<string, FieldKind>>(
  name: string,
  spec: S,
): StructCodec<StructValue<S>> {
  const fields: FieldLayout[] = [];
  let off = 0;
  let maxAlign = 1;
  for (const [fname, kind] of Object.entries(spec)) {
    const size = kindSize(kind);
    const align = kindAlign(kind);
    maxAlign = Math.max(maxAlign, align);
    off = Math.ceil(off / align) * align;
    fields.push({ name: fname, kind, offset: off, size, pad: typeof kind !== "string" && kind[0] === "pad" });
    off += size;
  }
  const size = Math.ceil(off / maxAlign) * maxAlign;
  const io = fields.filter((f) => !f.pad).map((f) => ({ name: f.name, ...fieldIo(name, f) }));

  const encodeInto = (value: StructValue<S>, buf: Uint8Array, offset = 0, dv?: DataView): void => {
    const view = dv ?? new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const v = value as Record<string, unknown>;
    buf.fill(0, offset, offset + size);
    for (const f of io) f.write(view, buf, offset, v[f.name]);
  };
  const decodeAt = (bytes: Uint8Array, offset: number, dv: DataView): StructValue<S> => {
    const out: Record<string, unknown> = {};
    for (const f of io) out[f.name] = f.read(dv, bytes, offset);
    return out as StructValue<S>;
  };
  return {
    name,
    size,
    fields,
    encode(value) {
      const b = new Uint8Array(size);
      encodeInto(value, b, 0);
      return b;
    },
    encodeInto(value, buf, offset = 0) {
      encodeInto(value, buf, offset);
    },
    encodeMany(values) {
      const b = new Uint8Array(values.length * size);
      const dv = new DataView(b.buffer);
      for (let i = 0; i < values.length; i++) encodeInto(values[i]!, b, i * size, dv);
      return b;
    },
    decode(bytes, offset = 0) {
      if (bytes.length - offset < size)
        throw new KprError(`decode ${name}: ${bytes.length - offset} bytes, want ${size}`);
      return decodeAt(bytes, offset, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    },
    decodeMany(bytes, count, stride = size) {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      if (bytes.length < (count - 1) * stride + size && count > 0)
        throw new KprError(`decode ${count} × ${name}: ${bytes.length} bytes is too short`);
      const out: StructValue<S>[] = [];
      for (let i = 0; i < count; i++) out.push(decodeAt(bytes, i * stride, dv));
      return out;
    },
  };
}

/** A codec for a plain little-endian integer key/value (u16/u32/u64 maps keyed by id). */
export function scalar<K extends "u8" | "u16" | "u32" | "u64" | "be16" | "be32">(
  name: string,
  kind: K,
): StructCodec<StructValue<{ v: K }>> {
  return defineStruct(name, { v: kind });
}

/**
 * Checks a codec against the struct of the same name in `btf`: total size, then each BTF member's
 * offset and size; every BTF member must be a codec field of the same name or lie inside padding.
 * Throws a KprError naming the struct and field.
 */
export function checkAgainstBtf(btf: Btf, codec: StructCodec<unknown>, objectName = "object"): void {
  const fail = (what: string) =>
    new KprError(
      `check struct ${codec.name} against ${objectName}'s BTF: ${what} (the TypeScript codec and bpf/lib/abi.h disagree; rebuild or fix the codec)`,
    );
  const s = btf.struct(codec.name);
  if (!s) throw fail("struct not found in BTF");
  if (s.size !== codec.size) throw fail(`size ${s.size} in BTF != ${codec.size} in codec`);
  const byName = new Map(codec.fields.map((f) => [f.name, f]));
  for (const m of s.members) {
    if (m.bitfieldSize || m.bitOffset % 8)
      throw fail(`field ${m.name}: bitfields are not supported by codecs`);
    const f = byName.get(m.name);
    if (f && !f.pad) {
      if (f.offset !== m.offset)
        throw fail(`field ${m.name}: offset ${m.offset} in BTF != ${f.offset} in codec`);
      if (f.size !== m.size) throw fail(`field ${m.name}: size ${m.size} in BTF != ${f.size} in codec`);
      continue;
    }
    const inPad = codec.fields.some(
      (p) => p.pad && m.offset >= p.offset && m.offset + m.size <= p.offset + p.size,
    );
    // a member the codec leaves out must itself be padding (pad*, reserved*, _*, anonymous)
    const padLike = m.name === "" || /^(pad|reserved|_)/.test(m.name);
    if (!padLike || !inPad)
      throw fail(`field ${m.name} (offset ${m.offset}, size ${m.size}) is missing from the codec`);
  }
  const btfNames = new Set(s.members.map((m) => m.name));
  for (const f of codec.fields)
    if (!f.pad && !btfNames.has(f.name)) throw fail(`field ${f.name}: not in BTF`);
}

/** Splits a per-CPU lookup result into one decoded value per CPU. */
export function decodePerCpu<T>(codec: StructCodec<T>, bytes: Uint8Array, cpus: number): T[] {
  return codec.decodeMany(bytes, cpus, (codec.size + 7) & ~7);
}
