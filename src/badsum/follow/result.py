"""From kernel events to flows: journeys judged hop by hop, the first bad hop per flow, drops.

`to_data` gives the JSON envelope's `data`, with `first_bad_hop {after, before, kind}` exactly as
`badsum trace --json` has it (labels `NS:IFNAME`, `host:` for the root namespace).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from badsum.follow.causes import fix_hint, likely_causes
from badsum.follow.hops import (
    DROPPED,
    FAULTS,
    HopVerdict,
    counterpart,
    drop_reason,
    evidence,
    judge_journey,
    location,
    summed_name,
)
from badsum.follow.journey import Journey, Sighting, build_journeys, predecessor
from badsum.follow.tunnel import outer_rewrite_why, outer_udp, tunnel_of
from badsum.follow.model import IpSummed, KernelEvent
from badsum.trace.build import flow_of
from badsum.trace.hops import l4_verdicts, status_text
from badsum.trace.keys import innermost, stack
from badsum.wire import tcp
from badsum.wire.frame import IPPacket
from badsum.wire.ports import PortTable

#: At most this many journeys are listed per flow in `to_data` (all are counted).
MAX_JOURNEYS_LISTED = 20


@dataclass(frozen=True, slots=True)
class Hop:
    """One hop of a journey with its verdict."""

    sighting: Sighting
    verdict: HopVerdict

    @property
    def label(self) -> str:
        return self.sighting.label

    @property
    def kind(self) -> str:
        return self.verdict.kind


@dataclass(frozen=True, slots=True)
class Fault:
    """Where one packet went bad: between `after` and `before`."""

    after: Hop | None
    """The last hop before it on another device (None: bad where first seen)."""
    before: Hop
    kind: str
    why: str
    position: int
    """How many hops (drops aside) came before `before` in the journey."""


@dataclass(frozen=True, slots=True)
class JudgedJourney:
    journey: Journey
    hops: tuple[Hop, ...]
    fault: Fault | None
    """The first fault; or, when there is none, the first drop for a checksum reason."""
    packet: IPPacket | None
    """The innermost packet where first seen with IP (None: no IP anywhere)."""


@dataclass(frozen=True, slots=True)
class FlowFollow:
    """One flow (innermost 5-tuple as first seen), in one direction."""

    flow: dict[str, object]
    text: str
    direction: str
    """`forward`, or `reverse` when the opposite direction was seen first."""
    journeys: tuple[JudgedJourney, ...]
    first_bad_hop: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class DropCount:
    netns: int
    namespace: str
    device: str
    reason: str
    location: str
    count: int

    def as_dict(self) -> dict[str, object]:
        return {"netns": self.netns, "namespace": self.namespace, "device": self.device,
                "label": f"{self.namespace}:{self.device}", "reason": self.reason, "location": self.location,
                "count": self.count}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FollowResult:
    events: int
    journeys: tuple[JudgedJourney, ...]
    flows: tuple[FlowFollow, ...]
    drops: tuple[DropCount, ...]


def follow_analysis(events: Iterable[KernelEvent], names: Mapping[int, str], ports: PortTable | None = None) -> FollowResult:
    """Journeys, flows with their first bad hop, and drops, from one run's events (any order)."""
    ports = ports or PortTable()
    events = list(events)
    judged = tuple(_judge(j, ports) for j in build_journeys(events, names, ports))
    return FollowResult(len(events), judged, _flows(judged), _drops(judged))


def is_checksum_reason(name: str) -> bool:
    """TCP_CSUM, UDP_CSUM, ICMP_CSUM, IP_CSUM, SKB_CSUM, ... (include/net/dropreason-core.h)."""
    return "CSUM" in name.upper()


def _judge(j: Journey, ports: PortTable) -> JudgedJourney:
    hops = tuple(Hop(s, v) for s, v in zip(j.hops, judge_journey(j, ports)))
    packet = next((p for h in sorted(hops, key=lambda h: h.sighting.direction == "drop")
                   if (p := innermost(h.sighting.frame)) is not None), None)  # fmt: skip
    return JudgedJourney(j, hops, _fault(hops), packet)


