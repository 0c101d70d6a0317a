"""`badsum follow`: follow packets through the kernel with eBPF and name the first bad hop.

Every device's transmit and receive in every namespace, and every drop, with the kernel's own
checksum state of each skb; joined into one journey per packet and judged hop by hop.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from badsum.cli.argtypes import port, positive, unsafe_output
from badsum.cli.result import ExitCode, Failure, Result, say

HELP = "follow packets through the kernel with eBPF and name the first bad hop from the kernel's checksum state"
EXAMPLES = """\
examples:
  sudo badsum follow -f 'tcp port 80' --duration 10
  sudo badsum follow -f 'host 203.0.113.7' -- ip netns exec c1 curl -s http://203.0.113.7/
  sudo badsum follow -f 'udp port 53' --count 500 --json | jq '.data.flows[].first_bad_hop'
  sudo badsum follow -f 'tcp' -w journey.pcapng --duration 5 && badsum trace --order time journey.pcapng

filter (-f): terms joined by 'and', matched on the outer headers or inside VXLAN, Geneve, GRE and
IP-in-IP: tcp|udp|sctp|icmp|icmp6|gre|ip|ip6, [ip|ip6] [src|dst] host ADDR, [src|dst] net ADDR/LEN,
[tcp|udp|sctp] [src|dst] port N. 'or', 'not' and parentheses are refused, not approximated.

exit codes: 0 no packet went bad, 1 a first bad hop was found, 2 usage error (filter outside the
            subset, bad -w target), 3 eBPF cannot run here (not root, no BTF, no libbpf, refused
            by the kernel): use `badsum capture` + `badsum trace` instead; 130 interrupted before
            anything was recorded
"""

#: Events kept at most (about 2 KiB each with their bytes and decoded record): bounds memory.
DEFAULT_MAX_EVENTS = 50_000
DRAIN_S = 0.3  # after the command exits: events still in flight through softirq and the ring


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("follow", help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-f", "--filter", metavar="EXPR", default="", help="packet filter (tcpdump subset, see below); default: every packet")
    p.add_argument("-d", "--duration", metavar="SECONDS", type=float, default=None,
                   help="stop after this long (default: until Ctrl-C, --count, or the COMMAND ends)")
    p.add_argument("-c", "--count", metavar="N", type=positive, default=None,
                   help=f"stop after N events (at most {DEFAULT_MAX_EVENTS:,} are kept in any case)")
    p.add_argument("--vxlan-port", metavar="PORT", type=port, action="append", default=[],
                   help="also look inside this UDP port as VXLAN (4789 and 8472 always are; Geneve 6081); repeatable")
    p.add_argument("--snaplen", metavar="BYTES", type=positive, default=1600,
                   help="bytes kept per event (default 1600; at most 2047): the whole packet when linear and no longer")
    p.add_argument("--rate", metavar="N", type=int, default=20_000,
                   help="events per second at most, over all CPUs (default 20000; 0: no bound); the rest are counted as lost")
    p.add_argument("--btf", metavar="FILE", help="kernel BTF to relocate against (default /sys/kernel/btf/vmlinux)")
    p.add_argument("-w", "--write", metavar="FILE.pcapng",
                   help="also write the recorded bytes: one interface per device, the kernel state in each packet's comment")
    p.add_argument("--json", action="store_true", help="print the JSON envelope {schema_version, command, status, data, errors}")
    p.add_argument("--html", metavar="FILE",
                   help="also write each flow's kernel hops as a row, the first bad hop outlined: one self-contained HTML file")
    p.add_argument("-v", "--verbose", action="store_true", help="also show the flows where nothing went bad, and every journey")
    p.add_argument("command", metavar="COMMAND", nargs="*",
                   help="after `--`: run this command once the programs are attached, stop when it ends")
    p.set_defaults(run=run)


def _error(args: argparse.Namespace, code: str, message: str, exit_code: ExitCode) -> Result:
    return Result.failed("follow", Failure(code, message, exit_code), {"filter": args.filter})


class _Stop(Exception):
    pass


@contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM ends the recording as Ctrl-C does: the analysis of what arrived still runs."""
    def handler(signum: int, frame: object) -> None:
        raise _Stop()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> Result | ExitCode:
    from badsum.kernel.filter import FilterError, parse, tunnel_ports
    from badsum.wire.ports import PortTable

    try:
        flt = parse(args.filter)
        ports = PortTable.with_vxlan_ports(tuple(args.vxlan_port))
        tunnel_ports(dict(ports.by_port))
    except FilterError as e:
        return _error(args, "follow.filter", f"filter: {e}", ExitCode.USAGE)
    if args.duration is not None and args.duration <= 0:
        return _error(args, "follow.usage", "--duration must be more than 0", ExitCode.USAGE)
    if args.write:
        from badsum.outfile import check_writable_target

        try:
            check_writable_target(args.write)
        except OSError as e:
            return _error(args, "write.not_writable", f"-w {args.write}: {e.strerror or e}", ExitCode.USAGE)
    if getattr(args, "html", None) and (refused := unsafe_output("--html", args.html)):
        return _error(args, *refused, ExitCode.USAGE)
    from badsum.kernel.session import FollowConfig, FollowSession, Unavailable

    config = FollowConfig(flt, min(args.snaplen, 2047), max(args.rate, 0), dict(ports.by_port), args.btf)
    try:
        session = FollowSession(config)
    except Unavailable as e:
        return _error(args, "follow.unavailable", f"follow cannot run here: {e}; "
                      "`badsum capture` + `badsum trace` place faults without eBPF", ExitCode.UNREADABLE)  # fmt: skip
    names = _names()
    recorded = _Recording()
    try:
        with session, _signals_stop():
            recorded = record(session, args, names)
            loss = session.loss()
            malformed = session.malformed
            stats = session.stats()
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    names.update({k: v for k, v in _names().items() if k not in names})
    return finish(args, flt.text, recorded, names, ports, loss, stats, malformed)


