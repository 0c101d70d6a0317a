"""Kernel evidence for a lab: checksum counters per namespace (nstat) and drop reasons
(`skb:kfree_skb` in the lab's own tracefs instance, names read from the running kernel)."""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from pathlib import Path

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


TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_LINE = re.compile(r"kfree_skb:.*?protocol=(?P<proto>\d+)\s+location=(?P<loc>\S+).*?reason: (?P<reason>\w+)")


class DropTracer:
    """Records `skb:kfree_skb` into a tracefs instance of our own, then removes it.

    Drops are host-wide (the tracepoint has no namespace); during a lab the lab's traffic
    dominates, and the caller joins them with per-namespace counters.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.root: str | None = None
        self.mounted: str | None = None
        self.instance: str | None = None
        self.why_not: str | None = None

    def start(self) -> bool:
        root = next((r for r in TRACEFS_CANDIDATES if os.path.isdir(os.path.join(r, "instances"))), None)
        if root is None:
            # Not mounted: mount it on a private directory, never on the system's path, so that
            # unmounting it afterwards cannot pull tracefs from under the host or a concurrent lab.
            mnt = tempfile.mkdtemp(prefix=f"{self.name}-tracefs-")
            try:
                run(["mount", "-t", "tracefs", "nodev", mnt], timeout=10)
            except CommandError as e:
                os.rmdir(mnt)
                self.why_not = f"tracefs not available: {e.detail}"
                return False
            root = self.mounted = mnt
        event = os.path.join(root, "events", "skb", "kfree_skb")
        if not os.path.isdir(event):
            self.why_not = "this kernel has no skb:kfree_skb tracepoint"
            self.stop()  # unmount what we mounted
            return False
        self.root = root
        self.instance = os.path.join(root, "instances", self.name)
        try:
            os.mkdir(self.instance)
            self._write("buffer_size_kb", "4096")
            self._write("events/skb/kfree_skb/enable", "1")
        except OSError as e:
            self.why_not = f"cannot create tracefs instance: {e}"
            self.stop()
            return False
        return True

    def _write(self, rel: str, value: str) -> None:
        assert self.instance
        with open(os.path.join(self.instance, rel), "w") as f:
            f.write(value)

    def collect(self) -> list[dict]:
        """Drops by reason, protocol and kernel location, most first."""
        if not self.instance:
            return []
        try:
            self._write("events/skb/kfree_skb/enable", "0")
            text = Path(self.instance, "trace").read_text(errors="replace")
        except OSError:
            return []
        c: Counter = Counter()
        for m in _LINE.finditer(text):
            loc = m.group("loc").split("+")[0]
            c[(m.group("reason"), int(m.group("proto")), loc)] += 1
        return [{"reason": r, "protocol": p, "location": loc, "count": n} for (r, p, loc), n in c.most_common()]

    def stop(self) -> None:
        if self.instance and os.path.isdir(self.instance):
            try:
                self._write("events/skb/kfree_skb/enable", "0")
            except OSError:
                pass
            try:
                os.rmdir(self.instance)
            except OSError:
                pass
        self.instance = None
        if self.mounted:
            if run(["umount", self.mounted], check=False, timeout=10).returncode == 0:
                os.rmdir(self.mounted)
            self.mounted = None
