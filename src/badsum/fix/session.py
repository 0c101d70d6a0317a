"""One `badsum fix` run as a sequence: snapshot, plan, apply under the journal's lock, check again;
and undo. The CLI (cli/fix.py) parses the command line and prints; this module decides.

What the run reads and changes on the host, and the rules it evaluates, are the methods of `Host`,
so a test stands a simulated host in for the live one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from badsum.fix import persist
from badsum.fix.apply import ActionResult, UndoResult, apply_plan, undo
from badsum.fix.journal import Journal, JournalError, open_entries
from badsum.fix.plan import Plan, build_plan, finding_label, recheck

if TYPE_CHECKING:
    from badsum.host.model import HostSnapshot
    from badsum.host.netns import NsRef
    from badsum.rules.model import Finding

#: Reading the host again failed in one of these ways: the findings are then `unknown`.
_UNREADABLE = (OSError, ValueError, KeyError, TypeError)


class FixError(RuntimeError):
    """The run stopped: a stable `code`, one line for people, and the envelope's data so far."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data or {}


class Host:
    """The live host and the rules engine: everything a fix run reads, evaluates or changes."""

    def collect(self, now: float, namespaces: set[str] | None = None) -> HostSnapshot:
        from badsum.host.collect import collect_snapshot

        return collect_snapshot(now, namespaces=namespaces)

    def namespaces(self) -> Sequence[NsRef]:
        """Every namespace there is (what `--namespace` may name)."""
        from badsum.host.netns import discover

        return discover().namespaces

    def evaluate(self, snapshot: HostSnapshot) -> list[Finding]:
        from badsum.rules import engine

        return list(engine.evaluate(snapshot))

    def known_rules(self) -> set[str] | None:
        """Every rule id the catalogue has (None when it cannot be told)."""
        try:
            from badsum.rules import engine

            return {r.id.upper() for r in engine.load_rules()}
        except (ImportError, AttributeError, OSError, ValueError):
            return None

    def is_root(self) -> bool:
        return os.geteuid() == 0

    def apply(self, actions: list[Any], journal: Journal, now: float, inodes: dict[str, int]) -> list[ActionResult]:
        return apply_plan(actions, journal, now, inodes=inodes)

    def undo(self, journal: Journal, entries: list[Any], now: float) -> list[UndoResult]:
        return undo(journal, entries, now, file_undo=persist.uninstall)

    def persistence(self, root: Path) -> persist.Environment:
        """What keeps a change on this host: udev, NetworkManager, the sysctl.d files (under `root`)."""
        nm = (root / "etc/NetworkManager").is_dir() or shutil.which("NetworkManager") is not None
        return persist.Environment(udev=shutil.which("udevadm") is not None, networkmanager=nm,
                                   sysctl_files=read_sysctl_files(root))  # fmt: skip


#: Bounds on what is read of the sysctl.d directories (they are small; a hostile tree is not read whole).
SYSCTL_MAX_FILES, SYSCTL_MAX_BYTES = 256, 256 * 1024


def read_sysctl_files(root: Path) -> dict[str, str]:
    """`*.conf` in the sysctl.d directories and /etc/sysctl.conf under `root`, by their path on the
    host; a name in an earlier directory masks the same name in a later one (sysctl.d(5))."""
    from badsum.fix import sysctl_d

    found: dict[str, str] = {}
    names: set[str] = set()
    for d in sysctl_d.DIRS:
        try:
            entries = sorted(os.scandir(root / d.lstrip("/")), key=lambda x: x.name)
        except OSError:
            continue
        for ent in entries:
            if len(found) >= SYSCTL_MAX_FILES or not ent.name.endswith(".conf") or ent.name in names:
                continue
            names.add(ent.name)
            if (text := _read_small(Path(ent.path))) is not None:
                found[f"{d}/{ent.name}"] = text
    if (text := _read_small(root / sysctl_d.SYSCTL_CONF.lstrip("/"))) is not None:
        found[sysctl_d.SYSCTL_CONF] = text
    return found


def _read_small(path: Path) -> str | None:
    try:
        if not path.is_file():
            return None
        with path.open("rb") as f:
            return f.read(SYSCTL_MAX_BYTES).decode(errors="replace")
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Request:
    """What to fix, and where the journal and the persistence files go."""

    journal: Journal
    root: Path
    """Persistence files are written under it (`/` on a real host)."""
    rules: frozenset[str] = frozenset()
    """Upper-case rule ids; empty: every rule."""
    namespaces: frozenset[str] | None = None
    """Namespace ids the plan stays inside; None: all."""
    persist: bool = False


@dataclass(slots=True)
class Proposal:
    """A plan and, with --persist, what would keep each change."""

    request: Request
    snapshot: HostSnapshot
    plan: Plan
    keep: list[persist.Persistence] = field(default_factory=list)
    persist_notes: list[str] = field(default_factory=list)
    """Planned changes no Persistence covers (a kind badsum does not know); empty normally."""

    def as_data(self, mode: str) -> dict[str, Any]:
        data: dict[str, Any] = {"mode": mode, "journal": str(self.request.journal.path), **self.plan.as_dict()}
        if self.request.persist:
            data["persist"] = [p.as_dict() for p in self.keep]
            data["persist_notes"] = self.persist_notes
            data["root"] = str(self.request.root)
        return data


