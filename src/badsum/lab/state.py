"""The lab's journal: what a run created, written before it is created, so that `badsum lab
clean` can remove a crashed (even SIGKILLed) run's leftovers, by prefix and nothing else."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from badsum.lab.runner import proc_starttime

#: Where runs keep their journal; tests may point it elsewhere.
RUN_ROOT = Path(os.environ.get("BADSUM_LAB_RUN", "/run/badsum/lab"))
PREFIX_RE = re.compile(r"^bs[0-9a-f]{6}$")


def new_prefix() -> str:
    return "bs" + secrets.token_hex(3)


def list_netns() -> list[str]:
    try:
        out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10, check=False).stdout
        return [e["name"] for e in json.loads(out or "[]")]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []


@dataclass(slots=True)
class Proc:
    name: str
    pid: int
    starttime: int | None
    argv: list[str]


@dataclass(slots=True)
class LabState:
    """One run's journal, saved atomically at every change."""

    prefix: str
    scenario: str = ""
    namespaces: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    tracefs_instance: str | None = None
    mounted_tracefs: str | None = None

    @property
    def dir(self) -> Path:
        return RUN_ROOT / self.prefix

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.dir / "state.json")

    @classmethod
    def load(cls, path: Path) -> LabState:
        raw = json.loads(path.read_text())
        procs = [Proc(**p) for p in raw.pop("procs", [])]
        return cls(**raw, procs=procs)


def existing_objects(prefix: str) -> list[str]:
    """Anything already carrying this prefix (a run must not start over it)."""
    found = [f"namespace {n}" for n in list_netns() if n.startswith(prefix + "-")]
    if (RUN_ROOT / prefix).exists():
        found.append(f"journal {RUN_ROOT / prefix}")
    return found


@dataclass(slots=True)
class CleanReport:
    prefixes: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def kill_recorded(p: Proc, report: CleanReport) -> None:
    """Kill a recorded process only if the pid still belongs to the process we started."""
    if p.starttime is None or proc_starttime(p.pid) != p.starttime:
        return
    try:
        os.kill(p.pid, signal.SIGKILL)
        report.killed.append(p.pid)
    except ProcessLookupError:
        pass
    except OSError as e:
        report.errors.append(f"kill {p.pid}: {e}")


def delete_netns(name: str, report: CleanReport) -> None:
    # Processes still inside one of our namespaces are ours (started in it by the lab).
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10, check=False).stdout
    for pid in pids.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
            report.killed.append(int(pid))
        except (ProcessLookupError, ValueError):
            pass
    r = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True, timeout=10, check=False)
    if r.returncode == 0:
        report.namespaces.append(name)
    elif name in list_netns():
        report.errors.append(f"ip netns delete {name}: {r.stderr.strip()}")


def remove_tracefs_instance(state: LabState, report: CleanReport) -> None:
    if state.tracefs_instance and os.path.isdir(state.tracefs_instance):
        try:
            os.rmdir(state.tracefs_instance)
        except OSError as e:
            report.errors.append(f"rmdir {state.tracefs_instance}: {e}")
    if state.mounted_tracefs:
        subprocess.run(["umount", state.mounted_tracefs], capture_output=True, timeout=10, check=False)


def clean(prefix: str | None = None) -> CleanReport:
    """Remove leftovers of runs (one prefix, or every journal found). Touches nothing else."""
    report = CleanReport()
    journals = sorted(RUN_ROOT.glob("*/state.json")) if RUN_ROOT.exists() else []
    seen = set()
    for path in journals:
        try:
            state = LabState.load(path)
        except (OSError, ValueError, TypeError) as e:
            report.errors.append(f"unreadable journal {path}: {e}")
            continue
        if prefix is not None and state.prefix != prefix or not PREFIX_RE.match(state.prefix):
            continue
        seen.add(state.prefix)
        teardown(state, report)
    if prefix is not None and prefix not in seen and PREFIX_RE.match(prefix):
        # A run killed before its journal was written: its namespaces still carry the prefix.
        for ns in list_netns():
            if ns.startswith(prefix + "-"):
                delete_netns(ns, report)
        report.prefixes.append(prefix)
    return report


def teardown(state: LabState, report: CleanReport) -> None:
    for p in state.procs:
        kill_recorded(p, report)
    for ns in list_netns():
        if ns.startswith(state.prefix + "-"):
            delete_netns(ns, report)
    remove_tracefs_instance(state, report)
    shutil.rmtree(state.dir, ignore_errors=True)
    report.prefixes.append(state.prefix)
