"""From observations at every point to flows: hop tables and first bad hops."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from badsum.trace.align import Chain, align, order_by_time
from badsum.trace.hops import (
    byte_changes,
    field_changes,
    kernel_text,
    l4_verdicts,
    status_text,
)
from badsum.trace.keys import innermost
from badsum.trace.model import Observation, Point
from badsum.trace.topology import Topology
from badsum.trace.verdict import BadHop, judge_chain
from badsum.wire import sctp, tcp, udp

#: At most this many bad packets are listed per flow.
MAX_BAD_LISTED = 200


@dataclass(slots=True)
class FlowTrace:
    """One flow (as seen at the first point its packets were seen), in one direction."""

    flow: dict[str, object]
    text: str
    reverse: bool
    order: list[int]
    chains: list[Chain] = field(default_factory=list)
    bad: list[BadHop] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TraceResult:
    points: list[Point]
    order: list[int]
    """Point indexes in path order."""
    flows: list[FlowTrace]
    notes: list[str]


def trace(points: list[Point], observations: list[Observation], topo: Topology, order_by: str = "given") -> TraceResult:
    chains = align(observations, len(points))
    order = list(range(len(points))) if order_by == "given" else order_by_time(chains, len(points))
    if order_by != "given":
        rank = {p: i for i, p in enumerate(order)}
        for c in chains:
            seen = sorted(c.at, key=rank.__getitem__)
            if len(seen) > 1:
                c.reverse = min(o.ts_ns for o in c.at[seen[-1]]) < min(o.ts_ns for o in c.at[seen[0]])
    flows: dict[tuple, FlowTrace] = {}
    for c in chains:
        seq = order[::-1] if c.reverse else order
        first = next(p for p in seq if p in c.at)
        pkt = innermost(c.at[first][0].frame)
        if pkt is None:
            continue
        flow, text = flow_of(pkt)
        key = (text, c.reverse)
        if key not in flows:
            flows[key] = FlowTrace(flow, text, c.reverse, seq)
        flows[key].chains.append(c)
    notes: list[str] = []
    for f in flows.values():
        reach = {p for c in f.chains for p in c.at}
        for c in f.chains:
            j = judge_chain(c, points, topo, reach, f.order)
            if j.bad is not None:
                f.bad.append(j.bad)
            for u in j.unconfirmed_partial:
                if u not in f.unconfirmed:
                    f.unconfirmed.append(u)
    if topo.snapshot is None and not any(o.kernel_known for o in observations):
        notes.append("no kernel status in the captures and no --snapshot: a checksum still pending "
                     "(partial) after the first point is reported as unconfirmed, not as a fault")  # fmt: skip
    return TraceResult(points, order, sorted(flows.values(), key=lambda f: min(c.first_ts for c in f.chains)), notes)


def flow_of(pkt) -> tuple[dict[str, object], str]:
    from badsum.trace.hops import addr

    src, dst = addr(pkt.ip.src), addr(pkt.ip.dst)
    sport = dport = 0
    if isinstance(pkt.l4, (tcp.TCPHeader, udp.UDPHeader, sctp.SCTPHeader)):
        sport, dport = pkt.l4.sport, pkt.l4.dport
    flow = {"src": src, "dst": dst, "proto": pkt.proto, "sport": sport, "dport": dport}
    if sport or dport:
        s, d = (f"[{src}]:{sport}", f"[{dst}]:{dport}") if pkt.ip.version == 6 else (f"{src}:{sport}", f"{dst}:{dport}")
        return flow, f"{s} > {d} proto {pkt.proto}"
    return flow, f"{src} > {dst} proto {pkt.proto}"


def first_bad(f: FlowTrace) -> dict[str, object] | None:
    """The flow's first bad hop: the earliest (in its direction) where any of its packets went bad."""
    if not f.bad:
        return None
    # A packet that went bad names the hop; a drop only when none did (a bad packet is dropped too).
    bad = [b for b in f.bad if b.kind != "dropped"] or f.bad
    pos = min(b.position for b in bad)
    here = [b for b in bad if b.position == pos]
    (after, before, kind), n = Counter((b.after, b.before, b.kind) for b in here).most_common(1)[0]
    ex = next(b for b in here if (b.after, b.before, b.kind) == (after, before, kind))
    d: dict[str, object] = {"after": after, "before": before, "kind": kind, "packets": n, "why": ex.why,
                            "example": ex.packets[0] if ex.packets else None}  # fmt: skip
    if kind == "corruption":
        d["offsets"] = [o.as_dict() for b in here if b.kind == kind for o in b.offsets][:64]
    return d


