"""From findings to a plan: the narrowest changes, deduplicated and ordered, each with its exact
command, what it costs, and the findings it addresses. Pure: no I/O (the snapshot is passed in)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from badsum.host.model import HostSnapshot
from badsum.rules.model import Finding, FixAction, Outcome

#: Outcomes a fix is planned for.
ACTIVE = (Outcome.FAIL, Outcome.WARN)
#: Apply order by kind: offload flags first (they never break connectivity), then sysctls, then
#: MTUs (a lower MTU can cut a path until both ends agree), then packet-filter rules.
KIND_ORDER = {"ethtool-feature": 0, "sysctl": 1, "mtu": 2, "iptables-rule": 3}
#: ethtool's legacy `tx` switch covers every NETIF_F_CSUM_MASK feature (ethtool's off_flag_def).
TX_GROUP = frozenset({"tx", "tx-checksumming", "tx-checksum-ipv4", "tx-checksum-ip-generic", "tx-checksum-ipv6",
                      "tx-checksum-sctp", "tx-checksum-fcoe-crc"})  # fmt: skip
RX_GROUP = frozenset({"rx", "rx-checksumming", "rx-checksum"})
TSO_GROUP = frozenset({"tso", "tcp-segmentation-offload", "tx-tcp-segmentation", "tx-tcp6-segmentation",
                       "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation"})  # fmt: skip


def finding_label(f: Finding) -> str:
    """`KB-005 on bs1-c1:eth0, bs1-c2:eth0`: how the plan and the report name a finding."""
    objs = ", ".join(str(o) for o in f.objects)
    return f"{f.rule} on {objs}" if objs else f.rule


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One change of the plan."""

    action: FixAction
    findings: tuple[str, ...]
    """Labels of the findings it addresses (`finding_label`)."""
    rules: tuple[str, ...]
    """Their rule ids, in order, without repeats."""
    cost: str
    """What it costs, in words (the rule's own text, else badsum's default for the kind)."""
    current: str | None = None
    """The value now, when the snapshot has it (`on`, `1500`)."""

    @property
    def command(self) -> str:
        return self.action.command()

    def as_dict(self) -> dict[str, object]:
        a = self.action
        return {"command": self.command, "argv": a.argv(), "kind": a.kind, "namespace": a.ns, "enter": a.enter,
                "target": a.target, "setting": a.setting, "value": a.value, "current": self.current,
                "cost": self.cost, "rules": list(self.rules), "findings": list(self.findings)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[PlannedAction, ...]
    findings: tuple[Finding, ...]
    """The active findings in scope (rule filter), with or without a fix."""
    notes: tuple[str, ...] = ()
    """Why something was left out: a conflict, a duplicate covered by another action, a namespace out of scope."""
    without_fix: tuple[str, ...] = field(default=())
    """Labels of findings that have no automatic fix (the finding's remediation says what to do)."""

    @property
    def empty(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, object]:
        return {"actions": [p.as_dict() for p in self.actions],
                "findings": [{"label": finding_label(f), **f.as_dict()} for f in self.findings],
                "without_fix": list(self.without_fix), "notes": list(self.notes)}  # fmt: skip


def default_cost(a: FixAction) -> str:
    """What a change costs, for actions whose rule did not say."""
    where = f"{a.ns}:{a.target}"
    if a.kind == "ethtool-feature":
        off = a.value == "off"
        if a.setting in TX_GROUP:
            return (f"TX checksum offload {'off' if off else 'on'} on {where}: the kernel computes every checksum this "
                    "interface sends in software, and TSO (and GSO partial) switch off with it, so large sends are "
                    "segmented in software too: more CPU per byte sent; other interfaces are unaffected"
                    if off else f"TX checksum offload on for {where}: checksums are left to the device again")  # fmt: skip
        if a.setting in RX_GROUP:
            return (f"RX checksum offload {a.value} on {where}: the stack verifies every received checksum in software "
                    "(a little CPU per byte received)")  # fmt: skip
        if a.setting in TSO_GROUP:
            return f"TSO {a.value} on {where}: TCP sends are segmented in software (more CPU for bulk sends)"
        if "udp_tnl" in a.setting:
            return f"{a.setting} {a.value} on {where}: tunnel packets are segmented and checksummed in software"
        if a.setting in ("gro", "rx-gro", "generic-receive-offload"):
            return f"GRO {a.value} on {where}: received packets are handled one by one (more CPU per packet)"
        return f"{a.setting} {a.value} on {where}: that offload moves to software (more CPU)"
    if a.kind == "mtu":
        return (f"MTU {a.value} on {where}: larger packets are split by TCP (smaller MSS) or must be fragmented; "
                "a little less payload per packet; every host on the link must agree")  # fmt: skip
    if a.kind == "iptables-rule":
        return (f"changes the {a.target} table in {a.ns}; whoever owns the chain (kube-proxy, flannel, the CNI) may "
                "rewrite it on its next sync, so check again later")  # fmt: skip
    if a.kind == "sysctl":
        return f"{a.target}={a.value} applies to the whole namespace {a.ns}"
    return ""


def _current(a: FixAction, snap: HostSnapshot | None) -> str | None:
    if snap is None or a.kind not in ("ethtool-feature", "mtu"):
        return None
    ns = snap.ns(a.ns)
    link = ns.link(a.target) if ns is not None else None
    if link is None:
        return None
    if a.kind == "mtu":
        return str(link.mtu)
    names = TX_GROUP - {"tx", "tx-checksumming"} if a.setting in TX_GROUP else {a.setting}
    states = [link.feature_on(n) for n in sorted(names)]
    known = [s for s in states if s is not None]
    if not known:
        return None
    return "on" if any(known) else "off"


def _slot(a: FixAction) -> tuple[str, ...]:
    """What an action sets: two actions with the same slot and different values conflict."""
    if a.kind == "ethtool-feature":
        group = "tx" if a.setting in TX_GROUP else "rx" if a.setting in RX_GROUP else a.setting
        return (a.kind, a.ns, a.target, group)
    if a.kind == "iptables-rule":
        return (a.kind, a.ns, a.target, a.setting, a.value)
    return (a.kind, a.ns, a.target, a.setting)


def _covers(kept: FixAction, new: FixAction) -> bool:
    """`tx off` covers `tx-checksum-ip-generic off` on the same interface (not the other way round)."""
    return (kept.kind == new.kind == "ethtool-feature" and kept.value == new.value and kept.setting == "tx"
            and new.setting in TX_GROUP)  # fmt: skip


def _touches(f: Finding, scope: set[str]) -> bool:
    return any(o.ns in scope for o in f.objects) or any(a.ns in scope for a in f.fix)


def build_plan(findings: Iterable[Finding], *, rules: Iterable[str] = (), namespaces: Iterable[str] | None = None,
               snapshot: HostSnapshot | None = None) -> Plan:  # fmt: skip
    """The plan for the active findings (of `rules` when given; fixes only in `namespaces` when given)."""
    wanted = {r.upper() for r in rules}
    scope = set(namespaces) if namespaces is not None else None
    active = [f for f in findings if f.outcome in ACTIVE and (not wanted or f.rule.upper() in wanted)
              and (scope is None or _touches(f, scope))]  # fmt: skip
    active.sort(key=lambda f: (-int(f.severity), f.rule))
    order: list[tuple[str, ...]] = []
    chosen: dict[tuple[str, ...], FixAction] = {}
    owners: dict[tuple[str, ...], list[Finding]] = {}
    notes: list[str] = []
    without_fix: list[str] = []
    for f in active:
        if not f.fix:
            without_fix.append(finding_label(f))
        for a in f.fix:
            if scope is not None and a.ns not in scope:
                notes.append(f"{finding_label(f)}: `{a.command()}` left out: namespace {a.ns} is outside --namespace")
                continue
            slot = _slot(a)
            kept = chosen.get(slot)
            if kept is None:
                chosen[slot] = a
                owners[slot] = [f]
                order.append(slot)
            elif kept == a or _covers(kept, a):
                owners[slot].append(f)
            elif _covers(a, kept):
                chosen[slot] = a
                owners[slot].append(f)
            elif a.kind == "mtu" and kept.kind == "mtu" and a.value.isdigit() and kept.value.isdigit():
                # Two findings want different MTUs on one link: the smaller one satisfies both.
                low = a if int(a.value) < int(kept.value) else kept
                notes.append(f"{a.ns}:{a.target}: MTU {kept.value} and {a.value} asked for; {low.value} kept (it satisfies both)")
                chosen[slot] = low
                owners[slot].append(f)
            else:
                notes.append(f"{finding_label(f)}: `{a.command()}` conflicts with `{kept.command()}` "
                             "(asked for by a more severe finding); left out")  # fmt: skip
    order.sort(key=lambda s: KIND_ORDER.get(s[0], 9))  # stable: first-seen order within a kind
    planned = []
    for slot in order:
        a = chosen[slot]
        fs = owners[slot]
        labels = tuple(dict.fromkeys(finding_label(f) for f in fs))
        rule_ids = tuple(dict.fromkeys(f.rule for f in fs))
        planned.append(PlannedAction(a, labels, rule_ids, a.cost or default_cost(a), _current(a, snapshot)))
    return Plan(tuple(planned), tuple(active), tuple(notes), tuple(without_fix))


def recheck(addressed: Iterable[Finding], after: Iterable[Finding], missing: Iterable[str] = ()) -> list[tuple[Finding, str]]:
    """Whether each finding is `gone`, `still there` or `unknown` in a second evaluation.

    The same rule on any of the same objects counts as the same finding; a finding whose namespaces
    the second snapshot lacks (`missing`) is `unknown`, never `gone`."""
    after = list(after)
    lost = set(missing)
    out = []
    for f in addressed:
        objs = {(o.ns, o.name) for o in f.objects}
        same = [g for g in after if g.rule == f.rule and (not objs or objs & {(o.ns, o.name) for o in g.objects})]
        if any(g.outcome in ACTIVE for g in same):
            out.append((f, "still there"))
        elif any(o.ns in lost for o in f.objects) or any(g.outcome is Outcome.UNKNOWN for g in same):
            out.append((f, "unknown"))
        else:
            out.append((f, "gone"))
    return out
