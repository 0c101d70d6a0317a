"""`pcap --html`: the checksum counts per layer, then each SYN retry ladder on a time axis (the
kernel's 1, 3, 7, 15, 31, 63 s marks drawn behind it, so a 63-second connect is seen at a glance),
then PMTU and the other symptoms. Pure: pcap's data dictionary (report/pcap_report.py to_data) in,
the page out; the ladders are inline SVG drawn here (a row of points needs no layout library)."""

from __future__ import annotations

from badsum.report.html_page import esc, page

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


def pcap_page(data: dict) -> str:
    totals = data.get("totals") or {}
    head = [f"<h1>badsum pcap: {esc(data.get('file'))}</h1><p>{esc(data.get('packets', 0))} packets; checksums: "
            + ", ".join(f'<span class="{"fail" if k in ("bad", "zero-invalid") and n else "muted" if not n else ""}">'
                        f"{esc(k)} {esc(n)}</span>" for k, n in totals.items()) + "</p>"]  # fmt: skip
    rows = "".join(f'<tr class="{"fail" if c["status"] in ("bad", "zero-invalid") else ""}"><td>{esc(c["layer"])}</td>'
                   f"<td>{esc(c['depth'])}</td><td>{esc(c['status'])}</td><td>{esc(c['count'])}</td></tr>"
                   for c in data.get("checksums") or [])  # fmt: skip
    body = head + ["<h2>Checksums per layer</h2>",
                   f"<table><tr><th>layer</th><th>depth</th><th>status</th><th>count</th></tr>{rows}</table>"]  # fmt: skip
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


__all__ = ["CLASSIC_MARKS", "ladder_svg", "pcap_page"]
