// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Stale connected UDP sockets (kernel ≥ 6.5: the bpf_sock_destroy kfunc). A UDP socket that the
 * socket hooks connected to a backend keeps sending to it after the backend is gone. After a
 * reconcile removed UDP backends, user space writes them to kpr_skterm4 and runs this iterator
 * once per network namespace; it destroys every connected IPv4 UDP socket that kpr connected
 * (its cookie and destination are in kpr_sk4_rnat) to a removed (frontend, backend) pair. The
 * application's next call fails with ECONNABORTED and it can connect again.
 *
 * A separate object because older kernels reject the kfunc: they still load sock/tc/xdp.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

#define KPR_AF_INET 2

/* Kernel types, relocated by name against the running kernel's BTF (CO-RE): only the fields
 * read here are declared. No vmlinux.h (DESIGN.md: UAPI headers only). */
struct sock_common {
	__u32 skc_daddr;
	__u16 skc_dport;
	unsigned short skc_family;
} __attribute__((preserve_access_index));

struct seq_file;
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct udp_sock;
/* The context of iter/udp (include/linux/bpf.h: __bpf_md_ptr fields, 8 bytes each). */
struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
};

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* The socket LB's reverse map (sk4rnat.h): never created here, user space reuses its pin (same
 * type, key and value size, checked at load; max_entries adopted from the pin). */
#include "sk4rnat.h"

/* What to destroy: removed (frontend, backend) pairs. Object-local, never pinned; user space
 * sizes it to the pairs of one run. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct kpr_skterm4_key);
	__type(value, __u8);
	__uint(max_entries, 1);
} kpr_skterm4 SEC(".maps");

/*
 * Called for every UDP socket of the iterator's network namespace (and once with NULL at the
 * end). Destroys the socket when it matches; writes its cookie (8 bytes) to the iterator's
 * output so user space counts what was destroyed. Always returns 0 (continue).
 */
SEC("iter/udp")
int kpr_sockterm_udp4(struct bpf_iter__udp *ctx)
{
	struct sock_common *sk = (struct sock_common *)ctx->udp_sk;
	if (!sk)
		return 0;
	/* unconnected sockets (sendto through the sendmsg hook) have no destination to go stale */
	if (sk->skc_family != KPR_AF_INET || sk->skc_daddr == 0)
		return 0;

	struct kpr_sk4_rnat_key rk = {};
	rk.cookie = bpf_get_socket_cookie(sk);
	rk.address = sk->skc_daddr;
	rk.port = sk->skc_dport;
	/* only sockets kpr connected: a socket connected to the pod address directly is left */
	struct kpr_sk4_rnat_val *rv = bpf_map_lookup_elem(&kpr_sk4_rnat, &rk);
	if (!rv)
		return 0;

	struct kpr_skterm4_key tk = {};
	tk.address = rk.address;
	tk.port = rk.port;
	tk.rev_nat_id = rv->rev_nat_id;
	if (!bpf_map_lookup_elem(&kpr_skterm4, &tk))
		return 0;

	if (bpf_sock_destroy(sk) == 0)
		bpf_seq_write(ctx->meta->seq, &rk.cookie, sizeof(rk.cookie));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
