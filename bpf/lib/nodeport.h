/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * North-south load balancing of IPv4 TCP/UDP, shared by the tc and XDP programs through the
 * packet context of ctx.h (the programs differ only in their verdicts and in what XDP hands to
 * tc). Ingress, in order:
 *  (a) replies of SNATed flows (kpr_snat4): restore client/frontend, FIB lookup, redirect;
 *  (b) tracked flows (kpr_ct4): same backend as before (re-selected if it was removed);
 *  (c) new flows to NodePort/ExternalIP/LoadBalancer/HostPort frontends: source ranges,
 *      selection, CT. Node-local backend: DNAT only, the stack routes to the pod and the client
 *      address is kept. Remote backend: DNAT + SNAT to the egress device's address, redirect.
 * Egress (tc only): replies of node-local backends get the frontend back as source.
 *
 * What XDP cannot finish it passes to tc with the decision kept in the maps
 * (KPR_R_XDP_PASS_TC): a remote backend without a neighbour entry (the CT entry names the
 * backend; tc allocates the SNAT port and lets the kernel resolve the neighbour), a reply
 * toward a client without a neighbour entry, and the RST of a frontend without backends.
 */
#ifndef KPR_NODEPORT_H
#define KPR_NODEPORT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "consts.h"
#include "csum.h"
#include "ct.h"
#include "ctx.h"
#include "icmp.h"
#include "lb.h"
#include "maglev.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"

/*
 * NodePort on 0.0.0.0: when no exact frontend matched, a packet to the ingress device's own
 * address on a port of the NodePort range uses the wildcard frontend. fe is switched to the
 * wildcard key on success. Returns the master entry or NULL.
 */
static __always_inline struct kpr_lb4_service *
lb4_lookup_wildcard(kpr_ctx_t *ctx, const struct kpr_pkt4 *p, struct kpr_lb4_key *fe)
{
	const struct kpr_config *cfg = kpr_get_config();
	if (!cfg || !(cfg->flags & KPR_CFG_F_NODEPORT))
		return NULL;
	__u16 port = bpf_ntohs(p->dport);
	if (port < cfg->nodeport_min || port > cfg->nodeport_max)
		return NULL;
	__u32 ifindex = ctx_ifindex(ctx);
	struct kpr_dev4 *dev = bpf_map_lookup_elem(&kpr_dev4, &ifindex);
	if (!dev || dev->address != p->daddr)
		return NULL;
	struct kpr_lb4_key wk = *fe;
	wk.address = 0;
	struct kpr_lb4_service *svc = bpf_map_lookup_elem(&kpr_lb4_svc, &wk);
	if (!svc || !(svc->flags & KPR_SVC_F_NODEPORT))
		return NULL;
	*fe = wk;
	return svc;
}

/*
 * Refuses p, a packet to a frontend without backends, as kube-proxy's REJECT does. A UDP
 * datagram gets an ICMP port unreachable (icmp.h; tc and XDP alike). A payload-less TCP
 * segment is turned into a RST from the frontend and sent back out of the ingress device.
 * Checksums are updated incrementally (swapping addresses and ports leaves them unchanged), so
 * this holds for every skb checksum state. Other TCP segments are dropped. XDP leaves the RST
 * to tc. Returns KPR_R_REJECT_ICMP, KPR_R_REJECT_RST (XDP: KPR_R_XDP_PASS_TC) or a negative
 * kpr_reason.
 */