def _fault(hops: tuple[Hop, ...]) -> Fault | None:
    for want in (lambda h: h.kind in FAULTS,
                 lambda h: h.kind == DROPPED and is_checksum_reason(h.sighting.event.reason_name)):  # fmt: skip
        for i, h in enumerate(hops):
            if want(h):
                k = predecessor(tuple(x.sighting for x in hops), i)
                after = hops[k] if k is not None else None
                why = h.verdict.why
                if h.kind == DROPPED:
                    why = (f"dropped at {h.label} ({drop_reason(h.sighting.event)} at {location(h.sighting.event)}); no hop "
                           "before it had bytes the checksum engine could call wrong")  # fmt: skip
                return Fault(after, h, h.kind, why, sum(1 for p in hops[:i] if p.sighting.direction != "drop"))
    return None


def _zero_outer(judged: tuple[JudgedJourney, ...]) -> Counter:
    """(device, direction, outer src, dst, UDP dport) -> how many tunnel packets passed there with outer UDP checksum 0."""
    seen: Counter = Counter()
    for jj in judged:
        for h in jj.hops:
            if h.sighting.direction != "drop" and (o := outer_udp(h.sighting.frame)) is not None and o[1].checksum == 0:
                seen[(h.label, h.sighting.direction, o[0].ip.src, o[0].ip.dst, o[1].dport)] += 1
    return seen


def _flows(judged: tuple[JudgedJourney, ...]) -> tuple[FlowFollow, ...]:
    zero = _zero_outer(judged)
    groups: dict[str, tuple[dict[str, object], list[JudgedJourney]]] = {}
    for jj in judged:
        if jj.packet is None:
            continue
        flow, text = flow_of(jj.packet)
        groups.setdefault(text, (flow, []))[1].append(jj)
    out: list[FlowFollow] = []
    seen: set[tuple] = set()
    for text, (flow, members) in groups.items():
        # Reverse: the swapped tuple was seen (anywhere on its path, NAT included) by an earlier flow.
        reverse = (flow["dst"], flow["dport"], flow["src"], flow["sport"], flow["proto"]) in seen
        for jj in members:
            for h in jj.hops:
                p = innermost(h.sighting.frame)
                if p is not None:
                    g, _ = flow_of(p)
                    seen.add((g["src"], g["sport"], g["dst"], g["dport"], g["proto"]))
        out.append(FlowFollow(flow, text, "reverse" if reverse else "forward", tuple(members), _first_bad(members, zero)))
    return tuple(out)


def _first_bad(members: list[JudgedJourney], zero: Counter | None = None) -> dict[str, object] | None:
    faults = [(jj, jj.fault) for jj in members if jj.fault is not None]
    # A packet that went bad names the hop; a drop only when none did (a bad packet is dropped too).
    real = [(jj, f) for jj, f in faults if f.kind != DROPPED] or faults
    if not real:
        return None

    def triple(f: Fault) -> tuple:
        return (f.after.label if f.after else None, f.before.label, f.kind)

    pos = min(f.position for _, f in real)
    (after, before, kind), _ = Counter(triple(f) for _, f in real if f.position == pos).most_common(1)[0]
    jj, ex = next((jj, f) for jj, f in real if f.position == pos and triple(f) == (after, before, kind))
    bs = ex.before.sighting
    ev = bs.event
    check = ex.before.verdict.check
    why = ex.why
    zero_before = _zero_before(ex)
    if ex.before.verdict.encapsulated_after and check is not None and (o := outer_udp(bs.frame)) is not None:
        # Other packets of the same tunnel leaving the same device with 0 show what the encapsulation writes.
        n = (zero or Counter())[(bs.label, bs.direction, o[0].ip.src, o[0].ip.dst, o[1].dport)]
        why = outer_rewrite_why(bs, check, ex.before.verdict.encapsulated_after, n)
        zero_before = zero_before or n > 0
    facts: dict[str, object] = {
        "after": after, "before": before, "ip_summed": summed_name(ev.ip_summed),
        "layer": check.layer.label if check is not None else None, "tunnelled": len(stack(bs.frame)) > 1,
        "outer": check is not None and check.depth < max((p.depth for p in stack(bs.frame)), default=0),
        "tunnel": tunnel_of(bs.frame), "direction": bs.direction, "zero_before": zero_before,
        "sender": next((h.label for h in jj.hops if h.sighting.event.ip_summed == IpSummed.PARTIAL), None),
    }  # fmt: skip
    return {
        "after": after, "before": before, "kind": kind, "why": why,
        "packets": sum(1 for _, f in real if triple(f) == (after, before, kind)),
        "evidence": {"after": evidence(ex.after.sighting, ex.after.verdict) if ex.after else None,
                     "before": evidence(ex.before.sighting, ex.before.verdict)},
        "likely_causes": likely_causes(kind, facts), "fix": fix_hint(kind, facts),
        "example": _example(jj),
    }  # fmt: skip


