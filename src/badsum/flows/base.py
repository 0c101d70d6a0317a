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

from badsum.checksum.verdict import Flow
from badsum.flows.facts import (
    _M1,
    FACTS_DTYPE,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_SYN,
    _mix,
)
from badsum.flows.symptom import MAX_EVIDENCE, Evidence

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


def addr_words(facts: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """An address field as two uint64 words per record (as facts._addr_words, without its slow copy)."""
    o = _OFF[name]
    raw = np.ascontiguousarray(facts).view(np.uint8).reshape(len(facts), FACTS_DTYPE.itemsize)
    w = np.ascontiguousarray(raw[:, o : o + 16]).view("<u8")
    return w[:, 0], w[:, 1]


def flow_keys(facts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same keys as badsum.flows.facts.flow_keys (a test holds them equal), computed faster."""
    with np.errstate(over="ignore"):
        s0, s1 = addr_words(facts, "src")
        d0, d1 = addr_words(facts, "dst")
        ks = _mix(_mix(s0 * _M1 ^ s1) ^ facts["sport"].astype(np.uint64))
        kd = _mix(_mix(d0 * _M1 ^ d1) ^ facts["dport"].astype(np.uint64))
        lo, hi = np.minimum(ks, kd), np.maximum(ks, kd)
        key = _mix(lo * _M1 ^ hi ^ (facts["proto"].astype(np.uint64) << np.uint64(56)))
    return key, (ks > kd).astype(np.uint8)


def host_pair_keys(facts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same keys as badsum.flows.facts.host_pair_keys, computed faster."""
    with np.errstate(over="ignore"):
        s0, s1 = addr_words(facts, "src")
        d0, d1 = addr_words(facts, "dst")
        ks, kd = _mix(s0 * _M1 ^ s1), _mix(d0 * _M1 ^ d1)
        lo, hi = np.minimum(ks, kd), np.maximum(ks, kd)
        key = _mix(lo * _M1 ^ hi)
    return key, (ks > kd).astype(np.uint8)


class BatchView:
    """One batch of facts with its hot columns, each read from the records at most once."""

    def __init__(self, facts: np.ndarray, rows: np.ndarray) -> None:
        self.facts = facts
        self.rows = rows
        self.n = len(facts)
        self._cache: dict[str, np.ndarray] = {}

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
    is compared). `match` answers, for a batch subset in frame order, which packets repeat a
    segment stored earlier, including earlier in the same batch.
    """

    def __init__(self, bits: int) -> None:
        size = 1 << bits
        self.mask = np.uint64(size - 1)
        self.keys = np.zeros(size, dtype=np.uint64)
        self.ts = np.zeros(size, dtype=np.int64)  # last send
        self.frame = np.zeros(size, dtype=np.int64)  # first send
        self.first_ts = np.zeros(size, dtype=np.int64)
        self.status = np.zeros(size, dtype=np.uint8)
        self._pos = np.zeros(size, dtype=np.int64)
        self._stamp = np.zeros(size, dtype=np.int64)
        self._batch = 0

    @staticmethod
    def key(seq: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
        return (seq.astype(np.uint64) << np.uint64(32)) | (sport.astype(np.uint64) << np.uint64(16)) | dport.astype(np.uint64)

    def match(self, key: np.ndarray, ts: np.ndarray, frame: np.ndarray, store: np.ndarray,
              status: np.ndarray | None = None) -> tuple[np.ndarray, ...]:  # fmt: skip
        """For each element: hit, and for hits only (in order) the previous last-send ts, first
        frame, first ts and first status. Then store the `store` elements that are new segments
        and refresh the last-send time of every hit. Work per element: one hash, two gathers and
        two scatters; the rest is per hit or per stored element."""
        self._batch += 1
        n = len(key)
        with np.errstate(over="ignore"):
            slot = (_mix(key * _M1) & self.mask).astype(np.int64)
        before = self.keys[slot] == key
        s_idx = np.flatnonzero(store)
        if len(s_idx):
            # earlier in this batch: the first stored element of each slot (the last write wins, so write backwards)
            self._pos[slot[s_idx[::-1]]] = s_idx[::-1]
            self._stamp[slot[s_idx]] = self._batch
            cand = np.flatnonzero((self._stamp[slot] == self._batch) & ~before)
            first = self._pos[slot[cand]]
            inside_c = (first < cand) & (key[first] == key[cand])
            inside_idx, inside_first = cand[inside_c], first[inside_c]
        else:
            inside_idx = inside_first = np.zeros(0, dtype=np.int64)
        hit = before.copy()
        hit[inside_idx] = True
        h = np.flatnonzero(hit)
        hs = slot[h]
        p_ts, p_frame, p_first, p_status = self.ts[hs], self.frame[hs], self.first_ts[hs], self.status[hs]
        if len(inside_idx):
            at = np.searchsorted(h, inside_idx)
            st = status if status is not None else np.zeros(n, dtype=np.uint8)
            p_ts[at], p_frame[at], p_first[at], p_status[at] = ts[inside_first], frame[inside_first], ts[inside_first], st[inside_first]
        new = s_idx[~hit[s_idx]]
        sw = slot[new]
        self.keys[sw], self.ts[sw], self.frame[sw], self.first_ts[sw] = key[new], ts[new], frame[new], ts[new]
        if status is not None:
            self.status[sw] = status[new]
        self.ts[hs] = ts[h]
        return hit, p_ts, p_frame, p_first, p_status
