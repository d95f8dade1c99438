/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking for the tc programs (kpr_ct4) and SNAT reply entries (kpr_snat4).
 * Lifetimes (consts.h) are enforced on lookup against last_seen_ns.
 */
#ifndef KPR_CT_H
#define KPR_CT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "maps.h"
#include "parse.h"

/* Idle lifetime in ns of a flow of proto with KPR_CT_F_* flags. */
static __always_inline __u64 ct4_lifetime_ns(__u8 proto, __u16 flags)
{
	if (proto != IPPROTO_TCP)
		return KPR_CT_LIFETIME_UDP_S * KPR_NSEC_PER_SEC;
	if (flags & KPR_CT_F_CLOSED)
		return KPR_CT_LIFETIME_TCP_CLOSED_S * KPR_NSEC_PER_SEC;
	return KPR_CT_LIFETIME_TCP_S * KPR_NSEC_PER_SEC;
}

static __always_inline int ct4_expired(__u64 last_seen_ns, __u8 proto, __u16 flags, __u64 now)
{
	return now > last_seen_ns && now - last_seen_ns > ct4_lifetime_ns(proto, flags);
}

/* Key of p's tuple (as seen) in direction dir. */
static __always_inline void ct4_key_of(struct kpr_ct4_key *k, const struct kpr_pkt4 *p, __u8 dir)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
}

/* The live kpr_ct4 entry for k, or NULL when absent or expired. */
static __always_inline struct kpr_ct4_entry *ct4_lookup(const struct kpr_ct4_key *k, __u64 now)
{
	struct kpr_ct4_entry *e = bpf_map_lookup_elem(&kpr_ct4, k);
	if (!e || ct4_expired(e->last_seen_ns, k->proto, e->flags, now))
		return NULL;
	return e;
}

/* Flags after a packet with tcp_flags: FIN/RST closes, a fresh SYN reopens a closed flow. */
static __always_inline __u16 ct4_next_flags(__u16 flags, __u8 tcp_flags)
{
	if (tcp_flags & (KPR_TCP_FIN | KPR_TCP_RST))
		return flags | KPR_CT_F_CLOSED;
	if ((tcp_flags & (KPR_TCP_SYN | KPR_TCP_ACK)) == KPR_TCP_SYN)
		return flags & ~KPR_CT_F_CLOSED;
	return flags;
}

/*
 * Whether last_seen_ns is due for a refresh at now. An entry is rewritten at most once per
 * KPR_CT_REFRESH_S per direction instead of on every packet (the lifetimes are 10 s and more):
 * no store to a shared cache line per packet, and the work tied to a refresh (checking the
 * reverse entry) runs once a second per flow. A last_seen ahead of now (written by another CPU
 * a moment later) is not due.
 */
static __always_inline int ct4_refresh_due(__u64 last_seen_ns, __u64 now)
{
	return now > last_seen_ns && now - last_seen_ns >= KPR_CT_REFRESH_S * KPR_NSEC_PER_SEC;
}

/* Whether p may change a CT entry's flags (ct4_next_flags): FIN, RST or SYN set. */
static __always_inline int ct4_flags_may_change(const struct kpr_pkt4 *p)
{
	return p->tcp_flags & (KPR_TCP_FIN | KPR_TCP_RST | KPR_TCP_SYN);
}

/*
 * Accounts one packet of p on entry e. Returns 1 when last_seen_ns was refreshed (see
 * ct4_refresh_due), else 0. packets/bytes are plain adds, not atomic: a flow's packets are
 * handled by one CPU at a time in practice, and a lost increment only makes a counter low.
 */
static __always_inline int ct4_touch(struct kpr_ct4_entry *e, const struct kpr_pkt4 *p, __u64 now)
{
	e->packets += 1;
	e->bytes += p->tot_len;
	if (ct4_flags_may_change(p)) {
		__u16 flags = ct4_next_flags(e->flags, p->tcp_flags);
		if (flags != e->flags)
			e->flags = flags;
	}
	if (!ct4_refresh_due(e->last_seen_ns, now))
		return 0;
	e->last_seen_ns = now;
	return 1;
}

/*
 * Refreshes the kpr_ct4 entry k (if any) for a packet of the other direction. Callers only
 * call it when that direction's own entry was refreshed or p may change flags, so a flow
 * costs this lookup about once a second per direction.
 */
static __always_inline void ct4_touch_key(const struct kpr_ct4_key *k, const struct kpr_pkt4 *p,
					  __u64 now)
{
	struct kpr_ct4_entry *e = bpf_map_lookup_elem(&kpr_ct4, k);
	if (e) {
		if (ct4_refresh_due(e->last_seen_ns, now))
			e->last_seen_ns = now;
		__u16 flags = ct4_next_flags(e->flags, p->tcp_flags);
		if (flags != e->flags)
			e->flags = flags;
	}
}

/* The live kpr_snat4 reply entry for k, or NULL. */
static __always_inline struct kpr_snat4_entry *snat4_lookup(const struct kpr_ct4_key *k, __u64 now)
{
	struct kpr_snat4_entry *e = bpf_map_lookup_elem(&kpr_snat4, k);
	if (!e || ct4_expired(e->last_seen_ns, k->proto, e->flags, now))
		return NULL;
	return e;
}

#endif /* KPR_CT_H */