static __always_inline int lb4_reject(kpr_ctx_t *ctx, struct kpr_pkt4 *p)
{
	if (p->proto == IPPROTO_UDP)
		return lb4_reject_icmp(ctx, p);
	if (p->proto != IPPROTO_TCP || p->payload_len != 0 || (p->tcp_flags & KPR_TCP_RST))
		return -KPR_R_DROP_NO_BACKEND;
#ifdef KPR_CTX_XDP
	return KPR_R_XDP_PASS_TC;
#else

	__u32 seq, ack;
	__u16 old_word, new_word;
	__u8 flags;
	/* RFC 793 reset generation: take the peer's ACK as our sequence, else ACK its segment. */
	if (p->tcp_flags & KPR_TCP_ACK) {
		seq = p->ack_seq;
		ack = 0;
		flags = KPR_TCP_RST;
	} else {
		__u32 len = (p->tcp_flags & KPR_TCP_SYN ? 1 : 0) + (p->tcp_flags & KPR_TCP_FIN ? 1 : 0);
		seq = 0;
		ack = bpf_htonl(bpf_ntohl(p->seq) + len);
		flags = KPR_TCP_RST | KPR_TCP_ACK;
	}
	/* data offset + flags: bytes 12..13 of the TCP header */
	if (bpf_skb_load_bytes(ctx, p->l4_off + 12, &old_word, sizeof(old_word)) < 0)
		return -KPR_R_DROP_MALFORMED;
	new_word = old_word;
	((__u8 *)&new_word)[1] = flags;

	__u8 macs[12];
	if (bpf_skb_load_bytes(ctx, 0, macs, sizeof(macs)) < 0)
		return -KPR_R_DROP_MALFORMED;
	__u8 swapped[12];
	__builtin_memcpy(swapped, macs + 6, 6);
	__builtin_memcpy(swapped + 6, macs, 6);
	if (bpf_skb_store_bytes(ctx, 0, swapped, sizeof(swapped), 0) < 0)
		return -KPR_R_DROP_REWRITE;

	__u32 addrs[2] = { p->daddr, p->saddr };
	if (bpf_skb_store_bytes(ctx, KPR_IP_SADDR_OFF, addrs, sizeof(addrs), 0) < 0)
		return -KPR_R_DROP_REWRITE;
	__u16 ports[2] = { p->dport, p->sport };
	if (bpf_skb_store_bytes(ctx, p->l4_off, ports, sizeof(ports), 0) < 0)
		return -KPR_R_DROP_REWRITE;

	if (bpf_l4_csum_replace(ctx, p->csum_off, p->seq, seq, sizeof(seq)) < 0 ||
	    bpf_skb_store_bytes(ctx, p->l4_off + 4, &seq, sizeof(seq), 0) < 0)
		return -KPR_R_DROP_REWRITE;
	if (bpf_l4_csum_replace(ctx, p->csum_off, p->ack_seq, ack, sizeof(ack)) < 0 ||
	    bpf_skb_store_bytes(ctx, p->l4_off + 8, &ack, sizeof(ack), 0) < 0)
		return -KPR_R_DROP_REWRITE;
	if (bpf_l4_csum_replace(ctx, p->csum_off, old_word, new_word, sizeof(new_word)) < 0 ||
	    bpf_skb_store_bytes(ctx, p->l4_off + 12, &new_word, sizeof(new_word), 0) < 0)
		return -KPR_R_DROP_REWRITE;

	int ret = kpr_csum_set_ttl(ctx, p, KPR_RST_TTL);
	if (ret < 0)
		return ret;
	if (ctx_redirect(ctx, ctx_ifindex(ctx)) < 0)
		return -KPR_R_DROP_FIB;
	return KPR_R_REJECT_RST;
#endif
}

/* The SNAT source port range, host order (kpr_config, else the consts.h defaults). */
static __always_inline void snat4_port_range(__u32 *min, __u32 *max)
{
	const struct kpr_config *cfg = kpr_get_config();
	*min = KPR_SNAT_PORT_MIN_DEFAULT;
	*max = KPR_SNAT_PORT_MAX_DEFAULT;
	if (cfg && cfg->snat_port_min && cfg->snat_port_max >= cfg->snat_port_min) {
		*min = cfg->snat_port_min;
		*max = cfg->snat_port_max;
	}
}

/*
 * Allocates a SNAT port on nat_addr for p's flow to be: inserts the kpr_snat4 reply entry
 * (be -> nat_addr:port) that restores p's client and frontend. Collisions are checked by the
 * insert itself (BPF_NOEXIST); an expired entry is taken over.
 * Returns 0 with *port set (network order), or a negative kpr_reason.
 */
static __always_inline int snat4_alloc(const struct kpr_pkt4 *p, const struct kpr_lb4_backend *be,
				       __u32 nat_addr, __u16 rev_nat_id, __u64 now, __u16 *port)
{
	__u32 min, max;
	snat4_port_range(&min, &max);
	__u32 range = max - min + 1;

	struct kpr_ct4_key rk = {};
	rk.saddr = be->address;
	rk.daddr = nat_addr;
	rk.sport = be->port;
	rk.proto = p->proto;
	rk.dir = KPR_CT_REPLY;
	struct kpr_snat4_entry v = {};
	v.last_seen_ns = now;
	v.client_addr = p->saddr;
	v.client_port = p->sport;
	v.fe_addr = p->daddr;
	v.fe_port = p->dport;
	v.rev_nat_id = rev_nat_id;

	for (int i = 0; i < KPR_SNAT_PORT_TRIES; i++) {
		rk.dport = bpf_htons((__u16)(min + bpf_get_prandom_u32() % range));
		if (bpf_map_update_elem(&kpr_snat4, &rk, &v, BPF_NOEXIST) == 0) {
			*port = rk.dport;
			return 0;
		}
		struct kpr_snat4_entry *old = bpf_map_lookup_elem(&kpr_snat4, &rk);
		if (old && ct4_expired(old->last_seen_ns, p->proto, old->flags, now) &&
		    bpf_map_update_elem(&kpr_snat4, &rk, &v, BPF_ANY) == 0) {
			*port = rk.dport;
			return 0;
		}
	}
	return -KPR_R_DROP_SNAT_PORTS;
}

