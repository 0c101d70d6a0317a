"""`badsum pcap`: verify and classify every checksum in a capture, tunnels included."""

from __future__ import annotations

import argparse
import os
import stat
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from badsum.capture import CaptureOpenError, open_capture
from badsum.capture.pcapng_writer import PcapngWriter
from badsum.cli.argtypes import int_range, port, unsafe_output
from badsum.outfile import UnsafeTarget
from badsum.report.envelope import Envelope
from badsum.report.pcap_report import CaptureMeta, exit_code, render_text, to_data
from badsum.report.sinks import AnnotateSink, JsonLinesSink
from badsum.report.symptoms import write_symptom_lines
from badsum.scan.pipeline import ScanConfig, Scanner

HELP = "verify every checksum in a capture and find the symptoms (SYN ladders, PMTU, ping-only)"
EXAMPLES = """\
examples:
  badsum pcap capture.pcapng                    # the answer, then the flows at fault
  badsum pcap --jsonl capture.pcap | head       # one record per non-ok checksum
  badsum pcap --annotate out.pcapng in.pcap.gz  # copy with a comment on each bad checksum
  tcpdump -i eth0 -w - | badsum pcap -          # from standard input
  badsum pcap --vxlan-port 4790 --jobs 2 big.pcap
  badsum pcap -v slow-connect.pcap              # symptoms with the frames that show them

exit codes: 0 all checksums ok and no failing symptom, 1 bad checksums (or partial ones on received
            packets) or a failing symptom (a connect that never succeeded, ping-only, a PMTU black
            hole ...), 2 usage error (also an --annotate OUT that is the input, or not a regular file
            or a new name: a device, FIFO, socket, directory or symlink), 3 input unreadable or
            damaged (packets before the damage are reported), or OUT cannot be written
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pcap", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="capture file (pcap or pcapng, optionally gzip), or - for stdin")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON envelope {schema_version, command, status, data, errors}")
    out.add_argument("--jsonl", action="store_true", help="print one JSON record per non-ok checksum, then one per symptom")
    p.add_argument("--annotate", metavar="OUT.pcapng",
                   help="write a pcapng copy with a comment on every non-ok checksum; OUT must be a regular file "
                        "or a new name (a device, FIFO, socket, directory or symlink is refused: exit 2)")  # fmt: skip
    p.add_argument("--vxlan-port", metavar="PORT", type=port, action="append", default=[],
                   help="also decode this UDP port as VXLAN (4789 and 8472 always are); repeatable")
    p.add_argument("--jobs", "-j", metavar="N", type=int_range(1, 256), default=1, help="threads for the fast path (default 1)")
    p.add_argument("--no-symptoms", action="store_true", help="checksums only: skip the flow analysis (SYN ladders, PMTU ...)")
    p.add_argument("-v", "--verbose", action="store_true", help="counts per layer and depth, all flows and symptoms with evidence, decode issues")
    p.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")
    p.set_defaults(run=run)


def _say(message: str) -> None:
    """One line on stderr, never wrapped or parsed as markup (file names may contain '[')."""
    print(f"badsum: {message}", file=sys.stderr, flush=True)


def _fail(args: argparse.Namespace, code: str, message: str, data: dict | None = None, exit_code: int = 3) -> int:
    if args.json:
        print(Envelope("pcap", "error", data or {"file": args.file}, [{"code": code, "message": message}]).to_json())
    _say(message)
    return exit_code


def _names_the_input(out: str, file: str) -> bool:
    if os.path.abspath(out) == os.path.abspath(file):
        return True
    if file == "-":
        return False
    try:
        o, i = os.lstat(out), os.stat(file)
    except OSError:
        return False
    # The same file under another spelling (a symlinked directory, a hard link): the rename would
    # take the input's name away from it.
    return stat.S_ISREG(o.st_mode) and (o.st_dev, o.st_ino) == (i.st_dev, i.st_ino)


def _check_annotate(args: argparse.Namespace) -> int | None:
    """The exit code when --annotate's path must not be written; checked before the capture is read."""
    if _names_the_input(args.annotate, args.file):
        return _fail(args, "annotate.is_the_input", "--annotate must not overwrite the input capture", exit_code=2)
    if refused := unsafe_output("--annotate", args.annotate):
        return _fail(args, *refused, exit_code=2)
    return None


