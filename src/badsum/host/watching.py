"""`badsum watch`'s workflow: every interval, what moved in each namespace's checksum and
fragmentation counters, and the kernel's drops, each placed in a namespace (docs/cli.md, `badsum watch`).

A drop is placed by the kernel itself (eBPF: the skb's own namespace and device), else, read from
tracefs, joined to the one namespace whose matching counter moved in the same interval
(`counter-join`), else left `host-wide`. `Watch` yields one record per interval; the CLI
(cli/watch.py) prints them, as JSON lines, plain blocks or a refreshing view.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from badsum.host import kernel_drops, netns, nscounters
from badsum.host.counters import CSUM_COUNTERS
from badsum.host.drops import HOST_WIDE, protocol_name
from badsum.host.kernel_drops import KERNEL, DropSource
from badsum.host.model import HOST_NS
from badsum.host.netns import NsRef

#: The tracefs instance a watch makes is this prefix and the process id.
INSTANCE_PREFIX = "badsum-watch-"


class CannotWatch(Exception):
    """Neither counters nor drops can be read: nothing to watch. `why` is the counters' reason."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


@dataclass
class Totals:
    """What moved since the watch started."""

    intervals: int = 0
    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    """(namespace id, counter) -> sum of deltas."""
    drops: dict[tuple[str, int, str, str | None, int | None, str | None], int] = field(default_factory=dict)
    """(reason, protocol, location, namespace id, netns inode, device) -> count."""
    lost: int = 0
    findings: bool = False
    namespaces: set[str] = field(default_factory=set)


class Watch:
    """One watch over the namespaces `found` (only the inodes in `wanted`, when given).

    `open_drops()` opens the drop reader (root only), `baseline()` takes the first sample;
    `intervals()` then yields one record per interval until `duration` (forever when None);
    `close()` stops the reader and the sampler, whatever happened."""

    def __init__(self, found: Sequence[NsRef], wanted: set[int] | None, *, root: bool, interval: float,
                 duration: float | None, drops: str = "auto", instance: str = INSTANCE_PREFIX,
                 discover: Callable[[], netns.Discovery] = netns.discover,
                 sampler: nscounters.Sampler | None = None) -> None:  # fmt: skip
        self.found, self.root, self.interval, self.duration = list(found), root, interval, duration
        self.drops_choice, self.instance, self._discover = drops, instance, discover
        self.refs = self.found
        self.wanted = wanted
        self.notes: list[dict[str, str]] = []
        if not root:
            # Without root only namespaces that need no entering (badsum's own) can be read.
            self.refs = [r for r in self.found if r.enter is None]
            own = {r.inode for r in self.refs}
            self.wanted = own if wanted is None else wanted & own
            self.notes.append({"code": "watch.not_root", "message": f"not root: counters of badsum's own namespace "
                               f"({HOST_NS}) only; other namespaces and kernel drops need root"})  # fmt: skip
        self.source = DropSource(None, None, None, "not root")
        self.sampler = sampler or nscounters.Sampler()
        self.totals = Totals()
        self.started = time.time()
        self.ids: dict[int, str] = {}
        self.current: list[NsRef] = []
        self.before: dict[int, nscounters.Sample] = {}

    def open_drops(self) -> None:
        """The kernel counter, else tracefs (as `drops` chose); `notes` say which and why."""
        if self.root:
            self.source = kernel_drops.open_drops(self.drops_choice, self.instance)
            self.notes += drops_notes(self.source)

    def baseline(self) -> None:
        """The first sample of every namespace in scope. CannotWatch when neither counters nor drops
        can be read."""
        self.ids = _ids(self.found)
        self.current = _select(self.found if self.root else self.refs, self.wanted)
        self.before = self.sampler.sample_all(self.current)
        reader = self.source.reader
        if reader is not None:
            reader.read()  # what the kernel counted before the baseline is not this watch's
        if reader is None and not any(s.values is not None for s in self.before.values()):
            why = next((s.error for s in self.before.values() if s.error), "no namespace could be read")
            raise CannotWatch(f"counters unreadable ({why}) and {self.source.why_not or 'no drops'}", why)

    def intervals(self) -> Iterator[dict[str, Any]]:
        """One record per interval (`interval_record`), added to `totals` before it is yielded."""
        reader, method = self.source.reader, self.source.method
        t0 = time.monotonic()
        seq = 0
        while self.duration is None or seq * self.interval < self.duration - 1e-9:
            seq += 1
            step = self.interval if self.duration is None else min(self.interval, self.duration - (seq - 1) * self.interval)
            start = time.time()
            _sleep_until(t0 + (seq - 1) * self.interval + step)
            previous = self.current
            now_found = self._discover().namespaces if self.root else self.refs
            # A namespace gone during the interval still names its last drops.
            self.ids = {**self.ids, **_ids(now_found)}
            self.current = _select(now_found, self.wanted)
            after = self.sampler.sample_all(self.current)
            moved = nscounters.deltas(self.current, self.before, after, previous)
            drops = reader.read() if reader is not None else []
            if method == KERNEL and self.wanted is not None:
                drops = [d for d in drops if d.netns in self.wanted]
            record = interval_record(seq, start, time.time(), moved, drops, reader, method, self.ids)
            self.ids = _ids(now_found)
            add(self.totals, record)
            self.before = after
            yield record

    def summary(self) -> dict[str, Any]:
        return summary_record(self.totals, self.started, time.time(), self.source)

    def close(self) -> None:
        if self.source.reader is not None:
            self.source.reader.stop()
        self.sampler.close()


