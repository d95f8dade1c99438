/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Datapath tunables. Each can be overridden at build time (-DNAME=value).
 */
#ifndef KPR_CONSTS_H
#define KPR_CONSTS_H

/* Connection-tracking lifetimes, enforced on lookup against last_seen_ns (the LRU maps also
 * evict under pressure). Values follow Cilium's defaults. */
#ifndef KPR_CT_LIFETIME_TCP_S
#define KPR_CT_LIFETIME_TCP_S 21600 /* established TCP: 6 h idle */
#endif
#ifndef KPR_CT_LIFETIME_TCP_CLOSED_S
#define KPR_CT_LIFETIME_TCP_CLOSED_S 10 /* after FIN/RST: enough for the close handshake */
#endif
#ifndef KPR_CT_LIFETIME_UDP_S
#define KPR_CT_LIFETIME_UDP_S 60 /* UDP (and other non-TCP) flows: 60 s idle */
#endif

/* CT/SNAT entries' last_seen_ns is rewritten at most once per this many seconds of a flow
 * (and the reverse entry re-checked then): must stay well below the shortest lifetime. */
#ifndef KPR_CT_REFRESH_S
#define KPR_CT_REFRESH_S 1
#endif

/* SNAT source ports used when kpr_config leaves snat_port_min/max at 0 (above the default
 * NodePort range, like Cilium's NodePort SNAT range). */
#ifndef KPR_SNAT_PORT_MIN_DEFAULT
#define KPR_SNAT_PORT_MIN_DEFAULT 32768
#endif
#ifndef KPR_SNAT_PORT_MAX_DEFAULT
#define KPR_SNAT_PORT_MAX_DEFAULT 65535
#endif
/* Random probes for a free SNAT port before giving up (KPR_R_DROP_SNAT_PORTS). */
#ifndef KPR_SNAT_PORT_TRIES
#define KPR_SNAT_PORT_TRIES 32
#endif

/* Session affinity: how many backend slots are scanned to check that the remembered backend
 * still belongs to the frontend. Larger frontends only check that the backend still exists. */
#ifndef KPR_AFF_SCAN_MAX
#define KPR_AFF_SCAN_MAX 128
#endif

/* TTL of the TCP RST sent for frontends without backends. */
#ifndef KPR_RST_TTL
#define KPR_RST_TTL 64
#endif

#define KPR_NSEC_PER_SEC 1000000000ULL

#endif /* KPR_CONSTS_H */
