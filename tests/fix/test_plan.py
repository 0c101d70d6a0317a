"""The plan: deduplicated, ordered, exact commands, costs, the findings each action addresses."""

from __future__ import annotations

from fakes import finding, mtu, tx_off

from badsum.fix.plan import build_plan, default_cost, finding_label, recheck
from badsum.host.model import Feature, HostSnapshot, KernelInfo, Link, Namespace
from badsum.rules.model import FixAction, Outcome, Severity


def test_dedupes_one_change_asked_for_by_two_findings() -> None:
    a = tx_off("bs1-c1", "eth0")
    f1 = finding("KB-005", [("bs1-c1", "eth0")], [a])
    f2 = finding("KB-007", [("bs1-c1", "eth0")], [a], severity=Severity.MEDIUM)
    plan = build_plan([f2, f1])
    assert len(plan.actions) == 1
    p = plan.actions[0]
    assert p.command == "nsenter --net=/run/netns/bs1-c1 -- ethtool -K eth0 tx off"
    assert p.rules == ("KB-005", "KB-007")  # the more severe finding first
    assert p.findings == ("KB-005 on bs1-c1:eth0", "KB-007 on bs1-c1:eth0")


def test_tx_off_covers_one_tx_checksum_feature_on_the_same_interface() -> None:
    narrow = tx_off("host", "flannel.1", setting="tx-checksum-ip-generic")
    wide = tx_off("host", "flannel.1")
    plan = build_plan([finding("KB-004", [("host", "flannel.1")], [narrow]),
                       finding("KB-007", [("host", "flannel.1")], [wide], severity=Severity.LOW)])
    assert [p.action.setting for p in plan.actions] == ["tx"]
    assert set(plan.actions[0].rules) == {"KB-004", "KB-007"}


def test_order_is_offloads_then_mtu_then_rules_and_keeps_each_findings_order() -> None:
    rule = FixAction("iptables-rule", "n1", "/run/netns/n1", "nat", "-I\0KUBE-POSTROUTING\x001\0-j\0RETURN", "")
    f_mtu = finding("KB-003", [("h1", "vxlan0")], [mtu("h1", "vethc1", 1400), mtu("h1", "vxlan0", 1400), mtu("h1", "br0", 1400)],
                    severity=Severity.CRITICAL)
    f_tx = finding("KB-005", [("c1", "eth0")], [tx_off("c1", "eth0")], severity=Severity.LOW)
    f_rule = finding("KB-004", [("n1", "KUBE-POSTROUTING")], [rule])
    plan = build_plan([f_rule, f_tx, f_mtu])
    assert [(p.action.kind, p.action.target) for p in plan.actions] == [
        ("ethtool-feature", "eth0"), ("mtu", "vethc1"), ("mtu", "vxlan0"), ("mtu", "br0"), ("iptables-rule", "nat")]
    assert plan.actions[-1].command == ("nsenter --net=/run/netns/n1 -- iptables -t nat -I KUBE-POSTROUTING 1 -j RETURN")


def test_two_mtus_for_one_link_keep_the_smaller_and_say_so() -> None:
    plan = build_plan([finding("KB-003", [("h", "vxlan0")], [mtu("h", "vxlan0", 1450)]),
                       finding("KB-010", [("h", "vxlan0")], [mtu("h", "vxlan0", 1400)], severity=Severity.LOW)])
    assert [p.action.value for p in plan.actions] == ["1400"]
    assert any("1400 kept" in n for n in plan.notes)


def test_conflicting_feature_values_keep_the_more_severe_findings_and_note_the_other() -> None:
    on = FixAction("ethtool-feature", "host", None, "eth1", "tx", "on")
    plan = build_plan([finding("KB-X", [("host", "eth1")], [on], severity=Severity.LOW),
                       finding("KB-Y", [("host", "eth1")], [tx_off("host", "eth1")], severity=Severity.HIGH)])
    assert [p.action.value for p in plan.actions] == ["off"]
    assert any("conflicts" in n and "KB-X" in n for n in plan.notes)


