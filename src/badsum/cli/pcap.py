"""`badsum pcap`: verify and classify every checksum in a capture, tunnels included."""

from __future__ import annotations

import argparse
import ipaddress
import os
import stat
import sys
from typing import TYPE_CHECKING

from badsum.analyze import ScanConfig, Scanner, ScanSummary
from badsum.capture import CaptureOpenError, CaptureReader, open_capture
from badsum.cli.argtypes import int_range, port, unsafe_output
from badsum.cli.result import ExitCode, Failure, Result, say
from badsum.flows.udp6 import Receiver
from badsum.outfile import UnsafeTarget
from badsum.report.envelope import Envelope
from badsum.report.output import OutputError, Stdout, cannot_write, stdout
from badsum.report.pcap_report import (
    CaptureMeta,
    exit_code,
    render_text,
    report_errors,
    to_data,
)
from badsum.report.sinks import AnnotateSink, JsonLinesSink
from badsum.report.symptoms import write_symptom_lines

if TYPE_CHECKING:
    from rich.console import Console

    from badsum.capture.pcapng_writer import PcapngWriter
    from badsum.host.model import HostSnapshot

# Start-up: what only some runs need (rich for text, the snapshot reader, the pcapng writer) is
# imported where it is used; `badsum pcap --jsonl` pays for the scan and the flow analysis only.

HELP = "verify every checksum in a capture and find the symptoms (SYN ladders, PMTU, ping-only)"
EXAMPLES = """\
examples:
  badsum pcap capture.pcapng                    # the answer, then the flows at fault
  badsum pcap --jsonl capture.pcap | head       # one record per non-ok checksum
  badsum pcap --annotate out.pcapng in.pcap.gz  # copy with a comment on each bad checksum
  tcpdump -i eth0 -w - | badsum pcap -          # from standard input
  badsum pcap --vxlan-port 4790 --jobs 2 big.pcap
  badsum pcap -v slow-connect.pcap              # symptoms with the frames that show them
  badsum pcap --snapshot node2.json dns6.pcap   # with the receiver's checksum counters (doctor --save)

exit codes: 0 all checksums ok and no failing symptom, 1 bad checksums (or partial ones on received
            packets) or a failing symptom (a connect that never succeeded, ping-only, a PMTU black
            hole ...), 2 usage error (also an --annotate OUT that is empty, the input, or not a
            regular file or a new name: a device, FIFO, socket, directory or symlink; --snapshot with
            --no-symptoms), 3 input or --snapshot unreadable or damaged (packets before the damage are
            reported), not one record in it could be decoded, or OUT or standard output cannot be
            written; notes (info symptoms, such as tunnel-zero-csum) never change the exit code
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
    p.add_argument("--snapshot", metavar="FILE",
                   help="a host snapshot (`badsum doctor --save`, taken while the traffic ran): its namespaces' "
                        "checksum counters join the flows (UDPv6 sums right, Udp6InCsumErrors rising: KB-011)")  # fmt: skip
    p.add_argument("--no-symptoms", action="store_true", help="checksums only: skip the flow analysis (SYN ladders, PMTU ...)")
    p.add_argument("-v", "--verbose", action="store_true", help="counts per layer and depth, all flows and symptoms with evidence, decode issues")
    p.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")
    p.add_argument("--html", metavar="FILE",
                   help="also write the checksum counts per layer, the bad and partial ones over the capture's time, "
                        "each SYN retry ladder on a time axis and the PMTU events: one self-contained HTML file")  # fmt: skip
    p.set_defaults(run=run)


def receivers_from_snapshot(snapshot: HostSnapshot) -> tuple[Receiver, ...]:
    """Namespaces of a host snapshot sampled twice: their counter increases and addresses (no prefix)."""
    out = []
    for ns in snapshot.namespaces:
        if ns.counters is None:
            continue
        addrs = frozenset(str(ipaddress.ip_interface(a).ip) for link in ns.links for a in link.addresses if _is_address(a))
        out.append(Receiver(ns.id, addrs, ns.counters.rising(), float(ns.counters.interval_s)))
    return tuple(out)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


def _refuse(args: argparse.Namespace, out: Stdout, failure: Failure) -> int:
    """Say why on stderr and, under --json, print the error envelope to `out` (the checked stdout)."""
    say(failure.message)
    if args.json:
        print(Result.failed("pcap", failure, {"file": args.file}).envelope().to_json(), file=out)
        out.flush()
    return int(failure.exit_code)


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


def _check_annotate(args: argparse.Namespace, out: Stdout) -> int | None:
    """The exit code when --annotate's path must not be written; checked before the capture is read."""
    if not args.annotate:  # `--annotate "$OUT"` with OUT unset: an empty name writes nothing anywhere
        return _refuse(args, out, Failure("annotate.empty_path", "--annotate needs a file name, not an empty string", ExitCode.USAGE))
    if _names_the_input(args.annotate, args.file):
        return _refuse(args, out, Failure("annotate.is_the_input", "--annotate must not overwrite the input capture", ExitCode.USAGE))
    if refused := unsafe_output("--annotate", args.annotate):
        return _refuse(args, out, Failure(*refused, ExitCode.USAGE))
    return None


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args, stdout())
    except OutputError as e:  # > /dev/full, >&-: the report cannot be delivered (EPIPE is main's: 141)
        return cannot_write(e)


