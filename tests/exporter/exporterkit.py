"""Helpers for the exporter tests: recorded snapshots, a fake drop watch, parsing the exposition back."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from badsum.exporter.collector import Exporter, Options
from badsum.exporter.server import exposition
from badsum.host.drops import Drop
from badsum.host.model import CounterSample, HostSnapshot, Namespace

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

FIXTURES = TESTS / "rules" / "fixtures"


def fixture_paths() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*.json") if not p.name.endswith(".expect.json"))


def load(path: Path) -> HostSnapshot:
    return HostSnapshot.from_json(path.read_text())


def raw(path: Path) -> dict:
    """The fixture as plain JSON: the tests' oracle, read without badsum's model."""
    return json.loads(path.read_text())


class FakeDrops:
    """Stands in for DropWatch: each read() returns the next batch."""

    def __init__(self, batches: list[list[Drop]]) -> None:
        self.batches = list(batches)

    def read(self) -> list[Drop]:
        return self.batches.pop(0) if self.batches else []


class Clock:
    def __init__(self, now: float = 1767225600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exporter_over(snapshots: list[HostSnapshot], **kw: object) -> Exporter:
    """An Exporter whose collections see `snapshots` in turn (the last one repeats)."""
    queue = list(snapshots)

    def snap(_now: float) -> HostSnapshot:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    opts = {k: kw.pop(k) for k in ("interval", "max_namespaces", "max_series", "canary_file") if k in kw}
    return Exporter(Options(**opts), snapshot=snap, **kw)  # type: ignore[arg-type]


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """{family name: [(sample name, labels, value)]}, with prometheus_client's own parser."""
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, [])
        out[fam.name] += [(s.name, dict(s.labels), s.value) for s in fam.samples]
    return out


def types(text: str) -> dict[str, str]:
    return {fam.name: fam.type for fam in text_string_to_metric_families(text)}


def scrape(exporter: Exporter) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return parse(exposition(exporter))


def values(samples: list[tuple[str, dict[str, str], float]], **match: str) -> list[float]:
    return [v for _, labels, v in samples if all(labels.get(k) == want for k, want in match.items())]


def with_namespaces(base: HostSnapshot, count: int, tcp_errors: int = 0) -> HostSnapshot:
    """`base` plus `count` namespaces `bs0000aa-nNNN` with a veth each and checksum counters."""
    template = next(ns for ns in base.namespaces if ns.id != "host")
    extra = []
    for i in range(count):
        c = {"TcpInCsumErrors": tcp_errors + i, "UdpInCsumErrors": 0}
        extra.append(replace(template, id=f"bs0000aa-n{i:03d}", inode=4026600000 + i, enter=f"/run/netns/bs0000aa-n{i:03d}",
                             names=(f"bs0000aa-n{i:03d}",), pid=None, counters=CounterSample(c, c, 0.2)))  # fmt: skip
    host = next(ns for ns in base.namespaces if ns.id == "host")
    return replace(base, namespaces=(host, *extra))


def without(snapshot: HostSnapshot, ns_id: str) -> HostSnapshot:
    return replace(snapshot, namespaces=tuple(ns for ns in snapshot.namespaces if ns.id != ns_id))


def ns_of(snapshot: HostSnapshot, ns_id: str) -> Namespace:
    ns = snapshot.ns(ns_id)
    assert ns is not None
    return ns


def collected(snapshots: list[HostSnapshot], **kw: object) -> Exporter:
    """exporter_over(), with one collection done."""
    ex = exporter_over(snapshots, **kw)
    ex.collect_once()
    return ex
