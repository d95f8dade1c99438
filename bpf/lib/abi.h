/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kpr ABI: every struct that user space reads or writes in a map, with explicit padding and
 * size assertions. User space (src/datapath/lbmaps.ts) checks its codecs against these structs'
 * BTF when an object is loaded. Changing a layout means a new versioned map name.
 * Addresses and ports are in network byte order unless a field says otherwise.
 */
#ifndef KPR_ABI_H
#define KPR_ABI_H

#include <linux/types.h>

/* ---- service (frontend) map: kpr_lb4_svc ------------------------------------------------ */

/* Frontend kinds (struct kpr_lb4_service.flags, low bits). */
#define KPR_SVC_F_CLUSTERIP    (1 << 0)
#define KPR_SVC_F_NODEPORT     (1 << 1)
#define KPR_SVC_F_EXTERNALIP   (1 << 2)
#define KPR_SVC_F_LOADBALANCER (1 << 3)
#define KPR_SVC_F_HOSTPORT     (1 << 4)
/* Behaviour flags. */
#define KPR_SVC_F_LOCAL_SCOPE  (1 << 8)  /* traffic policy Local: only node-local backends */
#define KPR_SVC_F_AFFINITY     (1 << 9)  /* ClientIP session affinity; timeout in master slot */
#define KPR_SVC_F_SRC_RANGES   (1 << 10) /* loadBalancerSourceRanges check (kpr_lb4_srcr) */
#define KPR_SVC_F_SRC_DENY     (1 << 11) /* source ranges are a deny list */
#define KPR_SVC_F_LOOPBACK     (1 << 12) /* frontend is on 127.0.0.0/8 */
#define KPR_SVC_F_WILDCARD     (1 << 13) /* frontend address is 0.0.0.0 (any node address) */
#define KPR_SVC_F_DROP_NO_LOCAL (1 << 14) /* Local policy, endpoints only on other nodes: with no
                                           * backend slots, drop (kube-proxy) rather than reject */
#define KPR_SVC_F_TWO_SCOPES   (1 << 15) /* the frontend has a second backend set for traffic from
                                           * inside the cluster (socket LB): its entries carry
                                           * scope KPR_SCOPE_INTERNAL */

/* struct kpr_lb4_key.scope */
#define KPR_SCOPE_EXTERNAL 0 /* the frontend's backends; the only scope of most frontends */
#define KPR_SCOPE_INTERNAL 1 /* a two-scope frontend's in-cluster backends (master and slots) */

/* Backend selection algorithms (struct kpr_lb4_service.algorithm). */
#define KPR_ALG_RANDOM 0
#define KPR_ALG_MAGLEV 1

/*
 * Key of kpr_lb4_svc. slot 0 is the master entry of a frontend; slots 1..count name its
 * backends. scope is KPR_SCOPE_EXTERNAL, or KPR_SCOPE_INTERNAL for the second set (own master and
 * slots, same rev_nat_id) of a frontend whose external master has KPR_SVC_F_TWO_SCOPES: tc/XDP
 * read the external entries, the socket hooks the internal ones when there are.
 */
struct kpr_lb4_key {
	__u32 address; /* frontend IPv4, network order */
	__u16 dport;   /* frontend port, network order */
	__u16 slot;    /* host order: 0 = master, 1..count = backend slots */
	__u8 proto;    /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 scope;
	__u8 pad[2];
};
_Static_assert(sizeof(struct kpr_lb4_key) == 12, "kpr_lb4_key size");

/*
 * Value of kpr_lb4_svc. Master (slot 0): count, rev_nat_id, flags, algorithm,
 * affinity_timeout. Backend slot: backend_id (other fields copied from the master for reading).
 */
struct kpr_lb4_service {
	__u32 backend_id;       /* slot > 0: id in kpr_lb4_be */
	__u32 affinity_timeout; /* master: ClientIP affinity timeout, seconds (0 = none) */
	__u16 count;            /* master: number of backend slots (active backends first) */
	__u16 rev_nat_id;       /* frontend id = reverse-NAT index (1..65535) */
	__u16 flags;            /* KPR_SVC_F_* */
	__u8 algorithm;         /* KPR_ALG_* */
	__u8 active_count;      /* master: slots 1..active_count are active, the rest terminating;
	                           255 = saturated, use count. 0 with count > 0: only terminating */
};
_Static_assert(sizeof(struct kpr_lb4_service) == 16, "kpr_lb4_service size");

/* ---- backend map: kpr_lb4_be (key: __u32 backend id) ------------------------------------- */

#define KPR_BE_ACTIVE      0
#define KPR_BE_TERMINATING 1

#define KPR_BE_F_LOCAL (1 << 0) /* backend runs on this node */

