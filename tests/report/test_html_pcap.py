"""pcap --html, pure: the SYN ladder of the 63-second recording (tests/data) on its time axis."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from badsum.report.html_pcap import CLASSIC_MARKS, ladder_svg, pcap_page

REPO = Path(__file__).resolve().parents[2]
LADDER = REPO / "tests" / "data" / "syn-ladder-63s.pcap"
EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//)|url\(\s*["']?\s*(?:https?:)?//|@import""", re.IGNORECASE)


def data() -> dict:
    r = subprocess.run([sys.executable, "-m", "badsum", "pcap", "--json", str(LADDER)], capture_output=True, text=True,
                       timeout=120, check=False)  # fmt: skip
    return json.loads(r.stdout)["data"]


def test_the_63_second_ladder_is_drawn_on_the_classic_marks() -> None:
    d = data()
    page = pcap_page(d)
    sends = [float(t) for t in re.findall(r'<circle class="send" data-t="([\d.]+)"', page)]
    assert len(sends) == 7
    # 0, then about 1, 3, 7, 15, 31, 64 s after the first SYN: each within 10 % of the classic mark.
    assert sends[0] == 0 and all(abs(t - m) <= 0.1 * m + 0.1 for t, m in zip(sends[1:], (1, 3, 7, 15, 31, 63)))
    (end,) = re.findall(r'<rect class="end" data-t="([\d.]+)"[^>]*fill="#1b6e20"', page)
    assert 64 < float(end) < 65
    assert all(f">{m} s</text>" in page for m in CLASSIC_MARKS)
    assert "connect took 64.4 s" in page and "KB-004" in page and "SYN retry ladders (1)" in page
    assert "<td>tcp</td><td>0</td><td>partial</td><td>16</td>" in page
    assert not EXTERNAL.search(page)


def test_no_ladder_no_svg_and_escaping() -> None:
    assert ladder_svg({"evidence": []}) == ""
    page = pcap_page({"file": "<x>.pcap", "packets": 0, "totals": {}, "checksums": [], "symptoms": []})
    assert "&lt;x&gt;.pcap" in page and "<x>" not in page and "SYN retry ladders (0)" in page
