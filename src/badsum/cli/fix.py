"""`badsum fix`: the narrowest change for each finding; a dry run unless `--apply`; `--undo`; `--persist`."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from badsum.cli.argtypes import unsafe_output
from badsum.fix import persist as persist_mod
from badsum.fix.apply import ActionResult, UndoResult, apply_plan, undo
from badsum.fix.journal import DEFAULT_PATH, Journal, JournalError, open_entries
from badsum.fix.plan import Plan, build_plan, finding_label, recheck
from badsum.host.model import HostSnapshot
from badsum.report.envelope import Envelope
from badsum.rules.model import Finding

HELP = "plan (and with --apply make, journal and undo) the narrowest change for each finding"
EXAMPLES = """\
examples:
  sudo badsum fix                         # the plan: exact commands, what each costs; changes nothing
  sudo badsum fix KB-005 --apply          # make the changes (journaled first), then check again
  sudo badsum fix --undo                  # put back what the journal recorded
  sudo badsum fix KB-004 --persist        # also print the udev rule / .link file that keeps it
  badsum fix --from snap.json             # plan from a saved snapshot (no root needed)

exit codes: 0 nothing to do (with --apply: every finding gone; --undo: all restored),
            1 a plan exists (with --apply: a finding remains), 2 usage (also a --journal that is a
            device, FIFO, socket, directory or symlink),
            3 could not inspect or apply (not root, a command failed; --undo: an entry could not be restored)