@dataclasses.dataclass(slots=True)
class _Recording:
    events: list = dataclasses.field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    stopped_by: str = "duration"
    command_exit: int | None = None
    kept_all: bool = True


#: How often namespace names are read again while recording: one made and removed meanwhile (a
#: lab, a short-lived container) is named by what it was called while it lived.
NAMES_EVERY_S = 1.0


def record(session, args: argparse.Namespace, names: dict[int, str]) -> _Recording:  # noqa: ANN001
    """Poll until the duration, the count, the command's end or a signal; returns what arrived.
    `names` (netns inode -> id) grows with the namespaces seen meanwhile."""
    rec = _Recording(started=time.time())
    limit = min(args.count or DEFAULT_MAX_EVENTS, DEFAULT_MAX_EVENTS)
    t0 = time.monotonic()
    deadline = t0 + args.duration if args.duration is not None else None
    proc = None
    progress = sys.stderr.isatty() and not args.json
    if not args.json and sys.stderr.isatty():
        what = f"'{args.filter}'" if args.filter else "every packet"
        say(f"following {what} on every device in every namespace (Ctrl-C stops)")
    drain_until: float | None = None
    last_shown = 0.0
    last_names = t0
    try:
        if args.command:
            try:
                # Under --json our stdout is the envelope alone: the command's output goes to stderr.
                proc = subprocess.Popen(args.command, stdin=subprocess.DEVNULL,
                                        stdout=sys.stderr.fileno() if args.json else None)
            except OSError as e:
                say(f"cannot run {args.command[0]}: {e.strerror or e}")
                rec.stopped_by = "command-failed"
                return rec
        while True:
            got = session.poll_raw(100)  # decoded after the recording: draining must keep up
            room = limit - len(rec.events)
            if len(got) > room:
                rec.kept_all = args.count is not None and len(rec.events) + len(got) >= args.count
                got = got[:room]
            rec.events.extend(got)
            now = time.monotonic()
            if now - last_names >= NAMES_EVERY_S:
                names.update({k: v for k, v in _names().items() if k not in names})
                last_names = now
            if progress and now - last_shown > 0.5:
                sys.stderr.write(f"\r  {len(rec.events):,} events in {now - t0:.0f} s ")
                sys.stderr.flush()
                last_shown = now
            if len(rec.events) >= limit:
                rec.stopped_by = "count" if args.count and len(rec.events) >= args.count else "memory-bound"
                break
            if deadline is not None and now >= deadline:
                rec.stopped_by = "duration"
                break
            if proc is not None and drain_until is None and proc.poll() is not None:
                rec.command_exit = proc.returncode
                drain_until = now + DRAIN_S
            if drain_until is not None and now >= drain_until:
                rec.stopped_by = "command"
                break
    except (KeyboardInterrupt, _Stop):
        rec.stopped_by = "interrupted"
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()  # ours: started above, stopped by its own handle
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if progress:
            sys.stderr.write("\r\033[K")
    rec.events.extend(session.stop()[: max(0, limit - len(rec.events))])
    rec.ended = time.time()
    rec.events = session.decode(rec.events)
    return rec


