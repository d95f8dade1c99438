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
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/*
 * Rewrites the destination to addr:port (network order) and updates p.
 * Returns 0 or a negative kpr_reason.
 */
static __always_inline int nat4_set_dst(struct __sk_buff *skb, struct kpr_pkt4 *p, __u32 addr,
					__u16 port)
{
	return kpr_csum_set_tuple(skb, p, p->saddr, p->sport, addr, port);
}

/*
 * Rewrites the source to addr:port (network order) and updates p.
 * Returns 0 or a negative kpr_reason.
 */
static __always_inline int nat4_set_src(struct __sk_buff *skb, struct kpr_pkt4 *p, __u32 addr,
					__u16 port)
{
	return kpr_csum_set_tuple(skb, p, addr, port, p->daddr, p->dport);
}

/*
 * Rewrites source and destination at once (same helper calls as one of them alone).
 * Returns 0 or a negative kpr_reason.
 */
static __always_inline int nat4_set_both(struct __sk_buff *skb, struct kpr_pkt4 *p, __u32 saddr,
					 __u16 sport, __u32 daddr, __u16 dport)
{
	return kpr_csum_set_tuple(skb, p, saddr, sport, daddr, dport);
}

/*
 * FIB lookup toward daddr for a packet that arrived on skb->ifindex. On success fib holds the
 * egress ifindex (and MACs when rc is BPF_FIB_LKUP_RET_SUCCESS). Returns the FIB rc
 * (SUCCESS or NO_NEIGH) or -KPR_R_DROP_FIB / -KPR_R_DROP_FRAG_NEEDED. Needs IPv4 forwarding
 * on the ingress device.
 */
static __always_inline int nat4_fib_lookup(struct __sk_buff *skb, const struct kpr_pkt4 *p,
					   __u32 saddr, __u32 daddr, struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = p->proto;
	/* tot_len stays 0: with it set the kernel compares it with the MTU, which fails for GRO/GSO
	 * packets; without it the kernel checks the skb itself (GSO aware). */
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = skb->ifindex;

	long rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return (int)rc;
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return -KPR_R_DROP_FRAG_NEEDED;
	return -KPR_R_DROP_FIB;
}

/*
 * Sends an already translated packet out of fib->ifindex: decrements the TTL, sets the MACs
 * from the FIB result, or lets the kernel resolve the neighbour (bpf_redirect_neigh) when the
 * FIB had none. Returns 0 (the hook returns TC_ACT_REDIRECT) or a negative kpr_reason.
 */
static __always_inline int nat4_redirect(struct __sk_buff *skb, struct kpr_pkt4 *p,
					 const struct bpf_fib_lookup *fib, int fib_rc)
{
	if (p->ttl <= 1)
		return -KPR_R_DROP_TTL;
	int ret = kpr_csum_set_ttl(skb, p, p->ttl - 1);
	if (ret < 0)
		return ret;

	if (fib_rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		if (bpf_redirect_neigh(fib->ifindex, NULL, 0, 0) != TC_ACT_REDIRECT)
			return -KPR_R_DROP_FIB;
		return 0;
	}
	/* dmac then smac: the first 12 bytes of the Ethernet header */
	__u8 macs[12];
	__builtin_memcpy(macs, fib->dmac, 6);
	__builtin_memcpy(macs + 6, fib->smac, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) < 0)
		return -KPR_R_DROP_REWRITE;
	if (bpf_redirect(fib->ifindex, 0) != TC_ACT_REDIRECT)
		return -KPR_R_DROP_FIB;
	return 0;
}

#endif /* KPR_NAT_H */
