"""`pcap --html`: the checksum counts per layer, then each SYN retry ladder on a time axis (the
kernel's 1, 3, 7, 15, 31, 63 s marks drawn behind it, so a 63-second connect is seen at a glance),
then PMTU and the other symptoms; over all of it, the bad and partial checksums counted per time
bin (scan/timeline.py), so a burst, a start or an end of trouble shows where it happened. Pure:
pcap's data dictionary (report/pcap_report.py to_data) and the timeline's series in, the page out;
the charts are inline SVG drawn here (bars and points need no layout library)."""

from __future__ import annotations

from badsum.report.html_page import esc, json_island, page

#: Where the classic SYN ladder (initial RTO 1 s, doubling) sends: 0, 1, 3, 7, 15, 31, 63 s.
CLASSIC_MARKS = (1, 3, 7, 15, 31, 63)
MAX_LADDERS = 100
WIDTH, LEFT, RIGHT = 960, 40, 30


def _x(t: float, span: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * t / span


def ladder_svg(symptom: dict) -> str:
    """One ladder: a point per send at its time since the first, the outcome at the end."""
    ev = symptom.get("evidence") or []
    if not ev:
        return ""
    t0 = ev[0]["time"]
    span = max(64.0, (ev[-1]["time"] - t0) * 1.05)
    parts = [(f'<svg class="ladder" width="{WIDTH}" height="92" viewBox="0 0 {WIDTH} 92" role="img" '
              f'aria-label="{esc(symptom.get("summary", ""))}">'),
             f'<line x1="{LEFT}" y1="60" x2="{WIDTH - RIGHT}" y2="60" stroke="#444"/>']  # fmt: skip
    for m in CLASSIC_MARKS:
        x = _x(m, span)
        parts.append(f'<line x1="{x:.1f}" y1="20" x2="{x:.1f}" y2="64" stroke="#bbb" stroke-dasharray="3,3"/>'
                     f'<text x="{x:.1f}" y="80" font-size="10" text-anchor="middle" fill="#666">{m} s</text>')  # fmt: skip
    parts.append(f'<text x="{LEFT}" y="80" font-size="10" text-anchor="middle" fill="#666">0</text>')
    outcome = (symptom.get("details") or {}).get("outcome")
    for i, e in enumerate(ev):
        t = e["time"] - t0
        x = _x(t, span)
        send = e["text"].startswith(("SYN", "SYN-ACK"))
        title = f"frame {e['frame']} at +{t:.3f} s: {e['text']}"
        if send:
            parts.append(f'<circle class="send" data-t="{t:.3f}" cx="{x:.1f}" cy="60" r="6" fill="#b00020">'
                         f"<title>{esc(title)}</title></circle>")  # fmt: skip
            if i:
                parts.append(f'<text x="{x:.1f}" y="44" font-size="10" text-anchor="middle">#{i}</text>')
        else:
            color = "#1b6e20" if outcome == "connected" else "#b00020"
            parts.append(f'<rect class="end" data-t="{t:.3f}" x="{x - 5:.1f}" y="25" width="10" height="10" fill="{color}">'
                         f"<title>{esc(title)}</title></rect>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


CHART_H, CHART_TOP, CHART_BOTTOM = 160, 14, 130


def _nice_step(span: float, ticks: int = 8) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about `ticks` ticks over `span`."""
    raw = max(span, 1e-9) / ticks
    e = 10 ** int(f"{raw:e}".split("e")[1])
    return next(m * e for m in (1, 2, 5, 10) if m * e >= raw)


#: PMTU marks drawn on the time chart at most (the list under it has them all).
MAX_MARKS = 200


def pmtu_marks(symptoms: list[dict], t0_s: float | None) -> list[tuple[float, str]]:
    """(seconds after the first packet, what) for each ICMP frag-needed / packet-too-big a PMTU symptom quotes."""
    if t0_s is None:
        return []
    marks = [(e["time"] - t0_s, e["text"]) for s in symptoms if "pmtu" in str(s.get("kind"))
             for e in s.get("evidence") or () if e.get("time") is not None]  # fmt: skip
    return sorted(marks)[:MAX_MARKS]


def timeline_svg(series: dict, marks: list[tuple[float, str]] = ()) -> str:
    """Stacked bars per time bin: bad (red) under partial (orange), each bar's counts in its title;
    `marks` (PMTU events) as dashed purple lines at their time."""
    n, w = series["bins"], series["bin_s"]
    bad, partial = series["bad"], series["partial"]
    top = max((b + p for b, p in zip(bad, partial)), default=0) or 1
    span = n * w
    plot_w = WIDTH - LEFT - RIGHT
    bar_w = plot_w / max(n, 1)
    parts = [(f'<svg class="timeline" width="{WIDTH}" height="{CHART_H}" viewBox="0 0 {WIDTH} {CHART_H}" role="img" '
              f'aria-label="bad and partial checksums per {w:g} s">'),
             f'<line x1="{LEFT}" y1="{CHART_BOTTOM}" x2="{WIDTH - RIGHT}" y2="{CHART_BOTTOM}" stroke="#444"/>',
             f'<text x="{LEFT - 4}" y="{CHART_TOP + 4}" font-size="10" text-anchor="end" fill="#666">{top}</text>',
             f'<text x="{LEFT - 4}" y="{CHART_BOTTOM}" font-size="10" text-anchor="end" fill="#666">0</text>']  # fmt: skip
    step = _nice_step(span)
    t = 0.0
    while t <= span + 1e-12:
        x = LEFT + plot_w * t / span
        parts.append(f'<line x1="{x:.1f}" y1="{CHART_BOTTOM}" x2="{x:.1f}" y2="{CHART_BOTTOM + 4}" stroke="#444"/>'
                     f'<text x="{x:.1f}" y="{CHART_BOTTOM + 16}" font-size="10" text-anchor="middle" fill="#666">{t:g} s</text>')  # fmt: skip
        t = round(t + step, 12)
    scale = (CHART_BOTTOM - CHART_TOP) / top
    for i, (b, p) in enumerate(zip(bad, partial)):
        if not b and not p:
            continue
        x = LEFT + i * bar_w
        title = f"{i * w:g} to {(i + 1) * w:g} s: {b} bad, {p} partial"
        y = CHART_BOTTOM
        for cls, count, color in (("bad", b, "#b00020"), ("partial", p, "#e0a000")):
            if count:
                h = count * scale
                y -= h
                parts.append(f'<rect class="{cls}" data-bin="{i}" data-n="{count}" x="{x:.2f}" y="{y:.2f}" '
                             f'width="{max(bar_w - 0.5, 1):.2f}" height="{h:.2f}" fill="{color}"><title>{esc(title)}</title></rect>')  # fmt: skip
    for t_rel, what in marks:
        x = LEFT + plot_w * min(max(t_rel, 0.0), span) / span
        parts.append(f'<line class="pmtu" data-t="{t_rel:.6f}" x1="{x:.1f}" y1="{CHART_TOP}" x2="{x:.1f}" y2="{CHART_BOTTOM}" '
                     f'stroke="#7a4fb0" stroke-width="1.5" stroke-dasharray="4,2"><title>{esc(f"+{t_rel:.3f} s: {what}")}</title></line>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _timeline_html(series: dict | None, symptoms: list[dict]) -> str:
    if series is None:
        return ""
    head = "<h2>Bad and partial checksums over time</h2>"
    if not series["bins"]:
        return head + '<p class="muted">no packets</p>'
    total_bad, total_partial = sum(series["bad"]), sum(series["partial"])
    marks = pmtu_marks(symptoms, series["t0_s"])
    pmtu = f" Dashed purple: the {len(marks)} ICMP frag-needed of the PMTU events below." if marks else ""
    if not total_bad and not total_partial and not marks:
        return head + f'<p class="ok">none over the capture\'s {series["span_s"]:.4g} s</p>' + json_island("csum-timeline", series)
    layers = ", ".join(f"{esc(name)} {sum(v['bad'])} bad, {sum(v['partial'])} partial" for name, v in series["layers"].items())
    return (head + f'<p class="muted">Checksums judged bad (red) or partial (orange: the pseudo-header sum alone, '
            f"offload pending) per {series['bin_s']:g} s after the first packet, over {series['span_s']:.4g} s; "
            f"{total_bad} bad, {total_partial} partial" + (f" ({layers})" if layers else "")
            + f". Hover a bar for its counts.{pmtu}</p>" + timeline_svg(series, marks) + json_island("csum-timeline", series))  # fmt: skip


def _flow(f: dict | None) -> str:
    if not f:
        return ""
    if "sport" in f:
        return f"{f['src']}:{f['sport']} > {f['dst']}:{f['dport']} proto {f['proto']}"
    return f"{f.get('src')} > {f.get('dst')} proto {f.get('proto')}"


def _symptom_html(s: dict) -> str:
    cls = "fail" if s.get("severity") == "fail" else "warn"
    causes = "".join(f"<li><b>{esc(c['id'])}</b>: {esc(c['why'])}</li>" for c in s.get("likely_causes") or [])
    return (f'<div class="finding is-{cls}"><b class="{cls}">{esc(s["kind"])}</b> <code>{esc(_flow(s.get("flow")))}</code><br>'
            f"{esc(s['summary'])}" + (f"<ul>{causes}</ul>" if causes else "") + "</div>")  # fmt: skip


def pcap_page(data: dict, timeline: dict | None = None) -> str:
    """The page; `timeline` is scan/timeline.py's series (None: no chart)."""
    totals = data.get("totals") or {}
    head = [f"<h1>badsum pcap: {esc(data.get('file'))}</h1><p>{esc(data.get('packets', 0))} packets; checksums: "
            + ", ".join(f'<span class="{"fail" if k in ("bad", "zero-invalid") and n else "muted" if not n else ""}">'
                        f"{esc(k)} {esc(n)}</span>" for k, n in totals.items()) + "</p>"]  # fmt: skip
    rows = "".join(f'<tr class="{"fail" if c["status"] in ("bad", "zero-invalid") else ""}"><td>{esc(c["layer"])}</td>'
                   f"<td>{esc(c['depth'])}</td><td>{esc(c['status'])}</td><td>{esc(c['count'])}</td></tr>"
                   for c in data.get("checksums") or [])  # fmt: skip
    body = head + ["<h2>Checksums per layer</h2>",
                   f"<table><tr><th>layer</th><th>depth</th><th>status</th><th>count</th></tr>{rows}</table>",
                   _timeline_html(timeline, data.get("symptoms") or [])]  # fmt: skip
    symptoms = data.get("symptoms") or []
    ladders = [s for s in symptoms if s.get("kind") == "syn-retries"]
    body.append(f"<h2>SYN retry ladders ({len(ladders)})</h2>")
    if ladders:
        body.append('<p class="muted">Each red point is one send of the SYN (or SYN-ACK), at its time after the first; '
                    "the square is how it ended (green: connected). Dashed lines: where the kernel's classic ladder "
                    "sends (1, 3, 7, 15, 31, 63 s). Hover a point for its frame.</p>")
    for i, s in enumerate(ladders[:MAX_LADDERS]):
        body.append(f'<section class="ladder-flow" id="ladder-{i}">{_symptom_html(s)}{ladder_svg(s)}</section>')
    if len(ladders) > MAX_LADDERS:
        body.append(f'<p class="muted">{len(ladders) - MAX_LADDERS} more ladders (see --json)</p>')
    if not ladders:
        body.append('<p class="ok">none</p>')
    pmtu = [s for s in symptoms if "pmtu" in str(s.get("kind"))]
    body.append(f"<h2>PMTU events ({len(pmtu)})</h2>" + ("".join(_symptom_html(s) for s in pmtu) or '<p class="ok">none</p>'))
    other = [s for s in symptoms if s not in ladders and s not in pmtu]
    if other:
        body.append(f"<h2>Other symptoms ({len(other)})</h2>" + "".join(_symptom_html(s) for s in other))
    return page(f"badsum pcap {data.get('file')}", "\n".join(body))


__all__ = ["CLASSIC_MARKS", "ladder_svg", "pcap_page", "timeline_svg"]
