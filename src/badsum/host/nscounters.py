"""Counters of every network namespace, sampled again and again: deltas per interval for `watch`.

Each sample runs `nstat -a -s -z --json` inside the namespace (host/commands.py: nsenter on an fd
checked by inode), all namespaces in parallel. Namespaces come and go between intervals: one that
appeared has no delta yet (its first sample is its baseline), one that vanished is reported gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from badsum.host import commands
from badsum.host.counters import CSUM_COUNTERS, flatten_nstat
from badsum.host.netns import NsRef

#: Fragmentation and PMTU: reassembly and fragmentation failures, frag-needed and Packet Too Big.
FRAG_COUNTERS = (
    "IpReasmReqds",
    "IpReasmFails",
    "IpFragCreates",
    "IpFragFails",
    "Ip6ReasmFails",
    "Ip6FragFails",
    "IcmpInDestUnreachs",
    "IcmpOutDestUnreachs",
    "Icmp6InPktTooBigs",
    "Icmp6OutPktTooBigs",
)
WATCH_COUNTERS = (*CSUM_COUNTERS, *FRAG_COUNTERS)
NSTAT_ARGV = ["nstat", "-a", "-s", "-z", "--json", *WATCH_COUNTERS]
WORKERS = 16  # subprocesses waiting on exec, not CPU: more than the cores pays off

#: Drop reasons (names from the kernel's table) and the counters the same drop moves, to join a
#: host-wide drop to the namespace whose counter moved (net/ipv4/tcp_ipv4.c, udp.c, ip_input.c, icmp.c).
REASON_COUNTERS: dict[str, tuple[str, ...]] = {
    "TCP_CSUM": ("TcpInCsumErrors",),
    "UDP_CSUM": ("UdpInCsumErrors", "Udp6InCsumErrors", "UdpLiteInCsumErrors", "UdpLite6InCsumErrors"),
    "IP_CSUM": ("IpExtInCsumErrors",),
    "ICMP_CSUM": ("IcmpInCsumErrors", "Icmp6InCsumErrors"),
    "FRAG_REASM_TIMEOUT": ("IpReasmFails", "Ip6ReasmFails"),
    "FRAG_TOO_FAR": ("IpReasmFails", "Ip6ReasmFails"),
    "DUP_FRAG": ("IpReasmFails", "Ip6ReasmFails"),
    "PKT_TOO_BIG": ("IpFragFails", "Ip6FragFails"),
}
COUNTER_JOIN = "counter-join"


@dataclass(frozen=True, slots=True)
class Sample:
    """One namespace's counters at one moment; `error` when they could not be read."""

    at: float
    values: dict[str, int] | None
    error: str | None = None
    vanished: bool = False


def sample(ref: NsRef, now: Callable[[], float] = time.monotonic) -> Sample:
    out = commands.run(NSTAT_ARGV, ref.target)
    at = now()
    if out.stdout is None:
        return Sample(at, None, out.error, out.vanished)
    try:
        flat = flatten_nstat(out.stdout)
    except ValueError as e:
        return Sample(at, None, f"nstat output not understood ({e})")
    # A counter the kernel lacks (no IPv6 in this namespace) reads 0, so deltas line up.
    return Sample(at, {k: flat.get(k, 0) for k in WATCH_COUNTERS})


class Sampler:
    """Samples many namespaces in parallel with one long-lived pool."""

    def __init__(self, workers: int = WORKERS, read: Callable[[NsRef], Sample] = sample) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="badsum-watch")
        self._read = read

    def sample_all(self, refs: Iterable[NsRef]) -> dict[int, Sample]:
        refs = list(refs)
        return dict(zip((r.inode for r in refs), self._pool.map(self._read, refs)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class NsDelta:
    """What moved in one namespace during one interval."""

    ns_id: str
    inode: int
    deltas: dict[str, int] | None
    """None when there is no delta (`baseline`, `gone`, `error`)."""
    state: str = "ok"
    """`ok`; `new` (appeared during this interval: counted from 0, as a new namespace's counters start);
    `baseline` (its previous sample failed: this one is the new baseline); `gone` (vanished); `error`."""
    error: str | None = None

    def moved(self, names: Iterable[str] | None = None) -> dict[str, int]:
        if not self.deltas:
            return {}
        keys = self.deltas.keys() if names is None else names
        return {k: self.deltas[k] for k in keys if self.deltas.get(k)}


def deltas(refs: list[NsRef], before: dict[int, Sample], after: dict[int, Sample],
           previous_refs: list[NsRef] | None = None) -> list[NsDelta]:  # fmt: skip
    """Per namespace: after - before. `previous_refs` are the namespaces of the previous sample (None
    for the first interval: nothing is new then). A counter that went down (a wrapped 32-bit counter;
    a recreated namespace has another inode) counts from 0."""
    out = []
    for r in refs:
        b, a = before.get(r.inode), after.get(r.inode)
        if a is None or a.values is None:
            state = "gone" if a is not None and a.vanished else "error"
            out.append(NsDelta(r.id, r.inode, None, state, a.error if a else "not sampled"))
        elif b is None and previous_refs is not None and r.inode not in {p.inode for p in previous_refs}:
            # It appeared after the previous sample: created meanwhile, so its counters started at 0
            # within this interval (a container started during the watch counts from its first packet).
            out.append(NsDelta(r.id, r.inode, dict(a.values), "new"))
        elif b is None or b.values is None:
            out.append(NsDelta(r.id, r.inode, None, "baseline"))
        else:
            d = {k: (v - b.values.get(k, 0)) if v >= b.values.get(k, 0) else v for k, v in a.values.items()}
            out.append(NsDelta(r.id, r.inode, d))
    seen = {r.inode for r in refs}
    for r in previous_refs or ():
        if r.inode not in seen:
            out.append(NsDelta(r.id, r.inode, None, "gone", "the namespace vanished"))
    return out


def attribute(reason: str, moved: list[NsDelta]) -> list[NsDelta]:
    """The namespaces whose counters for this drop reason moved in the interval."""
    names = REASON_COUNTERS.get(reason)
    if not names:
        return []
    return [d for d in moved if d.moved(names)]
