"""Applying a plan and undoing it, on the live host.

Every change is journaled (with the values before) before its command runs; every command is
the action's own argv (`FixAction.argv()`, the exact text the plan printed), run with a timeout,
in the namespace where the object lives (`nsenter --net=`). State is read back with the tools
themselves (`ethtool --json -k`, `ip -j link`, `iptables -C`), so the journal records what the
kernel says, not what we asked for.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from badsum.fix.journal import (
    APPLIED,
    FAILED,
    UNDONE,
    UNRESTORABLE,
    Entry,
    Journal,
    NsRef,
)
from badsum.fix.plan import PlannedAction
from badsum.rules.model import FixAction

TIMEOUT_S = 10.0
#: The namespace badsum itself runs in (the host's, for `FixAction.enter is None`).
SELF_NS = "/proc/self/ns/net"

Runner = Callable[[list[str], float], subprocess.CompletedProcess]


class ApplyError(RuntimeError):
    """An action could not be applied (namespace gone, interface missing, a tool missing)."""


def run_argv(argv: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run one argv list (never a shell), capturing its output, bounded by `timeout`."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout:g} s")
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]} is not installed")


def in_ns(enter: str | None, argv: list[str]) -> list[str]:
    """The same wrapping `FixAction.argv()` uses."""
    return argv if enter is None else ["nsenter", f"--net={enter}", "--", *argv]


def _last_line(p: subprocess.CompletedProcess) -> str:
    lines = (p.stderr or p.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {p.returncode}"


# -- reading state (independent of the snapshot: what the tools say now) ----------------------------


def ns_inode(enter: str | None) -> int | None:
    try:
        return os.stat(enter or SELF_NS).st_ino
    except OSError:
        return None


def ns_ref(ns_id: str, enter: str | None) -> NsRef:
    ino = ns_inode(enter)
    if ino is None:
        raise ApplyError(f"namespace {ns_id} ({enter}) does not exist (any more)")
    return NsRef(ns_id, enter, ino)


def read_link(enter: str | None, dev: str, run: Runner) -> dict | None:
    """`ip -j link show dev DEV` in the namespace; None when there is no such interface."""
    p = run(in_ns(enter, ["ip", "-j", "link", "show", "dev", dev]), TIMEOUT_S)
    if p.returncode != 0:
        return None
    try:
        doc = json.loads(p.stdout or "[]")
    except ValueError:
        return None
    return doc[0] if doc else None


def read_mtus(enter: str | None, run: Runner) -> dict[str, int]:
    """Every interface's MTU in the namespace (`ip -j link show`)."""
    p = run(in_ns(enter, ["ip", "-j", "link", "show"]), TIMEOUT_S)
    try:
        return {x["ifname"]: int(x["mtu"]) for x in json.loads(p.stdout or "[]")} if p.returncode == 0 else {}
    except (ValueError, KeyError, TypeError):
        return {}


def read_features(enter: str | None, dev: str, run: Runner) -> dict[str, dict]:
    """`ethtool --json -k DEV`: every feature ethtool can set, by the name it prints.

    Legacy group lines (`tx-checksumming`, `scatter-gather`, `tcp-segmentation-offload`) have
    `fixed: null`: they are views of other features, not features, and are left out."""
    p = run(in_ns(enter, ["ethtool", "--json", "-k", dev]), TIMEOUT_S)
    if p.returncode != 0:
        raise ApplyError(f"ethtool --json -k {dev}: {_last_line(p)}")
    try:
        doc = json.loads(p.stdout)[0]
    except (ValueError, IndexError, KeyError) as e:
        raise ApplyError(f"ethtool --json -k {dev}: unreadable output ({e})") from None
    return {k: {"active": bool(v["active"]), "fixed": bool(v["fixed"]), "requested": v.get("requested")}
            for k, v in doc.items() if isinstance(v, dict) and "active" in v and v.get("fixed") is not None}  # fmt: skip


