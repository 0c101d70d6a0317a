"""Finding every network namespace: the host's, the named ones, and those only a process holds.

Named namespaces are nsfs bind mounts (`ip netns add`, Docker's sandboxes, CNI); the rest are
reachable only through `/proc/PID/ns/net`. All are told apart by inode, so a namespace that has a
name and processes is listed once, with both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# NsRef, the record discover() returns, lives with the snapshot's records: Namespace extends it.
from badsum.host.model import HOST_NS, NsRef

#: (directory, id prefix used only when a name is already taken). /var/run is usually /run.
NAMED_DIRS: tuple[tuple[str, str], ...] = (
    ("/run/netns", ""),
    ("/var/run/netns", ""),  # CNI (often the same directory)
    ("/var/run/docker/netns", "docker:"),
    ("/run/docker/netns", "docker:"),
)
_NS_LINK = re.compile(r"^net:\[(\d+)\]$")
#: Container runtimes put the 64-hex container id in the cgroup path: `docker-<id>.scope`,
#: `/docker/<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`,
#: `/kubepods/<qos>/pod<uid>/<id>`.
_CONTAINER_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
COMMAND_MAX = 200


@dataclass(frozen=True, slots=True)
class Discovery:
    """Every namespace found, and why some may be missing."""

    namespaces: tuple[NsRef, ...]
    errors: tuple[str, ...] = ()


def ns_inode(link: str) -> int | None:
    """`net:[4026531840]` -> 4026531840."""
    m = _NS_LINK.match(link)
    return int(m.group(1)) if m else None


def container_id(cgroup_text: str) -> str | None:
    """The container id in a /proc/PID/cgroup text (the innermost one), or None."""
    found = _CONTAINER_ID.findall(cgroup_text)
    return found[-1] if found else None


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def process_command(pid: int, proc: str = "/proc") -> str | None:
    """The command line (or `[comm]` for a process without one, such as a kernel thread)."""
    raw = _read(f"{proc}/{pid}/cmdline")
    if raw:
        text = " ".join(part for part in raw.split("\0") if part)
        return text[:COMMAND_MAX]
    comm = _read(f"{proc}/{pid}/comm")
    return f"[{comm.strip()}]" if comm else None


def _ppid(pid: int, proc: str) -> int | None:
    raw = _read(f"{proc}/{pid}/stat")
    if raw is None:
        return None
    try:
        return int(raw.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None


def _leader(pids: list[int], proc: str) -> int:
    """The process that brought others in: its parent lives outside (a container's init)."""
    members = set(pids)
    roots = [p for p in pids if _ppid(p, proc) not in members]
    return min(roots or pids)


def _processes(proc: str) -> tuple[dict[int, list[int]], int]:
    """Pids by namespace inode, and how many processes could not be read (not ours without root,
    or not dumpable)."""
    by_inode: dict[int, list[int]] = {}
    denied = 0
    try:
        entries = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return {}, 0
    for name in entries:
        try:
            inode = ns_inode(os.readlink(f"{proc}/{name}/ns/net"))
        except PermissionError:
            denied += 1
            continue
        except OSError:
            continue  # exited meanwhile, or a kernel without network namespaces
        if inode is not None:
            by_inode.setdefault(inode, []).append(int(name))
    return by_inode, denied


def discover(proc: str = "/proc", named_dirs: tuple[tuple[str, str], ...] = NAMED_DIRS) -> Discovery:
    errors: list[str] = []
    try:
        own = os.stat(f"{proc}/self/ns/net")
    except OSError as e:
        return Discovery((NsRef(HOST_NS, 0, None),), (f"cannot read {proc}/self/ns/net: {e.strerror}",))
    host_inode, nsfs_dev = own.st_ino, own.st_dev
    names_by_inode: dict[int, list[tuple[str, str, str]]] = {host_inode: []}  # inode -> [(id, name, path)]
    taken = {HOST_NS}
    seen_dirs: set[str] = set()
    for directory, prefix in named_dirs:
        real = os.path.realpath(directory)
        if real in seen_dirs or not os.path.isdir(real):
            continue
        seen_dirs.add(real)
        try:
            entries = sorted(os.listdir(real))
        except OSError as e:
            errors.append(f"cannot list {directory}: {e.strerror}")
            continue
        for name in entries:
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError as e:
                errors.append(f"cannot stat {path}: {e.strerror}")
                continue
            if st.st_dev != nsfs_dev:
                errors.append(f"{path} is not a mounted namespace (a stale name left behind)")
                continue
            ns_id = name if name not in taken else f"{prefix or 'netns:'}{name}"
            taken.add(ns_id)
            names_by_inode.setdefault(st.st_ino, []).append((ns_id, name, path))
    by_inode, denied = _processes(proc)
    if denied:
        errors.append(f"the network namespace of {denied} process(es) could not be read (permission denied): "
                      "a namespace only they hold would be missing")  # fmt: skip
    init_inode = next((inode for inode, pids in by_inode.items() if 1 in pids), host_inode)
    if init_inode != host_inode:
        errors.append("this collector does not run in the init process's network namespace: "
                      f"`{HOST_NS}` is the collector's own")  # fmt: skip

    out: list[NsRef] = [NsRef(HOST_NS, host_inode, None, names=tuple(n for _, n, _ in names_by_inode[host_inode]))]
    for inode, named in names_by_inode.items():
        if inode == host_inode:
            continue
        label = _label(by_inode.get(inode), proc)
        out.append(NsRef(named[0][0], inode, named[0][2], tuple(n for _, n, _ in named), *label))
    for inode, pids in sorted(by_inode.items(), key=lambda kv: min(kv[1])):
        if inode in names_by_inode:
            continue
        pid, command, cid = _label(pids, proc)
        assert pid is not None
        out.append(NsRef(f"pid:{pid}", inode, f"{proc}/{pid}/ns/net", (), pid, command, cid))
    return Discovery(tuple(out), tuple(errors))


def _label(pids: list[int] | None, proc: str) -> tuple[int | None, str | None, str | None]:
    if not pids:
        return None, None, None
    pid = _leader(pids, proc)
    cgroup = _read(f"{proc}/{pid}/cgroup")
    return pid, process_command(pid, proc), container_id(cgroup) if cgroup else None


__all__ = ["COMMAND_MAX", "NAMED_DIRS", "Discovery", "NsRef", "container_id", "discover", "ns_inode", "process_command"]