def hop_table(f: FlowTrace, points: list[Point], topo: Topology) -> list[dict[str, object]]:
    rows = []
    prev_point: int | None = None
    for p in f.order:
        statuses: Counter = Counter()
        kernel: Counter = Counter()
        changes: dict[tuple, dict[str, object]] = {}
        seen = bytes_changed = segmented = 0
        for c in f.chains:
            obs = c.at.get(p)
            if not obs:
                continue
            seen += 1
            for o in obs:
                statuses.update(status_text(v) for v in l4_verdicts(o))
                if o.kernel_known:
                    kernel[kernel_text(o.tp_status)] += 1
            before = _previous(c, f.order, p)
            if before is None:
                continue
            if len(before) != len(obs):
                segmented += 1
            for ch in field_changes(before[0], obs[0]):
                k = (ch.layer, ch.field, ch.depth)
                if k not in changes:
                    changes[k] = {**ch.as_dict(), "packets": 0}
                changes[k]["packets"] += 1  # type: ignore[operator]
            if any(byte_changes(before, o) for o in obs):
                bytes_changed += 1
        row: dict[str, object] = {"point": points[p].label, "seen": seen, "missing": len(f.chains) - seen,
                                  "checksums": dict(statuses), "kernel": dict(kernel),
                                  "changes": list(changes.values()), "payload_changed": bytes_changed,
                                  "segmentation_changed": segmented}  # fmt: skip
        if prev_point is not None and topo.snapshot is not None:
            hop = topo.hop(points[prev_point], points[p])
            row["hop"] = {"kind": hop.kind, "why": hop.why}
        rows.append(row)
        prev_point = p
    return rows


def _previous(c: Chain, order: list[int], p: int) -> list[Observation] | None:
    i = order.index(p)
    for q in reversed(order[:i]):
        if q in c.at:
            return c.at[q]
    return None


def bad_packets(f: FlowTrace) -> list[dict[str, object]]:
    out = []
    for b in f.bad[:MAX_BAD_LISTED]:
        d: dict[str, object] = {"after": b.after, "before": b.before, "kind": b.kind, "why": b.why}
        if b.packets:
            d.update(b.packets[0])
        out.append(d)
    return out


def to_data(r: TraceResult, topo: Topology, files: list[str]) -> dict[str, object]:
    flows = []
    for f in r.flows:
        flows.append({
            "flow": f.flow, "text": f.text, "direction": "reverse" if f.reverse else "forward",
            "packets": len(f.chains), "hops": hop_table(f, r.points, topo), "first_bad_hop": first_bad(f),
            "bad_packets": bad_packets(f), "unconfirmed_partial": f.unconfirmed,
        })  # fmt: skip
    by_kind = Counter(fl["first_bad_hop"]["kind"] for fl in flows if fl["first_bad_hop"])  # type: ignore[index]
    return {
        "points": [{"label": pt.label, "file": files[i]} for i, pt in enumerate(r.points)],
        "path": [r.points[p].label for p in r.order],
        "topology": "snapshot" if topo.snapshot is not None else "none",
        "flows": flows,
        "summary": {"flows": len(flows), "flows_bad": sum(by_kind.values()), "by_kind": dict(by_kind)},
        "notes": r.notes,
    }
