"""`badsum fix` on the real kernel, in lab namespaces, judged by the test's own oracles.

Each test builds a scenario's broken topology with the lab framework (its namespaces carry a
fresh `bs` prefix; the private OVS keeps running for the length of the test), then:
collector + rules find the known issue, naming the exact objects; `badsum fix --apply` (limited to
the rule and to the lab's namespaces, and checked first to plan nothing outside them) makes the
change; the test's own reading (`ethtool --json -k`, `ip -j link`, `iptables -S`, all run by the
test inside the namespace) shows it, real traffic works, and the rules find nothing; `badsum fix
--undo` restores the previous state, read back the same way. Nothing outside the lab's namespaces
is changed; `badsum lab clean --prefix` always runs at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from support import need_root

from badsum.lab.lab import Lab, LabError, preflight
from badsum.lab.runner import run as lab_run
from badsum.lab.scenarios import ovs_userspace_veth, vxlan_double_snat, vxlan_mtu_df
from badsum.rules.model import Outcome

pytestmark = pytest.mark.root

BADSUM = [sys.executable, "-m", "badsum"]


# -- the test's own oracles ----------------------------------------------------------------------


def ns_run(ns: str, argv: list[str]) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=20, check=True).stdout


def ethtool_k(ns: str, dev: str) -> dict[str, bool]:
    doc = json.loads(ns_run(ns, ["ethtool", "--json", "-k", dev]))[0]
    return {k: bool(v["active"]) for k, v in doc.items() if isinstance(v, dict) and "active" in v}


def link_mtu(ns: str, dev: str) -> int:
    return int(json.loads(ns_run(ns, ["ip", "-j", "link", "show", "dev", dev]))[0]["mtu"])


def iptables_s(ns: str, table: str, chain: str) -> list[str]:
    return ns_run(ns, ["iptables", "-t", table, "-S", chain]).splitlines()


def root_ns_state() -> dict:
    """What must not change in the root namespace: its links (MTU, state) and eth0's features."""
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout)
    state = {"links": sorted((x["ifname"], x["mtu"], tuple(x.get("flags", []))) for x in links)}
    if any(x["ifname"] == "eth0" for x in links):
        doc = json.loads(subprocess.run(["ethtool", "--json", "-k", "eth0"], capture_output=True, text=True, check=False).stdout or "[{}]")[0]
        state["eth0"] = {k: v.get("active") for k, v in doc.items() if isinstance(v, dict)}
    return state


def badsum(*args: str, timeout: float = 120) -> tuple[int, dict]:
    r = subprocess.run([*BADSUM, *args], capture_output=True, text=True, timeout=timeout, check=False)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"badsum {' '.join(args)}: exit {r.returncode}, no JSON:\n{r.stdout}\n{r.stderr}") from None
    return r.returncode, doc


# -- the lab ---------------------------------------------------------------------------------------


@contextmanager
def lab_up(module: ModuleType, name: str, tmp_path: Path, *, needs_ovs: bool = False,
           tools: tuple[str, ...] = ()) -> Iterator[Lab]:  # fmt: skip
    need_root()
    try:
        preflight(needs_ovs, tools)
    except LabError as e:
        pytest.skip(str(e))
    lab = Lab(module.topology(), scenario=name, out=tmp_path / "lab")
    try:
        with lab:
            yield lab
    finally:
        subprocess.run([*BADSUM, "lab", "clean", "--prefix", lab.prefix], capture_output=True, timeout=60, check=False)
        left = [n for n in json.loads(subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=False).stdout or "[]")
                if n["name"].startswith(lab.prefix)]  # fmt: skip
        assert not left, f"lab namespaces left behind: {left}"


def scope(lab: Lab) -> list[str]:
    return [x for n in lab.topology.namespaces for x in ("--namespace", lab.ns(n))]