struct kpr_lb4_backend {
	__u32 address; /* network order */
	__u16 port;    /* network order */
	__u8 proto;
	__u8 state;    /* KPR_BE_* */
	__u8 flags;    /* KPR_BE_F_* */
	__u8 pad[3];
};
_Static_assert(sizeof(struct kpr_lb4_backend) == 12, "kpr_lb4_backend size");

/* ---- reverse NAT map: kpr_lb4_rnat (key: __u16 rev_nat_id) ------------------------------- */

struct kpr_lb4_revnat {
	__u32 address; /* frontend address to restore, network order */
	__u16 port;    /* frontend port, network order */
	__u16 pad;
};
_Static_assert(sizeof(struct kpr_lb4_revnat) == 8, "kpr_lb4_revnat size");

/* ---- service metadata, user space only: kpr_svc_meta (key: __u16 rev_nat_id) -------------- */

#define KPR_NAME_LEN 96
struct kpr_svc_meta {
	char name[KPR_NAME_LEN];   /* "namespace/name", NUL padded */
	char port_name[32];        /* service port name, NUL padded */
	__u16 health_check_port;   /* host order; 0 = none */
	__u8 reject;               /* 1 when the frontend has no usable backend */
	__u8 proto;                /* the frontend (master key) this id names: IP protocol, */
	__u32 address;             /* address (network order) */
	__u16 port;                /* and port (network order), to find its entries by id */
	__u8 pad[6];
	__u64 digest;              /* hash of this frontend's programmed entries; 0 = unknown */
};
_Static_assert(sizeof(struct kpr_svc_meta) == 152, "kpr_svc_meta size");

/* ---- source ranges: kpr_lb4_srcr (LPM trie) ----------------------------------------------- */

struct kpr_lb4_srcr_key {
	__u32 prefixlen; /* LPM prefix length: 16 (rev_nat_id) + 16 pad bits + CIDR length */
	__u16 rev_nat_id;
	__u16 pad;
	__u32 address;   /* network order */
};
_Static_assert(sizeof(struct kpr_lb4_srcr_key) == 12, "kpr_lb4_srcr_key size");

/*
 * Value (__u8) of a kpr_lb4_srcr entry: a range (KPR_SRCR_V_RANGE), a /0 range matching every
 * source (KPR_SRCR_V_ALL), or, at address 0.0.0.0/32, the node marker (KPR_SRCR_V_NODE): the
 * source the node's routes pick for the frontend (user space asks the kernel) is in the list.
 * The socket hooks read it for an unbound socket of the node's network namespace, whose source
 * is chosen only after them; an unbound socket elsewhere matches only a /0 range.
 */
#define KPR_SRCR_V_RANGE 1
#define KPR_SRCR_V_ALL   2
#define KPR_SRCR_V_NODE  3

/* ---- session affinity: kpr_lb4_aff (LRU) -------------------------------------------------- */

struct kpr_lb4_aff_key {
	__u64 client;      /* client IPv4 (network order, low 32 bits) or netns cookie for socket LB */
	__u16 rev_nat_id;
	__u8 netns_cookie; /* 1 when client is a netns cookie */
	__u8 pad[5];
};
_Static_assert(sizeof(struct kpr_lb4_aff_key) == 16, "kpr_lb4_aff_key size");

struct kpr_lb4_aff_val {
	__u32 backend_id;
	__u32 last_used; /* bpf_ktime_get_ns() / 1e9 (seconds) */
};
_Static_assert(sizeof(struct kpr_lb4_aff_val) == 8, "kpr_lb4_aff_val size");

/* ---- connection tracking: kpr_ct4 (LRU) --------------------------------------------------- */

/*
 * struct kpr_ct4_key.dir. kpr_ct4 holds KPR_CT_INGRESS entries (original tuple client ->
 * frontend, seen on a device's ingress) and, for node-local backends, KPR_CT_REPLY entries
 * (reply tuple backend -> client, read by the egress program to restore the frontend).
 * kpr_snat4 holds KPR_CT_REPLY entries only (reply tuple backend -> SNAT address:port).
 */
#define KPR_CT_INGRESS 0
#define KPR_CT_REPLY   1

struct kpr_ct4_key {
	__u32 saddr; /* network order */
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir;    /* KPR_CT_* */
	__u8 pad[2];
};
_Static_assert(sizeof(struct kpr_ct4_key) == 16, "kpr_ct4_key size");

#define KPR_CT_F_SNAT   (1 << 0) /* flow to a remote backend, source-NATed by this node */
#define KPR_CT_F_CLOSED (1 << 1) /* TCP FIN/RST seen: short lifetime */

