"""Journeys: the events of one packet, joined across devices and namespaces.

Two joins. The same skb: its address while it lives; a DROP frees it, and an address seen again at
a device it already passed is a new buffer from the slab (consume_skb is not traced). The same
packet re-created as a new skb (ovs-vswitchd reads it through AF_PACKET and sends a copy, a bridge
clones it per port, GSO cuts it): the innermost packet's key, as `badsum trace` matches captures
(trace/keys.py). A journey passes a device in a direction once per key, so a retransmission (an
identical SYN a second later) starts a journey of its own instead of joining the first one; among
the journeys it could continue, the most recent wins, so a copy lost early does not shift the
pairing of every later copy (which pairing the n-th sighting at each point would do).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from badsum.follow.model import Device, Hook, KernelEvent
from badsum.trace.keys import PacketKey, key_of, related
from badsum.wire.frame import Frame, decode_frame
from badsum.wire.link import LINKTYPE_ETHERNET, LINKTYPE_RAW
from badsum.wire.ports import PortTable

#: A new skb continues a journey only if that journey was last seen at most this long before
#: (ovs-vswitchd's upcall and re-send take micro- to milliseconds; TCP's SYN retry waits 1 s).
MAX_GAP_NS = 500_000_000
#: How far back, and through how many journeys of the same key bucket (a TCP data bucket holds a
#: whole direction of a flow), to look for a journey to continue: bounds the search on busy runs.
MAX_LOOKBACK_NS = 2_000_000_000
MAX_CANDIDATES = 128


@dataclass(frozen=True, slots=True)
class Sighting:
    """One hop of a journey: one skb at one device (RX and RECV in a row are one hop)."""

    event: KernelEvent
    """The event whose state is kept (for RX then RECV: the RECV)."""
    device: Device
    direction: str
    """`in`, `out` or `drop`."""
    hooks: tuple[Hook, ...]
    """Every hook this hop stands for, in order (`(RX, RECV)` when collapsed)."""
    frame: Frame
    """The captured bytes, decoded."""
    key: PacketKey | None
    """The innermost packet's key (None without IP)."""
    events: tuple[KernelEvent, ...] = ()
    """Every event this hop stands for (RX and RECV), in order."""

    @property
    def label(self) -> str:
        return self.device.label

    @property
    def ts_ns(self) -> int:
        return self.event.ts_ns

    @property
    def hook_text(self) -> str:
        return "+".join(h.label for h in self.hooks)


@dataclass(frozen=True, slots=True)
class Journey:
    """One packet through the kernel: its hops in time order (drops included)."""

    index: int
    hops: tuple[Sighting, ...]
    skbs: tuple[int, ...]
    """The skb addresses it travelled in, in order of first use."""

    @property
    def key(self) -> PacketKey | None:
        return next((h.key for h in self.hops if h.key is not None), None)

    @property
    def first_ts(self) -> int:
        return self.hops[0].ts_ns


@dataclass(slots=True)
class _Building:
    index: int
    hops: list[Sighting] = field(default_factory=list)
    skbs: list[int] = field(default_factory=list)
    visited: dict[tuple, list[PacketKey | None]] = field(default_factory=dict)
    key: PacketKey | None = None
    """The first key seen (what later skbs are matched against)."""
    first_ts: int = 0
    last_ts: int = 0

    def add(self, s: Sighting) -> None:
        if not self.hops:
            self.first_ts = s.ts_ns
        self.hops.append(s)
        self.last_ts = max(self.last_ts, s.ts_ns)
        if self.key is None:
            self.key = s.key
        if s.direction != "drop":
            self.visited.setdefault(_point(s), []).append(s.key)

    def passed(self, point: tuple, key: PacketKey | None) -> bool:
        return key in self.visited.get(point, ())


@dataclass(slots=True)
class _Segment:
    """One skb's life so far: which journey it serves and its last hop there."""

    journey: _Building
    last: Sighting
    points: set[tuple] = field(default_factory=set)


def namespace_of(netns: int, names: Mapping[int, str]) -> str:
    return names.get(netns) or f"netns:{netns}"


def device_of(ev: KernelEvent, names: Mapping[int, str]) -> Device:
    return Device(ev.netns, ev.ifindex, ev.ifname, namespace_of(ev.netns, names))


def decode(ev: KernelEvent, ports: PortTable) -> Frame:
    """The event's bytes decoded: from the MAC header when `l2`, else from the IP header."""
    return decode_frame(ev.data, LINKTYPE_ETHERNET if ev.l2 else LINKTYPE_RAW, ev.wire_len, ports)


