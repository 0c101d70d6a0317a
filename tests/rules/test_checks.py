"""Checks in detail: kernel version logic, iptables parsing, the exact fix commands, the engine."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from rule_fixtures import KUBE_AFTER, KUBE_BEFORE, counters, host, kernel, netns, nic, snapshot, veth, vxlan

from badsum.host.model import HOST_NS, HostSnapshot
from badsum.rules import checks as C
from badsum.rules import evaluate, load_rules, problems, toolkit
from badsum.rules.engine import CatalogueError, catalogue_text, load_entries, resolve_namespaces, sort_findings
from badsum.rules.model import Finding, ObjectRef, Outcome, Severity
from badsum.rules.reference import render

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RULES = {r.id: r for r in load_rules()}


def fixture(rule_id: str, name: str) -> HostSnapshot:
    return HostSnapshot.from_json((FIXTURES / rule_id / f"{name}.json").read_text())


# -- kernel versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("release", "rule", "has"), [
    ("3.10.0-327.el7.x86_64", "KB-001", False),
    ("3.10.0-352.el7.x86_64", "KB-001", True),
    ("3.10.0-514.21.1.el7.x86_64", "KB-001", True),
    ("4.4.0", "KB-001", True),
    ("4.3.3", "KB-001", False),
    ("4.18.0-240.el8.x86_64", "KB-001", True),  # el8 is based on 4.18 >= 4.4
    ("2.6.32-754.el6.x86_64", "KB-001", None),  # an el6 backport is not known either way
    ("5.7.0", "KB-004", True),
    ("5.6.12", "KB-004", False),
    ("5.6.13", "KB-004", True),
    ("5.4.40", "KB-004", False),
    ("5.4.41", "KB-004", True),
    ("4.19.123", "KB-004", True),
    ("4.14.180", "KB-004", False),
    ("5.5.19", "KB-004", False),  # no fixed 5.5.y
    ("5.4.0-26-generic", "KB-004", False),  # Ubuntu ABI 26 < 32
    ("5.4.0-32-generic", "KB-004", True),
    ("4.15.0-107-generic", "KB-004", True),
    ("4.19.0-16-amd64", "KB-004", None),  # Debian: the stable sublevel is not in the release
    ("3.10.0-1160.el7.x86_64", "KB-004", None),  # RHEL 7 backport unverified
    ("3.10.0-123.el7.x86_64", "KB-002", False),
    ("3.10.0-229.el7.x86_64", "KB-002", True),
])  # fmt: skip
def test_kernel_has(release: str, rule: str, has: bool | None) -> None:
    got, how = C.kernel_has(kernel(release), C.KERNEL_FIXES[rule])
    assert got is has, how
    assert release in how and C.KERNEL_FIXES[rule].commit in how


# -- KB-004: the nat table ---------------------------------------------------------------------


def test_kube_proxy_before_92035_is_unguarded() -> None:
    (m,) = C.unguarded_masquerades(KUBE_BEFORE)
    assert (m.chain, m.position, m.mark) == ("KUBE-POSTROUTING", 1, 0x4000)


@pytest.mark.parametrize("unmark", [
    "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",  # iptables-save's rendering of --xor-mark
    "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
    "-A KUBE-POSTROUTING -j MARK --set-xmark 0x0/0x4000",
    "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j RETURN",
])  # fmt: skip
def test_an_earlier_unmark_or_return_guards_the_masquerade(unmark: str) -> None:
    rules = list(KUBE_BEFORE)
    rules.insert(rules.index(next(r for r in rules if "MASQUERADE" in r)), unmark)
    assert C.unguarded_masquerades(rules) == []


def test_other_chains_and_rules_do_not_count() -> None:
    rules = [
        "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN",
        "-A FLANNEL-POSTRTG -s 203.0.113.0/24 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully",  # not mark-gated
        "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE",  # not --random-fully
        "-A X -m mark ! --mark 0x4000/0x4000 -j MASQUERADE --random-fully",  # negated gate
        "-A Y -j MARK --xor-mark 0x4000",
        "-A Z -m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully",  # the unmark is in chain Y
    ]
    assert [(m.chain, m.position) for m in C.unguarded_masquerades(rules)] == [("Z", 1)]
    assert C.unguarded_masquerades(KUBE_AFTER) == []


def _apply(chain: list[str], argv: list[str]) -> list[str]:
    """Apply `iptables -t nat -I/-R CHAIN N spec...` to a list of `-A CHAIN spec` lines (rule order kept)."""
    import shlex

    assert argv[:3] == ["iptables", "-t", "nat"]
    op, name, pos, *spec = argv[3:]
    line = shlex.join(["-A", name, *spec])
    i = int(pos) - 1
    if op == "-I":
        chain.insert(i, line)
    else:
        assert op == "-R"
        chain[i] = line
    return chain


def test_kb004_unmark_fix_turns_the_chain_into_the_92035_form() -> None:
    snap = fixture("KB-004", "fire-kernel-4.19.100")
    (f,) = problems(evaluate(snap, rules=[RULES["KB-004"]]))
    unmark = [a for a in f.fix if a.kind == "iptables-rule"]
    assert [a.target for a in unmark] == ["nat"] * 3 and all(a.enter is None and a.ns == HOST_NS for a in unmark)
    chain = [r for r in KUBE_BEFORE if r.startswith("-A KUBE-POSTROUTING")]
    for a in unmark:
        chain = _apply(chain, a.argv())
    import shlex

    assert [shlex.split(r) for r in chain] == [shlex.split(r) for r in (
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -m comment --comment 'kubernetes service traffic requiring SNAT' -j MASQUERADE --random-fully",
    )]  # kubernetes#92035, rule for rule
    assert C.unguarded_masquerades(chain) == []
    tx = [a for a in f.fix if a.kind == "ethtool-feature"]
    assert [a.command() for a in tx] == ["ethtool -K flannel.1 tx-checksum-ip-generic off"]
    assert f.fix[0].kind == "iptables-rule"  # the unmark rules come first, the ethtool fallback last


def test_kb004_fix_in_a_node_namespace_enters_it() -> None:
    (f,) = problems(evaluate(fixture("KB-004", "fire-node-namespace"), rules=[RULES["KB-004"]]))
    assert {a.ns for a in f.fix} == {"node1"}
    assert all(a.argv()[:3] == ["nsenter", "--net=/run/netns/node1", "--"] for a in f.fix)


def test_kb004_unknown_when_iptables_is_missing() -> None:
    snap = fixture("KB-004", "fire-kernel-4.19.100")
    snap = dataclasses.replace(snap, tools={**snap.tools, "iptables": None})
    snap = dataclasses.replace(snap, namespaces=tuple(dataclasses.replace(ns, nat=None) for ns in snap.namespaces))
    (f,) = [f for f in evaluate(snap, rules=[RULES["KB-004"]]) if f.objects]
    assert f.outcome is Outcome.UNKNOWN and "iptables is not installed" in f.reason


# -- KB-005: the fix names the peer in the peer's namespace ------------------------------------


# -- badsum's lab emulations on fixed kernels (tc programs) -------------------------------------


def test_kb004_lab_emulation_on_the_uplink_fails_labelled_emulated() -> None:
    snap = fixture("KB-004", "fire-lab-emulation")
    (f,) = problems(evaluate(snap, rules=[RULES["KB-004"]]))
    assert f.outcome is Outcome.FAIL
    assert f.reason.startswith("EMULATED: kernel 6.18.44 carries the fix, but badsum's lab emulation of the pre-5.7 NAT "
                               "update of a zero UDP checksum is attached at bs1a2b3c-node1:eth0 (tc egress, program "
                               "kb004_nat_csum id 6127)"), f.reason  # fmt: skip
    assert "EMULATED" in f.evidence and "carries the fix (ea64d8d6c675)" in f.evidence
    assert "MASQUERADE --random-fully" in f.evidence
    assert f.facts["emulated"] == {"kb": "KB-004", "emulated": True, "namespace": "bs1a2b3c-node1", "device": "eth0",
                                   "hook": "tc egress", "program": "kb004_nat_csum", "id": 6127}  # fmt: skip


def _move_program(snap: HostSnapshot, ns_id: str, to: str) -> HostSnapshot:
    """The snapshot with the KB-004 program moved from eth0 to another device of `ns_id`."""
    ns = snap.ns(ns_id)
    assert ns is not None
    prog = next(x for x in ns.links if x.name == "eth0").tc_bpf
    links = tuple(dataclasses.replace(x, tc_bpf=prog if x.name == to else ()) for x in ns.links)
    nss = tuple(dataclasses.replace(n, links=links) if n.id == ns_id else n for n in snap.namespaces)
    return dataclasses.replace(snap, namespaces=nss)


def test_kb004_emulation_counts_only_on_the_tunnels_uplink_and_only_by_its_name() -> None:
    snap = fixture("KB-004", "fire-lab-emulation")
    # On the VXLAN device itself it acts before the second SNAT: not the emulation of the old NAT.
    (f,) = problems(evaluate(_move_program(snap, "bs1a2b3c-node1", "flannel.1"), rules=[RULES["KB-004"]]))
    assert f.outcome is Outcome.WARN and "EMULATED" not in f.reason + f.evidence
    # Any other program on the uplink is not badsum's emulation.
    ns = snap.ns("bs1a2b3c-node1")
    assert ns is not None
    other = tuple(dataclasses.replace(x, tc_bpf=tuple(dataclasses.replace(p, name="cil_to_netdev") for p in x.tc_bpf or ()))
                  for x in ns.links)  # fmt: skip
    snap2 = dataclasses.replace(snap, namespaces=tuple(dataclasses.replace(n, links=other) if n.id == ns.id else n
                                                       for n in snap.namespaces))  # fmt: skip
    (f,) = problems(evaluate(snap2, rules=[RULES["KB-004"]]))
    assert f.outcome is Outcome.WARN and "emulated" not in f.facts


def test_kb001_lab_emulation_on_a_fixed_kernel_fails_naming_the_receiving_veth() -> None:
    (f,) = problems(evaluate(fixture("KB-001", "fire-lab-emulation"), rules=[RULES["KB-001"]]))
    assert f.outcome is Outcome.FAIL and f.reason.startswith("EMULATED: kernel 6.18.44 carries the fix")
    assert "attached at host:veth1a2b (tc egress, program kb001_veth_xmit id 6475)" in f.reason
    assert "pod1:eth0 is the container end" in f.evidence and "EMULATED" in f.evidence
    # Without the program the fixed kernel is not affected at all.
    snap = fixture("KB-001", "fire-lab-emulation")
    bare = dataclasses.replace(snap, namespaces=tuple(
        dataclasses.replace(n, links=tuple(dataclasses.replace(x, tc_bpf=()) for x in n.links)) for n in snap.namespaces))
    (s,) = evaluate(bare, rules=[RULES["KB-001"]])
    assert s.outcome is Outcome.SKIP


def test_kb005_fix_names_the_peer_veth_in_its_namespace() -> None:
    (f,) = problems(evaluate(fixture("KB-005", "fire-netdev-veth"), rules=[RULES["KB-005"]]))
    (a,) = f.fix
    assert (a.kind, a.ns, a.enter, a.target, a.setting, a.value) == (
        "ethtool-feature", "bs1a2b3c-c1", "/run/netns/bs1a2b3c-c1", "eth0", "tx", "off")
    assert a.argv() == ["nsenter", "--net=/run/netns/bs1a2b3c-c1", "--", "ethtool", "-K", "eth0", "tx", "off"]
    assert a.cost == "also turns off TSO/GSO for that interface"
    assert f.objects == (ObjectRef("bs1a2b3c-c1", "eth0", "veth"), ObjectRef("host", "c1-veth", "ovs-port"))
    assert "bs1a2b3c-c1:eth0 has tx-checksum-ip-generic on" in f.evidence and "netdev bridge br0" in f.evidence


def test_kb005_unknown_when_the_peer_features_are_missing() -> None:
    snap = fixture("KB-005", "fire-netdev-veth")
    nss = tuple(dataclasses.replace(ns, links=tuple(dataclasses.replace(link, features=None) for link in ns.links))
                if ns.id != HOST_NS else ns for ns in snap.namespaces)  # fmt: skip
    (f,) = [f for f in evaluate(dataclasses.replace(snap, namespaces=nss), rules=[RULES["KB-005"]]) if f.objects]
    assert f.outcome is Outcome.UNKNOWN and "could not be read" in f.reason


def test_kb005_unknown_when_the_peer_namespace_was_not_inspected() -> None:
    snap = fixture("KB-005", "fire-netdev-veth")
    snap = dataclasses.replace(snap, namespaces=tuple(ns for ns in snap.namespaces if ns.id == HOST_NS))
    (f,) = [f for f in evaluate(snap, rules=[RULES["KB-005"]]) if f.objects]
    assert f.outcome is Outcome.UNKNOWN and "not inspected" in f.reason


# -- MTU ---------------------------------------------------------------------------------------


def test_mtu_fix_and_evidence() -> None:
    (f,) = problems(evaluate(fixture("CFG-OVERLAY-MTU", "fire-vxlan-1500"), rules=[RULES["CFG-OVERLAY-MTU"]]))
    assert [a.argv() for a in f.fix] == [["ip", "link", "set", "dev", "vxlan0", "mtu", "1450"]]
    assert "1500 + 50 bytes of VXLAN over IPv4 = 1550 > host:eth0 MTU 1500" in f.evidence
    (g,) = problems(evaluate(fixture("CFG-OVERLAY-MTU", "fire-geneve-default-route"), rules=[RULES["CFG-OVERLAY-MTU"]]))
    assert "minimum" in g.evidence


def test_kb003_and_the_mtu_rule_do_not_report_the_same_tunnel() -> None:
    for name in ("fire-openstack-1450", "quiet-df-unset"):
        snap = fixture("KB-003", name)
        hits = {f.rule for f in problems(evaluate(snap))}
        assert len(hits & {"KB-003", "CFG-OVERLAY-MTU"}) == 1, (name, hits)


# -- counters ----------------------------------------------------------------------------------


def test_counter_finding_names_namespace_counter_and_delta() -> None:
    (f,) = problems(evaluate(fixture("CSUM-COUNTERS-RISING", "fire-pod-tcp"), rules=[RULES["CSUM-COUNTERS-RISING"]]))
    assert f.objects == (ObjectRef("pid:1234", "TcpInCsumErrors", "counter"),)
    assert f.evidence == "in namespace pid:1234 (nginx: master process): TcpInCsumErrors +4 (10 -> 14) in 1 s."
    assert f.facts["deltas"] == {"TcpInCsumErrors": 4}


def test_counters_unknown_when_not_read() -> None:
    snap = snapshot("6.12.10", host((nic(),), sample=counters()))
    snap = dataclasses.replace(snap, namespaces=(dataclasses.replace(snap.namespaces[0], counters=None),))
    outs = {f.rule: f.outcome for f in evaluate(snap, rules=[RULES["CSUM-COUNTERS-RISING"], RULES["CSUM-COUNTERS-PAST"]])}
    assert outs == {"CSUM-COUNTERS-RISING": Outcome.UNKNOWN, "CSUM-COUNTERS-PAST": Outcome.SKIP}


# -- the engine --------------------------------------------------------------------------------


def test_catalogue_is_complete_and_every_check_is_used_once() -> None:
    entries = load_entries()
    assert [e["id"] for e in entries] == list(RULES)
    assert sorted(e["check"] for e in entries) == sorted(C.CHECKS)
    assert {f"KB-{i:03d}" for i in range(1, 11)} <= set(RULES)
    for r in load_rules():
        assert r.runbook.meaning and r.runbook.impact and r.runbook.diagnosis and r.runbook.mitigation
        assert r.references and r.remediation and r.applies_to
        assert set(re.findall(r"\{(\w+)\}", r.evidence)), r.id


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace('check = "ufo_pmtu"', 'check = "nope"'), "no check named"),
    (lambda t: t.replace('severity = "medium"', 'severity = "urgent"', 1), "unknown severity"),
    (lambda t: t.replace('id = "KB-002"', 'id = "KB-001"'), "duplicate id"),
    (lambda t: t.replace("[rule.runbook]\nmeaning", "[rule.runbook]\nmeanin", 1), "runbook.meaning"),
])  # fmt: skip
def test_catalogue_validation(change, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        load_entries(change(catalogue_text()))


def test_catalogue_is_package_data() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert "rules/catalogue.toml" in tomllib.loads(text)["tool"]["setuptools"]["package-data"]["badsum"]


def test_a_check_that_raises_becomes_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(snap, rule):
        raise KeyError("boom")

    monkeypatch.setitem(C.CHECKS, "ufo_pmtu", broken)
    (f,) = [f for f in evaluate(fixture("KB-002", "fire-virtio-el7.0")) if f.rule == "KB-002"]
    assert f.outcome is Outcome.UNKNOWN and "KeyError" in f.reason


def test_sort_most_severe_first_then_outcome() -> None:
    def mk(rule: str, sev: Severity, out: Outcome) -> Finding:
        return Finding(rule, rule, sev, out, (), "", "")

    found = sort_findings([mk("A", Severity.LOW, Outcome.WARN), mk("B", Severity.HIGH, Outcome.PASS),
                           mk("C", Severity.HIGH, Outcome.FAIL), mk("D", Severity.CRITICAL, Outcome.SKIP),
                           mk("E", Severity.HIGH, Outcome.WARN)])  # fmt: skip
    assert [f.rule for f in found] == ["D", "C", "E", "B", "A"]


def test_namespace_scope() -> None:
    two = snapshot("4.19.100",
                   host((nic(), vxlan()), nat=KUBE_BEFORE),
                   netns("web", 4026532900, (vxlan("vx0", 3, lower=None),), nat=KUBE_BEFORE))  # fmt: skip
    ids, missing = resolve_namespaces(two, ["web", "nope"])
    assert ids == {"web"} and missing == ["nope"]
    scoped = problems(evaluate(two, namespaces={"web"}))
    assert scoped and all(any(o.ns == "web" for o in f.objects) for f in scoped)
    assert {o.ns for f in problems(evaluate(two)) for o in f.objects} == {"host", "web"}


def test_resolve_by_pid_id_and_name() -> None:
    snap = snapshot("6.1.110", host((nic(),)), netns("x", 1, (), pid=42), netns("named", 2, ()))
    assert resolve_namespaces(snap, ["pid:42", "named", "host"]) == ({"pid:42", "named", "host"}, [])


def test_veth_helper_links_both_ends() -> None:
    snap = snapshot("6.1.110", host((veth("a", 10, "n", 2, "b"),)), netns("n", 5, (veth("b", 2, "host", 10, "a"),)))
    ns, link = toolkit.veth_peer(snap, snap.ns("n").link("b"))
    assert (ns.id, link.name) == ("host", "a")


# -- the generated reference page --------------------------------------------------------------


def test_docs_rules_md_is_current() -> None:
    page = (REPO / "docs" / "rules.md").read_text()
    assert page == render(), "docs/rules.md is stale: python -m badsum.rules.reference > docs/rules.md"


def test_reference_lists_every_rule() -> None:
    page = render()
    for rid, rule in RULES.items():
        assert f"## {rid}\n" in page and rule.title in page
        assert all(ref.split("://")[-1] in page for ref in rule.references)


def test_notes_group_namespace_errors() -> None:
    from badsum.rules.engine import notes

    gone = "not root: cannot enter this namespace"
    snap = snapshot("6.1.110", host((nic(),)), *(netns(f"p{i}", i + 10, ()) for i in range(8)))
    snap = dataclasses.replace(snap, root=False, errors=("not root: other namespaces cannot be entered",),
                               namespaces=(snap.namespaces[0], *(dataclasses.replace(ns, errors=(gone,)) for ns in snap.namespaces[1:])))  # fmt: skip
    assert notes(snap) == [
        ("doctor.not_root", "not root: other namespaces cannot be entered; run `sudo badsum doctor`"),
        ("namespace.error", f"namespaces p0, p1, p2, p3, p4 and 3 more: {gone}"),
    ]


# -- known-issues-2 (KB-011..KB-020): unknown facts give unknown or skip, never a false fail ------


@pytest.mark.parametrize(("release", "rule", "has"), [
    ("5.3.18", "KB-011", False),
    ("4.9.213", "KB-011", True),
    ("4.9.212", "KB-011", False),
    ("5.4.10", "KB-011", None),  # the 5.4 backport's release is not known
    ("6.8.4", "KB-013", False),
    ("6.8.5", "KB-013", True),
    ("6.6.20", "KB-013", None),
    ("6.1.0-18-amd64", "KB-013", None),  # Debian: series 6.1 has an unplaced backport
    ("6.12.20", "KB-015", None),
    ("6.11.5", "KB-015", False),
    ("5.8.18", "KB-016", False),
    ("4.18.0-240.el8.x86_64", "KB-016", None),
    ("4.19.100", "KB-017", False),
])  # fmt: skip
def test_kernel_has_second_wave(release: str, rule: str, has: bool | None) -> None:
    got, how = C.kernel_has(kernel(release), C.KERNEL_FIXES[rule])
    assert got is has, how
    assert release in how and C.KERNEL_FIXES[rule].commit in how


def test_nft_nat6_rules_read_only_ip6_and_inet_tables() -> None:
    from badsum.rules.ipv6nat import ip6tables_nat_rules, nft_nat6_rules

    ruleset = "\n".join([
        "table ip nat {", "\tchain POSTROUTING {", "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        "\t\toifname \"eth0\" masquerade", "\t}", "}",
        "table ip6 nat {", "\tchain POSTROUTING {", "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        "\t\tip6 saddr { 2001:db8::/64, 2001:db8:1::/64 } masquerade", "\t}", "}",
        "table inet filter {", "\tchain input {", "\t\ttype filter hook input priority filter; policy accept;",
        "\t\tct state established accept", "\t}", "}",
        "table inet lb {", "\tchain pre {", "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tip6 daddr 2001:db8::10 tcp dport 80 dnat ip6 to [2001:db8::20]:8080", "\t}", "}",
    ])  # fmt: skip
    got = nft_nat6_rules(ruleset)
    assert [g.split(":", 1)[0] for g in got] == ["ip6 nat/POSTROUTING", "inet lb/pre"]
    assert nft_nat6_rules(None) == [] and nft_nat6_rules("table ip6 x {\n garbage {{{\n") == []
    assert ip6tables_nat_rules(("*nat", "-A POSTROUTING -s 2001:db8::/64 -j MASQUERADE", "-A DOCKER -j RETURN",
                                "-A X -j", "COMMIT")) == ["POSTROUTING: -s 2001:db8::/64 -j MASQUERADE"]  # fmt: skip


def _only(snap: HostSnapshot, rule: str) -> list[Finding]:
    return evaluate(snap, rules=[RULES[rule]])


def _without(snap: HostSnapshot, **changes: object) -> HostSnapshot:
    """Every namespace's links with `changes` (features=None: ethtool could not read them)."""
    return dataclasses.replace(snap, namespaces=tuple(
        dataclasses.replace(ns, links=tuple(dataclasses.replace(x, **changes) for x in ns.links)) for ns in snap.namespaces))


