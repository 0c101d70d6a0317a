"""The `badsum pcap` report: the answer first, the detail after."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from badsum.analyze import ScanSummary
from badsum.capture import linktypes
from badsum.checksum.verdict import Layer, Status
from badsum.report.records import MEANING, flow_record, flow_text
from badsum.report.symptoms import has_failure, render_symptoms, symptoms_data

if TYPE_CHECKING:
    from rich.console import Console

#: Statuses that mean something is wrong with the packet as captured.
FAULTS = (Status.BAD, Status.ZERO_INVALID)
TOP_FLOWS = 10
JSON_FLOWS = 100


@dataclass(slots=True)
class CaptureMeta:
    """Facts about the input file, from the reader."""

    path: str
    format: str = ""
    compressed: bool = False
    interfaces: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Damage found while reading: `{code, message, offset}`."""
    empty_records: int = 0
    """Records with no captured bytes."""
    snapshot: str | None = None
    """`--snapshot`: the host snapshot whose checksum counters joined the flows."""
    counter_namespaces: int = 0
    """Namespaces of that snapshot with two counter samples."""


#: The error when records were read and not one could be decoded far enough to judge a checksum.
NOTHING_DECODED = "capture.nothing_decoded"


def nothing_decoded(summary: ScanSummary) -> bool:
    """Records were read and every one was undecodable: a capture of 1-byte or empty records is
    not a clean one, whatever its (zero) checksums say."""
    return summary.packets > 0 and summary.undecodable >= summary.packets


def undecodable_text(summary: ScanSummary, meta: CaptureMeta) -> str:
    """`3,000 records could not be decoded (2,000 empty, 1,000 too short or malformed)`."""
    n, empty = summary.undecodable, min(meta.empty_records, summary.undecodable)
    parts = ([f"{_n(empty)} empty"] if empty else []) + ([f"{_n(n - empty)} too short or malformed"] if n > empty else [])
    if nothing_decoded(summary):
        return f"none of the {_n(summary.packets)} records could be decoded ({', '.join(parts)}): no checksum was judged"
    return f"{_n(n)} records could not be decoded ({', '.join(parts)}): nothing in them was judged"


def report_errors(summary: ScanSummary, meta: CaptureMeta) -> list[dict[str, Any]]:
    """The envelope's errors: damage found while reading, and a capture where nothing decoded."""
    if not nothing_decoded(summary):
        return meta.errors
    return [*meta.errors, {"code": NOTHING_DECODED, "message": undecodable_text(summary, meta)}]


def exit_code(summary: ScanSummary, meta: CaptureMeta) -> int:
    """0 all ok, 1 bad checksums (or partial on received packets) or a failing symptom, 3 damaged
    input or nothing in it decoded."""
    if meta.errors or nothing_decoded(summary):
        return 3
    if any(summary.status_total(s) for s in FAULTS) or summary.inbound_partial or has_failure(summary.symptoms):
        return 1
    return 0


def to_data(summary: ScanSummary, meta: CaptureMeta) -> dict[str, Any]:
    s = summary
    cells = []
    for depth, layer, status in zip(*s.counts.nonzero()):
        cells.append(
            {
                "layer": Layer(int(layer)).label,
                "depth": int(depth),
                "status": Status(int(status)).label,
                "count": int(s.counts[depth, layer, status]),
            }
        )
    flows = []
    for e in s.flows.top(JSON_FLOWS):
        flows.append(
            {
                "flow": flow_record(e.flow),
                "layer": e.layer.label,
                "depth": e.depth,
                "status": e.status.label,
                "count": e.count,
                "first_frame": e.first_frame,
                "last_frame": e.last_frame,
            }
        )
    known = {linktypes.name(lt): n for lt, n in sorted(s.linktypes.items())}
    return {
        "file": meta.path,
        "format": meta.format,
        "compressed": meta.compressed,
        "packets": s.packets,
        "bytes": s.bytes,
        "link_types": known,
        "totals": {st.label: s.status_total(st) for st in Status if st != Status.NAT_STALE},
        "checksums": cells,
        "flows": flows,
        "flows_total": len(s.flows) + (1 if s.flows.overflow else 0),
        "gso_frames": s.gso_frames,
        "kernel_overrides": s.kernel_overrides,
        "inbound_partial": s.inbound_partial,
        "decoded_in_detail": s.deferred,
        "decode_issues": dict(s.decode_issues.most_common()),
        "empty_records": meta.empty_records,
        "undecodable_records": s.undecodable,
        "symptoms": symptoms_data(s.symptoms),
        "symptoms_total": len(s.symptoms),
        "flow_analysis": s.flow_stats,
        "snapshot": None if meta.snapshot is None else {"file": meta.snapshot, "namespaces_with_counters": meta.counter_namespaces},
    }


def _n(x: int) -> str:
    return f"{x:,}"


def _layers(summary: ScanSummary, status: Status) -> str:
    per = summary.counts[:, :, int(status)].sum(axis=0)
    parts = [f"{Layer(i).label.upper()} {_n(int(c))}" for i, c in enumerate(per) if c]
    return ", ".join(parts)


def _flow_count(summary: ScanSummary, status: Status) -> int:
    return summary.flows.count_keys(status)


