/**
 * Typed layer over libbpf: objects opened from bytes (spec) → loaded (fds) → maps, programs and
 * links. Everything holding kernel resources is released with close() / `using`.
 */
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { Btf } from "./btf.ts";
import {
  BpfError,
  check,
  checkPtr,
  closeFd,
  cstr,
  E,
  errno,
  possibleCpus as ffiPossibleCpus,
  type Pointer,
  Struct,
  unsafeCString,
  unsafeLibbpf,
} from "./ffi.ts";

/** enum bpf_map_type values kpr uses. */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  HASH_OF_MAPS: 13,
  SOCKHASH: 18,
  RINGBUF: 27,
} as const;

/** enum bpf_prog_type values kpr uses. */
export const ProgType = {
  SCHED_CLS: 3,
  XDP: 6,
  CGROUP_SKB: 8,
  CGROUP_SOCK: 9,
  CGROUP_SOCK_ADDR: 18,
} as const;

/** Map update flags. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
/** Map creation flag required by LPM tries. */
export const BPF_F_NO_PREALLOC = 1;

const PERCPU_TYPES = new Set<number>([
  MapType.PERCPU_HASH,
  MapType.PERCPU_ARRAY,
  MapType.LRU_PERCPU_HASH,
  21,
]);

let cpuCount: number | undefined;
/** Possible CPUs: a per-CPU map value holds one round8(valueSize) slot per possible CPU. */
export function possibleCpus(): number {
  cpuCount ??= ffiPossibleCpus();
  return cpuCount;
}

/** Shape of a map, as the object declares it or the kernel reports it. */
export interface MapSpec {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

function mkdirFor(path: string): void {
  mkdirSync(dirname(path), { recursive: true });
}

function pinFd(op: string, fd: number, path: string): void {
  mkdirFor(path);
  check(op, unsafeLibbpf().bpf_obj_pin(fd, cstr(path)), "is bpffs mounted at the bpf root?");
}

function getPinned(op: string, path: string): number {
  const fd = unsafeLibbpf().bpf_obj_get(cstr(path));
  return check(op, fd);
}

/** A BPF map by fd. Keys and values are raw bytes (see codec.ts for typed access). */
export class BpfMap implements Disposable {
  private closed = false;
  /** bytes of one lookup result: valueSize, or nCPU × round8(valueSize) for per-CPU maps */
  readonly valueStride: number;

  constructor(
    readonly fd: number,
    readonly spec: MapSpec,
    /** whether close() closes the fd (false for maps owned by a BpfObject) */
    private readonly ownsFd: boolean,
  ) {
    this.valueStride = PERCPU_TYPES.has(spec.type)
      ? possibleCpus() * ((spec.valueSize + 7) & ~7)
      : spec.valueSize;
  }

  get name(): string {
    return this.spec.name;
  }
  get type(): number {
    return this.spec.type;
  }
  get keySize(): number {
    return this.spec.keySize;
  }
  get valueSize(): number {
    return this.spec.valueSize;
  }
  get maxEntries(): number {
    return this.spec.maxEntries;
  }
  get isPerCpu(): boolean {
    return PERCPU_TYPES.has(this.spec.type);
  }

  private checkKey(key: Uint8Array): void {
    if (key.length !== this.spec.keySize)
      throw new BpfError(
        `map ${this.name}: key`,
        E.EINVAL,
        `key is ${key.length} bytes, map wants ${this.keySize}`,
      );
  }

  /** The value for `key`, or undefined when absent. */
  lookup(key: Uint8Array): Uint8Array | undefined {
    this.checkKey(key);
    const value = new Uint8Array(this.valueStride);
    const r = unsafeLibbpf().bpf_map_lookup_elem(this.fd, key, value);
    if (r === -E.ENOENT) return undefined;
    check(`lookup in map ${this.name}`, r);
    return value;
  }

