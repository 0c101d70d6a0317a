// SPDX-License-Identifier: GPL-2.0
/* badsum follow: every skb a device transmits or receives, and every drop, with the kernel's
 * checksum state (ip_summed, csum_start/offset, csum_level) and the packet's bytes.
 *
 * Raw tracepoints, not tracefs events: they attach by name through bpf(BPF_RAW_TRACEPOINT_OPEN),
 * need no tracefs mount, and the link is a file descriptor that goes away with the process (even
 * on SIGKILL). kprobes and fentry are not available on the kernels this was built for
 * (CONFIG_KPROBES unset, available_filter_functions unreadable), tracepoints are ABI-stable.
 *
 * The in-kernel filter is the tcpdump subset badsum/kernel/filter.py parses: a conjunction of
 * proto / host / net / port terms, matched against the outer headers or, for VXLAN, Geneve, GRE
 * and IP-in-IP, against the inner ones.
 */
#include "badsum_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "follow_event.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, N_STATS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Per-CPU scratch: an event is built here, then copied into the ring buffer at its real size. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

struct window {
	__u64 start;
	__u64 count;
};

/* One window for all CPUs: --rate bounds the total, however the load is spread. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct window);
} rate SEC(".maps");

/* IP protocols (IANA): the UAPI header that has them, netinet/in.h, is libc's. */
#define IPPROTO_IPIP 4
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_IPV6 41
#define IPPROTO_GRE 47
#define IPPROTO_SCTP 132
#define IPPROTO_UDPLITE 136
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_TEB 0x6558
#define ARPHRD_ETHER 1
#define ARPHRD_LOOPBACK 772
#define MAC_UNSET 0xFFFF

/* n & (MAX_CAP - 1), done where the verifier sees it: clang folds a plain clamp into earlier
 * instructions on another register, and the verifier then knows no bound for the size. */
static __always_inline __u64 bound(__u64 n)
{
	asm volatile("%0 &= 2047" : "+r"(n));
	return n;
}
_Static_assert(MAX_CAP == 2048, "bound() masks with MAX_CAP - 1");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);
	if (v)
		*v += 1;
}

/* Where the packet bytes start: the MAC header on Ethernet-framed devices, else the network
 * header. `p` points at it, `lin` is the number of linear bytes from there, `wire` the packet's
 * length from there. */
struct span {
	unsigned char *p;
	__u32 lin;
	__u32 wire;
	__u16 start;
	__u8 l2;
};

static __always_inline int packet_span(struct sk_buff *skb, __u16 dev_type, struct span *s)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	unsigned char *data = BPF_CORE_READ(skb, data);
	__u32 len = BPF_CORE_READ(skb, len);
	__u32 data_len = BPF_CORE_READ(skb, data_len);
	__u16 mac = BPF_CORE_READ(skb, mac_header);
	__u16 net = BPF_CORE_READ(skb, network_header);
	__u32 doff = data - head;
	__u32 start = doff;

	s->l2 = 0;
	if ((dev_type == ARPHRD_ETHER || dev_type == ARPHRD_LOOPBACK) && mac != MAC_UNSET && mac <= doff) {
		start = mac;
		s->l2 = 1;
	} else if (net != MAC_UNSET && net <= doff) {
		start = net;
	}
	if (doff - start > 512) /* a header offset we do not understand: take skb->data */
		start = doff, s->l2 = 0;
	s->p = head + start;
	s->start = start;
	s->wire = len + (doff - start);
	s->lin = (len - data_len) + (doff - start);
	return 0;
}

static __always_inline int rd8(const struct span *s, __u32 off, __u8 *v)
{
	if (off >= s->lin)
		return -1;
	return bpf_probe_read_kernel(v, 1, s->p + off);
}

static __always_inline int rd16(const struct span *s, __u32 off, __u16 *v)
{
	__be16 raw;
	if (off + 2 > s->lin)
		return -1;
	if (bpf_probe_read_kernel(&raw, 2, s->p + off))
		return -1;
	*v = bpf_ntohs(raw);
	return 0;
}

/* The header facts a filter term looks at. */
struct tuple {
	__u8 family;
	__u8 proto;
	__u8 has_ports;
	__u16 sport;
	__u16 dport;
	__u8 src[16];
	__u8 dst[16];
	__u32 l4; /* offset of the L4 header in the span */
};

