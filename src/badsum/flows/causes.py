"""Which known issues (rules/catalogue.toml ids) produce which symptom: data, in one ordered table.

A line applies to a symptom of its kind when every `when` condition holds: a details key whose
value must be one of the listed values, or `tunnelled` (the flow was inside VXLAN/Geneve/GRE).
The facts behind each line are in ../shared/reference/known-issues.md and known-issues-2.md; a
test checks every id against the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from badsum.flows.symptom import Cause, Kind


@dataclass(frozen=True, slots=True)
class CauseLine:
    kind: Kind
    id: str
    why: str
    when: dict[str, Any] = field(default_factory=dict)


CAUSES: tuple[CauseLine, ...] = (
    # SYN ladders: the handshake is lost one way, again and again.
    CauseLine(Kind.SYN_RETRIES, "KB-004", "VXLAN outer UDP checksum broken by a second SNAT: the 1 s / 63 s connect delays",
              {"outcome": ["connected", "unanswered"]}),
    CauseLine(Kind.SYN_RETRIES, "KB-006", "vmxnet3 tunnel offload corrupts encapsulated packets, so handshakes are lost",
              {"tunnelled": True}),
    CauseLine(Kind.SYN_RETRIES, "KB-005", "OVS userspace datapath forwards the SYN with an unfinished (partial) checksum",
              {"outcome": ["unanswered"]}),
    CauseLine(Kind.SYN_RETRIES, "KB-007", "an AF_PACKET forwarder passes on the SYN with only the pseudo-header sum",
              {"outcome": ["unanswered"]}),
    # The same segment sent again with a checksum the receiver rejects.
    CauseLine(Kind.BAD_RETRANSMISSIONS, "KB-005", "OVS userspace datapath forwards CHECKSUM_PARTIAL packets unfinished",
              {"status": ["partial", "mixed"]}),
    CauseLine(Kind.BAD_RETRANSMISSIONS, "KB-007", "AF_PACKET forwarders (Weave sleeve, VPP) see and resend partial checksums",
              {"status": ["partial", "mixed"]}),
    CauseLine(Kind.BAD_RETRANSMISSIONS, "KB-006", "vmxnet3 tunnel checksum offload corrupts the checksum of encapsulated packets",
              {"status": ["bad", "mixed"], "tunnelled": True}),
    CauseLine(Kind.BAD_RETRANSMISSIONS, "KB-008", "'hw csum failure': packets with CHECKSUM_COMPLETE crossing veth are dropped",
              {"status": ["bad", "mixed"]}),
    # Ping works, TCP/UDP do not: only the offloaded (L4-checksummed) traffic breaks.
    CauseLine(Kind.ICMP_ONLY, "KB-005", "ICMP checksums are computed in software, TCP/UDP ones are left partial by OVS userspace"),
    CauseLine(Kind.ICMP_ONLY, "KB-007", "AF_PACKET forwarders pass partial TCP/UDP checksums; ICMP is always complete"),
    CauseLine(Kind.ICMP_ONLY, "KB-004", "double SNAT of VXLAN breaks the outer UDP checksum of every tunnelled packet",
              {"tunnelled": True}),
    # Path MTU.
    CauseLine(Kind.PMTU, "CFG-OVERLAY-MTU", "the overlay MTU plus encapsulation exceeds the underlay MTU"),
    CauseLine(Kind.PMTU, "KB-003", "DF tunnel packets larger than the underlay get frag-needed instead of being fragmented"),
    CauseLine(Kind.PMTU, "KB-010", "VXLAN vport capped at MTU 1500 on Linux 4.3/4.4", {"mtu": [1500]}),
    CauseLine(Kind.DF_OVERSIZE, "KB-002", "UDP fragmentation offload ignores DF and builds packets larger than the path MTU"),
    CauseLine(Kind.DF_OVERSIZE, "KB-003", "DF tunnel packets larger than the underlay are dropped, not fragmented"),
    CauseLine(Kind.DF_OVERSIZE, "CFG-OVERLAY-MTU", "the overlay MTU plus encapsulation exceeds the underlay MTU"),
    CauseLine(Kind.BLACKHOLE, "CFG-OVERLAY-MTU", "large packets do not fit the underlay and the ICMP that says so is lost"),
    CauseLine(Kind.BLACKHOLE, "KB-003", "DF tunnel packets larger than the underlay are dropped, not fragmented"),
    CauseLine(Kind.BLACKHOLE, "KB-010", "VXLAN vport capped at MTU 1500 on Linux 4.3/4.4"),
    # Overlays.
    CauseLine(Kind.TUNNEL_OUTER_CSUM, "KB-004", "a second SNAT 'updates' the outer UDP checksum that VXLAN left at 0",
              {"tunnel": ["vxlan"]}),
    CauseLine(Kind.TUNNEL_OUTER_CSUM, "KB-006", "vmxnet3 tunnel offload writes wrong VXLAN/Geneve checksums"),
    CauseLine(Kind.HEARTBEAT_UNANSWERED, "KB-010", "Weave fastdp heartbeats sized to the MTU do not leave a 4.3/4.4 VXLAN vport"),
    CauseLine(Kind.HEARTBEAT_UNANSWERED, "KB-003", "DF fastdp packets larger than the underlay are dropped"),
    CauseLine(Kind.HEARTBEAT_UNANSWERED, "CFG-OVERLAY-MTU", "the overlay MTU plus encapsulation exceeds the underlay MTU"),
    CauseLine(Kind.TUNNEL_ZERO_CSUM, "KB-016", "receivers without 89e5c58fc1e2 (Linux 5.12, 4.9.268) do not GRO UDP tunnel "
              "packets whose outer checksum is 0: more packets per byte, less throughput, no loss"),
    CauseLine(Kind.UDP6_CSUM_ERRORS, "KB-011", "IPv6 NAT updated the addresses and left a CHECKSUM_COMPLETE skb->csum wrong "
              "(inet_proto_csum_replace16 before 189c9b1e9453): the stack drops a datagram whose sum is right"),
    CauseLine(Kind.HEARTBEAT_UNANSWERED, "KB-002", "Weave sleeve's PMTU probe is built over the MTU with UFO on virtio_net"),
)


def _holds(line: CauseLine, details: dict[str, Any], depth: int) -> bool:
    for key, want in line.when.items():
        if key == "tunnelled":
            if (depth > 0) != want:
                return False
        elif details.get(key) not in want:
            return False
    return True


def causes_for(kind: Kind, details: dict[str, Any], depth: int = 0) -> tuple[Cause, ...]:
    return tuple(Cause(c.id, c.why) for c in CAUSES if c.kind is kind and _holds(c, details, depth))