def render_text(summary: ScanSummary, meta: CaptureMeta, console: Console, verbose: bool = False) -> None:
    # rich only here: --json and --jsonl runs never load it (start-up time)
    from rich.markup import escape
    from rich.table import Table

    s = summary
    judged = int(s.counts.sum())
    console.print(f"[bold]{escape(meta.path)}[/]: {_n(s.packets)} packets, {_n(judged)} checksums judged")
    for err in meta.errors:
        console.print(f"[red]input damaged[/] at byte {err.get('offset', '?')}: {escape(err['message'])} "
                      "(the packets before it were analysed)")
    bad, partial = s.status_total(Status.BAD), s.status_total(Status.PARTIAL)
    zinv, unv = s.status_total(Status.ZERO_INVALID), s.status_total(Status.UNVERIFIABLE)
    lines: list[tuple[str, str]] = []
    if bad:
        lines.append(("red:BAD", f"{_n(bad)} checksums do not verify ({_layers(s, Status.BAD)}) in "
                      f"{_n(_flow_count(s, Status.BAD))} flow(s): corruption or a rewrite that did not fix the sum"))
    if zinv:
        lines.append(("red:ZERO", f"{_n(zinv)} UDP/IPv6 checksums are 0 outside the tunnel exemption: receivers drop them"))
    if partial:
        gso = f"; {_n(s.gso_frames)} GSO/TSO super-frames" if s.gso_frames else ""
        where = (f"; {_n(s.inbound_partial)} on packets the kernel received with no checksum pending: "
                 "a forwarder re-created them without completing the sum (KB-005)"
                 if s.inbound_partial else
                 "; normal on the sending host and across a veth, a fault after a userspace "
                 "forwarder or on a wire")
        lines.append(("yellow:PARTIAL", f"{_n(partial)} checksums hold the pseudo-header sum only "
                      f"({_layers(s, Status.PARTIAL)}): transmit offload pending{gso}{where}"))
    if unv:
        lines.append(("dim:UNVERIFIED", f"{_n(unv)} checksums could not be judged (snap length or incomplete fragments)"))
    if s.kernel_overrides:
        lines.append(("dim:KERNEL", f"{_n(s.kernel_overrides)} checksums the kernel had verified (TP_STATUS_CSUM_VALID)"))
    if s.undecodable:
        lines.append(("dim:UNDECODED", undecodable_text(s, meta) + " (decode issues: -v)"))
    ok = s.status_total(Status.OK) + s.status_total(Status.ZERO_ALLOWED)
    if nothing_decoded(s):
        lines[-1] = ("red:UNDECODED", lines[-1][1])  # and no OK line: nothing was found all right
    elif not lines:
        lines.append(("green:OK", f"all {_n(ok)} checksums verify"))
        if s.symptoms:
            lines[-1] = ("green:OK", f"all {_n(ok)} checksums verify; the symptoms below are not checksum faults")
    else:
        lines.append(("green:OK", f"{_n(ok)} checksums verify or are legitimately absent"))
    for tag, text in lines:
        style, word = tag.split(":")
        console.print(f"  [{style}]{word:<10}[/] {text}")
    render_symptoms(s.symptoms, console, verbose=verbose)

    shown = (Status.BAD, Status.PARTIAL, Status.ZERO_INVALID)
    n_flows = sum(s.flows.count_keys(st) for st in shown)
    flows = s.flows.top(n_flows if verbose else TOP_FLOWS, shown)
    if flows:
        t = Table(title=f"Flows with bad or partial checksums (top {len(flows)} of {n_flows})",
                  title_justify="left", box=None, pad_edge=False)
        for col in ("flow", "layer", "depth", "status", "count", "frames"):
            t.add_column(col, justify="right" if col in ("depth", "count") else "left")
        for e in flows:
            frames = str(e.first_frame) if e.first_frame == e.last_frame else f"{e.first_frame}-{e.last_frame}"
            t.add_row(escape(flow_text(e.flow)) if e.flow else "-", e.layer.label, str(e.depth), e.status.label, _n(e.count), frames)
        console.print()
        console.print(t)

    if verbose or bad or partial or zinv:
        console.print()
        console.print("[bold]What it means[/]")
        for st in (Status.BAD, Status.ZERO_INVALID, Status.PARTIAL, Status.UNVERIFIABLE):
            if s.status_total(st):
                console.print(f"  {st.label}: {MEANING[st]}")
    if verbose:
        _detail(s, console)
    elif bad or partial:
        console.print("\n[dim]Per-checksum evidence: --jsonl; counts per layer: -v; annotated copy: --annotate OUT.pcapng[/]")


def _detail(s: ScanSummary, console: Console) -> None:
    from rich.table import Table

    t = Table(title="Checksums by layer and depth", title_justify="left", box=None, pad_edge=False)
    t.add_column("layer")
    t.add_column("depth", justify="right")
    shown = [st for st in Status if st != Status.NAT_STALE]
    for st in shown:
        t.add_column(st.label, justify="right")
    for depth in range(s.counts.shape[0]):
        for layer in Layer:
            row = s.counts[depth, int(layer)]
            if row.any():
                t.add_row(layer.label, str(depth), *(_n(int(row[int(st)])) for st in shown))
    console.print()
    console.print(t)
    lt = ", ".join(f"{linktypes.name(k)} {_n(v)}" for k, v in sorted(s.linktypes.items()))
    console.print(f"\nlink types: {lt}; decoded in detail: {_n(s.deferred)} packets")
    if s.decode_issues:
        console.print("decode issues: " + ", ".join(f"{k} x{v}" for k, v in s.decode_issues.most_common(10)))
        for frame, text in s.issue_examples[:5]:
            console.print(f"  frame {frame}: {text}")