"""
ENV_JOURNAL = "BADSUM_FIX_JOURNAL"
ENV_ROOT = "BADSUM_FIX_ROOT"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fix", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rules", metavar="RULE-ID", nargs="*", help="only the findings of these rules (e.g. KB-005)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true", help="make the changes (journaled first), then check the findings again")
    mode.add_argument("--undo", action="store_true", help="restore what the journal recorded, newest first")
    p.add_argument("--persist", action="store_true",
                   help="also show the udev rule, .link file or NetworkManager script that keeps the change; "
                        "with --apply, write it")  # fmt: skip
    p.add_argument("--journal", metavar="PATH", help=f"the undo journal (default {DEFAULT_PATH}, or ${ENV_JOURNAL})")
    p.add_argument("--root", metavar="DIR", help=f"write persistence files under DIR instead of / (or ${ENV_ROOT})")
    p.add_argument("--namespace", metavar="NS", action="append",
                   help="look only at this namespace (snapshot id: host, a netns name, pid:N) and change nothing "
                        "outside it; repeatable")  # fmt: skip
    p.add_argument("--from", dest="snapshot", metavar="FILE", help="plan from a saved snapshot (`doctor --save`); not with --apply")
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.set_defaults(run=run)


def _say(msg: str) -> None:
    print(f"badsum: {msg}", file=sys.stderr, flush=True)


def _fail(args: argparse.Namespace, code: str, message: str, exit_code: int = 3, data: dict | None = None) -> int:
    if args.json:
        print(Envelope("fix", "error", data or {}, [{"code": code, "message": message}]).to_json())
    _say(message)
    return exit_code


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root or os.environ.get(ENV_ROOT) or "/")


def _journal(args: argparse.Namespace) -> Journal:
    if args.journal:
        return Journal(Path(args.journal))
    if os.environ.get(ENV_JOURNAL):
        return Journal(Path(os.environ[ENV_JOURNAL]))
    return Journal(_root(args) / str(DEFAULT_PATH).lstrip("/"))


# -- the two collaborators: the host collector and the rules engine ---------------------------------


def collect(now: float, namespaces: set[str] | None) -> HostSnapshot:
    from badsum.host.collect import collect_snapshot

    return collect_snapshot(now, namespaces=namespaces)


def evaluate(snapshot: HostSnapshot) -> list[Finding]:
    from badsum.rules import engine

    return list(engine.evaluate(snapshot))


def known_rules() -> set[str] | None:
    """Every rule id the catalogue has (None when it cannot be told)."""
    try:
        from badsum.rules import engine

        return {r.id.upper() for r in engine.load_rules()}
    except (ImportError, AttributeError, OSError, ValueError):
        return None


def environment(root: Path) -> persist_mod.Environment:
    nm = (root / "etc/NetworkManager").is_dir() or shutil.which("NetworkManager") is not None
    return persist_mod.Environment(udev=shutil.which("udevadm") is not None, networkmanager=nm)


# -- run ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, *, collect_fn: Callable[..., HostSnapshot] | None = None,
        evaluate_fn: Callable[[HostSnapshot], list[Finding]] | None = None) -> int:  # fmt: skip
    collect_fn = collect_fn or collect
    evaluate_fn = evaluate_fn or evaluate
    if args.snapshot and args.apply:
        _say("--apply changes this host: it needs a live snapshot, not --from")
        return 2
    if args.undo and (args.snapshot or args.persist or args.namespace):
        _say("--undo restores what the journal recorded; it takes only RULE-IDs, --journal and --json")
        return 2
    journal = _journal(args)
    # Refused before anything is inspected or changed: a FIFO there would hang the first read, and
    # the journal's rename would replace a device node.
    if (args.apply or args.undo) and (refused := unsafe_output("--journal", str(journal.path))):
        return _fail(args, *refused, exit_code=2)
    if args.undo:
        return run_undo(args, journal)
    wanted = {r.upper() for r in args.rules}
    known = known_rules()
    if known is not None and (unknown := sorted(wanted - known)):
        _say(f"unknown rule id {', '.join(unknown)}; `badsum doctor --json` lists the rules")
        return 2
    scope = set(args.namespace) if args.namespace else None
    try:
        if args.snapshot:
            snapshot = HostSnapshot.from_json(Path(args.snapshot).read_text())
        else:
            snapshot = collect_fn(time.time(), namespaces=scope)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return _fail(args, "fix.cannot_inspect", f"cannot read the host state: {e}")
    findings = evaluate_fn(snapshot)
    plan = build_plan(findings, rules=wanted, namespaces=scope, snapshot=snapshot)
    root = _root(args)
    keep = persist_mod.choose(list(plan.actions), snapshot, environment(root)) if args.persist else []
    data: dict = {"mode": "apply" if args.apply else "plan", "journal": str(journal.path), **plan.as_dict()}
    if args.persist:
        data["persist"] = [p.as_dict() for p in keep]
        data["persist_notes"] = persist_mod.notes_for_other_kinds(list(plan.actions))
        data["root"] = str(root)
    if not args.apply:
        code = 1 if not plan.empty else 0
        if args.json:
            print(Envelope("fix", "findings" if code else "ok", data).to_json())
        else:
            print(render_plan(plan, keep, data.get("persist_notes", []), journal, dry=True), end="")
        return code
    if os.geteuid() != 0:
        return _fail(args, "fix.not_root", "--apply changes interfaces in other namespaces: it needs root", 3, data)
    if plan.empty or not plan.actions:
        if args.json:
            print(Envelope("fix", "findings" if not plan.empty else "ok", {**data, "results": []}).to_json())
        else:
            print(render_plan(plan, keep, [], journal, dry=False), end="")
        return 1 if not plan.empty else 0
    try:
        with journal.locked():
            inodes = {n.id: n.inode for n in snapshot.namespaces}
            results = apply_plan(list(plan.actions), journal, time.time(), inodes=inodes)
            written = _install(keep, root, journal) if args.persist and not any(r.status == "failed" for r in results) else []
    except JournalError as e:
        return _fail(args, "fix.journal", str(e), 3, data)
    failed = [r for r in results if r.status in ("failed", "skipped")]
    involved = {r.planned.action.ns for r in results} | {o.ns for f in plan.findings for o in f.objects}
    if scope:
        involved |= scope
    try:
        after = collect_fn(time.time(), namespaces=involved)
        missing = involved - {n.id for n in after.namespaces}
        checks = recheck(plan.findings, evaluate_fn(after), missing)
    except (OSError, ValueError, KeyError, TypeError) as e:
        checks = [(f, "unknown") for f in plan.findings]
        _say(f"could not check the findings again: {e}")
    data["results"] = [r.as_dict() for r in results]
    data["written"] = written
    data["recheck"] = [{"finding": finding_label(f), "rule": f.rule, "status": s} for f, s in checks]
    code = 3 if failed else 0 if all(s == "gone" for _, s in checks) else 1
    if args.json:
        errors = [{"code": "fix.apply_failed", "message": r.message} for r in failed if r.status == "failed"]
        print(Envelope("fix", {0: "ok", 1: "findings", 3: "error"}[code], data, errors).to_json())
    else:
        print(render_apply(results, written, checks, journal), end="")
    return code


def _install(keep: list[persist_mod.Persistence], root: Path, journal: Journal) -> list[dict]:
    out = []
    for p in keep:
        if p.artefact is None:
            continue
        status, message, entry = persist_mod.install(p.artefact, root, journal, time.time(), p.rules)
        out.append({"path": p.artefact.path, "written_to": message if status == "written" else None,
                    "status": status, "journal_entry": entry})  # fmt: skip
    return out


def run_undo(args: argparse.Namespace, journal: Journal) -> int:
    wanted = {r.upper() for r in args.rules}
    try:
        with journal.locked():
            todo = open_entries(journal.entries(), wanted or None)
            if any(e.kind != "file" for e in todo) and os.geteuid() != 0:
                return _fail(args, "fix.not_root", "--undo changes interfaces in other namespaces: it needs root")
            results = undo(journal, todo, time.time(), file_undo=persist_mod.uninstall)
    except JournalError as e:
        return _fail(args, "fix.journal", str(e))
    bad = [r for r in results if r.status in ("refused", "failed")]
    code = 3 if bad else 0
    if args.json:
        errors = [{"code": f"fix.undo_{r.status}", "message": f"entry {r.entry.id}: {r.message}"} for r in bad]
        data = {"mode": "undo", "journal": str(journal.path), "results": [r.as_dict() for r in results]}
        print(Envelope("fix", "error" if bad else "ok", data, errors).to_json())
    else:
        print(render_undo(results, journal), end="")
        for r in bad:
            _say(f"entry {r.entry.id} ({_what(r.entry)}): {r.message}")
    return code


# -- text -----------------------------------------------------------------------------------------------


def _what(e) -> str:
    if e.kind == "file":
        return e.target
    ns = e.namespace.id if e.namespace else "?"
    return f"{e.kind} {ns}:{e.target}"


def _indent(text: str, pad: str) -> str:
    return "".join(pad + line + "\n" for line in text.rstrip("\n").splitlines())


def render_plan(plan: Plan, keep: list, notes: list[str], journal: Journal, *, dry: bool) -> str:
    if plan.empty:
        return "badsum fix: no findings to fix\n"
    n = len(plan.actions)
    head = f"badsum fix: {len(plan.findings)} finding(s), {n} change(s)"
    lines = [head + (" (dry run: nothing was changed; --apply makes them)" if dry else "") + "\n\n"]
    for f in plan.findings:
        lines.append(f"  {finding_label(f)} [{f.severity.label}]: {f.title}\n")
    if plan.without_fix:
        lines.append("\nNo automatic fix (see `badsum doctor` for what to do):\n")
        lines += [f"  {label}\n" for label in plan.without_fix]
    if plan.actions:
        lines.append("\nPlan:\n")
    for i, p in enumerate(plan.actions, 1):
        lines.append(f"  {i}. {p.command}\n")
        lines.append(f"     for:  {'; '.join(p.findings)}\n")
        if p.current is not None:
            lines.append(f"     now:  {p.action.setting} {p.current}\n")
        lines.append(f"     cost: {p.cost}\n")
    for note in plan.notes:
        lines.append(f"  note: {note}\n")
    for p in keep:
        lines.append(f"\nPersist {p.ns}:{p.target}: {p.method}. {p.fits}\n")
        if p.artefact is not None:
            lines.append(f"  {p.artefact.path} (mode {oct(p.artefact.mode)[2:]}):\n")
            lines.append(_indent(p.artefact.text, "    | "))
        for lim in p.limits:
            lines.append(f"  limit: {lim}\n")
        for alt in p.alternatives:
            lines.append(f"  alternative, not written: {alt.path}\n")
            lines.append(_indent(alt.text, "    | "))
    for note in notes:
        lines.append(f"  note: {note}\n")
    if dry and plan.actions:
        lines.append(f"\n--apply records the values before each change in {journal.path}; `badsum fix --undo` puts them back.\n")
    return "".join(lines)


def render_apply(results: list[ActionResult], written: list[dict], checks: list, journal: Journal) -> str:
    made = sum(r.status == "applied" for r in results)
    lines = [f"badsum fix --apply: {made} of {len(results)} change(s) made (journal {journal.path})\n"]
    for r in results:
        detail = r.message
        feats = r.changed.get("features") if r.changed else None
        if isinstance(feats, dict) and feats:
            detail = ", ".join(f"{k} {'on' if v['active'] else 'off'}" for k, v in feats.items())
        elif r.changed.get("mtu") is not None:
            detail = f"MTU now {r.changed['mtu']}"
        lines.append(f"  {r.status:<9} {r.planned.command}" + (f"\n            {detail}" if detail else "") + "\n")
    for w in written:
        lines.append(f"  {w['status']:<9} {w['written_to'] or w['path']}\n")
    lines.append("Checked again:\n")
    for f, status in checks:
        lines.append(f"  {status:<11} {finding_label(f)}\n")
    lines.append(f"Undo: badsum fix --undo --journal {journal.path}\n")
    return "".join(lines)


def render_undo(results: list[UndoResult], journal: Journal) -> str:
    if not results:
        return f"badsum fix --undo: nothing to undo in {journal.path}\n"
    ok = sum(r.status in ("restored", "nothing") for r in results)
    lines = [f"badsum fix --undo: {ok} of {len(results)} entr{'y' if len(results) == 1 else 'ies'} restored ({journal.path})\n"]
    for r in results:
        lines.append(f"  {r.status:<9} #{r.entry.id} {_what(r.entry)}: {r.message}\n")
        for c in r.commands:
            lines.append(f"            {shlex.join(c)}\n")
    return "".join(lines)
