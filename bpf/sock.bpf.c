// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level load balancing (cgroup v2 sock_addr hooks, IPv4): connect() and sendmsg() to a
 * frontend are translated to a backend before any packet exists; recvmsg() and getpeername()
 * show the frontend again. Serves every frontend kind found in kpr_lb4_svc.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "lb.h"
#include "maps.h"

/* sock_addr return values: 1 lets the call proceed, 0 fails it with EPERM. */
#define SYS_PROCEED 1
#define SYS_REJECT  0

/* 0 when socket LB applies to this socket, else a negative kpr_reason. */
static __always_inline int sock4_enabled(struct bpf_sock_addr *ctx)
{
	const struct kpr_config *cfg = kpr_get_config();
	if (!cfg || !(cfg->flags & KPR_CFG_F_SOCKET_LB))
		return -KPR_R_SOCK_DISABLED;
	if ((cfg->flags & KPR_CFG_F_HOST_NS_ONLY) &&
	    bpf_get_netns_cookie(ctx) != cfg->host_netns_cookie)
		return -KPR_R_SOCK_SKIP_NETNS;
	return 0;
}

/*
 * loadBalancerSourceRanges of frontend svc for the socket of ctx: whether its source address
 * may use the frontend, as lb4_src_allowed decides for a packet in tc. The source is the one
 * sendmsg was given (msg_src_ip4: IP_PKTINFO; is_sendmsg must be a constant, the field exists
 * for sendmsg4 only), else the socket's bound (or already chosen) source. An unbound socket's
 * source is chosen by the route after this hook (cgroup sock_addr programs have no route lookup):
 * in the node's own network namespace, user space has asked the kernel which source its routes
 * pick for the frontend and marked the list when that source is in it (KPR_SRCR_V_NODE); in any
 * other namespace (a pod's) the source is unknown and matches a /0 range only.
 */
static __always_inline int sock4_src_allowed(struct bpf_sock_addr *ctx,
					     const struct kpr_lb4_service *svc, int is_sendmsg)
{
	if (!(svc->flags & KPR_SVC_F_SRC_RANGES))
		return 1;
	__u32 src = is_sendmsg ? ctx->msg_src_ip4 : 0;
	if (!src) {
		/* sock_addr programs always have a full socket in ctx->sk */
		struct bpf_sock *sk = ctx->sk;
		src = sk->src_ip4;
	}
	if (src)
		return lb4_src_allowed(svc, src);
	struct kpr_lb4_srcr_key key = {};
	key.prefixlen = 64;
	key.rev_nat_id = svc->rev_nat_id;
	key.address = 0;
	__u8 *v = bpf_map_lookup_elem(&kpr_lb4_srcr, &key);
	int hit = 0;
	if (v) {
		if (*v == KPR_SRCR_V_ALL) {
			hit = 1;
		} else if (*v == KPR_SRCR_V_NODE) {
			const struct kpr_config *cfg = kpr_get_config();
			hit = cfg && cfg->host_netns_cookie &&
			      bpf_get_netns_cookie(ctx) == cfg->host_netns_cookie;
		}
	}
	return (svc->flags & KPR_SVC_F_SRC_DENY) ? !hit : hit;
}

/*
 * The verdict reason for a frontend without backend slots: KPR_R_SOCK_REJECT_NO_LOCAL when a
 * Local traffic policy left out endpoints that exist on other nodes (tc drops there, as
 * kube-proxy does), else KPR_R_SOCK_REJECT. Both refuse the call: see sock4_verdict.
 */
static __always_inline int sock4_no_backend(const struct kpr_lb4_service *svc)
{
	if (svc->flags & KPR_SVC_F_DROP_NO_LOCAL)
		return -KPR_R_SOCK_REJECT_NO_LOCAL;
	return -KPR_R_SOCK_REJECT;
}

