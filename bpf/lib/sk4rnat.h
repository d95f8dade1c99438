/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kpr_sk4_rnat, the socket LB's reverse map (socket cookie + backend → frontend), on its own so
 * that sockterm.bpf.c can use it without declaring every other map (maps.h includes it).
 */
#ifndef KPR_SK4RNAT_H
#define KPR_SK4RNAT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct kpr_sk4_rnat_key);
	__type(value, struct kpr_sk4_rnat_val);
	__uint(max_entries, 131072);
} kpr_sk4_rnat SEC(".maps");

#endif /* KPR_SK4RNAT_H */