def test_kb011_nothing_read_is_unknown_not_a_finding() -> None:
    snap = fixture("KB-011", "fire-docker-ipv6-udp6-errors")
    old = dataclasses.replace(snap, namespaces=tuple(dataclasses.replace(ns, nat=None) for ns in snap.namespaces))
    (f,) = _only(old, "KB-011")
    assert f.outcome is Outcome.UNKNOWN and "were read" in f.reason


def test_kb012_unread_kernel_log_is_unknown() -> None:
    snap = dataclasses.replace(fixture("KB-012", "fire-ipv6-hw-csum-failure"), kernel_log=None)
    (f,) = _only(snap, "KB-012")
    assert f.outcome is Outcome.UNKNOWN and "kernel log was not read" in f.reason


def test_kb013_and_kb015_unreadable_features_are_unknown() -> None:
    for rule, name in (("KB-013", "fire-kind-veth-6.8.4"), ("KB-015", "fire-6.11-lro-on")):
        found = _only(_without(fixture(rule, name), features=None), rule)
        assert not problems(found) and any(f.outcome is Outcome.UNKNOWN and "could not be read" in f.reason for f in found)


def test_kb016_geneve_checksum_not_reported_is_unknown() -> None:
    from badsum.host.model import GeneveInfo, Link

    def gnv(info: GeneveInfo | None) -> HostSnapshot:
        return snapshot("5.8.18", host((nic(), Link(6, "gnv0", "geneve", 1450, "unknown", driver="geneve", geneve=info))))

    cases = {None: Outcome.UNKNOWN, GeneveInfo(7, 6081, "198.51.100.2", None): Outcome.UNKNOWN,
             GeneveInfo(7, 6081, "198.51.100.2", True): Outcome.PASS, GeneveInfo(7, 6081, "198.51.100.2", False): Outcome.WARN,
             GeneveInfo(7, 6081, "2001:db8::2", False): Outcome.PASS}  # fmt: skip
    for info, outcome in cases.items():
        (f,) = _only(gnv(info), "KB-016")
        assert f.outcome is outcome, (info, f.reason)


