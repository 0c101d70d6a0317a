"""`badsum canary`: test this host's container datapaths, with its offload settings, in throwaway namespaces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from badsum.cli.argtypes import unsafe_output
from badsum.cli.result import ExitCode, Failure, Result, say
from badsum.lab import canary, canary_docker
from badsum.lab.lab import LabError
from badsum.lab.runner import CommandError
from badsum.lab.state import PREFIX_RE
from badsum.report.envelope import Envelope

HELP = "test this host's datapaths and offload settings in throwaway namespaces (pass/fail)"
EXAMPLES = """\
examples:
  sudo badsum canary                 # the datapaths this host has, with its tx/rx settings
  sudo badsum canary --all           # every datapath: veth, bridge, ovs-netdev, vxlan
  sudo badsum canary --json | jq .data.status
  sudo badsum canary --docker-host unix:///run/docker.sock --json | jq '.data.docker[].networks'

exit codes: 0 every datapath tested passes, 1 a datapath breaks valid TCP or delivers corrupt data,
            2 usage (also a --state-file that is a device, FIFO, socket, directory or symlink),
            3 could not run (not root, a tool missing) or could not decide
"""
STATUS = {"PASS": "ok", "FAIL": "findings", "UNKNOWN": "error"}
EXIT = {"PASS": ExitCode.OK, "FAIL": ExitCode.FINDINGS, "UNKNOWN": ExitCode.UNREADABLE}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("canary", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--all", action="store_true", help="test every datapath, not only those this host has")
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.add_argument("--out", metavar="DIR", help="keep each cell's capture (pcapng with kernel status) in DIR")
    p.add_argument("--prefix", metavar="PREFIX", help="object prefix (bs + 6 hex digits; default random)")
    p.add_argument("--docker-host", metavar="unix://PATH",
                   help="ask only this Docker engine's API socket (read-only GET requests); default: every running "
                        "dockerd, found by its process and its -H sockets")  # fmt: skip
    p.add_argument("--state-file", metavar="FILE",
                   help="also write the result (the --json envelope, with data.finished_at) to FILE, atomically; "
                        "`badsum exporter` reads it; a regular file or a new name")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> Result:
    if args.prefix and not PREFIX_RE.match(args.prefix):
        return Result.failed("canary", Failure("canary.prefix", f"--prefix must be 'bs' and 6 hex digits, not {args.prefix!r}",
                                                ExitCode.USAGE))  # fmt: skip
    if args.state_file and (refused := unsafe_output("--state-file", args.state_file)):
        # Refused before any namespace is made: a rename would replace a FIFO or a device there.
        return Result.failed("canary", Failure(*refused, ExitCode.USAGE))
    if args.docker_host and not args.docker_host.startswith("unix://"):
        return Result.failed("canary", Failure("canary.docker_host", f"--docker-host must be unix://PATH, not {args.docker_host!r}",
                                                ExitCode.USAGE))  # fmt: skip
    progress = (lambda msg: say(f"canary: {msg}")) if sys.stderr.isatty() else None
    try:
        report = canary.run(all_datapaths=args.all, prefix=args.prefix, out=Path(args.out) if args.out else None,
                            progress=progress, docker_host=args.docker_host)  # fmt: skip
    except (LabError, CommandError, TimeoutError, OSError) as e:
        return Result.failed("canary", Failure("canary.cannot_run", str(e)))
    code = EXIT[report.status]
    if args.state_file and not write_state(args.state_file, report):
        code = ExitCode.UNREADABLE
    errors = [{"code": "canary.undecided", "message": f"{o.datapath}: {o.why}"} for o in report.outcomes if o.status == "UNKNOWN"]
    # The status is the canary's verdict; a state file that could not be written is only the exit code's.
    return Result("canary", code, report.as_dict(), errors, text=lambda: render(report), status=STATUS[report.status])


def write_state(path: str, report: canary.CanaryReport) -> bool:
    """The result for `badsum exporter`: written to a temporary file and renamed, never half-written."""
    import os
    import time
    from pathlib import Path

    from badsum.fix.journal import atomic_write

    doc = Envelope("canary", STATUS[report.status], report.as_dict() | {"finished_at": time.time()}).to_json()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write(Path(path), (doc + "\n").encode())
    except OSError as e:
        say(f"cannot write {path}: {e.strerror or e}")
        return False
    return True


def render(report: canary.CanaryReport) -> str:
    """The answer first, then one row per cell, then why and what was detected."""
    tested = [o for o in report.outcomes if o.cells]
    failing = [o for o in tested if o.status == "FAIL"]
    if failing:
        head = "FAIL: " + "; ".join(f"{o.datapath}: {o.why}" for o in failing)
    elif not tested:
        head = "PASS: nothing to test (no veth, bridge, OVS netdev or VXLAN here; --all tests them anyway)"
    elif report.status == "UNKNOWN":
        head = "UNKNOWN: " + "; ".join(f"{o.datapath}: {o.why}" for o in tested if o.status == "UNKNOWN")
    else:
        head = f"PASS: {', '.join(o.datapath for o in tested)}: TCP intact and corrupt datagrams dropped"
    lines = [head, ""]
    # A Docker host's own question, "is my Docker datapath fine?", answered next.
    docker = [line for eng in report.docker for line in canary_docker.summary(eng)]
    if docker:
        lines += [*docker, ""]
    rows = [("datapath", "result", "tx", "rx", "tcp", "corrupt", "checksums", "settings from")]
    for o in tested:
        for c in o.cells:
            sums = {True: "complete", False: "UNFINISHED", None: "-"}[c["wire_complete"]]
            if c["wire_complete"] and c["wire"]["partial_pending"]:
                sums = "pending"  # the kernel still owes them: an offload artifact, not a fault
            rows.append((o.datapath, o.status, c["tx"], c["rx"], "ok" if c["tcp"] else "BROKEN",
                         {True: "dropped", False: "DELIVERED", None: "?"}[c["corrupt_dropped"]], sums, c["settings"]))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows if tested else ():
        lines.append("  ".join(f"{v:<{w}}" for v, w in zip(r, widths)) + "  " + r[-1])
    if tested:
        lines.append("")
    for o in report.outcomes:
        if o.status in ("PASS", "UNKNOWN"):
            lines.append(f"{o.datapath}: {o.status}: {o.why}")
        elif o.status == "SKIP":
            lines.append(f"{o.datapath}: not tested: {o.why}")
    present = [f"{o.datapath} ({'; '.join(o.reasons)})" for o in report.outcomes if o.present]
    absent = [o.datapath for o in report.outcomes if not o.present]
    lines.append("found on this host: " + (", ".join(present) if present else "none of the matrix's datapaths"))
    if absent:
        lines.append(f"not found: {', '.join(absent)}" + ("" if report.all else " (--all tests them anyway)"))
    where = f"namespaces {report.prefix}-* removed" if report.prefix else "no namespaces needed"
    lines.append(f"kernel {report.kernel}; {report.duration_s:.1f} s; {where}")
    return "\n".join(lines) + "\n"
