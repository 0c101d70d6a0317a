"""Link layers: Ethernet with 802.1Q/802.1ad tags, Linux cooked SLL/SLL2, NULL/LOOP, PPP, raw IP."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor
from badsum.wire.protofacts import (
    DECODED_LINKTYPES,
    ETH_P_802_3_MIN,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_P_TEB,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_PPP,
    LINKTYPE_PPP_HDLC,
    LINKTYPE_RAW,
    LINKTYPE_RAW_12,
    LINKTYPE_RAW_14,
    MAX_VLAN_TAGS,
    NULL_AF_INET,
    NULL_AF_INET6,
    VLAN_TPIDS,
)

# Importers name these through this module (frame.py, checksum/, follow/, cli/); they are stated
# in wire/protofacts.py.
__all__ = [
    "ETH_P_IP",
    "ETH_P_IPV6",
    "ETH_P_TEB",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "MAX_VLAN_TAGS",
    "SUPPORTED",
    "VLAN_TPIDS",
    "LinkHeader",
    "decode_link",
    "ethernet",
    "ethertype_of_ip_version",
]

#: Link types badsum decodes. Anything else is counted as unknown, never fatal.
SUPPORTED = DECODED_LINKTYPES

_PPP_TO_ETHERTYPE = {0x0021: ETH_P_IP, 0x0057: ETH_P_IPV6}


@dataclass(frozen=True, slots=True)
class LinkHeader:
    """The link-layer framing in front of the network layer."""

    kind: str
    """`ethernet`, `sll`, `sll2`, `null`, `ppp`, `raw`."""
    offset: int
    """Absolute offset of the link header."""
    ethertype: int
    """Network protocol as an ethertype (0 when unknown)."""
    vlans: tuple[int, ...] = ()
    """VLAN ids, outer first."""
    src: bytes = b""
    """Source MAC (Ethernet) or link address (SLL)."""
    dst: bytes = b""
    """Destination MAC (Ethernet)."""


def ethernet(c: Cursor) -> LinkHeader:
    """Ethernet II (RFC 894) with any stack of 802.1Q/802.1ad tags."""
    start = c.pos
    dst = c.pull_bytes(6)
    src = c.pull_bytes(6)
    etype, vlans = _vlan_tags(c, c.pull_u16())
    if etype < ETH_P_802_3_MIN:  # 802.3 length field: LLC/SNAP, not IP
        etype = 0
    return LinkHeader("ethernet", start, etype, vlans, src, dst)


def _vlan_tags(c: Cursor, etype: int) -> tuple[int, tuple[int, ...]]:
    """Follow 802.1Q/802.1ad tags. libpcap re-inserts a tag the NIC stripped (also after SLL)."""
    vlans: list[int] = []
    while etype in VLAN_TPIDS and len(vlans) < MAX_VLAN_TAGS:
        vlans.append(c.pull_u16() & 0x0FFF)
        etype = c.pull_u16()
    return etype, tuple(vlans)


def ethertype_of_ip_version(version_byte: int) -> int:
    v = version_byte >> 4
    return ETH_P_IP if v == 4 else ETH_P_IPV6 if v == 6 else 0


def decode_link(c: Cursor, linktype: int) -> LinkHeader | None:
    """Decode the link header for `linktype`; None for link types badsum does not know."""
    start = c.pos
    if linktype == LINKTYPE_ETHERNET:
        return ethernet(c)
    if linktype == LINKTYPE_LINUX_SLL:
        c.skip(2)  # packet type
        c.skip(2)  # ARPHRD
        alen = c.pull_u16()
        addr = c.pull_bytes(8)[: min(alen, 8)]
        proto, vlans = _vlan_tags(c, c.pull_u16())
        return LinkHeader("sll", start, proto if proto >= ETH_P_802_3_MIN else 0, vlans, src=addr)
    if linktype == LINKTYPE_LINUX_SLL2:
        first = c.pull_u16()
        c.skip(2 + 4 + 2 + 1 + 1)  # reserved, ifindex, ARPHRD, packet type, addr len
        addr = c.pull_bytes(8)
        proto, vlans = _vlan_tags(c, first)
        return LinkHeader("sll2", start, proto if proto >= ETH_P_802_3_MIN else 0, vlans, src=addr)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        raw = c.pull_bytes(4)
        # NULL stores the family in host byte order of the capturing machine; LOOP in network order.
        fam = min(int.from_bytes(raw, "little"), int.from_bytes(raw, "big"))
        etype = ETH_P_IP if fam == NULL_AF_INET else ETH_P_IPV6 if fam in NULL_AF_INET6 else 0
        return LinkHeader("null", start, etype)
    if linktype in (LINKTYPE_PPP, LINKTYPE_PPP_HDLC):
        first = c.pull_u8()
        if first == 0xFF:  # address/control 0xff 0x03
            c.skip(1)
            proto = c.pull_u16()
        else:
            proto = (first << 8) | c.pull_u8()
        return LinkHeader("ppp", start, _PPP_TO_ETHERTYPE.get(proto, 0))
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14):
        c.need(1)
        return LinkHeader("raw", start, ethertype_of_ip_version(c.data[c.pos]))
    if linktype == LINKTYPE_IPV4:
        return LinkHeader("raw", start, ETH_P_IP)
    if linktype == LINKTYPE_IPV6:
        return LinkHeader("raw", start, ETH_P_IPV6)
    return None