def findings(lab: Lab, rule: str) -> list:
    """The collector and the rules engine, on the lab's namespaces only."""
    from badsum.host.collect import collect_snapshot
    from badsum.rules.engine import evaluate

    snap = collect_snapshot(time.time(), namespaces={lab.ns(n) for n in lab.topology.namespaces}, counter_interval=0.2)
    return [f for f in evaluate(snap) if f.rule == rule and f.outcome in (Outcome.FAIL, Outcome.WARN)]


def plan_only_inside(lab: Lab, rule: str, journal: Path) -> list[dict]:
    """The dry run, and the guard: every planned change is in one of this lab's namespaces."""
    code, doc = badsum("fix", rule, "--json", "--journal", str(journal), *scope(lab))
    assert code == 1, doc
    actions = doc["data"]["actions"]
    assert actions
    for a in actions:
        assert a["namespace"].startswith(lab.prefix + "-"), a
        assert a["enter"] == f"/run/netns/{a['namespace']}", a
        assert a["argv"][:2] == ["nsenter", f"--net=/run/netns/{a['namespace']}"], a
    assert not journal.exists()  # a dry run writes nothing
    return actions


# -- KB-005: OVS userspace datapath, veth TX checksum offload -----------------------------------------


def test_kb005_ovs_userspace_veth_fix_apply_and_undo(tmp_path: Path) -> None:
    root_before = root_ns_state()
    journal = tmp_path / "journal.json"
    m = ovs_userspace_veth
    with lab_up(m, "ovs-userspace-veth", tmp_path, needs_ovs=True) as lab:
        lab.ovs["host"].vsctl("set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=false")
        c1, c2, host = lab.ns("c1"), lab.ns("c2"), lab.ns("host")
        before = {ns: ethtool_k(ns, "eth0") for ns in (c1, c2)}
        assert all(f["tx-checksum-ip-generic"] for f in before.values())
        broken = lab.tcp_transfer("c1", "c2", m.C2, port=9100, nbytes=100_000, timeout=4)
        assert not broken["ok"], "the lab should be broken before the fix (KB-005)"

        found = findings(lab, "KB-005")
        named = {frozenset((o.ns, o.name) for o in f.objects) for f in found}
        assert named == {frozenset({(c1, "eth0"), (host, "c1-veth")}), frozenset({(c2, "eth0"), (host, "c2-veth")})}

        actions = plan_only_inside(lab, "KB-005", journal)
        assert [a["command"] for a in actions] == [f"nsenter --net=/run/netns/{ns} -- ethtool -K eth0 tx off" for ns in (c1, c2)]

        code, doc = badsum("fix", "KB-005", "--apply", "--json", "--journal", str(journal), *scope(lab))
        assert code == 0, doc
        assert [r["status"] for r in doc["data"]["results"]] == ["applied", "applied"]
        assert {r["status"] for r in doc["data"]["recheck"]} == {"gone"}
        after = {ns: ethtool_k(ns, "eth0") for ns in (c1, c2)}
        for ns in (c1, c2):
            assert not after[ns]["tx-checksum-ip-generic"] and not after[ns]["tx-checksum-sctp"]
            assert not after[ns]["tx-tcp-segmentation"]  # the cost: TSO goes with it
        works = lab.tcp_transfer("c1", "c2", m.C2, port=9101, nbytes=100_000, timeout=8)
        assert works["ok"], works
        assert findings(lab, "KB-005") == []

        entries = json.loads(journal.read_text())["entries"]
        assert [e["namespace"]["id"] for e in entries] == [c1, c2]
        for e in entries:
            assert e["namespace"]["inode"] == os.stat(e["namespace"]["enter"]).st_ino
            assert e["before"]["features"]["tx-checksum-ip-generic"]["active"] is True
            assert "tx-tcp-segmentation" in e["before"]["features"]

        code, doc = badsum("fix", "--undo", "--json", "--journal", str(journal))
        assert code == 0, doc
        assert [r["status"] for r in doc["data"]["results"]] == ["restored", "restored"]
        assert {ns: ethtool_k(ns, "eth0") for ns in (c1, c2)} == before
        assert len(findings(lab, "KB-005")) == 2  # the finding is back with the old state
    assert root_ns_state() == root_before


