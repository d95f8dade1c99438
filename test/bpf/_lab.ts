/**
 * Test lab for the datapath objects: opens .build/bpf/{tc,xdp,sock}.bpf.o, programs their maps
 * through src/datapath/lbmaps.ts's codecs (checked against the object's BTF), runs tc and XDP
 * programs with BPF_PROG_TEST_RUN and reads the reason counters.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BPF_ANY, type BpfObject, openObject } from "../../src/datapath/bpf.ts";
import * as codecs from "../../src/datapath/lbmaps.ts";
import { REPO_ROOT } from "../harness/netns.ts";

/** tc verdicts (linux/pkt_cls.h). */
export const TC_ACT = { OK: 0, SHOT: 2, REDIRECT: 7 } as const;
/** XDP verdicts (enum xdp_action). */
export const XDP_ACT = { XDP_ABORTED: 0, XDP_DROP: 1, XDP_PASS: 2, XDP_TX: 3, XDP_REDIRECT: 4 } as const;
/** Every verdict a fixture can name. */
export const VERDICT = { ...TC_ACT, ...XDP_ACT } as const;

/** Datapath objects the lab can open. */
export type LabObject = "tc" | "sock" | "xdp";

const abiText = readFileSync(join(REPO_ROOT, "bpf/lib/abi.h"), "utf8");

/** Every `#define KPR_* N` / `(1 << N)` of abi.h. */
export const ABI: Record<string, number> = Object.fromEntries(
  [...abiText.matchAll(/^#define\s+(KPR_\w+)\s+\(?(\d+)(?:\s*<<\s*(\d+))?\)?/gm)].map((m) => [
    m[1] as string,
    Number(m[2]) << Number(m[3] ?? 0),
  ]),
);

/** Names of enum kpr_reason in index order (read from abi.h, so the test follows the header). */
export const REASONS: string[] = (() => {
  const body = /enum kpr_reason \{([\s\S]*?)\};/.exec(abiText)?.[1];
  if (!body) throw new Error("abi.h: enum kpr_reason not found");
  return [...body.matchAll(/^\s*(KPR_R_\w+)/gm)]
    .map((m) => m[1] as string)
    .filter((n) => n !== "KPR_R_COUNT");
})();

/** The value of an abi.h define; throws for unknown names so typos fail loudly. */
export function abi(name: string): number {
  const v = ABI[name];
  if (v === undefined) throw new Error(`abi.h has no #define ${name}`);
  return v;
}

const u32 = (n: number): Uint8Array => codecs.u32Id.encode({ v: n });

export type Proto = "tcp" | "udp";
const PROTO_NUM: Record<Proto, number> = { tcp: codecs.PROTO_NUM.TCP, udp: codecs.PROTO_NUM.UDP };

export interface BackendSpec {
  id: number;
  address: string;
  port: number;
  local?: boolean;
  terminating?: boolean;
}

export interface ServiceSpec {
  address: string;
  port: number;
  proto?: Proto;
  revNatId: number;
  /** KPR_SVC_F_* names without the prefix, e.g. ["NODEPORT"]. */
  flags: string[];
  backends: BackendSpec[];
  /** Slots 1..activeCount are active; default: all backends not marked terminating. */
  activeCount?: number;
  affinityTimeout?: number;
  /** KPR_SCOPE_* of the entries (default 0, external) */
  scope?: number;
}

export interface ConfigSpec {
  flags?: string[];
  snatPorts?: [number, number];
  nodePorts?: [number, number];
  hostNetnsCookie?: bigint;
}

/** Small maps keep loading fast; the programs do not depend on the sizes. */
const TEST_MAX_ENTRIES: Record<string, number> = {
  kpr_lb4_svc: 4096,
  kpr_lb4_be: 4096,
  kpr_lb4_rnat: 1024,
  kpr_svc_meta: 1024,
  kpr_lb4_srcr: 1024,
  kpr_lb4_aff: 4096,
  kpr_ct4: 4096,
  kpr_snat4: 4096,
  kpr_sk4_rnat: 4096,
  kpr_svc_stats: 1024,
  kpr_be_stats: 1024,
};

