"""`badsum lab`: rebuild known incidents on the real kernel in throwaway namespaces."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from badsum.cli.result import ExitCode, Failure, Result, say
from badsum.lab.lab import LabError
from badsum.lab.runner import CommandError
from badsum.lab.scenarios import SCENARIOS, find
from badsum.lab.state import PREFIX_RE, clean

HELP = "reproduce known incidents on the real kernel in throwaway namespaces"
EXAMPLES = """\
examples:
  badsum lab list
  sudo badsum lab run ovs-userspace-veth          # ping works, TCP fails (KB-005)
  sudo badsum lab run ovs-userspace-veth --fix    # ... and the fix makes TCP work
  sudo badsum lab clean                           # remove leftovers of a crashed run

exit codes (run): 0 symptom not observed, 1 symptom observed, 2 usage (unknown scenario),
                  3 could not run (not root, a tool missing, a prefix collision),
                  130 interrupted (SIGINT or SIGTERM; the lab is torn down first)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    labsub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    labsub.required = True
    ls = labsub.add_parser("list", help="the scenarios", epilog="example:\n  badsum lab list --json",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("--json", action="store_true", help="print the JSON envelope")
    ls.set_defaults(run=run_list)
    r = labsub.add_parser("run", help="build a scenario, drive traffic, capture, tear down",
                          epilog="example:\n  sudo badsum lab run ovs-userspace-veth --fix --out /tmp/kb005",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("scenario", metavar="NAME", help="a scenario from `badsum lab list`")
    r.add_argument("--fix", action="store_true", help="apply the documented fix and check the symptom is gone")
    r.add_argument("--full", action="store_true",
                   help="the scenario's full variant where it has one (vxlan-double-snat: wait out the whole SYN "
                        "ladder, 1+2+4+8+16+32 s, instead of stopping at 3.5 s)")  # fmt: skip
    r.add_argument("--keep", action="store_true", help="leave the namespaces up for inspection (`badsum lab clean` removes them)")
    r.add_argument("--out", metavar="DIR", help="where captures and result.json go (default ./badsum-lab/NAME-TIME)")
    r.add_argument("--prefix", metavar="PREFIX", help="object prefix (bs + 6 hex digits; default random)")
    r.add_argument("--json", action="store_true", help="print the result as the JSON envelope")
    r.set_defaults(run=run_scenario)
    c = labsub.add_parser("clean", help="remove what crashed or --keep runs left, by prefix and nothing else",
                          epilog="example:\n  sudo badsum lab clean --prefix bs1a2b3c",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--prefix", metavar="PREFIX", help="only this run (default: every journal found)")
    c.add_argument("--json", action="store_true", help="print the JSON envelope")
    c.set_defaults(run=run_clean)


def _prefix(args: argparse.Namespace) -> Failure | None:
    if args.prefix and not PREFIX_RE.match(args.prefix):
        return Failure("lab.prefix", f"--prefix must be 'bs' and 6 hex digits, not {args.prefix!r}", ExitCode.USAGE)
    return None


def run_list(args: argparse.Namespace) -> Result:
    rows = [{"name": s.name, "title": s.title, "kb": list(s.kb), "needs_ovs": s.needs_ovs} for s in SCENARIOS]
    width = max(len(r["name"]) for r in rows)
    text = "".join(f"{r['name']:<{width}}  {r['title']} ({', '.join(r['kb'])})\n" for r in rows)
    return Result("lab list", ExitCode.OK, {"scenarios": rows}, text=text)


def run_scenario(args: argparse.Namespace) -> Result:
    scenario = find(args.scenario)
    if scenario is None:
        return Result.failed("lab run", Failure("lab.unknown_scenario", f"unknown scenario {args.scenario!r}; `badsum lab list` "
                                                "shows them: " + ", ".join(s.name for s in SCENARIOS), ExitCode.USAGE))  # fmt: skip
    if refused := _prefix(args):
        return Result.failed("lab run", refused)
    if args.full and scenario.full is None:
        with_full = ", ".join(s.name for s in SCENARIOS if s.full) or "none"
        return Result.failed("lab run", Failure("lab.no_full_variant", f"{scenario.name} has no full variant "
                                                f"(scenarios with one: {with_full})", ExitCode.USAGE))  # fmt: skip
    out = Path(args.out or f"badsum-lab/{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if sys.stderr.isatty() and not args.json:
        say(f"running {scenario.name} in throwaway namespaces (captures in {out}) ...")
    try:
        result = scenario.run(out, fix=args.fix, keep=args.keep, prefix=args.prefix, full=args.full)
    except (LabError, CommandError, TimeoutError, OSError) as e:
        # OSError: the output folder (or the journal) cannot be written; teardown has run already.
        msg = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename and e.strerror else str(e)
        return Result.failed("lab run", Failure("lab.cannot_run", msg), {"scenario": scenario.name})
    except (ValueError, KeyError, IndexError, RuntimeError) as e:
        # A scenario that broke is not a symptom: exit 3, never 1, and one line, not a traceback.
        msg = f"{scenario.name} could not finish: {type(e).__name__}: {e} (teardown has run)"
        return Result.failed("lab run", Failure("lab.scenario_failed", msg), {"scenario": scenario.name})
    kept = [f"kept namespaces {result.prefix}-*; remove them with `badsum lab clean --prefix {result.prefix}`"] if args.keep else []
    return Result("lab run", ExitCode.FINDINGS if result.symptom_observed else ExitCode.OK, result.as_dict(),
                  text=result.summary, stderr=kept)  # fmt: skip


def run_clean(args: argparse.Namespace) -> Result:
    if refused := _prefix(args):
        return Result.failed("lab clean", refused)
    report = clean(args.prefix)
    data = {"prefixes": report.prefixes, "namespaces": report.namespaces, "killed": report.killed,
            "running": report.running}
    errors = [{"code": "lab.clean", "message": e} for e in report.errors]
    said = [f"left alone, still running: {', '.join(report.running)}"] if report.running and not args.prefix else []
    text = (f"removed {len(report.namespaces)} namespace(s) of {len(report.prefixes)} run(s); "
            f"stopped {len(report.killed)} process(es)\n")  # fmt: skip
    return Result("lab clean", ExitCode.UNREADABLE if errors else ExitCode.OK, data, errors, text=text,
                  text_stderr=[*said, *report.errors])  # fmt: skip


__all__ = ["register", "run_clean", "run_list", "run_scenario"]