def changed_features(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    return [k for k in before if k in after and before[k]["active"] != after[k]["active"]]


@dataclass(frozen=True, slots=True)
class IptRule:
    """An iptables-rule action taken apart: `-A|-I|-D|-R CHAIN [N] SPEC...` in table `table`."""

    table: str
    op: str
    chain: str
    position: int | None
    spec: tuple[str, ...]

    @classmethod
    def of(cls, a: FixAction) -> IptRule:
        args = [*a.setting.split("\0"), *([a.value] if a.value else [])]
        if len(args) < 2 or args[0] not in ("-A", "-I", "-D", "-R"):
            raise ApplyError(f"iptables action {' '.join(args)!r}: only -A, -I, -D and -R can be journaled and undone")
        op, chain, rest = args[0], args[1], args[2:]
        pos = None
        if op in ("-I", "-D", "-R") and rest and rest[0].isdigit():
            pos, rest = int(rest[0]), rest[1:]
        if op == "-D" and pos is not None:
            raise ApplyError("iptables -D by rule number cannot be checked before the change: give the rule's spec")
        if op == "-R" and pos is None:
            raise ApplyError("iptables -R needs a rule number")
        return cls(a.target, op, chain, pos, tuple(rest))

    def argv(self, op: str, position: int | None = None) -> list[str]:
        return ["iptables", "-t", self.table, op, self.chain, *([str(position)] if position else []), *self.spec]


def rule_present(enter: str | None, rule: IptRule, run: Runner) -> bool:
    p = run(in_ns(enter, rule.argv("-C")), TIMEOUT_S)
    if p.returncode not in (0, 1):
        raise ApplyError(f"iptables -C: {_last_line(p)}")
    return p.returncode == 0


def chain_rules(enter: str | None, table: str, chain: str, run: Runner) -> list[str]:
    """The chain's rules as `iptables -S CHAIN` prints them (canonical spelling, comments quoted)."""
    p = run(in_ns(enter, ["iptables", "-t", table, "-S", chain]), TIMEOUT_S)
    if p.returncode != 0:
        raise ApplyError(f"iptables -t {table} -S {chain}: {_last_line(p)}")
    return [ln for ln in p.stdout.splitlines() if ln.startswith("-A ")]


def removed_rule(before: list[str], after: list[str]) -> tuple[int, str] | None:
    """The (1-based position, line) of the rule that is in `before` and not in `after`."""
    for i, line in enumerate(before):
        if i >= len(after) or after[i] != line:
            return i + 1, line
    return None


# -- applying ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class ActionResult:
    planned: PlannedAction
    status: str
    """`applied`, `unchanged` (already so), `failed`, `skipped` (an earlier failure stopped the run)."""
    message: str = ""
    entry: int | None = None
    changed: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"command": self.planned.command, "status": self.status, "message": self.message,
                "journal_entry": self.entry, "changed": self.changed}  # fmt: skip


def apply_action(p: PlannedAction, journal: Journal, now: float, run: Runner = run_argv,
                 expected_inode: int | None = None) -> ActionResult:  # fmt: skip
    """Journal the values before, run the command, journal what changed. `expected_inode`: the
    namespace's inode in the snapshot the plan came from (a namespace re-created since is refused)."""
    a = p.action
    try:
        ns = ns_ref(a.ns, a.enter)
        if expected_inode and ns.inode != expected_inode:
            raise ApplyError(f"namespace {a.ns} was re-created since the snapshot (inode {ns.inode}, was "
                             f"{expected_inode}): run `badsum fix` again")  # fmt: skip
        entry = Entry(0, a.kind, now, rules=list(p.rules), findings=list(p.findings), namespace=ns,
                      target=a.target, command=a.argv())  # fmt: skip
        if a.kind in ("ethtool-feature", "mtu"):
            link = read_link(a.enter, a.target, run)
            if link is None:
                raise ApplyError(f"no interface {a.target} in namespace {a.ns}")
            entry.ifindex = int(link["ifindex"])
            if a.kind == "mtu":
                entry.before = {"mtu": int(link["mtu"]), "others": read_mtus(a.enter, run)}
                if str(link["mtu"]) == a.value:
                    return ActionResult(p, "unchanged", f"MTU of {a.ns}:{a.target} is {a.value} already")
            else:
                entry.before = {"features": read_features(a.enter, a.target, run)}
        elif a.kind == "iptables-rule":
            rule = IptRule.of(a)
            entry.before = {"table": rule.table, "op": rule.op, "chain": rule.chain, "position": rule.position,
                            "spec": list(rule.spec)}  # fmt: skip
            if rule.op == "-R":
                # Replaced rules are put back from iptables' own listing (its canonical spelling).
                listing = chain_rules(a.enter, rule.table, rule.chain, run)
                if rule.position is None or rule.position > len(listing):
                    raise ApplyError(f"{rule.chain} has no rule {rule.position} in namespace {a.ns}")
                entry.before["line"] = listing[rule.position - 1]
            else:
                present = rule_present(a.enter, rule, run)
                if (rule.op != "-D") == present:
                    return ActionResult(p, "unchanged", "the rule is there already" if present else "the rule is not there")
                entry.before["present"] = present
                if rule.op == "-D":
                    # Deleted rules are put back from iptables' own listing, at the same position.
                    entry.before["listing"] = chain_rules(a.enter, rule.table, rule.chain, run)
        elif a.kind == "sysctl":
            q = run(in_ns(a.enter, ["sysctl", "-n", a.target]), TIMEOUT_S)
            if q.returncode != 0:
                raise ApplyError(f"sysctl {a.target}: {_last_line(q)}")
            entry.before = {"value": q.stdout.strip()}
            if entry.before["value"] == a.value:
                return ActionResult(p, "unchanged", f"{a.target} is {a.value} already")
        else:
            raise ApplyError(f"unknown fix kind {a.kind!r}")
    except ApplyError as e:
        return ActionResult(p, "failed", str(e))
    journal.append(entry)  # the values before are on disk before anything changes
    r = run(a.argv(), TIMEOUT_S)
    try:
        _record_after(entry, a, run)
    except ApplyError as e:
        entry.note = f"could not read the state after: {e}"
    entry.status = APPLIED if r.returncode == 0 else FAILED
    if r.returncode != 0:
        entry.note = _last_line(r)
    entry.undo = undo_commands(entry)
    journal.update(entry)
    changed = dict(entry.after)
    if r.returncode != 0:
        return ActionResult(p, "failed", f"{a.command()}: {_last_line(r)}", entry.id, changed)
    if a.kind == "ethtool-feature" and not entry.after.get("features"):
        return ActionResult(p, "unchanged", f"{a.setting} is {a.value} already on {a.ns}:{a.target}", entry.id)
    return ActionResult(p, "applied", "", entry.id, changed)


