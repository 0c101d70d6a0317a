"""`doctor -v`'s host map as a text tree, pure: on the rule fixtures (every snapshot the rules are
tested with) and the synthetic 500-namespace host the HTML map's tests use."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from support import html_report_bench

from badsum.host.model import HOST_NS, HostSnapshot, Link, VxlanInfo
from badsum.report.host_tree import host_tree
from badsum.report.host_view import COLLAPSE_OVER, problems
from badsum.report.html_doctor import host_dot
from badsum.rules.engine import evaluate

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "rules" / "fixtures"
KB005 = FIXTURES / "KB-005" / "fire-netdev-veth.json"
SNAPSHOTS = sorted(p for p in FIXTURES.rglob("*.json") if not p.name.endswith(".expect.json"))
LINE = re.compile(r"^(?P<indent> *)(?:port )?(?P<name>\S+) (?P<kind>\S+) mtu (?P<mtu>\d+)(?P<rest>.*)$")


def parse(lines: list[str]) -> dict[str, dict[str, dict]]:
    """namespace -> interface -> {kind, mtu, depth, line}, read back from the tree's text."""
    out: dict[str, dict[str, dict]] = {}
    ns = None
    for line in lines[1:]:
        if line.startswith("namespace "):
            ns = line.split()[1]
            assert ns not in out, f"{ns} twice"
            out[ns] = {"": {"line": line}}
            continue
        m = LINE.match(line)
        if m and ns is not None:
            assert m["name"] not in out[ns], f"{ns}:{m['name']} twice"
            out[ns][m["name"]] = {"kind": m["kind"], "mtu": int(m["mtu"]), "depth": len(m["indent"]) // 4, "line": line}
    return out


bench = html_report_bench


def test_kb005_tree_nests_the_veth_under_the_netdev_bridge_and_marks_it() -> None:
    snap = HostSnapshot.from_json(KB005.read_text())
    lines = host_tree(snap, evaluate(snap))
    assert lines[1:] == [
        "namespace host (node1)",
        "    eth0 device mtu 1500 [txcsum on, rxcsum on, tso on, gro on]",
        "    br0 OVS bridge datapath netdev",
        "        port br0 (internal)",
        "        port c1-veth veth mtu 1500 -> bs1a2b3c-c1:eth0 [txcsum on, rxcsum on, tso on, gso on, gro on]  !! KB-005",
        "namespace bs1a2b3c-c1",
        "    eth0 veth mtu 1500 -> host:c1-veth [txcsum on, rxcsum on, tso on, gso on, gro on]  !! KB-005",
    ]


@pytest.mark.parametrize("path", SNAPSHOTS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_link_once_with_its_kind_and_mtu_and_every_finding_marked(path: Path) -> None:
    snap = HostSnapshot.from_json(path.read_text())
    findings = evaluate(snap)
    tree = parse(host_tree(snap, findings))
    assert set(tree) == {ns.id for ns in snap.namespaces}
    for ns in snap.namespaces:
        links = {lk.name: lk for lk in ns.links if lk.name != "lo" and lk.kind != "loopback"}
        assert set(tree[ns.id]) - {""} == set(links), ns.id
        for name, lk in links.items():
            assert (tree[ns.id][name]["kind"], tree[ns.id][name]["mtu"]) == (lk.kind, lk.mtu)
            if lk.kind == "veth" and lk.peer_name:
                assert f"-> {lk.peer_ns}:{lk.peer_name}" in tree[ns.id][name]["line"]
    for f in problems(findings):
        for o in f.objects:
            line = tree[o.ns].get(o.name if o.kind != "namespace" else "", tree[o.ns][""])["line"]
            assert re.search(r"  !! .*\b" + re.escape(f.rule) + r"\b", line), (o, line)


def test_a_linux_bridge_holds_its_ports_and_a_tunnel_names_its_underlay() -> None:
    snap = HostSnapshot.from_json(KB005.read_text())
    host = snap.ns(HOST_NS)
    vx = Link(9, "vxlan0", "vxlan", 1450, "UP", master="br1",
              vxlan=VxlanInfo(42, 4789, "198.51.100.1", "198.51.100.2", "eth0", False, "set"))  # fmt: skip
    br = Link(10, "br1", "bridge", 1450, "DOWN")
    snap = replace(snap, namespaces=(replace(host, links=(*host.links, vx, br)), *snap.namespaces[1:]))
    tree = parse(host_tree(snap, []))["host"]
    assert tree["br1"]["depth"] == 1 and tree["br1"]["line"].endswith("br1 bridge mtu 1450 down")
    assert tree["vxlan0"]["depth"] == 2
    assert "vni 42 port 4789 local 198.51.100.1 remote 198.51.100.2 df set via eth0" in tree["vxlan0"]["line"]
    assert "!!" not in "".join(v["line"] for v in tree.values())


def test_masters_in_a_loop_still_list_each_link_once() -> None:
    snap = HostSnapshot.from_json(KB005.read_text())
    host = snap.ns(HOST_NS)
    a, b = Link(20, "bra", "bridge", 1500, "UP", master="brb"), Link(21, "brb", "bridge", 1500, "UP", master="bra")
    snap = replace(snap, namespaces=(replace(host, links=(*host.links, a, b)), *snap.namespaces[1:]))
    tree = parse(host_tree(snap, []))["host"]
    assert {"bra", "brb"} <= set(tree)


def test_500_namespaces_collapse_as_the_html_map_does() -> None:
    snap, findings = bench().synthetic_host(500)
    lines = host_tree(snap, findings)
    tree = parse(lines)
    m = host_dot(snap, findings)
    # The same namespaces drawn one by one as on the map; the rest, one line per bridge.
    on_map = {ns for ns, sid in m.objects.items() if ":" not in ns and sid.startswith("ns")}
    assert set(tree) == on_map and len(tree) == 22
    groups = [line for line in lines if line.lstrip().startswith("+ ")]
    want = {g["via"]: len(g["namespaces"]) for g in m.collapsed}
    assert len(groups) == 2 and sum(want.values()) == 479
    for line in groups:
        n = int(line.split()[1])
        assert n in want.values() and line.startswith(" " * 8)  # under its bridge
    assert "!! KB-005" in tree["c7"]["eth0"]["line"] and "!! KB-005" in tree["host"]["veth7"]["line"]
    assert len(lines) < 120 and "501 namespaces (22 one by one, 479 as one line per bridge)" in lines[0]


def test_few_namespaces_are_listed_one_by_one() -> None:
    snap, findings = bench().synthetic_host(COLLAPSE_OVER - 1)
    lines = host_tree(snap, findings)
    assert not any(line.lstrip().startswith("+ ") for line in lines)
    assert len(parse(lines)) == COLLAPSE_OVER


def test_scope_shows_the_namespace_and_its_peers() -> None:
    snap, findings = bench().synthetic_host(100)
    assert set(parse(host_tree(snap, findings, scope={"c3"}))) == {"c3", HOST_NS}


def doctor(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "badsum", "doctor", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, check=False)  # fmt: skip


def test_doctor_v_prints_the_tree_after_the_findings_and_json_is_unchanged() -> None:
    r = doctor("--from", KB005, "-v")
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert out.index("KB-005") < out.index("other outcomes:") < out.index("host map: 2 namespaces")
    assert "        port c1-veth veth mtu 1500 -> bs1a2b3c-c1:eth0" in out
    assert "host map" not in doctor("--from", KB005).stdout
    plain, verbose = doctor("--from", KB005, "--json"), doctor("--from", KB005, "--json", "-v")
    assert plain.stdout == verbose.stdout and "host map" not in plain.stdout


def ip_links(netns: str) -> dict[str, dict]:
    """The oracle: `ip -j -d link` in the namespace, by interface name (lo left out)."""
    import json

    r = subprocess.run(["ip", "-n", netns, "-j", "-d", "link", "show"], capture_output=True, text=True, timeout=30, check=True)
    return {d["ifname"]: d for d in json.loads(r.stdout) if d["ifname"] != "lo"}


@pytest.mark.root
def test_tree_of_a_real_ovs_userspace_veth_lab_agrees_with_ip_link(tmp_path: Path) -> None:
    import json
    import secrets

    from support import need_root, need_tool

    need_root()
    need_tool("ovs-vswitchd")
    from badsum.lab.scenarios.ovs_userspace_veth import SCENARIO

    prefix = "bs" + secrets.token_hex(3)
    names = [f"{prefix}-{ns}" for ns in ("host", "c1", "c2")]
    snap = tmp_path / "snap.json"
    try:
        result = SCENARIO.run(tmp_path / "lab", keep=True, prefix=prefix)
        r = doctor("-v", "--interval", "0.1", "--save", snap, *(x for n in names for x in ("-n", n)))
        oracle = {n: ip_links(n) for n in names}
    finally:
        subprocess.run([sys.executable, "-m", "badsum", "lab", "clean", "--prefix", prefix], capture_output=True,
                       timeout=120, check=False)  # fmt: skip
    assert result.reproduced, "the lab did not reproduce KB-005"
    assert r.returncode in (1, 3), r.stderr
    lines = r.stdout[r.stdout.index("host map: "):].splitlines()
    print("\n" + "\n".join(lines))
    tree = parse(lines)
    for n in names:
        got = {name: (d["kind"], d["mtu"]) for name, d in tree[n].items() if name}
        want = {name: (d["linkinfo"]["info_kind"], d["mtu"]) for name, d in oracle[n].items()}
        assert got == want, n
    for name in ("c1-veth", "c2-veth"):  # OVSDB's ports of the netdev bridge, nested under it
        assert tree[names[0]][name]["depth"] == 2 and f"-> {prefix}-c" in tree[names[0]][name]["line"]
    assert "br0 tun mtu 1500, OVS bridge datapath netdev [" in tree[names[0]]["br0"]["line"]
    # The flagged objects, as doctor --json names them from the same snapshot, carry the mark.
    doc = json.loads(doctor("--from", snap, "--json", *(x for n in names for x in ("-n", n))).stdout)
    kb005 = [o for f in doc["data"]["findings"] if f["rule"] == "KB-005" for o in f["objects"]]
    assert kb005
    for o in kb005:
        assert "!! KB-005" in tree[o["namespace"]][o["name"]]["line"], o
