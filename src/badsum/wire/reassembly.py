"""IPv4 and IPv6 fragment reassembly with bounded memory and timeouts in capture time.

Pure: the caller passes each fragment with its capture timestamp; nothing reads a clock.
A completed datagram comes back as synthetic raw-IP bytes (the first fragment's header with the
fragment fields cleared, plus the reassembled payload) so the normal decoder can judge it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from badsum.wire.cursor import DecodeIssue
from badsum.wire.frame import IPPacket
from badsum.wire.ipv4 import IPv4Header
from badsum.wire.ipv6 import IPv6Header

#: Linux's default ipfrag_time is 30 s; a datagram older than this in capture time is dropped.
DEFAULT_TIMEOUT_NS = 30 * 1_000_000_000
DEFAULT_MAX_DATAGRAMS = 4096
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_DATAGRAM = 65535 + 40


@dataclass(slots=True)
class _Pending:
    first_frame: int
    first_ts: int
    ipver: int
    proto: int
    head: bytes | None = None  # first fragment's bytes before the payload (header + unfragmentable part)
    head_ip_offset: int = 0  # where that IP header sat in its frame
    head_nh: int = -1  # IPv6: index in `head` of the Next Header byte naming the fragment header
    pieces: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None  # payload length, known once the last fragment arrives
    size: int = 0
    truncated: bool = False
    depth: int = 0
    src: bytes = b""
    dst: bytes = b""


@dataclass(frozen=True, slots=True)
class Datagram:
    """A reassembled datagram, ready to decode as raw IP."""

    data: bytes
    """Synthetic raw-IP bytes."""
    first_frame: int
    """Frame number of the first fragment seen."""
    ip_offset: int
    """Offset of the IP header in the first fragment's frame (to map checksum offsets back)."""
    depth: int
    """Tunnel depth of the fragmented packet."""


@dataclass(frozen=True, slots=True)
class Incomplete:
    """A datagram that never completed (timed out, evicted, or the capture ended)."""

    first_frame: int
    """Frame of the first fragment seen."""
    ipver: int
    """4 or 6."""
    proto: int
    """Upper-layer protocol."""
    truncated: bool
    """A fragment was cut by the snap length (rather than missing)."""
    depth: int
    """Tunnel depth."""
    src: bytes
    """Source address."""
    dst: bytes
    """Destination address."""


