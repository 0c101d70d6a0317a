"""Kernel packet drops by reason: the `skb:kfree_skb` tracepoint, in a tracefs instance of our own.

The reason names come from the running kernel's tracepoint format (its `__print_symbolic` table),
never from numbers written down here: the enum `skb_drop_reason` grows and is renumbered between
kernel releases. The tracepoint carries no network namespace; `DropWatch` reports drops host-wide
and the caller joins them with per-namespace counters (see host/nscounters.py). Kernels here
(6.18 as built) have no kprobe, fprobe or event-probe events, which is what tracefs would need to
fetch `skb->dev->nd_net` itself; where eBPF runs, host/kernel_drops.py serves the same interface
with the namespace and device of each dropped skb, and this reader is the fallback.

Nothing outside our instance is touched: the event is enabled only inside it, and `stop()`
disables it, removes the instance and unmounts a tracefs we mounted privately.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from badsum.host import commands

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
EVENT = os.path.join("events", "skb", "kfree_skb")
#: Per CPU; at 1 s intervals even a drop storm of ~50k/s fits.
BUFFER_KB = "4096"
#: How attribution to a namespace was made, per record (docs/cli.md, `badsum watch`).
HOST_WIDE = "host-wide"

#: Ethertypes the kernel puts in skb->protocol, by name (unknown ones print as 0x....).
ETHERTYPES = {
    0x0000: "none",
    0x0004: "802.2",
    0x0800: "IPv4",
    0x0806: "ARP",
    0x86DD: "IPv6",
    0x8100: "802.1Q",
    0x88A8: "802.1ad",
    0x8847: "MPLS",
    0x8848: "MPLS-multicast",
    0x88CC: "LLDP",
    0x8035: "RARP",
    0x6558: "TEB",
    0x88E5: "MACsec",
    0x0003: "all",
}

_SYMBOL = re.compile(r"\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*\"([^\"]*)\"\s*\}")
_LINE = re.compile(
    r"kfree_skb:.*?\bprotocol=(?P<proto>\d+)\s+location=(?P<loc>\S+)"
    r"(?:.*?\breason: (?P<reason>\S+))?"
)
_LOST = re.compile(r"\[LOST (\d+) EVENTS\]")


def protocol_name(ethertype: int) -> str:
    return ETHERTYPES.get(ethertype, f"0x{ethertype:04x}")


@dataclass(frozen=True, slots=True)
class Drop:
    """Packets the kernel freed as dropped, counted by what they have in common."""

    reason: str
    """The kernel's drop reason name (`TCP_CSUM`), from the tracepoint format of this kernel."""
    protocol: int
    """skb->protocol, an ethertype (0x0800)."""
    location: str
    """The kernel function that dropped it, without offset (`tcp_v4_rcv`)."""
    netns: int | None
    """The network namespace inode when known: the kernel counter (eBPF) knows it, the tracepoint
    alone never does."""
    count: int
    device: str | None = None
    """The device the skb was on when dropped (`eth0`), when the kernel counter tells it."""

    @property
    def protocol_name(self) -> str:
        return protocol_name(self.protocol)


@dataclass(frozen=True, slots=True)
class TraceLine:
    """One kfree_skb event as trace text shows it."""

    reason: str | None
    protocol: int
    location: str


def parse_reasons(format_text: str) -> dict[int, str]:
    """{value: name} from the `__print_symbolic(REC->reason, {2, "NOT_SPECIFIED"}, ...)` of the
    tracepoint's `format` file; empty when the event has no reason (kernels before 5.17)."""
    _, sep, fmt = format_text.partition("print fmt:")
    start = fmt.find("__print_symbolic(REC->reason")
    if not sep or start < 0:
        return {}
    return {int(v, 0): name for v, name in _SYMBOL.findall(fmt[start:])}


def has_reason_field(format_text: str) -> bool:
    return re.search(r"field:[^;]*\breason;", format_text) is not None


def parse_line(line: str) -> TraceLine | None:
    m = _LINE.search(line)
    if m is None:
        return None
    loc = m.group("loc").split("+", 1)[0]
    return TraceLine(m.group("reason"), int(m.group("proto")), loc)


def reason_name(text: str | None, reasons: dict[int, str]) -> str:
    """The name for a reason as printed: `__print_symbolic` prints a value missing from its table as
    a number (a kernel newer than its format? never, but a corrupt line may), so map numbers back."""
    if text is None:
        return "NOT_SPECIFIED"
    try:
        value = int(text, 0)
    except ValueError:
        return text
    return reasons.get(value, f"UNKNOWN_{value}")


def lost_events(line: str) -> int:
    """`CPU:1 [LOST 12 EVENTS]`: the ring buffer overflowed; those drops were not seen."""
    m = _LOST.search(line)
    return int(m.group(1)) if m else 0


