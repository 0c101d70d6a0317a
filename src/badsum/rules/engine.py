"""Load the catalogue and evaluate it over a host snapshot: findings sorted most severe first.

Pure: the catalogue is package data (read through importlib.resources), the snapshot is passed in.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from typing import Any

from badsum.host.model import HostSnapshot
from badsum.rules.checks import CHECKS
from badsum.rules.model import Finding, ObjectRef, Outcome, Rule, Runbook, Severity

REQUIRED = ("id", "title", "severity", "applies_to", "check", "condition", "evidence", "remediation", "references", "runbook")
RUNBOOK = ("meaning", "impact", "diagnosis", "mitigation")
#: Findings with these outcomes are problems: they make `doctor` exit 1.
PROBLEMS = (Outcome.FAIL, Outcome.WARN)
OUTCOME_ORDER = {Outcome.FAIL: 0, Outcome.WARN: 1, Outcome.UNKNOWN: 2, Outcome.PASS: 3, Outcome.SKIP: 4}


class CatalogueError(ValueError):
    """The catalogue is malformed (a bug in badsum, caught by the tests)."""


def catalogue_text() -> str:
    return resources.files("badsum.rules").joinpath("catalogue.toml").read_text(encoding="utf-8")


def load_entries(text: str | None = None) -> list[dict[str, Any]]:
    """The raw [[rule]] tables, validated: required keys, known severity and check, unique ids."""
    raw = tomllib.loads(catalogue_text() if text is None else text)
    entries = raw.get("rule", [])
    seen: set[str] = set()
    for entry in entries:
        rid = entry.get("id", "?")
        missing = [k for k in REQUIRED if k not in entry] + [f"runbook.{k}" for k in RUNBOOK if k not in entry.get("runbook", {})]
        if missing:
            raise CatalogueError(f"rule {rid}: missing {', '.join(missing)}")
        if rid in seen:
            raise CatalogueError(f"rule {rid}: duplicate id")
        seen.add(rid)
        if entry["severity"].upper() not in Severity.__members__:
            raise CatalogueError(f"rule {rid}: unknown severity {entry['severity']!r}")
        if entry["check"] not in CHECKS:
            raise CatalogueError(f"rule {rid}: no check named {entry['check']!r} in badsum.rules.checks")
    return entries


def _rule(entry: dict[str, Any]) -> Rule:
    rb = entry["runbook"]
    return Rule(
        id=entry["id"],
        title=entry["title"],
        severity=Severity[entry["severity"].upper()],
        applies_to=entry["applies_to"],
        check=entry["check"],
        evidence=entry["evidence"],
        remediation=entry["remediation"],
        references=tuple(entry["references"]),
        runbook=Runbook(*(" ".join(rb[k].split()) for k in RUNBOOK)),
    )


def load_rules(text: str | None = None) -> tuple[Rule, ...]:
    """Every rule of the catalogue, in catalogue order."""
    return tuple(_rule(e) for e in load_entries(text))


def sort_key(f: Finding) -> tuple[int, int, str, str]:
    return (-int(f.severity), OUTCOME_ORDER[f.outcome], f.rule, ",".join(map(str, f.objects)))


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first; within a severity fail, warn, unknown, pass, skip; then by rule and object."""
    return sorted(findings, key=sort_key)


def resolve_namespaces(snapshot: HostSnapshot, wanted: Iterable[str]) -> tuple[set[str], list[str]]:
    """Namespace ids for the names given (an id, or any name the namespace has), and those not found."""
    ids: set[str] = set()
    missing = []
    for name in wanted:
        hits = [ns.id for ns in snapshot.namespaces if ns.id == name or name in ns.names]
        if hits:
            ids.update(hits)
        else:
            missing.append(name)
    return ids, missing


def _in_scope(f: Finding, ids: set[str]) -> bool:
    # A finding about no object at all (a rule that does not apply) belongs to every scope.
    return not f.objects or any(o.ns in ids for o in f.objects)


def evaluate(snapshot: HostSnapshot, rules: Iterable[Rule] | None = None, namespaces: set[str] | None = None) -> list[Finding]:
    """Every rule's outcomes on the snapshot, sorted; `namespaces` (ids) limits them to those namespaces."""
    out: list[Finding] = []
    for rule in load_rules() if rules is None else rules:
        try:
            found = CHECKS[rule.check](snapshot, rule)
        except Exception as e:  # noqa: BLE001 - one broken check (or odd snapshot) must not hide the others
            found = [Finding(rule.id, rule.title, rule.severity, Outcome.UNKNOWN, (), "",
                             f"the check could not evaluate this snapshot: {type(e).__name__}: {e}",
                             references=rule.references)]  # fmt: skip
        if not found:
            found = [Finding(rule.id, rule.title, rule.severity, Outcome.SKIP, (), "", "nothing here it applies to",
                             references=rule.references)]  # fmt: skip
        out.extend(found)
    if namespaces is not None:
        out = [f for f in out if _in_scope(f, namespaces)]
    return sort_findings(out)


def problems(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.outcome in PROBLEMS]


def notes(snapshot: HostSnapshot) -> list[tuple[str, str]]:
    """What could not be inspected, as (code, one line) for the report: not root, vanished namespaces, OVS, tools."""
    out = []
    errors = list(snapshot.errors)
    if not snapshot.root:
        said = [e for e in errors if e.startswith("not root")]  # the collector's own line, when it wrote one
        errors = [e for e in errors if e not in said]
        line = said[0] if said else ("not root: other namespaces, their counters and NAT rules, and Open vSwitch "
                                     "could not all be read")  # fmt: skip
        out.append(("doctor.not_root", f"{line}; run `sudo badsum doctor`"))
    for err in errors:
        out.append(("snapshot.error", err))
    by_error: dict[str, list[str]] = {}  # one line per distinct problem, not per pod: 300 pods, not root
    for ns in snapshot.namespaces:
        for err in ns.errors:
            by_error.setdefault(err, []).append(ns.id)
    for err, ids in by_error.items():
        named = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        out.append(("namespace.error", f"namespace{'s' if len(ids) > 1 else ''} {named}: {err}"))
    for ovs in snapshot.ovs:
        where = f"Open vSwitch ({ovs.db})" if ovs.db else "Open vSwitch"
        if ovs.running is False:
            why = ovs.error or f"{where} is installed but not running"
            out.append(("ovs.not_running", f"{why}: its bridges were not inspected"))
        elif ovs.error:
            out.append(("ovs.error", f"{where}: {ovs.error}"))
    tool_use = {"iptables": "NAT rules were not read", "ethtool": "offload features were not read",
                "ip": "links were not read", "nstat": "checksum counters were not read"}  # fmt: skip
    for tool, what in tool_use.items():
        if tool in snapshot.tools and snapshot.tools[tool] is None:
            out.append(("tool.missing", f"{tool} is not installed: {what}"))
    return out


__all__ = ["CatalogueError", "ObjectRef", "evaluate", "load_entries", "load_rules", "notes", "problems",
           "resolve_namespaces", "sort_findings"]
