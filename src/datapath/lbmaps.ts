/**
 * Typed codecs for every map key/value struct of bpf/lib/abi.h, the map table (name → key and
 * value codec) and the ABI constants user space needs. `checkLbCodecs` verifies the codecs
 * against a loaded object's BTF, map by map, so a layout drift stops at load naming the struct.
 */
import { KprError } from "../errors.ts";
import type { BpfObject } from "./bpf.ts";
import { checkAgainstBtf, defineStruct, type StructCodec, scalar } from "./codec.ts";

// ---- constants mirrored from abi.h ----------------------------------------------------------

/** struct kpr_lb4_service.flags (KPR_SVC_F_*). */
export const SVC_F = {
  CLUSTERIP: 1 << 0,
  NODEPORT: 1 << 1,
  EXTERNALIP: 1 << 2,
  LOADBALANCER: 1 << 3,
  HOSTPORT: 1 << 4,
  LOCAL_SCOPE: 1 << 8,
  AFFINITY: 1 << 9,
  SRC_RANGES: 1 << 10,
  SRC_DENY: 1 << 11,
  LOOPBACK: 1 << 12,
  WILDCARD: 1 << 13,
  DROP_NO_LOCAL: 1 << 14,
  TWO_SCOPES: 1 << 15,
} as const;

/** struct kpr_lb4_key.scope (KPR_SCOPE_*). */
export const SCOPE = { EXTERNAL: 0, INTERNAL: 1 } as const;

/** Backend selection (KPR_ALG_*). */
export const ALG = { RANDOM: 0, MAGLEV: 1 } as const;
/** struct kpr_lb4_backend.state (KPR_BE_*). */
export const BE_STATE = { ACTIVE: 0, TERMINATING: 1 } as const;
/** struct kpr_lb4_backend.flags (KPR_BE_F_*). */
export const BE_F = { LOCAL: 1 << 0 } as const;
/** struct kpr_config.flags (KPR_CFG_F_*). */
export const CFG_F = { SOCKET_LB: 1 << 0, HOST_NS_ONLY: 1 << 1, NODEPORT: 1 << 2 } as const;
/** struct kpr_config.lb_mode. */
export const LB_MODE = { snat: 0, dsr: 1, hybrid: 2 } as const;
/** master: active_count value meaning "every slot is active" (more than 254 active backends). */
export const ACTIVE_SATURATED = 255;
/** Name length limits of struct kpr_svc_meta. */
export const META_NAME_LEN = 96;
export const META_PORT_NAME_LEN = 32;

/** enum kpr_reason names, in abi.h's order (index = kpr_reasons key). */
export const REASON_NAMES = [
  "pass",
  "pass-not-l4",
  "pass-fragment",
  "pass-clusterip",
  "lb-new",
  "lb-ct",
  "lb-revnat",
  "snat-new",
  "snat-fwd",
  "snat-reply",
  "reject-rst",
  "drop-malformed",
  "drop-no-backend",
  "drop-src-range",
  "drop-backend-gone",
  "drop-fib",
  "drop-frag-needed",
  "drop-no-device",
  "drop-snat-ports",
  "drop-map-update",
  "drop-rewrite",
  "drop-ttl",
  "sock-lb",
  "sock-reject",
  "sock-revnat",
  "sock-skip-netns",
  "sock-disabled",
  "xdp-pass-tc",
  "drop-loopback-dst",
  "reject-icmp",
  "sock-reject-no-local",
] as const;

/** IP protocol numbers of the L4 protocols kpr programs. */
export const PROTO_NUM = { TCP: 6, UDP: 17, SCTP: 132 } as const;

/** IP protocol number → model protocol name (undefined when unknown). */
export function protoName(n: number): "TCP" | "UDP" | "SCTP" | undefined {
  return n === 6 ? "TCP" : n === 17 ? "UDP" : n === 132 ? "SCTP" : undefined;
}

// ---- struct codecs -------------------------------------------------------------------------

