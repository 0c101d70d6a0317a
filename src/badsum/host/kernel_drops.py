"""Kernel drops placed by the kernel itself: the namespace and device of each dropped skb (eBPF).

`KernelDrops` serves DropWatch's interface (host/drops.py) over kernel/session.py's DropCounter,
an eBPF program on the raw tracepoint kfree_skb that counts drops in a hash map by (namespace,
ifindex, reason, protocol, location). The map holds totals since the program was loaded;
`read()` returns the drops since the previous read, as DropWatch does.

`open_drops()` is the one choice `watch` and `exporter` make: the kernel counter when it loads,
else the tracefs reader, whose host-wide drops the caller joins to namespaces by their counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from badsum.host.drops import Drop, DropWatch
from badsum.host.nscounters import COUNTER_JOIN
from badsum.kernel.records import DropCount

#: `attribution` / `drops_method` of drops the kernel placed (docs/cli.md, `badsum watch`).
KERNEL = "kernel"
#: `--drops` choices: the kernel counter, else tracefs (auto); only one of them.
CHOICES = ("auto", "kernel", "tracefs")
#: Distinct (namespace, device, reason, protocol, location) keys kept at most. The kernel's table
#: holds 16384 (MAX_DROP_KEYS, kernel/bpf/drops.bpf.c); at half of that the counter is reloaded
#: empty, so a long-running exporter on a node whose pods come and go never fills it.
MAX_KEYS = 8192
#: Addresses -> function names remembered at most (a few dozen dropping functions in practice).
MAX_FUNCTIONS = 4096


class NotAvailable(Exception):
    """The kernel counter cannot run here; the message says why in one line."""


class Counting(Protocol):
    """What KernelDrops needs of kernel/session.py's DropCounter (tests pass a fake)."""

    reasons: dict[int, str]

    def read(self) -> list[DropCount]: ...

    def close(self) -> None: ...


def open_counter(btf_path: str | None) -> Counting:
    """kernel/session.py's DropCounter, loaded and attached; NotAvailable with its reason if not."""
    try:
        from badsum.kernel.session import DropCounter, Unavailable
    except (ImportError, OSError) as e:
        raise NotAvailable(f"the eBPF loader cannot be imported: {e}") from None
    try:
        return DropCounter(btf_path)
    except Unavailable as e:
        raise NotAvailable(str(e)) from None
    except OSError as e:
        raise NotAvailable(f"cannot load the drop counter: {e.strerror or e}") from None


def kernel_overflow(counter: object) -> int:
    """Drops the kernel could not count because its table was full (drops.bpf.c `overflow`, a
    per-CPU total), or 0 when it cannot be read."""
    own = getattr(counter, "overflow", None)
    if callable(own):
        return int(own())
    obj = getattr(counter, "obj", None)
    if obj is None:
        return 0
    from badsum.kernel import libbpf

    try:
        raw = libbpf.map_lookup(obj.map_fd("overflow"), b"\0\0\0\0", 8 * libbpf.possible_cpus()) or b""
    except (libbpf.BpfError, OSError):
        return 0
    return sum(int.from_bytes(raw[k : k + 8], "little") for k in range(0, len(raw), 8))


def kallsyms_functions(addrs: set[int]) -> dict[int, str]:
    """Kernel addresses -> the function each is in (`tcp_v4_rcv`, as DropWatch names locations;
    hex when the kernel hides its addresses). /proc/kallsyms is read for each batch and not kept:
    its table is about 25 MB and new dropping places are rare."""
    from badsum.kernel.symbols import Symbols, function

    symbols = Symbols()
    return {a: function(symbols.name(a)) for a in addrs}


