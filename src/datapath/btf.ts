/** Read access to an object's BTF: struct layouts for the codec checks (codec.ts). */
import { type Pointer, unsafeCString, unsafeLibbpf, unsafeReadU32 } from "./ffi.ts";

const BTF_KIND_STRUCT = 4;
const BTF_KIND_UNION = 5;

/** One member of a BTF struct; offsets and sizes in bytes (bitOffset for bitfields). */
export interface BtfMember {
  name: string;
  offset: number;
  size: number;
  /** offset in bits (differs from offset*8 only for bitfields) */
  bitOffset: number;
  /** bitfield size in bits, 0 for ordinary members */
  bitfieldSize: number;
}

/** A struct (or union) as the compiler laid it out. */
export interface BtfStruct {
  name: string;
  size: number;
  members: BtfMember[];
}

/** BTF of a bpf_object (owned by the object: valid until the object is closed). */
export class Btf {
  constructor(private readonly unsafeBtf: Pointer) {}

  /** The struct named `name`, or undefined when the BTF has none. */
  struct(name: string): BtfStruct | undefined {
    const lib = unsafeLibbpf();
    const nameBuf = new TextEncoder().encode(`${name}\0`);
    let id = lib.btf__find_by_name_kind(this.unsafeBtf, nameBuf, BTF_KIND_STRUCT);
    if (id < 0) id = lib.btf__find_by_name_kind(this.unsafeBtf, nameBuf, BTF_KIND_UNION);
    if (id < 0) return undefined;
    return this.structById(id);
  }

  /** The struct with BTF type id `id` (typedefs and modifiers resolved), or undefined. */
  structById(typeId: number): BtfStruct | undefined {
    const lib = unsafeLibbpf();
    const id = lib.btf__resolve_type(this.unsafeBtf, typeId);
    if (id < 0) return undefined;
    const t = lib.btf__type_by_id(this.unsafeBtf, id);
    if (!t) return undefined;
    // struct btf_type { u32 name_off; u32 info; u32 size; } then vlen × btf_member { name_off, type, offset }
    const info = unsafeReadU32(t, 4);
    const kind = (info >>> 24) & 0x1f;
    if (kind !== BTF_KIND_STRUCT && kind !== BTF_KIND_UNION) return undefined;
    const vlen = info & 0xffff;
    const kindFlag = info >>> 31 === 1;
    const members: BtfMember[] = [];
    for (let i = 0; i < vlen; i++) {
      const m = 12 + i * 12;
      const rawOff = unsafeReadU32(t, m + 8);
      const bitOffset = kindFlag ? rawOff & 0xffffff : rawOff;
      const bitfieldSize = kindFlag ? rawOff >>> 24 : 0;
      const size = Number(lib.btf__resolve_size(this.unsafeBtf, unsafeReadU32(t, m + 4)));
      members.push({
        name: unsafeCString(lib.btf__name_by_offset(this.unsafeBtf, unsafeReadU32(t, m))),
        offset: Math.floor(bitOffset / 8),
        size,
        bitOffset,
        bitfieldSize,
      });
    }
    return {
      name: unsafeCString(lib.btf__name_by_offset(this.unsafeBtf, unsafeReadU32(t, 0))),
      size: unsafeReadU32(t, 8),
      members,
    };
  }
}
