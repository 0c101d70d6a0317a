"""follow --html, pure: the row of kernel hops made from follow's data (the KB-005 journey of tests/follow)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "follow"))
from followkit import Kit, syn
from test_follow_pure import kb005

from badsum.report.html_follow import follow_page

EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//)|url\(\s*["']?\s*(?:https?:)?//|@import""", re.IGNORECASE)


def test_kb005_journey_outlines_the_second_veth() -> None:
    k = Kit()
    kb005(k, syn(pending=True))
    page = follow_page(k.data())
    body = page[page.index("</style>"):]
    boxes = re.findall(r'<div class="(hop[^"]*)" data-point="([^"]*)" data-direction="([^"]*)"', body)
    assert boxes == [("hop", "c1:eth0", "out"), ("hop", "host:c1-veth", "in"), ("hop bad", "host:c1-veth", "drop"),
                     ("hop bad first-bad", "host:c2-veth", "out"), ("hop", "c2:eth0", "in"), ("hop bad", "c2:eth0", "drop")]  # fmt: skip
    assert body.count("first-bad") == 1 and body.count('class="arrow bad"') == 1
    assert "unfinished" in body and "KB-005" in body and "tx off" in body and "TCP_CSUM" in body
    assert "PARTIAL" in body and "NONE" in body
    assert not EXTERNAL.search(page) and "<script" not in body


def test_clean_follow_has_no_bad_hop() -> None:
    page = follow_page({"flows": [], "drops": [], "summary": {"events": 0, "journeys": 0, "flows": 0, "flows_bad": 0}})
    assert "no packet went bad" in page and 'class="hop' not in page[page.index("</style>"):]
