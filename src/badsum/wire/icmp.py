"""ICMP (RFC 792) and ICMPv6 (RFC 4443) headers; which types quote an offending packet."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor
from badsum.wire.protofacts import CSUM_AT, IPPROTO_ICMP

CHECKSUM_OFFSET = CSUM_AT[IPPROTO_ICMP]

#: ICMPv4 types whose body quotes the IP header and the first bytes of the offending packet.
ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})
#: ICMPv6 error types (RFC 4443 2.1: types 0-127 are errors) that quote the offending packet.
ICMP6_ERRORS = frozenset({1, 2, 3, 4})

ICMP4_DEST_UNREACH = 3
ICMP4_FRAG_NEEDED = 4  # code of type 3
ICMP6_PACKET_TOO_BIG = 2


@dataclass(frozen=True, slots=True)
class ICMPHeader:
    """An ICMP or ICMPv6 header."""

    offset: int
    """Absolute offset of the header."""
    type: int
    """Message type."""
    code: int
    """Message code."""
    checksum: int
    """Checksum as stored."""
    rest: int
    """The 32-bit rest-of-header (echo id/seq, next-hop MTU, Packet Too Big MTU, ...)."""
    v6: bool
    """True for ICMPv6."""

    @property
    def is_error(self) -> bool:
        return self.type in (ICMP6_ERRORS if self.v6 else ICMP4_ERRORS)

    @property
    def mtu(self) -> int | None:
        """The MTU an ICMP frag-needed or ICMPv6 Packet Too Big reports."""
        if self.v6 and self.type == ICMP6_PACKET_TOO_BIG:
            return self.rest
        if not self.v6 and self.type == ICMP4_DEST_UNREACH and self.code == ICMP4_FRAG_NEEDED:
            return self.rest & 0xFFFF
        return None


def decode(c: Cursor, v6: bool) -> ICMPHeader:
    start = c.pos
    t, code = c.pull_u8(), c.pull_u8()
    cks = c.pull_u16()
    rest = c.pull_u32() if c.remaining >= 4 else 0
    return ICMPHeader(start, t, code, cks, rest, v6)
