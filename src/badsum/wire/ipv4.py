"""IPv4 (RFC 791) with options; finds the final destination of source-routed packets."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor, DecodeIssue
from badsum.wire.protofacts import IPOPT_END, IPOPT_LSRR, IPOPT_NOP, IPOPT_SSRR



@dataclass(frozen=True, slots=True)
class IPv4Header:
    """An IPv4 header as captured."""

    offset: int
    """Absolute offset of the header in the frame."""
    ihl: int
    """Header length in 32-bit words."""
    tos: int
    """Type of service / DSCP+ECN."""
    total_length: int
    """Total length field (0 on a TSO/LSO frame not yet segmented)."""
    ident: int
    """Identification."""
    dont_fragment: bool
    """DF bit."""
    more_fragments: bool
    """MF bit."""
    frag_offset: int
    """Fragment offset in bytes."""
    ttl: int
    """Time to live."""
    proto: int
    """Protocol of the payload."""
    checksum: int
    """Header checksum as stored."""
    src: bytes
    """Source address (4 bytes)."""
    dst: bytes
    """Destination address (4 bytes)."""
    final_dst: bytes
    """Destination the sender used in the pseudo-header (last hop of LSRR/SSRR, else dst)."""
    header_captured: bool
    """Whether all ihl*4 header bytes are in the capture."""

    @property
    def header_length(self) -> int:
        return self.ihl * 4

    @property
    def is_fragment(self) -> bool:
        return self.more_fragments or self.frag_offset != 0

    @property
    def version(self) -> int:
        return 4


def decode(c: Cursor, issues: list[DecodeIssue]) -> IPv4Header | None:
    """Decode the fixed header and options. Returns None if even the fixed part is not usable."""
    start = c.pos
    c.need(20)
    vihl = c.pull_u8()
    if vihl >> 4 != 4:
        issues.append(DecodeIssue("ipv4.bad_version", start, f"version {vihl >> 4}"))
        return None
    ihl = vihl & 0x0F
    if ihl < 5:
        issues.append(DecodeIssue("ipv4.ihl_too_small", start, f"ihl {ihl}"))
        return None
    tos = c.pull_u8()
    total = c.pull_u16()
    ident = c.pull_u16()
    ff = c.pull_u16()
    ttl = c.pull_u8()
    proto = c.pull_u8()
    cks = c.pull_u16()
    src = c.pull_bytes(4)
    dst = c.pull_bytes(4)
    hlen = ihl * 4
    captured = start + hlen <= c.end
    final = dst
    if captured and hlen > 20:
        final = _source_route_final(c.data[start + 20 : start + hlen], dst, start + 20, issues)
    if total and total < hlen:
        issues.append(DecodeIssue("ipv4.total_length_too_small", start + 2, f"{total} < {hlen}"))
    return IPv4Header(
        offset=start,
        ihl=ihl,
        tos=tos,
        total_length=total,
        ident=ident,
        dont_fragment=bool(ff & 0x4000),
        more_fragments=bool(ff & 0x2000),
        frag_offset=(ff & 0x1FFF) * 8,
        ttl=ttl,
        proto=proto,
        checksum=cks,
        src=src,
        dst=dst,
        final_dst=final,
        header_captured=captured,
    )


def _source_route_final(opts: bytes, dst: bytes, base: int, issues: list[DecodeIssue]) -> bytes:
    """RFC 791 3.1: with LSRR/SSRR the sender's pseudo-header uses the route's last address."""
    i = 0
    final = dst
    while i < len(opts):
        kind = opts[i]
        if kind == IPOPT_END:
            break
        if kind == IPOPT_NOP:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2 or i + opts[i + 1] > len(opts):
            issues.append(DecodeIssue("ipv4.bad_option_length", base + i, f"option {kind}"))
            break
        olen = opts[i + 1]
        if kind in (IPOPT_LSRR, IPOPT_SSRR) and olen >= 7:
            ptr = opts[i + 2]
            route = opts[i + 3 : i + olen]
            # Addresses left to visit (pointer not past the end): the last one is the final hop.
            if ptr <= olen and len(route) >= 4:
                final = bytes(route[(len(route) // 4 - 1) * 4 : (len(route) // 4) * 4])
        i += olen
    return final
