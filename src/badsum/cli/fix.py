"""`badsum fix`: the narrowest change for each finding; a dry run unless `--apply`; `--undo`; `--persist`."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from badsum.cli.argtypes import pick_namespaces, unsafe_output
from badsum.cli.result import ExitCode, Failure, Result, say
from badsum.cli.snapshot import read_snapshot
from badsum.fix import session
from badsum.fix.apply import ActionResult, UndoResult
from badsum.fix.journal import DEFAULT_PATH, Journal
from badsum.fix.plan import Plan, finding_label
from badsum.fix.session import Applied, FixError, Host, Request

HELP = "plan (and with --apply make, journal and undo) the narrowest change for each finding"
EXAMPLES = """\
examples:
  sudo badsum fix                         # the plan: exact commands, what each costs; changes nothing
  sudo badsum fix KB-005 --apply          # make the changes (journaled first), then check again
  sudo badsum fix --undo                  # put back what the journal recorded
  sudo badsum fix KB-004 --persist        # also print the udev rule / .link / sysctl.d file that keeps it
  badsum fix --from snap.json             # plan from a saved snapshot (no root needed)

exit codes: 0 nothing to do (with --apply: every finding gone; --undo: all restored),
            1 a plan exists (with --apply: a finding remains), 2 usage (also an unknown RULE-ID or
            --namespace, a --journal that is a device, FIFO, socket, directory or symlink),
            3 could not inspect or apply (not root, an unreadable --from snapshot, a command failed;
            --undo: an entry could not be restored)
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
                   help="also show the udev rule, .link file, NetworkManager script or sysctl.d file that keeps the change; "
                        "with --apply, write it")  # fmt: skip
    p.add_argument("--journal", metavar="PATH", help=f"the undo journal (default {DEFAULT_PATH}, or ${ENV_JOURNAL})")
    p.add_argument("--root", metavar="DIR", help=f"write persistence files under DIR instead of / (or ${ENV_ROOT})")
    p.add_argument("--namespace", metavar="NS", action="append",
                   help="look only at this namespace (snapshot id: host, a netns name, pid:N) and change nothing "
                        "outside it; repeatable")  # fmt: skip
    p.add_argument("--from", dest="snapshot", metavar="FILE", help="plan from a saved snapshot (`doctor --save`); not with --apply")
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.set_defaults(run=run)


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root or os.environ.get(ENV_ROOT) or "/")


def _journal(args: argparse.Namespace) -> Journal:
    if args.journal:
        return Journal(Path(args.journal))
    if os.environ.get(ENV_JOURNAL):
        return Journal(Path(os.environ[ENV_JOURNAL]))
    return Journal(_root(args) / str(DEFAULT_PATH).lstrip("/"))


def _usage(message: str) -> Failure:
    return Failure("fix.usage", message, ExitCode.USAGE)


def run(args: argparse.Namespace, host: Host | None = None) -> Result:
    host = host or Host()
    journal = _journal(args)
    try:
        if args.snapshot and args.apply:
            raise _usage("--apply changes this host: it needs a live snapshot, not --from")
        if args.undo and (args.snapshot or args.persist or args.namespace):
            raise _usage("--undo restores what the journal recorded; it takes only RULE-IDs, --journal and --json")
        # Refused before anything is inspected or changed: a FIFO there would hang the first read, and
        # the journal's rename would replace a device node.
        if (args.apply or args.undo) and (refused := unsafe_output("--journal", str(journal.path))):
            raise Failure(*refused, ExitCode.USAGE)
        wanted = {r.upper() for r in args.rules}
        if args.undo:
            return _undo(journal, wanted, host)
        known = host.known_rules()
        if known is not None and (unknown := sorted(wanted - known)):
            raise _usage(f"unknown rule id {', '.join(unknown)}; `badsum doctor --json` lists the rules")
        snapshot = read_snapshot(args.snapshot) if args.snapshot else None
        scope = None
        if args.namespace:
            found = snapshot.namespaces if snapshot is not None else host.namespaces()
            scope = frozenset(ns.id for ns in pick_namespaces("--namespace", found, args.namespace))
        request = Request(journal, _root(args), frozenset(wanted), scope, args.persist)
        proposal = session.propose(request, host, snapshot)
        if not args.apply:
            plan = proposal.plan
            return Result("fix", ExitCode.FINDINGS if not plan.empty else ExitCode.OK, proposal.as_data("plan"),
                          text=lambda: render_plan(plan, proposal.keep, proposal.persist_notes, journal, dry=True))  # fmt: skip
        return _applied(session.apply(proposal, host, log=say))
    except Failure as e:
        return Result.failed("fix", e)
    except FixError as e:
        return Result.failed("fix", Failure(e.code, str(e)), e.data)


def _applied(done: Applied) -> Result:
    plan, journal = done.proposal.plan, done.proposal.request.journal
    if not done.attempted:
        return Result("fix", ExitCode.FINDINGS if not plan.empty else ExitCode.OK, done.as_data(),
                      text=lambda: render_plan(plan, done.proposal.keep, [], journal, dry=False))  # fmt: skip
    code = ExitCode.UNREADABLE if done.failed else ExitCode.OK if done.all_gone else ExitCode.FINDINGS
    errors = [{"code": "fix.apply_failed", "message": r.message} for r in done.failed if r.status == "failed"]
    return Result("fix", code, done.as_data(), errors,
                  text=lambda: render_apply(done.results, done.written, done.checks, journal))  # fmt: skip


def _undo(journal: Journal, rules: set[str], host: Host) -> Result:
    results = session.undo_journal(journal, rules, host)
    bad = [r for r in results if r.status in ("refused", "failed")]
    errors = [{"code": f"fix.undo_{r.status}", "message": f"entry {r.entry.id}: {r.message}"} for r in bad]
    data = {"mode": "undo", "journal": str(journal.path), "results": [r.as_dict() for r in results]}
    return Result("fix", ExitCode.UNREADABLE if bad else ExitCode.OK, data, errors,
                  text=lambda: render_undo(results, journal),
                  text_stderr=[f"entry {r.entry.id} ({_what(r.entry)}): {r.message}" for r in bad])  # fmt: skip


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
