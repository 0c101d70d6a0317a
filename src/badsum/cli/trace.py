"""`badsum trace`: line up the same packet across capture points and name the first bad hop."""

from __future__ import annotations

import argparse
import os

from badsum.capture import CaptureOpenError, open_capture, pathorder
from badsum.checksum.detailed import DetailedJudge
from badsum.cli.argtypes import label_and_path, port, positive, unsafe_output
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
  badsum trace --html path.html caps/ # the path as a row of hops, the first bad hop outlined
  badsum trace caps/                  # a `badsum capture -o caps` folder: its manifest gives the path order
  badsum trace caps/*.pcapng          # the same: the recorded order wins over the shell's name order
  badsum trace host:vethA=two-ifaces.pcapng#0 host:vethB=two-ifaces.pcapng#eth1   # one interface of a file

exit codes: 0 no packet went bad, 1 a first bad hop was found, 2 usage error (also an empty
            LABEL or FILE in LABEL=FILE, an unknown #IFACE, --order recorded without a recorded order),
            3 a capture or the snapshot could not be read, or --html could not be written
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("points", metavar="POINT", nargs="+", type=label_and_path,
                   help="LABEL=FILE (label NS:IFNAME, `host:` for the host namespace), a bare FILE (labelled by its "
                        "interface or file name), FILE#IFACE (one interface of a multi-interface pcapng, by index or "
                        "name), or a DIR that `badsum capture -o` wrote; a multi-interface pcapng gives one point per "
                        "interface")  # fmt: skip
    p.add_argument("--snapshot", metavar="FILE", help="a host snapshot (`badsum doctor --save`): the topology between the points")
    p.add_argument("--order", choices=("recorded", "given", "time"), default=None,
                   help="path order: `recorded` by `badsum capture` (its manifest or the files' section headers), "
                        "`given` on the command line, or from the packets' timestamps (`time`); default: recorded "
                        "when every point is in one recorded path, else given")  # fmt: skip
    p.add_argument("--vxlan-port", metavar="PORT", type=port, action="append", default=[],
                   help="also decode this UDP port as VXLAN (4789 and 8472 always are); repeatable")
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.add_argument("-v", "--verbose", action="store_true", help="also show the flows where nothing went bad")
    p.add_argument("--html", metavar="FILE",
                   help="also write each flow's path as a row of hops with the checksum status at each and the first "
                        "bad hop outlined: one self-contained HTML file")  # fmt: skip
    p.add_argument("--max-packets", metavar="N", type=positive, default=DEFAULT_MAX_PACKETS,
                   help=f"read at most N packets per point (default {DEFAULT_MAX_PACKETS:,}): tracing keeps every "
                        "decoded packet in memory; capture with a filter to trace one flow of a busy link")
    p.set_defaults(run=run)


def _split(arg: str) -> tuple[str | None, str, str | None]:
    """(label, path, interface) of a POINT (label_and_path has refused an empty label or path);
    `interface` is what follows `#` in FILE#IFACE when FILE exists and FILE#IFACE does not."""
    label, path = None, arg
    if not os.path.exists(arg) and "=" in arg:
        label, _, path = arg.partition("=")
    iface = None
    if not os.path.exists(path) and "#" in path:
        head, _, tail = path.rpartition("#")
        if head and tail and os.path.exists(head):
            path, iface = head, tail
    return label, path, iface


def _expand(args: argparse.Namespace) -> list[str]:
    """A DIR becomes its capture files: in the manifest's path order when `badsum capture` wrote one,
    else every capture file in name order (said in the notes)."""
    out: list[str] = []
    for arg in args.points:
        if not os.path.isdir(arg):
            out.append(arg)
            continue
        m = pathorder.read_manifest(arg)
        if m is not None and all(m.files.get(label) for label in m.labels):
            out += [os.path.join(arg, m.files[label]) for label in m.labels]
            continue
        found = sorted(e.path for e in os.scandir(arg) if e.is_file() and e.name.endswith(CAPTURE_SUFFIXES))
        if not found:
            raise Failure("trace.empty_folder", f"{arg}: a folder with no capture files (.pcap, .pcapng, .gz)",
                          ExitCode.USAGE)  # fmt: skip
        args.notes.append(f"{arg}: no badsum capture manifest; its {len(found)} files taken in name order")
        out += found
    return out


CAPTURE_SUFFIXES = (".pcapng", ".pcap", ".cap", ".pcapng.gz", ".pcap.gz")


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
    args.recorded = []  # per POINT argument: (path, labels of its points, its section header comments, labelled?)
    args.user_labels = set()
    ports = _ports(args)
    for arg in _expand(args):
        label, path, pick = _split(arg)
        base = label or os.path.basename(path)
        try:
            reader = open_capture(path)
        except CaptureOpenError as e:
            raise Failure(f"capture.{e.reason}", str(e)) from None
        first_point = len(points)
        with reader:
            index: dict[int, int] = {}
            judges: dict[int, DetailedJudge] = {}
            skipped: set[int] = set()
            read = 0
            for b in reader:
                take = min(len(b), args.max_packets - read)
                for i in range(take):
                    iface = int(b.interface[i])
                    if iface in skipped:
                        continue
                    if iface not in index:
                        named = [x for x in reader.interfaces if x.id == iface]
                        name = named[0].name if named and named[0].name else f"if{iface}"
                        if pick is not None and pick not in (str(iface), name):
                            skipped.add(iface)
                            continue
                        several = len(reader.interfaces) > 1 and pick is None
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
            if pick is not None and not index:
                known = ", ".join(f"{x.id} ({x.name or 'no name'})" for x in reader.interfaces) or "none"
                raise Failure("trace.no_such_interface", f"{path} has no interface {pick!r} with packets (its interfaces: "
                              f"{known})", ExitCode.USAGE)  # fmt: skip
            if not index:  # an empty capture is still a point (where nothing was seen)
                points.append(Point.parse(base))
                files.append(path)
            comments = [c for sec in reader.sections for c in sec.comments]
        args.recorded.append((path, [p.label for p in points[first_point:]], comments, label is not None))
        if label is not None:
            args.user_labels.update(p.label for p in points[first_point:])
    return points, files, observations


def unique_labels(points: list[Point], files: list[str]) -> tuple[list[Point], list[str]]:
    """Two points with one label (two interfaces named alike, or one name in two files): each gets
    the file's name, and where that is not enough the interface's position (`null1@a`, `null1#2`)."""
    labels = [p.label for p in points]
    twice = {x for x in labels if labels.count(x) > 1}
    if not twice:
        return points, []
    out, renamed = list(points), []
    for i, p in enumerate(points):
        if p.label in twice:
            stem = _stem(files[i])
            same_file = sum(1 for j, q in enumerate(points) if q.label == p.label and files[j] == files[i]) > 1
            new = f"{p.label}#{i}" if same_file else f"{p.label}@{stem}"
            out[i] = Point.parse(new)
            renamed.append(f"{p.label} -> {new}")
    return out, renamed


def recorded_order(args: argparse.Namespace, points: list[Point]) -> pathorder.PathOrder | None:
    """The order `badsum capture` recorded for exactly these points (labels as it wrote them)."""
    if any(given for *_, given in args.recorded):
        return None  # the user labelled points: their order is the one they gave
    files = [path for path, *_ in args.recorded]
    got = pathorder.order_of(files, [labels for _, labels, _, _ in args.recorded], [c for _, _, c, _ in args.recorded])
    return got


def _reorder(points: list[Point], files: list[str], observations: list[Observation], labels: tuple[str, ...]
             ) -> tuple[list[Point], list[str], list[Observation]]:  # fmt: skip
    rank = {label: i for i, label in enumerate(labels)}
    new = sorted(range(len(points)), key=lambda i: rank[points[i].label])
    where = {old: pos for pos, old in enumerate(new)}
    for o in observations:
        o.point = where[o.point]
    return [points[i] for i in new], [files[i] for i in new], observations


def run(args: argparse.Namespace) -> Result:
    args.notes = []
    html = getattr(args, "html", None)
    if html and (refused := unsafe_output("--html", html)):
        return Result.failed("trace", Failure(*refused, ExitCode.USAGE), {"points": args.points})
    try:
        topo = Topology(read_snapshot(args.snapshot) if args.snapshot else None)
        points, files, observations = load(args)
        recorded = recorded_order(args, points) if args.order in (None, "recorded") else None
        if args.order == "recorded" and recorded is None:
            raise Failure("trace.no_recorded_order", "--order recorded: these files carry no path order that covers "
                          "every point (capture them with `badsum capture -o DIR` and trace DIR)", ExitCode.USAGE)  # fmt: skip
        if recorded is not None:
            points, files, observations = _reorder(points, files, observations, recorded.labels)
            order_by, source = "given", f"recorded ({recorded.source})"
        else:
            order_by = args.order or "given"
            source = "packet timestamps" if order_by == "time" else "as given on the command line"
        given = {p.label for p in points if p.label in args.user_labels}
        labels = [p.label for p in points]
        if twice := sorted({x for x in given if labels.count(x) > 1}):
            # Labels the user wrote twice are a mistake to report, not to paper over.
            raise Failure("trace.same_label", f"two points have the same label: {', '.join(twice)}", ExitCode.USAGE)
        points, renamed = unique_labels(points, files)
        if renamed:
            args.notes.append("points with the same label were renamed: " + ", ".join(renamed))
    except Failure as e:
        return Result.failed("trace", e, {"points": args.points})
    result = trace(points, observations, topo, order_by)
    data = to_data(result, topo, files)
    data["order"] = {"source": source, "labels": data["path"]}
    data["notes"] = [*args.notes, *data["notes"]]  # type: ignore[misc]
    for path in args.truncated_points:
        data["notes"].append(f"{path}: only its first {args.max_packets:,} packets were traced (--max-packets)")  # type: ignore[union-attr]
    bad = data["summary"]["flows_bad"]  # type: ignore[index]
    code = ExitCode.FINDINGS if bad else ExitCode.OK
    errors: list[dict[str, str]] = []
    if html:
        from badsum.report.html_io import write_page
        from badsum.report.html_trace import trace_page

        try:
            write_page(html, trace_page(data))
            data["html"] = html
        except OSError as e:
            errors.append({"code": "html.cannot_write", "message": f"cannot write {html}: {e.strerror or e}"})
            code = ExitCode.UNREADABLE
    return Result("trace", code, data, errors, text=lambda: render_text(result, data, args.verbose),
                  text_stderr=[e["message"] for e in errors])  # fmt: skip


def render_text(result: TraceResult, data: dict, verbose: bool) -> str:
    lines: list[str] = []
    out = lines.append
    out(f"path: {' -> '.join(data['path'])}   topology: {data['topology']}\n")
    if "order" in data:
        out(f"order: {data['order']['source']}\n")
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
