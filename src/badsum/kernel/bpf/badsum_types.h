/* The few kernel types badsum's eBPF programs read, declared with CO-RE relocations.
 *
 * Only the fields used are declared; preserve_access_index makes clang record each access by
 * name, and libbpf relocates it against the running kernel's BTF at load time (nested anonymous
 * structs and unions in the real layout, e.g. sk_buff's `headers` group, are matched by libbpf).
 * This header instead of a bpftool-generated vmlinux.h: the objects then build from committed
 * files alone, and the build does not depend on the build machine's kernel.
 */
#ifndef BADSUM_TYPES_H
#define BADSUM_TYPES_H

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u32 __wsum;

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	char name[16];
	int ifindex;
	unsigned short type;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sock_common {
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct skb_shared_info {
	__u8 nr_frags;
	unsigned short gso_size;
	unsigned short gso_segs;
	unsigned int gso_type;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	int skb_iif;
	unsigned int len;
	unsigned int data_len;
	__u8 ip_summed : 2;
	__u8 csum_level : 2;
	__u8 encapsulation : 1;
	__u8 csum_valid : 1;
	__wsum csum;
	__u16 csum_start;
	__u16 csum_offset;
	__u32 mark;
	__be16 protocol;
	__u16 transport_header;
	__u16 network_header;
	__u16 mac_header;
	unsigned int end;
	unsigned char *head;
	unsigned char *data;
} __attribute__((preserve_access_index));

#endif
