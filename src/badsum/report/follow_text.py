"""`badsum follow` as text: the answer first (which flow, which hop, why, what to do), then the hops."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from badsum.follow.result import text_lines

#: Drops of these reasons are the checksum faults badsum is about; the rest are listed under -v.
CSUM_SUFFIX = "_CSUM"
MAX_FLOWS_SHOWN = 20


def render(data: Mapping[str, Any], verbose: bool = False) -> str:
    s = data["summary"]
    rec = data.get("recording", {})
    flows = data["flows"]
    shown = [f for f in flows if verbose or f["first_bad_hop"]]
    lines: list[str] = []
    if s["flows_bad"]:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(s["by_kind"].items()))
        lines.append(f"FAULT: {s['flows_bad']} of {s['flows']} flows went bad in the kernel ({kinds})")
    elif s["events"] == 0:
        lines.append("nothing matched: no packet was seen" + (f" for '{rec['filter']}'" if rec.get("filter") else ""))
    else:
        lines.append(f"OK: no packet went bad ({s['flows']} flows, {s['journeys']} packets followed)")
    body = text_lines({"flows": shown[:MAX_FLOWS_SHOWN], "drops": []})
    if body:
        lines.append("")
        lines += body
    if len(shown) > MAX_FLOWS_SHOWN:
        lines.append(f"... {len(shown) - MAX_FLOWS_SHOWN} more flows (--json lists them all)")
    drops = [d for d in data["drops"] if verbose or str(d["reason"]).endswith(CSUM_SUFFIX)]
    if drops:
        lines.append("")
        lines.append("drops:")
        lines += [f"    {d['label']:<24} {d['reason']} at {d['location']} x{d['count']}" for d in drops]
    hidden = len(data["drops"]) - len(drops)
    lost = rec.get("lost", {})
    tail = [f"{s['events']} events", f"{s['journeys']} packets", f"{s['flows']} flows"]
    if hidden:
        tail.append(f"{hidden} other drop kinds (-v)")
    if lost.get("ring_full") or lost.get("rate_limited"):
        tail.append(f"LOST {lost.get('ring_full', 0)} (ring full) + {lost.get('rate_limited', 0)} (over --rate)")
    if rec.get("cut_by_snaplen"):
        tail.append(f"{rec['cut_by_snaplen']} cut by --snaplen or paged data")
    if rec.get("stopped_by") == "memory-bound":
        tail.append("stopped at the event bound (use -f or --count)")
    lines.append("")
    lines.append("; ".join(tail))
    if data.get("written"):
        lines.append(f"written: {data['written']['path']}")
    return "\n".join(lines) + "\n"
