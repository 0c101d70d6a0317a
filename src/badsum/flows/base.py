"""What the detectors share: the limits that bound their memory, a bounded table, addresses as
text, and one batch's hot columns read once.

Fields of FACTS_DTYPE are strided over 136-byte records, so every full-batch read costs a pass
over the whole batch: `BatchView` reads each hot field at most once per batch and the detectors
work on small index subsets from there (SYNs, ICMP, UDP, retransmission candidates).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from badsum.checksum.verdict import (
    TP_STATUS_CSUMNOTREADY,
    TP_STATUS_UNKNOWN,
    Flow,
    Layer,
    Status,
)
from badsum.flows.facts import (
    FACTS_DTYPE,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_SYN,
)
from badsum.flows.symptom import MAX_EVIDENCE, Evidence
from badsum.native import _fastscan

U32 = 0xFFFFFFFF
HALF = 0x80000000


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on every table (oldest entries are evicted and counted) and the detectors' thresholds."""

    tcp_flows: int = 65536
    """Handshakes followed (SYN ladders, connect outcomes)."""
    bad_segments: int = 65536
    """TCP segments with a bad/partial checksum watched for a retransmission."""
    segment_table_bits: int = 18
    """log2 slots of the direct-mapped table of recent large segments (retransmission finder)."""
    watched_flows: int = 1024
    """Flows followed packet by packet after a large segment was retransmitted (black holes)."""
    segments_per_flow: int = 4096
    host_pairs: int = 65536
    """Host pairs with echo / UDP counts (icmp-only)."""
    pmtu_window: int = 131072
    """Recent packets an ICMP error may quote (frames kept by reference, whole batches)."""
    pmtu_reports: int = 256
    """(reporter, flow, MTU) groups of ICMP frag-needed / Packet Too Big."""
    tunnels: int = 4096
    tunnel_pairs: int = 65536
    """Inner host pairs counted per tunnel (zero outer UDP checksums vs non-zero)."""
    udp6_flows: int = 4096
    """UDPv6 flows whose checksums are counted (receiver Udp6InCsumErrors joined at the end)."""
    heartbeats: int = 4096
    symptoms: int = 10000
    """Symptoms kept from flows already closed or evicted (the count of dropped ones is kept)."""
    duplicate_ms: float = 1.0
    """The same packet again within this time is a duplicate (two capture points), not a retransmission."""
    syn_timeout_s: float = 140.0
    """A handshake without answer for this long is closed (Linux gives up after ~127 s)."""
    large_segment: int = 1000
    """IP length from which a TCP segment counts as large (black-hole candidates)."""
    pmtu_grace_ms: float = 10.0
    """Packets already in flight when an ICMP error arrives do not count as ignoring it."""
    heartbeat_min: int = 3
    """Unanswered heartbeats needed for a symptom."""


