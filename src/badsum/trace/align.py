"""Matching packets across points: every pair of points, by key; a packet is a connected group.

A group ("chain") holds the observations of one packet at every point where it was seen: one
per point, or several where it was segmented (TSO/GSO) or merged (GRO). Exact keys pair one to
one in capture order; TCP data pairs by overlapping sequence ranges (see `keys.related`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict, deque
from dataclasses import dataclass, field

from badsum.trace.keys import PacketKey, key_of, related
from badsum.trace.model import Observation

#: How far back (in sequence space) a super-frame can start before a segment it holds.
MAX_SUPERFRAME = 512 * 1024


@dataclass(slots=True)
class Chain:
    """One packet across points."""

    at: dict[int, list[Observation]] = field(default_factory=dict)
    """Point index -> the observations there, in capture order."""
    reverse: bool = False
    """Seen first at a later point: the packet travels against the path order."""

    @property
    def points(self) -> list[int]:
        """Indexes of the points where it was seen, in its direction of travel."""
        return sorted(self.at, reverse=self.reverse)

    @property
    def first_ts(self) -> int:
        return min(o.ts_ns for obs in self.at.values() for o in obs)


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def align(observations: list[Observation], n_points: int) -> list[Chain]:
    """Group observations (all points) into chains, ordered by first capture time."""
    keys = [key_of(o.frame) for o in observations]
    by_point: list[list[int]] = [[] for _ in range(n_points)]
    for i, o in enumerate(observations):
        if keys[i] is not None:
            by_point[o.point].append(i)
    u = _Union(len(observations))
    for a in range(n_points):
        for b in range(a + 1, n_points):
            _match(by_point[a], by_point[b], keys, u)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(observations)):
        if keys[i] is not None:
            groups[u.find(i)].append(i)
    chains = []
    for members in groups.values():
        c = Chain()
        for i in sorted(members, key=lambda j: observations[j].ts_ns):
            c.at.setdefault(observations[i].point, []).append(observations[i])
        seen = sorted(c.at)
        if len(seen) > 1:
            first = min(o.ts_ns for o in c.at[seen[0]])
            last = min(o.ts_ns for o in c.at[seen[-1]])
            c.reverse = last < first
        chains.append(c)
    chains.sort(key=lambda c: c.first_ts)
    return chains


def _match(a_idx: list[int], b_idx: list[int], keys: list[PacketKey | None], u: _Union) -> None:
    exact: dict[tuple, deque[int]] = defaultdict(deque)
    ranges: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for i in a_idx:
        k = keys[i]
        assert k is not None
        if k.is_range:
            ranges[k.bucket()].append((k.lo, i))
        else:
            exact[k.bucket()].append(i)
    for r in ranges.values():
        r.sort()
    for j in b_idx:
        k = keys[j]
        assert k is not None
        if not k.is_range:
            q = exact.get(k.bucket())
            if q:
                u.join(q.popleft(), j)
            continue
        r = ranges.get(k.bucket())
        if not r:
            continue
        start = bisect_left(r, (k.lo - MAX_SUPERFRAME, -1))
        stop = bisect_left(r, (k.hi, -1))
        for _, i in r[start:stop]:
            if related(keys[i], k):  # type: ignore[arg-type]
                u.join(i, j)


def order_by_time(chains: list[Chain], n_points: int) -> list[int]:
    """Point indexes in the order packets pass them: by the mean delay from each packet's first
    sighting, over the packets seen at two points or more (the busier direction wins)."""
    total = [0.0] * n_points
    count = [0] * n_points
    for c in chains:
        if len(c.at) < 2:
            continue
        t0 = c.first_ts
        for p, obs in c.at.items():
            total[p] += obs[0].ts_ns - t0
            count[p] += 1
    mean = [total[p] / count[p] if count[p] else float("inf") for p in range(n_points)]
    return sorted(range(n_points), key=lambda p: (mean[p], p))
