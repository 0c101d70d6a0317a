"""`badsum canary`: test this host's container datapaths, with its offload settings, in throwaway namespaces."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from badsum.cli.argtypes import unsafe_output
from badsum.lab import canary
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

exit codes: 0 every datapath tested passes, 1 a datapath breaks valid TCP or delivers corrupt data,
            2 usage (also a --state-file that is a device, FIFO, socket, directory or symlink),
            3 could not run (not root, a tool missing) or could not decide
"""
STATUS = {"PASS": "ok", "FAIL": "findings", "UNKNOWN": "error"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("canary", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--all", action="store_true", help="test every datapath, not only those this host has")
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.add_argument("--out", metavar="DIR", help="keep each cell's capture (pcapng with kernel status) in DIR")
    p.add_argument("--prefix", metavar="PREFIX", help="object prefix (bs + 6 hex digits; default random)")
    p.add_argument("--state-file", metavar="FILE",
                   help="also write the result (the --json envelope, with data.finished_at) to FILE, atomically; "
                        "`badsum exporter` reads it; a regular file or a new name")  # fmt: skip
    p.set_defaults(run=run)


def _say(msg: str) -> None:
    print(f"badsum: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.prefix and not PREFIX_RE.match(args.prefix):
        _say(f"--prefix must be 'bs' and 6 hex digits, not {args.prefix!r}")
        return 2
    if args.state_file and (refused := unsafe_output("--state-file", args.state_file)):
        # Refused before any namespace is made: a rename would replace a FIFO or a device there.
        if args.json:
            print(Envelope("canary", "error", {}, [{"code": refused[0], "message": refused[1]}]).to_json())
        _say(refused[1])
        return 2
    progress = (lambda msg: _say(f"canary: {msg}")) if sys.stderr.isatty() else None
    try:
        report = canary.run(all_datapaths=args.all, prefix=args.prefix, out=Path(args.out) if args.out else None,
                            progress=progress)  # fmt: skip
    except (LabError, CommandError, TimeoutError, OSError) as e:
        if args.json:
            print(Envelope("canary", "error", {}, [{"code": "canary.cannot_run", "message": str(e)}]).to_json())
        _say(str(e))
        return 3
    code = {"PASS": 0, "FAIL": 1, "UNKNOWN": 3}[report.status]
    if args.state_file and not write_state(args.state_file, report):
        code = 3
    if args.json:
        errors = [{"code": "canary.undecided", "message": f"{o.datapath}: {o.why}"} for o in report.outcomes if o.status == "UNKNOWN"]
        print(Envelope("canary", STATUS[report.status], report.as_dict(), errors).to_json())
    else:
        print(render(report), end="")
    return code


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
        _say(f"cannot write {path}: {e.strerror or e}")
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
