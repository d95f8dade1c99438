// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * North-south load balancing on the node's devices (tc, IPv4 TCP/UDP): the shared core of
 * lib/nodeport.h on struct __sk_buff, plus the egress reverse NAT of node-local backends.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "consts.h"
#include "csum.h"
#include "ct.h"
#include "lb.h"
#include "maps.h"
#include "nat.h"
#include "nodeport.h"
#include "parse.h"

/*
 * The tc verdict of a kpr_reason. Not inlined on purpose: as a real subprogram its signature
 * puts enum kpr_reason into the object's BTF, where user space reads the reason names.
 */
static __noinline int tc_verdict(enum kpr_reason reason)
{
	switch (reason) {
	case KPR_R_PASS:
	case KPR_R_PASS_NOT_L4:
	case KPR_R_PASS_FRAGMENT:
	case KPR_R_PASS_CLUSTERIP:
	case KPR_R_LB_NEW:
	case KPR_R_LB_CT:
	case KPR_R_LB_REVNAT:
		return TC_ACT_OK;
	case KPR_R_SNAT_NEW:
	case KPR_R_SNAT_FWD:
	case KPR_R_SNAT_REPLY:
	case KPR_R_REJECT_RST:
	case KPR_R_REJECT_ICMP:
		return TC_ACT_REDIRECT;
	default:
		return TC_ACT_SHOT;
	}
}

static __always_inline int tc_finish(int ret)
{
	__u32 reason = ret < 0 ? (__u32)-ret : (__u32)ret;
	kpr_count_reason(reason);
	return tc_verdict((enum kpr_reason)reason);
}

SEC("tc")
int kpr_tc_ingress(struct __sk_buff *skb)
{
	return tc_finish(lb4_ingress(skb));
}

SEC("tc")
int kpr_tc_egress(struct __sk_buff *skb)
{
	return tc_finish(lb4_egress(skb));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