/* Parse an IP header at `off` (ethertype `et`) into t. */
static __always_inline int parse_ip(const struct span *s, __u32 off, __u16 et, struct tuple *t)
{
	__u8 b0 = 0, nh = 0;

	__builtin_memset(t, 0, sizeof(*t));
	if (et == ETH_P_IP) {
		__u16 frag = 0;
		if (rd8(s, off, &b0) || (b0 >> 4) != 4)
			return -1;
		t->family = 4;
		if (rd8(s, off + 9, &t->proto) || rd16(s, off + 6, &frag))
			return -1;
		if (off + 20 > s->lin || bpf_probe_read_kernel(t->src, 4, s->p + off + 12) ||
		    bpf_probe_read_kernel(t->dst, 4, s->p + off + 16))
			return -1;
		t->l4 = off + (b0 & 0xF) * 4;
		if (frag & 0x1FFF) /* not the first fragment: no L4 header here */
			return 0;
	} else if (et == ETH_P_IPV6) {
		if (rd8(s, off, &b0) || (b0 >> 4) != 6 || rd8(s, off + 6, &nh))
			return -1;
		t->family = 6;
		if (off + 40 > s->lin || bpf_probe_read_kernel(t->src, 16, s->p + off + 8) ||
		    bpf_probe_read_kernel(t->dst, 16, s->p + off + 24))
			return -1;
		off += 40;
		/* Hop-by-hop, routing, destination options and fragment headers (RFC 8200 4.1). */
		for (int i = 0; i < 4; i++) {
			__u8 hl = 0, next = 0;
			if (nh != 0 && nh != 43 && nh != 60 && nh != 44)
				break;
			if (rd8(s, off, &next) || rd8(s, off + 1, &hl))
				return -1;
			if (nh == 44) {
				__u16 fo = 0;
				if (rd16(s, off + 2, &fo))
					return -1;
				nh = next;
				off += 8;
				if (fo & 0xFFF8) {
					t->proto = nh;
					t->l4 = off;
					return 0;
				}
				continue;
			}
			nh = next;
			off += (hl + 1) * 8;
		}
		t->proto = nh;
		t->l4 = off;
	} else {
		return -1;
	}
	if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP || t->proto == IPPROTO_SCTP ||
	    t->proto == IPPROTO_UDPLITE) {
		if (rd16(s, t->l4, &t->sport) == 0 && rd16(s, t->l4 + 2, &t->dport) == 0)
			t->has_ports = 1;
	}
	return 0;
}

static __always_inline int addr_match(const __u8 *a, const __u8 *want, __u8 prefix)
{
	for (int i = 0; i < 16; i++) {
		int bits = prefix - i * 8;
		__u8 mask;
		if (bits <= 0)
			break;
		mask = bits >= 8 ? 0xFF : (__u8)(0xFF << (8 - bits));
		if ((a[i] ^ want[i]) & mask)
			return 0;
	}
	return 1;
}

/* Global too (checked once, not once per term and path); the kernel may pass NULL for a
 * pointer argument of a global function, so say no to that. */
__attribute__((noinline)) int badsum_term(const struct filter_term *f, const struct tuple *t)
{
	if (!f || !t)
		return 0;
	if (f->family && f->family != t->family)
		return 0;
	switch (f->kind) {
	case TERM_PROTO:
		return !f->proto || f->proto == t->proto;
	case TERM_HOST:
	case TERM_NET: {
		int src = addr_match(t->src, f->addr, f->prefix);
		int dst = addr_match(t->dst, f->addr, f->prefix);
		return f->dir == DIR_SRC ? src : f->dir == DIR_DST ? dst : (src || dst);
	}
	case TERM_PORT:
		if (!t->has_ports || (f->proto && f->proto != t->proto))
			return 0;
		if (f->dir == DIR_SRC)
			return t->sport == f->port;
		if (f->dir == DIR_DST)
			return t->dport == f->port;
		return t->sport == f->port || t->dport == f->port;
	}
	return 0;
}

static __always_inline int all_match(const struct config *c, const struct tuple *t)
{
	for (int i = 0; i < MAX_TERMS; i++) {
		if (i >= c->n_terms)
			break;
		if (!badsum_term(&c->terms[i], t))
			return 0;
	}
	return 1;
}

/* Skip an Ethernet header and up to two VLAN tags at `*off`; returns the ethertype (0: none). */
static __always_inline __u16 skip_eth(const struct span *s, __u32 *off)
{
	__u16 et = 0;
	if (rd16(s, *off + 12, &et))
		return 0;
	*off += 14;
	for (int i = 0; i < 2; i++) {
		if (et != ETH_P_8021Q && et != ETH_P_8021AD)
			break;
		if (rd16(s, *off + 2, &et))
			return 0;
		*off += 4;
	}
	return et;
}