  /** Inserts or replaces (flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST). */
  update(key: Uint8Array, value: Uint8Array, flags = BPF_ANY): void {
    this.checkKey(key);
    if (value.length !== this.valueStride)
      throw new BpfError(
        `update map ${this.name}`,
        E.EINVAL,
        `value is ${value.length} bytes, map wants ${this.valueStride}`,
      );
    check(`update map ${this.name}`, unsafeLibbpf().bpf_map_update_elem(this.fd, key, value, flags));
  }

  /** Deletes `key`; false when it was absent. */
  delete(key: Uint8Array): boolean {
    this.checkKey(key);
    const r = unsafeLibbpf().bpf_map_delete_elem(this.fd, key);
    if (r === -E.ENOENT) return false;
    check(`delete from map ${this.name}`, r);
    return true;
  }

  /** The key after `key` (the first key for undefined), or undefined at the end. */
  nextKey(key?: Uint8Array): Uint8Array | undefined {
    const next = new Uint8Array(this.keySize);
    const r = unsafeLibbpf().bpf_map_get_next_key(this.fd, key ?? null, next);
    if (r === -E.ENOENT) return undefined;
    check(`iterate map ${this.name}`, r);
    return next;
  }

  /** Every key (get_next_key walk). */
  *keys(): Generator<Uint8Array> {
    let k = this.nextKey();
    while (k) {
      yield k;
      k = this.nextKey(k);
    }
  }

  /**
   * How many entries the map holds: max_entries for array maps (every index exists), else the
   * count of one batch read.
   */
  entryCount(): number {
    const t = this.spec.type;
    if (t === MapType.ARRAY || t === MapType.PERCPU_ARRAY || t === MapType.PROG_ARRAY) return this.maxEntries;
    return this.lookupBatch().count;
  }