def test_rule_filter_is_case_insensitive_and_passing_findings_are_ignored() -> None:
    fs = [finding("KB-005", [("c1", "eth0")], [tx_off("c1", "eth0")]),
          finding("KB-004", [("host", "flannel.1")], [tx_off("host", "flannel.1")]),
          finding("KB-001", [("c2", "eth0")], [tx_off("c2", "eth0")], outcome=Outcome.PASS)]
    plan = build_plan(fs, rules=["kb-005"])
    assert [f.rule for f in plan.findings] == ["KB-005"]
    assert build_plan(fs, rules=["KB-001"]).empty  # a pass is nothing to fix
    assert not build_plan(fs).empty


def test_namespace_scope_never_plans_a_change_outside_it() -> None:
    fs = [finding("KB-005", [("c1", "eth0"), ("host", "eth0")], [tx_off("c1", "eth0"), tx_off("host", "eth0")]),
          finding("KB-004", [("host", "flannel.1")], [tx_off("host", "flannel.1")])]
    plan = build_plan(fs, namespaces=["c1"])
    assert [p.action.ns for p in plan.actions] == ["c1"]
    assert [f.rule for f in plan.findings] == ["KB-005"]
    assert any("outside --namespace" in n for n in plan.notes)


def test_finding_without_fix_is_listed_and_still_counts() -> None:
    plan = build_plan([finding("KB-001", [("host", "kernel")], [])])
    assert not plan.empty and not plan.actions
    assert plan.without_fix == ("KB-001 on host:kernel",)


def test_cost_says_tx_off_takes_tso_with_it_and_rule_text_wins() -> None:
    assert "TSO" in default_cost(tx_off("c1", "eth0"))
    assert "TSO" in default_cost(tx_off("host", "flannel.1", setting="tx-checksum-ip-generic"))
    assert "MTU 1400" in default_cost(mtu("h", "vxlan0", 1400))
    own = FixAction("ethtool-feature", "host", None, "eth0", "tx", "off", cost="the rule's own words")
    assert build_plan([finding("K", [("host", "eth0")], [own])]).actions[0].cost == "the rule's own words"


def test_current_value_comes_from_the_snapshot() -> None:
    feats = {"tx-checksum-ip-generic": Feature(True, False), "tx-checksum-ipv4": Feature(False, True)}
    snap = HostSnapshot(0.0, "h", KernelInfo("6.1.0", (6, 1, 0)), True, (
        Namespace("c1", 1, "/run/netns/c1", links=(Link(2, "eth0", "veth", 1500, "up", features=feats),)),
        Namespace("h", 2, "/run/netns/h", links=(Link(3, "vxlan0", "vxlan", 1500, "up"),))))
    plan = build_plan([finding("KB-005", [("c1", "eth0")], [tx_off("c1", "eth0")]),
                       finding("KB-003", [("h", "vxlan0")], [mtu("h", "vxlan0", 1400)])], snapshot=snap)
    assert [p.current for p in plan.actions] == ["on", "1500"]
    d = plan.as_dict()["actions"][1]
    assert d["argv"] == ["nsenter", "--net=/run/netns/h", "--", "ip", "link", "set", "dev", "vxlan0", "mtu", "1400"]


def test_recheck_gone_still_unknown() -> None:
    f = finding("KB-005", [("c1", "eth0"), ("c2", "eth0")], [tx_off("c1", "eth0")])
    g = finding("KB-004", [("host", "flannel.1")], [])
    after_partial = [finding("KB-005", [("c2", "eth0")], [])]
    assert recheck([f, g], after_partial) == [(f, "still there"), (g, "gone")]
    assert recheck([f], []) == [(f, "gone")]
    assert recheck([f], [], missing=["c2"]) == [(f, "unknown")]
    assert recheck([f], [finding("KB-005", [("c1", "eth0")], [], outcome=Outcome.UNKNOWN)]) == [(f, "unknown")]
    assert finding_label(f) == "KB-005 on c1:eth0, c2:eth0"
