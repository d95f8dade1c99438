/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Feature probes for `kpr bpf probe`: one trivial program per hook kpr uses. The probe loads
 * each program on its own (autoload), so a kernel that lacks a hook fails only that program.
 * Nothing here is ever attached.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#define SEC(name) __attribute__((section(name), used))

char _license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int probe_tc(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("xdp")
int probe_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* cgroup/sock_addr hooks: 1 lets the operation proceed. */
SEC("cgroup/connect4")
int probe_connect4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/connect6")
int probe_connect6(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/sendmsg4")
int probe_sendmsg4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/sendmsg6")
int probe_sendmsg6(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/recvmsg4")
int probe_recvmsg4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/recvmsg6")
int probe_recvmsg6(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/getpeername4")
int probe_getpeer4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/getpeername6")
int probe_getpeer6(struct bpf_sock_addr *ctx) { return 1; }