/* The inner packet of a VXLAN, Geneve, GRE or IP-in-IP packet whose outer tuple is `o`. */
static __always_inline int parse_inner(const struct span *s, const struct config *c, const struct tuple *o,
				       struct tuple *t)
{
	__u32 off = o->l4;
	__u16 et = 0;

	if (o->proto == IPPROTO_UDP && o->has_ports) {
		__u8 kind = 0;
		for (int i = 0; i < MAX_TUNNEL_PORTS; i++) {
			if (c->tunnel_port[i] && c->tunnel_port[i] == o->dport) {
				kind = c->tunnel_kind[i];
				break;
			}
		}
		if (kind == TUN_VXLAN) {
			off += 8 + 8;
			et = skip_eth(s, &off);
		} else if (kind == TUN_GENEVE) {
			__u8 optlen = 0;
			if (rd8(s, off + 8, &optlen) || rd16(s, off + 8 + 2, &et))
				return -1;
			off += 8 + 8 + (optlen & 0x3F) * 4;
			if (et == ETH_P_TEB)
				et = skip_eth(s, &off);
		} else {
			return -1;
		}
	} else if (o->proto == IPPROTO_GRE) {
		__u16 flags = 0;
		if (rd16(s, off, &flags) || rd16(s, off + 2, &et))
			return -1;
		off += 4 + ((flags & 0x8000) ? 4 : 0) + ((flags & 0x2000) ? 4 : 0) + ((flags & 0x1000) ? 4 : 0);
		if (et == ETH_P_TEB)
			et = skip_eth(s, &off);
	} else if (o->proto == IPPROTO_IPIP) {
		et = ETH_P_IP;
	} else if (o->proto == IPPROTO_IPV6) {
		et = ETH_P_IPV6;
	} else {
		return -1;
	}
	if (!et)
		return -1;
	return parse_ip(s, off, et, t);
}

/* A global function: the verifier checks it once per program with unknown arguments, instead of
 * once per path into it (which made loading take a second). Scalars only: a global function
 * may not take a pointer to a struct holding a pointer. */
__attribute__((noinline)) int badsum_filter(__u64 p, __u32 lin, __u32 l2, __u32 proto)
{
	__u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	struct span span = { .p = (unsigned char *)p, .lin = lin, .l2 = l2 };
	const struct span *s = &span;
	struct tuple outer, inner;
	__u32 off = 0;
	__u16 et = proto;

	if (!c)
		return 0;
	if (!c->n_terms)
		return 1;
	if (s->l2)
		et = skip_eth(s, &off);
	if (parse_ip(s, off, et, &outer))
		return 0;
	if (all_match(c, &outer))
		return 1;
	if (parse_inner(s, c, &outer, &inner))
		return 0;
	return all_match(c, &inner);
}

/* At most `rate` events per second over all CPUs. The check and the add are not one atomic step,
 * so a burst may pass a few more (at most one per CPU); the window's reset may race the same way. */
static __always_inline int over_rate(const struct config *c, __u64 now)
{
	__u32 zero = 0;
	struct window *w;

	if (!c->rate)
		return 0;
	w = bpf_map_lookup_elem(&rate, &zero);
	if (!w)
		return 1;
	if (now - w->start >= 1000000000ULL) {
		w->start = now;
		w->count = 0;
	}
	if (w->count >= c->rate)
		return 1;
	__sync_fetch_and_add(&w->count, 1);
	return 0;
}

static __always_inline int emit(struct sk_buff *skb, struct net_device *dev, __u8 hook, __u64 location, __u32 reason,
				struct sock *rx_sk)
{
	__u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	struct event *e = bpf_map_lookup_elem(&scratch, &zero);
	struct span s;
	__u16 dev_type = 0;
	__u16 proto;
	__u32 n;
	__u64 now;

	if (!c || !e)
		return 0;
	count(STAT_SEEN);
	if (!dev)
		dev = BPF_CORE_READ(skb, dev);
	if (dev)
		dev_type = BPF_CORE_READ(dev, type);
	proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	packet_span(skb, dev_type, &s);
	if (!badsum_filter((__u64)s.p, s.lin, s.l2, proto))
		return 0;
	count(STAT_MATCHED);
	now = bpf_ktime_get_ns();
	if (over_rate(c, now)) {
		count(STAT_RATE);
		return 0;
	}

