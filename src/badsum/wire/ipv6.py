"""IPv6 (RFC 8200) with extension headers, jumbograms (RFC 2675), RH0/SRH and Home Address."""

from __future__ import annotations

from dataclasses import dataclass

from badsum.wire.cursor import Cursor, DecodeIssue, Short
from badsum.wire import protofacts as pf

# The header names as RFC 8200 uses them; the numbers live in wire/protofacts.py.
HOPOPT = pf.IPPROTO_HOPOPTS
ROUTING = pf.IPPROTO_ROUTING
FRAGMENT = pf.IPPROTO_FRAGMENT
ESP = pf.IPPROTO_ESP
AH = pf.IPPROTO_AH
NONE = pf.IPPROTO_NONE
DSTOPTS = pf.IPPROTO_DSTOPTS
MOBILITY = pf.IPPROTO_MH
HIP = pf.IPPROTO_HIP
SHIM6 = pf.IPPROTO_SHIM6
EXT_HEADERS = pf.IPV6_EXT_HEADERS
MAX_EXT_HEADERS = pf.MAX_IPV6_EXT_HEADERS

OPT_JUMBO = pf.IPV6_OPT_JUMBO
OPT_HOME_ADDRESS = 0xC9


@dataclass(frozen=True, slots=True)
class Fragment6:
    """An IPv6 Fragment header."""

    offset: int
    """Absolute offset of the fragment header."""
    next_header: int
    """Protocol of the fragmentable part."""
    frag_offset: int
    """Fragment offset in bytes."""
    more: bool
    """M flag."""
    ident: int
    """Identification."""
    prev_nh_offset: int
    """Absolute offset of the Next Header byte that names the fragment header."""


@dataclass(frozen=True, slots=True)
class IPv6Header:
    """An IPv6 header with what its extension headers change for checksums."""

    offset: int
    """Absolute offset of the fixed header."""
    traffic_class: int
    """Traffic class."""
    flow_label: int
    """Flow label."""
    payload_length: int
    """Payload length field (0 with a jumbogram or a BIG TCP super-frame)."""
    hop_limit: int
    """Hop limit."""
    src: bytes
    """Source address (16 bytes)."""
    dst: bytes
    """Destination address (16 bytes)."""
    proto: int
    """Upper-layer protocol after the extension headers (59 when none)."""
    upper_offset: int
    """Absolute offset of the upper-layer header."""
    pseudo_src: bytes
    """Source for the pseudo-header (the Home Address option, if present)."""
    pseudo_dst: bytes
    """Destination for the pseudo-header (final segment of RH0/SRH, if segments are left)."""
    jumbo_length: int | None
    """Jumbo Payload option value, if present."""
    fragment: Fragment6 | None
    """The Fragment header, if any."""
    ext: tuple[int, ...]
    """Extension header types in order."""

    @property
    def is_fragment(self) -> bool:
        return self.fragment is not None and (self.fragment.more or self.fragment.frag_offset != 0)

    @property
    def version(self) -> int:
        return 6

    def packet_length(self) -> int | None:
        """Bytes from the fixed header to the end of the packet, if the header tells."""
        if self.payload_length:
            return 40 + self.payload_length
        if self.jumbo_length is not None:
            return 40 + self.jumbo_length
        return None


def decode(c: Cursor, issues: list[DecodeIssue]) -> IPv6Header | None:
    start = c.pos
    c.need(40)
    word = c.pull_u32()
    if word >> 28 != 6:
        issues.append(DecodeIssue("ipv6.bad_version", start, f"version {word >> 28}"))
        return None
    plen = c.pull_u16()
    nh = c.pull_u8()
    hlim = c.pull_u8()
    src = c.pull_bytes(16)
    dst = c.pull_bytes(16)
    pseudo_src, pseudo_dst = src, dst
    jumbo: int | None = None
    frag: Fragment6 | None = None
    ext: list[int] = []
    prev_nh = start + 6
    try:
        while nh in EXT_HEADERS and len(ext) < MAX_EXT_HEADERS:
            here = c.pos
            ext.append(nh)
            if nh == FRAGMENT:
                nxt = c.pull_u8()
                c.skip(1)
                fo = c.pull_u16()
                ident = c.pull_u32()
                frag = Fragment6(here, nxt, fo & 0xFFF8, bool(fo & 1), ident, prev_nh)
                prev_nh, nh = here, nxt
                if frag.frag_offset:  # later fragments: the rest is payload, not headers
                    break
                continue
            nxt = c.pull_u8()
            hl = c.pull_u8()
            size = (hl + 2) * 4 if nh == AH else (hl + 1) * 8
            body = c.data[here + 2 : here + size]
            c.skip(size - 2)
            if nh in (HOPOPT, DSTOPTS):
                j, hoa = _options(body, here + 2, issues)
                if j is not None:
                    jumbo = j
                if hoa is not None:
                    pseudo_src = hoa
            elif nh == ROUTING:
                pseudo_dst = _routing_final(body, here, pseudo_dst)
            prev_nh, nh = here, nxt
    except Short:
        issues.append(DecodeIssue("ipv6.ext_header_truncated", c.pos))
        nh = NONE
    return IPv6Header(
        offset=start,
        traffic_class=(word >> 20) & 0xFF,
        flow_label=word & 0xFFFFF,
        payload_length=plen,
        hop_limit=hlim,
        src=src,
        dst=dst,
        proto=nh,
        upper_offset=c.pos,
        pseudo_src=pseudo_src,
        pseudo_dst=pseudo_dst,
        jumbo_length=jumbo,
        fragment=frag,
        ext=tuple(ext),
    )


def _options(body: bytes, base: int, issues: list[DecodeIssue]) -> tuple[int | None, bytes | None]:
    """TLV options: Jumbo Payload (RFC 2675) and Home Address (RFC 6275 6.3)."""
    i, jumbo, hoa = 0, None, None
    while i < len(body):
        t = body[i]
        if t == 0:  # Pad1
            i += 1
            continue
        if i + 1 >= len(body):
            break
        ln = body[i + 1]
        val = body[i + 2 : i + 2 + ln]
        if len(val) < ln:
            issues.append(DecodeIssue("ipv6.bad_option_length", base + i, f"option {t:#x}"))
            break
        if t == OPT_JUMBO and ln == 4:
            jumbo = int.from_bytes(val, "big")
        elif t == OPT_HOME_ADDRESS and ln == 16:
            hoa = bytes(val)
        i += 2 + ln
    return jumbo, hoa


def _routing_final(body: bytes, here: int, dst: bytes) -> bytes:
    """RFC 8200 8.1: with segments left, the pseudo-header uses the final destination."""
    if len(body) < 6:
        return dst
    rtype, left = body[0], body[1]
    if left == 0:
        return dst
    addrs = body[6:]
    if rtype == 0 and len(addrs) >= 16:  # RH0: last address in the list
        n = len(addrs) // 16
        return bytes(addrs[(n - 1) * 16 : n * 16])
    if rtype == 4 and len(addrs) >= 16:  # SRH (RFC 8754): segments[0] is the final segment
        return bytes(addrs[:16])
    return dst