def _zero_before(f: Fault) -> bool:
    """The checksum at the bad hop is a UDP one that was 0 (none) at the hop before it."""
    check = f.before.verdict.check
    if f.after is None or check is None or check.layer.label != "udp" or check.stored == 0:
        return False
    pv = counterpart(check, f.before.sighting.frame, f.after.sighting.frame, f.after.verdict.verdicts)
    return pv is not None and pv.stored == 0


def _example(jj: JudgedJourney) -> dict[str, object]:
    d: dict[str, object] = {"journey": jj.journey.index, "skbs": [f"0x{s:x}" for s in jj.journey.skbs],
                            "ts_ns": jj.journey.first_ts}  # fmt: skip
    p = jj.packet
    if p is not None and p.ip.version == 4:
        d["ip_id"] = p.ip.ident
    if p is not None and isinstance(p.l4, tcp.TCPHeader):
        d["seq"] = p.l4.seq
    return d


def _drops(judged: tuple[JudgedJourney, ...]) -> tuple[DropCount, ...]:
    counts: Counter = Counter()
    for jj in judged:
        for h in jj.hops:
            if h.sighting.direction == "drop":
                dev, ev = h.sighting.device, h.sighting.event
                counts[(dev.netns, dev.namespace, dev.ifname, drop_reason(ev), location(ev))] += 1
    return tuple(DropCount(*k, n) for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][1:])))


def _main_status(hv: HopVerdict) -> str | None:
    if hv.check is not None:
        return status_text(hv.check)
    l4 = l4_verdicts(hv.obs)
    return status_text(l4[-1]) if l4 else None


def hop_table(f: FlowFollow) -> list[dict[str, object]]:
    """One row per (device, direction) the flow's packets passed, in the order they pass them."""
    rows: dict[tuple[str, str], dict] = {}
    delay: dict[tuple[str, str], list[int]] = {}
    for jj in f.journeys:
        t0 = jj.journey.first_ts
        for h in jj.hops:
            s = h.sighting
            k = (s.label, s.direction)
            r = rows.setdefault(k, {"device": s.label, "namespace": s.device.namespace, "ifname": s.device.ifname,
                                    "direction": s.direction, "packets": set(), "hooks": Counter(), "ip_summed": Counter(),
                                    "kinds": Counter(), "checksums": Counter(), "reasons": Counter()})  # fmt: skip
            delay.setdefault(k, []).append(s.ts_ns - t0)
            r["packets"].add(jj.journey.index)
            r["hooks"][s.hook_text] += 1
            r["ip_summed"][summed_name(s.event.ip_summed)] += 1
            r["kinds"][h.kind] += 1
            st = _main_status(h.verdict)
            if st:
                r["checksums"][st] += 1
            if s.direction == "drop":
                r["reasons"][drop_reason(s.event)] += 1
    # Order by precedence within journeys (a row comes before another when more journeys pass it
    # first), not by mean delay: the journeys that reach a row differ (a drop ends only the bad
    # ones), and a userspace forwarder's delay varies by orders of magnitude.
    before: Counter[tuple[tuple[str, str], tuple[str, str]]] = Counter()
    for jj in f.journeys:
        order = list(dict.fromkeys((h.sighting.label, h.sighting.direction) for h in jj.hops))
        for i, a in enumerate(order):
            for b in order[i + 1 :]:
                before[(a, b)] += 1
    wins = {a: sum(1 for b in rows if b != a and before[(a, b)] > before[(b, a)]) for a in rows}
    out = []
    for k in sorted(rows, key=lambda k: (-wins[k], sum(delay[k]) / len(delay[k]), k[1] == "drop")):
        r = dict(rows[k], packets=len(rows[k]["packets"]))
        for c in ("hooks", "ip_summed", "kinds", "checksums", "reasons"):
            r[c] = dict(r[c])
        if k[1] != "drop":
            del r["reasons"]
        out.append(r)
    return out