function loadObject(name: LabObject, pinDir?: string): BpfObject {
  const bytes = new Uint8Array(readFileSync(join(REPO_ROOT, ".build/bpf", `${name}.bpf.o`)));
  const obj = openObject(bytes, name);
  try {
    for (const [m, n] of Object.entries(TEST_MAX_ENTRIES)) obj.setMaxEntries(m, n);
    if (pinDir) obj.pinMaps(pinDir);
    obj.load();
    return obj;
  } catch (e) {
    obj.close();
    throw e;
  }
}

export class Lab implements Disposable {
  private constructor(
    readonly obj: BpfObject,
    private readonly others: BpfObject[] = [],
  ) {}

  /**
   * Opens and loads object `name`, pinning its maps under pinDir if given. `also` names more
   * objects loaded on the same maps (pinDir required): run() finds a program in any of them.
   */
  static open(name: LabObject, pinDir?: string, also: LabObject[] = []): Lab {
    if (also.length > 0 && !pinDir) throw new Error("Lab.open: sharing maps between objects needs pinDir");
    const obj = loadObject(name, pinDir);
    const others: BpfObject[] = [];
    try {
      for (const o of also) others.push(loadObject(o, pinDir));
    } catch (e) {
      for (const o of others) o.close();
      obj.close();
      throw e;
    }
    return new Lab(obj, others);
  }

  /** Checks lbmaps.ts's codecs against the object's BTF map by map; returns the maps checked. */
  checkBtf(): string[] {
    return codecs.checkLbCodecs(this.obj);
  }

  /** Programs one frontend: backends, slots 1..n, master slot 0. */
  addService(s: ServiceSpec): void {
    const proto = PROTO_NUM[s.proto ?? "tcp"];
    const flags = s.flags.reduce((acc, f) => acc | abi(`KPR_SVC_F_${f}`), 0);
    const svc = this.obj.map("kpr_lb4_svc");
    for (const b of s.backends) this.addBackend(b, s.proto ?? "tcp");
    s.backends.forEach((b, i) => {
      svc.update(
        codecs.lb4Key.encode({ address: s.address, dport: s.port, slot: i + 1, proto, scope: s.scope ?? 0 }),
        codecs.lb4Service.encode({
          backend_id: b.id,
          affinity_timeout: 0,
          count: 0,
          rev_nat_id: s.revNatId,
          flags,
          algorithm: 0,
          active_count: 0,
        }),
      );
    });
    const active = s.activeCount ?? s.backends.filter((b) => !b.terminating).length;
    svc.update(
      codecs.lb4Key.encode({ address: s.address, dport: s.port, slot: 0, proto, scope: s.scope ?? 0 }),
      codecs.lb4Service.encode({
        backend_id: 0,
        affinity_timeout: s.affinityTimeout ?? 0,
        count: s.backends.length,
        rev_nat_id: s.revNatId,
        flags,
        algorithm: 0,
        active_count: active,
      }),
    );
    this.obj
      .map("kpr_lb4_rnat")
      .update(
        codecs.u16Id.encode({ v: s.revNatId }),
        codecs.lb4Revnat.encode({ address: s.address, port: s.port }),
      );
  }

  addBackend(b: BackendSpec, proto: Proto = "tcp"): void {
    this.obj.map("kpr_lb4_be").update(
      u32(b.id),
      codecs.lb4Backend.encode({
        address: b.address,
        port: b.port,
        proto: PROTO_NUM[proto],
        state: b.terminating ? abi("KPR_BE_TERMINATING") : abi("KPR_BE_ACTIVE"),
        flags: b.local ? abi("KPR_BE_F_LOCAL") : 0,
      }),
    );
  }

  deleteBackend(id: number): void {
    this.obj.map("kpr_lb4_be").delete(u32(id));
  }

  setConfig(c: ConfigSpec): void {
    this.obj.map("kpr_config").update(
      u32(0),
      codecs.kprConfig.encode({
        flags: (c.flags ?? []).reduce((acc, f) => acc | abi(`KPR_CFG_F_${f}`), 0),
        snat_port_min: c.snatPorts?.[0] ?? 0,
        snat_port_max: c.snatPorts?.[1] ?? 0,
        nodeport_min: c.nodePorts?.[0] ?? 0,
        nodeport_max: c.nodePorts?.[1] ?? 0,
        lb_mode: 0,
        host_netns_cookie: c.hostNetnsCookie ?? 0n,
        datapath_digest: 0n,
      }),
    );
  }

  setDevice(ifindex: number, address: string): void {
    this.obj.map("kpr_dev4").update(u32(ifindex), codecs.dev4.encode({ address, mac: new Uint8Array(6) }));
  }

