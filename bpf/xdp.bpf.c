// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * North-south load balancing before the stack (XDP, IPv4 TCP/UDP): the shared core of
 * lib/nodeport.h on struct xdp_md. Forwarded packets leave by XDP_REDIRECT after a FIB lookup;
 * node-local backends are DNATed here and passed to the stack; what XDP cannot finish is passed
 * to the tc program with its decision in the maps (KPR_R_XDP_PASS_TC).
 */
#define KPR_CTX_XDP 1

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "maps.h"
#include "nodeport.h"

/* The XDP verdict of a kpr_reason (a subprogram, like tc_verdict, for the BTF of the enum). */
static __noinline int xdp_verdict(enum kpr_reason reason)
{
	switch (reason) {
	case KPR_R_PASS:
	case KPR_R_PASS_NOT_L4:
	case KPR_R_PASS_FRAGMENT:
	case KPR_R_PASS_CLUSTERIP:
	case KPR_R_LB_NEW:
	case KPR_R_LB_CT:
	case KPR_R_XDP_PASS_TC:
		return XDP_PASS;
	case KPR_R_SNAT_NEW:
	case KPR_R_SNAT_FWD:
	case KPR_R_SNAT_REPLY:
		return XDP_REDIRECT;
	case KPR_R_REJECT_ICMP:
		return XDP_TX;
	default:
		return XDP_DROP;
	}
}

SEC("xdp")
int kpr_xdp(struct xdp_md *ctx)
{
	int ret = lb4_ingress(ctx);
	__u32 reason = ret < 0 ? (__u32)-ret : (__u32)ret;
	kpr_count_reason(reason);
	return xdp_verdict((enum kpr_reason)reason);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
