"""trace --html, pure: the row of hops made from trace's data (a real trace of scapy-built frames)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from scapy.all import Ether

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trace"))
from tracekit import MAC2, run, tcp_frame

from badsum.report.html_trace import MAX_FLOWS, flow_html, trace_page

EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//)|url\(\s*["']?\s*(?:https?:)?//|@import""", re.IGNORECASE)
A, B, NAT = "192.0.2.1", "198.51.100.2", "203.0.113.1"
DATA = bytes(range(200))


def nat_stale() -> dict:
    """c1:eth0 -> host:eth0 -> host:eth1, NAT rewrote the source after c1:eth0 and not the checksum."""
    before = tcp_frame(A, B, 40000, 80, DATA)
    stale = tcp_frame(NAT, B, 50000, 80, DATA, ttl=63, mac=MAC2, chksum=Ether(before)["TCP"].chksum)
    return run([("c1:eth0", [before]), ("host:eth0", [stale]), ("host:eth1", [stale])])


def body(page: str) -> str:
    """The page without its style sheet (which names every class)."""
    return page[page.index("</style>"):]


def hops(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<div class="(hop[^"]*)" data-point="([^"]*)"', page)


def test_first_bad_hop_is_outlined_and_the_arrow_into_it_is_red() -> None:
    data = nat_stale()
    page = body(trace_page(data))
    assert hops(page) == [("hop", "c1:eth0"), ("hop bad first-bad", "host:eth0"), ("hop bad", "host:eth1")]
    assert page.count("first-bad") == 1 and page.count('class="arrow bad"') == 1
    arrow = page.index('class="arrow bad"')
    assert page.index('data-point="c1:eth0"') < arrow < page.index('data-point="host:eth0"')
    assert "nat-stale" in page and "tcp bad: 1" in page and "tcp ok: 1" in page
    assert "first bad hop between <code>c1:eth0</code> and <code>host:eth0</code>" in page


def test_each_hop_carries_its_evidence() -> None:
    page = trace_page(nat_stale())
    box = page[page.index('data-point="host:eth0"'):]
    box = box[: box.index('data-point="host:eth1"')]
    assert "title=" in box and "<details><summary>evidence</summary>" in box
    assert "changed: ip src 192.0.2.1 -&gt; 203.0.113.1" in box and "seen 1, missing 0" in box


def test_clean_flow_has_no_bad_hop_and_nothing_external() -> None:
    f = tcp_frame(A, B, 40000, 80, DATA)
    page = body(trace_page(run([("a", [f]), ("b", [f])])))
    assert "first-bad" not in page and 'class="hop bad' not in page and "no packet went bad" in page
    assert not EXTERNAL.search(page) and not EXTERNAL.search(trace_page(nat_stale()))
    assert "<script" not in page  # the row needs no script


def test_names_are_escaped_and_flows_bounded() -> None:
    flow = {"text": "<x>", "direction": "forward", "packets": 1, "first_bad_hop": None,
            "hops": [{"point": '"><img src=//e>', "seen": 1, "missing": 0, "checksums": {}, "kernel": {}, "changes": []}]}
    html = flow_html(0, flow)
    assert "<img" not in html and "&lt;x&gt;" in html
    page = trace_page({"path": ["a"], "flows": [flow] * (MAX_FLOWS + 5), "summary": {"flows": MAX_FLOWS + 5}})
    assert page.count('<section class="flow"') == MAX_FLOWS and "5 more flows not drawn" in page
