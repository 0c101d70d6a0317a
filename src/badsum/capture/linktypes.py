"""Names for LINKTYPE_* values (https://www.tcpdump.org/linktypes.html).

Values as they appear in pcap headers and pcapng IDBs; the table itself is stated once, in
badsum.wire.protofacts. `name()` never raises, so a capture of an unknown link type can still be
reported.
"""

from __future__ import annotations

from badsum.wire.protofacts import LINKTYPE_ETHERNET, LINKTYPE_NAMES, LINKTYPE_RAW, RAW_IP_LINKTYPES

__all__ = ["LINKTYPE_ETHERNET", "LINKTYPE_RAW", "NAMES", "RAW_IP", "name"]

NAMES: dict[int, str] = LINKTYPE_NAMES

#: Link types whose frames start directly with an IPv4 or IPv6 header.
RAW_IP = RAW_IP_LINKTYPES


def name(linktype: int) -> str:
    """`ETHERNET`, `LINUX_SLL2`, ...; `LINKTYPE_<n>` for a value without a name."""
    try:
        return NAMES.get(int(linktype), f"LINKTYPE_{int(linktype)}")
    except (TypeError, ValueError, OverflowError):
        return f"LINKTYPE_{linktype!r}"
