"""`trace --html`: each flow's path as a row of hops, the checksum status seen at each, the first bad
hop outlined, the evidence per hop one click away (HTML `<details>`, no script). Pure: trace's data
dictionary (trace/build.py to_data) in, the page out."""

from __future__ import annotations

from badsum.report.html_page import esc, page

#: Flows drawn; the rest are counted (the JSON envelope has them all).
MAX_FLOWS = 200


def _bad_status(statuses: dict[str, int]) -> bool:
    return any(k.split(" ", 1)[-1].startswith("bad") and n for k, n in statuses.items())


def _hop(h: dict, first_bad: bool, index: int) -> str:
    sums = h.get("checksums") or {}
    classes = ["hop"]
    if _bad_status(sums):
        classes.append("bad")
    if first_bad:
        classes.append("first-bad")
    if h.get("seen", 0) == 0:
        classes.append("missing")
    status = "<br>".join(
        f'<span class="{"fail" if k.split(" ", 1)[-1].startswith("bad") else "ok"}">{esc(k)}: {esc(n)}</span>'
        for k, n in sorted(sums.items())) or '<span class="muted">no checksum seen</span>'  # fmt: skip
    ev = [f"seen {h.get('seen', 0)}, missing {h.get('missing', 0)}"]
    if h.get("kernel"):
        ev.append("kernel (tp_status): " + ", ".join(f"{k} {n}" for k, n in h["kernel"].items()))
    for c in h.get("changes") or []:
        where = f"{c['layer']}@{c['depth']}" if c.get("depth") else c["layer"]
        ev.append(f"changed: {where} {c['field']} {c['old']} -> {c['new']} ({c['packets']} packets)")
    if h.get("payload_changed"):
        ev.append(f"payload bytes changed in {h['payload_changed']} packets")
    if h.get("segmentation_changed"):
        ev.append(f"segmentation changed in {h['segmentation_changed']} packets")
    if h.get("hop"):
        ev.append(f"hop from the previous point ({h['hop']['kind']}): {h['hop']['why']}")
    title = "; ".join(ev)
    evidence = "".join(f"<li>{esc(x)}</li>" for x in ev)
    mark = '<div class="fail"><b>first bad hop</b></div>' if first_bad else ""
    return (f'<div class="{" ".join(classes)}" data-point="{esc(h["point"])}" id="hop-{index}" title="{esc(title)}">'
            f'<b class="mono">{esc(h["point"])}</b>{mark}<div>{status}</div>'
            f"<details><summary>evidence</summary><ul>{evidence}</ul></details></div>")  # fmt: skip


def flow_html(i: int, f: dict) -> str:
    fb = f.get("first_bad_hop")
    hops = f.get("hops") or []
    parts = []
    for j, h in enumerate(hops):
        is_first_bad = fb is not None and h["point"] == fb["before"]
        if j:
            bad_arrow = fb is not None and is_first_bad and fb.get("after") == hops[j - 1]["point"]
            label = f"<small>{esc(fb['kind'])}</small>" if bad_arrow else ""
            parts.append(f'<div class="arrow{" bad" if bad_arrow else ""}">&rarr;{label}</div>')
        parts.append(_hop(h, is_first_bad, j))
    if fb is None:
        verdict = '<p class="ok">no packet went bad</p>'
    else:
        where = f"between <code>{esc(fb['after'])}</code> and <code>{esc(fb['before'])}</code>" if fb.get("after") \
            else f"at <code>{esc(fb['before'])}</code>"
        verdict = (f'<p class="fail">first bad hop {where}: <b>{esc(fb["kind"])}</b> ({esc(fb["packets"])} packets)<br>'
                   f'<span class="muted">{esc(fb["why"])}</span></p>')  # fmt: skip
    cls = "flow bad" if fb else "flow"
    return (f'<section class="{cls}" id="flow-{i}"><h2 class="mono">{esc(f["text"])} '
            f'<span class="muted">({esc(f["direction"])}, {esc(f["packets"])} packets)</span></h2>'
            f'<div class="path">{"".join(parts)}</div>{verdict}</section>')  # fmt: skip


def trace_page(data: dict) -> str:
    flows = sorted(data.get("flows") or [], key=lambda f: f.get("first_bad_hop") is None)  # bad flows first
    summary = data.get("summary") or {}
    head = [f"<h1>badsum trace</h1><p>path: <code>{esc(' -> '.join(data.get('path') or []))}</code>; "
            f"topology: {esc(data.get('topology'))}"
            + (f"; order: {esc(data['order']['source'])}" if data.get("order") else "") + "</p>",
            f"<p>{esc(summary.get('flows', len(flows)))} flows, "
            + (f'<b class="fail">{esc(summary.get("flows_bad"))} went bad</b>' if summary.get("flows_bad")
               else '<b class="ok">no packet went bad</b>') + "</p>"]  # fmt: skip
    head += [f'<p class="muted">note: {esc(n)}</p>' for n in data.get("notes") or []]
    head.append('<p class="muted">Each box is a capture point in path order, with the checksum status of the '
                "flow's packets seen there; hover a box for its evidence, or open it.</p>")
    body = head + [flow_html(i, f) for i, f in enumerate(flows[:MAX_FLOWS])]
    if len(flows) > MAX_FLOWS:
        body.append(f'<p class="muted">{len(flows) - MAX_FLOWS} more flows not drawn (see --json)</p>')
    return page("badsum trace", "\n".join(body))


__all__ = ["MAX_FLOWS", "flow_html", "trace_page"]
