/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address/port translation of IPv4 TCP/UDP packets and forwarding by FIB lookup + redirect.
 */
#ifndef KPR_NAT_H
#define KPR_NAT_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "csum.h"
#include "ctx.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/*
 * Rewrites the destination to addr:port (network order) and updates p.
 * Returns 0 or a negative kpr_reason.
 */
static __always_inline int nat4_set_dst(kpr_ctx_t *ctx, struct kpr_pkt4 *p, __u32 addr,
					__u16 port)
{
	return kpr_csum_set_tuple(ctx, p, p->saddr, p->sport, addr, port);
}

/*
 * Rewrites the source to addr:port (network order) and updates p.
 * Returns 0 or a negative kpr_reason.
 */
static __always_inline int nat4_set_src(kpr_ctx_t *ctx, struct kpr_pkt4 *p, __u32 addr,
					__u16 port)
{
	return kpr_csum_set_tuple(ctx, p, addr, port, p->daddr, p->dport);
}

/*
 * Rewrites source and destination at once (same helper calls as one of them alone).
 * Returns 0 or a negative kpr_reason.
 */
static __always_inline int nat4_set_both(kpr_ctx_t *ctx, struct kpr_pkt4 *p, __u32 saddr,
					 __u16 sport, __u32 daddr, __u16 dport)
{
	return kpr_csum_set_tuple(ctx, p, saddr, sport, daddr, dport);
}

/*
 * FIB lookup toward daddr for a packet that arrived on the context's device. On success fib
 * holds the egress ifindex (and MACs when rc is BPF_FIB_LKUP_RET_SUCCESS). Returns the FIB rc
 * (SUCCESS or NO_NEIGH) or -KPR_R_DROP_FIB / -KPR_R_DROP_FRAG_NEEDED. Needs IPv4 forwarding
 * on the ingress device.
 */
static __always_inline int nat4_fib_lookup(kpr_ctx_t *ctx, const struct kpr_pkt4 *p,
					   __u32 saddr, __u32 daddr, struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = p->proto;
	/* tc: tot_len stays 0: with it set the kernel compares it with the MTU, which fails for
	 * GRO/GSO packets; without it the kernel checks the skb itself (GSO aware). An XDP frame is
	 * one packet: the kernel checks its length against the egress MTU. */
	if (KPR_IS_XDP)
		fib->tot_len = p->tot_len; /* host order */
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = ctx_ifindex(ctx);

	long rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return (int)rc;
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return -KPR_R_DROP_FRAG_NEEDED;
	return -KPR_R_DROP_FIB;
}

/*
 * Sends an already translated packet out of fib->ifindex: decrements the TTL, sets the MACs
 * from the FIB result, or (tc only) lets the kernel resolve the neighbour (bpf_redirect_neigh)
 * when the FIB had none; XDP callers hand such packets to tc before translating them.
 * Returns 0 (the hook returns its redirect verdict) or a negative kpr_reason.
 */
static __always_inline int nat4_redirect(kpr_ctx_t *ctx, struct kpr_pkt4 *p,
					 const struct bpf_fib_lookup *fib, int fib_rc)
{
	if (p->ttl <= 1)
		return -KPR_R_DROP_TTL;
	int ret = kpr_csum_set_ttl(ctx, p, p->ttl - 1);
	if (ret < 0)
		return ret;

#ifndef KPR_CTX_XDP
	if (fib_rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		if (bpf_redirect_neigh(fib->ifindex, NULL, 0, 0) != TC_ACT_REDIRECT)
			return -KPR_R_DROP_FIB;
		return 0;
	}
#endif
	/* dmac then smac: the first 12 bytes of the Ethernet header */
	__u8 macs[12];
	__builtin_memcpy(macs, fib->dmac, 6);
	__builtin_memcpy(macs + 6, fib->smac, 6);
	if (ctx_store_bytes(ctx, 0, macs, sizeof(macs)) < 0)
		return -KPR_R_DROP_REWRITE;
	if (ctx_redirect(ctx, fib->ifindex) < 0)
		return -KPR_R_DROP_FIB;
	return 0;
}

#endif /* KPR_NAT_H */