export const lb4Key = defineStruct("kpr_lb4_key", {
  address: "ip4",
  dport: "be16",
  slot: "u16",
  proto: "u8",
  scope: "u8",
  pad: ["pad", 2],
});
export const lb4Service = defineStruct("kpr_lb4_service", {
  backend_id: "u32",
  affinity_timeout: "u32",
  count: "u16",
  rev_nat_id: "u16",
  flags: "u16",
  algorithm: "u8",
  active_count: "u8",
});

export const lb4Backend = defineStruct("kpr_lb4_backend", {
  address: "ip4",
  port: "be16",
  proto: "u8",
  state: "u8",
  flags: "u8",
  pad: ["pad", 3],
});

export const lb4Revnat = defineStruct("kpr_lb4_revnat", { address: "ip4", port: "be16", pad: ["pad", 2] });

export const svcMeta = defineStruct("kpr_svc_meta", {
  name: ["str", META_NAME_LEN],
  port_name: ["str", META_PORT_NAME_LEN],
  health_check_port: "u16",
  reject: "u8",
  proto: "u8",
  address: "ip4",
  port: "be16",
  pad: ["pad", 6],
  digest: "u64",
});

export const lb4SrcrKey = defineStruct("kpr_lb4_srcr_key", {
  prefixlen: "u32",
  rev_nat_id: "u16",
  pad: ["pad", 2],
  address: "ip4",
});

export const lb4AffKey = defineStruct("kpr_lb4_aff_key", {
  client: "u64",
  rev_nat_id: "u16",
  netns_cookie: "u8",
  pad: ["pad", 5],
});
export const lb4AffVal = defineStruct("kpr_lb4_aff_val", { backend_id: "u32", last_used: "u32" });

export const ct4Key = defineStruct("kpr_ct4_key", {
  saddr: "ip4",
  daddr: "ip4",
  sport: "be16",
  dport: "be16",
  proto: "u8",
  dir: "u8",
  pad: ["pad", 2],
});
export const ct4Entry = defineStruct("kpr_ct4_entry", {
  last_seen_ns: "u64",
  packets: "u64",
  bytes: "u64",
  backend_id: "u32",
  nat_addr: "ip4",
  nat_port: "be16",
  rev_nat_id: "u16",
  flags: "u16",
  pad: ["pad", 2],
});
export const snat4Entry = defineStruct("kpr_snat4_entry", {
  last_seen_ns: "u64",
  client_addr: "ip4",
  fe_addr: "ip4",
  client_port: "be16",
  fe_port: "be16",
  rev_nat_id: "u16",
  flags: "u16",
});
export const sk4RnatKey = defineStruct("kpr_sk4_rnat_key", {
  cookie: "u64",
  address: "ip4",
  port: "be16",
  pad: ["pad", 2],
});
export const sk4RnatVal = defineStruct("kpr_sk4_rnat_val", {
  address: "ip4",
  port: "be16",
  rev_nat_id: "u16",
});

export const dev4 = defineStruct("kpr_dev4", { address: "ip4", mac: ["bytes", 6], pad: ["pad", 2] });

export const kprConfig = defineStruct("kpr_config", {
  flags: "u32",
  snat_port_min: "u16",
  snat_port_max: "u16",
  nodeport_min: "u16",
  nodeport_max: "u16",
  lb_mode: "u8",
  pad: ["pad", 3],
  host_netns_cookie: "u64",
  datapath_digest: "u64",
});

export const maglevCfg = defineStruct("kpr_maglev_cfg", {
  table_size: "u32",
  seed0: "u32",
  seed1: "u32",
  pad: "u32",
});

export const stats = defineStruct("kpr_stats", { packets: "u64", bytes: "u64" });

export const u8Val = scalar("__u8", "u8");
export const u16Id = scalar("__u16", "u16");
export const u32Id = scalar("__u32", "u32");
export const u64Val = scalar("__u64", "u64");

