"""Apply and undo against a simulated host (the exact argv badsum runs, answered as the tools do)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import TSO, FakeHost, FakeLink, finding, mtu, tx_off

from badsum.fix import apply as apply_mod
from badsum.fix.apply import apply_plan, undo, undo_commands
from badsum.fix.journal import (
    APPLIED,
    FAILED,
    UNDONE,
    UNRESTORABLE,
    Journal,
    open_entries,
)
from badsum.fix.plan import build_plan
from badsum.rules.model import FixAction

C1 = "/run/netns/bs1-c1"
C2 = "/run/netns/bs1-c2"


@pytest.fixture
def inodes(monkeypatch: pytest.MonkeyPatch) -> dict[str | None, int | None]:
    """Namespace inodes by enter path (the real ones are stat()ed); change one to 're-create' it."""
    table: dict[str | None, int | None] = {None: 1, C1: 101, C2: 102}
    monkeypatch.setattr(apply_mod, "ns_inode", lambda enter: table.get(enter))
    return table


def kb005() -> list:
    return [finding("KB-005", [("bs1-c1", "eth0"), ("bs1-c2", "eth0")],
                    [tx_off("bs1-c1", "eth0"), tx_off("bs1-c2", "eth0")])]


def host_with_two_veths() -> FakeHost:
    return FakeHost(links={(C1, "eth0"): FakeLink(2), (C2, "eth0"): FakeLink(2)})


def test_journal_written_before_the_command_runs(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    j = Journal(tmp_path / "j.json")
    seen_at_change: list[int] = []

    def spy(argv: list[str], timeout: float):
        if "-K" in argv:
            seen_at_change.append(len(j.entries()))
        return host(argv, timeout)

    results = apply_plan(list(build_plan(kb005()).actions), j, 1000.0, spy)
    assert [r.status for r in results] == ["applied", "applied"]
    assert seen_at_change == [1, 2]  # entry N on disk when command N ran
    e1 = j.entries()[0]
    assert e1.status == APPLIED and e1.applied_at == 1000.0
    assert e1.namespace.enter == C1 and e1.namespace.inode == 101 and e1.ifindex == 2
    assert e1.command == ["nsenter", f"--net={C1}", "--", "ethtool", "-K", "eth0", "tx", "off"]
    # Only what changed, by its own name: the checksum features, and TSO with them.
    assert set(e1.before["features"]) == {"tx-checksum-ip-generic", "tx-checksum-sctp", *TSO}
    assert all(v["active"] for v in e1.before["features"].values())
    assert not any(v["active"] for v in e1.after["features"].values())
    assert e1.undo == [["nsenter", f"--net={C1}", "--", "ethtool", "-K", "eth0",
                        *[x for k in e1.before["features"] for x in (k, "on")]]]


def test_undo_restores_in_reverse_order_and_marks_entries(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    j = Journal(tmp_path / "j.json")
    apply_plan(list(build_plan(kb005()).actions), j, 1000.0, host)
    assert not host.links[(C1, "eth0")].features["tx-tcp-segmentation"]["active"]
    host.calls.clear()
    results = undo(j, open_entries(j.entries()), 2000.0, host)
    assert [r.status for r in results] == ["restored", "restored"]
    assert [r.entry.namespace.enter for r in results] == [C2, C1]  # newest first
    for enter in (C1, C2):
        feats = host.links[(enter, "eth0")].features
        assert feats["tx-checksum-ip-generic"]["active"] and feats["tx-tcp-segmentation"]["active"]
    assert all(e.status == UNDONE and e.undone_at == 2000.0 for e in j.entries())
    assert undo(j, open_entries(j.entries()), 3000.0, host) == []  # nothing left


def test_undo_refuses_a_recreated_namespace_and_continues(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    j = Journal(tmp_path / "j.json")
    apply_plan(list(build_plan(kb005()).actions), j, 1000.0, host)
    inodes[C1] = 999  # deleted and re-created under the same name
    results = undo(j, open_entries(j.entries()), 2000.0, host)
    assert [r.status for r in results] == ["restored", "refused"]
    assert "re-created" in results[1].message and "bs1-c1" in results[1].message
    assert [e.status for e in j.entries()] == [UNRESTORABLE, UNDONE]


def test_undo_refuses_a_missing_namespace_or_interface(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    j = Journal(tmp_path / "j.json")
    apply_plan(list(build_plan(kb005()).actions), j, 1000.0, host)
    inodes[C2] = None
    del host.links[(C1, "eth0")]
    results = undo(j, open_entries(j.entries()), 2000.0, host)
    assert [r.status for r in results] == ["refused", "refused"]
    assert "no longer exists" in results[0].message
    assert "interface eth0 no longer exists" in results[1].message


def test_undo_refuses_a_recreated_interface(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    j = Journal(tmp_path / "j.json")
    apply_plan(list(build_plan(kb005()).actions)[:1], j, 1000.0, host)
    host.links[(C1, "eth0")] = FakeLink(7)
    (r,) = undo(j, open_entries(j.entries()), 2000.0, host)
    assert r.status == "refused" and "ifindex 7, was 2" in r.message


def test_undo_restores_only_what_is_still_as_badsum_left_it(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    j = Journal(tmp_path / "j.json")
    apply_plan(list(build_plan(kb005()).actions)[:1], j, 1000.0, host)
    host.links[(C1, "eth0")].features["tx-checksum-sctp"].update(active=True, requested=True)  # an operator did this
    (r,) = undo(j, open_entries(j.entries()), 2000.0, host)
    assert r.status == "restored" and "tx-checksum-ip-generic on" in r.message and "sctp" not in r.message
    assert host.links[(C1, "eth0")].features["tx-checksum-ip-generic"]["active"]


def test_undo_leaves_an_mtu_someone_changed_since(tmp_path: Path, inodes: dict) -> None:
    host = FakeHost(links={(C1, "vxlan0"): FakeLink(5)})
    j = Journal(tmp_path / "j.json")
    apply_plan(list(build_plan([finding("KB-003", [("bs1-c1", "vxlan0")], [mtu("bs1-c1", "vxlan0", 1400, C1)])]).actions),
               j, 1.0, host)
    host.links[(C1, "vxlan0")].mtu = 1300
    (r,) = undo(j, open_entries(j.entries()), 2.0, host)
    assert r.status == "refused" and "changed since" in r.message
    assert host.links[(C1, "vxlan0")].mtu == 1300


def test_already_in_place_changes_nothing(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    host.links[(C1, "eth0")].mtu = 1400
    j = Journal(tmp_path / "j.json")
    (r,) = apply_plan(list(build_plan([finding("KB-003", [("bs1-c1", "eth0")], [mtu("bs1-c1", "eth0", 1400, C1)])]).actions),
                      j, 1.0, host)
    assert r.status == "unchanged"
    assert j.entries() == []
    apply_plan(list(build_plan(kb005()).actions)[:1], j, 1.0, host)
    (r,) = apply_plan(list(build_plan(kb005()).actions)[:1], j, 2.0, host)
    assert r.status == "unchanged"


def test_mtu_apply_and_undo(tmp_path: Path, inodes: dict) -> None:
    host = FakeHost(links={(C1, "vxlan0"): FakeLink(5), (C1, "br0"): FakeLink(6)})
    j = Journal(tmp_path / "j.json")
    f = finding("KB-003", [("bs1-c1", "vxlan0")], [mtu("bs1-c1", "vxlan0", 1400, C1), mtu("bs1-c1", "br0", 1400, C1)])
    results = apply_plan(list(build_plan([f]).actions), j, 1.0, host)
    assert [r.status for r in results] == ["applied", "applied"]
    assert host.links[(C1, "vxlan0")].mtu == 1400
    assert [e.before for e in j.entries()] == [{"mtu": 1500}, {"mtu": 1500}]
    assert undo_commands(j.entries()[0]) == [["nsenter", f"--net={C1}", "--", "ip", "link", "set", "dev", "vxlan0", "mtu", "1500"]]
    results = undo(j, open_entries(j.entries()), 2.0, host)
    assert [r.entry.target for r in results] == ["br0", "vxlan0"]
    assert host.links[(C1, "vxlan0")].mtu == host.links[(C1, "br0")].mtu == 1500


def test_a_namespace_recreated_since_the_snapshot_is_refused(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    j = Journal(tmp_path / "j.json")
    results = apply_plan(list(build_plan(kb005()).actions), j, 1.0, host, inodes={"bs1-c1": 55, "bs1-c2": 102})
    assert results[0].status == "failed" and "re-created since the snapshot" in results[0].message
    assert results[1].status == "skipped"
    assert j.entries() == [] and not any("-K" in c for c in host.calls)


def test_first_failure_stops_the_rest_and_is_journaled(tmp_path: Path, inodes: dict) -> None:
    host = FakeHost(links={(C1, "eth0"): FakeLink(2)})  # no eth0 in c2
    j = Journal(tmp_path / "j.json")
    f = finding("KB-005", [("bs1-c1", "eth0")], [tx_off("bs1-c2", "eth0"), tx_off("bs1-c1", "eth0")])
    results = apply_plan(list(build_plan([f]).actions), j, 1.0, host)
    assert [r.status for r in results] == ["failed", "skipped"]
    assert "no interface eth0" in results[0].message
    assert j.entries() == []  # nothing was changed, nothing journaled
    host.fail = {"ethtool -K"}
    results = apply_plan(list(build_plan([f]).actions)[1:], j, 1.0, host)
    assert results[0].status == "failed"
    assert j.entries()[0].status == FAILED  # journaled before it ran; undo still checks it


def test_iptables_rules_added_are_removed_by_undo(tmp_path: Path, inodes: dict) -> None:
    host = FakeHost()
    chain = (C1, "nat", "KUBE-POSTROUTING")
    masq = ["-m", "mark", "--mark", "0x4000/0x4000", "-j", "MASQUERADE", "--random-fully"]
    host.chains[chain] = [masq]
    ret_spec = ["-I", "KUBE-POSTROUTING", "1", "-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"]
    xor_spec = ["-I", "KUBE-POSTROUTING", "2", "-j", "MARK", "--xor-mark"]
    ret = FixAction("iptables-rule", "bs1-c1", C1, "nat", "\0".join(ret_spec), "")
    xor = FixAction("iptables-rule", "bs1-c1", C1, "nat", "\0".join(xor_spec), "0x4000")
    f = finding("KB-004", [("bs1-c1", "KUBE-POSTROUTING")], [ret, xor])
    j = Journal(tmp_path / "j.json")
    results = apply_plan(list(build_plan([f]).actions), j, 1.0, host)
    assert [r.status for r in results] == ["applied", "applied"]
    assert host.chains[chain][0][-1] == "RETURN" and host.chains[chain][1][-1] == "0x4000"
    e = j.entries()[1]
    assert undo_commands(e) == [["nsenter", f"--net={C1}", "--", "iptables", "-t", "nat", "-D", "KUBE-POSTROUTING",
                                 "-j", "MARK", "--xor-mark", "0x4000"]]
    again = apply_plan(list(build_plan([f]).actions), j, 2.0, host)
    assert [r.status for r in again] == ["unchanged", "unchanged"]  # -C finds them: no duplicates
    undo(j, open_entries(j.entries()), 3.0, host)
    assert host.chains[chain] == [masq]


def test_kubernetes_92035_in_place_insert_insert_replace_and_undo(tmp_path: Path, inodes: dict) -> None:
    """The rules engine's KB-004 fix: RETURN unless marked, clear the mark, MASQUERADE without the mark match."""
    host = FakeHost()
    chain = (C1, "nat", "KUBE-POSTROUTING")
    masq = ["-m", "comment", "--comment", "kubernetes service traffic requiring SNAT", "-m", "mark", "--mark",
            "0x4000/0x4000", "-j", "MASQUERADE", "--random-fully"]
    host.chains[chain] = [list(masq)]
    specs = [["-I", "KUBE-POSTROUTING", "1", "-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"],
             ["-I", "KUBE-POSTROUTING", "2", "-j", "MARK", "--xor-mark", "0x4000"],
             ["-R", "KUBE-POSTROUTING", "3", "-m", "comment", "--comment", "kubernetes service traffic requiring SNAT",
              "-j", "MASQUERADE", "--random-fully"]]
    acts = [FixAction("iptables-rule", "bs1-c1", C1, "nat", "\0".join(s), "") for s in specs]
    j = Journal(tmp_path / "j.json")
    results = apply_plan(list(build_plan([finding("KB-004", [("bs1-c1", "nat/KUBE-POSTROUTING")], acts)]).actions), j, 1.0, host)
    assert [r.status for r in results] == ["applied"] * 3
    assert host.chains[chain] == [specs[0][3:], specs[1][3:], specs[2][3:]]
    e = j.entries()[2]
    assert e.before["line"] == "-A KUBE-POSTROUTING -m comment --comment 'kubernetes service traffic requiring SNAT' " \
                               "-m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully"
    assert undo_commands(e)[0][-len(masq) - 2:] == ["-R", "KUBE-POSTROUTING", "3", *masq][-len(masq) - 2:]
    results = undo(j, open_entries(j.entries()), 2.0, host)
    assert [r.status for r in results] == ["restored"] * 3
    assert host.chains[chain] == [masq]