def drops_notes(source: DropSource) -> list[dict[str, str]]:
    """The one line saying how drops are placed when it is not the kernel's way, and why."""
    if source.method is None:
        return [{"code": "watch.no_drops", "message": f"kernel drops not shown: {source.why_not}; counters only"}]
    if source.kernel_why_not is not None:
        return [{"code": "watch.counter_join", "message": "drops are host-wide, joined to namespaces by their "
                 f"counters: the kernel drop counter is not available ({source.kernel_why_not})"}]  # fmt: skip
    return []


def _ids(refs: Any) -> dict[int, str]:
    return {r.inode: r.id for r in refs}


def _select(refs: Any, wanted: set[int] | None) -> list[Any]:
    return [r for r in refs if wanted is None or r.inode in wanted]


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


def is_checksum_reason(reason: str) -> bool:
    return reason.endswith("_CSUM")


def interval_record(seq: int, start: float, end: float, moved: list[Any], drops: list[Any], watch: Any,
                    method: str | None, ids: dict[int, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One interval as data (the JSON line's `data`, and what the views draw). Drops the kernel
    placed (`method` kernel) keep their namespace, named through `ids` (inode -> namespace id);
    host-wide ones are joined to the one namespace whose matching counter moved, if one did."""
    by_code = {v: k for k, v in (watch.reasons if watch is not None else {}).items()}
    out_drops = []
    for d in drops:
        device = getattr(d, "device", None)
        if method == KERNEL or d.netns is not None:
            out_drops.append({
                "reason": d.reason, "reason_code": by_code.get(d.reason), "protocol": d.protocol,
                "protocol_name": d.protocol_name, "location": d.location, "count": d.count,
                "netns": d.netns, "namespace": (ids or {}).get(d.netns) if d.netns else None,
                "attribution": KERNEL if d.netns else HOST_WIDE, "candidates": [], "device": device,
            })  # fmt: skip
            continue
        cands = nscounters.attribute(d.reason, moved)
        one = cands[0] if len(cands) == 1 else None
        out_drops.append({
            "reason": d.reason, "reason_code": by_code.get(d.reason), "protocol": d.protocol,
            "protocol_name": d.protocol_name, "location": d.location, "count": d.count,
            "netns": one.inode if one else None, "namespace": one.ns_id if one else None,
            "attribution": method if one else HOST_WIDE,
            "candidates": [c.ns_id for c in cands] if len(cands) > 1 else [], "device": device,
        })  # fmt: skip
    namespaces = [{"id": m.ns_id, "inode": m.inode, "state": m.state, "deltas": m.deltas, "error": m.error}
                  for m in moved]  # fmt: skip
    csum_moved = any(m.moved(CSUM_COUNTERS) for m in moved)
    csum_drops = any(is_checksum_reason(d["reason"]) for d in out_drops)
    return {
        "kind": "interval", "seq": seq, "start": round(start, 3), "end": round(end, 3),
        "namespaces": namespaces, "drops": out_drops, "drops_method": method,
        "drops_lost": watch.lost if watch is not None else 0, "findings": csum_moved or csum_drops,
    }  # fmt: skip


def add(t: Totals, record: dict[str, Any]) -> None:
    t.intervals += 1
    t.findings = t.findings or record["findings"]
    t.lost = record["drops_lost"]
    for ns in record["namespaces"]:
        t.namespaces.add(ns["id"])
        for k, v in (ns["deltas"] or {}).items():
            if v:
                t.counters[(ns["id"], k)] = t.counters.get((ns["id"], k), 0) + v
    for d in record["drops"]:
        key = (d["reason"], d["protocol"], d["location"], d["namespace"], d["netns"], d.get("device"))
        t.drops[key] = t.drops.get(key, 0) + d["count"]


def summary_record(t: Totals, start: float, end: float, source: DropSource) -> dict[str, Any]:
    """The whole run. `drops_note` says why drops were not traced, or (method counter-join) why the
    kernel counter was not used; null when the kernel placed them."""
    counters: dict[str, dict[str, int]] = {}
    for (ns, k), v in sorted(t.counters.items()):
        counters.setdefault(ns, {})[k] = v
    drops = [{"reason": r, "protocol": p, "protocol_name": protocol_name(p), "location": loc, "namespace": ns,
              "netns": inode, "device": dev, "count": n}
             for (r, p, loc, ns, inode, dev), n in sorted(t.drops.items(), key=lambda kv: -kv[1])]  # fmt: skip
    return {
        "kind": "summary", "start": round(start, 3), "end": round(end, 3), "intervals": t.intervals,
        "namespaces": sorted(t.namespaces),
        "counters": counters, "drops": drops, "drops_method": source.method, "drops_lost": t.lost,
        "drops_note": source.why_not if source.method is None else source.kernel_why_not, "findings": t.findings,
    }  # fmt: skip


__all__ = ["INSTANCE_PREFIX", "CannotWatch", "Totals", "Watch", "add", "drops_notes", "interval_record", "summary_record"]
