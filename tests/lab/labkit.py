"""Inventory of what a lab run can leave behind (used by tests/lab/conftest.py and the lab tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from badsum.lab import state as lab_state

PREFIX = re.compile(r"\b(bs[0-9a-f]{6})(?=[-/\s]|$)")
LAB_PROGRAMS = frozenset({"tcpdump", "ovsdb-server", "ovs-vswitchd", "ping", "nstat"})
SETTLE_S = 5.0
"""Teardown is synchronous; this only absorbs a process that is a few milliseconds from exiting."""


@dataclass(frozen=True, slots=True)
class Item:
    """One object a lab run can leave behind."""

    kind: str
    """`namespace`, `journal`, `tracefs instance`, `tracefs mount`, `mount`, `process`; or `tracefs view`
    (a tracefs mount that is not a lab's, listed only so that instances can be seen through it)."""
    key: str
    """What identifies it (a process by pid and start time, so a recycled pid is a new one)."""
    prefix: str | None
    what: str
    pid: int | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.what}"


@dataclass(frozen=True, slots=True)
class Inventory:
    items: frozenset[Item]

    def new_since(self, before: Inventory) -> list[Item]:
        old = {(i.kind, i.key) for i in before.items}
        return sorted((i for i in self.items if (i.kind, i.key) not in old and i.kind != "tracefs view"), key=str)

    def of(self, prefix: str) -> list[Item]:
        return sorted((i for i in self.items if i.prefix == prefix), key=str)

    def kinds(self, prefix: str) -> set[str]:
        return {i.kind for i in self.of(prefix)}


def netns_names() -> list[str]:
    try:
        argv = ["ip", "-j", "netns", "list"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [e["name"] for e in json.loads(out.strip() or "[]")]


def _prefix_of(text: str) -> str | None:
    m = PREFIX.search(text)
    return m.group(1) if m else None


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _process_items(ns_by_inode: dict[int, str]) -> list[Item]:
    own_netns = _netns_inode("/proc/self/ns/net")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv if a]
        if not argv or stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue
        text = " ".join(argv)
        text += _container_root(entry)
        ino = _netns_inode(f"/proc/{entry.name}/ns/net")
        in_lab_ns = ino in ns_by_inode
        is_lab = ("badsum.lab.agent" in text or re.search(r"-m badsum lab |\bbadsum lab run\b", text)
                  or re.search(r"/bs[0-9a-f]{6}/", text)  # files under a run's journal directory (OVS)
                  or os.path.basename(argv[0]) in LAB_PROGRAMS and ino is not None and ino != own_netns)  # fmt: skip
        if not (is_lab or in_lab_ns):
            continue
        prefix = _prefix_of(ns_by_inode[ino]) if in_lab_ns else _prefix_of(text)
        starttime = stat.rsplit(")", 1)[1].split()[19]
        pid = int(entry.name)
        found.append(Item("process", f"{pid}:{starttime}", prefix, f"{pid} {text[:160]}", pid))
    return found


def _container_root(proc: Path) -> str:
    """For a process in a Docker container (cgroup `/docker/<id>`): ` [root on <upperdir>]` when its
    root is an overlay whose layers live under a lab run's directory (a private dockerd's data root),
    so a container whose namespace name is gone is still seen as that run's. Else ""."""
    try:
        if "/docker/" not in (proc / "cgroup").read_text():
            return ""
        lines = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        f = line.split()
        if len(f) > 4 and f[4] == "/" and "overlay" in line and (m := re.search(r"upperdir=([^,\s]+)", line)):
            return f" [root on {m.group(1)}]" if re.search(r"/bs[0-9a-f]{6}/", m.group(1)) else ""
    return ""


def _mount_items() -> list[Item]:
    """Mounts under the lab runs' directory (a private dockerd's overlays or netns files if they ever
    reach this mount namespace; the lab keeps them in dockerd's own)."""
    root = str(lab_state.RUN_ROOT).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = {f[4].replace("\\040", " ") for line in lines if len(f := line.split()) > 4}
    return [Item("mount", p, _prefix_of(p), p) for p in sorted(points) if p.startswith(root)]


def _tracefs_items() -> list[Item]:
    try:
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return []
    found = []
    for m in mounts:
        if len(m) < 3 or m[2] != "tracefs":
            continue
        point = m[1].replace("\\040", " ")
        if os.path.basename(point).startswith("badsum-"):
            found.append(Item("tracefs mount", point, _prefix_of(os.path.basename(point)), point))
        else:  # the system's tracefs (or the session's view of it), not a lab's
            found.append(Item("tracefs view", point, None, point))
        try:
            names = os.listdir(os.path.join(point, "instances"))
        except OSError:
            continue
        for n in names:
            if n.startswith("badsum-"):
                found.append(Item("tracefs instance", n, _prefix_of(n), n))
    return found


def inventory() -> Inventory:
    """Everything of any lab run on this host right now."""
    names = netns_names()
    items = [Item("namespace", n, p, n) for n in names if (p := _prefix_of(n)) and n.startswith(p + "-")]
    ns_by_inode = {}
    for n in names:
        ino = _netns_inode(f"/run/netns/{n}")
        if ino is not None and _prefix_of(n):
            ns_by_inode[ino] = n
    root = lab_state.RUN_ROOT
    if root.is_dir():
        items += [Item("journal", str(d), d.name, str(d)) for d in root.iterdir() if lab_state.PREFIX_RE.match(d.name)]
    items += _tracefs_items()
    items += _mount_items()
    items += _process_items(ns_by_inode)
    return Inventory(frozenset(items))


def _ancestors(pid: int) -> set[int]:
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return seen


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def run_elsewhere(prefix: str | None, now: Inventory | None = None) -> bool:
    """True when the run is alive and belongs to another process tree (a concurrent session)."""
    if prefix is None:
        return False
    me = os.getpid()
    try:
        st = lab_state.LabState.load(lab_state.RUN_ROOT / prefix / "state.json")
    except (OSError, ValueError, TypeError):
        st = None
    if st is not None and st.owner_pid is not None and lab_state.owner_alive(st):
        return me not in _ancestors(st.owner_pid)
    # No journal here (it may live under another BADSUM_LAB_RUN): a live run is the parent of
    # the processes it started (ovs-vswitchd, tcpdump, agents); orphans have been reparented.
    for i in (now or inventory()).of(prefix):
        parent = _ppid(i.pid) if i.pid else None
        if parent and parent > 1 and me not in _ancestors(parent) and _is_python(parent):
            return True
    return False


def _is_python(pid: int) -> bool:
    """A lab is always run by a Python process (`badsum lab run`, pytest, a script)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return b"python" in os.path.basename(argv0) or b"badsum" in argv0


def elsewhere(i: Item, now: Inventory) -> bool:
    """Someone else's: a live run owned by another process, or a `badsum lab` CLI we did not start."""
    if i.kind == "process" and i.prefix is None and i.pid is not None and "badsum" in i.what:
        return os.getpid() not in _ancestors(i.pid)
    return run_elsewhere(i.prefix, now)


def leftovers(before: Inventory, settle: float = SETTLE_S) -> list[Item]:
    """What appeared since `before` and is still there (after at most `settle` seconds)."""
    deadline = time.monotonic() + settle
    while True:
        now = inventory()
        new = [i for i in now.new_since(before) if not elsewhere(i, now)]
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.1)


