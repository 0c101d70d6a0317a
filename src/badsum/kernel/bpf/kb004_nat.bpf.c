// SPDX-License-Identifier: GPL-2.0
/* KB-004 emulation, for labs only: what NAT did to a zero UDP checksum before ea64d8d6c675 (5.7).
 *
 * net/netfilter/nf_nat_proto.c before the fix (e.g. 5.4.40, 4.19.122):
 *
 *	do_csum = hdr->check || skb->ip_summed == CHECKSUM_PARTIAL;
 *	...
 *	if (do_csum) {
 *		nf_csum_update(skb, iphdroff, &hdr->check, tuple, maniptype);
 *			-> inet_proto_csum_replace4(check, skb, oldip, newip, true)
 *		inet_proto_csum_replace2(&hdr->check, skb, *portptr, newport, false);
 *		if (!hdr->check)
 *			hdr->check = CSUM_MANGLED_0;
 *	}
 *
 * and inet_proto_csum_replace4() (net/core/utils.c):
 *
 *	if (skb->ip_summed != CHECKSUM_PARTIAL) {
 *		csum_replace4(sum, from, to);            (the RFC 1624 update of a finished sum)
 *		...
 *	} else if (pseudohdr)
 *		*sum = ~csum_fold(csum_add(csum_sub(csum_unfold(*sum), from), to));
 *
 * (inet_proto_csum_replace2 is replace4 on the 16-bit values). With hdr->check == 0 only
 * CHECKSUM_PARTIAL skbs got there: a VXLAN device with its outer checksum off and TX offload on
 * hands NAT the outer packet PARTIAL for the *inner* checksum. Then the address step updated the
 * field as if it held a pseudo-header sum, and the port step did nothing (pseudohdr false): the
 * field became fold(~old_addr + new_addr), 0xffff when only the port changed (MASQUERADE keeps the
 * node's address), which is the `bad udp cksum 0xffff` of the 2020 reports. A CHECKSUM_NONE skb
 * with a zero field was left alone (do_csum false), so this program leaves it alone too.
 *
 * Attached as a tc (cls_bpf, direct action) egress filter on the node's uplink: it runs after
 * netfilter's POSTROUTING (so after the second SNAT) and before the device transmits. The tuple
 * before SNAT comes from conntrack: the packet's reply tuple is looked up (bpf_skb_ct_lookup) and
 * tuplehash[IP_CT_DIR_ORIGINAL] read (CO-RE), as NAT read `tuple` and the header it rewrote.
 * Only packets to the flannel port with a zero checksum, skb->mark & 0x4000 (kube-proxy's masquerade
 * mark) and a changed source are touched.
 */
#include "badsum_types.h"
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define FLANNEL_PORT 8472
#define MASQ_MARK 0x4000
#define CHECKSUM_PARTIAL 3
#define CSUM_MANGLED_0 0xffff
#define IP_CT_DIR_ORIGINAL 0

/* Only what this program reads; relocated against the kernel's BTF. */
union nf_inet_addr {
	__u32 all[4];
	__be32 ip;
} __attribute__((preserve_access_index));

union nf_conntrack_man_proto {
	__be16 all;
} __attribute__((preserve_access_index));

struct nf_conntrack_man {
	union nf_inet_addr u3;
	union nf_conntrack_man_proto u;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple {
	struct nf_conntrack_man src;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple_hash {
	struct nf_conntrack_tuple tuple;
} __attribute__((preserve_access_index));

struct nf_conn {
	struct nf_conntrack_tuple_hash tuplehash[2];
} __attribute__((preserve_access_index));

/* The kfuncs' options (net/netfilter/nf_conntrack_bpf.c); 12 bytes before the zone fields (6.11),
 * 16 since: the size passed is the running kernel's (CO-RE type size). */
struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id;
	__u8 ct_zone_dir;
	__u8 reserved[3];
};

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb_ctx, struct bpf_sock_tuple *bpf_tuple,
					 __u32 tuple__sz, struct bpf_ct_opts *opts, __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* Per outcome, for the lab's report (index: enum kb004_stat; badsum.lab.kb004.STATS). */
enum kb004_stat {
	KB004_REWRITTEN, KB004_NOT_FLANNEL, KB004_CSUM_SET, KB004_UNMARKED, KB004_NOT_PARTIAL,
	KB004_NO_CT, KB004_UNCHANGED, KB004_NSTATS
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KB004_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} kb004_stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&kb004_stats, &what);

	if (n)
		*n += 1;
}

