"""TCP header (RFC 9293); only what display and checksum evidence need."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor
from badsum.wire.protofacts import CSUM_AT, IPPROTO_TCP

CHECKSUM_OFFSET = CSUM_AT[IPPROTO_TCP]


@dataclass(frozen=True, slots=True)
class TCPHeader:
    """A TCP header."""

    offset: int
    """Absolute offset of the header."""
    sport: int
    """Source port."""
    dport: int
    """Destination port."""
    seq: int
    """Sequence number."""
    ack: int
    """Acknowledgment number."""
    data_offset: int
    """Header length in bytes."""
    flags: int
    """Flag bits (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...)."""
    window: int
    """Window."""
    checksum: int
    """Checksum as stored."""


def decode(c: Cursor) -> TCPHeader:
    start = c.pos
    sport, dport = c.pull_u16(), c.pull_u16()
    seq, ack = c.pull_u32(), c.pull_u32()
    off_flags = c.pull_u16()
    window, cks = c.pull_u16(), c.pull_u16()
    return TCPHeader(start, sport, dport, seq, ack, (off_flags >> 12) * 4, off_flags & 0x1FF, window, cks)
