"""Rules, their outcomes, findings and the fix actions they carry. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()


class Outcome(str, Enum):
    """What evaluating a rule on one object gave."""

    FAIL = "fail"
    WARN = "warn"
    PASS = "pass"
    SKIP = "skip"  # not applicable here
    UNKNOWN = "unknown"  # could not evaluate (a fact is missing); the reason says which


@dataclass(frozen=True, slots=True)
class Runbook:
    meaning: str
    impact: str
    diagnosis: str
    mitigation: str


@dataclass(frozen=True, slots=True)
class Rule:
    """A known issue or configuration check, as data (rules/catalogue.toml)."""

    id: str
    """Stable id (`KB-005`, `CFG-VXLAN-MTU`); never reused for another meaning."""
    title: str
    severity: Severity
    applies_to: str
    """What it looks at, in words (`OVS netdev bridges with veth ports`)."""
    check: str
    """Name of the pure check function in `badsum.rules.checks`."""
    evidence: str
    """Evidence template, `str.format`-ed with the check's facts."""
    remediation: str
    """What to do, in words; the exact commands come from the check's FixActions."""
    references: tuple[str, ...]
    """Commit ids, issue and PR URLs."""
    runbook: Runbook


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An object a finding is about, by namespace and name."""

    ns: str
    """Namespace id (`host`, a netns name, `pid:1234`)."""
    name: str
    kind: str = "link"
    """`link`, `bridge`, `vxlan`, `ovs-bridge`, `iptables-chain`, `kernel`, `namespace`, ..."""

    def __str__(self) -> str:
        return f"{self.ns}:{self.name}"


@dataclass(frozen=True, slots=True)
class FixAction:
    """One narrowest change, in the namespace where the object lives."""

    kind: str
    """`ethtool-feature`, `mtu`, `iptables-rule`, `sysctl`."""
    ns: str
    """Namespace id the change applies in."""
    enter: str | None
    """How to enter it (`/run/netns/NAME`, `/proc/PID/ns/net`); None for the host namespace."""
    target: str
    """Interface name, chain, or sysctl key."""
    setting: str
    """Feature name (`tx`), `mtu`, a rule spec, ..."""
    value: str
    """New value (`off`, `1400`, ...)."""
    cost: str = ""
    """What the change costs (turning TX checksum off also turns TSO off)."""

    def argv(self) -> list[str]:
        """The exact command, as an argv list (never a shell string)."""
        if self.kind == "ethtool-feature":
            cmd = ["ethtool", "-K", self.target, self.setting, self.value]
        elif self.kind == "mtu":
            cmd = ["ip", "link", "set", "dev", self.target, "mtu", self.value]
        elif self.kind == "sysctl":
            cmd = ["sysctl", "-w", f"{self.target}={self.value}"]
        elif self.kind == "iptables-rule":
            cmd = ["iptables", "-t", self.target, *self.setting.split("\0"), *([self.value] if self.value else [])]
        else:
            raise ValueError(f"unknown fix kind {self.kind!r}")
        return cmd if self.enter is None else ["nsenter", f"--net={self.enter}", "--", *cmd]

    def command(self) -> str:
        """For display only: the argv joined with shell quoting."""
        import shlex

        return " ".join(shlex.quote(a) for a in self.argv())


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's outcome on one set of objects, with its evidence and fix."""

    rule: str
    title: str
    severity: Severity
    outcome: Outcome
    objects: tuple[ObjectRef, ...]
    evidence: str
    reason: str
    fix: tuple[FixAction, ...] = ()
    references: tuple[str, ...] = ()
    facts: dict[str, object] = field(default_factory=dict)
    """The raw facts the evidence was formatted from (JSON-able)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "title": self.title,
            "severity": self.severity.label,
            "outcome": self.outcome.value,
            "objects": [{"namespace": o.ns, "name": o.name, "kind": o.kind} for o in self.objects],
            "evidence": self.evidence,
            "reason": self.reason,
            "fix": [a.command() for a in self.fix],
            "fix_actions": [
                {"kind": a.kind, "namespace": a.ns, "target": a.target, "setting": a.setting, "value": a.value, "cost": a.cost}
                for a in self.fix
            ],
            "references": list(self.references),
            "facts": self.facts,
        }
