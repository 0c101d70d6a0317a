"""The collection loop: snapshot, rules, drops, names, canary -> an immutable `Latest` set of families.

Scrapes only ever read `Exporter.latest` (one reference, swapped whole when a collection ends,
its text rendered beforehand), so a slow collection never holds a scrape up: the scrape gets the
previous set. Counters stay
monotonic: checksum errors are the kernel's absolute per-namespace values (a namespace re-created
is a new `netns_inode`), drops accumulate here from the start (in the namespace and on the device
the kernel names, when its drop counter runs; else joined to a namespace by its counters). A namespace that vanished loses
its series at the next collection, drops attributed to it included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest

from badsum import __version__
from badsum.exporter import families
from badsum.exporter.canary import CanaryUnreadable, read_state
from badsum.exporter.families import CanaryState, Inputs
from badsum.host.cri import CriNamer, Owner
from badsum.host.model import HostSnapshot
from badsum.host.nscounters import REASON_COUNTERS
from badsum.rules.engine import evaluate, problems

DEFAULT_INTERVAL = 30.0
#: The two nstat samples of a snapshot: short, the exporter's rate comes from Prometheus.
COUNTER_INTERVAL = 0.2

SnapshotFn = Callable[[float], HostSnapshot]


def live_snapshot(now: float) -> HostSnapshot:
    from badsum.host.collect import collect_snapshot

    return collect_snapshot(now, counter_interval=COUNTER_INTERVAL)


class _Published:
    """A prometheus_client custom collector over one collection's families (on a registry of its own)."""

    def __init__(self, fams: tuple[Metric, ...]) -> None:
        self.fams = fams

    def collect(self) -> Iterator[Metric]:
        return iter(self.fams)


