/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Incremental checksum updates through ctx.h: on tc the kernel helpers, which also handle
 * CHECKSUM_PARTIAL skbs (veth senders) correctly when BPF_F_PSEUDO_HDR marks pseudo-header
 * fields; on XDP in place. A zero UDP checksum ("none") stays zero.
 */
#ifndef KPR_CSUM_H
#define KPR_CSUM_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "ctx.h"
#include "parse.h"

/* Ones' complement 32-bit add with end-around carry (RFC 1071). */
static __always_inline __u32 kpr_csum_add(__u32 a, __u32 b)
{
	a += b;
	return a + (a < b);
}

/* Folds a 32-bit ones' complement sum to 16 bits. */
static __always_inline __u16 kpr_csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* The checksum diff of replacing the 32-bit word `from` by `to` (any byte order, as in memory). */
static __always_inline __u32 kpr_csum_diff4(__u32 diff, __u32 from, __u32 to)
{
	return kpr_csum_add(kpr_csum_add(diff, ~from), to);
}

/* checksum field value `check` updated by diff (RFC 1624 eqn. 3, like the kernel's). */
static __always_inline __u16 kpr_csum_apply(__u16 check, __u32 diff)
{
	return (__u16)~kpr_csum_fold(kpr_csum_add((__u16)~check, diff));
}

/*
 * Sets the IPv4 addresses and L4 ports to saddr:sport -> daddr:dport (network order), fixing
 * the IPv4 header checksum and the L4 checksum, and updates p. Unchanged fields cost nothing.
 * The helper calls are kept to the minimum (each costs ~30 ns here): one bpf_l4_csum_replace
 * with the precomputed diff of all address changes (BPF_F_PSEUDO_HDR, so CHECKSUM_PARTIAL skbs
 * are right), one for the port changes (not pseudo-header: with CHECKSUM_PARTIAL the device
 * sums them later), and the IPv4 checksum computed here and written with the addresses and
 * ports in one bpf_skb_store_bytes (bytes 10..19 of the IPv4 header are check, saddr, daddr;
 * without IP options the ports follow), two stores with options. Returns 0 or
 * -KPR_R_DROP_REWRITE.
 */
static __always_inline int kpr_csum_set_tuple(kpr_ctx_t *ctx, struct kpr_pkt4 *p,
					      __u32 saddr, __u16 sport, __u32 daddr, __u16 dport)
{
	int is_udp = p->proto == IPPROTO_UDP;
	int addrs = saddr != p->saddr || daddr != p->daddr;
	int ports = sport != p->sport || dport != p->dport;
	/* IPv4 check, saddr, daddr, then (no IP options) the L4 ports: 2-byte aligned words */
	__u16 hdr[7];
	__u16 check = p->ip_check;

	if (addrs) {
		__u32 diff = kpr_csum_diff4(kpr_csum_diff4(0, p->saddr, saddr), p->daddr, daddr);
		if (ctx_l4_csum_add(ctx, p->csum_off, diff, is_udp, 1) < 0)
			return -KPR_R_DROP_REWRITE;
		check = kpr_csum_apply(check, diff);
	}
	if (ports) {
		__u16 old[2] = { p->sport, p->dport };
		__u16 new[2] = { sport, dport };
		__u32 from, to;
		__builtin_memcpy(&from, old, sizeof(from));
		__builtin_memcpy(&to, new, sizeof(to));
		if (ctx_l4_csum_add(ctx, p->csum_off, kpr_csum_diff4(0, from, to), is_udp, 0) < 0)
			return -KPR_R_DROP_REWRITE;
	}
	hdr[0] = check;
	__builtin_memcpy(&hdr[1], &saddr, sizeof(saddr));
	__builtin_memcpy(&hdr[3], &daddr, sizeof(daddr));
	hdr[5] = sport;
	hdr[6] = dport;
	if (addrs && ports && p->l4_off == KPR_L3_OFF + sizeof(struct iphdr)) {
		/* the ports follow the addresses: one store for everything */
		if (ctx_store_bytes(ctx, KPR_IP_CSUM_OFF, hdr, sizeof(hdr)) < 0)
			return -KPR_R_DROP_REWRITE;
	} else {
		if (addrs && ctx_store_bytes(ctx, KPR_IP_CSUM_OFF, hdr, 10) < 0)
			return -KPR_R_DROP_REWRITE;
		if (ports && ctx_store_bytes(ctx, p->l4_off, &hdr[5], 4) < 0)
			return -KPR_R_DROP_REWRITE;
	}
	p->ip_check = check;
	p->saddr = saddr;
	p->daddr = daddr;
	p->sport = sport;
	p->dport = dport;
	return 0;
}

/*
 * Sets the IPv4 TTL to ttl (protocol unchanged), fixing the header checksum: TTL, protocol and
 * checksum (bytes 8..11 of the header) are written in one store. Returns 0 or
 * -KPR_R_DROP_REWRITE.
 */
static __always_inline int kpr_csum_set_ttl(kpr_ctx_t *ctx, struct kpr_pkt4 *p, __u8 ttl)
{
	/* TTL and protocol share one 16-bit checksum word. */
	__u8 b[4] = { ttl, p->proto, 0, 0 };
	__u16 from = 0, to = 0;
	__u8 old[2] = { p->ttl, p->proto };
	__builtin_memcpy(&from, old, sizeof(from));
	__builtin_memcpy(&to, b, sizeof(to));
	__u16 check = kpr_csum_apply(p->ip_check, kpr_csum_add((__u16)~from, to));
	__builtin_memcpy(&b[2], &check, sizeof(check));
	if (ctx_store_bytes(ctx, KPR_IP_TTL_OFF, b, sizeof(b)) < 0)
		return -KPR_R_DROP_REWRITE;
	p->ip_check = check;
	p->ttl = ttl;
	return 0;
}

#endif /* KPR_CSUM_H */
