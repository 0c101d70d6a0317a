// SPDX-License-Identifier: GPL-2.0
/* KB-001 emulation, for labs only: what veth_xmit() did before ce8c839b74e3 (Linux 4.4).
 *
 *	if (skb->ip_summed == CHECKSUM_NONE && rcv->features & NETIF_F_RXCSUM)
 *		skb->ip_summed = CHECKSUM_UNNECESSARY;
 *
 * Attached as a tc (cls_bpf, direct action) egress filter on the veth whose transmit did it (the
 * host side of a container's pair): tc egress runs in __dev_queue_xmit just before the veth's
 * ndo_start_xmit, so the skb reaches the peer already marked, as it did, and `badsum follow`
 * (net_dev_start_xmit, netif_rx, netif_receive_skb: all after this hook) sees the mark. The
 * receiving device's NETIF_F_RXCSUM is read from the peer itself (CO-RE), so the historical
 * workaround, `ethtool -K eth0 rx off` in the container, removes the bug for the reason it did.
 *
 * bpf_csum_level(BPF_CSUM_LEVEL_INC) is __skb_incr_checksum_unnecessary(): CHECKSUM_NONE becomes
 * CHECKSUM_UNNECESSARY with csum_level 0; PARTIAL and COMPLETE are left alone; UNNECESSARY would
 * get a deeper level, so those skbs are skipped (BPF_CSUM_LEVEL_QUERY answers >= 0 only for them).
 */
#include "badsum_types.h"
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

typedef __u64 netdev_features_t;

/* Only what this program reads; the names are the kernel's, relocated against its BTF. */
struct net_device___kb001 {
	netdev_features_t features;
	__u8 priv[];
} __attribute__((preserve_access_index));

struct veth_priv {
	struct net_device___kb001 *peer;
} __attribute__((preserve_access_index));

/* The bit sits in an anonymous enum, which CO-RE cannot relocate: the loader (badsum.lab.kb001)
 * reads NETIF_F_RXCSUM_BIT from the running kernel's BTF and refuses to attach when it differs. */
#define NETIF_F_RXCSUM_BIT 40

/* Counted per outcome so that a lab can report what the emulation did (index: enum kb001_stat). */
enum kb001_stat { KB001_MARKED, KB001_RX_OFF, KB001_NOT_NONE, KB001_NO_PEER, KB001_NSTATS };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KB001_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} kb001_stats SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&kb001_stats, &what);

	if (n)
		*n += 1;
}

SEC("tc")
int kb001_veth_xmit(struct __sk_buff *ctx)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	struct net_device___kb001 *dev, *peer = 0;
	struct veth_priv *priv;
	netdev_features_t features = 0;
	__u64 rxcsum, at;

	if (bpf_csum_level(ctx, BPF_CSUM_LEVEL_QUERY) >= 0) {
		count(KB001_NOT_NONE);  /* already CHECKSUM_UNNECESSARY */
		return TC_ACT_OK;
	}
	dev = (struct net_device___kb001 *)skb->dev;
	if (!dev) {
		count(KB001_NO_PEER);
		return TC_ACT_OK;
	}
	/* netdev_priv(dev): dev->priv since 6.12; before, the struct rounded up to NETDEV_ALIGN (32). */
	if (bpf_core_field_exists(struct net_device___kb001, priv))
		at = bpf_core_field_offset(struct net_device___kb001, priv);
	else
		at = (bpf_core_type_size(struct net_device___kb001) + 31) & ~31ULL;
	priv = (void *)dev + at;
	if (BPF_CORE_READ_INTO(&peer, priv, peer) || !peer) {
		count(KB001_NO_PEER);
		return TC_ACT_OK;
	}
	if (BPF_CORE_READ_INTO(&features, peer, features)) {
		count(KB001_NO_PEER);
		return TC_ACT_OK;
	}
	rxcsum = 1ULL << NETIF_F_RXCSUM_BIT;
	if (!(features & rxcsum)) {
		count(KB001_RX_OFF);
		return TC_ACT_OK;
	}
	/* Only CHECKSUM_NONE changes: PARTIAL/COMPLETE are untouched by the helper, as by the old code. */
	bpf_csum_level(ctx, BPF_CSUM_LEVEL_INC);
	if (bpf_csum_level(ctx, BPF_CSUM_LEVEL_QUERY) == 0)
		count(KB001_MARKED);
	else
		count(KB001_NOT_NONE);
	return TC_ACT_OK;
}