def _run(args: argparse.Namespace, out: Stdout) -> int:
    if args.annotate is not None and (refused := _check_annotate(args, out)) is not None:
        return refused
    if getattr(args, "html", None):
        if _names_the_input(args.html, args.file):
            return _refuse(args, out, Failure("html.is_the_input", "--html must not overwrite the input capture", ExitCode.USAGE))
        if refused := unsafe_output("--html", args.html):
            return _refuse(args, out, Failure(*refused, ExitCode.USAGE))
    receivers: tuple[Receiver, ...] = ()
    if args.snapshot is not None:
        if args.no_symptoms:
            return _refuse(args, out, Failure("snapshot.without_symptoms", "--snapshot feeds the flow analysis: "
                                                                          "not with --no-symptoms", ExitCode.USAGE))
        from badsum.cli.snapshot import read_snapshot

        try:
            receivers = receivers_from_snapshot(read_snapshot(args.snapshot))
        except Failure as e:
            return _refuse(args, out, e)
    try:
        reader = open_capture(args.file)
    except CaptureOpenError as e:
        return _refuse(args, out, Failure(f"capture.{e.reason}", str(e), ExitCode.UNREADABLE))
    with reader:
        scanned = _scan(args, out, reader, receivers)
    if isinstance(scanned, int):
        return scanned
    summary, writer = scanned
    meta = CaptureMeta(
        path=args.file,
        format=reader.format,
        compressed=reader.compressed,
        interfaces=len(reader.interfaces),
        errors=[{"code": e.code, "message": e.message, "offset": e.offset} for e in reader.errors],
        empty_records=reader.empty_records,
        snapshot=args.snapshot,
        counter_namespaces=len(receivers),
    )
    code = exit_code(summary, meta)
    errors = report_errors(summary, meta)
    if getattr(args, "html", None):
        from badsum.report.html_io import write_page
        from badsum.report.html_pcap import pcap_page

        try:
            series = summary.timeline.series() if summary.timeline is not None else None
            write_page(args.html, pcap_page(to_data(summary, meta), series))
        except OSError as e:
            errors.append({"code": "html.cannot_write", "message": f"cannot write {args.html}: {e.strerror or e}"})
            code = int(ExitCode.UNREADABLE)
    if args.json:
        status = "error" if code == 3 else "findings" if code == 1 else "ok"
        print(Envelope("pcap", status, to_data(summary, meta), errors).to_json(), file=out)
    else:
        if not args.jsonl:
            console = _stdout_console(out)
            render_text(summary, meta, console, verbose=args.verbose)
            if writer is not None and not reader.errors:
                from rich.markup import escape

                console.print(f"\nannotated copy: {escape(args.annotate)} ({writer.packets:,} packets)")
        for e in errors:
            say(f"input damaged at byte {e['offset']}: {e['message']}" if "offset" in e else e["message"])
    if args.jsonl:
        write_symptom_lines(summary.symptoms, out)
    out.flush()
    if writer is not None and reader.errors:
        say(f"no annotated copy written: the input is damaged ({args.annotate} left as it was)")
    return code


def _scan(args: argparse.Namespace, out: Stdout, reader: CaptureReader,
          receivers: tuple[Receiver, ...] = ()) -> tuple[ScanSummary, PcapngWriter | None] | int:  # fmt: skip
    """Run the capture through the scanner and the sinks; an exit code when the copy cannot be written."""
    writer = None
    sinks: list = []
    if args.jsonl:
        sinks.append(JsonLinesSink(out))
    if args.annotate:
        from badsum.capture.pcapng_writer import PcapngWriter

        try:
            writer = PcapngWriter(args.annotate)
        except UnsafeTarget as e:  # it changed since the check above
            return _refuse(args, out, Failure(f"annotate.{e.code}", f"--annotate {args.annotate}: {e.strerror}", ExitCode.USAGE))
        except OSError as e:
            return _refuse(args, out, Failure("annotate.cannot_write", f"cannot write {args.annotate}: {e.strerror or e}", ExitCode.UNREADABLE))
        sinks.append(AnnotateSink(writer, reader.interfaces))
    config = ScanConfig(vxlan_ports=tuple(args.vxlan_port), jobs=args.jobs, symptoms=not args.no_symptoms,
                        timeline=bool(getattr(args, "html", None)))  # fmt: skip
    scanner = Scanner(config, sinks)
    if scanner.analyzer is not None and receivers:
        scanner.analyzer.use_receivers(receivers)
    # Progress only for a person watching: a real terminal on stderr, whatever FORCE_COLOR says.
    show = not (args.json or args.jsonl) and not args.no_progress and sys.stderr.isatty()
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
        what = f"cannot write {args.annotate}" if writer is not None else f"cannot read {args.file}"
        return _refuse(args, out, Failure("io.error", f"{what}: {e.strerror or e}", ExitCode.UNREADABLE))
    except BaseException:  # OutputError, Ctrl-C: no copy of a run that did not finish
        if writer is not None:
            writer.abort()
        raise
    return summary, writer


def _stdout_console(out: Stdout) -> Console:
    from rich.console import Console

    class _StdoutConsole(Console):
        def on_broken_pipe(self) -> None:
            # rich exits 1 when the reader goes away (`badsum pcap F | head`): that would read as
            # "findings". Hand it to main(), which exits 141 as a SIGPIPE'd process would.
            raise BrokenPipeError

    # Piped output is read by people too: do not hard-wrap it at 80 columns.
    probe = Console(file=out)
    if probe.is_terminal:
        return _StdoutConsole(file=out, highlight=False)
    return _StdoutConsole(file=out, highlight=False, width=160, soft_wrap=True)


def _run_with_progress(scanner: Scanner, reader, path: str):  # noqa: ANN001
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

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
