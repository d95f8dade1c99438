/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maglev backend selection for north-south flows: the flow's hash indexes the frontend's lookup
 * table (kpr_lb4_maglev), which user space computes from the backend addresses and
 * maglev.hashSeed, so every node with the same backends picks the same backend for a flow.
 * With session affinity the hash covers the client address only.
 */
#ifndef KPR_MAGLEV_H
#define KPR_MAGLEV_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "maps.h"

#define KPR_JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 kpr_rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

/* The Linux kernel's jhash_3words (lookup3 final mix). */
static __always_inline __u32 kpr_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += KPR_JHASH_INITVAL + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	c ^= b;
	c -= kpr_rol32(b, 14);
	a ^= c;
	a -= kpr_rol32(c, 11);
	b ^= a;
	b -= kpr_rol32(a, 25);
	c ^= b;
	c -= kpr_rol32(b, 16);
	a ^= c;
	a -= kpr_rol32(c, 4);
	b ^= a;
	b -= kpr_rol32(a, 14);
	c ^= b;
	c -= kpr_rol32(b, 24);
	return c;
}

/*
 * The Maglev backend of a new flow saddr:sport -> daddr:dport/proto (network order) to the
 * frontend with master svc. Returns the backend and its id in *id, or NULL when the frontend has
 * no Maglev table (random selection applies) or the slot names a missing backend.
 */
static __always_inline struct kpr_lb4_backend *
lb4_select_maglev(const struct kpr_lb4_service *svc, __u32 saddr, __u32 daddr, __u16 sport,
		  __u16 dport, __u8 proto, __u32 *id)
{
	__u16 rev = svc->rev_nat_id;
	void *table = bpf_map_lookup_elem(&kpr_lb4_maglev, &rev);
	if (!table)
		return NULL;
	__u32 zero = 0;
	struct kpr_maglev_cfg *mc = bpf_map_lookup_elem(&kpr_maglev_cfg, &zero);
	if (!mc || !mc->table_size)
		return NULL;
	__u32 hash;
	if (svc->flags & KPR_SVC_F_AFFINITY)
		hash = kpr_jhash_3words(saddr, 0, 0, mc->seed1);
	else
		hash = kpr_jhash_3words(saddr, daddr, ((__u32)sport << 16) | dport, mc->seed0 ^ proto);
	__u32 idx = hash % mc->table_size;
	__u32 *bid = bpf_map_lookup_elem(table, &idx);
	if (!bid || !*bid)
		return NULL;
	__u32 b = *bid;
	struct kpr_lb4_backend *be = bpf_map_lookup_elem(&kpr_lb4_be, &b);
	if (be)
		*id = b;
	return be;
}

#endif /* KPR_MAGLEV_H */