def test_kb017_ovs_vport_without_member_ports_is_not_compared() -> None:
    (f,) = _only(fixture("CFG-OVERLAY-MTU", "quiet-ovs-vport"), "KB-017")
    assert f.outcome is Outcome.SKIP
    old = dataclasses.replace(fixture("CFG-OVERLAY-MTU", "quiet-ovs-vport"), kernel=kernel("4.19.100"))
    assert not problems(_only(old, "KB-017"))


def test_kb020_unmark_as_iptables_nft_compat_shows_it_and_unread_nat_is_unknown() -> None:
    from badsum.rules.cnipaths import _output_unmark

    compat = 'table ip filter {\n\tchain OUTPUT {\n\t\tmeta l4proto udp udp dport 6081 counter xt target "MARK"\n\t}\n}\n'
    assert _output_unmark(compat, 6081) is True and _output_unmark(compat, 4789) is False
    assert _output_unmark(None, 6081) is None
    snap = fixture("KB-020", "fire-kube-ovn-ubuntu-5.4")
    snap = dataclasses.replace(snap, namespaces=tuple(dataclasses.replace(ns, nat=None) for ns in snap.namespaces))
    (f,) = _only(snap, "KB-020")
    assert f.outcome is Outcome.UNKNOWN and "could not be read" in f.reason