export type Lb4KeyValue = ReturnType<typeof lb4Key.decode>;
export type Lb4ServiceValue = ReturnType<typeof lb4Service.decode>;
export type Lb4BackendValue = ReturnType<typeof lb4Backend.decode>;
export type Lb4RevnatValue = ReturnType<typeof lb4Revnat.decode>;
export type SvcMetaValue = ReturnType<typeof svcMeta.decode>;
export type Lb4SrcrKeyValue = ReturnType<typeof lb4SrcrKey.decode>;
export type KprConfigValue = ReturnType<typeof kprConfig.decode>;
export type Dev4Value = ReturnType<typeof dev4.decode>;

// ---- the map table -------------------------------------------------------------------------

/** A map's codecs. `perCpu`: lookups return one value per possible CPU. */
export interface MapCodecs {
  key: StructCodec<unknown>;
  value: StructCodec<unknown>;
  perCpu?: boolean;
}

/** Every map of bpf/lib/maps.h with its key and value codec. */
export const MAP_CODECS: Record<string, MapCodecs> = {
  kpr_lb4_svc: { key: lb4Key, value: lb4Service },
  kpr_lb4_be: { key: u32Id, value: lb4Backend },
  kpr_lb4_rnat: { key: u16Id, value: lb4Revnat },
  kpr_svc_meta: { key: u16Id, value: svcMeta },
  kpr_lb4_srcr: { key: lb4SrcrKey, value: u8Val },
  kpr_lb4_aff: { key: lb4AffKey, value: lb4AffVal },
  kpr_ct4: { key: ct4Key, value: ct4Entry },
  kpr_snat4: { key: ct4Key, value: snat4Entry },
  kpr_sk4_rnat: { key: sk4RnatKey, value: sk4RnatVal },
  kpr_dev4: { key: u32Id, value: dev4 },
  kpr_config: { key: u32Id, value: kprConfig },
  kpr_svc_stats: { key: u32Id, value: stats, perCpu: true },
  kpr_be_stats: { key: u32Id, value: stats, perCpu: true },
  kpr_reasons: { key: u32Id, value: u64Val, perCpu: true },
  kpr_maglev_cfg: { key: u32Id, value: maglevCfg },
  kpr_lb4_maglev: { key: u16Id, value: u32Id },
  kpr_lb4_mgsig: { key: u16Id, value: u64Val },
};

/** The maps that hold the programmed load-balancing state (what reconcile diffs). */
export const LB_STATE_MAPS = [
  "kpr_lb4_svc",
  "kpr_lb4_be",
  "kpr_lb4_rnat",
  "kpr_svc_meta",
  "kpr_lb4_srcr",
] as const;
export type LbStateMap = (typeof LB_STATE_MAPS)[number];

/**
 * Checks every map of `obj` that has a codec: key and value sizes against the map's declared
 * sizes, and struct layouts (size, member offsets) against the object's BTF. Throws a KprError
 * naming the map, struct and field. Returns the names of the maps checked.
 */
export function checkLbCodecs(obj: BpfObject): string[] {
  const btf = obj.btf;
  const checked: string[] = [];
  for (const name of obj.maps()) {
    const codecs = MAP_CODECS[name];
    if (!codecs) continue;
    const spec = obj.mapSpec(name);
    const types = obj.mapBtfTypes(name);
    const pairs: [string, StructCodec<unknown>, number, number][] = [
      ["key", codecs.key, spec.keySize, types.key],
      ["value", codecs.value, spec.valueSize, types.value],
    ];
    for (const [what, codec, size, typeId] of pairs) {
      if (codec.size !== size)
        throw new KprError(
          `check map ${name} of ${obj.name}: ${what} is ${size} bytes, codec ${codec.name} has ${codec.size} (bpf/lib/abi.h and src/datapath/lbmaps.ts disagree)`,
        );
      const st = typeId ? btf.structById(typeId) : undefined;
      if (!st) continue; // a scalar key/value: the size check above is all there is
      if (st.name !== codec.name)
        throw new KprError(
          `check map ${name} of ${obj.name}: ${what} type is struct ${st.name} in BTF, codec is ${codec.name}`,
        );
      checkAgainstBtf(btf, codec, obj.name);
    }
    checked.push(name);
  }
  return checked;
}