def _record_after(entry: Entry, a: FixAction, run: Runner) -> None:
    if a.kind == "ethtool-feature":
        before = entry.before["features"]
        after = read_features(a.enter, a.target, run)
        names = changed_features(before, after)
        # Only what changed is kept: tx off changes tx-checksum-ip-generic/-sctp and, with them,
        # the TSO features (still "requested on"), which come back by themselves with tx on.
        entry.before = {"features": {k: before[k] for k in names}}
        entry.after = {"features": {k: after[k] for k in names}}
    elif a.kind == "mtu":
        link = read_link(a.enter, a.target, run)
        entry.after = {"mtu": int(link["mtu"])} if link else {}
        # The kernel carries an MTU change further (a bridge follows its smallest port): keep those too.
        old, new = entry.before.pop("others", {}), read_mtus(a.enter, run)
        moved = sorted(k for k in old if k != a.target and k in new and new[k] != old[k])
        if moved:
            entry.before["others"] = {k: old[k] for k in moved}
            entry.after["others"] = {k: new[k] for k in moved}
    elif a.kind == "iptables-rule":
        rule = IptRule.of(a)
        listing = chain_rules(a.enter, rule.table, rule.chain, run)
        if rule.op == "-R":
            pos = rule.position or 0
            entry.after = {"line": listing[pos - 1] if 0 < pos <= len(listing) else None}
            return
        entry.after = {"present": rule_present(a.enter, rule, run)}
        if rule.op == "-D":
            gone = removed_rule(entry.before.get("listing", []), listing)
            if gone:
                entry.before["position"], entry.before["line"] = gone
    elif a.kind == "sysctl":
        q = run(in_ns(a.enter, ["sysctl", "-n", a.target]), TIMEOUT_S)
        entry.after = {"value": q.stdout.strip()} if q.returncode == 0 else {}


def undo_commands(e: Entry) -> list[list[str]]:
    """The commands that put `before` back (shown to people; `--undo` checks the state first)."""
    enter = e.namespace.enter if e.namespace else None
    if e.kind == "ethtool-feature":
        feats = e.before.get("features", {})
        args = [x for k, v in feats.items() if not v.get("fixed") for x in (k, "on" if v["active"] else "off")]
        return [in_ns(enter, ["ethtool", "-K", e.target, *args])] if args else []
    if e.kind == "mtu" and "mtu" in e.before:
        others = [in_ns(enter, ["ip", "link", "set", "dev", k, "mtu", str(v)]) for k, v in e.before.get("others", {}).items()]
        # The others (a bridge that followed its port) normally come back by themselves: listed for people.
        return [in_ns(enter, ["ip", "link", "set", "dev", e.target, "mtu", str(e.before["mtu"])]), *others]
    if e.kind == "iptables-rule" and e.before:
        b = e.before
        spec = b["spec"]
        if b["op"] in ("-D", "-R") and b.get("line"):  # `-A CHAIN SPEC` as iptables printed it
            spec = shlex.split(b["line"])[2:]
        if b["op"] == "-R":
            return [in_ns(enter, ["iptables", "-t", b["table"], "-R", b["chain"], str(b["position"]), *spec])]
        if b["op"] == "-D":
            pos = [str(b["position"])] if b.get("position") else []
            return [in_ns(enter, ["iptables", "-t", b["table"], "-I", b["chain"], *pos, *spec])]
        return [in_ns(enter, ["iptables", "-t", b["table"], "-D", b["chain"], *spec])]
    if e.kind == "sysctl" and "value" in e.before:
        return [in_ns(enter, ["sysctl", "-w", f"{e.target}={e.before['value']}"])]
    return []


