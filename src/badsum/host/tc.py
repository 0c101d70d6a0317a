"""eBPF programs on the devices' tc hooks (cls_bpf filters), read with iproute2's `tc -j`.

A tc program can rewrite what the kernel would send (badsum's own lab emulations of old kernel
bugs are such programs: KB-001 on a veth, KB-004 on an uplink), so doctor needs to see them.
Read-only and bounded: one `tc -j qdisc show` per namespace names the devices that have a clsact
(or ingress) qdisc at all, and only those get `tc -j filter show dev X ingress|egress`, at most
MAX_DEVICES of them. Parsing is pure (recorded JSON in, records out); an unknown shape is
skipped, never raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from badsum.host.commands import Output
from badsum.host.links import ParseError, json_list
from badsum.host.model import TcBpf

Runner = Callable[[list[str]], Output]
#: Devices with a clsact/ingress qdisc read per namespace; a node rarely has more than its pods' veths.
MAX_DEVICES = 512
#: Qdisc kinds that carry the ingress/egress filter hooks (sch_handle_ingress/egress).
HOOK_QDISCS = ("clsact", "ingress")
DIRECTIONS = ("ingress", "egress")


def parse_hook_devices(text: str) -> list[str]:
    """`tc -j qdisc show` -> the devices with a clsact or ingress qdisc, in tc's order."""
    doc = json_list(text, "tc -j qdisc show")
    out: list[str] = []
    for q in doc:
        if isinstance(q, dict) and q.get("kind") in HOOK_QDISCS and isinstance(q.get("dev"), str) and q["dev"] not in out:
            out.append(q["dev"])
    return out


def parse_filters(text: str, direction: str) -> tuple[TcBpf, ...]:
    """`tc -j filter show dev X DIRECTION` -> its cls_bpf programs (filters without a program, and
    the per-priority header entries tc prints without options, are left out)."""
    doc = json_list(text, f"tc -j filter show {direction}")
    out: list[TcBpf] = []
    for f in doc:
        if not isinstance(f, dict) or f.get("kind") != "bpf":
            continue
        opts = f.get("options")
        prog = opts.get("prog") if isinstance(opts, dict) else None
        if not isinstance(prog, dict):
            continue
        pid = prog.get("id")
        out.append(TcBpf(direction=direction, name=str(prog.get("name") or ""), id=pid if isinstance(pid, int) else None,
                         tag=prog.get("tag") if isinstance(prog.get("tag"), str) else None,
                         object=opts.get("bpf_name") if isinstance(opts.get("bpf_name"), str) else None,
                         direct_action=bool(opts.get("direct-action")),
                         pref=f.get("pref") if isinstance(f.get("pref"), int) else None))  # fmt: skip
    return tuple(out)


def collect_tc_bpf(run: Runner, devices: Iterable[str]) -> tuple[dict[str, tuple[TcBpf, ...]] | None, list[str]]:
    """{device: its tc programs} for `devices` of one namespace (`run` runs inside it); a device
    without a clsact/ingress qdisc maps to (). None when the qdiscs could not be read."""
    errors: list[str] = []
    out = run(["tc", "-j", "qdisc", "show"])
    if out.stdout is None:
        return None, [f"tc programs unknown: {out.error}"]
    try:
        hooked = parse_hook_devices(out.stdout)
    except ParseError as e:
        return None, [f"tc programs unknown: {e}"]
    names = list(devices)
    found: dict[str, tuple[TcBpf, ...]] = {name: () for name in names}
    wanted = [d for d in hooked if d in found]
    if len(wanted) > MAX_DEVICES:
        errors.append(f"tc programs read on the first {MAX_DEVICES} of {len(wanted)} devices with a clsact qdisc")
    for dev in wanted[:MAX_DEVICES]:
        progs: list[TcBpf] = []
        for direction in DIRECTIONS:
            got = run(["tc", "-j", "filter", "show", "dev", dev, direction])
            if got.stdout is None:
                errors.append(f"{dev}: tc {direction} programs unknown: {got.error}")
                continue
            try:
                progs += parse_filters(got.stdout, direction)
            except ParseError as e:
                errors.append(f"{dev}: tc {direction} programs unknown: {e}")
        found[dev] = tuple(progs)
    return found, errors
