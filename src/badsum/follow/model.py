"""What `badsum follow` works on: one record per skb seen at a kernel tracepoint.

The eBPF programs (badsum/kernel/) fill these from `struct sk_buff` at the moment a device
transmits (`net:net_dev_start_xmit`), a device receives (`net:netif_receive_skb`, `net:netif_rx`)
or the kernel frees an skb as dropped (`skb:kfree_skb`). Everything here is plain data: the
analysis (journeys, hop kinds, first bad hop) never talks to the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class IpSummed(IntEnum):
    """`skb->ip_summed` (include/linux/skbuff.h)."""

    NONE = 0
    """Nothing known: the stack verifies the bytes on receive, the field must be right on transmit."""
    UNNECESSARY = 1
    """Already verified (by a NIC, or a device that claimed so: KB-001)."""
    COMPLETE = 2
    """`skb->csum` holds the ones' complement sum of the packet from `csum_start`-ish (receive)."""
    PARTIAL = 3
    """Transmit offload pending: someone downstream must fold the sum at csum_start + csum_offset."""

    @property
    def label(self) -> str:
        return self.name


class Hook(IntEnum):
    """Where the event was taken; codes shared with kernel/follow.bpf.c (`enum hook`)."""

    XMIT = 1
    """net:net_dev_start_xmit: the device is about to transmit the skb."""
    RECV = 2
    """net:netif_receive_skb: the device's receive path hands the skb to the stack."""
    RX = 3
    """net:netif_rx: a device queued the skb for receive (veth without NAPI, tunnels, loopback)."""
    DROP = 4
    """skb:kfree_skb: the skb was freed as dropped, with a reason."""

    @property
    def label(self) -> str:
        return _HOOK_LABEL[self]

    @property
    def direction(self) -> str:
        return "out" if self == Hook.XMIT else "drop" if self == Hook.DROP else "in"


_HOOK_LABEL = {Hook.XMIT: "xmit", Hook.RECV: "recv", Hook.RX: "rx", Hook.DROP: "drop"}

#: `dev->type` values (include/uapi/linux/if_arp.h) that decide how the captured bytes start.
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE, ARPHRD_TUNNEL, ARPHRD_TUNNEL6, ARPHRD_IPGRE = 1, 772, 0xFFFE, 768, 769, 778


@dataclass(frozen=True, slots=True)
class KernelEvent:
    """One skb at one hook, as the eBPF program read it."""

    ts_ns: int
    """CLOCK_MONOTONIC, nanoseconds (bpf_ktime_get_ns); one clock for every device and CPU."""
    hook: Hook
    skb: int
    """The skb's address: the same buffer while it lives (reused after it is freed)."""
    netns: int
    """Inode of the device's network namespace (as `readlink /proc/PID/ns/net`); 0 unknown."""
    ifindex: int
    ifname: str
    ip_summed: IpSummed
    csum: int
    """`skb->csum` (meaningful for COMPLETE)."""
    csum_start: int
    """Offset from skb->head where the pending sum starts (meaningful for PARTIAL)."""
    csum_offset: int
    """Offset of the checksum field from csum_start (16 TCP, 6 UDP)."""
    csum_level: int
    csum_valid: bool
    encapsulation: bool
    """skb->encapsulation: the inner headers are set (a tunnel packet)."""
    gso_size: int
    gso_segs: int
    gso_type: int
    len: int
    """skb->len at the hook."""
    data_len: int
    """Bytes in page fragments (not in the linear head): those were not captured."""
    mark: int
    protocol: int
    """skb->protocol (ethertype, host order)."""
    dev_type: int
    """dev->type (ARPHRD_*): 1 for Ethernet-framed devices."""
    data: bytes
    """Captured bytes, from `data_offset` on."""
    data_offset: int
    """Offset of data[0] from skb->head (the MAC header, or the network header without one)."""
    wire_len: int
    """Length of the whole packet from data[0] (what a capture calls the original length)."""
    l2: bool
    """data starts with an Ethernet header (else with the IP header)."""
    reason: int = 0
    """Drop reason value (DROP only)."""
    reason_name: str = ""
    location: int = 0
    """Address of the kernel code that dropped it (DROP only)."""
    location_name: str = ""
    """That address as `function` (from /proc/kallsyms) where readable."""
    cpu: int = 0
    iif: int = 0
    """skb->skb_iif: the ifindex the skb arrived on (0 for locally made packets)."""

    @property
    def complete(self) -> bool:
        """Every byte of the packet was captured (linear, under the capture bound)."""
        return len(self.data) >= self.wire_len

    @property
    def gso(self) -> bool:
        return self.gso_size > 0


@dataclass(frozen=True, slots=True)
class Device:
    """A device as named in output: `NS:IFNAME`, `host:` for the root namespace."""

    netns: int
    ifindex: int
    ifname: str
    namespace: str
    """The namespace's id as doctor names it (`host`, `c1`, `pid:1234`, a container)."""

    @property
    def label(self) -> str:
        return f"{self.namespace}:{self.ifname}"


@dataclass(frozen=True, slots=True)
class Loss:
    """What the kernel side could not deliver, counted by the eBPF programs."""

    ring_full: int = 0
    """Events dropped because the ring buffer was full (user space too slow)."""
    rate_limited: int = 0
    """Events over the --rate bound, not sent."""
    truncated: int = 0
    """Events whose bytes were cut at the capture bound or the linear head."""
