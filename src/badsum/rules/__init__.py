"""Known issues as data (catalogue.toml) and the pure evaluator: snapshot -> findings.

`evaluate(snapshot)` runs every rule of the catalogue; `badsum doctor` renders the findings.
"""

from badsum.rules.engine import evaluate, load_rules, notes, problems, resolve_namespaces, sort_findings
from badsum.rules.model import Finding, FixAction, ObjectRef, Outcome, Rule, Runbook, Severity

__all__ = [
           "Finding",
           "FixAction",
           "ObjectRef",
           "Outcome",
           "Rule",
           "Runbook",
           "Severity",
           "evaluate",
           "load_rules",
           "notes",
           "problems",
           "resolve_namespaces",
           "sort_findings",
]
