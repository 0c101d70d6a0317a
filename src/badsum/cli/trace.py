"""`badsum trace`: line up the same packet across capture points and name the first bad hop."""

from __future__ import annotations

import argparse
import os

from badsum.capture import CaptureOpenError, open_capture
from badsum.checksum.detailed import DetailedJudge
from badsum.cli.argtypes import label_and_path, port, positive
from badsum.cli.result import ExitCode, Failure, Result
from badsum.cli.snapshot import read_snapshot
from badsum.trace import nflog
from badsum.trace.build import TraceResult, to_data, trace
from badsum.trace.model import Observation, Point
from badsum.trace.topology import Topology
from badsum.wire.link import LINKTYPE_RAW
from badsum.wire.ports import PortTable

HELP = "line up the same packet across capture points and name the first hop where it went bad"
EXAMPLES = """\
examples:
  badsum trace c1:eth0=c1.pcapng host:c1-veth=v1.pcapng host:c2-veth=v2.pcapng c2:eth0=c2.pcapng
  badsum trace --snapshot snap.json c1:eth0=a.pcap host:c1-veth=b.pcap host:c2-veth=c.pcap
  badsum trace --order time --json a.pcapng b.pcapng c.pcapng

exit codes: 0 no packet went bad, 1 a first bad hop was found, 2 usage error (also an empty
            LABEL or FILE in LABEL=FILE, two points with one label), 3 a capture or the snapshot could not be read
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("points", metavar="POINT", nargs="+", type=label_and_path,
                   help="LABEL=FILE (label NS:IFNAME, `host:` for the host namespace) or a bare FILE (labelled by its "
                        "name), in path order; a multi-interface pcapng gives one point per interface")  # fmt: skip
    p.add_argument("--snapshot", metavar="FILE", help="a host snapshot (`badsum doctor --save`): the topology between the points")
    p.add_argument("--order", choices=("given", "time"), default="given",
                   help="path order: as given (default), or from the packets' timestamps")
    p.add_argument("--vxlan-port", metavar="PORT", type=port, action="append", default=[],
                   help="also decode this UDP port as VXLAN (4789 and 8472 always are); repeatable")
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.add_argument("-v", "--verbose", action="store_true", help="also show the flows where nothing went bad")
    p.add_argument("--max-packets", metavar="N", type=positive, default=DEFAULT_MAX_PACKETS,
                   help=f"read at most N packets per point (default {DEFAULT_MAX_PACKETS:,}): tracing keeps every "
                        "decoded packet in memory; capture with a filter to trace one flow of a busy link")
    p.set_defaults(run=run)


def _split(arg: str) -> tuple[str | None, str]:
    """(label, path) of a POINT (label_and_path has refused an empty label or path)."""
    if os.path.exists(arg) or "=" not in arg:
        return None, arg
    label, _, path = arg.partition("=")
    return label, path


#: Tracing aligns packets across points, so it keeps them all decoded: bound the memory per point.
DEFAULT_MAX_PACKETS = 200_000


def _ports(args: argparse.Namespace) -> PortTable:
    return PortTable.with_vxlan_ports(tuple(args.vxlan_port))


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".gz", ".pcapng", ".pcap", ".cap"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or os.path.basename(path)


def load(args: argparse.Namespace) -> tuple[list[Point], list[str], list[Observation]]:
    points: list[Point] = []
    files: list[str] = []
    observations: list[Observation] = []
    args.truncated_points = []
    ports = _ports(args)
    for arg in args.points:
        label, path = _split(arg)
        base = label or os.path.basename(path)
        try:
            reader = open_capture(path)
        except CaptureOpenError as e:
            raise Failure(f"capture.{e.reason}", str(e)) from None
        with reader:
            index: dict[int, int] = {}
            judges: dict[int, DetailedJudge] = {}
            read = 0
            for b in reader:
                take = min(len(b), args.max_packets - read)
                for i in range(take):
                    iface = int(b.interface[i])
                    if iface not in index:
                        named = [x for x in reader.interfaces if x.id == iface]
                        several = len(reader.interfaces) > 1
                        name = named[0].name if named and named[0].name else f"if{iface}"
                        if not several and not label:
                            # A bare file: the point's own name as `badsum capture` and the labs
                            # record it (the interface name), else the file name without suffixes.
                            base = named[0].name if named and named[0].name else _stem(path)
                        index[iface] = len(points)
                        points.append(Point.parse(f"{base}/{name}" if several and label else name if several else base))
                        files.append(path)
                        judges[iface] = DetailedJudge(ports)
                    data, linktype = b.packet(i), int(b.linktype[i])
                    wire = int(b.origlen[i])
                    if linktype == nflog.LINKTYPE_NFLOG:
                        inner = nflog.payload(data)
                        if inner is None:
                            continue
                        data, linktype, wire = inner[1], LINKTYPE_RAW, len(inner[1])
                    status = int(b.tp_status[i])
                    res = judges[iface].judge(b.first_frame + i, int(b.ts_ns[i]), data, wire, linktype, status)
                    observations.append(Observation(index[iface], b.first_frame + i, int(b.ts_ns[i]), res.frame,
                                                    res.verdicts, status, int(b.direction[i])))  # fmt: skip
                read += take
                if take < len(b):
                    args.truncated_points.append(path)
                    break
            if reader.errors and path not in args.truncated_points:
                e = reader.errors[0]
                raise Failure(e.code, f"{path}: {e.message}")
            if not index:  # an empty capture is still a point (where nothing was seen)
                points.append(Point.parse(base))
                files.append(path)
    return points, files, observations


def run(args: argparse.Namespace) -> Result:
    try:
        topo = Topology(read_snapshot(args.snapshot) if args.snapshot else None)
        points, files, observations = load(args)
        labels = [p.label for p in points]
        if twice := sorted({x for x in labels if labels.count(x) > 1}):
            raise Failure("trace.same_label", f"two points have the same label: {', '.join(twice)}", ExitCode.USAGE)
    except Failure as e:
        return Result.failed("trace", e, {"points": args.points})
    result = trace(points, observations, topo, args.order)
    data = to_data(result, topo, files)
    for path in args.truncated_points:
        data["notes"].append(f"{path}: only its first {args.max_packets:,} packets were traced (--max-packets)")  # type: ignore[union-attr]
    bad = data["summary"]["flows_bad"]  # type: ignore[index]
    return Result("trace", ExitCode.FINDINGS if bad else ExitCode.OK, data, text=lambda: render_text(result, data, args.verbose))


def render_text(result: TraceResult, data: dict, verbose: bool) -> str:
    lines: list[str] = []
    out = lines.append
    out(f"path: {' -> '.join(data['path'])}   topology: {data['topology']}\n")
    for note in data["notes"]:
        out(f"note: {note}\n")
    shown = 0
    for f in data["flows"]:
        fb = f["first_bad_hop"]
        if fb is None and not verbose:
            continue
        shown += 1
        out(f"\nflow {f['text']} ({f['direction']}, {f['packets']} packets)\n")
        width = max(len(h["point"]) for h in f["hops"])
        for h in f["hops"]:
            sums = ", ".join(f"{k} {n}" for k, n in sorted(h["checksums"].items())) or "-"
            kern = ("  kernel " + ", ".join(f"{k} {n}" for k, n in h["kernel"].items())) if h["kernel"] else ""
            changes = "; ".join(_change(c) for c in h["changes"])
            extra = []
            if h["payload_changed"]:
                extra.append(f"payload bytes changed in {h['payload_changed']}")
            if h["segmentation_changed"]:
                extra.append(f"segmentation changed in {h['segmentation_changed']}")
            tail = "; ".join(x for x in (changes, *extra) if x)
            out(f"  {h['point']:<{width}}  seen {h['seen']:>5}  missing {h['missing']:>4}  {sums}{kern}"
                + (f"\n  {'':<{width}}    changed: {tail}" if tail else "") + "\n")  # fmt: skip
        if f["unconfirmed_partial"]:
            out(f"  partial (unconfirmed) at: {', '.join(f['unconfirmed_partial'])}\n")
        if fb is None:
            out("  verdict: no packet went bad\n")
        else:
            where = f"between {fb['after']} and {fb['before']}" if fb["after"] else f"at {fb['before']}"
            out(f"  verdict: first bad hop {where}: {fb['kind']} ({fb['packets']} packets)\n    {fb['why']}\n")
    if not shown:
        out(f"\n{data['summary']['flows']} flows: no packet went bad" + (" (-v lists them)" if data["flows"] else "") + "\n")
    return "".join(lines)


def _change(c: dict) -> str:
    where = f"{c['layer']}@{c['depth']}" if c["depth"] else c["layer"]
    return f"{where} {c['field']} {c['old']} -> {c['new']} ({c['packets']})"
