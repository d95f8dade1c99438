/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the datapath, declared once and included by each object so that user space
 * creates and pins them once (${bpf.root}/maps/NAME) and reuses them for the next object.
 * Names are libbpf map names (at most 15 characters). Sizes are defaults; user space may
 * override max_entries (bpf.lbMapMax) before load.
 */
#ifndef KPR_MAPS_H
#define KPR_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kpr_lb4_key);
	__type(value, struct kpr_lb4_service);
	__uint(max_entries, 65536);
} kpr_lb4_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct kpr_lb4_backend);
	__uint(max_entries, 65536);
} kpr_lb4_be SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct kpr_lb4_revnat);
	__uint(max_entries, 65536);
} kpr_lb4_rnat SEC(".maps");

/* Read and written by user space only; declared here so it is created with BTF. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct kpr_svc_meta);
	__uint(max_entries, 65536);
} kpr_svc_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct kpr_lb4_srcr_key);
	__type(value, __u8);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} kpr_lb4_srcr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kpr_lb4_aff_key);
	__type(value, struct kpr_lb4_aff_val);
	__uint(max_entries, 65536);
} kpr_lb4_aff SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kpr_ct4_key);
	__type(value, struct kpr_ct4_entry);
	__uint(max_entries, 262144);
} kpr_ct4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kpr_ct4_key);
	__type(value, struct kpr_snat4_entry);
	__uint(max_entries, 131072);
} kpr_snat4 SEC(".maps");

#include "sk4rnat.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct kpr_dev4);
	__uint(max_entries, 64);
} kpr_dev4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpr_config);
	__uint(max_entries, 1);
} kpr_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct kpr_stats);
	__uint(max_entries, 65536);
} kpr_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct kpr_stats);
	__uint(max_entries, 65536);
} kpr_be_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, KPR_REASON_MAX);
} kpr_reasons SEC(".maps");

/* Maglev lookup tables (abi.h). The inner template sets BPF_F_INNER_MAP so that tables of any
 * size (maglev.tableSize) can be inserted. */
struct kpr_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16381);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u16);
	__uint(max_entries, 65536);
	__array(values, struct kpr_maglev_inner);
} kpr_lb4_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kpr_maglev_cfg);
	__uint(max_entries, 1);
} kpr_maglev_cfg SEC(".maps");

/* Read and written by user space only: hash of the inputs of each programmed Maglev table. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, __u64);
	__uint(max_entries, 65536);
} kpr_lb4_mgsig SEC(".maps");

/* kpr_config entry 0; an all-zero config (socket LB off, default SNAT ports) when absent. */
static __always_inline const struct kpr_config *kpr_get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&kpr_config, &zero);
}

/* Adds one to the per-CPU counter of reason r. */
static __always_inline void kpr_count_reason(__u32 r)
{
	__u64 *c = bpf_map_lookup_elem(&kpr_reasons, &r);
	if (c)
		*c += 1;
}

/* Adds one packet / call of `bytes` to the per-CPU stats of id in map (kpr_svc_stats or
 * kpr_be_stats). Counters are best effort: a full map just loses the sample. */
static __always_inline void kpr_stats_add(void *map, __u32 id, __u64 bytes)
{
	struct kpr_stats *s = bpf_map_lookup_elem(map, &id);
	if (s) {
		s->packets += 1;
		s->bytes += bytes;
		return;
	}
	struct kpr_stats init = { .packets = 1, .bytes = bytes };
	bpf_map_update_elem(map, &id, &init, BPF_NOEXIST);
}

#endif /* KPR_MAPS_H */
