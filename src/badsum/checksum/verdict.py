"""Checksum verdicts: the vocabulary shared by the fast path, the detailed decoder and reports.

The integer codes below are a contract with the C scanner (`badsum/native/fs_common.h`) and must
not be renumbered: the scanner writes them into `ISSUE_DTYPE` rows and the `counts` cube.
Verdicts and flows are plain data; their reasons and records are `badsum.report.records`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np

from badsum.wire import protofacts


class Status(IntEnum):
    """What a stored checksum means."""

    OK = 0
    BAD = 1
    #: The stored value is the pseudo-header sum alone: transmit offload not done yet.
    PARTIAL = 2
    #: UDP over IPv4 with checksum 0 (RFC 768: "no checksum").
    ZERO_ALLOWED = 3
    #: UDP over IPv6 with checksum 0 outside the tunnel exemptions of RFC 6935/6936.
    ZERO_INVALID = 4
    #: Cannot be judged: truncated by snaplen, or a fragment never completed.
    UNVERIFIABLE = 5
    #: Right for another address/port tuple (NAT rewrote the header and not the sum). Trace only.
    NAT_STALE = 6

    @property
    def label(self) -> str:
        return _STATUS_LABEL[self]

    @classmethod
    def from_label(cls, label: str) -> "Status":
        return _STATUS_BY_LABEL[label]


_STATUS_LABEL = {
    Status.OK: "ok",
    Status.BAD: "bad",
    Status.PARTIAL: "partial",
    Status.ZERO_ALLOWED: "zero-allowed",
    Status.ZERO_INVALID: "zero-invalid",
    Status.UNVERIFIABLE: "unverifiable",
    Status.NAT_STALE: "nat-stale",
}
_STATUS_BY_LABEL = {v: k for k, v in _STATUS_LABEL.items()}


class Layer(IntEnum):
    """Which checksum: the protocol whose header carries it."""

    IPV4 = 0
    TCP = 1
    UDP = 2
    UDPLITE = 3
    ICMP = 4
    ICMPV6 = 5
    IGMP = 6
    SCTP = 7
    GRE = 8

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> "Layer":
        return cls[label.upper()]


class VerdictFlag(IntFlag):
    """Extra facts about one checksum verdict (bit values shared with the C scanner)."""

    NONE = 0
    #: The packet is a GSO/TSO/GRO super-frame (larger than a 1500-byte MTU, or IP length 0).
    GSO = 0x01
    #: The kernel's own per-packet status (PACKET_AUXDATA tp_status) decided the verdict.
    KERNEL = 0x02
    #: Windows LSO variant: IPv4 total length 0, pseudo-header sum taken with length 0.
    LSO_LEN0 = 0x04
    #: UDP checksum 0 over IPv6 accepted under the RFC 6935/6936 tunnel exemption.
    TUNNEL_ZERO = 0x08
    #: Verified on a datagram reassembled from IP fragments.
    REASSEMBLED = 0x10
    #: IPv4 header checksum left as 0 for the NIC to fill in (header checksum offload).
    HDR_OFFLOAD = 0x20
    #: Unverifiable because the frame was cut by the snap length.
    TRUNCATED = 0x40
    #: Unverifiable because the fragment's datagram never completed.
    INCOMPLETE_FRAGMENT = 0x80


#: Depth cube bound: tunnel depth 0 (outermost) .. MAX_DEPTH-1; deeper levels are clipped.
MAX_DEPTH = protofacts.MAX_DEPTH
N_LAYERS = len(Layer)
N_STATUS = len(Status)

# Kernel per-packet status bits from <linux/if_packet.h> (tpacket_auxdata.tp_status).
TP_STATUS_CSUMNOTREADY = 0x8
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_CSUM_VALID = 0x80
TP_STATUS_GSO_TCP = 0x100
TP_STATUS_UNKNOWN = 0xFFFFFFFF  # no kernel status recorded for this packet

#: One row per non-ok checksum, written by both paths. 72 bytes, no implicit padding (C struct mirror).
ISSUE_DTYPE = np.dtype(
    [
        ("frame", "<u8"),  # 1-based frame number, as tshark counts
        ("offset", "<u4"),  # byte offset of the checksum field within the frame
        ("stored", "<u4"),
        ("computed", "<u4"),
        ("extra", "<u4"),  # status-specific: L4 length used for partial, covered length, ...
        ("layer", "u1"),
        ("depth", "u1"),  # 0 = outermost
        ("status", "u1"),
        ("flags", "u1"),  # VerdictFlag
        ("ipver", "u1"),  # 4 or 6 (0: no IP)
        ("proto", "u1"),  # IP protocol of the flow
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("_pad", "V6"),
        ("src", "V16"),  # IPv4 in the first 4 bytes, rest zero
        ("dst", "V16"),
    ]
)
assert ISSUE_DTYPE.itemsize == 72


@dataclass(frozen=True, slots=True)
class Flow:
    """The 5-tuple of the IP packet that carries a checksum."""

    ipver: int
    """4 or 6; 0 when there is no IP layer."""
    src: str
    """Source address, text form."""
    dst: str
    """Destination address, text form."""
    proto: int
    """IP protocol number."""
    sport: int
    """Source port (0 when the protocol has none)."""
    dport: int
    """Destination port (0 when the protocol has none)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The evidence for one checksum in one frame."""

    frame: int
    """1-based frame number in the capture."""
    layer: Layer
    """The protocol whose checksum this is."""
    depth: int
    """Tunnel depth: 0 is the outermost packet."""
    offset: int
    """Byte offset of the checksum field within the frame."""
    stored: int
    """The value found in the packet."""
    computed: int
    """The value the packet should carry (for partial: the full checksum)."""
    status: Status
    """The classification."""
    flags: VerdictFlag
    """Extra facts (GSO, kernel-decided, reassembled, ...)."""
    flow: Flow | None
    """The IP 5-tuple of the packet carrying the checksum."""
    extra: int = 0
    """Status-specific number (L4 length used for a partial sum, bytes missing, ...)."""
