"""`badsum capture`: record at many points at once, keeping the kernel's per-packet checksum status."""

from __future__ import annotations

import argparse
import os
import sys
import time

from badsum.cli.argtypes import positive
from badsum.cli.result import ExitCode, Failure, Result

HELP = "capture at many points at once (explicit or along a container's path), keeping the kernel's checksum status"
EXAMPLES = """\
examples:
  sudo badsum capture --point c1:eth0 --point host:veth1a2b -d 10
  sudo badsum capture --auto 4242 -f 'tcp port 443' -c 1000     # container by pid
  sudo badsum capture --auto 198.51.100.7 --list                 # the points it would use
  sudo badsum capture --auto web --single web.pcapng --json
  sudo badsum capture --auto my-nginx -d 10                      # a Docker container by its name

exit codes: 0 captured, 2 usage (unknown namespace or interface, a filter that does not compile, an
            output that is a device, FIFO, socket, directory or symlink, or -o naming a non-directory),
            3 could not capture (not root, a worker failed, the output cannot be written), 130 interrupted
            before capturing
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_argument_group("where")
    where.add_argument("--point", metavar="NS:IFNAME", action="append", default=[],
                       help="capture here (host:IFNAME for the root namespace, pid:PID:IFNAME for a process's); repeatable")
    where.add_argument("--auto", metavar="TARGET",
                       help="follow a container's path (pid, container or pod name, namespace name or IP address) and capture at each point")
    where.add_argument("--list", action="store_true", help="print the points and exit without capturing")
    p.add_argument("-f", "--filter", metavar="EXPR", help="capture filter in tcpdump syntax (compiled with tcpdump -dd)")
    p.add_argument("-s", "--snaplen", metavar="BYTES", type=positive, default=262144,
                   help="bytes kept per packet (default 262144)")
    p.add_argument("-d", "--duration", metavar="SECONDS", type=_seconds, help="stop after this long")
    p.add_argument("-c", "--count", metavar="N", type=positive, help="stop each point after N packets")
    p.add_argument("--max-bytes", metavar="N", type=positive, help="stop each point after N captured bytes")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--out", metavar="DIR", help="directory for one <label>.pcapng per point (default ./badsum-capture-TIME)")
    out.add_argument("--single", metavar="FILE.pcapng", help="one pcapng with one interface per point instead")
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")
    p.set_defaults(run=run)


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {v}")
    return v


def _failed(code: str, message: str, exit_code: ExitCode) -> Result:
    return Result.failed("capture", Failure(code, message, exit_code))


def run(args: argparse.Namespace) -> Result:
    from badsum.capture.session import CaptureError, Limits, parse_point, run_session

    if not args.point and not args.auto:
        return _failed("usage", "name the points: --point NS:IFNAME (repeatable) or --auto TARGET", ExitCode.USAGE)
    if os.geteuid() != 0:
        return _failed("not_root", "capturing needs root (AF_PACKET sockets in other namespaces): run with sudo", ExitCode.UNREADABLE)
    try:
        points = [parse_point(t) for t in args.point]
        if args.auto:
            points += _auto(args.auto)
        points = list({p.label: p for p in points}.values())
        if args.list:
            return _points(points)
        out_dir = None if args.single else (args.out or time.strftime("badsum-capture-%Y%m%d-%H%M%S"))
        limits = Limits(snaplen=args.snaplen, duration=args.duration, count=args.count, bytes=args.max_bytes)
        show = not args.json and not args.no_progress and sys.stderr.isatty()
        session = run_session(points, out_dir=out_dir, single=args.single, filter_expr=args.filter, limits=limits,
                              progress=_progress_line if show else None, auto=args.auto)  # fmt: skip
    except CaptureError as e:
        message = str(e) + (_known_namespaces() if e.code == "namespace.unknown" and not args.auto else "")
        return _failed(e.code, message, ExitCode.USAGE if e.usage else ExitCode.UNREADABLE)
    if show:
        print(file=sys.stderr)
    data = {"points": session.points, "files": sorted(set(session.files.values())), "stopped_by": session.stopped_by,
            "seconds": session.seconds, "filter": args.filter, "snaplen": args.snaplen,
            "path": [pt["point"] for pt in session.points], "manifest": session.manifest}  # fmt: skip
    text = "".join(f"{pt['point']}: {pt['packets']:,} packets, {pt['bytes']:,} bytes -> {pt['file']}\n" for pt in session.points)
    where = session.manifest or args.single
    text += f"path order {' -> '.join(data['path'])} recorded in {where} (`badsum trace` reads it)\n"
    return Result("capture", ExitCode.OK, data, text=text)


def _known_namespaces() -> str:
    """`; known: ...` for an unknown namespace's message, as every command names them."""
    from badsum.host.netns import discover

    return f"; known: {', '.join(r.id for r in discover().namespaces)}"


def _auto(target: str) -> list:
    from badsum.capture.auto import auto_points
    from badsum.host.collect import collect_snapshot

    pid_inode = None
    pid = target.removeprefix("pid:")
    if pid.isdigit():
        try:
            pid_inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            from badsum.capture.session import CaptureError

            raise CaptureError(f"--auto {target}: no process {pid}", code="namespace.unknown", usage=True) from None
    snap = collect_snapshot(time.time(), counter_interval=0.0)
    return auto_points(snap, _container_namespace(snap, target) or target, pid_inode=pid_inode)


def _container_namespace(snap, target: str) -> str | None:
    """The namespace id of the container or pod called `target` (Docker's name, a pod), when the
    target is not already a pid, an address or a namespace name; None leaves it to auto_points."""
    import ipaddress

    from badsum.capture.session import CaptureError
    from badsum.host.cri import CriNamer, namespaces_named

    if target.removeprefix("pid:").isdigit() or any(ns.id == target or target in ns.names for ns in snap.namespaces):
        return None
    try:
        ipaddress.ip_address(target)
        return None
    except ValueError:
        pass
    hits = namespaces_named(CriNamer().name(snap.namespaces).owners, target)
    if len(hits) > 1:
        raise CaptureError(f"--auto {target}: several namespaces belong to containers of that name ({', '.join(hits)}); "
                           "name one of them", code="namespace.ambiguous", usage=True)  # fmt: skip
    return hits[0] if hits else None


def _points(points: list) -> Result:
    rows = [{"point": p.label, "namespace": p.ns, "interface": p.dev, "enter": p.enter, "why": p.why} for p in points]
    text = "".join(f"{r['point']}" + (f"  ({r['why']})" if r["why"] else "") + "\n" for r in rows)
    return Result("capture", ExitCode.OK, {"points": rows}, text=text)


def _progress_line(counts: list[tuple[str, int, int]], elapsed: float) -> None:
    total = sum(c[1] for c in counts)
    parts = "  ".join(f"{label} {n:,}" for label, n, _ in counts)
    line = f"capturing {elapsed:5.1f}s  {total:,} packets  {parts}"
    width = os.get_terminal_size(sys.stderr.fileno()).columns if sys.stderr.isatty() else 160
    print("\r" + line[: width - 1].ljust(width - 1), end="", file=sys.stderr, flush=True)
