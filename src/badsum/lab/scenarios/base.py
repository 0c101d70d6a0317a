"""What a scenario is: a name, a topology, and a run that observes, optionally fixes, and
checks again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from badsum.lab.evidence import DropTracer, delta
from badsum.lab.lab import Lab, preflight
from badsum.lab.result import ScenarioResult
from badsum.lab.topology import Topology


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    kb: tuple[str, ...]
    """Known-issue ids this scenario reproduces."""
    topology: Callable[[], Topology]
    body: Callable[[Lab, ScenarioResult, bool], None]
    """Drives traffic, captures, records evidence; applies the fix when told."""
    needs_ovs: bool = False
    needs_docker: bool = False
    """A private dockerd (Debian's docker.io) and the busybox-static image it imports."""
    tools: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()
    """Namespaces whose checksum counters are read before and after."""
    full: str | None = None
    """What `lab run --full` changes, for a scenario with a slow, complete variant (None: it has none)."""

    def run(self, out: Path, *, fix: bool = False, keep: bool = False, prefix: str | None = None,
            full: bool = False) -> ScenarioResult:  # fmt: skip
        preflight(self.needs_ovs, self.tools, self.needs_docker)
        result = ScenarioResult(self.name, self.title, fix_applied=False, symptom_observed=False)
        t0 = time.monotonic()
        with Lab(self.topology(), scenario=self.name, out=out, prefix=prefix, keep=keep) as lab:
            result.prefix = lab.prefix
            lab.full = full and self.full is not None
            tracer = DropTracer(f"badsum-{lab.prefix}")
            lab.state.tracefs_instance = None
            if tracer.start():
                lab.state.tracefs_instance, lab.state.mounted_tracefs = tracer.instance, tracer.mounted
                lab.state.save()
            else:
                result.drops_note = tracer.why_not
            before = lab.counters(list(self.watch))
            try:
                self.body(lab, result, fix)
            finally:
                after = lab.counters(list(self.watch))
                result.counters = {ns: delta(before[ns], after[ns]) for ns in self.watch}
                result.drops = tracer.collect()
                tracer.stop()
        result.duration_s = round(time.monotonic() - t0, 2)
        result.write(out)
        return result
