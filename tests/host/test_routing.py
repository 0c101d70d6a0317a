"""Routes of every table and policy rules: the parsers on `ip -j` output recorded from this machine's
own namespaces (tests/data/ip/README.md says how), hostile input, and the collector's bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from badsum.host import collect as collect_mod
from badsum.host import links
from badsum.host.commands import Output
from badsum.host.model import NsRef, PolicyRule, Route

DATA = Path(__file__).resolve().parents[1] / "data" / "ip"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def test_every_table_v4_keeps_main_policy_tables_and_typed_routes_and_drops_address_routes() -> None:
    routes = links.parse_routes(recorded("routes-table-all-4.json"))
    main = [(r.dst, r.dev, r.via, r.mtu) for r in routes if r.table == "main"]
    assert main == [("default", "eth0", "198.51.100.254", None), ("198.51.100.0/24", "eth0", None, None),
                    ("203.0.113.0/25", "eth0", "198.51.100.2", 1400)]  # fmt: skip
    others = [(r.dst, r.dev, r.via, r.mtu, r.table, r.type) for r in routes if r.table != "main"]
    assert ("default", "eth0", "198.51.100.3", 1410, "100", None) in others
    assert ("203.0.113.128/25", None, None, None, "100", "blackhole") in others
    assert ("default", "lo", None, None, "2004", "local") in others  # Cilium's proxy table: kept, typed
    assert not [r for r in routes if r.table == "local"]  # the local table: address routes only
    raw = json.loads(recorded("routes-table-all-4.json"))
    assert any(r.get("table") == "local" and r.get("type") == "broadcast" for r in raw)  # were there to drop


def test_every_table_v6() -> None:
    routes = links.parse_routes(recorded("routes-table-all-6.json"))
    assert Route("2001:db8:2::/64", "eth0", "2001:db8:1::2", None, "200") in routes
    assert Route("default", "eth0", "2001:db8:1::fe", None, "main") in routes
    assert not [r for r in routes if r.dst.startswith("ff00::") or r.table == "local"]


def test_policy_rules_v4() -> None:
    rules = links.parse_rules(recorded("rules-4.json"), 4)
    by = {r.priority: r for r in rules}
    assert [r.priority for r in rules] == sorted(by)
    assert by[0] == PolicyRule(0, 4, table="local")
    assert by[9] == PolicyRule(9, 4, table="2004", fwmark="0x200/0xf00")
    assert by[100] == PolicyRule(100, 4, table="100", fwmark="0x4000")
    assert by[110] == PolicyRule(110, 4, table="main", src="198.51.100.0/24", iif="eth0", invert=True)
    assert by[120] == PolicyRule(120, 4, table="main", suppress_prefixlen=0)
    assert by[130].dst == "203.0.113.0/24" and by[130].table == "100" and {"ipproto=udp", "dport=4789"} <= set(by[130].other)
    assert by[140].action == "goto" and by[140].table is None and by[140].other == ("goto=32766",)
    assert by[150].action == "blackhole" and by[150].src == "192.0.2.0/24" and by[150].table is None
    assert (by[32766].table, by[32767].table) == ("main", "default")


def test_policy_rules_v6() -> None:
    rules = links.parse_rules(recorded("rules-6.json"), 6)
    by = {r.priority: r for r in rules}
    assert by[200] == PolicyRule(200, 6, table="200", src="2001:db8:1::/64")
    assert by[210] == PolicyRule(210, 6, table="200", fwmark="0x10000/0x10000", oif="eth0")
    assert {r.family for r in rules} == {6}


@pytest.mark.parametrize("bad", ["{", "{}", '"x"', "12"])
def test_not_a_json_list_is_a_parse_error(bad: str) -> None:
    with pytest.raises(links.ParseError):
        links.parse_rules(bad, 4)
    with pytest.raises(links.ParseError):
        links.parse_routes(bad)


def test_odd_entries_are_skipped_or_kept_as_words_never_raise() -> None:
    text = json.dumps([1, None, {"table": "main"}, {"priority": "9"},
                       {"priority": 5, "src": "all", "table": 7, "fwmark": 16, "fwmask": 255, "l3mdev": None,
                        "uidrange": {"start": 1, "end": 2}, "flags": ["x"]}])  # fmt: skip
    (r,) = links.parse_rules(text, 4)
    assert r == PolicyRule(5, 4, table="7", fwmark="16/255", other=("l3mdev", 'uidrange={"end": 2, "start": 1}'))
    assert links.parse_routes(json.dumps([{"dst": "default", "table": 100}, {"dst": 5}, "x"])) == [
        Route("default", table="100")]


def test_the_collector_keeps_the_main_table_first_and_says_when_it_cuts(monkeypatch: pytest.MonkeyPatch) -> None:
    main = [{"dst": f"10.{i // 256}.{i % 256}.0/24", "dev": "eth0"} for i in range(30)]
    other = [{"dst": f"10.9.{i}.0/24", "dev": "eth0", "table": "100"} for i in range(30)]
    rules = [{"priority": i, "src": "all", "table": "main"} for i in range(30)]
    answers = {"route": json.dumps(other + main), "rule": json.dumps(rules)}

    def fake_run(argv: list[str], target: object = None, timeout: float = 5.0) -> Output:
        return Output(answers["route" if "route" in argv else "rule"] if "-6" not in argv else "[]")

    monkeypatch.setattr(collect_mod.commands, "run", fake_run)
    monkeypatch.setattr(collect_mod, "MAX_ROUTES", 40)
    monkeypatch.setattr(collect_mod, "MAX_RULES", 25)
    f = collect_mod._Facts(NsRef("n", 1, "/run/netns/n"), enterable=True)
    collect_mod._read_routes(f)
    collect_mod._read_rules(f)
    assert [r.dst for r in f.routes] == [m["dst"] for m in main]  # all 30 main routes, listed after the others
    assert [r.dst for r in f.table_routes] == [o["dst"] for o in other[:10]]
    assert len(f.rules) == 25
    assert f.errors == ["routes cut: 40 of 60 kept (the main table first); the rest are not in the snapshot",
                        "policy rules cut: 25 of 30 kept; the rest are not in the snapshot"]  # fmt: skip


def test_unreadable_routes_or_rules_are_error_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect_mod.commands, "run", lambda argv, target=None, timeout=5.0: Output(None, "exit 1: boom"))
    f = collect_mod._Facts(NsRef("n", 1, "/run/netns/n"), enterable=True)
    collect_mod._read_routes(f)
    collect_mod._read_rules(f)
    assert f.routes is None and f.rules == []
    assert f.errors == ["routes unknown: exit 1: boom", "policy rules unknown (IPv4): exit 1: boom",
                        "policy rules unknown (IPv6): exit 1: boom"]  # fmt: skip