def build_journeys(events: Iterable[KernelEvent], names: Mapping[int, str], ports: PortTable | None = None) -> list[Journey]:
    """Join events into journeys, one per packet, ordered by their first event."""
    ports = ports or PortTable()
    ordered = sorted(enumerate(events), key=lambda p: (p[1].ts_ns, p[0]))
    journeys: list[_Building] = []
    by_bucket: dict[tuple, list[_Building]] = defaultdict(list)
    live: dict[int, _Segment] = {}
    for _, ev in ordered:
        frame = decode(ev, ports)
        key = key_of(frame)
        dev = device_of(ev, names)
        seg = live.get(ev.skb)
        if ev.hook == Hook.DROP:
            live.pop(ev.skb, None)
            if seg is not None and None not in (seg.last.key, key) and not _same_packet(seg.last.key, key):
                seg = None  # the address was reused by another packet (the bytes say so)
            j = seg.journey if seg is not None else _find(by_bucket, key, None, ev.ts_ns)
            if not ev.ifname and j is not None:
                # skb->dev is gone at some drop points: the skb's (or the packet's) last device.
                dev = seg.last.device if seg is not None else j.hops[-1].device
            _add(j or _new(journeys, by_bucket, key), Sighting(ev, dev, "drop", (ev.hook,), frame, key, (ev,)), ev.skb)
            continue
        s = Sighting(ev, dev, ev.hook.direction, (ev.hook,), frame, key, (ev,))
        if seg is not None and _collapses(seg.last, ev):
            # netif_rx then netif_receive_skb at one device: one hop, the later state kept.
            merged = Sighting(ev, dev, "in", seg.last.hooks + (ev.hook,), frame, key, seg.last.events + (ev,))
            _replace_last(seg.journey, seg.last, merged)
            seg.last = merged
            continue
        if seg is not None and (not _same_packet(seg.last.key, key) or _point(s) in seg.points):
            seg = None  # the address was freed unseen (consumed) and reused
        if seg is None:
            j = _find(by_bucket, key, _point(s), ev.ts_ns) or _new(journeys, by_bucket, key)
            seg = live[ev.skb] = _Segment(j, s)
        _add(seg.journey, s, ev.skb)
        seg.last = s
        seg.points.add(_point(s))
    ordered_journeys = sorted(journeys, key=lambda b: (b.first_ts, b.index))
    return [Journey(i, tuple(j.hops), tuple(j.skbs)) for i, j in enumerate(ordered_journeys)]


def _point(s: Sighting) -> tuple:
    d = s.device
    return (d.netns, d.ifindex, d.ifname, s.direction)


def _same_packet(a: PacketKey | None, b: PacketKey | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or related(a, b)


def _collapses(last: Sighting, ev: KernelEvent) -> bool:
    le = last.event
    return (ev.hook == Hook.RECV and le.hook == Hook.RX and last.hooks == (Hook.RX,)
            and (le.netns, le.ifindex, le.ifname) == (ev.netns, ev.ifindex, ev.ifname))  # fmt: skip


def _new(journeys: list[_Building], by_bucket: dict[tuple, list[_Building]], key: PacketKey | None) -> _Building:
    j = _Building(len(journeys))
    journeys.append(j)
    if key is not None:
        by_bucket[key.bucket()].append(j)
    return j


def _add(j: _Building, s: Sighting, skb: int) -> None:
    j.add(s)
    if skb not in j.skbs:
        j.skbs.append(skb)


def _replace_last(j: _Building, old: Sighting, new: Sighting) -> None:
    for i in range(len(j.hops) - 1, -1, -1):
        if j.hops[i] is old:
            j.hops[i] = new
            j.last_ts = max(j.last_ts, new.ts_ns)
            return


def _find(by_bucket: dict[tuple, list[_Building]], key: PacketKey | None, point: tuple | None, ts: int) -> _Building | None:
    """The most recent journey this packet (a new skb, or a drop of an unknown skb) continues."""
    if key is None:
        return None
    best: _Building | None = None
    rng, lo, hi = key.is_range, key.lo, key.hi
    for n, j in enumerate(reversed(by_bucket.get(key.bucket(), ()))):
        if j.first_ts < ts - MAX_LOOKBACK_NS or n >= MAX_CANDIDATES:
            break
        if ts - j.last_ts > MAX_GAP_NS or (best is not None and j.last_ts <= best.last_ts):
            continue
        jk = j.key
        if jk is None or rng and (jk.hi <= lo or hi <= jk.lo) or not _same_packet(jk, key):
            continue
        if point is not None and j.passed(point, key):
            continue  # it was here already with this very packet: this is another copy
        best = j
    return best


def predecessor(hops: tuple[Sighting, ...] | list[Sighting], i: int) -> int | None:
    """Index of the hop that `hops[i]` came from: a journey is a tree where a super-frame is cut
    into segments (GSO at a bridge port, a relay re-sending each), and the hop just before in time
    may belong to another branch. In order: the latest earlier hop of the same skb at another
    device (a drop's hop before it is the previous device); else of the same packet exactly (one segment, re-created); else of a packet it is part
    of (the super-frame); else the latest earlier hop. Drops and hops without IP are never one."""
    cur = hops[i]
    earlier = [k for k in range(i - 1, -1, -1) if hops[k].direction != "drop" and hops[k].key is not None
               and hops[k].label != cur.label]  # fmt: skip
    for same in (lambda h: h.event.skb == cur.event.skb,
                 lambda h: cur.key is not None and h.key == cur.key,
                 lambda h: cur.key is not None and related(h.key, cur.key)):  # fmt: skip
        k = next((k for k in earlier if same(hops[k])), None)
        if k is not None:
            return k
    return earlier[0] if earlier else None
