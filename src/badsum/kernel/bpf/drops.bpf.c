// SPDX-License-Identifier: GPL-2.0
/* badsum watch / exporter: kernel drops counted by the skb's own namespace, device, reason and
 * location. The tracefs event alone carries no namespace (host/drops.py joins it with counters);
 * here the skb says where it was, so a drop is attributed by the kernel itself.
 */
#include "badsum_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "follow_event.h"

char LICENSE[] SEC("license") = "GPL";

/* Keys past this are not counted but tallied in `overflow` (a table full of distinct drops). */
#define MAX_DROP_KEYS 16384

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DROP_KEYS);
	__type(key, struct drop_key);
	__type(value, struct drop_value);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} overflow SEC(".maps");

static __always_inline int count(struct bpf_raw_tracepoint_args *ctx, struct sock *rx_sk)
{
	struct sk_buff *skb = (struct sk_buff *)ctx->args[0];
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct drop_key k = {};
	struct drop_value *v;

	k.reason = (__u32)ctx->args[2];
	k.location = ctx->args[1];
	k.protocol = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	if (dev) {
		k.ifindex = BPF_CORE_READ(dev, ifindex);
		k.netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else {
		/* No device (TCP cleared it before queueing to the socket): the receiving socket's
		 * namespace, and the device the skb came in on. */
		struct sock *sk = rx_sk ? rx_sk : BPF_CORE_READ(skb, sk);
		k.ifindex = BPF_CORE_READ(skb, skb_iif);
		k.netns = sk ? BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) : 0;
	}
	v = bpf_map_lookup_elem(&drops, &k);
	if (!v) {
		struct drop_value fresh = {};
		if (dev)
			BPF_CORE_READ_STR_INTO(&fresh.ifname, dev, name);
		/* -EEXIST: another CPU added it first, which is fine. */
		long rc = bpf_map_update_elem(&drops, &k, &fresh, BPF_NOEXIST);
		if (rc && rc != -17) {
			__u32 zero = 0;
			__u64 *o = bpf_map_lookup_elem(&overflow, &zero);
			if (o)
				*o += 1;
			return 0;
		}
		v = bpf_map_lookup_elem(&drops, &k);
		if (!v)
			return 0;
	}
	__sync_fetch_and_add(&v->count, 1);
	return 0;
}

/* kfree_skb with rx_sk (6.12+); the loader falls back to count_drop where attaching this fails. */
SEC("raw_tp/kfree_skb")
int count_drop_sk(struct bpf_raw_tracepoint_args *ctx)
{
	return count(ctx, (struct sock *)ctx->args[3]);
}

SEC("raw_tp/kfree_skb")
int count_drop(struct bpf_raw_tracepoint_args *ctx)
{
	return count(ctx, 0);
}