/*
 * Sends p's flow (client -> frontend, tracked by ct) to backend be: DNAT for a node-local
 * backend; DNAT + SNAT + redirect for a remote one (KPR_CT_F_SNAT). For a new flow ct is the
 * caller's entry to be inserted (SNAT fills nat_addr/nat_port). Makes sure the reverse entry
 * exists (kpr_ct4 REPLY for local, kpr_snat4 for SNAT) on a new flow and, for a tracked one,
 * when refresh says ct's last_seen was just refreshed (about once a second per flow): the check
 * only repairs an entry lost to LRU pressure, which does not need a lookup on every packet.
 * Returns a kpr_reason.
 */
static __always_inline int lb4_forward(kpr_ctx_t *ctx, struct kpr_pkt4 *p,
				       struct kpr_ct4_entry *ct, const struct kpr_lb4_backend *be,
				       int is_new, int refresh, __u64 now)
{
	__u32 bid = ct->backend_id;
	__u16 rev_nat_id = ct->rev_nat_id;
	__u32 be_addr = be->address;
	__u16 be_port = be->port;
	__u64 bytes = p->tot_len;
	int ret;

	if (!(ct->flags & KPR_CT_F_SNAT)) {
		struct kpr_ct4_key rk = {};
		rk.saddr = be_addr;
		rk.daddr = p->saddr;
		rk.sport = be_port;
		rk.dport = p->sport;
		rk.proto = p->proto;
		rk.dir = KPR_CT_REPLY;
		/* a new flow writes its reverse entry without looking first */
		struct kpr_ct4_entry *re = is_new || !refresh ? NULL : bpf_map_lookup_elem(&kpr_ct4, &rk);
		if ((is_new || refresh) &&
		    (!re || re->backend_id != bid || re->nat_addr != p->daddr ||
		     re->nat_port != p->dport)) {
			struct kpr_ct4_entry rv = {};
			rv.last_seen_ns = now;
			rv.backend_id = bid;
			rv.nat_addr = p->daddr;
			rv.nat_port = p->dport;
			rv.rev_nat_id = rev_nat_id;
			if (bpf_map_update_elem(&kpr_ct4, &rk, &rv, BPF_ANY) < 0)
				return -KPR_R_DROP_MAP_UPDATE;
		} else if (re && ct4_refresh_due(re->last_seen_ns, now)) {
			/* the flow lives while the client speaks: its replies must still be
			 * reverse-NATed when the backend answers after a long pause */
			re->last_seen_ns = now;
		}
		ret = nat4_set_dst(ctx, p, be_addr, be_port);
		if (ret < 0)
			return ret;
		kpr_stats_add(&kpr_svc_stats, rev_nat_id, bytes);
		kpr_stats_add(&kpr_be_stats, bid, bytes);
		return is_new ? KPR_R_LB_NEW : KPR_R_LB_CT;
	}

	struct bpf_fib_lookup fib;
	int fib_rc = nat4_fib_lookup(ctx, p, p->saddr, be_addr, &fib);
	if (fib_rc < 0)
		return fib_rc;
	/* XDP cannot resolve a neighbour: tc finishes the flow on the backend chosen here (a new
	 * flow's CT entry is inserted by the caller with no SNAT port yet; tc allocates it). */
	if (KPR_IS_XDP && fib_rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return KPR_R_XDP_PASS_TC;
	__u32 oif = fib.ifindex;
	struct kpr_dev4 *dev = bpf_map_lookup_elem(&kpr_dev4, &oif);
	/* a device without IPv4 (user space writes 0.0.0.0) has no address to SNAT to */
	if (!dev || !dev->address)
		return -KPR_R_DROP_NO_DEVICE;
	__u32 nat_addr = dev->address;
	__u16 nat_port = ct->nat_port;

	if (is_new || ct->nat_addr != nat_addr || !nat_port) {
		/* new flow, or the route to the backend moved to another device */
		ret = snat4_alloc(p, be, nat_addr, rev_nat_id, now, &nat_port);
		if (ret < 0)
			return ret;
		ct->nat_addr = nat_addr;
		ct->nat_port = nat_port;
	} else if (refresh) {
		struct kpr_ct4_key rk = {};
		rk.saddr = be_addr;
		rk.daddr = nat_addr;
		rk.sport = be_port;
		rk.dport = nat_port;
		rk.proto = p->proto;
		rk.dir = KPR_CT_REPLY;
		struct kpr_snat4_entry *se = bpf_map_lookup_elem(&kpr_snat4, &rk);
		if (se) {
			if (ct4_refresh_due(se->last_seen_ns, now))
				se->last_seen_ns = now;
		} else {
			/* evicted by LRU pressure while the flow lives: put it back */
			struct kpr_snat4_entry v = {};
			v.last_seen_ns = now;
			v.client_addr = p->saddr;
			v.client_port = p->sport;
			v.fe_addr = p->daddr;
			v.fe_port = p->dport;
			v.rev_nat_id = rev_nat_id;
			if (bpf_map_update_elem(&kpr_snat4, &rk, &v, BPF_NOEXIST) < 0)
				return -KPR_R_DROP_MAP_UPDATE;
		}
	}

	ret = nat4_set_both(ctx, p, nat_addr, nat_port, be_addr, be_port);
	if (ret < 0)
		return ret;
	ret = nat4_redirect(ctx, p, &fib, fib_rc);
	if (ret < 0)
		return ret;
	kpr_stats_add(&kpr_svc_stats, rev_nat_id, bytes);
	kpr_stats_add(&kpr_be_stats, bid, bytes);
	return is_new ? KPR_R_SNAT_NEW : KPR_R_SNAT_FWD;
}

/*
 * Reply of a SNATed flow (backend -> node SNAT address:port): restore destination = client,
 * source = frontend, forward to the client. Returns KPR_R_SNAT_REPLY or a negative kpr_reason.
 */
static __always_inline int lb4_snat_reply(kpr_ctx_t *ctx, struct kpr_pkt4 *p,
					  struct kpr_snat4_entry *se, __u64 now)
{
	__u32 client_addr = se->client_addr;
	__u16 client_port = se->client_port;
	__u32 fe_addr = se->fe_addr;
	__u16 fe_port = se->fe_port;
	int refresh = ct4_refresh_due(se->last_seen_ns, now);
	if (refresh)
		se->last_seen_ns = now;
	__u16 flags = ct4_next_flags(se->flags, p->tcp_flags);
	if (flags != se->flags)
		se->flags = flags;

	/* the flow's ingress entry: refreshed with this one, or when p may change its flags */
	if (refresh || ct4_flags_may_change(p)) {
		struct kpr_ct4_key fk = {};
		fk.saddr = client_addr;
		fk.daddr = fe_addr;
		fk.sport = client_port;
		fk.dport = fe_port;
		fk.proto = p->proto;
		fk.dir = KPR_CT_INGRESS;
		ct4_touch_key(&fk, p, now);
	}

	struct bpf_fib_lookup fib;
	int fib_rc = nat4_fib_lookup(ctx, p, fe_addr, client_addr, &fib);
	if (fib_rc < 0)
		return fib_rc;
	if (KPR_IS_XDP && fib_rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return KPR_R_XDP_PASS_TC;
	int ret = nat4_set_both(ctx, p, fe_addr, fe_port, client_addr, client_port);
	if (ret < 0)
		return ret;
	ret = nat4_redirect(ctx, p, &fib, fib_rc);
	if (ret < 0)
		return ret;
	return KPR_R_SNAT_REPLY;
}

static __always_inline int lb4_ingress(kpr_ctx_t *ctx)
{
	struct kpr_pkt4 p;
	struct kpr_ct4_key ck;
	int ret = kpr_parse4(ctx, &p);
	if (ret < 0)
		return ret;
	/* Fail closed: loopback and 0.0.0.0 frontends (NodePorts, hostIP 127.0.0.1) serve local
	 * sockets only; from a device such a destination is a martian the stack would drop, but a
	 * DNAT here would deliver it (CVE-2020-8558). */
	if ((p.daddr & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000) || p.daddr == 0)
		return -KPR_R_DROP_LOOPBACK_DST;
	/* The clock (a helper call, ~40 ns here) is read only once a packet needs it: not for
	 * packets to no frontend. */
	__u64 now = 0;

	/* Replies of SNATed flows only arrive on SNAT ports: skip the LRU lookup for the rest. */
	__u32 snat_min, snat_max, dport = bpf_ntohs(p.dport);
	snat4_port_range(&snat_min, &snat_max);
	if (dport >= snat_min && dport <= snat_max) {
		now = bpf_ktime_get_ns();
		ct4_key_of(&ck, &p, KPR_CT_REPLY);
		struct kpr_snat4_entry *se = snat4_lookup(&ck, now);
		if (se)
			return lb4_snat_reply(ctx, &p, se, now);
	}

	struct kpr_lb4_key fe = {};
	fe.address = p.daddr;
	fe.dport = p.dport;
	fe.proto = p.proto;
	struct kpr_lb4_service *svc = bpf_map_lookup_elem(&kpr_lb4_svc, &fe);
	if (!svc)
		svc = lb4_lookup_wildcard(ctx, &p, &fe);
	if (!svc)
		return -KPR_R_PASS;
	/* Fail open: a ClusterIP is not reachable from outside; the stack decides. */
	if (!(svc->flags & KPR_SVC_F_EXTERNAL))
		return -KPR_R_PASS_CLUSTERIP;

	if (!now)
		now = bpf_ktime_get_ns();
	ct4_key_of(&ck, &p, KPR_CT_INGRESS);
	struct kpr_ct4_entry *ct = ct4_lookup(&ck, now);
	if (ct) {
		__u32 bid = ct->backend_id;
		struct kpr_lb4_backend *be = bpf_map_lookup_elem(&kpr_lb4_be, &bid);
		if (be) {
			int refresh = ct4_touch(ct, &p, now);
			return lb4_forward(ctx, &p, ct, be, 0, refresh, now);
		}
		/* the backend was removed: the flow is re-balanced below */
	}

	if (!lb4_src_allowed(svc, p.saddr))
		return -KPR_R_DROP_SRC_RANGE;
	if (svc->count == 0) {
		/* Local policy with endpoints on other nodes only: dropped, not refused, as
		 * kube-proxy does, so a load balancer's health check moves clients elsewhere. */
		if (svc->flags & KPR_SVC_F_DROP_NO_LOCAL)
			return -KPR_R_DROP_NO_BACKEND;
		return lb4_reject(ctx, &p);
	}

	__u32 bid = 0;
	struct kpr_lb4_backend *be =
		lb4_select_maglev(svc, p.saddr, p.daddr, p.sport, p.dport, p.proto, &bid);
	if (!be)
		be = lb4_select_backend(&fe, svc, p.saddr, 0, &bid);
	if (!be)
		return -KPR_R_DROP_BACKEND_GONE;

	struct kpr_ct4_entry e = {};
	e.last_seen_ns = now;
	e.packets = 1;
	e.bytes = p.tot_len;
	e.backend_id = bid;
	e.rev_nat_id = svc->rev_nat_id;
	e.flags = ct4_next_flags((be->flags & KPR_BE_F_LOCAL) ? 0 : KPR_CT_F_SNAT, p.tcp_flags);
	ret = lb4_forward(ctx, &p, &e, be, 1, 1, now);
	if (ret < 0)
		return ret;
	/* Inserted once the packet is translated (no lookup of the new entry afterwards). Fail
	 * closed: a flow that cannot be tracked is dropped, its retransmission tries again. */
	if (bpf_map_update_elem(&kpr_ct4, &ck, &e, BPF_ANY) < 0)
		return -KPR_R_DROP_MAP_UPDATE;
	return ret;
}

static __always_inline int lb4_egress(kpr_ctx_t *ctx)
{
	struct kpr_pkt4 p;
	struct kpr_ct4_key ck;
	int ret = kpr_parse4(ctx, &p);
	if (ret < 0)
		return ret;

	ct4_key_of(&ck, &p, KPR_CT_REPLY);
	struct kpr_ct4_entry *re = bpf_map_lookup_elem(&kpr_ct4, &ck);
	if (!re)
		return -KPR_R_PASS;
	/* the clock only for packets of tracked flows (not for the node's other traffic) */
	__u64 now = bpf_ktime_get_ns();
	if (ct4_expired(re->last_seen_ns, p.proto, re->flags, now))
		return -KPR_R_PASS;
	__u32 fe_addr = re->nat_addr;
	__u16 fe_port = re->nat_port;
	int refresh = ct4_touch(re, &p, now);

	/* the flow's ingress entry: refreshed with this one, or when p may change its flags */
	if (refresh || ct4_flags_may_change(&p)) {
		struct kpr_ct4_key fk = {};
		fk.saddr = p.daddr;
		fk.daddr = fe_addr;
		fk.sport = p.dport;
		fk.dport = fe_port;
		fk.proto = p.proto;
		fk.dir = KPR_CT_INGRESS;
		ct4_touch_key(&fk, &p, now);
	}

	ret = nat4_set_src(ctx, &p, fe_addr, fe_port);
	if (ret < 0)
		return ret;
	return KPR_R_LB_REVNAT;
}

#endif /* KPR_NODEPORT_H */