def group(lines: list[TraceLine], reasons: dict[int, str], netns: int | None = None) -> list[Drop]:
    """Drops counted by reason, protocol and location, most first."""
    c: Counter[tuple[str, int, str]] = Counter()
    for t in lines:
        c[(reason_name(t.reason, reasons), t.protocol, t.location)] += 1
    return [Drop(r, p, loc, netns, n) for (r, p, loc), n in c.most_common()]


def _default_command(argv: list[str]) -> str | None:
    out = commands.run(argv, timeout=10)
    return None if out.ok else (out.error or f"{argv[0]} failed")


class DropWatch:
    """`skb:kfree_skb` in the tracefs instance `name`, read incrementally through its trace_pipe.

    `command(argv)` runs mount/umount and returns None on success or a one-line error (the lab
    passes its own runner). `read()` consumes what arrived since the previous read, so nothing is
    counted twice or lost between intervals (except what the kernel reports as lost: `lost`).
    """

    def __init__(self, name: str, *, candidates: tuple[str, ...] = TRACEFS_CANDIDATES,
                 command: Callable[[list[str]], str | None] = _default_command) -> None:  # fmt: skip
        self.name = name
        self.candidates = candidates
        self.command = command
        self.root: str | None = None
        self.mounted: str | None = None
        self.instance: str | None = None
        self.why_not: str | None = None
        self.reasons: dict[int, str] = {}
        self.lost = 0
        self._fd: int | None = None
        self._partial = b""

    def start(self) -> bool:
        root = next((r for r in self.candidates if os.path.isdir(os.path.join(r, "instances"))), None)
        if root is None:
            # Not mounted: mount it on a private directory, never on the system's path, so that
            # unmounting it afterwards cannot pull tracefs from under the host or a concurrent lab.
            mnt = tempfile.mkdtemp(prefix=f"{self.name}-tracefs-")
            error = self.command(["mount", "-t", "tracefs", "nodev", mnt])
            if error is not None:
                os.rmdir(mnt)
                self.why_not = f"tracefs not available: {error}"
                return False
            root = self.mounted = mnt
        self.root = root
        fmt = _read_text(os.path.join(root, EVENT, "format"))
        if fmt is None:
            self.why_not = "this kernel has no skb:kfree_skb tracepoint"
            self.stop()  # unmount what we mounted
            return False
        self.reasons = parse_reasons(fmt)
        if not has_reason_field(fmt) or not self.reasons:
            self.why_not = "this kernel's skb:kfree_skb has no drop reasons (they came with Linux 5.17)"
            self.stop()
            return False
        self.instance = os.path.join(root, "instances", self.name)
        try:
            os.mkdir(self.instance)
            self._write("buffer_size_kb", BUFFER_KB)
            self._write(os.path.join(EVENT, "enable"), "1")
            self._fd = os.open(os.path.join(self.instance, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            self.why_not = f"cannot create tracefs instance {self.name}: {e.strerror or e}"
            self.stop()
            return False
        return True

    def _write(self, rel: str, value: str) -> None:
        assert self.instance
        with open(os.path.join(self.instance, rel), "w") as f:
            f.write(value)

    #: Bytes consumed per read() at most: a busy host frees skbs faster than any reader parses text,
    #: so a read that went on while data kept arriving would never return and would hold it all in
    #: memory. What is left waits in the kernel's ring (4 MB per CPU); what overflows it the kernel
    #: counts as lost, and so do we (`lost`).
    MAX_READ_BYTES = 16 << 20

    def read_counts(self) -> Counter[tuple[str, int, str]]:
        """The kfree_skb events that arrived since the previous call, counted by (reason, protocol,
        location) as they are parsed: memory does not grow with the number of events."""
        c: Counter[tuple[str, int, str]] = Counter()
        if self._fd is None:
            return c
        budget = self.MAX_READ_BYTES
        while budget > 0:
            try:
                data = os.read(self._fd, min(1 << 16, budget))
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                break
            if not data:
                break
            budget -= len(data)
            text, _, self._partial = (self._partial + data).rpartition(b"\n")  # an event split across reads waits for its end
            for raw in text.decode(errors="replace").splitlines():
                self.lost += lost_events(raw)
                t = parse_line(raw)
                if t is not None:
                    c[(reason_name(t.reason, self.reasons), t.protocol, t.location)] += 1
        return c

    def read(self) -> list[Drop]:
        """Drops since the previous read, by reason, protocol and location (host-wide)."""
        return [Drop(r, p, loc, None, n) for (r, p, loc), n in self.read_counts().most_common()]

    def stop(self) -> None:
        """Disable, remove the instance, unmount a private tracefs. Safe to call more than once."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.instance and os.path.isdir(self.instance):
            try:
                self._write(os.path.join(EVENT, "enable"), "0")
            except OSError:
                pass
            try:
                os.rmdir(self.instance)
            except OSError:
                pass
        self.instance = None
        if self.mounted:
            if self.command(["umount", self.mounted]) is None:
                os.rmdir(self.mounted)
            self.mounted = None


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None