def render(fams: tuple[Metric, ...]) -> bytes:
    """The text exposition format, rendered once per collection: a scrape then only copies bytes, so
    even with the collector's threads busy (GIL) it answers at once, whatever the number of series."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Published(fams))  # type: ignore[arg-type]
    return generate_latest(registry)


@dataclass(frozen=True, slots=True)
class Latest:
    """One published set: what a scrape returns until the next collection replaces it."""

    families: tuple[Metric, ...]
    text: bytes
    """`families` in the text exposition format (what /metrics serves)."""
    finished_at: float | None
    """Unix time the last successful collection finished (None: none yet)."""
    duration_s: float | None
    namespaces: int


@dataclass(slots=True)
class Options:
    interval: float = DEFAULT_INTERVAL
    max_namespaces: int = 2000
    max_series: int = 50_000
    canary_file: str | None = None


@dataclass(slots=True)
class _State:
    """What carries over between collections (touched by the collector thread only)."""

    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(families.STAGES, 0))
    seen_findings: set[tuple[str, str]] = field(default_factory=set)
    drops: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)
    snapshot: HostSnapshot | None = None
    owners: dict[str, Owner] = field(default_factory=dict)
    findings: dict[tuple[str, str], int] = field(default_factory=dict)
    finished_at: float | None = None
    duration_s: float | None = None


class Exporter:
    """Owns the collection state and the latest published set."""

    def __init__(self, options: Options, *, snapshot: SnapshotFn = live_snapshot, drops: object | None = None,
                 namer: CriNamer | None = None, clock: Callable[[], float] = time.time,
                 log: Callable[[str], None] = lambda _m: None) -> None:  # fmt: skip
        self.options = options
        self.snapshot_fn = snapshot
        self.drops = drops
        """A started drop reader (host/kernel_drops.py KernelDrops or host/drops.py DropWatch: anything
        with `read() -> list[Drop]`), or None."""
        self.namer = namer
        self.clock = clock
        self.log = log
        self.drops_lock = threading.Lock()
        self._state = _State()
        first = tuple(families.bookkeeping(self._state.errors, None, None, __version__))
        self.latest = Latest(first, render(first), None, None, 0)
        self.dead: str | None = None
        """Why the collector thread stopped unexpectedly (healthz reports it)."""

    # -- errors -----------------------------------------------------------------------------------

    def error(self, stage: str, message: str) -> None:
        self._state.errors[stage] = self._state.errors.get(stage, 0) + 1
        self.log(f"collection error ({stage}): {message}")

    # -- one collection ---------------------------------------------------------------------------

    def collect_once(self) -> Latest:
        """Collect and publish; returns the published set. Never raises for the host's sake."""
        st = self._state
        t0 = time.monotonic()
        snap: HostSnapshot | None = None
        try:
            snap = self.snapshot_fn(self.clock())
        except Exception as e:  # noqa: BLE001 - keep serving the previous set, and say so
            self.error("snapshot", f"{type(e).__name__}: {e}")
        if snap is not None:
            for line in snap.errors:
                if line.startswith("internal error"):
                    self.error("snapshot", line)
            unknown = [ns.id for ns in snap.namespaces if ns.counters is None and not _vanished(ns.errors)]
            if unknown:
                self.error("counters", f"checksum counters unknown in {len(unknown)} namespace(s): {', '.join(unknown[:5])}")
            previous, st.snapshot = st.snapshot, snap
            st.findings = self._findings(snap)
            st.owners = self._owners(snap)
            self._read_drops(snap, attribution(previous, snap))
        else:
            self._read_drops(st.snapshot, {})
        canary = self._canary()
        built = families.build(Inputs(st.snapshot, st.findings, dict(st.drops), st.owners, canary,
                                      self.options.max_namespaces, self.options.max_series))  # fmt: skip
        for line in built.limited:
            self.error("limit", line)
        if snap is not None:
            st.finished_at, st.duration_s = self.clock(), round(time.monotonic() - t0, 3)
        own = families.bookkeeping(st.errors, st.duration_s, st.finished_at, __version__)
        fams = (*built.families, *own)
        self.latest = Latest(fams, render(fams), st.finished_at, st.duration_s, len(st.snapshot.namespaces) if st.snapshot else 0)
        return self.latest

    def _findings(self, snap: HostSnapshot) -> dict[tuple[str, str], int]:
        try:
            found = problems(evaluate(snap))
        except Exception as e:  # noqa: BLE001
            self.error("rules", f"{type(e).__name__}: {e}")
            return self._state.findings
        return families.finding_counts(((f.rule, f.outcome.value) for f in found), self._state.seen_findings)

    def _owners(self, snap: HostSnapshot) -> dict[str, Owner]:
        if self.namer is None:
            return {}
        try:
            naming = self.namer.name(snap.namespaces)
        except Exception as e:  # noqa: BLE001
            self.error("cri", f"{type(e).__name__}: {e}")
            return {}
        if naming.errors:
            self.error("cri", "; ".join(naming.errors[:3]))
        return naming.owners

    def _read_drops(self, snap: HostSnapshot | None, by_reason: dict[str, str]) -> None:
        st = self._state
        live_ids = {ns.id for ns in snap.namespaces} if snap is not None else set()
        by_inode = {ns.inode: ns.id for ns in snap.namespaces} if snap is not None else {}
        # Drops attributed to a namespace that is gone go with it (bounded label values).
        for key in [k for k in st.drops if k[3] and k[3] not in live_ids]:
            del st.drops[key]
        if self.drops is None:
            return
        with self.drops_lock:
            try:
                got = self.drops.read()  # type: ignore[attr-defined]
            except Exception as e:  # noqa: BLE001
                self.error("drops", f"{type(e).__name__}: {e}")
                return
        over = 0
        for d in got:
            # The kernel counter names the skb's own namespace; tracefs drops are joined by counters.
            netns = by_inode.get(d.netns, "") if d.netns is not None else by_reason.get(d.reason, "")
            key = (d.reason, d.protocol_name, d.location, netns, getattr(d, "device", None) or "")
            if key not in st.drops and len(st.drops) >= self.options.max_series:
                over += d.count
                continue
            st.drops[key] = st.drops.get(key, 0) + d.count
        if over:
            self.error("limit", f"{over} drops in series over --max-series {self.options.max_series} not counted")

    def _canary(self) -> CanaryState | None:
        if not self.options.canary_file:
            return None
        try:
            return read_state(self.options.canary_file)
        except CanaryUnreadable as e:
            self.error("canary", str(e))
            return None

    # -- the loop and health ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Collect every `interval` seconds (start to start; never two at once) until `stop` is set."""
        try:
            while not stop.is_set():
                started = time.monotonic()
                self.collect_once()
                stop.wait(max(0.0, started + self.options.interval - time.monotonic()))
        except BaseException as e:  # healthz must tell a dead collector from a slow one
            self.dead = f"collector stopped: {type(e).__name__}: {e}"
            self.log(self.dead)
            raise

    def health(self, now: float | None = None) -> tuple[bool, str]:
        """Fresh when the last collection finished within three intervals plus three times its duration."""
        latest = self.latest
        if self.dead:
            return False, self.dead
        if latest.finished_at is None:
            return False, "no collection has finished yet"
        age = (self.clock() if now is None else now) - latest.finished_at
        limit = 3 * self.options.interval + 3 * (latest.duration_s or 0.0)
        if age > limit:
            return False, f"stale: the last collection finished {age:.0f} s ago (limit {limit:.0f} s)"
        return True, f"ok: last collection {age:.1f} s ago, {latest.namespaces} namespaces"


def attribution(previous: HostSnapshot | None, current: HostSnapshot) -> dict[str, str]:
    """Drop reason -> the one namespace whose matching counter moved between the two snapshots
    (TCP_CSUM and TcpInCsumErrors, ...), for tracefs drops: the tracepoint carries no namespace (the
    kernel counter's drops have theirs and do not need this); when several moved,
    or none, the drop stays unattributed (""). A namespace new since `previous` counts from 0."""
    if previous is None:
        return {}
    before = {ns.inode: families.counter_values(ns) for ns in previous.namespaces}
    out = {}
    for reason, names in REASON_COUNTERS.items():
        moved = []
        for ns in current.namespaces:
            now, was = families.counter_values(ns), before.get(ns.inode, {})
            if any(now.get(n, 0) > was.get(n, 0) for n in names):
                moved.append(ns.id)
        if len(moved) == 1:
            out[reason] = moved[0]
    return out


def _vanished(errors: tuple[str, ...]) -> bool:
    return any("vanished" in e for e in errors)


__all__ = ["COUNTER_INTERVAL", "DEFAULT_INTERVAL", "Exporter", "Latest", "Options", "live_snapshot"]
