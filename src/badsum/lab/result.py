"""What a scenario run found, and the folder it writes (result.json, summary.txt, captures)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(slots=True)
class Evidence:
    """One observation, with the oracle it came from."""

    oracle: str
    """Who says so: `nstat`, `tcpdump`, `application`, `ethtool`, `ping`, `kfree_skb`, `badsum pcap`."""
    what: str
    """What was seen, in one sentence."""
    value: object = None
    """The number or record behind it."""


@dataclass(slots=True)
class ScenarioResult:
    scenario: str
    title: str
    fix_applied: bool
    symptom_observed: bool
    prefix: str = ""
    """The run's object prefix (namespaces `<prefix>-*`; `badsum lab clean --prefix` after `--keep`)."""
    reproduced: bool | None = None
    """None when the scenario has no 'expected' symptom on every kernel (e.g. fixed kernels)."""
    verdict: str = ""
    """The answer in one or two sentences."""
    evidence: list[Evidence] = field(default_factory=list)
    captures: dict[str, str] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    drops: list[dict] = field(default_factory=list)
    drops_note: str | None = None
    traffic: dict[str, object] = field(default_factory=dict)
    follow: dict[str, object] = field(default_factory=dict)
    """Phase -> what `badsum follow` saw in it (its --json data), or {"not_run": why}."""
    table: list[dict] = field(default_factory=list)
    emulation: list[dict] = field(default_factory=list)
    """Fixed kernel bugs put back for this run (labs only), one dict each: at least `kb`, `what`,
    `hook`, `device`, `fixed_by`, `fixed_in` and `emulated: True`; empty when nothing was emulated."""
    kernel: str = field(default_factory=platform.release)
    duration_s: float = 0.0
    out_dir: str = ""

    def add(self, oracle: str, what: str, value: object = None) -> None:
        self.evidence.append(Evidence(oracle, what, value))

    def as_dict(self) -> dict:
        return asdict(self)

    def write(self, out: Path) -> None:
        self.out_dir = str(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(self.as_dict(), indent=1, default=str))
        os.replace(tmp, out / "result.json")
        (out / "counters.json").write_text(json.dumps(self.counters, indent=1))
        (out / "drops.json").write_text(json.dumps(self.drops, indent=1))
        (out / "summary.txt").write_text(self.summary())

    def summary(self) -> str:
        lines = [f"{self.scenario}: {self.verdict}",
                 f"  fix applied: {'yes' if self.fix_applied else 'no'}; symptom observed: "
                 f"{'yes' if self.symptom_observed else 'no'}; kernel {self.kernel}; {self.duration_s:.1f} s"]  # fmt: skip
        for emu in self.emulation:
            lines.append(f"  EMULATED {emu.get('kb', '?')} ({emu.get('hook', '?')} on {emu.get('device', '?')}): "
                         f"{emu.get('what', '')}; fixed in the kernel by {emu.get('fixed_by', '?')} "
                         f"({emu.get('fixed_in', '?')})")  # fmt: skip
        for e in self.evidence:
            lines.append(f"  [{e.oracle}] {e.what}")
        if self.table:
            keys = list(self.table[0])
            widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in self.table)) for k in keys}
            lines.append("  " + "  ".join(k.ljust(widths[k]) for k in keys).rstrip())
            for row in self.table:
                lines.append("  " + "  ".join(str(row.get(k, "")).ljust(widths[k]) for k in keys).rstrip())
        for label, path in self.captures.items():
            lines.append(f"  capture {label}: {path}")
        return "\n".join(lines) + "\n"
