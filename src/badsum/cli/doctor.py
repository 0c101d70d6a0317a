"""`badsum doctor`: snapshot the host (every network namespace), evaluate the known-issue rules."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from badsum.cli.argtypes import pick_namespaces, unsafe_output
from badsum.cli.result import ExitCode, Failure, Result
from badsum.cli.snapshot import read_snapshot
from badsum.outfile import atomic_write
from badsum.rules.engine import evaluate, load_rules, notes, problems
from badsum.rules.model import Finding, Outcome

HELP = "snapshot this host's namespaces and check them against the known checksum and MTU issues"
EXAMPLES = """\
examples:
  sudo badsum doctor                       # every namespace; the problems first, with the fix
  sudo badsum doctor --namespace web1 -v   # one namespace, also what passed, and the map as a tree
  sudo badsum doctor --save node1.json     # ... and keep the snapshot
  badsum doctor --from node1.json --json   # the same findings anywhere, without root
  sudo badsum doctor --html map.html       # ... and the host map with the findings on it (needs graphviz)

exit codes: 0 nothing wrong, 1 findings (fail or warn), 2 usage (an unknown --namespace; --save naming
            a device, FIFO, socket, directory or symlink), 3 could not inspect (not root, unreadable
            snapshot, --save failed, --html without Graphviz's dot or not written)
"""
OUTCOME_WORD = {Outcome.FAIL: "FAIL", Outcome.WARN: "WARN", Outcome.PASS: "PASS", Outcome.SKIP: "SKIP",
                Outcome.UNKNOWN: "UNKNOWN"}  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.add_argument("--save", metavar="FILE",
                   help="also write the host snapshot to FILE (JSON), for --from; a regular file or a new name")
    p.add_argument("--html", metavar="FILE",
                   help="also write the host map (namespaces, veth pairs, bridges, OVS, tunnels, MTUs, offloads) with "
                        "the findings drawn on it: one self-contained HTML file; needs Graphviz's dot")  # fmt: skip
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="evaluate a saved snapshot instead of this host (no root needed; - reads stdin)")
    p.add_argument("--namespace", "-n", metavar="NS", action="append", default=[],
                   help="only this namespace (id, netns name, or pid:PID; host is the root one); repeatable")
    p.add_argument("--interval", metavar="SECONDS", type=_interval, default=1.0,
                   help="time between the two samples of the checksum counters (default 1; live only)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also list what passed, did not apply, or could not be evaluated, then the host map as a tree "
                        "(namespaces, interfaces, bridges and their ports, tunnels, MTUs, offloads; !! marks a finding's objects)")  # fmt: skip
    p.set_defaults(run=run)


def _interval(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < v <= 60:
        raise argparse.ArgumentTypeError("--interval takes more than 0 and at most 60 seconds")
    return v


@dataclass
class DoctorResult:
    """What one run found: the snapshot's identity, the findings and what could not be inspected."""

    snapshot: Any
    source: str
    findings: list[Finding]
    scope: list[str]
    errors: list[dict[str, str]] = field(default_factory=list)
    fatal: bool = False
    saved: str | None = None
    html: str | None = None

    @property
    def problems(self) -> list[Finding]:
        return problems(self.findings)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.UNREADABLE if self.fatal else ExitCode.FINDINGS if self.problems else ExitCode.OK

    def counts(self) -> dict[str, int]:
        out = {o.value: 0 for o in Outcome}
        for f in self.findings:
            out[f.outcome.value] += 1
        return out

    def as_data(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "source": self.source,
            "host": s.hostname,
            "kernel": s.kernel.release,
            "taken_at": s.taken_at,
            "root": s.root,
            "namespaces": self.scope,
            "rules": len(load_rules()),
            "counts": self.counts(),
            "findings": [f.as_dict() for f in self.problems],
            "outcomes": [f.as_dict() for f in self.findings if f.outcome not in (Outcome.FAIL, Outcome.WARN)],
            "saved": self.saved,
            "html": self.html,
            # Container and pod names of the namespaces in scope, as the runtime gives them.
            "owners": {ns: asdict(o) for ns, o in sorted(getattr(s, "owners", {}).items()) if ns in self.scope},
            "cni": [{**asdict(c), "evidence": c.evidence} for c in getattr(s, "cni", ())],
            "kernel_log": None if getattr(s, "kernel_log", None) is None else {
                "source": s.kernel_log.source, "records": s.kernel_log.records, "counts": s.kernel_log.counts,
                "truncated": s.kernel_log.truncated, "error": s.kernel_log.error},
        }  # fmt: skip


def collect(interval: float) -> Any:
    try:
        from badsum.host.collect import collect_snapshot
    except ImportError as e:
        raise Failure("doctor.no_collector", f"live inspection is not available ({e}); use --from FILE") from None
    # Every namespace is read even with --namespace: a veth's peer, the bridge or the Open vSwitch
    # instance behind a namespace live in others, and without them its rules could not be evaluated.
    # --namespace scopes the findings (engine.evaluate), not the facts.
    try:
        return collect_snapshot(time.time(), counter_interval=interval, namespaces=None)
    except PermissionError as e:
        raise Failure("doctor.not_root", f"cannot inspect this host: {e.strerror or e}; run `sudo badsum doctor`") from None
    except (OSError, RuntimeError, ValueError, TimeoutError) as e:
        raise Failure("doctor.cannot_inspect", f"cannot inspect this host: {e}") from None


def save(snapshot: Any, path: str) -> None:
    """Write atomically: a crash leaves the old file (or none), never half a snapshot."""
    try:
        atomic_write(Path(path), (snapshot.to_json() + "\n").encode())
    except OSError as e:
        raise Failure("snapshot.cannot_save", f"cannot write {path}: {e.strerror or e}") from None


def diagnose(args: argparse.Namespace) -> DoctorResult:
    """Failure (exit 3) when nothing could be inspected, (exit 2) for an unknown --namespace."""
    snapshot = read_snapshot(args.from_file) if args.from_file else collect(args.interval)
    scope_ids: set[str] | None = None
    if args.namespace:
        scope_ids = {ns.id for ns in pick_namespaces("--namespace", snapshot.namespaces, args.namespace)}
    errors = [{"code": code, "message": msg} for code, msg in notes(snapshot)]
    findings = evaluate(snapshot, namespaces=scope_ids)
    scope = [ns.id for ns in snapshot.namespaces if scope_ids is None or ns.id in scope_ids]
    result = DoctorResult(snapshot, args.from_file or "live", findings, scope, errors, fatal=not snapshot.root)
    if args.save:
        try:
            save(snapshot, args.save)
            result.saved = args.save
        except Failure as e:
            result.errors.append({"code": e.code, "message": e.message})
            result.fatal = True
    if getattr(args, "html", None):
        try:
            write_html(result, args.html)
            result.html = args.html
        except Failure as e:
            result.errors.append({"code": e.code, "message": e.message})
            result.fatal = True
    return result


def write_html(result: DoctorResult, path: str) -> None:
    from badsum.report.html_doctor import doctor_page, host_dot
    from badsum.report.html_io import LayoutError, dot_to_svg, write_page

    scoped = len(result.scope) != len(result.snapshot.namespaces)
    m = host_dot(result.snapshot, result.findings, scope=set(result.scope) if scoped else None)
    try:
        svg = dot_to_svg(m.dot)
        write_page(path, doctor_page(result.snapshot, result.findings, m, svg))
    except LayoutError as e:
        raise Failure("html.no_layout", str(e)) from None
    except OSError as e:
        raise Failure("html.cannot_write", f"cannot write {path}: {e.strerror or e}") from None


def run(args: argparse.Namespace) -> Result:
    source = {"source": args.from_file or "live", "findings": []}
    if args.save and (refused := unsafe_output("--save", args.save)):
        return Result.failed("doctor", Failure(*refused, ExitCode.USAGE), source)
    if getattr(args, "html", None):
        from badsum.report.html_io import have_dot

        if refused := unsafe_output("--html", args.html):
            return Result.failed("doctor", Failure(*refused, ExitCode.USAGE), source)
        if not have_dot():  # said before the snapshot is taken: no work, no file
            return Result.failed("doctor", Failure("html.no_dot", "--html needs Graphviz's dot to lay out the map "
                                                   "(apt-get install graphviz); nothing written"), source)  # fmt: skip
    try:
        result = diagnose(args)
    except Failure as e:
        return Result.failed("doctor", e, source)
    said = [e["message"] for e in result.errors if e["code"] == "snapshot.cannot_save" or e["code"].startswith("html.")]
    return Result("doctor", result.exit_code, result.as_data(), result.errors,
                  text=lambda: render_text(result, verbose=args.verbose), text_stderr=said)  # fmt: skip


# -- text -------------------------------------------------------------------------------------


def _when(taken_at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(taken_at))


def _objects(f: Finding, owners: dict | None = None) -> str:
    """The finding's objects; a namespace a runtime names gets its name (`= docker web-1`)."""
    owners = owners or {}
    parts = []
    for o in f.objects:
        text = f"{o.ns if o.kind == 'namespace' else o} ({o.kind})"
        if o.ns in owners:
            text += f" = {owners[o.ns].label()}"
        parts.append(text)
    return ", ".join(parts) or "-"


def _block(label: str, lines: list[str]) -> list[str]:
    pad = " " * 16
    return [f"  {label:<13} {lines[0]}"] + [pad + line for line in lines[1:]] if lines else []


def render_finding(f: Finding, owners: dict | None = None) -> list[str]:
    out = [f"{OUTCOME_WORD[f.outcome]:<5} {f.severity.label:<8} {f.rule}  {f.title}"]
    out += _block("objects:", [_objects(f, owners)])
    out += _block("why:", [f.reason])
    out += _block("evidence:", [f.evidence])
    fixes: list[str] = []
    for i, a in enumerate(f.fix):
        fixes.append(a.command())
        last = i + 1 == len(f.fix) or f.fix[i + 1].cost != a.cost
        if a.cost and last:  # one cost line under the commands it belongs to
            fixes.append(f"  # cost: {a.cost}")
    out += _block("fix:", fixes or ["no single command: see the remediation below"])
    out += _block("remediation:", [_remediation(f.rule)])
    out += _block("references:", list(f.references))
    return out


def _remediation(rule_id: str) -> str:
    return next((r.remediation for r in load_rules() if r.id == rule_id), "")


def render_text(result: DoctorResult, verbose: bool = False) -> str:
    s = result.snapshot
    found = result.problems
    counts = result.counts()
    n_ns = len(result.scope)
    context = f"kernel {s.kernel.release}, {n_ns} namespace{'s' if n_ns != 1 else ''}, {len(load_rules())} rules"
    if found:
        head = (f"badsum doctor: {len(found)} problem{'s' if len(found) != 1 else ''} on {s.hostname}: "
                f"{counts['fail']} fail, {counts['warn']} warn ({context})")  # fmt: skip
    else:
        head = f"badsum doctor: nothing wrong found on {s.hostname} ({context})"
    lines = [head]
    if result.source != "live":
        lines.append(f"snapshot: {result.source}, taken {_when(s.taken_at)}")
    if result.fatal:
        lines.append("incomplete: see the notes below; the exit code is 3")
    lines += [f"note: {e['message']}" for e in result.errors]
    owners = getattr(s, "owners", {})
    for f in found:
        lines.append("")
        lines += render_finding(f, owners)
    rest = [f for f in result.findings if f not in found]
    lines.append("")
    tally = f"{counts['pass']} passed, {counts['skip']} did not apply, {counts['unknown']} could not be evaluated"
    if verbose:
        lines.append(f"other outcomes: {tally}")
        for f in rest:
            obj = _objects(f, owners) if f.objects else "-"
            lines.append(f"  {OUTCOME_WORD[f.outcome]:<7} {f.rule:<21} {obj}: {f.reason}")
    else:
        lines.append(f"{tally} (-v lists them)")
    if cnis := getattr(s, "cni", ()):
        lines.append("seen on this host: " + "; ".join(f"{c.name}" + (f" ({c.overlay})" if c.overlay else "")
                                                     + (f": {c.evidence}" if verbose else "") for c in cnis))  # fmt: skip
    log = getattr(s, "kernel_log", None)
    if verbose and log is not None:
        lines.append(f"kernel log: {log.error}" if log.source is None else
                     f"kernel log ({log.source}, {log.records} records): " + (", ".join(
                         f"{n} {k}" for k, n in sorted(log.counts.items())) or "no checksum, offload or tunnel MTU lines"))  # fmt: skip
    if verbose:
        from badsum.report.host_tree import host_tree

        scoped = len(result.scope) != len(s.namespaces)
        lines += ["", *host_tree(s, result.findings, scope=set(result.scope) if scoped else None)]
    return "\n".join(lines) + "\n"


__all__ = ["diagnose", "read_snapshot", "register", "render_text", "run"]