/* The kernel's csum_add/csum_sub on 32-bit partial sums (end-around carry) and csum_fold. */
static __always_inline __u32 csum_add32(__u32 a, __u32 b)
{
	__u32 r = a + b;

	return r + (r < b);
}

static __always_inline __u16 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

SEC("tc")
int kb004_nat_csum(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	struct bpf_sock_tuple tuple = {};
	struct bpf_ct_opts opts = {};
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	struct nf_conn *ct;
	__be32 old_addr, new_addr;
	__be16 old_port;
	__u32 sum, l4;
	__u16 check;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto not_flannel;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)))
		goto not_flannel;
	l4 = sizeof(*eth) + ip->ihl * 4;
	if (ip->ihl < 5 || l4 > 60 + sizeof(*eth))
		goto not_flannel;
	udp = data + l4;
	if ((void *)(udp + 1) > end || udp->dest != bpf_htons(FLANNEL_PORT))
		goto not_flannel;
	if (udp->check) {
		count(KB004_CSUM_SET);
		return TC_ACT_OK;
	}
	if (!(ctx->mark & MASQ_MARK)) {
		count(KB004_UNMARKED);
		return TC_ACT_OK;
	}
	if (BPF_CORE_READ_BITFIELD_PROBED(skb, ip_summed) != CHECKSUM_PARTIAL) {
		count(KB004_NOT_PARTIAL);  /* do_csum was false: the old kernel left the 0 alone */
		return TC_ACT_OK;
	}
	/* The packet's reply direction is what conntrack hashed for the SNATed entry's reply. */
	tuple.ipv4.saddr = ip->daddr;
	tuple.ipv4.daddr = ip->saddr;
	tuple.ipv4.sport = udp->dest;
	tuple.ipv4.dport = udp->source;
	new_addr = ip->saddr;
	opts.netns_id = -1;  /* BPF_F_CURRENT_NETNS: the skb's own namespace */
	opts.l4proto = IPPROTO_UDP;
	ct = bpf_skb_ct_lookup(ctx, &tuple, sizeof(tuple.ipv4), &opts, bpf_core_type_size(struct bpf_ct_opts));
	if (!ct) {
		count(KB004_NO_CT);
		return TC_ACT_OK;
	}
	old_addr = ct->tuplehash[IP_CT_DIR_ORIGINAL].tuple.src.u3.ip;
	old_port = ct->tuplehash[IP_CT_DIR_ORIGINAL].tuple.src.u.all;
	bpf_ct_release(ct);
	if (old_addr == new_addr && old_port == udp->source) {
		count(KB004_UNCHANGED);
		return TC_ACT_OK;
	}
	/* inet_proto_csum_replace4(check, skb, old_addr, new_addr, true) on a PARTIAL skb, from 0;
	 * inet_proto_csum_replace2(.., old_port, new_port, false) on a PARTIAL skb: nothing. */
	sum = csum_add32(csum_add32(0 /* csum_unfold(0) */, ~(__u32)old_addr), (__u32)new_addr);
	check = (__u16)~csum_fold32(sum);
	if (!check)
		check = CSUM_MANGLED_0;
	if (bpf_skb_store_bytes(ctx, l4 + __builtin_offsetof(struct udphdr, check), &check, sizeof(check), 0))
		return TC_ACT_OK;
	count(KB004_REWRITTEN);
	return TC_ACT_OK;

not_flannel:
	count(KB004_NOT_FLANNEL);
	return TC_ACT_OK;
}