def run(args: argparse.Namespace) -> int:
    machine = args.json or args.jsonl
    if args.annotate and (refused := _check_annotate(args)) is not None:
        return refused
    try:
        reader = open_capture(args.file)
    except CaptureOpenError as e:
        return _fail(args, f"capture.{e.reason}", str(e))
    writer = None
    with reader:
        sinks: list = []
        if args.jsonl:
            sinks.append(JsonLinesSink(sys.stdout))
        if args.annotate:
            try:
                writer = PcapngWriter(args.annotate)
            except UnsafeTarget as e:  # it changed since the check above
                return _fail(args, f"annotate.{e.code}", f"--annotate {args.annotate}: {e.strerror}", exit_code=2)
            except OSError as e:
                return _fail(args, "annotate.cannot_write", f"cannot write {args.annotate}: {e.strerror or e}")
            sinks.append(AnnotateSink(writer, reader.interfaces))
        config = ScanConfig(vxlan_ports=tuple(args.vxlan_port), jobs=args.jobs, symptoms=not args.no_symptoms)
        scanner = Scanner(config, sinks)
        # Progress only for a person watching: a real terminal on stderr, whatever FORCE_COLOR says.
        show = not machine and not args.no_progress and sys.stderr.isatty()
        try:
            summary = _run_with_progress(scanner, reader, args.file) if show else scanner.run(reader)
            if writer is not None:
                if reader.errors:
                    writer.abort()  # never leave a copy of half a capture behind
                else:
                    writer.close()
        except OSError as e:
            if writer is not None:
                writer.abort()
            if isinstance(e, BrokenPipeError):
                raise
            where = args.annotate if writer is not None else args.file
            return _fail(args, "io.error", f"cannot write {where}: {e.strerror or e}")
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    meta = CaptureMeta(
        path=args.file,
        format=reader.format,
        compressed=reader.compressed,
        interfaces=len(reader.interfaces),
        errors=[{"code": e.code, "message": e.message, "offset": e.offset} for e in reader.errors],
    )
    code = exit_code(summary, meta)
    if args.json:
        status = "error" if code == 3 else "findings" if code == 1 else "ok"
        print(Envelope("pcap", status, to_data(summary, meta), meta.errors).to_json())
    else:
        if not args.jsonl:
            out = _stdout_console()
            render_text(summary, meta, out, verbose=args.verbose)
            if writer is not None and not reader.errors:
                out.print(f"\nannotated copy: {escape(args.annotate)} ({writer.packets:,} packets)")
        for e in meta.errors:
            _say(f"input damaged at byte {e['offset']}: {e['message']}")
    if args.jsonl:
        write_symptom_lines(summary.symptoms, sys.stdout)
    if writer is not None and reader.errors:
        _say(f"no annotated copy written: the input is damaged ({args.annotate} left as it was)")
    return code


class _StdoutConsole(Console):
    def on_broken_pipe(self) -> None:
        # rich exits 1 when the reader goes away (`badsum pcap F | head`): that would read as
        # "findings". Hand it to main(), which exits 141 as a SIGPIPE'd process would.
        raise BrokenPipeError


def _stdout_console() -> Console:
    # Piped output is read by people too: do not hard-wrap it at 80 columns.
    probe = Console()
    if probe.is_terminal:
        return _StdoutConsole(highlight=False)
    return _StdoutConsole(highlight=False, width=160, soft_wrap=True)


def _run_with_progress(scanner: Scanner, reader, path: str):  # noqa: ANN001
    console = Console(stderr=True, highlight=False)
    total = None
    if path != "-" and not reader.compressed:
        try:
            total = os.stat(path).st_size
        except OSError:
            total = None
    columns = [TextColumn("[bold]scanning[/]"), BarColumn(), TextColumn("{task.fields[pkts]} packets")]
    if total:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("scan", total=total, pkts="0")

        def tick(batch) -> None:  # noqa: ANN001
            progress.update(task, completed=reader.bytes_read, pkts=f"{scanner.summary.packets:,}")

        return scanner.run(reader, progress=tick)