  /** Every [key, value] pair (get_next_key + lookup; entries deleted meanwhile are skipped). */
  *entries(): Generator<[Uint8Array, Uint8Array]> {
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) yield [k, v];
    }
  }

  /**
   * Writes `count` entries in one syscall batch: `keys` holds count×keySize bytes, `values`
   * count×valueStride. Falls back to one update per entry where the kernel has no batch ops.
   */
  updateBatch(keys: Uint8Array, values: Uint8Array, count: number, flags = BPF_ANY): void {
    const op = `update map ${this.name} (batch of ${count})`;
    if (keys.length < count * this.keySize || values.length < count * this.valueStride)
      throw new BpfError(op, E.EINVAL, "key or value buffer shorter than count entries");
    if (count === 0) return;
    const lib = unsafeLibbpf();
    const opts = new Struct(24).withSz().u64(8, flags);
    const cnt = new Uint32Array([count]);
    const r = lib.bpf_map_update_batch(this.fd, keys, values, cnt, opts.bytes);
    if (r === 0) return;
    // the kernel reports in cnt how many entries it wrote; kernels or map types without batch
    // ops fail before the first one, so continue entry by entry from there
    if (r === -E.EINVAL || r === -E.ENOTSUPP || r === -E.EOPNOTSUPP) {
      for (let i = cnt[0]!; i < count; i++) {
        const k = keys.subarray(i * this.keySize, (i + 1) * this.keySize);
        const v = values.subarray(i * this.valueStride, (i + 1) * this.valueStride);
        check(op, lib.bpf_map_update_elem(this.fd, k, v, flags));
      }
      return;
    }
    check(op, r);
  }

  /**
   * Deletes `count` keys (concatenated) with BPF_MAP_DELETE_BATCH, a few syscalls for thousands of
   * keys; returns how many existed. The kernel stops at a missing key (ENOENT, with the count done
   * before it): that key is skipped and the batch goes on after it. Map types without batch ops
   * (LPM trie) and kernels without them are done one key at a time.
   */
  deleteBatch(keys: Uint8Array, count: number): number {
    const op = `delete from map ${this.name} (batch of ${count})`;
    if (keys.length < count * this.keySize)
      throw new BpfError(op, E.EINVAL, "key buffer shorter than count keys");
    const lib = unsafeLibbpf();
    const opts = new Struct(24).withSz();
    const cnt = new Uint32Array(1);
    let i = 0;
    let n = 0;
    while (i < count) {
      cnt[0] = count - i;
      const r = lib.bpf_map_delete_batch(this.fd, keys.subarray(i * this.keySize), cnt, opts.bytes);
      const done = Math.min(cnt[0]!, count - i);
      n += done;
      i += done;
      if (r === 0) break;
      if (r === -E.ENOENT) {
        i++; // keys[i] was not there
        continue;
      }
      if (done === 0 && (r === -E.EINVAL || r === -E.ENOTSUPP || r === -E.EOPNOTSUPP)) {
        for (; i < count; i++) if (this.delete(keys.subarray(i * this.keySize, (i + 1) * this.keySize))) n++;
        break;
      }
      check(op, r);
    }
    return n;
  }

  /**
   * Reads the whole map: concatenated keys and values (valueStride each) and the count. Uses
   * BPF_MAP_LOOKUP_BATCH, falling back to a get_next_key walk for map types without it (LPM).
   */
  lookupBatch(): { keys: Uint8Array; values: Uint8Array; count: number } {
    const lib = unsafeLibbpf();
    const op = `read map ${this.name} (batch)`;
    let chunk = Math.max(1, Math.min(this.maxEntries, 4096));
    const keyParts: Uint8Array[] = [];
    const valueParts: Uint8Array[] = [];
    let total = 0;
    // hash maps use a u32 bucket cursor, array maps a key-sized one
    const inBatch = new Uint8Array(Math.max(this.keySize, 8));
    const outBatch = new Uint8Array(Math.max(this.keySize, 8));
    const opts = new Struct(24).withSz();
    let first = true;
    for (;;) {
      const keys = new Uint8Array(chunk * this.keySize);
      const values = new Uint8Array(chunk * this.valueStride);
      const cnt = new Uint32Array([chunk]);
      const r = lib.bpf_map_lookup_batch(
        this.fd,
        first ? null : inBatch,
        outBatch,
        keys,
        values,
        cnt,
        opts.bytes,
      );
      if (r < 0 && r !== -E.ENOENT) {
        if (r === -E.ENOSPC && cnt[0] === 0) {
          chunk *= 2;
          continue;
        }
        if (first && (r === -E.EINVAL || r === -E.ENOTSUPP || r === -E.EOPNOTSUPP)) return this.walkAll();
        check(op, r);
      }
      const n = cnt[0]!;
      if (n > 0) {
        keyParts.push(keys.subarray(0, n * this.keySize));
        valueParts.push(values.subarray(0, n * this.valueStride));
        total += n;
      }
      if (r === -E.ENOENT) break;
      inBatch.set(outBatch);
      first = false;
    }
    return { keys: concat(keyParts), values: concat(valueParts), count: total };
  }

  private walkAll(): { keys: Uint8Array; values: Uint8Array; count: number } {
    const ks: Uint8Array[] = [];
    const vs: Uint8Array[] = [];
    for (const [k, v] of this.entries()) {
      ks.push(k);
      vs.push(v);
    }
    return { keys: concat(ks), values: concat(vs), count: ks.length };
  }

  /** Pins the map at `path` (parent directories created). */
  pin(path: string): void {
    pinFd(`pin map ${this.name} at ${path}`, this.fd, path);
  }

  /** Opens a pinned map; its shape comes from the kernel (bpf_obj_get_info_by_fd). */
  static openPinned(path: string): BpfMap {
    const fd = getPinned(`open pinned map ${path}`, path);
    try {
      return new BpfMap(fd, mapInfo(fd, path), true);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /** Creates a map directly (not from an object): for probes, tests and inner maps. */
  static create(spec: Omit<MapSpec, "flags"> & { flags?: number }): BpfMap {
    const flags = spec.flags ?? (spec.type === MapType.LPM_TRIE ? BPF_F_NO_PREALLOC : 0);
    // struct bpf_map_create_opts: sz, btf_fd, btf_key_type_id, btf_value_type_id,
    // btf_vmlinux_value_type_id, inner_map_fd, map_flags @28, map_extra, numa_node, map_ifindex
    const opts = new Struct(48).withSz().u32(28, flags);
    const fd = check(
      `create map ${spec.name}`,
      unsafeLibbpf().bpf_map_create(
        spec.type,
        cstr(spec.name.slice(0, 15)),
        spec.keySize,
        spec.valueSize,
        spec.maxEntries,
        opts.bytes,
      ),
    );
    return new BpfMap(fd, { ...spec, flags }, true);
  }

  /** Closes the fd when this map owns it (maps from a BpfObject are closed with the object). */
  close(): void {
    if (this.closed || !this.ownsFd) return;
    this.closed = true;
    closeFd(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** The kernel's view of a map fd (struct bpf_map_info). */
export function mapInfo(fd: number, what = `fd ${fd}`): MapSpec & { id: number } {
  // struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16] @24
  const info = new Struct(88);
  const len = new Uint32Array([88]);
  check(`read map info of ${what}`, unsafeLibbpf().bpf_obj_get_info_by_fd(fd, info.bytes, len));
  const nameBytes = info.bytes.subarray(24, 40);
  const nul = nameBytes.indexOf(0);
  return {
    type: info.getU32(0),
    id: info.getU32(4),
    keySize: info.getU32(8),
    valueSize: info.getU32(12),
    maxEntries: info.getU32(16),
    flags: info.getU32(20),
    name: new TextDecoder().decode(nameBytes.subarray(0, nul < 0 ? 16 : nul)),
  };
}

/** The kernel's view of a program fd (struct bpf_prog_info). */
export function progInfo(fd: number): { type: number; id: number; tag: string; name: string } {
  // struct bpf_prog_info: type, id, tag[8] @8, ... name[16] @64
  const info = new Struct(96);
  const len = new Uint32Array([96]);
  check(`read program info of fd ${fd}`, unsafeLibbpf().bpf_obj_get_info_by_fd(fd, info.bytes, len));
  const nameBytes = info.bytes.subarray(64, 80);
  const nul = nameBytes.indexOf(0);
  return {
    type: info.getU32(0),
    id: info.getU32(4),
    tag: Buffer.from(info.bytes.subarray(8, 16)).toString("hex"),
    name: new TextDecoder().decode(nameBytes.subarray(0, nul < 0 ? 16 : nul)),
  };
}

/** Result of BPF_PROG_TEST_RUN. */
export interface TestRunResult {
  retval: number;
  /** output packet (possibly rewritten by the program) */
  data: Uint8Array;
  /** output context, when a ctx was given */
  ctx?: Uint8Array;
  /** average run time per repetition */
  durationNs: number;
}

/** A loaded BPF program (fd owned by its object). */
export class BpfProgram {
  constructor(
    readonly fd: number,
    readonly name: string,
    readonly type: number,
    readonly sectionName: string,
  ) {}

  /** Runs the program on `data` with BPF_PROG_TEST_RUN (XDP, tc, …). */
  testRun(opts: {
    data: Uint8Array;
    repeat?: number;
    ctx?: Uint8Array;
    dataSizeOut?: number;
    flags?: number;
  }): TestRunResult {
    const out = new Uint8Array(opts.dataSizeOut ?? opts.data.length + 256);
    const ctxOut = opts.ctx ? new Uint8Array(opts.ctx.length) : null;
    const dataIn = opts.data.length > 0 ? opts.data : null;
    // struct bpf_test_run_opts: sz, data_in @8, data_out @16, data_size_in @24, data_size_out @28,
    // ctx_in @32, ctx_out @40, ctx_size_in @48, ctx_size_out @52, retval @56, repeat @60,
    // duration @64, flags @68, cpu @72, batch_size @76
    const s = new Struct(80)
      .withSz()
      .unsafePtr(8, dataIn)
      .unsafePtr(16, out)
      .u32(24, opts.data.length)
      .u32(28, out.length)
      .unsafePtr(32, opts.ctx ?? null)
      .unsafePtr(40, ctxOut)
      .u32(48, opts.ctx?.length ?? 0)
      .u32(52, ctxOut?.length ?? 0)
      .i32(60, opts.repeat ?? 1)
      .u32(68, opts.flags ?? 0);
    check(`test run program ${this.name}`, unsafeLibbpf().bpf_prog_test_run_opts(this.fd, s.bytes));
    // keep the buffers referenced until the call returned
    void dataIn;
    const res: TestRunResult = {
      retval: s.getU32(56),
      data: out.slice(0, Math.min(s.getU32(28), out.length)),
      durationNs: s.getU32(64),
    };
    if (ctxOut) res.ctx = ctxOut.slice(0, s.getU32(52));
    return res;
  }

  /** Kernel id and tag. */
  info(): { type: number; id: number; tag: string; name: string } {
    return progInfo(this.fd);
  }

  /** Pins the program itself (links are usually what gets pinned). */
  pin(path: string): void {
    pinFd(`pin program ${this.name} at ${path}`, this.fd, path);
  }
}

/** enum bpf_link_type values. */
export const LinkType = { CGROUP: 3, XDP: 6, TCX: 11, NETKIT: 13 } as const;

/** A BPF link: a program attached to a hook, kept while an fd or a pin holds it. */
export class BpfLink implements Disposable {
  private closed = false;
  constructor(
    readonly fd: number,
    /** what the link attaches, for messages */
    readonly what: string,
  ) {}

  /** Pins the link at `path` so it outlives this process. */
  pin(path: string): void {
    pinFd(`pin link ${this.what} at ${path}`, this.fd, path);
  }

  /** Swaps in a new program atomically. */
  update(prog: BpfProgram): void {
    check(`update link ${this.what} to ${prog.name}`, unsafeLibbpf().bpf_link_update(this.fd, prog.fd, null));
  }

  /** Detaches the program from its hook (the link stays, defunct, until closed and unpinned). */
  detach(): void {
    const r = unsafeLibbpf().bpf_link_detach(this.fd);
    // ENOLINK: already defunct (e.g. its interface is gone)
    if (r === -E.ENOLINK) return;
    check(`detach link ${this.what}`, r);
  }

  /** Link type, ids and target (struct bpf_link_info). */
  info(): {
    type: number;
    id: number;
    progId: number;
    ifindex?: number;
    attachType?: number;
    cgroupId?: bigint;
  } {
    const s = new Struct(64);
    const len = new Uint32Array([64]);
    check(`read link info of ${this.what}`, unsafeLibbpf().bpf_obj_get_info_by_fd(this.fd, s.bytes, len));
    const type = s.getU32(0);
    const base = { type, id: s.getU32(4), progId: s.getU32(8) };
    // union at 16: xdp { ifindex }, tcx { ifindex, attach_type }, cgroup { cgroup_id u64, attach_type }
    if (type === LinkType.XDP) return { ...base, ifindex: s.getU32(16) };
    if (type === LinkType.TCX) return { ...base, ifindex: s.getU32(16), attachType: s.getU32(20) };
    if (type === LinkType.CGROUP) return { ...base, cgroupId: s.getU64(16), attachType: s.getU32(24) };
    return base;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Opens a pinned link. */
  static openPinned(path: string): BpfLink {
    return new BpfLink(getPinned(`open pinned link ${path}`, path), path);
  }

  /** Creates a link (bpf_link_create) with optional link_create.flags. */
  static create(
    prog: BpfProgram,
    targetFd: number,
    attachType: number,
    what: string,
    flags = 0,
    hint?: string,
  ): BpfLink {
    // struct bpf_link_create_opts: sz, flags @8 (the rest stays zero)
    const opts = flags ? new Struct(16).withSz().u32(8, flags).bytes : null;
    const fd = check(
      `attach ${what}`,
      unsafeLibbpf().bpf_link_create(prog.fd, targetFd, attachType, opts),
      hint,
    );
    return new BpfLink(fd, what);
  }
}

/** Removes a pin (bpffs file); false when there was none. */
export function unpin(path: string): boolean {
  if (!existsSync(path)) return false;
  rmSync(path);
  return true;
}

const VERIFIER_TAIL_LINES = 20;
const LOG_BUF_SIZE = 1 << 20;

/** A bpf_object opened from ELF bytes: configure (max entries, pins), load, then use. */
export class BpfObject implements Disposable {
  private unsafeObj: Pointer | null;
  // libbpf keeps pointers into these until the object is closed
  private readonly keepAlive: Uint8Array[] = [];
  private readonly pinPlan = new Map<string, string>();
  private loaded = false;
  private mapCache = new Map<string, BpfMap>();

  private constructor(
    unsafeObj: Pointer,
    readonly name: string,
    keep: Uint8Array[],
  ) {
    this.unsafeObj = unsafeObj;
    this.keepAlive.push(...keep);
  }

  /** Opens ELF bytes with bpf_object__open_mem; `name` becomes the object name. */
  static open(bytes: Uint8Array, name: string): BpfObject {
    const lib = unsafeLibbpf();
    const nameBuf = cstr(name);
    // struct bpf_object_open_opts: sz @0, object_name @8, … (80 bytes in libbpf 1.1)
    const opts = new Struct(80).withSz().unsafePtr(8, nameBuf);
    const obj = checkPtr(`open object ${name}`, lib.bpf_object__open_mem(bytes, bytes.length, opts.bytes));
    return new BpfObject(obj, name, [bytes, nameBuf, opts.bytes]);
  }

  private get obj(): Pointer {
    if (!this.unsafeObj) throw new BpfError(`use object ${this.name}`, E.EBADF, "object is closed");
    return this.unsafeObj;
  }

  private unsafeMaps(): Map<string, Pointer> {
    const lib = unsafeLibbpf();
    const out = new Map<string, Pointer>();
    let m = lib.bpf_object__next_map(this.obj, null);
    while (m) {
      out.set(unsafeCString(lib.bpf_map__name(m)), m);
      m = lib.bpf_object__next_map(this.obj, m);
    }
    return out;
  }

  private unsafePrograms(): Map<string, Pointer> {
    const lib = unsafeLibbpf();
    const out = new Map<string, Pointer>();
    let p = lib.bpf_object__next_program(this.obj, null);
    while (p) {
      out.set(unsafeCString(lib.bpf_program__name(p)), p);
      p = lib.bpf_object__next_program(this.obj, p);
    }
    return out;
  }

  private unsafeMap(name: string): Pointer {
    const m = this.unsafeMaps().get(name);
    if (!m)
      throw new BpfError(`object ${this.name}: map ${name}`, E.ENOENT, `maps: ${this.maps().join(", ")}`);
    return m;
  }

  private unsafeProgram(name: string): Pointer {
    const p = this.unsafePrograms().get(name);
    if (!p)
      throw new BpfError(
        `object ${this.name}: program ${name}`,
        E.ENOENT,
        `programs: ${this.programs().join(", ")}`,
      );
    return p;
  }

  /** Map names, without libbpf's internal .rodata/.data/.bss maps. */
  maps(): string[] {
    const lib = unsafeLibbpf();
    return [...this.unsafeMaps()].filter(([, m]) => !lib.bpf_map__is_internal(m)).map(([n]) => n);
  }

  /** Program names (C function names). */
  programs(): string[] {
    return [...this.unsafePrograms().keys()];
  }

  /** The declared shape of a map (before or after load). */
  mapSpec(name: string): MapSpec {
    const lib = unsafeLibbpf();
    const m = this.unsafeMap(name);
    return {
      name,
      type: lib.bpf_map__type(m),
      keySize: lib.bpf_map__key_size(m),
      valueSize: lib.bpf_map__value_size(m),
      maxEntries: lib.bpf_map__max_entries(m),
      flags: lib.bpf_map__map_flags(m),
    };
  }

  /** Overrides a map's max_entries (before load). */
  setMaxEntries(mapName: string, n: number): void {
    check(
      `set max entries of map ${mapName}`,
      unsafeLibbpf().bpf_map__set_max_entries(this.unsafeMap(mapName), n),
    );
  }

  /** Chooses which programs load (before load); all load by default. */
  setAutoload(progName: string, on: boolean): void {
    check(
      `set autoload of ${progName}`,
      unsafeLibbpf().bpf_program__set_autoload(this.unsafeProgram(progName), on),
    );
  }

  /**
   * Pins maps at `${dir}/${name}` (all non-internal maps by default). Before load, an existing
   * compatible pin is reused (its contents survive); an incompatible one is an error. New maps are
   * pinned right after load. After load, pins immediately.
   */
  pinMaps(dir: string, names: string[] = this.maps()): void {
    const lib = unsafeLibbpf();
    for (const name of names) {
      const path = `${dir}/${name}`;
      if (this.loaded) {
        this.map(name).pin(path);
        continue;
      }
      const m = this.unsafeMap(name);
      if (existsSync(path)) {
        const fd = getPinned(`reuse pinned map ${name}`, path);
        try {
          const have = mapInfo(fd, path);
          const want = this.mapSpec(name);
          const diff = specDiff(have, want);
          if (diff)
            throw new BpfError(
              `reuse pinned map ${name}`,
              E.EINVAL,
              `incompatible: ${diff} at ${path}; run kpr cleanup`,
            );
          check(`reuse pinned map ${name}`, lib.bpf_map__reuse_fd(m, fd));
        } finally {
          closeFd(fd); // reuse_fd dups it
        }
      } else {
        this.pinPlan.set(name, path);
      }
    }
  }

  /**
   * Makes map `name` use the map pinned at `path` (before load), whatever the object declares
   * for its size: the pinned map's max_entries is adopted, every other shape field must match.
   * Unlike pinMaps, a missing pin is an error and nothing is ever pinned.
   */
  reusePinned(name: string, path: string): void {
    if (this.loaded) throw new BpfError(`reuse pinned map ${name}`, E.EINVAL, "object is already loaded");
    const m = this.unsafeMap(name);
    const fd = getPinned(`reuse pinned map ${name}`, path);
    try {
      const have = mapInfo(fd, path);
      this.setMaxEntries(name, have.maxEntries);
      const diff = specDiff(have, this.mapSpec(name));
      if (diff) throw new BpfError(`reuse pinned map ${name}`, E.EINVAL, `incompatible: ${diff} at ${path}`);
      check(`reuse pinned map ${name}`, unsafeLibbpf().bpf_map__reuse_fd(m, fd));
    } finally {
      closeFd(fd);
    }
  }

  /**
   * Loads every (autoload) program and creates the maps. A program the verifier rejects fails
   * the load with the last lines of its verifier log in the error. With `stats`, each accepted
   * program's verifier statistics (log level 4: "processed N insns … total_states …") are passed
   * to it by program name.
   */
  load(opts: { stats?: (prog: string, log: string) => void } = {}): void {
    const lib = unsafeLibbpf();
    if (this.loaded) return;
    const logs = new Map<string, Uint8Array>();
    for (const [name, p] of this.unsafePrograms()) {
      if (!lib.bpf_program__autoload(p)) continue;
      // level 0 with a buffer: libbpf retries a failed load with level 1 into this buffer; the
      // kernel (6.4+) keeps the log's tail when it overflows, which holds the rejection reason
      const buf = new Uint8Array(LOG_BUF_SIZE);
      logs.set(name, buf);
      check(`set log buffer of ${name}`, lib.bpf_program__set_log_buf(p, buf, buf.length));
      if (opts.stats) check(`set log level of ${name}`, lib.bpf_program__set_log_level(p, 4));
    }
    const r = lib.bpf_object__load(this.obj);
    for (const [, p] of this.unsafePrograms()) lib.bpf_program__set_log_buf(p, null, 0);
    if (r >= 0 && opts.stats)
      for (const [prog, buf] of logs)
        opts.stats(prog, new TextDecoder().decode(buf.subarray(0, Math.max(0, buf.indexOf(0)))));
    if (r < 0) {
      for (const [prog, buf] of logs) {
        if (buf[0] === 0) continue;
        const text = new TextDecoder().decode(
          buf.subarray(0, buf.indexOf(0) < 0 ? buf.length : buf.indexOf(0)),
        );
        const lines = text.trimEnd().split("\n");
        const tail = lines.slice(-VERIFIER_TAIL_LINES).map((l) => `  | ${l}`);
        throw new BpfError(
          `load object ${this.name}: program ${prog} rejected by the verifier`,
          -r,
          undefined,
          `verifier log (last ${tail.length} of ${lines.length} lines):\n${tail.join("\n")}`,
        );
      }
      throw new BpfError(
        `load object ${this.name}`,
        -r,
        "run with KPR_LOG_LEVEL=debug for libbpf's messages",
      );
    }
    this.loaded = true;
    for (const [name, path] of this.pinPlan) this.map(name).pin(path);
    this.pinPlan.clear();
  }

  /** A loaded map by name. */
  map(name: string): BpfMap {
    const cached = this.mapCache.get(name);
    if (cached) return cached;
    const m = this.unsafeMap(name);
    const fd = unsafeLibbpf().bpf_map__fd(m);
    if (fd < 0) throw new BpfError(`object ${this.name}: map ${name}`, E.EBADF, "object is not loaded");
    const map = new BpfMap(fd, this.mapSpec(name), false);
    this.mapCache.set(name, map);
    return map;
  }

  /** A loaded program by name. */
  program(name: string): BpfProgram {
    const lib = unsafeLibbpf();
    const p = this.unsafeProgram(name);
    const fd = lib.bpf_program__fd(p);
    if (fd < 0) throw new BpfError(`object ${this.name}: program ${name}`, E.EBADF, "not loaded");
    return new BpfProgram(
      fd,
      name,
      lib.bpf_program__type(p),
      unsafeCString(lib.bpf_program__section_name(p)),
    );
  }

  /** The object's BTF (from the ELF's .BTF section). */
  get btf(): Btf {
    const p = unsafeLibbpf().bpf_object__btf(this.obj);
    if (!p) throw new BpfError(`object ${this.name}: BTF`, E.ENOENT, "object was built without -g");
    return new Btf(p);
  }

  /** BTF type ids of a map's key and value (0 when the map declares none). */
  mapBtfTypes(name: string): { key: number; value: number } {
    const lib = unsafeLibbpf();
    const m = this.unsafeMap(name);
    return { key: lib.bpf_map__btf_key_type_id(m), value: lib.bpf_map__btf_value_type_id(m) };
  }

  /** Closes the object: its map and program fds (pins and links keep what they hold). */
  close(): void {
    if (!this.unsafeObj) return;
    unsafeLibbpf().bpf_object__close(this.unsafeObj);
    this.unsafeObj = null;
    this.mapCache.clear();
    this.keepAlive.length = 0;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function specDiff(have: MapSpec, want: MapSpec): string | undefined {
  const fields: [keyof MapSpec, string][] = [
    ["type", "type"],
    ["keySize", "key size"],
    ["valueSize", "value size"],
    ["maxEntries", "max entries"],
    ["flags", "flags"],
  ];
  for (const [f, label] of fields)
    if (have[f] !== want[f]) return `${label} ${have[f]} (pinned) != ${want[f]} (object)`;
  return undefined;
}

/** Opens ELF bytes as a BpfObject named `name` (see BpfObject). */
export function openObject(bytes: Uint8Array, name: string): BpfObject {
  return BpfObject.open(bytes, name);
}

/** errno after a failed libc call (re-exported for callers of this layer). */
export { errno };