def apply_plan(actions: list[PlannedAction], journal: Journal, now: float, run: Runner = run_argv,
               inodes: dict[str, int] | None = None) -> list[ActionResult]:  # fmt: skip
    """Apply in plan order; stop at the first failure (later changes may depend on earlier ones).
    `inodes`: namespace id -> inode in the snapshot the plan was made from."""
    results: list[ActionResult] = []
    failed = False
    for p in actions:
        if failed:
            results.append(ActionResult(p, "skipped", "not applied: an earlier change failed"))
            continue
        r = apply_action(p, journal, now, run, (inodes or {}).get(p.action.ns))
        results.append(r)
        failed = r.status == "failed"
    return results


# -- undo -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class UndoResult:
    entry: Entry
    status: str
    """`restored`, `nothing` (already as before), `refused` (namespace/interface gone or re-created,
    or changed since by someone else), `failed` (the restoring command failed)."""
    message: str = ""
    commands: list[list[str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        e = self.entry
        return {"journal_entry": e.id, "kind": e.kind, "namespace": e.namespace.id if e.namespace else None,
                "target": e.target, "rules": e.rules, "status": self.status, "message": self.message,
                "commands": [shlex.join(c) for c in self.commands]}  # fmt: skip


def check_namespace(e: Entry) -> str | None:
    """Why the entry's namespace cannot be used any more (None when it is the same one)."""
    ns = e.namespace
    if ns is None:
        return None
    ino = ns_inode(ns.enter)
    where = f"namespace {ns.id}" + (f" ({ns.enter})" if ns.enter else "")
    if ino is None:
        return f"{where} no longer exists; the change went with it"
    if ns.inode is not None and ino != ns.inode:
        return f"{where} was re-created since (inode {ino}, was {ns.inode}); nothing of ours is in it"
    return None


def undo_entry(e: Entry, run: Runner = run_argv) -> UndoResult:
    why = check_namespace(e)
    if why:
        return UndoResult(e, "refused", why)
    enter = e.namespace.enter if e.namespace else None
    link: dict = {}
    if e.kind in ("ethtool-feature", "mtu"):
        found = read_link(enter, e.target, run)
        if found is None:
            where = e.namespace.id if e.namespace else "its namespace"
            return UndoResult(e, "refused", f"interface {e.target} no longer exists in {where}")
        link = found
        if e.ifindex is not None and int(link["ifindex"]) != e.ifindex:
            return UndoResult(e, "refused", f"interface {e.target} was re-created since (ifindex {link['ifindex']}, "
                              f"was {e.ifindex}); its settings are the new interface's own")  # fmt: skip
    try:
        if e.kind == "ethtool-feature":
            return _undo_features(e, enter, run)
        if e.kind == "mtu":
            r = _undo_simple(e, run, int(link["mtu"]), e.before.get("mtu"), e.after.get("mtu"), "MTU")
            return _undo_mtu_others(e, enter, run, r) if r.status in ("restored", "nothing") else r
        if e.kind == "sysctl":
            q = run(in_ns(enter, ["sysctl", "-n", e.target]), TIMEOUT_S)
            now_v = q.stdout.strip() if q.returncode == 0 else None
            return _undo_simple(e, run, now_v, e.before.get("value"), e.after.get("value"), e.target)
        if e.kind == "iptables-rule":
            return _undo_rule(e, enter, run)
    except ApplyError as ex:
        return UndoResult(e, "failed", str(ex))
    return UndoResult(e, "failed", f"cannot undo a {e.kind!r} entry")


def _run_all(e: Entry, cmds: list[list[str]], run: Runner) -> UndoResult | None:
    for c in cmds:
        r = run(c, TIMEOUT_S)
        if r.returncode != 0:
            return UndoResult(e, "failed", f"{' '.join(c)}: {_last_line(r)}", cmds)
    return None


def _undo_simple(e: Entry, run: Runner, now_v: object, before: object, after: object, what: str) -> UndoResult:
    if before is None:
        return UndoResult(e, "nothing", "nothing was recorded before the change")
    if now_v == before:
        return UndoResult(e, "nothing", f"{what} is {before} already")
    if after is not None and now_v != after:
        return UndoResult(e, "refused", f"{what} was changed since by someone else ({now_v}, badsum set {after}); "
                          "left as it is")  # fmt: skip
    cmds = undo_commands(e)[:1]
    return _run_all(e, cmds, run) or UndoResult(e, "restored", f"{what} {after} -> {before}", cmds)


def _undo_mtu_others(e: Entry, enter: str | None, run: Runner, r: UndoResult) -> UndoResult:
    """Interfaces whose MTU moved with the target: most come back by themselves; set the rest."""
    before, after = e.before.get("others", {}), e.after.get("others", {})
    if not before:
        return r
    now = read_mtus(enter, run)
    todo = {k: v for k, v in before.items() if k in now and now[k] != v and now[k] == after.get(k)}
    cmds = [in_ns(enter, ["ip", "link", "set", "dev", k, "mtu", str(v)]) for k, v in todo.items()]
    bad = _run_all(e, cmds, run)
    if bad:
        return bad
    back = ", ".join(f"{k} {v}" for k, v in before.items())
    return UndoResult(e, "restored" if r.status == "restored" or cmds else r.status,
                      f"{r.message}; with it {back}", r.commands + cmds)  # fmt: skip


def _undo_features(e: Entry, enter: str | None, run: Runner) -> UndoResult:
    before = e.before.get("features", {})
    if not before:
        return UndoResult(e, "nothing", "no feature was recorded as changed")
    current = read_features(enter, e.target, run)
    # A pending entry (a crash before the read-back) holds every feature: restore what differs.
    # A feature already back to its old value (by hand, or by its group) is left alone.
    restore = {k: b["active"] for k, b in before.items()
               if k in current and not current[k]["fixed"] and current[k]["active"] != b["active"]}  # fmt: skip
    if not restore:
        return UndoResult(e, "nothing", "the features are as before already")
    args = [x for k, v in restore.items() for x in (k, "on" if v else "off")]
    cmds = [in_ns(enter, ["ethtool", "-K", e.target, *args])]
    bad = _run_all(e, cmds, run)
    if bad:
        return bad
    now = read_features(enter, e.target, run)
    still = [k for k, v in restore.items() if k in now and now[k]["active"] != v]
    if still:
        return UndoResult(e, "failed", f"{', '.join(still)} did not come back", cmds)
    return UndoResult(e, "restored", ", ".join(f"{k} {'on' if v else 'off'}" for k, v in restore.items()), cmds)


def _undo_rule(e: Entry, enter: str | None, run: Runner) -> UndoResult:
    b = e.before
    rule = IptRule(b["table"], b["op"], b["chain"], b.get("position"), tuple(b["spec"]))
    if b["op"] == "-R":
        listing = chain_rules(enter, rule.table, rule.chain, run)
        pos = b["position"]
        now_line = listing[pos - 1] if 0 < pos <= len(listing) else None
        if now_line == b.get("line"):
            return UndoResult(e, "nothing", f"rule {pos} of {rule.chain} is as before already")
        if now_line != e.after.get("line"):
            return UndoResult(e, "refused", f"rule {pos} of {rule.chain} was changed since by someone else "
                              f"({now_line or 'gone'}); left as it is")  # fmt: skip
        cmds = undo_commands(e)
        return _run_all(e, cmds, run) or UndoResult(e, "restored", f"rule {pos} of {rule.chain} put back", cmds)
    present = rule_present(enter, rule, run)
    if b["op"] == "-D":
        if present:
            return UndoResult(e, "nothing", "the rule is back already")
        cmds = undo_commands(e)
        return _run_all(e, cmds, run) or UndoResult(e, "restored", "rule put back", cmds)
    if not present:
        return UndoResult(e, "nothing", "the rule is gone already")
    cmds = undo_commands(e)
    return _run_all(e, cmds, run) or UndoResult(e, "restored", "rule removed", cmds)


def undo(journal: Journal, entries: list[Entry], now: float, run: Runner = run_argv,
         file_undo: Callable[[Entry], UndoResult] | None = None) -> list[UndoResult]:  # fmt: skip
    """Undo `entries` (newest first), marking each in the journal; refusals do not stop the others."""
    results = []
    for e in entries:
        r = file_undo(e) if e.kind == "file" and file_undo is not None else undo_entry(e, run)
        if r.status in ("restored", "nothing"):
            e.status, e.undone_at = UNDONE, now
            e.note = r.message
        elif r.status == "refused":
            e.status, e.undone_at = UNRESTORABLE, now
            e.note = r.message
        journal.update(e)
        results.append(r)
    return results
