"""The meta-test: every rule has fixtures where it fires and where it stays quiet, and they hold.

Fixtures are recorded snapshots (tests/rules/fixtures/<RULE-ID>/fire-*.json, quiet-*.json) with
the expected outcome, objects and fix commands beside each fire fixture (fire-*.expect.json).
They were written by make_fixtures.py and are read here as data, as `doctor --from` reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from badsum.host.model import HostSnapshot
from badsum.rules import evaluate, load_rules, problems
from badsum.rules.model import Outcome

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RULES = {r.id: r for r in load_rules()}


def snapshots(kind: str) -> list[tuple[str, Path]]:
    return [(d.name, p) for d in sorted(FIXTURES.iterdir()) if d.is_dir()
            for p in sorted(d.glob(f"{kind}-*.json")) if not p.name.endswith(".expect.json")]  # fmt: skip


FIRE = snapshots("fire")
QUIET = snapshots("quiet")


def load(path: Path) -> HostSnapshot:
    return HostSnapshot.from_json(path.read_text())


def test_every_rule_has_fire_and_quiet_fixtures() -> None:
    fire = {rid for rid, _ in FIRE}
    quiet = {rid for rid, _ in QUIET}
    lacking = [f"{rid}: no {kind} fixture" for rid in RULES for kind, have in (("fire", fire), ("quiet", quiet)) if rid not in have]
    assert not lacking, "\n".join(lacking)


def test_every_fixture_belongs_to_a_rule_and_is_named_fire_or_quiet() -> None:
    strays = [d.name for d in FIXTURES.iterdir() if d.is_dir() and d.name not in RULES]
    assert not strays, f"fixture folders without a rule: {strays}"
    for d in (d for d in FIXTURES.iterdir() if d.is_dir()):
        for p in d.glob("*.json"):
            assert p.name.startswith(("fire-", "quiet-")), p
            if p.name.startswith("fire-") and not p.name.endswith(".expect.json"):
                assert p.with_name(p.stem + ".expect.json").exists(), f"{p} has no .expect.json"
            if p.name.endswith(".expect.json"):
                assert p.with_name(p.name.replace(".expect.json", ".json")).exists(), f"{p}: no snapshot beside it"


@pytest.mark.parametrize(("rule_id", "path"), FIRE, ids=[f"{r}/{p.name}" for r, p in FIRE])
def test_fire_fixture_fires_naming_the_objects(rule_id: str, path: Path) -> None:
    expect = json.loads(path.with_name(path.stem + ".expect.json").read_text())
    found = problems(evaluate(load(path), rules=[RULES[rule_id]]))
    assert found, f"{rule_id} did not fire on {path.name}"
    want = sorted((o["namespace"], o["name"]) for o in expect["objects"])
    got = [(f.outcome.value, sorted((o.ns, o.name) for o in f.objects), [a.command() for a in f.fix]) for f in found]
    match = [g for g in got if g[0] == expect["outcome"] and g[1] == want]
    assert match, f"expected {expect['outcome']} on {want}, got {got}"
    if "fix" in expect:
        assert match[0][2] == expect["fix"]
    for f in found:
        assert f.evidence and "?>" not in f.evidence, f"unfilled evidence template: {f.evidence}"
        assert f.reason and f.references


@pytest.mark.parametrize(("rule_id", "path"), QUIET, ids=[f"{r}/{p.name}" for r, p in QUIET])
def test_quiet_fixture_stays_quiet(rule_id: str, path: Path) -> None:
    found = problems(evaluate(load(path), rules=[RULES[rule_id]]))
    assert not found, [(f.outcome.value, f.evidence) for f in found]


@pytest.mark.parametrize(("rule_id", "path"), FIRE + QUIET, ids=[f"{r}/{p.name}" for r, p in FIRE + QUIET])
def test_every_rule_evaluates_every_fixture(rule_id: str, path: Path) -> None:
    """No check breaks on any fixture (a crash would surface as unknown 'could not evaluate')."""
    snap = load(path)
    for f in evaluate(snap):
        assert "could not evaluate" not in f.reason, f
        assert f.outcome in Outcome and f.reason


def test_fixtures_round_trip_through_json() -> None:
    for _, path in FIRE + QUIET:
        text = path.read_text()
        assert json.loads(load(path).to_json()) == json.loads(text), path


def test_clean_host_has_nothing_to_report() -> None:
    """A fresh, healthy node (modern kernel, flannel, kube-proxy's unmark rules): no false finding."""
    found = problems(evaluate(load(FIXTURES / "clean-host.json")))
    assert found == [], [(f.rule, f.evidence) for f in found]
