"""`badsum watch`: live, per interval, what moved in every namespace's checksum and fragmentation
counters, and the kernel's drops by reason, protocol and location."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

HELP = "live per-namespace checksum and fragmentation counter deltas, and kernel drops by reason"
EXAMPLES = """\
examples:
  sudo badsum watch                         # every namespace, every second, until Ctrl-C
  sudo badsum watch --netns web1 -d 30      # one namespace for 30 seconds
  sudo badsum watch --json --duration 10    # one JSON envelope per line, per interval, then a summary
  sudo badsum watch --drops tracefs         # drops from tracefs, joined to namespaces by counters

exit codes: 0 nothing moved, 1 checksum errors or checksum drops seen, 2 usage (unknown --netns),
            3 could not watch at all, 130 Ctrl-C before the first interval ended
            (Ctrl-C or SIGTERM later ends the watch normally: 0 or 1)
"""
INSTANCE_PREFIX = "badsum-watch-"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--interval", "-i", metavar="S", type=_seconds(0.1, 3600), default=1.0,
                   help="seconds per interval (0.1 to 3600; default 1)")  # fmt: skip
    p.add_argument("--duration", "-d", metavar="S", type=_seconds(0.1, None), default=None,
                   help="stop after S seconds (default: until Ctrl-C)")  # fmt: skip
    p.add_argument("--netns", "-n", metavar="NAME", action="append", default=[],
                   help="only this namespace (id, ip netns name, pid:PID, host); repeatable")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON envelope per line per interval, then a summary line")
    p.add_argument("--all", action="store_true", help="text: also show namespaces and counters that did not move")
    p.add_argument("--drops", choices=("auto", "kernel", "tracefs"), default="auto",
                   help="where drops come from: kernel (eBPF: each drop's own namespace and device), tracefs "
                        "(host-wide, joined to namespaces by counters), auto (kernel, else tracefs; default)")  # fmt: skip
    p.set_defaults(run=run)


def _seconds(lo: float, hi: float | None) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(v) or v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"out of range ({lo}-{hi if hi else 'any'} seconds): {text}")
        return v

    return parse


def _say(message: str) -> None:
    print(f"badsum: {message}", file=sys.stderr, flush=True)


class _Stop(Exception):
    """SIGTERM: end the watch as Ctrl-C does, through every finally."""


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def run(args: argparse.Namespace) -> int:
    from badsum.cli import watch_view as view
    from badsum.host import kernel_drops, netns, nscounters
    from badsum.host.model import HOST_NS

    notes: list[dict[str, str]] = []
    root = os.geteuid() == 0
    found = netns.discover()
    refs = list(found.namespaces)
    if args.netns:
        chosen, missing = resolve(refs, args.netns)
        if missing:
            known = ", ".join(r.id for r in refs)
            _say(f"unknown namespace {missing[0]!r} for --netns (known: {known})")
            return 2
        wanted = {r.inode for r in chosen}
    else:
        wanted = None
    source = kernel_drops.DropSource(None, None, None, "not root")
    if not root:
        refs = [r for r in refs if r.enter is None]
        wanted = {r.inode for r in refs} if wanted is None else wanted & {r.inode for r in refs}
        notes.append({"code": "watch.not_root", "message": f"not root: counters of badsum's own namespace "
                      f"({HOST_NS}) only; other namespaces and kernel drops need root"})  # fmt: skip
    tty = sys.stdout.isatty() and not args.json
    sampler = nscounters.Sampler()
    totals = Totals()
    started = time.time()
    try:
        with _sigterm_stops():
            if root:
                source = kernel_drops.open_drops(getattr(args, "drops", "auto"), f"{INSTANCE_PREFIX}{os.getpid()}")
                notes += drops_notes(source)
            reader, method = source.reader, source.method
            for n in notes:
                if not args.json:
                    _say(n["message"])
            ids = _ids(found.namespaces)
            current = _select(found.namespaces if root else refs, wanted)
            before = sampler.sample_all(current)
            if reader is not None:
                reader.read()  # what the kernel counted before the baseline is not this watch's
            if not any(s.values is not None for s in before.values()) and reader is None:
                why = next((s.error for s in before.values() if s.error), "no namespace could be read")
                _say(f"cannot watch: counters unreadable ({why}) and {source.why_not or 'no drops'}")
                if args.json:
                    print(_line("error", {"kind": "summary", "intervals": 0}, [{"code": "watch.cannot", "message": why}]))
                return 3
            live = view.open_live() if tty else None
            t0 = time.monotonic()
            seq = 0
            try:
                while args.duration is None or seq * args.interval < args.duration - 1e-9:
                    seq += 1
                    step = args.interval if args.duration is None else min(args.interval, args.duration - (seq - 1) * args.interval)
                    w_start = time.time()
                    _sleep_until(t0 + (seq - 1) * args.interval + step)
                    previous = current
                    now_found = netns.discover().namespaces if root else refs
                    # A namespace gone during the interval still names its last drops.
                    ids = {**ids, **_ids(now_found)}
                    current = _select(now_found, wanted)
                    after = sampler.sample_all(current)
                    moved = nscounters.deltas(current, before, after, previous)
                    drops = reader.read() if reader is not None else []
                    if method == kernel_drops.KERNEL and wanted is not None:
                        drops = [d for d in drops if d.netns in wanted]
                    record = interval_record(seq, w_start, time.time(), moved, drops, reader, method, ids)
                    ids = _ids(now_found)
                    add(totals, record)
                    before = after
                    if args.json:
                        print(_line("findings" if record["findings"] else "ok", record, notes), flush=True)
                    elif live is not None:
                        live.update(view.live_view(totals, record, args.all, started), refresh=True)
                    else:
                        print(view.text_block(record, args.all), flush=True)
            except (KeyboardInterrupt, _Stop):
                if totals.intervals == 0:
                    _say("interrupted before the first interval ended")
                    return 130
            finally:
                if live is not None:
                    live.stop()
    except (KeyboardInterrupt, _Stop):
        return 130
    finally:
        if source.reader is not None:
            source.reader.stop()
        sampler.close()
    code = 1 if totals.findings else 0
    summary = summary_record(totals, started, time.time(), source)
    if args.json:
        print(_line("findings" if code else "ok", summary, notes), flush=True)
    else:
        print(view.summary_text(summary), flush=True)
    return code


def drops_notes(source: Any) -> list[dict[str, str]]:
    """The one line saying how drops are placed when it is not the kernel's way, and why."""
    if source.method is None:
        return [{"code": "watch.no_drops", "message": f"kernel drops not shown: {source.why_not}; counters only"}]
    if source.kernel_why_not is not None:
        return [{"code": "watch.counter_join", "message": "drops are host-wide, joined to namespaces by their "
                 f"counters: the kernel drop counter is not available ({source.kernel_why_not})"}]  # fmt: skip
    return []


