"""`badsum follow -w FILE.pcapng`: the bytes the eBPF programs recorded, as a capture.

One interface per device (`if_name` is the `NS:IFNAME` label), one packet per sighting, and the
kernel's state of each event in two packet comments: the `badsum:tp_status=` comment a live
`badsum capture` would have written (so `badsum trace` judges a pending checksum the same way)
and a `badsum:skb` comment with the skb fields themselves. Drops are not packets here (trace
would take a freed skb for a sighting); their totals go in section comments. The layout is
documented in docs/pcapng-encoding.md ("Files written by `badsum follow -w FILE.pcapng`").
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from badsum.capture.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW
from badsum.capture.pcapng_writer import DIRECTION_INBOUND, DIRECTION_OUTBOUND, PcapngWriter
from badsum.follow.journey import device_of, namespace_of
from badsum.follow.model import Hook, IpSummed, KernelEvent, Loss

SKB_PREFIX = "badsum:skb "
FOLLOW_PREFIX = "badsum:follow "
DROPS_PREFIX = "badsum:drops "
DROP_PREFIX = "badsum:drop "
LOST_PREFIX = "badsum:lost "
#: Section comments list at most this many (device, reason, location) drop groups.
MAX_DROP_COMMENTS = 64

# <linux/if_packet.h>
TP_STATUS_USER, TP_STATUS_CSUMNOTREADY, TP_STATUS_CSUM_VALID, TP_STATUS_GSO_TCP = 0x1, 0x8, 0x80, 0x100
# <linux/skbuff.h> enum skb_gso_type
SKB_GSO_TCPV4, SKB_GSO_TCPV6 = 1 << 0, 1 << 4


@dataclass(frozen=True, slots=True)
class DropTotal:
    """Drops of one reason at one place, as listed in the section comments."""

    device: str
    """`NS:IFNAME` of the skb's device (its last device when the drop point had none); `NS:-` unknown."""
    reason: str
    """The running kernel's name (`TCP_CSUM`), or the number when it had none."""
    location: str
    """The dropping function (`tcp_v4_rcv`), its address in hex, or `-`."""
    count: int


@dataclass(frozen=True, slots=True)
class WriteSummary:
    """What `write_events` put in the file."""

    path: str
    packets: int
    """Enhanced Packet Blocks written (XMIT, RECV, and RX events not merged into a RECV)."""
    interfaces: int
    """Interface Description Blocks written: one per (device, link type)."""
    merged_rx: int
    """RX events left out because the same skb's next event was its RECV at the same device."""
    drops: int
    """DROP events (not written as packets; totalled in the section comments)."""
    drop_totals: tuple[DropTotal, ...] = ()
    """Drops by (device, reason, location), most first."""

    def as_dict(self) -> dict[str, object]:
        """For the JSON envelope of `badsum follow`."""
        return {"path": self.path, "packets": self.packets, "interfaces": self.interfaces,
                "merged_rx": self.merged_rx, "drops": self.drops,
                "drop_totals": [{"device": d.device, "reason": d.reason, "location": d.location, "count": d.count}
                                for d in self.drop_totals]}  # fmt: skip


def tp_status_of(ev: KernelEvent) -> int:
    """The tp_status PACKET_AUXDATA would report for this skb (net/packet/af_packet.c,
    packet_recvmsg): the transmit path's copy is PACKET_OUTGOING, so it is never CSUM_VALID."""
    status = TP_STATUS_USER
    if ev.ip_summed == IpSummed.PARTIAL:
        status |= TP_STATUS_CSUMNOTREADY
    elif ev.hook != Hook.XMIT and (ev.ip_summed == IpSummed.UNNECESSARY or ev.csum_valid):
        status |= TP_STATUS_CSUM_VALID  # skb_csum_unnecessary()
    if ev.gso_size and ev.gso_type & (SKB_GSO_TCPV4 | SKB_GSO_TCPV6):  # skb_is_gso && skb_is_gso_tcp
        status |= TP_STATUS_GSO_TCP
    return status


