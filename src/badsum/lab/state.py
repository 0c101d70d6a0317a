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

from badsum.lab import docker, evidence
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
    owner_pid: int | None = None
    """The process running the lab; `clean` leaves the run alone while it lives (None once released)."""
    owner_starttime: int | None = None
    namespaces: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    tracefs_instance: str | None = None
    mounted_tracefs: str | None = None
    docker_dirs: list[str] = field(default_factory=list)
    """Run directories of private dockerds (pidfile, socket, data and exec roots), journaled before start."""

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


def owner_alive(state: LabState) -> bool:
    """True while the process that runs this lab is still the one recorded (not a recycled pid)."""
    return state.owner_pid is not None and proc_starttime(state.owner_pid) == state.owner_starttime


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
    running: list[str] = field(default_factory=list)
    """Prefixes left alone because the run's own process still lives (a concurrent lab)."""
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


def _private_tracefs_mounts(prefix: str) -> list[str]:
    """The tracefs mounts DropTracer made for this prefix (`<tmp>/badsum-<prefix>-tracefs-*`)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    fields = (line.split() for line in lines)
    return [f[1] for f in fields if len(f) > 2 and f[2] == "tracefs"
            and os.path.basename(f[1]).startswith(f"badsum-{prefix}-tracefs-")]  # fmt: skip


def remove_tracefs_instance(state: LabState, report: CleanReport) -> None:
    # The recorded instance, and `badsum-<prefix>` under any mounted tracefs (a run killed before
    # its journal recorded the instance leaves one too; it would trace every drop forever).
    mounts = _private_tracefs_mounts(state.prefix)
    roots = [*evidence.TRACEFS_CANDIDATES, *mounts]
    found = {os.path.join(r, "instances", f"badsum-{state.prefix}") for r in roots}
    if state.tracefs_instance:
        found.add(state.tracefs_instance)
    for inst in sorted(found):
        if os.path.isdir(inst):
            try:
                os.rmdir(inst)
            except OSError as e:
                report.errors.append(f"rmdir {inst}: {e}")
    if state.mounted_tracefs and state.mounted_tracefs not in mounts and os.path.ismount(state.mounted_tracefs):
        mounts.append(state.mounted_tracefs)
    for m in mounts:
        r = subprocess.run(["umount", m], capture_output=True, text=True, timeout=10, check=False)
        if r.returncode != 0:
            report.errors.append(f"umount {m}: {r.stderr.strip()}")
    for m in {*mounts, *([state.mounted_tracefs] if state.mounted_tracefs else [])}:
        if not os.path.ismount(m):
            try:
                os.rmdir(m)  # our private mount point, empty once unmounted
            except OSError:
                pass


def clean(prefix: str | None = None) -> CleanReport:
    """Remove leftovers of runs (one prefix, or every journal found). Touches nothing else."""
    report = CleanReport()
    journals = sorted(RUN_ROOT.glob("*/state.json")) if RUN_ROOT.exists() else []
    seen = set()
    for path in journals:
        if prefix is not None and path.parent.name != prefix:
            continue  # another run's journal: not read, so its concurrent teardown cannot fail this clean
        try:
            state = LabState.load(path)
        except FileNotFoundError:
            continue  # removed by its own run's teardown since the glob
        except (OSError, ValueError, TypeError) as e:
            report.errors.append(f"unreadable journal {path}: {e}")
            continue
        if prefix is not None and state.prefix != prefix or not PREFIX_RE.match(state.prefix):
            continue
        seen.add(state.prefix)
        if owner_alive(state):
            # Another lab is running right now: tearing it down under its feet would break it.
            report.running.append(state.prefix)
            if prefix is not None:
                report.errors.append(f"{prefix} is still running (pid {state.owner_pid}); stop that run first")
            continue
        teardown(state, report)
    if prefix is not None and prefix not in seen and PREFIX_RE.match(prefix):
        # A run killed before its journal was written: its namespaces still carry the prefix.
        for ns in list_netns():
            if ns.startswith(prefix + "-"):
                delete_netns(ns, report)
        remove_tracefs_instance(LabState(prefix), report)
        report.prefixes.append(prefix)
    return report


def teardown(state: LabState, report: CleanReport) -> None:
    # dockerd first, while its API can still remove the containers; then whatever a SIGKILL left.
    for d in state.docker_dirs:
        if Path(d).parent != state.dir:  # only an engine inside this run's own directory
            report.errors.append(f"journal names a docker directory outside {state.dir}: {d}")
            continue
        report.killed += docker.stop_engine(Path(d))
    for p in state.procs:
        kill_recorded(p, report)
    for ns in list_netns():
        if ns.startswith(state.prefix + "-"):
            delete_netns(ns, report)
    remove_tracefs_instance(state, report)
    shutil.rmtree(state.dir, ignore_errors=True)
    report.prefixes.append(state.prefix)
