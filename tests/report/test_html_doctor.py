"""doctor --html, pure: the DOT text and the page made from snapshots (the rule fixtures and a
synthetic 500-namespace host), and one layout by the real `dot`."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from support import html_report_bench

from badsum.host.model import HOST_NS, GeneveInfo, HostSnapshot, Link, Route, VxlanInfo
from badsum.report.html_doctor import COLLAPSE_OVER, doctor_page, host_dot
from badsum.rules.engine import evaluate
from badsum.rules.model import Finding, ObjectRef, Outcome, Severity

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "rules" / "fixtures"
KB005 = FIXTURES / "KB-005" / "fire-netdev-veth.json"
#: A reference the page would make the browser fetch: src/href/url()/@import to another origin.
EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//)|url\(\s*["']?\s*(?:https?:)?//|@import""", re.IGNORECASE)


bench = html_report_bench


def kb005() -> tuple[HostSnapshot, list[Finding]]:
    snap = HostSnapshot.from_json(KB005.read_text())
    return snap, evaluate(snap)


def node_line(dot: str, key: str) -> str:
    return next(line for line in dot.splitlines() if line.strip().startswith(f'"{key}" ['))


def test_finding_objects_are_flagged_nodes() -> None:
    snap, findings = kb005()
    m = host_dot(snap, findings)
    for key in ("bs1a2b3c-c1:eth0", "host:c1-veth"):
        line = node_line(m.dot, key)
        assert 'class="flagged"' in line and "penwidth=3" in line
        assert m.objects[key] in m.flagged
    assert 'class="flagged"' not in node_line(m.dot, "host:eth0")
    assert m.flagged == {m.objects["bs1a2b3c-c1:eth0"], m.objects["host:c1-veth"]}


def test_veth_pair_ovs_port_and_datapath_are_drawn() -> None:
    snap, findings = kb005()
    dot = host_dot(snap, findings).dot
    assert '"host:c1-veth" -- "bs1a2b3c-c1:eth0" [label="veth"' in dot
    assert '"host:c1-veth" -- "host:br0" [label="ovs port"' in dot
    assert "OVS bridge, datapath netdev" in node_line(dot, "host:br0")
    assert "subgraph cluster_ns0" in dot and "subgraph cluster_ns1" in dot
    assert "veth mtu 1500" in node_line(dot, "bs1a2b3c-c1:eth0")
    assert "txcsum on" in node_line(dot, "bs1a2b3c-c1:eth0") and '"host:lo"' not in dot


def test_vxlan_underlay_bridge_port_and_offloads() -> None:
    snap, _ = kb005()
    host = snap.ns(HOST_NS)
    vx = Link(9, "vxlan0", "vxlan", 1450, "UP", master="br1", vxlan=VxlanInfo(42, 4789, "10.0.0.1", "10.0.0.2", "eth0", False, "unset"))
    br = Link(10, "br1", "bridge", 1450, "UP")
    snap = replace(snap, namespaces=(replace(host, links=(*host.links, vx, br)), *snap.namespaces[1:]))
    dot = host_dot(snap, []).dot
    assert '"host:vxlan0" -- "host:eth0" [label="underlay"' in dot
    assert '"host:vxlan0" -- "host:br1" [label="port"' in dot
    assert "vni 42 port 4789 remote 10.0.0.2" in node_line(dot, "host:vxlan0")
    assert "shape=hexagon" in node_line(dot, "host:vxlan0")


def test_geneve_underlay_is_the_route_to_its_remote() -> None:
    snap, _ = kb005()
    host = snap.ns(HOST_NS)
    gen = Link(13, "gnv0", "geneve", 1450, "UP", geneve=GeneveInfo(7, 6081, "10.9.0.2", None))
    routes = (Route("default", "eth0", "10.0.0.1"), Route("10.9.0.0/16", "c1-veth"), Route("10.9.0.0/24", "eth0"))
    snap = replace(snap, namespaces=(replace(host, links=(*host.links, gen), routes=routes), *snap.namespaces[1:]))
    dot = host_dot(snap, []).dot
    assert '"host:gnv0" -- "host:eth0" [label="underlay (route to 10.9.0.2)"' in dot


def test_dot_strings_are_quoted() -> None:
    snap, _ = kb005()
    host = snap.ns(HOST_NS)
    odd = Link(11, 'we"ird\\x', "device", 1500, "UP")
    snap = replace(snap, namespaces=(replace(host, links=(*host.links, odd)), *snap.namespaces[1:]))
    dot = host_dot(snap, []).dot
    assert '"host:we\\"ird\\\\x" [' in dot


