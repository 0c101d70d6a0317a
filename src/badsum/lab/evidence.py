"""Kernel evidence for a lab: checksum counters per namespace (nstat) and drop reasons
(`skb:kfree_skb` in the lab's own tracefs instance, names read from the running kernel)."""

from __future__ import annotations

from badsum.host import drops
from badsum.host.counters import CSUM_COUNTERS, flatten_nstat
from badsum.lab.runner import CommandError, run

#: The checksum counters doctor reads, plus what a lab's traffic moves (retransmissions, PMTU).
LAB_COUNTERS = (
    *CSUM_COUNTERS,
    "TcpInSegs",
    "TcpRetransSegs",
    "IpReasmFails",
    "IpFragFails",
    "IcmpOutDestUnreachs",
    "IcmpInDestUnreachs",
)


def counters(ns: str) -> dict[str, int]:
    """Absolute values, without touching nstat's history file (-a -s); a counter the kernel
    lacks reads 0 so that deltas line up."""
    flat = flatten_nstat(run(["nstat", "-a", "-s", "-z", "--json"], ns=ns, timeout=10).stdout)
    return {k: flat.get(k, 0) for k in LAB_COUNTERS}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


TRACEFS_CANDIDATES = drops.TRACEFS_CANDIDATES


def _command(argv: list[str]) -> str | None:
    """mount/umount for the tracer, through the lab's runner (tests replace `run` to fake a kernel)."""
    try:
        run(argv, timeout=10)
    except CommandError as e:
        return e.detail
    return None


class DropTracer:
    """Records `skb:kfree_skb` into a tracefs instance of our own, then removes it
    (host/drops.py's DropWatch, read once at the end of the run).

    Drops are host-wide (the tracepoint has no namespace); during a lab the lab's traffic
    dominates, and the caller joins them with per-namespace counters.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._watch: drops.DropWatch | None = None
        self.why_not: str | None = None

    @property
    def instance(self) -> str | None:
        return self._watch.instance if self._watch else None

    @property
    def mounted(self) -> str | None:
        return self._watch.mounted if self._watch else None

    def start(self) -> bool:
        # The candidates are read at start, not import: tests point them at a kernel without tracefs.
        self._watch = drops.DropWatch(self.name, candidates=TRACEFS_CANDIDATES, command=_command)
        ok = self._watch.start()
        self.why_not = self._watch.why_not
        return ok

    def collect(self) -> list[dict]:
        """Drops by reason, protocol and kernel location, most first."""
        if not self._watch or not self._watch.instance:
            return []
        return [{"reason": d.reason, "protocol": d.protocol, "location": d.location, "count": d.count}
                for d in self._watch.read()]  # fmt: skip

    def stop(self) -> None:
        if self._watch:
            self._watch.stop()