# -- KB-003: VXLAN overlay MTU over a smaller underlay, DF set ----------------------------------------


def test_kb003_vxlan_mtu_fix_apply_and_undo(tmp_path: Path) -> None:
    root_before = root_ns_state()
    journal = tmp_path / "journal.json"
    with lab_up(vxlan_mtu_df, "vxlan-mtu-df", tmp_path) as lab:
        h1, h2, c1, c2 = lab.ns("h1"), lab.ns("h2"), lab.ns("c1"), lab.ns("c2")
        devices = [(h1, "vxlan0"), (h1, "br0"), (h1, "eth0"), (h1, "vethc1"), (c1, "eth0"),
                   (h2, "vxlan0"), (h2, "br0"), (h2, "eth0"), (h2, "vethc2"), (c2, "eth0")]
        mtus_before = {(ns, dev): link_mtu(ns, dev) for ns, dev in devices}
        assert mtus_before[(h1, "vxlan0")] == 1500 and mtus_before[(h1, "eth0")] == 1450

        found = findings(lab, "KB-003")
        assert {(o.ns, o.name) for f in found for o in f.objects} >= {(h1, "vxlan0"), (h2, "vxlan0")}

        actions = plan_only_inside(lab, "KB-003", journal)
        # The tunnel, and the rest of its L2 domain: the bridge's veth port and the container behind it
        # (a bridge drops frames larger than the tunnel's MTU without telling anyone).
        assert sorted(a["command"] for a in actions) == sorted(
            f"nsenter --net=/run/netns/{ns} -- ip link set dev {dev} mtu 1400"
            for ns, dev in [(h1, "vxlan0"), (h1, "vethc1"), (c1, "eth0"), (h2, "vxlan0"), (h2, "vethc2"), (c2, "eth0")])

        code, doc = badsum("fix", "KB-003", "--apply", "--json", "--journal", str(journal), *scope(lab))
        assert code == 0, doc
        assert {r["status"] for r in doc["data"]["recheck"]} == {"gone"}
        assert link_mtu(h1, "vxlan0") == link_mtu(h2, "vxlan0") == link_mtu(c1, "eth0") == link_mtu(c2, "eth0") == 1400
        # Only what was named; the underlay keeps its MTU. The kernel lowers a bridge to its smallest
        # port by itself, and the journal records that too, so that undo can check it came back.
        assert all(link_mtu(ns, "eth0") == mtus_before[(ns, "eth0")] for ns in (h1, h2))
        # br0 follows its smallest port: the journal records that side effect once per namespace, on
        # the change that caused it.
        entries = json.loads(journal.read_text())["entries"]
        for ns in (h1, h2):
            recorded: dict = {}
            for e in entries:
                if e["namespace"]["id"] == ns:
                    recorded.update(e["before"].get("others", {}))
            assert recorded == {"br0": mtus_before[(ns, "br0")]} and link_mtu(ns, "br0") == 1400
        # A packet that fits the new MTU crosses the tunnel with DF set (1400 + 50 = the underlay's 1450).
        ping = lab.ping("h1", vxlan_mtu_df.H2, count=2, size=1400 - 28, df=True)
        assert ping["ok"], ping
        # Full-size TCP between the containers now fits the tunnel end to end (hash checked).
        tcp = lab.tcp_transfer("c1", "c2", vxlan_mtu_df.C2, port=9400, nbytes=300_000, timeout=5)
        assert tcp["ok"], tcp
        assert findings(lab, "KB-003") == []

        code, doc = badsum("fix", "--undo", "--json", "--journal", str(journal))
        assert code == 0, doc
        assert {(ns, dev): link_mtu(ns, dev) for ns, dev in devices} == mtus_before
    assert root_ns_state() == root_before


# -- KB-004: VXLAN + kube-proxy MASQUERADE --random-fully without the unmark rules --------------------