def skb_comment(ev: KernelEvent, hooks: str | None = None) -> str:
    """`badsum:skb hook=xmit ip_summed=PARTIAL csum_start=.. ...` (docs/pcapng-encoding.md)."""
    fields = (
        ("hook", hooks or ev.hook.label),
        ("ip_summed", _ip_summed_name(ev.ip_summed)),
        ("csum", f"0x{ev.csum & 0xFFFFFFFF:08x}"),
        ("csum_start", ev.csum_start),
        ("csum_offset", ev.csum_offset),
        ("csum_level", ev.csum_level),
        ("csum_valid", int(ev.csum_valid)),
        ("encapsulation", int(ev.encapsulation)),
        ("gso_size", ev.gso_size),
        ("gso_segs", ev.gso_segs),
        ("gso_type", f"0x{ev.gso_type:x}"),
        ("len", ev.len),
        ("data_len", ev.data_len),
        ("data_offset", ev.data_offset),
        ("mark", f"0x{ev.mark:x}"),
        ("netns", ev.netns),
        ("ifindex", ev.ifindex),
        ("skb", f"0x{ev.skb:x}"),
    )
    return SKB_PREFIX + " ".join(f"{k}={v}" for k, v in fields)


def parse_skb_comment(comment: str) -> dict[str, str] | None:
    """The fields of a `badsum:skb` comment as text; None for any other comment."""
    if not comment.startswith(SKB_PREFIX):
        return None
    out: dict[str, str] = {}
    for word in comment[len(SKB_PREFIX) :].split():
        key, sep, value = word.partition("=")
        if sep and key:
            out[key] = value
    return out


def write_events(
    path: str | os.PathLike[str],
    events: Iterable[KernelEvent],
    names: Mapping[int, str],
    *,
    wall_offset_ns: int,
    filter_text: str = "",
    snaplen: int = 0,
    loss: Loss | None = None,
) -> WriteSummary:
    """Write `events` as pcapng at `path`, atomically (PcapngWriter: a temporary file renamed on
    success; nothing is left behind on an error).

    `names`: netns inode -> namespace id (`host`, `c1`, `pid:123`); a device is labelled
    `NS:IFNAME`, `netns:INODE:IFNAME` for an unnamed namespace. `wall_offset_ns` turns the events'
    CLOCK_MONOTONIC times into UNIX times. `filter_text` is what the user gave `-f` (empty: every
    packet). `snaplen` (0: no limit) goes in every IDB; bytes beyond it are not written. Packets
    are written in time order. Raises OSError (UnsafeTarget for a directory, FIFO, device...)
    before creating anything when `path` cannot be a capture.
    """
    ordered = [ev for _, ev in sorted(enumerate(events), key=lambda p: (p[1].ts_ns, p[0]))]
    merged = _merged_rx(ordered)  # RX index -> the RECV index it is folded into
    absorbed = set(merged.values())
    drop_totals = _drop_totals(ordered, names)
    linktypes: dict[str, set[int]] = {}
    for ev in ordered:
        if ev.hook != Hook.DROP:
            linktypes.setdefault(_label(ev, names), set()).add(_linktype(ev))
    comments = [_follow_comment(filter_text, wall_offset_ns), *_drop_comments(drop_totals)]
    if loss is not None:
        comments.append(f"{LOST_PREFIX}ring_full={loss.ring_full} rate_limited={loss.rate_limited} "
                        f"truncated={loss.truncated}")  # fmt: skip
    idbs: dict[tuple[str, int], int] = {}
    with PcapngWriter(path, comments=comments) as w:
        for i, ev in enumerate(ordered):
            if ev.hook == Hook.DROP or i in merged:
                continue
            label, linktype = _label(ev, names), _linktype(ev)
            idb = idbs.get((label, linktype))
            if idb is None:
                idb = idbs[(label, linktype)] = w.add_interface(
                    linktype, snaplen=snaplen, name=_if_name(label, linktype, linktypes[label]),
                    description=f"badsum follow: {label} (netns {ev.netns}, ifindex {ev.ifindex})")  # fmt: skip
            data = ev.data[:snaplen] if snaplen else ev.data
            hooks = "rx+recv" if i in absorbed else None
            w.write_packet(idb, data, ts_ns=max(0, ev.ts_ns + wall_offset_ns), origlen=max(ev.wire_len, len(ev.data)),
                           comments=[skb_comment(ev, hooks)], tp_status=tp_status_of(ev),
                           direction=DIRECTION_OUTBOUND if ev.hook == Hook.XMIT else DIRECTION_INBOUND)  # fmt: skip
        packets, interfaces = w.packets, w.interfaces
    return WriteSummary(os.fspath(path), packets, interfaces, len(merged), sum(d.count for d in drop_totals),
                        tuple(drop_totals))  # fmt: skip