/*
 * Translates a connect/sendmsg destination that is a frontend to a selected backend and
 * remembers the frontend for the reverse direction. is_sendmsg: 1 in the sendmsg4 program.
 * Returns KPR_R_SOCK_LB or a negative kpr_reason.
 */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, int is_sendmsg)
{
	__u8 proto = (__u8)ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return -KPR_R_PASS_NOT_L4;

	int ret = sock4_enabled(ctx);
	if (ret < 0)
		return ret;

	struct kpr_lb4_key fe = {};
	fe.address = ctx->user_ip4;
	fe.dport = (__u16)ctx->user_port;
	fe.proto = proto;
	struct kpr_lb4_service *svc = bpf_map_lookup_elem(&kpr_lb4_svc, &fe);
	if (!svc)
		return -KPR_R_PASS;
	/* source ranges guard the frontend (the external master's flags), whatever its scope */
	if (!sock4_src_allowed(ctx, svc, is_sendmsg))
		return -KPR_R_DROP_SRC_RANGE;
	if (svc->flags & KPR_SVC_F_TWO_SCOPES) {
		/* Traffic from inside the cluster to an eTP=Local frontend: its cluster-wide set
		 * (kube-proxy's short-circuit). Missing while user space writes it: the external one. */
		fe.scope = KPR_SCOPE_INTERNAL;
		struct kpr_lb4_service *in = bpf_map_lookup_elem(&kpr_lb4_svc, &fe);
		if (in)
			svc = in;
		else
			fe.scope = KPR_SCOPE_EXTERNAL;
	}
	if (svc->count == 0)
		return sock4_no_backend(svc);

	__u32 bid = 0;
	struct kpr_lb4_backend *be =
		lb4_select_backend(&fe, svc, bpf_get_netns_cookie(ctx), 1, &bid);
	if (!be)
		return -KPR_R_DROP_BACKEND_GONE;

	struct kpr_sk4_rnat_key rk = {};
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.address = be->address;
	rk.port = be->port;
	struct kpr_sk4_rnat_val rv = {};
	rv.address = fe.address;
	rv.port = fe.dport;
	rv.rev_nat_id = svc->rev_nat_id;
	/* Fail open: without the entry the connection still works; only getpeername/recvmsg
	 * would show the backend instead of the frontend. */
	bpf_map_update_elem(&kpr_sk4_rnat, &rk, &rv, BPF_ANY);

	ctx->user_ip4 = be->address;
	ctx->user_port = (__u32)be->port;

	kpr_stats_add(&kpr_svc_stats, svc->rev_nat_id, 0);
	kpr_stats_add(&kpr_be_stats, bid, 0);
	return KPR_R_SOCK_LB;
}

/* Restores the frontend as the peer address of a socket translated by sock4_xlate_fwd. */
static __always_inline int sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct kpr_sk4_rnat_key rk = {};
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.address = ctx->user_ip4;
	rk.port = (__u16)ctx->user_port;
	struct kpr_sk4_rnat_val *rv = bpf_map_lookup_elem(&kpr_sk4_rnat, &rk);
	if (!rv)
		return -KPR_R_PASS;
	ctx->user_ip4 = rv->address;
	ctx->user_port = (__u32)rv->port;
	return KPR_R_SOCK_REVNAT;
}

static __always_inline int sock4_verdict(int ret)
{
	__u32 reason = ret < 0 ? (__u32)-ret : (__u32)ret;
	kpr_count_reason(reason);
	/*
	 * Fail closed for a frontend that has no usable backend, or whose source ranges exclude
	 * the socket: EPERM at once beats sending to a virtual address that nothing answers. Also
	 * where kube-proxy drops (Local policy with endpoints on other nodes only, which after the
	 * two traffic scopes is internalTrafficPolicy=Local with no endpoint on this node; a source
	 * outside loadBalancerSourceRanges): a hook can only refuse the call or let it through,
	 * and letting it through untranslated sends the virtual address onto the network. kube-
	 * proxy drops so that an external load balancer's health checks steer clients to other
	 * nodes; a process on this node has no other path, and a drop only turns the same failure
	 * into a connect() timeout (about two minutes of SYN retries) or a datagram lost silently.
	 * A cgroup program can only choose EPERM on 5.10 (bpf_set_retval needs 5.19).
	 */
	if (reason == KPR_R_SOCK_REJECT || reason == KPR_R_SOCK_REJECT_NO_LOCAL ||
	    reason == KPR_R_DROP_BACKEND_GONE || reason == KPR_R_DROP_SRC_RANGE)
		return SYS_REJECT;
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int kpr_sock4_connect(struct bpf_sock_addr *ctx)
{
	return sock4_verdict(sock4_xlate_fwd(ctx, 0));
}

SEC("cgroup/sendmsg4")
int kpr_sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return sock4_verdict(sock4_xlate_fwd(ctx, 1));
}

/* recvmsg/getpeername programs must return 1 (the verifier enforces it). */
SEC("cgroup/recvmsg4")
int kpr_sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	int ret = sock4_xlate_rev(ctx);
	kpr_count_reason(ret < 0 ? (__u32)-ret : (__u32)ret);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int kpr_sock4_getpeername(struct bpf_sock_addr *ctx)
{
	int ret = sock4_xlate_rev(ctx);
	kpr_count_reason(ret < 0 ? (__u32)-ret : (__u32)ret);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
