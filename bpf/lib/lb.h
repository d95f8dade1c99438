/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service lookup and backend selection, shared by the socket and tc programs.
 * User space already filtered backends by traffic policy, topology and readiness: the
 * datapath only selects among the slots it finds.
 */
#ifndef KPR_LB_H
#define KPR_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "consts.h"
#include "maps.h"

/* Frontend kinds served on a device's ingress (ClusterIP alone is east-west only). */
#define KPR_SVC_F_EXTERNAL \
	(KPR_SVC_F_NODEPORT | KPR_SVC_F_EXTERNALIP | KPR_SVC_F_LOADBALANCER | KPR_SVC_F_HOSTPORT)

/* The master entry (slot 0) of frontend addr:port/proto, or NULL. */
static __always_inline struct kpr_lb4_service *lb4_lookup_service(__u32 addr, __u16 port,
								  __u8 proto)
{
	struct kpr_lb4_key key = {};
	key.address = addr;
	key.dport = port;
	key.proto = proto;
	return bpf_map_lookup_elem(&kpr_lb4_svc, &key);
}

/*
 * Number of slots (1..n) to select from: the active backends, or every slot (terminating
 * fallback) when none is active. 0 when the frontend has no backends.
 */
static __always_inline __u16 lb4_candidates(const struct kpr_lb4_service *svc)
{
	__u16 n = svc->active_count;
	if (n == 255 || n == 0 || n > svc->count)
		n = svc->count;
	return n;
}

/* The backend id in slot of frontend fe (address/dport/proto), 0 when the slot is missing. */
static __always_inline __u32 lb4_slot_backend(const struct kpr_lb4_key *fe, __u16 slot)
{
	struct kpr_lb4_key key = *fe;
	key.slot = slot;
	struct kpr_lb4_service *s = bpf_map_lookup_elem(&kpr_lb4_svc, &key);
	return s ? s->backend_id : 0;
}

/* Whether backend id still occupies one of slots 1..n of fe. */
static __always_inline int lb4_has_backend(const struct kpr_lb4_key *fe, __u16 n, __u32 id)
{
	/* Past the scan limit only existence is checked: a bounded loop keeps the verifier happy
	 * on 5.10, and user space drops affinity entries of removed backends anyway. */
	if (n > KPR_AFF_SCAN_MAX)
		return bpf_map_lookup_elem(&kpr_lb4_be, &id) != NULL;
	for (__u16 i = 1; i <= KPR_AFF_SCAN_MAX; i++) {
		if (i > n)
			break;
		if (lb4_slot_backend(fe, i) == id)
			return 1;
	}
	return 0;
}

/*
 * Selects a backend of frontend fe (whose master entry is svc, count > 0). client is the
 * client address (tc) or netns cookie (socket LB, is_cookie = 1) for ClientIP affinity.
 * On success stores the backend id in *id and returns the backend; NULL when the chosen slot
 * names a backend that is missing (user space is mid-update).
 */
static __always_inline struct kpr_lb4_backend *
lb4_select_backend(const struct kpr_lb4_key *fe, const struct kpr_lb4_service *svc, __u64 client,
		   __u8 is_cookie, __u32 *id)
{
	struct kpr_lb4_aff_key akey = {};
	struct kpr_lb4_backend *be;
	__u16 n = lb4_candidates(svc);
	__u32 now_s = 0;
	__u32 bid;

	if (n == 0)
		return NULL;

	if (svc->flags & KPR_SVC_F_AFFINITY) {
		akey.client = client;
		akey.rev_nat_id = svc->rev_nat_id;
		akey.netns_cookie = is_cookie;
		now_s = (__u32)(bpf_ktime_get_ns() / KPR_NSEC_PER_SEC);
		struct kpr_lb4_aff_val *av = bpf_map_lookup_elem(&kpr_lb4_aff, &akey);
		if (av && (svc->affinity_timeout == 0 ||
			   now_s - av->last_used <= svc->affinity_timeout)) {
			bid = av->backend_id;
			if (lb4_has_backend(fe, n, bid)) {
				be = bpf_map_lookup_elem(&kpr_lb4_be, &bid);
				if (be) {
					av->last_used = now_s;
					*id = bid;
					return be;
				}
			}
		}
	}

	/* Maglev tables are not programmed yet: every algorithm selects at random. */
	__u16 slot = (__u16)(bpf_get_prandom_u32() % n) + 1;
	bid = lb4_slot_backend(fe, slot);
	if (!bid)
		return NULL;
	be = bpf_map_lookup_elem(&kpr_lb4_be, &bid);
	if (!be)
		return NULL;

	if (svc->flags & KPR_SVC_F_AFFINITY) {
		struct kpr_lb4_aff_val val = { .backend_id = bid, .last_used = now_s };
		bpf_map_update_elem(&kpr_lb4_aff, &akey, &val, BPF_ANY);
	}
	*id = bid;
	return be;
}

/*
 * loadBalancerSourceRanges check: whether saddr may use the frontend with master svc.
 * Allow list: only matching sources; deny list (KPR_SVC_F_SRC_DENY): all but them.
 */
static __always_inline int lb4_src_allowed(const struct kpr_lb4_service *svc, __u32 saddr)
{
	if (!(svc->flags & KPR_SVC_F_SRC_RANGES))
		return 1;
	struct kpr_lb4_srcr_key key = {};
	key.prefixlen = 64;
	key.rev_nat_id = svc->rev_nat_id;
	key.address = saddr;
	int hit = bpf_map_lookup_elem(&kpr_lb4_srcr, &key) != NULL;
	return (svc->flags & KPR_SVC_F_SRC_DENY) ? !hit : hit;
}

#endif /* KPR_LB_H */