def _merged_rx(ordered: Sequence[KernelEvent]) -> dict[int, int]:
    """RX events whose skb's next event is its RECV at the same device, with that RECV's index:
    one sighting (netif_rx queues, netif_receive_skb delivers; follow/journey.py joins them too)."""
    merged: dict[int, int] = {}
    next_of_skb: dict[int, int] = {}
    for i in range(len(ordered) - 1, -1, -1):
        ev = ordered[i]
        j = next_of_skb.get(ev.skb)
        if ev.hook == Hook.RX and j is not None:
            nxt = ordered[j]
            if nxt.hook == Hook.RECV and (nxt.netns, nxt.ifindex, nxt.ifname) == (ev.netns, ev.ifindex, ev.ifname):
                merged[i] = j
        next_of_skb[ev.skb] = i
    return merged


def _label(ev: KernelEvent, names: Mapping[int, str]) -> str:
    """`NS:IFNAME` exactly as follow's own output names the device (`NS:-` without a device)."""
    return device_of(ev, names).label if ev.ifname else f"{namespace_of(ev.netns, names)}:-"


def _linktype(ev: KernelEvent) -> int:
    return LINKTYPE_ETHERNET if ev.l2 else LINKTYPE_RAW


def _if_name(label: str, linktype: int, kinds: set[int]) -> str:
    """The label; a device seen both with and without its MAC header gets two IDBs, and trace
    makes one point per IDB, so the headerless one is `LABEL/raw` to keep point labels unique."""
    return f"{label}/raw" if linktype == LINKTYPE_RAW and LINKTYPE_ETHERNET in kinds else label


def _ip_summed_name(value: int) -> str:
    try:
        return IpSummed(value).name
    except ValueError:
        return str(value)


def _follow_comment(filter_text: str, wall_offset_ns: int) -> str:
    shown = filter_text.strip() or "none (every packet)"
    return (f"{FOLLOW_PREFIX}recorded by `badsum follow` (eBPF); time = CLOCK_MONOTONIC + {wall_offset_ns} ns; "
            f"filter: {shown}")  # fmt: skip


def _drop_totals(ordered: Sequence[KernelEvent], names: Mapping[int, str]) -> list[DropTotal]:
    last_device: dict[int, str] = {}
    counts: Counter[tuple[str, str, str]] = Counter()
    for ev in ordered:
        if ev.hook != Hook.DROP:
            last_device[ev.skb] = _label(ev, names)
            continue
        # skb->dev is gone at some drop points: name the device the skb was last seen at.
        device = _label(ev, names) if ev.ifname else last_device.get(ev.skb, _label(ev, names))
        last_device.pop(ev.skb, None)  # the address is free for the next skb
        location = ev.location_name or (f"0x{ev.location:x}" if ev.location else "-")
        counts[(device, ev.reason_name or str(ev.reason), location)] += 1
    return [DropTotal(d, r, loc, n) for (d, r, loc), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _drop_comments(totals: Sequence[DropTotal]) -> list[str]:
    if not totals:
        return []
    out = [f"{DROPS_PREFIX}total={sum(d.count for d in totals)} groups={len(totals)} "
           "(skb:kfree_skb events, not written as packets)"]  # fmt: skip
    out += [f"{DROP_PREFIX}device={d.device} reason={d.reason} location={d.location} count={d.count}"
            for d in totals[:MAX_DROP_COMMENTS]]  # fmt: skip
    return out


__all__ = ["DropTotal", "WriteSummary", "parse_skb_comment", "skb_comment", "tp_status_of", "write_events"]
