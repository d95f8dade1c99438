/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMPv4 destination unreachable / port unreachable (type 3, code 3) for a UDP datagram to a
 * frontend without backends, built in place from the datagram and sent back out of the
 * interface it came in on (kube-proxy's REJECT does the same through the kernel's icmp_send).
 *
 * The reply quotes the offending IPv4 header (with its options) and the first 8 bytes of its
 * payload, the UDP header: RFC 792's quote, which is what a receiving stack needs to find the
 * socket (Linux's icmp_unreach reads no more). Linux's own icmp_send quotes as much as fits in
 * 576 bytes (RFC 1812 4.3.2.3); kpr keeps the RFC 792 bound so that the reply has a fixed
 * shape: at most 14 + 20 + 8 + 60 + 8 = 110 bytes, never larger than 28 bytes more than the
 * datagram (a UDP header and no payload is 42 bytes on the wire: amplification below 2x).
 *
 * Layout change, in place: [eth][ip H][udp 8][payload] is cut to [eth][ip H][udp 8], then 28
 * bytes are added in front, so that the old Ethernet header and 14 of the 28 new bytes hold the
 * new Ethernet + IPv4 + ICMP headers and the quote (old IP header + UDP header) stays where it
 * is. Unlike the kernel, kpr does not rate-limit these errors (no state per peer).
 *
 * Checksums are computed over the bytes as they are, so the reply is right for every frame XDP
 * sees and for every skb that is not CHECKSUM_PARTIAL. A CHECKSUM_PARTIAL skb (a datagram from
 * a sender on this host, through a veth, or NEEDS_CSUM from a virtio host) quotes its unfinished
 * UDP checksum (the pseudo-header seed, as the kernel's own icmp_send would) and keeps that
 * state: a veth hands it on as such and its receiver trusts it, but a device that finished the
 * checksum on the way back would write into the quote and spoil the ICMP checksum. tc can
 * neither see nor clear ip_summed; it takes a sender on the same host and, on the way back, a
 * device that finishes checksums (the e2e test's veths hand the state on).
 */
#ifndef KPR_ICMP_H
#define KPR_ICMP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "csum.h"
#include "ctx.h"
#include "parse.h"

/* TTL of the ICMP errors kpr sends (a fresh datagram of this node, like the kernel's). */
#ifndef KPR_ICMP_TTL
#define KPR_ICMP_TTL 64
#endif

#define KPR_ICMP_DEST_UNREACH 3
#define KPR_ICMP_PORT_UNREACH 3
/* IPTOS_PREC_INTERNETCONTROL: the precedence Linux gives its ICMP errors. */
#define KPR_ICMP_TOS 0xc0

/* New IPv4 header + ICMP header put in front of the quote. */
#define KPR_ICMP_PUSH 28
/* Offset of the quoted IPv4 header in the reply. */
#define KPR_ICMP_QUOTE_OFF (KPR_L3_OFF + KPR_ICMP_PUSH)
/* Longest quote: an IPv4 header with 40 bytes of options + 8 bytes of its payload. */
#define KPR_ICMP_QUOTE_MAX (60 + 8)

/* ICMP header (not <linux/icmp.h>: it needs 32-bit glibc stubs under -target bpf). */
struct kpr_icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 unused;
};

/*
 * Ethernet + IPv4 + ICMP headers of the reply, written in one store from dst on. The leading
 * pad puts the IPv4 header on a 4-byte boundary: the verifier rejects misaligned stack reads,
 * and the checksums read it in 32-bit words.
 */
struct kpr_icmp_reply {
	__u16 pad;
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
	__u16 proto;
	struct iphdr ip;
	struct kpr_icmphdr icmp;
};
_Static_assert(sizeof(struct kpr_icmp_reply) == 2 + KPR_ICMP_QUOTE_OFF, "kpr_icmp_reply size");

/*
 * Whether an ICMP error may be sent about a datagram from saddr to Ethernet destination dmac0
 * (its first byte): not about link-layer broadcast/multicast frames, nor to a source that does
 * not name one host (0/8, 127/8, 224/4 multicast, 240/4 and the broadcast address) — RFC 1812
 * 4.3.2.7, as the kernel's icmp_send checks.
 */
static __always_inline int icmp4_may_answer(__u32 saddr, __u8 dmac0)
{
	__u8 first = (__u8)(bpf_ntohl(saddr) >> 24);
	if (dmac0 & 1)
		return 0;
	return first != 0 && first != 127 && first < 224;
}

/*
 * Turns p, a UDP datagram to a frontend without backends, into an ICMP port unreachable from
 * the frontend back to its source and sends it out of the ingress device (tc: redirect; XDP:
 * the caller returns XDP_TX for KPR_R_REJECT_ICMP). Returns KPR_R_REJECT_ICMP, or a negative
 * kpr_reason: -KPR_R_DROP_NO_BACKEND when no error may be sent (the datagram is dropped
 * untouched), -KPR_R_DROP_REWRITE / -KPR_R_DROP_FIB once the frame was already reshaped.
 */
static __always_inline int lb4_reject_icmp(kpr_ctx_t *ctx, const struct kpr_pkt4 *p)
{
	struct kpr_icmp_reply r = {};
	__u32 hlen = p->l4_off - KPR_L3_OFF;
	__u32 qlen = hlen + 8;

	void *data = ctx_data(ctx);
	void *data_end = ctx_data_end(ctx);
	if (data + ETH_HLEN > data_end)
		return -KPR_R_DROP_MALFORMED;
	/* the Ethernet header is always in the linear part: read in place (tc too: no write) */
	__builtin_memcpy(r.src, data, ETH_ALEN);
	__builtin_memcpy(r.dst, data + ETH_ALEN, ETH_ALEN);
	if (!icmp4_may_answer(p->saddr, r.src[0]))
		return -KPR_R_DROP_NO_BACKEND;
	if (hlen < sizeof(struct iphdr) || qlen > KPR_ICMP_QUOTE_MAX)
		return -KPR_R_DROP_MALFORMED;

	/* cut the payload, then make room for the new IPv4 + ICMP headers in front */
	if (ctx_set_len(ctx, KPR_L3_OFF + qlen) < 0 || ctx_push_head(ctx, KPR_ICMP_PUSH) < 0)
		return -KPR_R_DROP_REWRITE;

	/* The ICMP checksum covers the quote, summed as it is in the frame. Bounded loop over
	 * 32-bit words (aligned under the verifier's NET_IP_ALIGN model: 2 + 42 + 4i). */
	__u32 sum = 0;
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	for (int i = 0; i < KPR_ICMP_QUOTE_MAX / 4; i++) {
		if ((__u32)i * 4 >= qlen)
			break;
		__u32 *w = data + KPR_ICMP_QUOTE_OFF + i * 4;
		if ((void *)(w + 1) > data_end)
			return -KPR_R_DROP_REWRITE;
		sum = kpr_csum_add(sum, *w);
	}

	r.proto = bpf_htons(ETH_P_IP);
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tos = KPR_ICMP_TOS;
	r.ip.tot_len = bpf_htons((__u16)(sizeof(struct iphdr) + sizeof(struct kpr_icmphdr) + qlen));
	/* DF with id 0: an atomic datagram (RFC 6864) that never needs fragments (<= 96 bytes) */
	r.ip.frag_off = bpf_htons(0x4000);
	r.ip.ttl = KPR_ICMP_TTL;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = p->daddr;
	r.ip.daddr = p->saddr;
	__u32 ipsum = 0;
	const __u32 *iw = (const __u32 *)&r.ip;
#pragma unroll
	for (int i = 0; i < 5; i++)
		ipsum = kpr_csum_add(ipsum, iw[i]);
	r.ip.check = (__u16)~kpr_csum_fold(ipsum);

	r.icmp.type = KPR_ICMP_DEST_UNREACH;
	r.icmp.code = KPR_ICMP_PORT_UNREACH;
	const __u16 *tw = (const __u16 *)&r.icmp;
	sum = kpr_csum_add(sum, tw[0]);
	r.icmp.checksum = (__u16)~kpr_csum_fold(sum);

	if (ctx_store_bytes(ctx, 0, r.dst, KPR_ICMP_QUOTE_OFF) < 0)
		return -KPR_R_DROP_REWRITE;
#ifndef KPR_CTX_XDP
	if (ctx_redirect(ctx, ctx_ifindex(ctx)) < 0)
		return -KPR_R_DROP_FIB;
#endif
	return KPR_R_REJECT_ICMP;
}

#endif /* KPR_ICMP_H */