K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """An LRU dict with a cap: the oldest entry goes to `on_evict` and is counted."""

    __slots__ = ("cap", "created", "data", "evicted", "on_evict")

    def __init__(self, cap: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        self.cap = max(int(cap), 1)
        self.data: OrderedDict[K, V] = OrderedDict()
        self.evicted = 0
        self.created = 0
        self.on_evict = on_evict

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def get(self, key: K) -> V | None:
        v = self.data.get(key)
        if v is not None:
            self.data.move_to_end(key)
        return v

    def put(self, key: K, value: V) -> None:
        if key not in self.data:
            self.created += 1
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.cap:
            k, v = self.data.popitem(last=False)
            self.evicted += 1
            if self.on_evict is not None:
                self.on_evict(k, v)

    def pop(self, key: K) -> V | None:
        return self.data.pop(key, None)

    def values(self) -> list[V]:
        return list(self.data.values())

    def items(self) -> list[tuple[K, V]]:
        return list(self.data.items())


def addr_text(raw: Any, ipver: int) -> str:
    b = bytes(raw)
    if ipver == 4:
        return str(ipaddress.IPv4Address(b[:4]))
    if ipver == 6:
        return str(ipaddress.IPv6Address(b[:16]))
    return ""


def flow_of(fact: np.void, reverse: bool = False) -> Flow:
    """The 5-tuple of one fact (reverse: as seen from the other end)."""
    v = int(fact["ipver"])
    src, dst = addr_text(fact["src"], v), addr_text(fact["dst"], v)
    sport, dport = int(fact["sport"]), int(fact["dport"])
    if reverse:
        src, dst, sport, dport = dst, src, dport, sport
    return Flow(v, src, dst, int(fact["proto"]), sport, dport)


def seq_after_eq(a: int, b: int) -> bool:
    """a >= b in TCP sequence space (RFC 1982 serial arithmetic: wraps at 2**32)."""
    return ((a - b) & U32) < HALF


def fmt_s(x: float) -> str:
    """Seconds for a summary: '1', '2.1', '0.035'."""
    s = f"{x:.1f}" if x >= 1 else f"{x:.3f}"
    return s.rstrip("0").rstrip(".") or "0"


def ev(fact: np.void, text: str) -> Evidence:
    return Evidence(int(fact["frame"]), int(fact["ts_ns"]), text)


def add_evidence(items: list[Evidence], e: Evidence) -> None:
    """Keep the first MAX_EVIDENCE - 1 items and always the latest one (the outcome)."""
    if len(items) < MAX_EVIDENCE:
        items.append(e)
    else:
        items[-1] = e


# numpy copies structured records with void fields (addresses) one field at a time: 40x slower than
# moving the same bytes as one opaque item. Fancy indexing and address reads go through raw views.
_RAW = np.dtype((np.void, FACTS_DTYPE.itemsize))
_OFF = {name: FACTS_DTYPE.fields[name][1] for name in ("src", "dst", "q_src", "q_dst")}


def take(facts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """facts[idx] as a new array, fast."""
    return np.ascontiguousarray(facts).view(_RAW)[idx].view(FACTS_DTYPE)


def take_rows(rows: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """rows[sel] (a mask or indices) of any structured array with void fields, as `take` does it."""
    raw = np.dtype((np.void, rows.dtype.itemsize))
    return np.ascontiguousarray(rows).view(raw)[sel].view(rows.dtype)


def addr_words(facts: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """An address field as two uint64 words per record (as facts._addr_words, without its slow copy)."""
    o = _OFF[name]
    raw = np.ascontiguousarray(facts).view(np.uint8).reshape(len(facts), FACTS_DTYPE.itemsize)
    w = np.ascontiguousarray(raw[:, o : o + 16]).view("<u8")
    return w[:, 0], w[:, 1]


def _keys(facts: np.ndarray, idx: np.ndarray | None, host_pair: bool) -> tuple[np.ndarray, np.ndarray]:
    facts = np.ascontiguousarray(facts)
    if idx is not None:
        idx = np.ascontiguousarray(idx, dtype=np.int64)
    m = len(facts) if idx is None else len(idx)
    key, direction = np.empty(m, dtype=np.uint64), np.empty(m, dtype=np.uint8)
    if m:
        _fastscan.flow_keys(facts, idx, host_pair, key, direction)
    return key, direction


def flow_keys(facts: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """badsum.flows.facts.flow_keys of facts[idx] (all rows without idx), in C: the same keys (a
    test holds them equal) without a copy of the records or a dozen numpy passes."""
    return _keys(facts, idx, False)


def host_pair_keys(facts: np.ndarray, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """badsum.flows.facts.host_pair_keys of facts[idx], in C."""
    return _keys(facts, idx, True)


class BatchView:
    """One batch of facts with its hot columns, each read from the records at most once."""

    def __init__(self, facts: np.ndarray, rows: np.ndarray, direction: np.ndarray | None = None,
                 tp_status: np.ndarray | None = None) -> None:  # fmt: skip
        self.facts = facts
        self.rows = rows
        self.n = len(facts)
        self.direction = direction
        """pcapng direction per packet (0 unknown, 1 inbound, 2 outbound), when the capture has it."""
        self.tp_status = tp_status
        """The kernel's PACKET_AUXDATA status per packet (TP_STATUS_UNKNOWN where none was recorded)."""
        self._cache: dict[str, np.ndarray] = {}

    @property
    def tcp_fault(self) -> np.ndarray | None:
        """Per packet: the status (bad or partial) of its own innermost TCP checksum when that is a
        fault the receiver acts on, else 0; None when the batch has none.

        Bad is always one. Partial only on a packet the capture saw arriving (direction inbound)
        without a pending checksum recorded by the kernel: on the sending side, and on a veth peer
        that received the sender's own buffer (TP_STATUS_CSUMNOTREADY), it is transmit offload at
        work, and a resend there means a loss elsewhere, not a checksum drop (KB-005 is the case
        where it is one: OVS userspace re-creates the packet with the sum unfinished)."""
        if "_fault" not in self._cache:
            self._cache["_fault"] = self._tcp_fault()
        return self._cache["_fault"]

    @property
    def offload_pending(self) -> np.ndarray | None:
        """Per packet: True when its own innermost TCP/UDP checksum is partial, i.e. transmit
        offload is still to run: a TSO/GSO super-frame or a segment the stack or NIC finishes after
        the capture point. Its size is not what the wire carries (GSO cuts it to the current MSS),
        so it proves nothing about a path MTU. None when the batch has none."""
        if "_pending" not in self._cache:
            self._cache["_pending"] = self._offload_pending()
        return self._cache["_pending"]

    def _own_l4_rows(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch index, status) of the rows selected by `m` that are their packet's own innermost
        TCP/UDP checksum: not a header quoted in an ICMP error, not a frame outside this batch."""
        rows = self.rows
        idx = self.index_of_frames(rows["frame"][m])
        ok = idx >= 0
        idx, layer, depth, status = idx[ok], rows["layer"][m][ok], rows["depth"][m][ok], rows["status"][m][ok]
        proto = np.where(layer == Layer.TCP, PROTO_TCP, PROTO_UDP)
        own = (self.facts["proto"][idx] == proto) & (self.facts["depth"][idx] == depth)
        return idx[own], status[own]

    def _offload_pending(self) -> np.ndarray | None:
        rows = self.rows
        if not len(rows):
            return None
        m = ((rows["layer"] == Layer.TCP) | (rows["layer"] == Layer.UDP)) & (rows["status"] == Status.PARTIAL)
        if not m.any():
            return None
        idx, _ = self._own_l4_rows(m)
        out = np.zeros(self.n, dtype=bool)
        out[idx] = True
        return out

    def _tcp_fault(self) -> np.ndarray | None:
        rows = self.rows
        if not len(rows):
            return None
        st = rows["status"]
        m = (rows["layer"] == Layer.TCP) & ((st == Status.BAD) | (st == Status.PARTIAL))
        if not m.any():
            return None
        idx, status = self._own_l4_rows(m)
        keep = np.ones(len(idx), dtype=bool)
        partial = status == Status.PARTIAL
        if self.direction is None:
            keep &= ~partial
        else:
            arrived = self.direction[idx] == 1
            if self.tp_status is not None:
                tp = self.tp_status[idx]
                arrived &= (tp == TP_STATUS_UNKNOWN) | ((tp & TP_STATUS_CSUMNOTREADY) == 0)
            keep &= ~partial | arrived
        if not keep.any():
            return None
        out = np.zeros(self.n, dtype=np.uint8)
        out[idx[keep]] = status[keep]
        return out

    def col(self, name: str) -> np.ndarray:
        c = self._cache.get(name)
        if c is None:
            c = self._cache[name] = np.ascontiguousarray(self.facts[name])
        return c

    def _mask(self, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        c = self._cache.get(name)
        if c is None:
            c = self._cache[name] = make()
        return c

    @property
    def tcp(self) -> np.ndarray:
        return self._mask("_tcp", lambda: self.col("proto") == PROTO_TCP)

    @property
    def udp(self) -> np.ndarray:
        return self._mask("_udp", lambda: self.col("proto") == PROTO_UDP)

    def at(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Field `name` of the rows `idx` only: from the column when it was read, else gathered
        from the records (no pass over the whole batch for a few rows)."""
        c = self._cache.get(name)
        return c[idx] if c is not None else self.facts[name][idx]

    @property
    def udp_idx(self) -> np.ndarray:
        return self._mask("_udp_idx", lambda: np.flatnonzero(self.udp))

    @property
    def pxor(self) -> np.ndarray:
        """sport ^ dport per packet (the port filters' index)."""
        return self._mask("_pxor", lambda: self.col("sport") ^ self.col("dport"))

    @property
    def icmp_idx(self) -> np.ndarray:
        p = self.col("proto")
        return self._mask("_icmp", lambda: np.flatnonzero((p == PROTO_ICMP) | (p == PROTO_ICMPV6)))

    @property
    def syn_idx(self) -> np.ndarray:
        return self._mask("_syn", lambda: np.flatnonzero(self.tcp & ((self.col("tcp_flags") & TCP_SYN) != 0)))

    def index_of_frames(self, frames: np.ndarray) -> np.ndarray:
        """Batch indices of frame numbers (-1 where a frame is not in this batch)."""
        if self.n == 0 or len(frames) == 0:
            return np.full(len(frames), -1, dtype=np.int64)
        fr = self.facts["frame"]
        first = int(fr[0])
        idx = frames.astype(np.int64) - first
        ok = (idx >= 0) & (idx < self.n)
        idx = np.where(ok, idx, 0)
        good = ok & (fr[idx] == frames)
        if not good.all():  # frames not contiguous: look them up
            pos = np.searchsorted(fr, frames)
            pos = np.minimum(pos, self.n - 1)
            good = fr[pos] == frames
            idx = pos
        return np.where(good, idx, -1)


class SegmentTable:
    """Recent TCP segments by (sequence number, ports), direct-mapped: the retransmission finder.

    Keys are directional (seq << 32 | sport << 16 | dport); the slot comes from the key, and a
    colliding segment replaces the older one (lossy, bounded, never a false match: the whole key
    is compared). `match` walks a batch in frame order (in C: one pass over the records, one
    table access per segment) and answers which segments repeat one stored earlier, including
    earlier in the same batch; a repeat refreshes the stored segment's last-send time.
    """

    def __init__(self, bits: int, filtered: bool = False) -> None:
        # one slot: [key, last send ts, first send ts, used | status << 56 | first frame]
        self.table = np.zeros((1 << bits, 4), dtype=np.uint64)
        # filtered: only ports that stored a segment are looked up (a bit per port-pair hash)
        self.filter = np.zeros(1 << 14, dtype=np.uint64) if filtered else None

    def match(self, facts: np.ndarray, status: np.ndarray | None, min_payload: int = 0,
              min_ip_len: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Over the TCP rows with payload >= min_payload and ip_len >= min_ip_len: (batch indices
        of the repeats, in order; for each, the stored segment's [last ts, first frame, first ts,
        status] before this repeat). A segment that is not a repeat is stored where `status` is
        non-zero (None: every one)."""
        facts = np.ascontiguousarray(facts)
        n = len(facts)
        idx, prev = np.empty(n, dtype=np.int64), np.empty((n, 4), dtype=np.int64)
        k = _fastscan.seg_match(facts, min_payload, min_ip_len, status, self.table, self.filter, idx, prev) if n else 0
        return idx[:k], prev[:k]