struct kpr_ct4_entry {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet */
	__u64 packets;
	__u64 bytes;
	__u32 backend_id;   /* INGRESS: selected backend (kpr_lb4_be); REPLY: the same backend */
	__u32 nat_addr;     /* INGRESS+SNAT: SNAT source address; REPLY: frontend address */
	__u16 nat_port;     /* INGRESS+SNAT: SNAT source port; REPLY: frontend port */
	__u16 rev_nat_id;
	__u16 flags;        /* KPR_CT_F_* */
	__u16 pad;
};
_Static_assert(sizeof(struct kpr_ct4_entry) == 40, "kpr_ct4_entry size");

/* ---- SNAT: kpr_snat4 (LRU), keyed by the reply tuple (backend -> SNAT addr:port, REPLY) ---- */

struct kpr_snat4_entry {
	__u64 last_seen_ns;
	__u32 client_addr;  /* restored as destination, network order */
	__u32 fe_addr;      /* frontend the client used, restored as source */
	__u16 client_port;  /* network order */
	__u16 fe_port;      /* network order */
	__u16 rev_nat_id;
	__u16 flags;        /* KPR_CT_F_* (CLOSED) */
};
_Static_assert(sizeof(struct kpr_snat4_entry) == 24, "kpr_snat4_entry size");

/* ---- socket LB reverse NAT: kpr_sk4_rnat (LRU) -------------------------------------------- */

struct kpr_sk4_rnat_key {
	__u64 cookie;  /* socket cookie */
	__u32 address; /* backend address, network order */
	__u16 port;    /* backend port, network order */
	__u16 pad;
};
_Static_assert(sizeof(struct kpr_sk4_rnat_key) == 16, "kpr_sk4_rnat_key size");

struct kpr_sk4_rnat_val {
	__u32 address; /* frontend address, network order */
	__u16 port;    /* frontend port, network order */
	__u16 rev_nat_id;
};
_Static_assert(sizeof(struct kpr_sk4_rnat_val) == 8, "kpr_sk4_rnat_val size");

/* ---- stale UDP sockets: kpr_skterm4 (hash, sockterm.bpf.c only) ------------------------------ */

/*
 * Key of kpr_skterm4, filled by user space before it runs the socket iterator of sockterm.bpf.c:
 * one entry per UDP backend removed from a frontend. A connected UDP socket whose destination is
 * address:port and whose kpr_sk4_rnat entry names rev_nat_id is destroyed (bpf_sock_destroy).
 */
struct kpr_skterm4_key {
	__u32 address;    /* backend address, network order */
	__u16 port;       /* backend port, network order */
	__u16 rev_nat_id; /* the frontend the backend was removed from */
};
_Static_assert(sizeof(struct kpr_skterm4_key) == 8, "kpr_skterm4_key size");

/* ---- node devices: kpr_dev4 (key: __u32 ifindex) ------------------------------------------ */

struct kpr_dev4 {
	__u32 address; /* the device's primary IPv4, used as SNAT source; network order */
	__u8 mac[6];
	__u8 pad[2];
};
_Static_assert(sizeof(struct kpr_dev4) == 12, "kpr_dev4 size");

/* ---- global configuration: kpr_config (array, one entry, key 0) --------------------------- */

#define KPR_CFG_F_SOCKET_LB      (1 << 0)
#define KPR_CFG_F_HOST_NS_ONLY   (1 << 1)
#define KPR_CFG_F_NODEPORT       (1 << 2)

struct kpr_config {
	__u32 flags;          /* KPR_CFG_F_* */
	__u16 snat_port_min;  /* host order: ports allocated for SNAT to remote backends */
	__u16 snat_port_max;
	__u16 nodeport_min;   /* host order */
	__u16 nodeport_max;
	__u8 lb_mode;         /* 0 snat, 1 dsr, 2 hybrid */
	__u8 pad[3];
	__u64 host_netns_cookie; /* for socketLB.hostNamespaceOnly */
	__u64 datapath_digest;   /* user space: hash of the attached objects; 0 = unknown */
};
_Static_assert(sizeof(struct kpr_config) == 32, "kpr_config size");

/* ---- Maglev: kpr_lb4_maglev (hash of maps, key __u16 rev_nat_id) + kpr_maglev_cfg --------- */

/*
 * kpr_lb4_maglev maps a frontend's rev_nat_id to its lookup table: an array of table_size
 * backend ids (__u32), computed in user space and swapped in whole. A frontend without a table
 * selects at random. kpr_maglev_cfg (array, one entry) holds the table size and the flow-hash
 * seeds (bytes 4..11 of maglev.hashSeed); kpr_lb4_mgsig (user space only) the hash of what each
 * programmed table was computed from.
 */