class Reassembler:
    """Collects fragments by (version, src, dst, id[, proto]) and returns completed datagrams."""

    def __init__(
        self,
        timeout_ns: int = DEFAULT_TIMEOUT_NS,
        max_datagrams: int = DEFAULT_MAX_DATAGRAMS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.timeout_ns = timeout_ns
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self._pending: OrderedDict[tuple, _Pending] = OrderedDict()
        self._bytes = 0
        self.issues: list[tuple[int, DecodeIssue]] = []
        self.incomplete: list[Incomplete] = []

    def push(self, frame_no: int, ts_ns: int, data: bytes, pkt: IPPacket) -> Datagram | None:
        """Add one fragment (a packet with `pkt.is_fragment`). Returns the datagram it completes."""
        self.expire(ts_ns)
        ip = pkt.ip
        if isinstance(ip, IPv4Header):
            key: tuple = (4, ip.src, ip.dst, ip.ident, ip.proto)
            foff, more = ip.frag_offset, ip.more_fragments
            pstart = ip.offset + ip.header_length
            pend = ip.offset + (ip.total_length or 0)
            nh_index = -1
        else:
            assert isinstance(ip, IPv6Header) and ip.fragment is not None
            fh = ip.fragment
            key = (6, ip.src, ip.dst, fh.ident)
            foff, more = fh.frag_offset, fh.more
            pstart = fh.offset + 8
            pend = ip.offset + 40 + ip.payload_length
            nh_index = fh.prev_nh_offset - ip.offset
        p = self._pending.get(key)
        if p is None:
            p = _Pending(frame_no, ts_ns, ip.version, pkt.proto, depth=pkt.depth, src=ip.src, dst=ip.dst)
            self._pending[key] = p
            self._evict()
        if pend <= pstart or pend - pstart > MAX_DATAGRAM:
            self.issues.append((frame_no, DecodeIssue(f"ipv{ip.version}.fragment_bad_length", ip.offset)))
            return None
        payload = data[pstart:pend]
        if len(payload) < pend - pstart:
            p.truncated = True
        if foff == 0:
            # The unfragmentable part only: IPv4 header, or IPv6 up to (not incl.) the fragment header.
            p.head = bytes(data[ip.offset : pstart if ip.version == 4 else pstart - 8])
            p.head_ip_offset = ip.offset
            p.head_nh = nh_index
            p.proto = pkt.proto if ip.version == 4 else ip.fragment.next_header  # type: ignore[union-attr]
        if not more:
            end = foff + (pend - pstart)
            if p.total is not None and p.total != end:
                self.issues.append((frame_no, DecodeIssue(f"ipv{ip.version}.fragment_inconsistent_end", ip.offset)))
            p.total = end
        self._add_piece(p, foff, bytes(payload), frame_no, ip.offset, ip.version)
        done = self._complete(p)
        if done is None:
            return None
        del self._pending[key]
        self._bytes -= p.size
        if p.truncated:
            self.incomplete.append(Incomplete(p.first_frame, p.ipver, p.proto, True, p.depth, p.src, p.dst))
            return None
        return done

    def _add_piece(self, p: _Pending, off: int, data: bytes, frame_no: int, ip_off: int, ver: int) -> None:
        for o, d in p.pieces.items():
            lo, hi = max(o, off), min(o + len(d), off + len(data))
            if lo < hi and d[lo - o : hi - o] != data[lo - off : hi - off]:
                self.issues.append(
                    (frame_no, DecodeIssue(f"ipv{ver}.fragment_overlap_mismatch", ip_off, f"bytes {lo}-{hi} differ"))
                )
        if off not in p.pieces or len(p.pieces[off]) < len(data):
            old = len(p.pieces.get(off, b""))
            p.pieces[off] = data
            p.size += len(data) - old
            self._bytes += len(data) - old
        while self._bytes > self.max_bytes and self._pending:
            self._drop_oldest()

    def _complete(self, p: _Pending) -> Datagram | None:
        if p.total is None or p.head is None:
            return None
        buf = bytearray(p.total)
        covered = 0
        for o in sorted(p.pieces):
            d = p.pieces[o]
            if o > covered:
                return None  # a hole
            end = min(o + len(d), p.total)
            if end > covered:
                buf[covered:end] = d[covered - o : end - o]
                covered = end
        if covered < p.total:
            return None
        head = bytearray(p.head)
        if p.ipver == 4:
            head[2:4] = (len(head) + p.total).to_bytes(2, "big")
            head[6:8] = b"\0\0"
        else:
            head[p.head_nh] = p.proto
            head[4:6] = (len(head) - 40 + p.total).to_bytes(2, "big")
        return Datagram(bytes(head) + bytes(buf), p.first_frame, p.head_ip_offset, p.depth)

    def _evict(self) -> None:
        while len(self._pending) > self.max_datagrams:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, p = self._pending.popitem(last=False)
        self._bytes -= p.size
        self.incomplete.append(Incomplete(p.first_frame, p.ipver, p.proto, p.truncated, p.depth, p.src, p.dst))

    def expire(self, now_ns: int) -> None:
        """Give up on datagrams older than the timeout (capture time)."""
        while self._pending:
            key, p = next(iter(self._pending.items()))
            if now_ns - p.first_ts <= self.timeout_ns:
                break
            self._drop_oldest()

    def flush(self) -> None:
        """End of capture: every pending datagram is incomplete."""
        while self._pending:
            self._drop_oldest()

    def take_incomplete(self) -> list[Incomplete]:
        out, self.incomplete = self.incomplete, []
        return out