def _names() -> dict[int, str]:
    from badsum.host.netns import discover

    return {r.inode: r.id for r in discover().namespaces}


def _with_locations(events: list) -> list:  # noqa: ANN001
    from badsum.kernel.symbols import Symbols

    syms = Symbols()
    names: dict[int, str] = {}
    out = []
    for e in events:
        if e.location and not e.location_name:
            if e.location not in names:
                names[e.location] = syms.name(e.location)
            e = dataclasses.replace(e, location_name=names[e.location])
        out.append(e)
    return out


def finish(args: argparse.Namespace, filter_text: str, rec: _Recording, names: dict[int, str], ports, loss, stats,
           malformed: int) -> Result:  # noqa: ANN001
    from badsum.follow.result import follow_analysis, to_data

    events = _with_locations(rec.events)
    result = follow_analysis(events, names, ports)
    data = to_data(result)
    data["recording"] = {
        "filter": filter_text, "start": round(rec.started, 3), "end": round(rec.ended, 3),
        "stopped_by": rec.stopped_by, "events": len(events), "command_exit": rec.command_exit,
        "lost": {"ring_full": loss.ring_full, "rate_limited": loss.rate_limited, "malformed": malformed,
                 "over_memory_bound": 0 if rec.kept_all else None},
        "cut_by_snaplen": loss.truncated, "kernel_counters": stats,
        "hooks": ["net:net_dev_start_xmit", "net:netif_receive_skb", "net:netif_rx", "skb:kfree_skb"],
    }  # fmt: skip
    errors = []
    if args.write:
        wrote = _write(args.write, events, names, filter_text, min(args.snaplen, 2047), loss)
        if isinstance(wrote, str):
            errors.append({"code": "write.failed", "message": wrote})
        else:
            data["written"] = wrote
    if getattr(args, "html", None):
        from badsum.report.html_follow import follow_page
        from badsum.report.html_io import write_page

        try:
            write_page(args.html, follow_page(data))
            data["html"] = args.html
        except OSError as e:
            errors.append({"code": "html.cannot_write", "message": f"cannot write {args.html}: {e.strerror or e}"})
    bad = data["summary"]["flows_bad"]
    code = ExitCode.FINDINGS if bad else ExitCode.UNREADABLE if errors else ExitCode.OK
    # A failed -w is exit 3, but the analysis itself found nothing wrong: its status stays `ok`.
    return Result("follow", code, data, errors, text=lambda: _text(data, args.verbose),
                  text_stderr=[e["message"] for e in errors], status="findings" if bad else "ok")


def _text(data: dict, verbose: bool) -> str:
    from badsum.report.follow_text import render

    return render(data, verbose)


def _write(path: str, events: list, names: dict[int, str], filter_text: str, snaplen: int, loss) -> dict | str:  # noqa: ANN001
    from badsum.capture.follow_pcapng import write_events

    try:
        # bpf_ktime_get_ns is CLOCK_MONOTONIC: the offset to UNIX time, taken now, dates the events.
        summary = write_events(path, events, names, wall_offset_ns=time.time_ns() - time.monotonic_ns(),
                               filter_text=filter_text, snaplen=snaplen, loss=loss)  # fmt: skip
    except OSError as e:
        return f"cannot write {path}: {e.strerror or e}"
    return {"path": path, **(summary.as_dict() if hasattr(summary, "as_dict") else {})}


__all__ = ["register", "run"]