def test_kb004_double_snat_unmark_rules_apply_and_undo(tmp_path: Path) -> None:
    root_before = root_ns_state()
    journal = tmp_path / "journal.json"
    m = vxlan_double_snat
    with lab_up(m, "vxlan-double-snat", tmp_path, tools=("iptables", "iptables-restore")) as lab:
        lab_run(["iptables-restore"], ns=lab.ns("node1"), input=m.KUBE_RULES)
        node1 = lab.ns("node1")
        rules_before = iptables_s(node1, "nat", "KUBE-POSTROUTING")
        feats_before = ethtool_k(node1, "flannel.1")
        assert not any("RETURN" in r for r in rules_before)

        found = findings(lab, "KB-004")
        assert len(found) == 1
        assert {(o.ns, o.name) for o in found[0].objects} == {(node1, "flannel.1"), (node1, "nat/KUBE-POSTROUTING")}

        actions = plan_only_inside(lab, "KB-004", journal)
        assert [a["kind"] for a in actions] == ["ethtool-feature", "iptables-rule", "iptables-rule", "iptables-rule"]

        code, doc = badsum("fix", "KB-004", "--apply", "--json", "--journal", str(journal), *scope(lab))
        assert code == 0, doc
        assert {r["status"] for r in doc["data"]["recheck"]} == {"gone"}
        rules = iptables_s(node1, "nat", "KUBE-POSTROUTING")
        assert rules[1:] == [
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
            '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
        ]
        assert not ethtool_k(node1, "flannel.1")["tx-checksum-ip-generic"]
        # The service still works through the changed chain (VIP -> DNAT -> VXLAN -> pod).
        conn = lab.tcp_transfer("node1", "pod", m.POD, port=m.PORT0, nbytes=1000, timeout=m.CONNECT_TIMEOUT, connect_addr=m.VIP)
        assert conn["ok"], conn
        assert findings(lab, "KB-004") == []

        code, doc = badsum("fix", "--undo", "--json", "--journal", str(journal))
        assert code == 0, doc
        assert [r["status"] for r in doc["data"]["results"]] == ["restored"] * 4
        assert iptables_s(node1, "nat", "KUBE-POSTROUTING") == rules_before
        assert ethtool_k(node1, "flannel.1") == feats_before
    assert root_ns_state() == root_before


# -- a namespace that went away between --apply and --undo -------------------------------------------


def test_undo_after_the_namespace_is_gone_refuses_politely(tmp_path: Path) -> None:
    journal = tmp_path / "journal.json"
    with lab_up(vxlan_mtu_df, "vxlan-mtu-df", tmp_path) as lab:
        code, doc = badsum("fix", "KB-003", "--apply", "--json", "--journal", str(journal), *scope(lab))
        assert code == 0, doc
        lab_run(["ip", "netns", "delete", lab.ns("h2")])
        r = subprocess.run([*BADSUM, "fix", "--undo", "--journal", str(journal)], capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 3
        assert f"namespace {lab.ns('h2')} (/run/netns/{lab.ns('h2')}) no longer exists" in r.stderr
        assert link_mtu(lab.ns("h1"), "vxlan0") == 1500  # the other entry was still restored
        # h1's side (its tunnel, bridge port and container) is restored; h2's is gone, and so is c2's
        # eth0 with it (its veth peer lived in h2).
        entries = json.loads(journal.read_text())["entries"]
        by_ns = {(e["namespace"]["id"], e["target"]): e["status"] for e in entries}
        gone = {lab.ns("h2"), lab.ns("c2")}
        assert by_ns and all(st == ("unrestorable" if ns in gone else "undone") for (ns, _), st in by_ns.items()), by_ns
        assert {ns for ns, _ in by_ns} == {lab.ns(n) for n in ("h1", "c1", "h2", "c2")}
        r = subprocess.run([*BADSUM, "fix", "--undo", "--journal", str(journal)], capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0 and "nothing to undo" in r.stdout
