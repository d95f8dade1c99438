/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Incremental checksum updates through the kernel helpers, which also handle
 * CHECKSUM_PARTIAL skbs (veth senders) correctly when BPF_F_PSEUDO_HDR marks pseudo-header
 * fields.
 */
#ifndef KPR_CSUM_H
#define KPR_CSUM_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "parse.h"

/* bpf_l4_csum_replace flags for p: a zero UDP checksum ("none") stays zero. */
static __always_inline __u64 kpr_l4_csum_flags(const struct kpr_pkt4 *p)
{
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/*
 * Rewrites the 4-byte IPv4 address at addr_off from `from` to `to`, fixing the IPv4 header
 * checksum and the L4 checksum (pseudo header). Returns 0 or -KPR_R_DROP_REWRITE.
 */
static __always_inline int kpr_csum_set_addr(struct __sk_buff *skb, const struct kpr_pkt4 *p,
					     __u32 addr_off, __u32 from, __u32 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, p->csum_off, from, to,
				kpr_l4_csum_flags(p) | BPF_F_PSEUDO_HDR | sizeof(to)) < 0)
		return -KPR_R_DROP_REWRITE;
	if (bpf_l3_csum_replace(skb, KPR_IP_CSUM_OFF, from, to, sizeof(to)) < 0)
		return -KPR_R_DROP_REWRITE;
	if (bpf_skb_store_bytes(skb, addr_off, &to, sizeof(to), 0) < 0)
		return -KPR_R_DROP_REWRITE;
	return 0;
}

/*
 * Rewrites the 2-byte L4 port at port_off from `from` to `to` (network order), fixing the L4
 * checksum. Returns 0 or -KPR_R_DROP_REWRITE.
 */
static __always_inline int kpr_csum_set_port(struct __sk_buff *skb, const struct kpr_pkt4 *p,
					     __u32 port_off, __u16 from, __u16 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, p->csum_off, from, to, kpr_l4_csum_flags(p) | sizeof(to)) < 0)
		return -KPR_R_DROP_REWRITE;
	if (bpf_skb_store_bytes(skb, port_off, &to, sizeof(to), 0) < 0)
		return -KPR_R_DROP_REWRITE;
	return 0;
}

/*
 * Sets the IPv4 TTL to ttl (protocol unchanged), fixing the header checksum.
 * Returns 0 or -KPR_R_DROP_REWRITE.
 */
static __always_inline int kpr_csum_set_ttl(struct __sk_buff *skb, const struct kpr_pkt4 *p,
					    __u8 ttl)
{
	/* TTL and protocol share one 16-bit checksum word. */
	__u16 from = bpf_htons(((__u16)p->ttl << 8) | p->proto);
	__u16 to = bpf_htons(((__u16)ttl << 8) | p->proto);
	if (bpf_l3_csum_replace(skb, KPR_IP_CSUM_OFF, from, to, sizeof(to)) < 0)
		return -KPR_R_DROP_REWRITE;
	if (bpf_skb_store_bytes(skb, KPR_IP_TTL_OFF, &ttl, sizeof(ttl), 0) < 0)
		return -KPR_R_DROP_REWRITE;
	return 0;
}

#endif /* KPR_CSUM_H */