def test_iptables_rule_deleted_is_put_back_at_its_position(tmp_path: Path, inodes: dict) -> None:
    host = FakeHost()
    chain = (None, "nat", "POSTROUTING")
    rules = [["-j", "A"], ["-m", "comment", "--comment", "two words", "-j", "MASQUERADE"], ["-j", "C"]]
    host.chains[chain] = [list(r) for r in rules]
    d = FixAction("iptables-rule", "host", None, "nat", "\0".join(["-D", "POSTROUTING", *rules[1]]), "")
    j = Journal(tmp_path / "j.json")
    (r,) = apply_plan(list(build_plan([finding("K", [("host", "POSTROUTING")], [d])]).actions), j, 1.0, host)
    assert r.status == "applied" and host.chains[chain] == [rules[0], rules[2]]
    assert j.entries()[0].before["position"] == 2
    undo(j, open_entries(j.entries()), 2.0, host)
    assert host.chains[chain] == rules


def test_sysctl_apply_and_undo(tmp_path: Path, inodes: dict) -> None:
    host = FakeHost(sysctls={(None, "net.ipv4.ip_no_pmtu_disc"): "1"})
    a = FixAction("sysctl", "host", None, "net.ipv4.ip_no_pmtu_disc", "value", "0")
    j = Journal(tmp_path / "j.json")
    apply_plan(list(build_plan([finding("K", [("host", "kernel")], [a])]).actions), j, 1.0, host)
    assert host.sysctls[(None, "net.ipv4.ip_no_pmtu_disc")] == "0"
    undo(j, open_entries(j.entries()), 2.0, host)
    assert host.sysctls[(None, "net.ipv4.ip_no_pmtu_disc")] == "1"


def test_every_command_is_an_argv_list_never_a_shell(tmp_path: Path, inodes: dict) -> None:
    host = host_with_two_veths()
    j = Journal(tmp_path / "j.json")
    apply_plan(list(build_plan(kb005()).actions), j, 1.0, host)
    undo(j, open_entries(j.entries()), 2.0, host)
    assert host.calls and all(isinstance(c, list) and c[0] in ("nsenter", "ip", "ethtool") for c in host.calls)
    assert not any(c[0] in ("sh", "bash") or "-c" in c for c in host.calls)