def test_page_lists_the_finding_with_its_nodes_and_fetches_nothing() -> None:
    snap, findings = kb005()
    m = host_dot(snap, findings)
    svg = '<svg><g id="n2" class="node flagged"><title>host:c1-veth</title></g></svg>'
    page = doctor_page(snap, findings, m, svg)
    assert page.startswith("<!DOCTYPE html>") and svg in page
    (div,) = re.findall(r'<div class="finding is-fail" id="finding-0" data-nodes="([^"]*)"', page)
    assert set(div.split()) == {m.objects["bs1a2b3c-c1:eth0"], m.objects["host:c1-veth"]}
    assert "KB-005" in page and "ethtool -K eth0 tx off" in page
    assert "Content-Security-Policy" in page and "default-src &#x27;none&#x27;" not in page  # the policy is literal
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert 'id="map-facts"' in page and "tx-checksum-ip-generic" in page


def test_untrusted_names_are_escaped() -> None:
    snap, _ = kb005()
    host = snap.ns(HOST_NS)
    evil = Link(12, "</script><img src=//x>", "device", 1500, "UP")
    snap = replace(snap, hostname="<b>h</b>", namespaces=(replace(host, links=(*host.links, evil)), *snap.namespaces[1:]))
    f = Finding("KB-X", "t <i>", Severity.LOW, Outcome.WARN, (ObjectRef(HOST_NS, evil.name, "link"),), "<e>", "<r>")
    page = doctor_page(snap, [f], host_dot(snap, [f]), "<svg></svg>")
    assert "<img" not in page and "<b>h</b>" not in page and "</script><img" not in page
    assert "&lt;e&gt;" in page and "\\u003c/script\\u003e" in page


def test_object_not_on_the_map_says_so() -> None:
    snap, _ = kb005()
    f = Finding("KB-Y", "nat", Severity.LOW, Outcome.FAIL, (ObjectRef(HOST_NS, "POSTROUTING", "iptables-chain"),), "e", "r")
    m = host_dot(snap, [f])
    page = doctor_page(snap, [f], m, "<svg></svg>")
    assert "not on the map, its namespace is outlined" in page
    assert m.objects[HOST_NS] in m.flagged and 'color="#b00020", penwidth=3' in m.dot.split("subgraph cluster_ns0")[1].split("\n")[1]


def test_500_namespaces_collapse_to_one_node_per_bridge() -> None:
    snap, findings = bench().synthetic_host(500)
    m = host_dot(snap, findings)
    groups = {g["via"]: len(g["namespaces"]) for g in m.collapsed}
    # 500 namespaces: 20 have a sidecar pair, c7 is named by the finding: 479 collapse.
    assert sum(groups.values()) == 479 and set(groups) == {"docker0", "br-int"}
    assert "c7" in {n for n, sid in m.objects.items() if sid.startswith("ns")}  # drawn, flagged
    assert m.objects["c7:eth0"] in m.flagged and m.objects["host:veth7"] in m.flagged
    assert '"host:veth8"' not in m.dot and '"group:docker0" -- "host:docker0"' in m.dot
    assert len(m.nodes) < 120 and len(m.dot) < 40_000
    page = doctor_page(snap, findings, m, "<svg></svg>")
    assert "Namespaces drawn as one node (479)" in page and "<td>c499</td>" in page


def test_few_namespaces_are_never_collapsed() -> None:
    snap, findings = bench().synthetic_host(COLLAPSE_OVER - 1)
    m = host_dot(snap, findings)
    assert not m.collapsed and all(f'"c{i}:eth0"' in m.dot for i in range(COLLAPSE_OVER - 1))


def test_scope_draws_the_namespaces_and_their_peers() -> None:
    snap, findings = bench().synthetic_host(100)
    m = host_dot(snap, findings, scope={"c3"})
    clusters = {k for k, v in m.objects.items() if v.startswith("ns")}
    assert clusters == {"c3", HOST_NS}


def test_real_dot_lays_out_500_namespaces(capsys) -> None:
    # Graphviz is a test dependency (.ci/run installs it): no skip when dot is missing.
    r = bench().measure(500, collapse=True)
    with capsys.disabled():
        print(f"\n500 namespaces, collapsed: {r}")
    assert r["html_bytes"] < 400_000 and r["dot_layout_s"] < 10


def test_real_dot_svg_keeps_ids_and_classes() -> None:
    from badsum.report.html_io import dot_to_svg

    snap, findings = kb005()
    m = host_dot(snap, findings)
    svg = dot_to_svg(m.dot)
    assert svg.startswith("<svg") and "DOCTYPE" not in svg and "xmlns" not in svg
    for key in ("bs1a2b3c-c1:eth0", "host:c1-veth"):
        assert f'<g id="{m.objects[key]}" class="node flagged">' in svg
    assert not EXTERNAL.search(doctor_page(snap, findings, m, svg))