class KernelDrops:
    """Drops since the previous read, each with the namespace inode and device the kernel saw.

    Same interface as DropWatch: `start()` (False with `why_not`), `read()`, `stop()`, `reasons`
    ({code: name}, names without SKB_DROP_REASON_), `lost` (drops not counted, since the start).
    """

    method = KERNEL

    def __init__(self, *, btf_path: str | None = None, max_keys: int = MAX_KEYS,
                 opener: Callable[[str | None], Counting] | None = None,
                 functions_of: Callable[[set[int]], dict[int, str]] = kallsyms_functions) -> None:  # fmt: skip
        self.btf_path = btf_path
        self.max_keys = max_keys
        self.opener = opener or open_counter
        self.functions_of = functions_of
        self.why_not: str | None = None
        self.reasons: dict[int, str] = {}
        self.lost = 0
        self.reloads = 0
        """How often the counter was reloaded empty because it held `max_keys` keys."""
        self._counter: Counting | None = None
        self._last: dict[tuple[int, int, str, int, int], int] = {}
        self._overflow = 0
        self._functions: dict[int, str] = {}

    def start(self) -> bool:
        try:
            self._counter = self.opener(self.btf_path)
        except NotAvailable as e:
            self.why_not = str(e)
            return False
        self.reasons = {code: name.removeprefix("SKB_DROP_REASON_") for code, name in self._counter.reasons.items()}
        self._last, self._overflow = {}, 0
        return True

    def read(self) -> list[Drop]:
        """Drops since the previous read (since start() for the first), most first."""
        counter = self._counter
        if counter is None:
            return []
        rows: list[DropCount] = counter.read()
        overflow = kernel_overflow(counter)
        self.lost += max(0, overflow - self._overflow)
        self._overflow = overflow
        moved: Counter[tuple[str, int, str, int | None, str | None]] = Counter()
        now: dict[tuple[int, int, str, int, int], int] = {}
        self._resolve({r.location for r in rows})
        for r in rows:
            key = (r.netns, r.ifindex, r.reason, r.protocol, r.location)
            # The kernel never removes a key and only adds to a count; a key missing from the
            # previous read is new since then (its drops all happened in this interval).
            before = self._last.get(key, 0)
            delta = r.count - before if r.count >= before else r.count
            now[key] = r.count
            if delta:
                # Several addresses in one function, or one device under two ifindexes over time,
                # fold into one group, as DropWatch groups by function.
                moved[(r.reason, r.protocol, self._functions.get(r.location, ""), r.netns or None, r.ifname or None)] += delta
        self._last = now
        if len(now) >= self.max_keys:
            self._reload()
        return [Drop(reason, proto, loc, netns, n, device)
                for (reason, proto, loc, netns, device), n in moved.most_common()]  # fmt: skip

    def _resolve(self, addrs: set[int]) -> None:
        """Function names for the addresses not seen before, in one batch."""
        new = {a for a in addrs if a and a not in self._functions}
        if not new:
            return
        if len(self._functions) + len(new) > MAX_FUNCTIONS:
            self._functions.clear()
            new = {a for a in addrs if a}
        self._functions.update(self.functions_of(new))

    def _reload(self) -> None:
        """A fresh, empty counter in place of the full one. Drops between the last read of the old
        one and the attach of the new one (a few milliseconds) are not seen."""
        old, self._counter = self._counter, None
        if old is not None:
            old.close()
        self.reloads += 1
        try:
            self._counter = self.opener(self.btf_path)
        except NotAvailable as e:
            self.why_not = f"the drop counter could not be reloaded: {e}"
        self._last, self._overflow = {}, 0

    def stop(self) -> None:
        """Detach and unload (the program goes with its file descriptors). Safe to call twice."""
        counter, self._counter = self._counter, None
        if counter is not None:
            counter.close()


@dataclass(frozen=True, slots=True)
class DropSource:
    """The drop reader `watch`/`exporter` use, and why not a better one."""

    reader: KernelDrops | DropWatch | None
    method: str | None
    """`kernel`, `counter-join` (host-wide tracefs drops joined by counters), or None (no drops)."""
    kernel_why_not: str | None
    """Why the kernel counter is not used, when it was tried."""
    why_not: str | None
    """Why there are no drops at all (method None)."""


def open_drops(choice: str, tracefs_name: str, *, btf_path: str | None = None,
               kernel: Callable[[], KernelDrops] | None = None,
               tracefs: Callable[[str], DropWatch] = DropWatch) -> DropSource:  # fmt: skip
    """`choice` is one of CHOICES. `auto` tries the kernel counter, then tracefs; the started reader
    is the caller's to stop."""
    if choice not in CHOICES:
        raise ValueError(f"drops: {choice!r} is not one of {', '.join(CHOICES)}")
    kernel_why = None
    if choice in ("auto", "kernel"):
        k = kernel() if kernel is not None else KernelDrops(btf_path=btf_path)
        if k.start():
            return DropSource(k, KERNEL, None, None)
        kernel_why = k.why_not or "the drop counter did not start"
        if choice == "kernel":
            return DropSource(None, None, kernel_why, kernel_why)
    w = tracefs(tracefs_name)
    if w.start():
        return DropSource(w, COUNTER_JOIN, kernel_why, None)
    why = w.why_not or "the tracefs reader did not start"
    return DropSource(None, None, kernel_why, why if kernel_why is None else f"{kernel_why}; and {why}")


__all__ = ["CHOICES", "KERNEL", "MAX_KEYS", "DropSource", "KernelDrops", "NotAvailable", "open_drops"]
