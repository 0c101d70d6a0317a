"""UDP (RFC 768) and UDP-Lite (RFC 3828) headers."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor
from badsum.wire.protofacts import CSUM_AT, IPPROTO_UDP

CHECKSUM_OFFSET = CSUM_AT[IPPROTO_UDP]


@dataclass(frozen=True, slots=True)
class UDPHeader:
    """A UDP or UDP-Lite header."""

    offset: int
    """Absolute offset of the header."""
    sport: int
    """Source port."""
    dport: int
    """Destination port."""
    length: int
    """Length field (UDP) or checksum coverage (UDP-Lite)."""
    checksum: int
    """Checksum as stored."""
    lite: bool = False
    """True for UDP-Lite, where `length` is the checksum coverage."""


def decode(c: Cursor, lite: bool = False) -> UDPHeader:
    start = c.pos
    return UDPHeader(start, c.pull_u16(), c.pull_u16(), c.pull_u16(), c.pull_u16(), lite)
