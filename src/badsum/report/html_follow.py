"""`follow --html`: the kernel's view of each flow as a row of hops (device and direction, in the
order packets passed them), with the checksum status, `ip_summed` and the hook at each; the first
bad hop outlined, its kernel evidence and the likely causes under the row. Pure: follow's data
dictionary (follow/result.py to_data) in, the page out."""

from __future__ import annotations

from badsum.report.html_page import esc, page

MAX_FLOWS = 200


def _first_bad_row(hops: list[dict], fb: dict | None) -> int | None:
    """The row the first bad hop names: its device, past the `after` device's rows, not a drop
    (unless only a drop is there)."""
    if fb is None:
        return None
    start = 0
    if fb.get("after"):
        seen = [i for i, h in enumerate(hops) if h["device"] == fb["after"]]
        start = seen[0] + 1 if seen else 0
    rows = [i for i, h in enumerate(hops) if i >= start and h["device"] == fb["before"]]
    return next((i for i in rows if hops[i]["direction"] != "drop"), rows[0] if rows else None)


def _bad(checksums: dict) -> bool:
    return any(k.split(" ", 1)[-1].startswith("bad") for k in checksums)


def _hop(h: dict, first_bad: bool, index: int) -> str:
    label = f"{h['device']} {h['direction']}"
    classes = ["hop"] + (["bad"] if first_bad or _bad(h.get("checksums") or {}) or h["direction"] == "drop" else [])
    if first_bad:
        classes.append("first-bad")
    sums = "<br>".join(f'<span class="{"fail" if _bad({k: n}) else "ok"}">{esc(k)}: {esc(n)}</span>'
                       for k, n in sorted((h.get("checksums") or {}).items()))  # fmt: skip
    if h["direction"] == "drop":
        sums = "<br>".join(f'<span class="fail">drop {esc(r)}: {esc(n)}</span>' for r, n in (h.get("reasons") or {}).items())
    ev = [f"{h.get('packets', 0)} packets", "ip_summed: " + ", ".join(f"{k} {n}" for k, n in (h.get("ip_summed") or {}).items()),
          "hooks: " + ", ".join(f"{k} {n}" for k, n in (h.get("hooks") or {}).items()),
          "kind: " + ", ".join(f"{k} {n}" for k, n in (h.get("kinds") or {}).items())]  # fmt: skip
    mark = '<div class="fail"><b>first bad hop</b></div>' if first_bad else ""
    summed = "/".join(h.get("ip_summed") or {})
    return (f'<div class="{" ".join(classes)}" data-point="{esc(h["device"])}" data-direction="{esc(h["direction"])}" '
            f'id="hop-{index}" title="{esc("; ".join(ev))}"><b class="mono">{esc(label)}</b>{mark}'
            f'<div class="mono muted">{esc(summed)}</div><div>{sums or "<span class=muted>no checksum seen</span>"}</div>'
            f'<details><summary>evidence</summary><ul>{"".join(f"<li>{esc(x)}</li>" for x in ev)}</ul></details></div>')  # fmt: skip


def flow_html(i: int, f: dict) -> str:
    fb = f.get("first_bad_hop")
    hops = f.get("hops") or []
    at = _first_bad_row(hops, fb)
    parts = []
    for j, h in enumerate(hops):
        if j:
            bad_arrow = j == at
            label = f"<small>{esc(fb['kind'])}</small>" if bad_arrow and fb else ""
            parts.append(f'<div class="arrow{" bad" if bad_arrow else ""}">&rarr;{label}</div>')
        parts.append(_hop(h, j == at, j))
    if fb is None:
        verdict = '<p class="ok">no packet went bad</p>'
    else:
        where = f"{esc(fb['after'] or '(where first seen)')} &rarr; {esc(fb['before'])}"
        causes = "".join(f"<li><b>{esc(c['id'])}</b>: {esc(c['why'])}</li>" for c in fb.get("likely_causes") or [])
        evidence = "".join(f"<li>{esc(side)}: <code>{esc(e)}</code></li>" for side, e in (fb.get("evidence") or {}).items() if e)
        verdict = (f'<p class="fail">first bad hop {where}: <b>{esc(fb["kind"])}</b> ({esc(fb.get("packets"))} packets)<br>'
                   f'<span class="muted">{esc(fb["why"])}</span></p>'
                   + (f"<p>likely:</p><ul>{causes}</ul>" if causes else "")
                   + (f"<p>fix: <code>{esc(fb['fix'])}</code></p>" if fb.get("fix") else "")
                   + (f"<details><summary>kernel evidence</summary><ul>{evidence}</ul></details>" if evidence else ""))  # fmt: skip
    return (f'<section class="flow{" bad" if fb else ""}" id="flow-{i}"><h2 class="mono">{esc(f["text"])} '
            f'<span class="muted">({esc(f["direction"])}, {esc(f["packets"])} packets)</span></h2>'
            f'<div class="path">{"".join(parts)}</div>{verdict}</section>')  # fmt: skip


def follow_page(data: dict) -> str:
    flows = sorted(data.get("flows") or [], key=lambda f: f.get("first_bad_hop") is None)
    s = data.get("summary") or {}
    head = [f"<h1>badsum follow</h1><p>{esc(s.get('events', 0))} kernel events, {esc(s.get('journeys', 0))} packets, "
            f"{esc(s.get('flows', len(flows)))} flows: "
            + (f'<b class="fail">{esc(s.get("flows_bad"))} went bad in the kernel</b>' if s.get("flows_bad")
               else '<b class="ok">no packet went bad</b>') + "</p>",
            ('<p class="muted">Each box is a device and direction in the order the packets passed them, with '
             "<code>ip_summed</code> and the checksum status there; hover a box for its evidence, or open it.</p>")]  # fmt: skip
    body = head + [flow_html(i, f) for i, f in enumerate(flows[:MAX_FLOWS])]
    if len(flows) > MAX_FLOWS:
        body.append(f'<p class="muted">{len(flows) - MAX_FLOWS} more flows not drawn (see --json)</p>')
    drops = data.get("drops") or []
    if drops:
        rows = "".join(f"<tr><td>{esc(d.get('label'))}</td><td>{esc(d.get('reason'))}</td><td>{esc(d.get('location'))}</td>"
                       f"<td>{esc(d.get('count'))}</td></tr>" for d in drops)  # fmt: skip
        body.append(f"<h2>Drops</h2><table><tr><th>where</th><th>reason</th><th>at</th><th>count</th></tr>{rows}</table>")
    return page("badsum follow", "\n".join(body))


__all__ = ["MAX_FLOWS", "flow_html", "follow_page"]
