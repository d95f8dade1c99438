/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing for the tc and XDP programs: Ethernet + IPv4 + TCP/UDP into a small summary.
 * Headers are read in place (direct packet access, bounds-checked against data_end) when they
 * are in the linear part of the packet, which is the common case; otherwise tc copies them with
 * bpf_skb_load_bytes. Reading in place costs nothing, a helper call ~30 ns on this class of
 * machine (every helper call pays the call/return mitigations). The tc program never writes
 * packet data directly: that would make the verifier unclone every cloned skb in a prologue,
 * also for the packets it passes untouched (ctx.h).
 */
#ifndef KPR_PARSE_H
#define KPR_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "ctx.h"

#define KPR_IP_MF     0x2000
#define KPR_IP_OFFSET 0x1fff

#define KPR_TCP_FIN 0x01
#define KPR_TCP_SYN 0x02
#define KPR_TCP_RST 0x04
#define KPR_TCP_PSH 0x08
#define KPR_TCP_ACK 0x10

/* Offsets inside the packet (Ethernet devices: the L3 header follows a 14-byte header). */
#define KPR_L3_OFF        ETH_HLEN
#define KPR_IP_CSUM_OFF   (KPR_L3_OFF + offsetof(struct iphdr, check))
#define KPR_IP_TTL_OFF    (KPR_L3_OFF + offsetof(struct iphdr, ttl))
#define KPR_IP_SADDR_OFF  (KPR_L3_OFF + offsetof(struct iphdr, saddr))
#define KPR_IP_DADDR_OFF  (KPR_L3_OFF + offsetof(struct iphdr, daddr))

/* What the programs need to know about an IPv4 TCP/UDP packet. */
struct kpr_pkt4 {
	__u32 saddr; /* network order */
	__u32 daddr;
	__u16 sport; /* network order */
	__u16 dport;
	__u32 l4_off;      /* offset of the TCP/UDP header */
	__u32 csum_off;    /* offset of the L4 checksum */
	__u32 seq;         /* TCP only, network order */
	__u32 ack_seq;
	__u16 tot_len;     /* IPv4 total length, host order */
	__u16 payload_len; /* L4 payload bytes, host order */
	__u8 proto;
	__u8 tcp_flags;    /* KPR_TCP_* */
	__u8 ttl;
	__u8 udp_nocsum;   /* UDP with checksum 0 */
	__u16 ip_check;    /* IPv4 header checksum as in the packet (kept current by csum.h) */
	__u16 pad;
};

/*
 * Parses ctx into p. Returns 0 for an IPv4 TCP/UDP packet, or a negative kpr_reason:
 * -KPR_R_PASS_NOT_L4 (other protocols), -KPR_R_PASS_FRAGMENT, -KPR_R_DROP_MALFORMED.
 */
static __always_inline int kpr_parse4(kpr_ctx_t *ctx, struct kpr_pkt4 *p)
{
	struct iphdr ip;

	if (ctx_protocol(ctx) != bpf_htons(ETH_P_IP))
		return -KPR_R_PASS_NOT_L4;
	void *data = ctx_data(ctx);
	void *data_end = ctx_data_end(ctx);
	if (data + KPR_L3_OFF + sizeof(ip) <= data_end)
		__builtin_memcpy(&ip, data + KPR_L3_OFF, sizeof(ip));
	else if (ctx_load_bytes(ctx, KPR_L3_OFF, &ip, sizeof(ip)) < 0)
		return -KPR_R_DROP_MALFORMED;
	if (ip.version != 4 || ip.ihl < 5)
		return -KPR_R_DROP_MALFORMED;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return -KPR_R_PASS_NOT_L4;
	/* Fail open: the stack reassembles fragments; without ports there is nothing to map. */
	if (ip.frag_off & bpf_htons(KPR_IP_MF | KPR_IP_OFFSET))
		return -KPR_R_PASS_FRAGMENT;

	__u32 ihl_len = (__u32)ip.ihl * 4;
	__u16 tot_len = bpf_ntohs(ip.tot_len);
	if (tot_len < ihl_len || (__u32)tot_len + KPR_L3_OFF > ctx_len(ctx))
		return -KPR_R_DROP_MALFORMED;

	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->proto = ip.protocol;
	p->ttl = ip.ttl;
	p->ip_check = ip.check;
	p->tot_len = tot_len;
	__u32 l4_off = KPR_L3_OFF + ihl_len;
	p->l4_off = l4_off;
	p->tcp_flags = 0;
	p->seq = 0;
	p->ack_seq = 0;
	p->udp_nocsum = 0;

	if (ip.protocol == IPPROTO_TCP) {
		struct tcphdr th;
		if (data + l4_off + sizeof(th) <= data_end)
			__builtin_memcpy(&th, data + l4_off, sizeof(th));
		else if (ctx_load_bytes(ctx, l4_off, &th, sizeof(th)) < 0)
			return -KPR_R_DROP_MALFORMED;
		__u32 doff = (__u32)th.doff * 4;
		if (doff < sizeof(th) || ihl_len + doff > tot_len)
			return -KPR_R_DROP_MALFORMED;
		p->sport = th.source;
		p->dport = th.dest;
		p->seq = th.seq;
		p->ack_seq = th.ack_seq;
		/* byte 13 of the TCP header holds CWR..FIN */
		p->tcp_flags = ((__u8 *)&th)[13];
		p->csum_off = l4_off + offsetof(struct tcphdr, check);
		p->payload_len = tot_len - ihl_len - doff;
	} else {
		struct udphdr uh;
		if (data + l4_off + sizeof(uh) <= data_end)
			__builtin_memcpy(&uh, data + l4_off, sizeof(uh));
		else if (ctx_load_bytes(ctx, l4_off, &uh, sizeof(uh)) < 0)
			return -KPR_R_DROP_MALFORMED;
		if (ihl_len + sizeof(uh) > tot_len)
			return -KPR_R_DROP_MALFORMED;
		p->sport = uh.source;
		p->dport = uh.dest;
		p->udp_nocsum = uh.check == 0;
		p->csum_off = l4_off + offsetof(struct udphdr, check);
		p->payload_len = tot_len - ihl_len - sizeof(uh);
	}
	return 0;
}

#endif /* KPR_PARSE_H */