	e->ts = now;
	e->skb = (__u64)skb;
	e->location = location;
	e->reason = reason;
	e->hook = hook;
	e->cpu = bpf_get_smp_processor_id();
	e->flags = s.l2 ? EV_L2 : 0;
	e->dev_type = dev_type;
	if (dev) {
		e->ifindex = BPF_CORE_READ(dev, ifindex);
		e->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
		BPF_CORE_READ_STR_INTO(&e->ifname, dev, name);
	} else {
		/* TCP clears skb->dev before it queues to a socket (tcp_v4_rcv); a checksum drop in
		 * tcp_v4_do_rcv has none. The receiving socket (kfree_skb's rx_sk, 6.12+) or the
		 * skb's own socket still says which namespace; skb_iif which device it came in on. */
		struct sock *sk = rx_sk ? rx_sk : BPF_CORE_READ(skb, sk);
		e->ifindex = BPF_CORE_READ(skb, skb_iif);
		e->netns = sk ? BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) : 0;
		e->ifname[0] = 0;
		e->flags |= EV_NO_DEV;
	}
	e->iif = BPF_CORE_READ(skb, skb_iif);
	e->len = BPF_CORE_READ(skb, len);
	e->data_len = BPF_CORE_READ(skb, data_len);
	e->mark = BPF_CORE_READ(skb, mark);
	e->protocol = BPF_CORE_READ(skb, protocol);
	e->csum = BPF_CORE_READ(skb, csum);
	e->csum_start = BPF_CORE_READ(skb, csum_start);
	e->csum_offset = BPF_CORE_READ(skb, csum_offset);
	e->ip_summed = BPF_CORE_READ_BITFIELD_PROBED(skb, ip_summed);
	e->csum_level = BPF_CORE_READ_BITFIELD_PROBED(skb, csum_level);
	if (BPF_CORE_READ_BITFIELD_PROBED(skb, encapsulation))
		e->flags |= EV_ENCAPSULATION;
	if (BPF_CORE_READ_BITFIELD_PROBED(skb, csum_valid))
		e->flags |= EV_CSUM_VALID;
	{
		unsigned char *head = BPF_CORE_READ(skb, head);
		unsigned int end = BPF_CORE_READ(skb, end);
		struct skb_shared_info *si = (struct skb_shared_info *)(head + end);
		e->gso_size = BPF_CORE_READ(si, gso_size);
		e->gso_segs = BPF_CORE_READ(si, gso_segs);
		e->gso_type = BPF_CORE_READ(si, gso_type);
	}
	e->data_offset = s.start;
	e->wire_len = s.wire;

	n = s.lin;
	if (n > c->snaplen)
		n = c->snaplen;
	if (n > MAX_CAP - 1)
		n = MAX_CAP - 1;
	n = bound(n);
	if (n < s.wire)
		e->flags |= EV_CUT;
	e->cap_len = n;
	if (n && bpf_probe_read_kernel(e->data, bound(n), s.p))
		n = e->cap_len = 0;
	if (e->flags & EV_CUT)
		count(STAT_CUT);
	if (bpf_ringbuf_output(&events, e, EVENT_HEADER + bound(n), 0)) {
		count(STAT_RING_FULL);
		return 0;
	}
	count(STAT_SENT);
	return 0;
}

SEC("raw_tp/net_dev_start_xmit")
int on_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	return emit((struct sk_buff *)ctx->args[0], (struct net_device *)ctx->args[1], HOOK_XMIT, 0, 0, 0);
}

SEC("raw_tp/netif_receive_skb")
int on_receive(struct bpf_raw_tracepoint_args *ctx)
{
	return emit((struct sk_buff *)ctx->args[0], 0, HOOK_RECV, 0, 0, 0);
}

SEC("raw_tp/netif_rx")
int on_rx(struct bpf_raw_tracepoint_args *ctx)
{
	return emit((struct sk_buff *)ctx->args[0], 0, HOOK_RX, 0, 0, 0);
}

/* kfree_skb(skb, location, reason, rx_sk) since 6.12: the receiving socket names the namespace of
 * drops that have no device. Attaching fails on kernels with three arguments (the kernel checks
 * how far the program reads into the arguments); the loader then attaches on_drop. */
SEC("raw_tp/kfree_skb")
int on_drop_sk(struct bpf_raw_tracepoint_args *ctx)
{
	return emit((struct sk_buff *)ctx->args[0], 0, HOOK_DROP, ctx->args[1], (__u32)ctx->args[2],
		    (struct sock *)ctx->args[3]);
}

/* kfree_skb(skb, location, reason): 5.17 to 6.11. Only real drops (consume_skb has its own event). */
SEC("raw_tp/kfree_skb")
int on_drop(struct bpf_raw_tracepoint_args *ctx)
{
	return emit((struct sk_buff *)ctx->args[0], 0, HOOK_DROP, ctx->args[1], (__u32)ctx->args[2], 0);
}
