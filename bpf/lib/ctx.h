/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The packet context the shared datapath code (parse, csum, nat, nodeport) works on, so that
 * the tc and the XDP programs run the same C (as Cilium's __ctx_buff). A program selects its
 * context by defining KPR_CTX_XDP before including any kpr header; the default is tc
 * (struct __sk_buff).
 *
 * tc writes through the skb helpers (they keep CHECKSUM_PARTIAL skbs right and never unclone
 * a packet that is only read); XDP owns its frame and writes in place, bounds-checked.
 */
#ifndef KPR_CTX_H
#define KPR_CTX_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Offsets past this are never written in place (Ethernet + IPv4 with options + L4 ports). */
#define KPR_CTX_MAX_WRITE_OFF 128

#ifdef KPR_CTX_XDP
typedef struct xdp_md kpr_ctx_t;
#define KPR_IS_XDP 1

static __always_inline void *ctx_data(const kpr_ctx_t *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *ctx_data_end(const kpr_ctx_t *ctx)
{
	return (void *)(long)ctx->data_end;
}

static __always_inline __u32 ctx_ifindex(const kpr_ctx_t *ctx)
{
	return ctx->ingress_ifindex;
}

static __always_inline __u32 ctx_len(const kpr_ctx_t *ctx)
{
	return (__u32)(ctx->data_end - ctx->data);
}

/* EtherType of the frame (network order), 0 when it has no full Ethernet header. */
static __always_inline __u16 ctx_protocol(const kpr_ctx_t *ctx)
{
	struct ethhdr *eth = ctx_data(ctx);
	if ((void *)(eth + 1) > ctx_data_end(ctx))
		return 0;
	return eth->h_proto;
}

/* XDP frames kpr serves are linear: a header outside the first buffer is not read. */
static __always_inline int ctx_load_bytes(kpr_ctx_t *ctx, __u32 off, void *to, __u32 len)
{
	return -1;
}

/*
 * Copies len bytes (a compile-time constant after inlining) to offset off of the frame.
 * Returns 0, or -1 when the range is outside the frame.
 */
static __always_inline int ctx_store_bytes(kpr_ctx_t *ctx, __u32 off, const void *from, __u32 len)
{
	if (off > KPR_CTX_MAX_WRITE_OFF)
		return -1;
	void *p = ctx_data(ctx) + off;
	if (p + len > ctx_data_end(ctx))
		return -1;
	__builtin_memcpy(p, from, len);
	return 0;
}

/*
 * Adds the ones' complement diff to the 16-bit checksum at off. A UDP checksum of 0 ("none")
 * stays 0 and a result of 0 is sent as 0xffff (mangled_0), like the skb helper's
 * BPF_F_MARK_MANGLED_0. XDP frames carry complete checksums, so pseudo-header and port diffs
 * are applied alike. Returns 0 or -1.
 */
static __always_inline int ctx_l4_csum_add(kpr_ctx_t *ctx, __u32 off, __u32 diff, int is_udp,
					   int pseudo)
{
	if (off > KPR_CTX_MAX_WRITE_OFF)
		return -1;
	__u16 *p = ctx_data(ctx) + off;
	if ((void *)(p + 1) > ctx_data_end(ctx))
		return -1;
	__u16 check = *p;
	if (is_udp && check == 0)
		return 0;
	__u32 s = (__u16)~check;
	s += diff;
	s += s < diff;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	check = (__u16)~s;
	if (is_udp && check == 0)
		check = 0xffff;
	*p = check;
	return 0;
}

/*
 * Sets the frame length to len (only shrinks here: every caller cuts). Returns 0 or -1.
 * Invalidates packet pointers.
 */
static __always_inline int ctx_set_len(kpr_ctx_t *ctx, __u32 len)
{
	int delta = (int)len - (int)ctx_len(ctx);
	if (delta == 0)
		return 0;
	return bpf_xdp_adjust_tail(ctx, delta) < 0 ? -1 : 0;
}

/* Adds len bytes in front of the frame (from the XDP headroom); 0 or -1. */
static __always_inline int ctx_push_head(kpr_ctx_t *ctx, __u32 len)
{
	return bpf_xdp_adjust_head(ctx, -(int)len) < 0 ? -1 : 0;
}

/* Queues the frame for transmission on ifindex; 0 or -1. */
static __always_inline int ctx_redirect(kpr_ctx_t *ctx, __u32 ifindex)
{
	return bpf_redirect(ifindex, 0) == XDP_REDIRECT ? 0 : -1;
}

#else /* tc */
typedef struct __sk_buff kpr_ctx_t;
#define KPR_IS_XDP 0

static __always_inline void *ctx_data(const kpr_ctx_t *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *ctx_data_end(const kpr_ctx_t *ctx)
{
	return (void *)(long)ctx->data_end;
}

static __always_inline __u32 ctx_ifindex(const kpr_ctx_t *ctx)
{
	return ctx->ifindex;
}

static __always_inline __u32 ctx_len(const kpr_ctx_t *ctx)
{
	return ctx->len;
}

static __always_inline __u16 ctx_protocol(const kpr_ctx_t *ctx)
{
	return (__u16)ctx->protocol;
}

/* Copies bytes from anywhere in the skb (also its paged part); 0 or negative. */
static __always_inline int ctx_load_bytes(kpr_ctx_t *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes(ctx, off, to, len);
}

static __always_inline int ctx_store_bytes(kpr_ctx_t *ctx, __u32 off, const void *from, __u32 len)
{
	return bpf_skb_store_bytes(ctx, off, from, len, 0) < 0 ? -1 : 0;
}

/*
 * Adds diff to the L4 checksum at off through bpf_l4_csum_replace: pseudo marks a change of
 * pseudo-header fields (right for CHECKSUM_PARTIAL skbs), UDP keeps a zero checksum zero.
 */
static __always_inline int ctx_l4_csum_add(kpr_ctx_t *ctx, __u32 off, __u32 diff, int is_udp,
					   int pseudo)
{
	__u64 flags = (is_udp ? BPF_F_MARK_MANGLED_0 : 0) | (pseudo ? BPF_F_PSEUDO_HDR : 0);
	return bpf_l4_csum_replace(ctx, off, 0, diff, flags) < 0 ? -1 : 0;
}

/*
 * Trims or grows the skb to len bytes (bpf_skb_change_tail, 4.9+: also linearizes and unclones
 * it, meant for control-message replies). Returns 0 or -1. Invalidates packet pointers.
 */
static __always_inline int ctx_set_len(kpr_ctx_t *ctx, __u32 len)
{
	return bpf_skb_change_tail(ctx, len, 0) < 0 ? -1 : 0;
}

/*
 * Adds len zero bytes in front of the frame (bpf_skb_change_head, 4.10+; the MAC header
 * moves with it, so a redirect sends the frame from its new start). Returns 0 or -1.
 */
static __always_inline int ctx_push_head(kpr_ctx_t *ctx, __u32 len)
{
	return bpf_skb_change_head(ctx, len, 0) < 0 ? -1 : 0;
}

static __always_inline int ctx_redirect(kpr_ctx_t *ctx, __u32 ifindex)
{
	return bpf_redirect(ifindex, 0) == TC_ACT_REDIRECT ? 0 : -1;
}
#endif

#endif /* KPR_CTX_H */
