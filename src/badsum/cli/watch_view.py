"""What `badsum watch` shows people: a refreshing view on a terminal, plain blocks otherwise.

Both lead with the answer (`TCP_CSUM drops: 4 in bs1234-c2 on eth0 (tcp_v4_rcv)`), then only what
moved unless `--all`.
"""

from __future__ import annotations

import time
from typing import Any

from badsum.host.counters import CSUM_COUNTERS
from badsum.host.drops import HOST_WIDE
from badsum.host.kernel_drops import KERNEL
from badsum.host.nscounters import COUNTER_JOIN


def _namespace(d: dict[str, Any]) -> str | None:
    """The namespace id, or `netns:INODE` for one the kernel named but no process or mount holds."""
    if d.get("namespace"):
        return str(d["namespace"])
    return f"netns:{d['netns']}" if d.get("netns") else None


def _where(ns: str | None, device: str | None = None) -> str:
    if not ns:
        return HOST_WIDE
    return f"in {ns} on {device}" if device else f"in {ns}"


def headline(drops: list[dict[str, Any]], counters: dict[str, dict[str, int]], n_ns: int) -> str:
    """The answer first: checksum drops by reason, namespace and device, else checksum counters,
    else quiet."""
    csum: dict[tuple[str, str | None, str | None], tuple[int, list[str]]] = {}
    for d in drops:
        if d["reason"].endswith("_CSUM"):
            key = (d["reason"], _namespace(d), d.get("device"))
            n, locs = csum.get(key, (0, []))
            csum[key] = (n + d["count"], locs + [d["location"]] * (d["location"] not in locs))
    if csum:
        parts = [f"{r} drops: {n} {_where(ns, dev)} ({', '.join(locs)})"
                 for (r, ns, dev), (n, locs) in sorted(csum.items(), key=lambda kv: -kv[1][0])]  # fmt: skip
        return "; ".join(parts)
    moved = [f"{k} +{v} in {ns}" for ns, c in counters.items() for k, v in c.items() if k in CSUM_COUNTERS and v]
    if moved:
        return "checksum errors: " + "; ".join(moved)
    return f"no checksum errors or drops in {n_ns} namespace{'s' if n_ns != 1 else ''}"


def _interval_counters(record: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {ns["id"]: ns["deltas"] or {} for ns in record["namespaces"]}


def _drop_row(d: dict[str, Any]) -> str:
    """`count reason protocol location NS[:DEVICE]` (the device when the kernel named it)."""
    where = _namespace(d) or HOST_WIDE
    if d.get("device"):
        where += f":{d['device']}"
    return f"  {d['count']:>7}  {d['reason']:<22} {d['protocol_name']:<7} {d['location']:<28} {where}"


#: What `drops_lost` counts, by method.
LOST = {KERNEL: "drops not counted: the kernel's drop table was full",
        COUNTER_JOIN: "drop events lost: the trace buffer overflowed"}  # fmt: skip


def text_block(record: dict[str, Any], show_all: bool) -> str:
    """One interval, for a pipe or a file: a headline and what moved."""
    when = time.strftime("%H:%M:%S", time.localtime(record["end"]))
    counters = _interval_counters(record)
    lines = [f"[{when}] #{record['seq']} " + headline(record["drops"], counters, len(counters))]
    for ns in record["namespaces"]:
        if ns["state"] not in ("ok", "new"):
            lines.append(f"  {ns['id']}: {ns['state']}" + (f" ({ns['error']})" if ns["error"] else ""))
            continue
        shown = {k: v for k, v in (ns["deltas"] or {}).items() if v or show_all}
        label = f"{ns['id']} (new)" if ns["state"] == "new" else ns["id"]
        if shown or ns["state"] == "new":
            lines.append(f"  {label}: " + (" ".join(f"{k} +{v}" for k, v in shown.items()) or "nothing moved"))
    lines += [_drop_row(d) for d in record["drops"]]
    if record["drops_lost"]:
        lines.append(f"  ({record['drops_lost']} {LOST.get(record['drops_method'] or '', LOST[COUNTER_JOIN])})")
    return "\n".join(lines)


def summary_text(s: dict[str, Any]) -> str:
    lines = [f"badsum watch: {s['intervals']} interval{'s' if s['intervals'] != 1 else ''}, "
             + headline(s["drops"], s["counters"], len(s["namespaces"]))]  # fmt: skip
    for ns, c in s["counters"].items():
        lines.append(f"  {ns}: " + " ".join(f"{k} +{v}" for k, v in c.items()))
    lines += [_drop_row(d) for d in s["drops"]]
    how = {KERNEL: "drops placed by the kernel: the namespace and device of each dropped packet (eBPF)",
           COUNTER_JOIN: "drops are host-wide; a drop is put in a namespace when only that namespace's "
           "matching counter moved in the same interval", None: f"drops not traced: {s['drops_note']}"}  # fmt: skip
    lines.append(f"  ({how.get(s['drops_method'], s['drops_method'])})")
    if s["drops_method"] == COUNTER_JOIN and s.get("drops_note"):
        lines.append(f"  (kernel drop counter not available: {s['drops_note']})")
    return "\n".join(lines)


def open_live() -> Any:
    from rich.live import Live

    live = Live(auto_refresh=False, redirect_stderr=False, transient=False)
    live.start()
    return live


def live_view(totals: Any, record: dict[str, Any], show_all: bool, started: float) -> Any:
    """Totals since the start and the last interval, most important first."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counters: dict[str, dict[str, int]] = {}
    for (ns, k), v in totals.counters.items():
        counters.setdefault(ns, {})[k] = v
    kernel = record.get("drops_method") == KERNEL
    drops = [{"reason": r, "protocol": p, "location": loc, "namespace": ns, "netns": inode, "device": dev, "count": n}
             for (r, p, loc, ns, inode, dev), n in totals.drops.items()]  # fmt: skip
    last = _interval_counters(record)
    head = headline(drops, counters, len(last))
    elapsed = time.time() - started
    title = Text(head, style="bold red" if totals.findings else "bold green")
    sub = Text(f"{totals.intervals} intervals, {elapsed:.0f} s, {len(last)} namespaces; Ctrl-C stops", style="dim")
    t = Table(title="counters (since start / last interval)", title_justify="left", expand=False)
    for col in ("namespace", "counter", "total", "last"):
        t.add_column(col, justify="right" if col in ("total", "last") else "left")
    for ns in record["namespaces"]:
        if ns["state"] not in ("ok", "new"):
            t.add_row(ns["id"], ns["state"], "", ns["error"] or "")
        for k, v in (ns["deltas"] or {}).items():
            total = counters.get(ns["id"], {}).get(k, 0)
            if total or v or show_all:
                style = "red" if k in CSUM_COUNTERS and total else ""
                t.add_row(ns["id"], k, str(total), f"+{v}", style=style)
    how = "placed by the kernel" if kernel else "host-wide, joined by counters"
    d = Table(title=f"drops since start (reason, protocol, kernel location, namespace, device; {how})",
              title_justify="left")  # fmt: skip
    for col in ("count", "reason", "protocol", "location", "namespace", "device"):
        d.add_column(col, justify="right" if col == "count" else "left")
    from badsum.host.drops import protocol_name

    for x in sorted(drops, key=lambda x: -x["count"])[:20]:
        style = "red" if x["reason"].endswith("_CSUM") else ""
        d.add_row(str(x["count"]), x["reason"], protocol_name(x["protocol"]), x["location"], _namespace(x) or HOST_WIDE,
                  x["device"] or "", style=style)  # fmt: skip
    return Group(title, sub, t, d)
