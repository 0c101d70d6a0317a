"""Kernel events for the follow tests, with packets built by scapy (an independent builder).

`Kit` hands out KernelEvents the way the eBPF programs fill them: bytes from the MAC header at
`HEAD` bytes of headroom, csum_start counted from skb->head, one clock for every device.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builders import ones_sum, pseudo4
from scapy.all import IP, TCP, UDP, VXLAN, Ether, Raw

from badsum.follow.model import ARPHRD_ETHER, Hook, IpSummed, KernelEvent
from badsum.follow.result import follow_analysis, to_data

#: skb->head to the MAC header (what NET_SKB_PAD and a little more leave in front).
HEAD = 64
NETNS = {"host": 4026531840, "c1": 4026532301, "c2": 4026532302, "relay": 4026532303, "node1": 4026532304,
         "node2": 4026532305}
NAMES = {inode: name for name, inode in NETNS.items()}
A, B = "192.0.2.1", "192.0.2.2"
N1, N2, NAT = "198.51.100.1", "198.51.100.2", "203.0.113.1"
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
PAYLOAD = bytes(range(256)) * 2


def syn(*, ip_id: int = 7, seq: int = 1000, sport: int = 40000, dport: int = 80, pending: bool = False) -> bytes:
    """A TCP SYN; with `pending`, its checksum field holds the pseudo-header sum alone (RFC 793 3.1)."""
    pkt = Ether(bytes(Ether(**MAC) / IP(src=A, dst=B, id=ip_id, flags="DF") / TCP(sport=sport, dport=dport, flags="S", seq=seq)))
    if pending:
        pkt[TCP].chksum = pseudo4(A, B, 6, len(pkt[TCP]))
    return bytes(pkt)


def data_segment(payload: bytes = PAYLOAD, *, ip_id: int = 9, seq: int = 5000, pending: bool = False) -> bytes:
    pkt = Ether(bytes(Ether(**MAC) / IP(src=A, dst=B, id=ip_id, flags="DF") / TCP(sport=40000, dport=80, flags="PA", seq=seq, ack=1)
                      / Raw(payload)))  # fmt: skip
    if pending:
        pkt[TCP].chksum = pseudo4(A, B, 6, len(pkt[TCP]))
    return bytes(pkt)


def vxlan(inner: bytes, *, src: str = N1, sport: int = 40000, chksum: int | None = 0, ip_id: int = 5,
          dport: int = 4789) -> bytes:  # fmt: skip
    """`inner` (an Ethernet frame) in VXLAN over UDP 4789; `chksum` None: scapy computes it."""
    return bytes(Ether(**MAC) / IP(src=src, dst=N2, id=ip_id) / UDP(sport=sport, dport=dport, chksum=chksum) / VXLAN(vni=42)
                 / Ether(inner))  # fmt: skip


def good_tcp_sum(frame: bytes) -> int:
    """The TCP checksum scapy computes for this frame's (innermost) TCP header."""
    pkt = Ether(frame)
    tcp = pkt[TCP]
    tcp.chksum = None
    return Ether(bytes(pkt))[TCP].chksum


def wsum_le(data: bytes) -> int:
    """What a little-endian CPU holds in skb->csum for `data` (the ones' complement sum, byte-swapped)."""
    s = ones_sum(data)
    return (s & 0xFF) << 8 | s >> 8


class Kit:
    """Events in time order, 1 µs apart unless `at` is given."""

    def __init__(self) -> None:
        self.events: list[KernelEvent] = []
        self.now = 1_000_000_000
        self._ifindex: dict[tuple[str, str], int] = {}

    def add(self, hook: Hook, skb: int, dev: str, frame: bytes, *, summed: IpSummed = IpSummed.NONE, l4: int | None = None,
            csum_offset: int = 16, csum: int = 0, level: int = 0, wire_len: int | None = None, data_len: int = 0,
            gso_size: int = 0, reason: str = "", at: int | None = None, l2: bool = True, mark: int = 0) -> KernelEvent:  # fmt: skip
        """`dev` is `NS:IFNAME`; `l4`: offset of the pending checksum's L4 header in `frame` (default: the outer one)."""
        ns, _, ifname = dev.partition(":")
        self.now = at if at is not None else self.now + 1000
        if l4 is None:
            l4 = 14 + (frame[14] & 0x0F) * 4 if len(frame) > 14 else 0
        ifindex = self._ifindex.setdefault((ns, ifname), len(self._ifindex) + 2)
        ev = KernelEvent(
            ts_ns=self.now, hook=hook, skb=skb, netns=NETNS.get(ns, 0), ifindex=ifindex, ifname=ifname, ip_summed=summed,
            csum=csum, csum_start=HEAD + l4 if summed == IpSummed.PARTIAL else 0,
            csum_offset=csum_offset if summed == IpSummed.PARTIAL else 0, csum_level=level, csum_valid=False,
            encapsulation=False, gso_size=gso_size, gso_segs=0, gso_type=0, len=wire_len or len(frame), data_len=data_len,
            mark=mark, protocol=int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0, dev_type=ARPHRD_ETHER,
            data=frame, data_offset=HEAD, wire_len=wire_len or len(frame), l2=l2, reason=13 if reason else 0,
            reason_name=reason, location=0xFFFFFFFF81000000 if reason else 0, location_name="tcp_v4_rcv" if reason else "",
        )  # fmt: skip
        self.events.append(ev)
        return ev

    def data(self) -> dict:
        return to_data(follow_analysis(self.events, NAMES))


def only_flow(data: dict) -> dict:
    fwd = [f for f in data["flows"] if f["direction"] == "forward"]
    assert len(fwd) == 1, [f["text"] for f in data["flows"]]
    return fwd[0]


def kinds(flow: dict) -> list[tuple[str, str, str]]:
    """(device, hook, kind) of every hop of the flow's first journey."""
    return [(h["device"], h["hook"], h["kind"]) for h in flow["journeys"][0]["hops"]]