@dataclass(slots=True)
class Applied:
    """What --apply did: each change, each file written, and each finding checked again."""

    proposal: Proposal
    results: list[ActionResult] = field(default_factory=list)
    written: list[dict[str, Any]] = field(default_factory=list)
    checks: list[tuple[Finding, str]] = field(default_factory=list)
    """(finding, `gone` | `still there` | `unknown`)."""
    attempted: bool = True
    """False when the plan had no change to make (nothing was run, nothing checked again)."""

    @property
    def failed(self) -> list[ActionResult]:
        """Changes not made: failed, or skipped after a failure."""
        return [r for r in self.results if r.status in ("failed", "skipped")]

    @property
    def all_gone(self) -> bool:
        return all(s == "gone" for _, s in self.checks)

    def as_data(self) -> dict[str, Any]:
        data = self.proposal.as_data("apply")
        data["results"] = [r.as_dict() for r in self.results]
        if self.attempted:
            data["written"] = self.written
            data["recheck"] = [{"finding": finding_label(f), "rule": f.rule, "status": s} for f, s in self.checks]
        return data


def propose(request: Request, host: Host, snapshot: HostSnapshot | None = None,
            now: Callable[[], float] = time.time) -> Proposal:  # fmt: skip
    """The plan for `snapshot`, or for a live one of the namespaces in scope (FixError
    `fix.cannot_inspect` when it cannot be taken)."""
    if snapshot is None:
        scope = set(request.namespaces) if request.namespaces is not None else None
        try:
            snapshot = host.collect(now(), namespaces=scope)
        except _UNREADABLE as e:
            raise FixError("fix.cannot_inspect", f"cannot read the host state: {e}") from None
    plan = build_plan(host.evaluate(snapshot), rules=request.rules, namespaces=request.namespaces, snapshot=snapshot)
    proposal = Proposal(request, snapshot, plan)
    if request.persist:
        proposal.keep = persist.choose(list(plan.actions), snapshot, host.persistence(request.root))
        proposal.persist_notes = persist.uncovered(list(plan.actions), proposal.keep)
    return proposal


def apply(proposal: Proposal, host: Host, log: Callable[[str], None],
          now: Callable[[], float] = time.time) -> Applied:  # fmt: skip
    """Make the changes in plan order, journaled first; write the persistence files when every change
    was made; then snapshot the namespaces involved again and check each finding. FixError
    `fix.not_root` or `fix.journal` when nothing could be made."""
    plan, request = proposal.plan, proposal.request
    if not host.is_root():
        raise FixError("fix.not_root", "--apply changes interfaces in other namespaces: it needs root",
                       proposal.as_data("apply"))  # fmt: skip
    if plan.empty or not plan.actions:
        return Applied(proposal, attempted=False)
    out = Applied(proposal)
    try:
        with request.journal.locked():
            inodes = {n.id: n.inode for n in proposal.snapshot.namespaces}
            out.results = host.apply(list(plan.actions), request.journal, now(), inodes)
            if request.persist and not any(r.status == "failed" for r in out.results):
                out.written = _install(proposal.keep, request.root, request.journal, now)
    except JournalError as e:
        raise FixError("fix.journal", str(e), proposal.as_data("apply")) from None
    involved = {r.planned.action.ns for r in out.results} | {o.ns for f in plan.findings for o in f.objects}
    involved |= set(request.namespaces or ())
    try:
        after = host.collect(now(), namespaces=involved)
        missing = involved - {n.id for n in after.namespaces}
        out.checks = recheck(plan.findings, host.evaluate(after), missing)
    except _UNREADABLE as e:
        out.checks = [(f, "unknown") for f in plan.findings]
        log(f"could not check the findings again: {e}")
    return out


def _install(keep: list[persist.Persistence], root: Path, journal: Journal, now: Callable[[], float]) -> list[dict[str, Any]]:
    out = []
    for p in keep:
        if p.artefact is None:
            continue
        status, message, entry = persist.install(p.artefact, root, journal, now(), p.rules)
        out.append({"path": p.artefact.path, "written_to": message if status == "written" else None,
                    "status": status, "journal_entry": entry})  # fmt: skip
    return out


def undo_journal(journal: Journal, rules: set[str], host: Host, now: Callable[[], float] = time.time) -> list[UndoResult]:
    """Put back what the journal recorded (only for `rules` when given), newest first. FixError
    `fix.not_root` or `fix.journal` when nothing could be undone."""
    try:
        with journal.locked():
            todo = open_entries(journal.entries(), rules or None)
            if any(e.kind != "file" for e in todo) and not host.is_root():
                raise FixError("fix.not_root", "--undo changes interfaces in other namespaces: it needs root")
            return host.undo(journal, todo, now())
    except JournalError as e:
        raise FixError("fix.journal", str(e)) from None


__all__ = ["Applied", "FixError", "Host", "Proposal", "Request", "apply", "propose", "undo_journal"]