def _ids(refs: Any) -> dict[int, str]:
    return {r.inode: r.id for r in refs}


def resolve(refs: list[Any], names: list[str]) -> tuple[list[Any], list[str]]:
    """--netns values -> namespaces (by id or any of their names) and the values that named none."""
    chosen, missing = [], []
    for n in names:
        hit = [r for r in refs if r.id == n or n in r.names]
        chosen += hit
        if not hit:
            missing.append(n)
    return chosen, missing


def _select(refs: Any, wanted: set[int] | None) -> list[Any]:
    return [r for r in refs if wanted is None or r.inode in wanted]


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


def _line(status: str, data: dict[str, Any], errors: list[dict[str, str]]) -> str:
    """One envelope on one line (JSON lines): the same keys as every command's envelope."""
    from badsum.report.envelope import SCHEMA_VERSION

    doc = {"schema_version": SCHEMA_VERSION, "command": "watch", "status": status, "data": data, "errors": errors}
    return json.dumps(doc, separators=(",", ":"))


def is_checksum_reason(reason: str) -> bool:
    return reason.endswith("_CSUM")


def interval_record(seq: int, start: float, end: float, moved: list[Any], drops: list[Any], watch: Any,
                    method: str | None, ids: dict[int, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One interval as data (the JSON line's `data`, and what the views draw). Drops the kernel
    placed (`method` kernel) keep their namespace, named through `ids` (inode -> namespace id);
    host-wide ones are joined to the one namespace whose matching counter moved, if one did."""
    from badsum.host import nscounters
    from badsum.host.counters import CSUM_COUNTERS
    from badsum.host.kernel_drops import KERNEL

    by_code = {v: k for k, v in (watch.reasons if watch is not None else {}).items()}
    out_drops = []
    for d in drops:
        device = getattr(d, "device", None)
        if method == KERNEL or d.netns is not None:
            out_drops.append({
                "reason": d.reason, "reason_code": by_code.get(d.reason), "protocol": d.protocol,
                "protocol_name": d.protocol_name, "location": d.location, "count": d.count,
                "netns": d.netns, "namespace": (ids or {}).get(d.netns) if d.netns else None,
                "attribution": KERNEL if d.netns else "host-wide", "candidates": [], "device": device,
            })  # fmt: skip
            continue
        cands = nscounters.attribute(d.reason, moved)
        one = cands[0] if len(cands) == 1 else None
        out_drops.append({
            "reason": d.reason, "reason_code": by_code.get(d.reason), "protocol": d.protocol,
            "protocol_name": d.protocol_name, "location": d.location, "count": d.count,
            "netns": one.inode if one else None, "namespace": one.ns_id if one else None,
            "attribution": method if one else "host-wide",
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


def summary_record(t: Totals, start: float, end: float, source: Any) -> dict[str, Any]:
    """The whole run. `drops_note` says why drops were not traced, or (method counter-join) why the
    kernel counter was not used; null when the kernel placed them."""
    from badsum.host.drops import protocol_name

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


__all__ = ["register", "run"]