  /** Adds a loadBalancerSourceRanges CIDR ("10.0.0.0/8") for frontend revNatId. */
  /**
   * A source range of a frontend; its value as mapstate.ts writes it (abi.h KPR_SRCR_V_*): "node"
   * adds the node marker (0.0.0.0/32) instead of a range.
   */
  addSourceRange(revNatId: number, cidr: string | "node"): void {
    const [addr, len] = cidr === "node" ? ["0.0.0.0", "32"] : cidr.split("/");
    const v =
      cidr === "node"
        ? abi("KPR_SRCR_V_NODE")
        : len === "0"
          ? abi("KPR_SRCR_V_ALL")
          : abi("KPR_SRCR_V_RANGE");
    this.obj
      .map("kpr_lb4_srcr")
      .update(
        codecs.lb4SrcrKey.encode({ prefixlen: 32 + Number(len), rev_nat_id: revNatId, address: addr ?? "" }),
        codecs.u8Val.encode({ v }),
        BPF_ANY,
      );
  }

  /** Empties every map (arrays are zeroed). */
  reset(): void {
    for (const name of this.obj.maps()) {
      const m = this.obj.map(name);
      if (name === "kpr_config" || name === "kpr_reasons" || name === "kpr_maglev_cfg") {
        for (let i = 0; i < m.maxEntries; i++) m.update(u32(i), new Uint8Array(m.valueStride));
        continue;
      }
      for (let k = m.nextKey(); k; k = m.nextKey()) m.delete(k);
    }
  }

  /** Reason counters summed over CPUs, by name (only non-zero ones). */
  reasons(): Record<string, number> {
    const m = this.obj.map("kpr_reasons");
    const cpus = m.valueStride / 8;
    const out: Record<string, number> = {};
    REASONS.forEach((name, i) => {
      const v = m.lookup(u32(i));
      if (!v) return;
      const dv = new DataView(v.buffer);
      let sum = 0n;
      for (let c = 0; c < cpus; c++) sum += dv.getBigUint64(c * 8, true);
      if (sum) out[name] = Number(sum);
    });
    return out;
  }

  /**
   * Runs tc or XDP program prog on an Ethernet frame arriving on ifindex (skb->ifindex or
   * xdp_md.ingress_ifindex when > 1; the test run's default is lo).
   */
  run(prog: string, data: Uint8Array, ifindex = 1): { retval: number; data: Uint8Array } {
    const obj = [this.obj, ...this.others].find((o) => o.programs().includes(prog));
    if (!obj) throw new Error(`Lab.run: no loaded object has program ${prog}`);
    let ctx: Uint8Array | undefined;
    if (ifindex > 1) {
      if (prog.startsWith("kpr_xdp")) {
        // struct xdp_md (24 bytes): data 0, data_end = frame length (the kernel insists),
        // no metadata, ingress_ifindex at 12, rx_queue_index 0
        ctx = new Uint8Array(24);
        new DataView(ctx.buffer).setUint32(4, data.length, true);
        new DataView(ctx.buffer).setUint32(12, ifindex, true);
      } else {
        // struct __sk_buff (192 bytes); only ifindex (offset 40) is set
        ctx = new Uint8Array(192);
        new DataView(ctx.buffer).setUint32(40, ifindex, true);
      }
    }
    const r = obj.program(prog).testRun({ data, ctx });
    return { retval: r.retval, data: r.data };
  }

  ct(key: Parameters<typeof codecs.ct4Key.encode>[0]) {
    const v = this.obj.map("kpr_ct4").lookup(codecs.ct4Key.encode(key));
    return v ? codecs.ct4Entry.decode(v) : undefined;
  }

  /** Every kpr_snat4 entry, decoded. */
  snatEntries() {
    const m = this.obj.map("kpr_snat4");
    const out: {
      key: ReturnType<typeof codecs.ct4Key.decode>;
      value: ReturnType<typeof codecs.snat4Entry.decode>;
    }[] = [];
    for (let k = m.nextKey(); k; k = m.nextKey(k)) {
      const v = m.lookup(k);
      if (v) out.push({ key: codecs.ct4Key.decode(k), value: codecs.snat4Entry.decode(v) });
    }
    return out;
  }

  close(): void {
    for (const o of this.others) o.close();
    this.obj.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