struct kpr_maglev_cfg {
	__u32 table_size; /* M, a prime; 0 = no Maglev tables */
	__u32 seed0;      /* jhash seed of the 5-tuple hash */
	__u32 seed1;      /* jhash seed of the client-address hash (session affinity) */
	__u32 pad;
};
_Static_assert(sizeof(struct kpr_maglev_cfg) == 16, "kpr_maglev_cfg size");

/* ---- counters: kpr_svc_stats / kpr_be_stats (per-CPU hash, key __u32 id) ------------------ */

struct kpr_stats {
	__u64 packets; /* tc: packets; socket LB: connections / sendmsg calls */
	__u64 bytes;
};
_Static_assert(sizeof(struct kpr_stats) == 16, "kpr_stats size");

/* ---- drop/verdict reasons: kpr_reasons (per-CPU array indexed by reason) ------------------- */

/*
 * Index of kpr_reasons: what each hook did with a packet / socket call. One counter per
 * verdict; user space prints the names (keep src/datapath's table in the same order).
 */
enum kpr_reason {
	KPR_R_PASS = 0,          /* not for a frontend: passed untouched */
	KPR_R_PASS_NOT_L4,       /* not IPv4 TCP/UDP: passed */
	KPR_R_PASS_FRAGMENT,     /* IPv4 fragment: passed (no L4 ports to translate) */
	KPR_R_PASS_CLUSTERIP,    /* ClusterIP-only frontend reached from outside: passed */
	KPR_R_LB_NEW,            /* tc: new flow DNATed to a node-local backend (TC_ACT_OK) */
	KPR_R_LB_CT,             /* tc: tracked flow DNATed to its node-local backend */
	KPR_R_LB_REVNAT,         /* tc egress: reply of a node-local backend given the frontend */
	KPR_R_SNAT_NEW,          /* tc: new flow DNAT+SNATed to a remote backend, redirected */
	KPR_R_SNAT_FWD,          /* tc: tracked flow DNAT+SNATed to its remote backend, redirected */
	KPR_R_SNAT_REPLY,        /* tc: reply of a SNATed flow restored, redirected to the client */
	KPR_R_REJECT_RST,        /* tc: frontend without backends, TCP RST sent back */
	KPR_R_DROP_MALFORMED,    /* truncated / invalid headers */
	KPR_R_DROP_NO_BACKEND,   /* frontend without backends, nothing sent back (Local policy with
	                          * remote endpoints only; TCP that gets no RST; UDP that may get
	                          * no ICMP error) */
	KPR_R_DROP_SRC_RANGE,    /* loadBalancerSourceRanges denied the client */
	KPR_R_DROP_BACKEND_GONE, /* a slot names a backend missing from kpr_lb4_be */
	KPR_R_DROP_FIB,          /* FIB lookup / redirect failed for a packet that must be forwarded */
	KPR_R_DROP_FRAG_NEEDED,  /* packet to forward is larger than the egress MTU (no ICMP sent) */
	KPR_R_DROP_NO_DEVICE,    /* egress device has no kpr_dev4 entry (no SNAT address) */
	KPR_R_DROP_SNAT_PORTS,   /* no free SNAT port found */
	KPR_R_DROP_MAP_UPDATE,   /* a CT/SNAT entry could not be written */
	KPR_R_DROP_REWRITE,      /* a packet rewrite / checksum helper failed */
	KPR_R_DROP_TTL,          /* TTL expired on a packet to forward */
	KPR_R_SOCK_LB,           /* socket LB: connect/sendmsg translated to a backend */
	KPR_R_SOCK_REJECT,       /* socket LB: frontend without backends, call refused (EPERM) */
	KPR_R_SOCK_REVNAT,       /* socket LB: recvmsg/getpeername address restored */
	KPR_R_SOCK_SKIP_NETNS,   /* socket LB: not the host netns with hostNamespaceOnly */
	KPR_R_SOCK_DISABLED,     /* socket LB: kpr_config lacks KPR_CFG_F_SOCKET_LB */
	KPR_R_XDP_PASS_TC,       /* XDP: handed to tc to finish (no neighbour entry, RST) */
	KPR_R_DROP_LOOPBACK_DST, /* tc/XDP: from a device to 127.0.0.0/8 or 0.0.0.0 (CVE-2020-8558) */
	KPR_R_REJECT_ICMP,       /* tc/XDP: UDP to a frontend without backends, ICMP port unreachable
	                          * sent back (tc: redirect, XDP: XDP_TX) */
	KPR_R_SOCK_REJECT_NO_LOCAL, /* socket LB: Local policy, endpoints on other nodes only: call
	                             * refused (EPERM) where tc drops (see sock4_verdict) */
	KPR_R_COUNT,
};

#define KPR_REASON_MAX 32
_Static_assert(KPR_R_COUNT <= KPR_REASON_MAX, "kpr_reasons too small");

#endif /* KPR_ABI_H */
