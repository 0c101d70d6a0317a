"""The metric families from recorded snapshots (tests/rules/fixtures), parsed back with prometheus_client.

Oracles: the fixture files read as plain JSON (not through badsum's model), the rule fixtures'
`.expect.json` outcomes, and the metric table of docs/cli.md (the contract with deploy/).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from exporterkit import (
    FIXTURES,
    Clock,
    FakeDrops,
    collected,
    exporter_over,
    fixture_paths,
    load,
    raw,
    scrape,
    types,
    values,
    with_namespaces,
    without,
)
from support import REPO

from badsum.exporter.server import exposition
from badsum.host.drops import Drop

#: nstat name -> protocol label, as the contract (docs/cli.md) spells it.
PROTOCOL = {"TcpInCsumErrors": "tcp", "UdpInCsumErrors": "udp", "IcmpInCsumErrors": "icmp", "IpExtInCsumErrors": "ip",
            "Udp6InCsumErrors": "udp6", "Icmp6InCsumErrors": "icmp6", "UdpLiteInCsumErrors": "udplite",
            "UdpLite6InCsumErrors": "udplite6"}  # fmt: skip
PATHS = fixture_paths()
CLEAN = FIXTURES / "clean-host.json"


def test_there_are_fixtures() -> None:
    assert len(PATHS) >= 40


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_checksum_counters_are_the_snapshots_absolute_values(path: Path) -> None:
    doc = raw(path)
    m = scrape(collected([load(path)]))
    samples = m["badsum_checksum_errors"]
    want = {(ns["id"], str(ns["inode"]), PROTOCOL[k]): v for ns in doc["namespaces"] if ns["counters"]
            for k, v in ns["counters"]["second"].items()}  # fmt: skip
    got = {(lb["netns"], lb["netns_inode"], lb["protocol"]): v for name, lb, v in samples}
    assert got == want
    assert {name for name, _, _ in samples} == {"badsum_checksum_errors_total"}
    assert values(m["badsum_namespaces"]) == [len(doc["namespaces"])]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_findings_follow_the_rule_fixtures(path: Path) -> None:
    m = scrape(collected([load(path)]))
    rule = path.parent.name
    findings = m["badsum_findings"]
    assert all(lb["severity"] in ("fail", "warn") and v >= 1 for _, lb, v in findings)  # first collection: no zeros yet
    expect = path.with_name(path.stem + ".expect.json")
    if path.name.startswith("fire-"):
        outcome = json.loads(expect.read_text())["outcome"]
        got = values(findings, rule=rule, severity=outcome)
        assert len(got) == 1 and got[0] >= 1
    elif path.name.startswith("quiet-"):
        assert values(findings, rule=rule) == []


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_veth_mtu_and_offloads_are_the_links_own(path: Path) -> None:
    doc = raw(path)
    m = scrape(collected([load(path)]))
    for ns in doc["namespaces"]:
        for link in ns["links"]:
            got_mtu = values(m["badsum_interface_mtu_bytes"], netns=ns["id"], interface=link["name"])
            if link["kind"] == "veth":
                assert got_mtu == [link["mtu"]]
                assert values(m["badsum_interface_mtu_bytes"], netns=ns["id"], interface=link["name"], role="container")
            if link["kind"] in ("loopback",):
                assert got_mtu == []
            feats = link["features"] or {}
            offload = m["badsum_interface_offload_enabled"]
            if link["kind"] in ("veth", "bridge", "vxlan", "geneve") and "tx-checksum-ip-generic" in feats:
                want = 1.0 if feats["tx-checksum-ip-generic"]["active"] else 0.0
                assert values(offload, netns=ns["id"], interface=link["name"], feature="tx-checksum-ip-generic") == [want]
            if link["kind"] in ("veth", "bridge", "vxlan", "geneve") and "rx-checksumming" in feats:
                want = 1.0 if feats["rx-checksumming"]["active"] else 0.0
                assert values(offload, netns=ns["id"], interface=link["name"], feature="rx-checksum") == [want]
            if link["kind"] in ("loopback", "device"):
                assert values(offload, netns=ns["id"], interface=link["name"]) == []


def test_overlay_and_underlay_roles() -> None:
    path = FIXTURES / "CFG-OVERLAY-MTU" / "fire-vxlan-1500.json"
    doc = raw(path)
    m = scrape(collected([load(path)]))
    vx = [lk for ns in doc["namespaces"] for lk in ns["links"] if lk["kind"] == "vxlan"]
    assert vx
    for lk in vx:
        assert values(m["badsum_interface_mtu_bytes"], interface=lk["name"], role="overlay") == [lk["mtu"]]
        lower = (lk["vxlan"] or {}).get("lower")
        if lower:
            want = next(x["mtu"] for ns in doc["namespaces"] for x in ns["links"] if x["name"] == lower)
            assert values(m["badsum_interface_mtu_bytes"], interface=lower, role="underlay") == [want]
    assert {lb["role"] for _, lb, _ in m["badsum_interface_mtu_bytes"]} >= {"overlay", "underlay"}


# -- the contract: docs/cli.md's table ---------------------------------------------------------


def contract() -> dict[str, tuple[str, set[str]]]:
    text = (REPO / "docs" / "cli.md").read_text()
    section = text.split("## `badsum exporter`", 1)[1].split("### Metrics", 1)[1].split("### Examples", 1)[0]
    rows = re.findall(r"^\| `(badsum_\w+)` \|\s*(\w+)\s*\|([^|]*)\|", section, re.MULTILINE)
    return {name: (kind, {x.strip() for x in labels.split(",") if x.strip()}) for name, kind, labels in rows}


def test_every_family_is_in_the_documented_contract_with_its_labels() -> None:
    table = contract()
    assert len(table) == 12
    ex = exporter_over([load(FIXTURES / "KB-005" / "fire-netdev-veth.json")], drops=FakeDrops(
        [[Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", None, 3)]]), canary_file=str(REPO / "nonexistent"))  # fmt: skip
    ex.collect_once()
    text = exposition(ex)
    kinds = types(text)
    # prometheus_client names a counter's family without _total.
    for name, (kind, labels) in table.items():
        fam = name[: -len("_total")] if kind == "counter" else name
        if name.startswith("badsum_canary"):
            continue  # only with a canary result: test_canary_families
        assert kinds.get(fam) == kind, name
        m = scrape(ex)
        for _, lb, _ in m[fam]:
            assert set(lb) == labels, (name, set(lb))
    assert not set(kinds) - {n[: -len("_total")] if k == "counter" else n for n, (k, _) in table.items()}


# -- bounds ------------------------------------------------------------------------------------


def test_max_namespaces_bounds_the_series_and_counts_a_limit_error() -> None:
    snap = with_namespaces(load(CLEAN), 50)
    ex = exporter_over([snap], max_namespaces=10)
    ex.collect_once()
    m = scrape(ex)
    netns = {lb["netns"] for fam in ("badsum_checksum_errors", "badsum_interface_mtu_bytes", "badsum_interface_offload_enabled")
             for _, lb, _ in m[fam]}  # fmt: skip
    assert len(netns) == 10 and "host" in netns
    assert values(m["badsum_namespaces"]) == [51]
    assert values(m["badsum_collection_errors"], stage="limit") == [1]
    ex.collect_once()
    assert values(scrape(ex)["badsum_collection_errors"], stage="limit") == [2]  # counted per collection


def test_max_series_truncates_a_family() -> None:
    snap = with_namespaces(load(CLEAN), 20)
    ex = exporter_over([snap], max_series=25)
    ex.collect_once()
    m = scrape(ex)
    assert len(m["badsum_checksum_errors"]) == 25
    assert len(m["badsum_interface_offload_enabled"]) <= 25
    assert values(m["badsum_collection_errors"], stage="limit")[0] >= 1


def test_unbounded_when_under_the_caps() -> None:
    snap = with_namespaces(load(CLEAN), 20)
    ex = exporter_over([snap])
    ex.collect_once()
    m = scrape(ex)
    assert len({lb["netns"] for _, lb, _ in m["badsum_checksum_errors"]}) == 21
    assert values(m["badsum_collection_errors"], stage="limit") == [0]


# -- collections over time ---------------------------------------------------------------------


def test_a_namespace_that_vanishes_loses_its_series_and_its_drops() -> None:
    first = with_namespaces(load(CLEAN), 3, tcp_errors=5)
    gone = next(ns for ns in first.namespaces if ns.id == "bs0000aa-n001")
    drops = FakeDrops([[Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", gone.inode, 4), Drop("NO_SOCKET", 0x0800, "tcp_v4_rcv", None, 2)],
                       [Drop("NO_SOCKET", 0x0800, "tcp_v4_rcv", None, 1)]])  # fmt: skip
    ex = exporter_over([first, without(first, gone.id)], drops=drops)
    ex.collect_once()
    m = scrape(ex)
    assert values(m["badsum_checksum_errors"], netns=gone.id, protocol="tcp") == [6]
    assert values(m["badsum_drops"], reason="TCP_CSUM", netns=gone.id, protocol="IPv4") == [4]
    ex.collect_once()
    m = scrape(ex)
    text = exposition(ex)
    assert gone.id not in text and str(gone.inode) not in text
    assert values(m["badsum_checksum_errors"], netns="bs0000aa-n000", protocol="tcp") == [5]
    assert values(m["badsum_drops"], reason="NO_SOCKET", netns="") == [3]  # accumulated: 2 + 1
    assert values(m["badsum_namespaces"]) == [3]


def test_drops_accumulate_monotonically() -> None:
    batches = [[Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", None, n)] for n in (3, 0, 5, 1)]
    ex = exporter_over([load(CLEAN)], drops=FakeDrops([[d for d in b if d.count] for b in batches]))
    seen = []
    for _ in batches:
        ex.collect_once()
        seen += values(scrape(ex)["badsum_drops"], reason="TCP_CSUM", location="tcp_v4_rcv")
    assert seen == [3, 3, 8, 9]


def test_a_finding_seen_and_cleared_stays_at_zero() -> None:
    fire = load(FIXTURES / "KB-005" / "fire-netdev-veth.json")
    quiet = load(FIXTURES / "KB-005" / "quiet-peer-tx-off.json")
    ex = exporter_over([fire, quiet])
    ex.collect_once()
    assert values(scrape(ex)["badsum_findings"], rule="KB-005", severity="fail") == [1]
    ex.collect_once()
    assert values(scrape(ex)["badsum_findings"], rule="KB-005", severity="fail") == [0]


def test_a_failing_snapshot_keeps_the_previous_set_and_counts_an_error() -> None:
    good = load(CLEAN)
    calls = []

    def snap(_now: float):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return good

    from badsum.exporter.collector import Exporter, Options

    clock = Clock()
    ex = Exporter(Options(), snapshot=snap, clock=clock)
    ex.collect_once()
    stamp = ex.latest.finished_at
    before = scrape(ex)["badsum_checksum_errors"]
    clock.now += 30
    ex.collect_once()
    m = scrape(ex)
    assert values(m["badsum_collection_errors"], stage="snapshot") == [1]
    assert values(m["badsum_last_collection_timestamp_seconds"]) == [stamp]  # not advanced: staleness shows
    assert m["badsum_checksum_errors"] == before and before


def test_counters_unknown_in_a_namespace_is_a_counters_error_but_a_vanished_one_is_not() -> None:
    from dataclasses import replace

    base = with_namespaces(load(CLEAN), 2)
    a, b = (ns for ns in base.namespaces if ns.id.startswith("bs0000aa"))
    snap = replace(base, namespaces=(base.namespaces[0], replace(a, counters=None, errors=("nstat: not installed",)),
                                     replace(b, counters=None, errors=("namespace bs vanished (gone)",))))  # fmt: skip
    ex = exporter_over([snap])
    ex.collect_once()
    m = scrape(ex)
    assert values(m["badsum_collection_errors"], stage="counters") == [1]
    assert values(m["badsum_checksum_errors"], netns=a.id) == []


def test_a_checksum_drop_is_attributed_to_the_one_namespace_whose_counter_moved() -> None:
    from dataclasses import replace

    from badsum.host.model import CounterSample

    first = with_namespaces(load(CLEAN), 3, tcp_errors=5)
    moved = next(ns for ns in first.namespaces if ns.id == "bs0000aa-n002")
    bumped = {**moved.counters.second, "TcpInCsumErrors": moved.counters.second["TcpInCsumErrors"] + 2}
    second = replace(first, namespaces=tuple(replace(ns, counters=CounterSample(bumped, bumped, 0.2)) if ns.id == moved.id else ns
                                             for ns in first.namespaces))  # fmt: skip
    both = replace(second, namespaces=tuple(replace(ns, counters=CounterSample(bumped, bumped, 0.2)) if ns.id == "bs0000aa-n000"
                                            else ns for ns in second.namespaces))  # fmt: skip
    tcp = [Drop("TCP_CSUM", 0x0800, "tcp_v4_rcv", None, 2)]
    other = [Drop("NO_SOCKET", 0x0800, "tcp_v4_rcv", None, 1)]
    ex = exporter_over([first, second, second, both], drops=FakeDrops([tcp, tcp + other, tcp, tcp]))
    ex.collect_once()  # no previous snapshot: nothing to join with
    ex.collect_once()  # only n002's TcpInCsumErrors moved
    m = scrape(ex)
    assert values(m["badsum_drops"], reason="TCP_CSUM", netns="") == [2]
    assert values(m["badsum_drops"], reason="TCP_CSUM", netns=moved.id) == [2]
    assert values(m["badsum_drops"], reason="NO_SOCKET", netns="") == [1]  # no counter to join it with
    ex.collect_once()  # nothing moved
    ex.collect_once()  # n000 moved too now, n002 did not: n000 alone
    m = scrape(ex)
    assert values(m["badsum_drops"], reason="TCP_CSUM", netns="") == [4]
    assert values(m["badsum_drops"], reason="TCP_CSUM", netns="bs0000aa-n000") == [2]
