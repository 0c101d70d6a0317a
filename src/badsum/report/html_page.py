"""The shell every `--html` page shares: one self-contained document (inline CSS, SVG and script,
no fetch of any kind), so a page mailed from a production node opens anywhere, offline. Pure."""

from __future__ import annotations

import html
import json

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fff}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}
code,pre,.mono{font-family:ui-monospace,monospace;font-size:12px}
.fail{color:#b00020}.warn{color:#9a5b00}.ok{color:#1b6e20}.muted{color:#666}
.finding{border:1px solid #ccc;border-left:6px solid #b00020;padding:.4em .8em;margin:.5em 0;cursor:pointer}
.finding.is-warn{border-left-color:#e0a000}.finding.active{background:#fff3f3}
.finding pre{white-space:pre-wrap;margin:.2em 0}.finding details{font-size:12px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
#map{overflow:auto;border:1px solid #ddd;max-height:80vh}
#map svg{max-width:none}
#map g.node.flagged polygon,#map g.node.flagged ellipse{stroke:#b00020;stroke-width:3px}
#map g.node.selected polygon,#map g.node.selected ellipse{fill:#ffe08a}
#map g.node.selected path,#map g.cluster.selected path{fill:#ffe08a}
#details{position:sticky;top:0;background:#fffbe6;border:1px solid #e0c060;padding:.4em .8em;min-height:1.5em}
.path{display:flex;flex-wrap:wrap;align-items:flex-start;gap:0;margin:.4em 0 1em}
.hop{border:2px solid #1b6e20;border-radius:6px;padding:.3em .6em;min-width:9em;background:#f3fbf3}
.hop.bad{border-color:#b00020;background:#fff0f0}.hop.first-bad{box-shadow:0 0 0 4px #f6a5b0}
.hop.missing{border-style:dashed;background:#f6f6f6}
.hop details summary{cursor:pointer;color:#345}
.arrow{align-self:center;padding:0 .4em;color:#666;font-size:1.3em;text-align:center}
.arrow.bad{color:#b00020;font-weight:bold}.arrow small{display:block;font-size:11px}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def json_island(element_id: str, value: object) -> str:
    """Data for the page's script, in an inert `<script type="application/json">`. `<` is escaped so no
    value (a device name, an evidence string) can close the element early."""
    text = json.dumps(value, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def page(title: str, body: str, script: str = "") -> str:
    """A whole HTML document. `body` is already escaped HTML; `script` is inline JavaScript (or "")."""
    js = f"<script>\n{script}\n</script>\n" if script else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        # No request may leave the page: this policy makes the browser refuse any that slipped in.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n{js}</body></html>\n"
    )


__all__ = ["esc", "json_island", "page"]
