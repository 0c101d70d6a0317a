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


def series(bad: list[int], partial: list[int], bin_s: float = 1.0) -> dict:
    return {"bin_s": bin_s, "t0_s": 1000.0, "span_s": len(bad) * bin_s - 0.1, "bins": len(bad), "bad": bad,
            "partial": partial, "layers": {"tcp": {"bad": bad, "partial": partial}}}  # fmt: skip


def test_timeline_bars_stack_and_pmtu_events_are_marked_at_their_time() -> None:
    pmtu = {"kind": "pmtu", "severity": "warn", "summary": "s", "flow": None,
            "evidence": [{"frame": 9, "time": 1002.5, "text": "ICMP frag-needed <from> x: mtu 1400"}]}  # fmt: skip
    page = pcap_page({"file": "f", "packets": 10, "totals": {}, "checksums": [], "symptoms": [pmtu]},
                     series([0, 3, 0, 1], [2, 1, 0, 0]))  # fmt: skip
    bars = re.findall(r'<rect class="(bad|partial)" data-bin="(\d)" data-n="(\d)" x="[\d.]+" y="([\d.]+)"[^>]*height="([\d.]+)"', page)
    assert [(c, int(i), int(n)) for c, i, n, _, _ in bars] == [("partial", 0, 2), ("bad", 1, 3), ("partial", 1, 1), ("bad", 3, 1)]
    (_, _, _, y_bad, h_bad), (_, _, _, y_partial, h_partial) = bars[1], bars[2]
    assert float(y_partial) + float(h_partial) == float(y_bad)  # partial stacked on bad
    assert float(h_bad) == 3 * float(h_partial)
    (mark,) = re.findall(r'<line class="pmtu" data-t="([\d.]+)"', page)
    assert float(mark) == 2.5 and "&lt;from&gt;" in page and "<from>" not in page
    assert "4 bad, 3 partial" in page and not EXTERNAL.search(page)


def test_no_bad_no_partial_no_chart() -> None:
    page = pcap_page({"file": "f", "packets": 10, "totals": {}, "checksums": [], "symptoms": []}, series([0, 0], [0, 0]))
    assert '<svg class="timeline"' not in page and "none over the capture" in page
    assert '<svg class="timeline"' not in pcap_page({"file": "f", "packets": 0, "totals": {}, "checksums": [], "symptoms": []})