def test_kb014_has_no_fix_command_and_names_the_tun_device() -> None:
    (f,) = problems(_only(fixture("KB-014", "fire-bound-by-address"), "KB-014"))
    assert f.fix == () and "Tailscale" in f.evidence and "tailscale0" in f.evidence


def test_second_wave_is_quiet_on_this_hosts_kernel() -> None:
    """The live doctor test runs on 6.18 with default veths: none of KB-011..KB-020 may fire there."""
    wave2 = [RULES[f"KB-{i:03d}"] for i in range(11, 21)]
    snap = HostSnapshot.from_json((FIXTURES / "clean-host.json").read_text())
    for release in ("6.18.44-fc-v1272", "6.12.10"):
        assert problems(evaluate(dataclasses.replace(snap, kernel=kernel(release)), rules=wave2)) == []
    # Every second-wave fire fixture moved to 6.18 (all fixes in) is quiet, except KB-018 (Antrea L7 does
    # not depend on the kernel); KB-019 only warns on el8 kernels.
    for rule in wave2:
        for p in sorted((FIXTURES / rule.id).glob("fire-*.json")):
            if p.name.endswith(".expect.json"):
                continue
            moved = dataclasses.replace(HostSnapshot.from_json(p.read_text()), kernel=kernel("6.18.44-fc-v1272"))
            found = problems(evaluate(moved, rules=[rule]))
            assert (rule.id == "KB-018") == bool(found), (p.name, [f.reason for f in found])


@pytest.mark.parametrize(("release", "outcome"), [
    ("5.8.18", Outcome.WARN),  # 5.8.y never took 89e5c58fc1e2
    ("4.18.0-240.el8.x86_64", Outcome.WARN),  # RHEL 8.3: reported without it (cilium#15485)
    ("4.18.0-305.el8.x86_64", Outcome.UNKNOWN),  # a later el8 build: not known either way
    ("5.4.0-26-generic", Outcome.UNKNOWN),  # a 5.4 build whose stable release is not in its name
    ("5.10.30", Outcome.UNKNOWN),  # 5.10.y took it in April 2021 at a release not verified here
])  # fmt: skip
def test_kb016_warns_only_on_kernels_known_without_the_fix(release: str, outcome: Outcome) -> None:
    (f,) = _only(snapshot(release, host((nic(), vxlan()))), "KB-016")
    assert f.outcome is outcome, f.reason