def _journey_data(jj: JudgedJourney) -> dict[str, object]:
    hops = []
    for h in jj.hops:
        s, ev = h.sighting, h.sighting.event
        d: dict[str, object] = {"device": s.label, "direction": s.direction, "hook": s.hook_text, "ts_ns": ev.ts_ns,
                                "skb": f"0x{ev.skb:x}", "ip_summed": summed_name(ev.ip_summed), "kind": h.kind,
                                "checksum": _main_status(h.verdict), "why": h.verdict.why}  # fmt: skip
        if s.direction == "drop":
            d["reason"], d["location"] = drop_reason(ev), location(ev)
        hops.append(d)
    return {"journey": jj.journey.index, "skbs": [f"0x{s:x}" for s in jj.journey.skbs], "hops": hops}


def to_data(r: FollowResult) -> dict[str, object]:
    """The JSON envelope's `data` for `badsum follow --json`."""
    flows = []
    for f in r.flows:
        flows.append({"flow": f.flow, "text": f.text, "direction": f.direction, "packets": len(f.journeys),
                      "hops": hop_table(f), "first_bad_hop": f.first_bad_hop,
                      "journeys": [_journey_data(jj) for jj in f.journeys[:MAX_JOURNEYS_LISTED]]})  # fmt: skip
    by_kind = Counter(fl["first_bad_hop"]["kind"] for fl in flows if fl["first_bad_hop"])  # type: ignore[index]
    hop_kinds = Counter(h.kind for jj in r.journeys for h in jj.hops)
    return {
        "flows": flows,
        "drops": [d.as_dict() for d in r.drops],
        "summary": {"events": r.events, "journeys": len(r.journeys), "flows": len(flows), "flows_bad": sum(by_kind.values()),
                    "by_kind": dict(by_kind), "hops_by_kind": dict(hop_kinds), "drops": sum(d.count for d in r.drops)},
    }  # fmt: skip


def hop_rows(flow: Mapping[str, object]) -> list[str]:
    """One line per hop of a `to_data` flow: namespace:device, direction, ip_summed, checksum and kind."""
    out = []
    for r in flow["hops"]:  # type: ignore[attr-defined]
        summed = "/".join(r["ip_summed"])
        if r["direction"] == "drop":
            what = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in r["reasons"].items())
        else:
            checks = ", ".join(r["checksums"]) or "no checksum"
            what = f"{checks}: " + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in r["kinds"].items())
        out.append(f"{r['device']:<24} {r['direction']:<4} {summed:<12} {what}")
    return out


def text_lines(data: Mapping[str, object]) -> list[str]:
    """The answer first (flow, first bad hop, why, likely causes, fix), then the hops, then drops."""
    lines: list[str] = []
    for f in data["flows"]:  # type: ignore[attr-defined]
        head = f"{f['text']} ({f['packets']} packet{'s' if f['packets'] != 1 else ''})"
        fb = f["first_bad_hop"]
        if fb:
            lines.append(f"{head}: first bad hop {fb['after'] or '(where first seen)'} -> {fb['before']}: {fb['kind']}")
            lines.append(f"  why: {fb['why']}")
            if fb["likely_causes"]:
                lines.append("  likely: " + "; ".join(f"{c['id']} ({c['why']})" for c in fb["likely_causes"]))
            if fb["fix"]:
                lines.append(f"  fix: {fb['fix']}")
        else:
            lines.append(f"{head}: no fault")
        lines += [f"    {row}" for row in hop_rows(f)]
    drops = data["drops"]
    if drops:
        lines.append("drops:")
        for d in drops:  # type: ignore[attr-defined]
            lines.append(f"    {d['label']:<24} {d['reason']} at {d['location']} x{d['count']}")
    return lines
