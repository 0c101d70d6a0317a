"""IGMP (RFC 2236/3376) header."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor
from badsum.wire.protofacts import CSUM_AT, IPPROTO_IGMP

CHECKSUM_OFFSET = CSUM_AT[IPPROTO_IGMP]


@dataclass(frozen=True, slots=True)
class IGMPHeader:
    """An IGMP header."""

    offset: int
    """Absolute offset of the header."""
    type: int
    """Message type."""
    checksum: int
    """Checksum as stored."""


def decode(c: Cursor) -> IGMPHeader:
    start = c.pos
    t = c.pull_u8()
    c.skip(1)
    return IGMPHeader(start, t, c.pull_u16())
