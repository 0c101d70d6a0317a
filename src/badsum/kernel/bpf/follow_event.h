/* The records shared by the eBPF programs and badsum/kernel/records.py (which checks the sizes).
 * Fixed layout, no implicit padding: user space reads it with struct.unpack. */
#ifndef BADSUM_FOLLOW_EVENT_H
#define BADSUM_FOLLOW_EVENT_H

/* Bytes captured per event are fewer than this (the whole packet when linear and under it). */
#define MAX_CAP 2048
#define MAX_TERMS 8
#define MAX_TUNNEL_PORTS 8

enum hook { HOOK_XMIT = 1, HOOK_RECV = 2, HOOK_RX = 3, HOOK_DROP = 4 };

enum event_flag {
	EV_ENCAPSULATION = 1,
	EV_CSUM_VALID = 2,
	EV_L2 = 4,      /* data starts with an Ethernet header */
	EV_CUT = 8,     /* fewer bytes captured than the packet has */
	EV_NO_DEV = 16, /* no skb->dev: namespace from the receiving socket, ifindex from skb_iif */
};

struct event {
	__u64 ts;
	__u64 skb;
	__u64 location;
	__u32 netns;
	__u32 ifindex;
	__u32 len;
	__u32 data_len;
	__u32 csum;
	__u32 mark;
	__u32 reason;
	__u32 wire_len;
	__u16 csum_start;
	__u16 csum_offset;
	__u16 gso_size;
	__u16 gso_segs;
	__u32 gso_type;
	__u16 protocol; /* as in the skb: network byte order */
	__u16 dev_type;
	__u16 data_offset;
	__u16 cap_len;
	__u8 hook;
	__u8 ip_summed;
	__u8 csum_level;
	__u8 flags;
	__u32 cpu;
	__u32 iif; /* skb->skb_iif: the device it arrived on (a drop with no skb->dev still has it) */
	char ifname[16];
	__u8 data[MAX_CAP];
};
#define EVENT_HEADER 104

enum term_kind { TERM_PROTO = 1, TERM_HOST = 2, TERM_NET = 3, TERM_PORT = 4 };
enum term_dir { DIR_ANY = 0, DIR_SRC = 1, DIR_DST = 2 };
enum tunnel_kind { TUN_VXLAN = 1, TUN_GENEVE = 2 };

struct filter_term {
	__u8 kind;
	__u8 dir;
	__u8 family; /* 0 any, 4, 6 */
	__u8 proto;  /* IP protocol (TERM_PROTO, or a TERM_PORT limited to tcp/udp/sctp); 0 any */
	__u16 port;
	__u8 prefix;
	__u8 _pad;
	__u8 addr[16];
};

struct config {
	__u32 n_terms;
	__u32 snaplen;
	__u32 rate;  /* events per second over all CPUs; 0 = no bound */
	__u32 flags;
	__u16 tunnel_port[MAX_TUNNEL_PORTS];
	__u8 tunnel_kind[MAX_TUNNEL_PORTS];
	struct filter_term terms[MAX_TERMS];
};

enum stat {
	STAT_SEEN = 0,     /* hook hits */
	STAT_MATCHED = 1,  /* passed the filter */
	STAT_SENT = 2,     /* written to the ring buffer */
	STAT_RING_FULL = 3,
	STAT_RATE = 4,     /* over the rate bound */
	STAT_CUT = 5,      /* sent with fewer bytes than the packet has */
	N_STATS = 6,
};

/* The drop counter of `watch` and `exporter`: drops by the skb's own namespace and device. */
struct drop_key {
	__u32 netns;
	__u32 ifindex;
	__u32 reason;
	__u16 protocol;
	__u16 _pad;
	__u64 location;
};

struct drop_value {
	__u64 count;
	char ifname[16];
};

#endif
