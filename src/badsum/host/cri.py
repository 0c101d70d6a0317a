"""Which pod and container a network namespace belongs to, where the node's container runtime can tell.

Asked in order: `crictl` (when installed and its runtime answers), then the runtimes' own state
files (containerd's task bundles, CRI-O's userdata, Docker's config.v2.json under the default data
root and under the `--data-root` of every running dockerd), read under `root` so tests can point it
at a fixture tree. Joined to the snapshot's namespaces by the container id found
in the holding process's cgroup, by the pid of the sandbox or container, or by the netns path the
runtime recorded (`/var/run/netns/cni-...`, `/var/run/docker/netns/<key>`). A namespace nothing
names keeps empty names: the exporter's `netns` label (`pid:<pid>`) and the command still say what
holds it. Read-only: `crictl` only lists and inspects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from badsum.host import commands
from badsum.host.commands import Output
from badsum.host.model import Namespace

CRICTL_TIMEOUT = 5.0
#: containerd's task bundles (v2 shim), one directory per containerd namespace (`k8s.io`, `moby`).
CONTAINERD_TASKS = ("run/containerd/io.containerd.runtime.v2.task",)
CRIO_CONTAINERS = ("run/containers/storage/overlay-containers", "var/lib/containers/storage/overlay-containers")
DOCKER_CONTAINERS = ("var/lib/docker/containers",)
#: Bound on state files read per collection (a node runs at most a few hundred pods).
MAX_ENTRIES = 5000
#: Bounds on the search for running dockerds: processes looked at, data roots read.
MAX_PROCS = 100_000
MAX_DATA_ROOTS = 16


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a network namespace, as far as the runtime can tell ("" when it cannot)."""

    pod: str = ""
    pod_namespace: str = ""
    container: str = ""
    """The container's name; "" for a pod's sandbox (the namespace is the whole pod's)."""
    runtime: str = ""
    """`crictl`, `containerd`, `cri-o`, `docker`; "" when no runtime named it (degraded to pid/command)."""
    pid: int | None = None
    command: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One sandbox or container a runtime knows."""

    runtime: str
    id: str
    pod: str = ""
    pod_namespace: str = ""
    container: str = ""
    sandbox: bool = False
    pid: int | None = None
    netns_path: str | None = None
    sandbox_id: str | None = None


@dataclass(slots=True)
class Naming:
    owners: dict[str, Owner]
    """By namespace id."""
    errors: list[str] = field(default_factory=list)
    source: str = ""
    """Where the names came from (`crictl`, `state files`, `none`)."""


Runner = Callable[[list[str]], Output]


def _run(argv: list[str]) -> Output:
    return commands.run(argv, timeout=CRICTL_TIMEOUT)


class CriNamer:
    """Names namespaces; remembers `crictl inspectp` answers by sandbox id (they never change)."""

    def __init__(self, root: str = "/", *, run: Runner = _run, which: Callable[[str], str | None] = commands.which) -> None:
        self.root = root
        self.run = run
        self.which = which
        self._inspected: dict[str, Entry] = {}

    def name(self, namespaces: Iterable[Namespace]) -> Naming:
        nss = list(namespaces)
        errors: list[str] = []
        entries: list[Entry] = []
        source = "none"
        if self.which("crictl") is not None:
            got = self._crictl(errors)
            if got is not None:
                entries, source = got, "crictl"
        if not entries:
            files = state_file_entries(self.root, errors)
            if files:
                entries, source = files, "state files"
        return Naming(join(nss, entries), errors, source)

    def _crictl(self, errors: list[str]) -> list[Entry] | None:
        pods = self.run(["crictl", "pods", "-o", "json"])
        if pods.stdout is None:
            errors.append(f"crictl pods: {pods.error}")
            return None
        try:
            items = json.loads(pods.stdout).get("items") or []
        except (ValueError, AttributeError) as e:
            errors.append(f"crictl pods: output not understood ({e})")
            return None
        out: list[Entry] = []
        live = set()
        for item in items[:MAX_ENTRIES]:
            sid = str(item.get("id", ""))
            live.add(sid)
            if sid not in self._inspected:
                meta = item.get("metadata") or {}
                self._inspected[sid] = self._inspectp(sid, str(meta.get("name", "")), str(meta.get("namespace", "")), errors)
            out.append(self._inspected[sid])
        for gone in set(self._inspected) - live:  # bounded: forget sandboxes that are gone
            del self._inspected[gone]
        ps = self.run(["crictl", "ps", "-o", "json"])
        by_sandbox = {e.id: e for e in out}
        if ps.stdout is not None:
            try:
                containers = json.loads(ps.stdout).get("containers") or []
            except (ValueError, AttributeError):
                containers = []
            for c in containers[:MAX_ENTRIES]:
                pod = by_sandbox.get(str(c.get("podSandboxId", "")))
                out.append(Entry("crictl", str(c.get("id", "")), pod.pod if pod else "", pod.pod_namespace if pod else "",
                                 str((c.get("metadata") or {}).get("name", "")), sandbox_id=c.get("podSandboxId")))  # fmt: skip
        return out

    def _inspectp(self, sid: str, pod: str, pod_ns: str, errors: list[str]) -> Entry:
        r = self.run(["crictl", "inspectp", "-o", "json", sid])
        pid, path = None, None
        if r.stdout is None:
            errors.append(f"crictl inspectp {sid[:12]}: {r.error}")
        else:
            try:
                info = json.loads(r.stdout).get("info") or {}
                pid = info.get("pid") if isinstance(info.get("pid"), int) else None
                path = netns_path(info.get("runtimeSpec") or {})
            except (ValueError, AttributeError):
                errors.append(f"crictl inspectp {sid[:12]}: output not understood")
        return Entry("crictl", sid, pod, pod_ns, "", sandbox=True, pid=pid, netns_path=path)


# -- state files ------------------------------------------------------------------------------------


def netns_path(spec: dict) -> str | None:
    """The network namespace path in an OCI runtime spec (`linux.namespaces[type=network].path`)."""
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    return None


def _json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(4 << 20))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _pidfile(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _dirs(base: str) -> list[str]:
    try:
        return sorted(e.path for e in os.scandir(base) if e.is_dir())[:MAX_ENTRIES]
    except OSError:
        return []


def containerd_entries(root: str) -> list[Entry]:
    out = []
    for rel in CONTAINERD_TASKS:
        for ns_dir in _dirs(os.path.join(root, rel)):
            for bundle in _dirs(ns_dir):
                spec = _json(os.path.join(bundle, "config.json"))
                if spec is None:
                    continue
                a = spec.get("annotations") or {}
                out.append(Entry("containerd", os.path.basename(bundle), a.get("io.kubernetes.cri.sandbox-name", ""),
                                 a.get("io.kubernetes.cri.sandbox-namespace", ""), a.get("io.kubernetes.cri.container-name", ""),
                                 sandbox=a.get("io.kubernetes.cri.container-type") == "sandbox",
                                 pid=_pidfile(os.path.join(bundle, "init.pid")), netns_path=netns_path(spec),
                                 sandbox_id=a.get("io.kubernetes.cri.sandbox-id")))  # fmt: skip
    return out


def crio_entries(root: str) -> list[Entry]:
    out = []
    for rel in CRIO_CONTAINERS:
        for cdir in _dirs(os.path.join(root, rel)):
            spec = _json(os.path.join(cdir, "userdata", "config.json"))
            if spec is None:
                continue
            a = spec.get("annotations") or {}
            out.append(Entry("cri-o", os.path.basename(cdir), a.get("io.kubernetes.pod.name", ""),
                             a.get("io.kubernetes.pod.namespace", ""), a.get("io.kubernetes.container.name", ""),
                             sandbox=a.get("io.kubernetes.cri-o.ContainerType") == "sandbox",
                             pid=_pidfile(os.path.join(cdir, "userdata", "pidfile")), netns_path=netns_path(spec),
                             sandbox_id=a.get("io.kubernetes.cri-o.SandboxID")))  # fmt: skip
    return out


def _cmdline(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            raw = f.read(64 << 10)
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def dockerd_data_root(argv: list[str], read_config: Callable[[str], dict | None]) -> str | None:
    """The data root a dockerd command line gives it: `--data-root X`, `--data-root=X`, `-g X` (the
    old name, also `--graph`), else `data-root` (or `graph`) in its `--config-file`, default
    /etc/docker/daemon.json. None: Docker's default (/var/lib/docker)."""
    config = "/etc/docker/daemon.json"
    found = None
    for i, a in enumerate(argv[1:], 1):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        for flag in ("--data-root", "--graph", "-g", "--config-file"):
            if a == flag and nxt is not None:
                value = nxt
            elif a.startswith(flag + "=") and flag.startswith("--"):
                value = a.split("=", 1)[1]
            else:
                continue
            if flag == "--config-file":
                config = value
            else:
                found = value
    if found:
        return found
    doc = read_config(config) or {}
    value = doc.get("data-root") or doc.get("graph")
    return value if isinstance(value, str) and value else None


def docker_container_dirs(root: str) -> list[str]:
    """Where Docker keeps its containers' config.v2.json under `root`: the default data root, and the
    data root of every running dockerd (a node's --data-root often lives on another disk). A
    dockerd in its own mount namespace is read through /proc/<pid>/root."""
    found = [os.path.join(root, rel) for rel in DOCKER_CONTAINERS]
    proc = os.path.join(root, "proc")
    try:
        pids = sorted((e for e in os.listdir(proc) if e.isdigit()), key=int)[:MAX_PROCS]
    except OSError:
        pids = []
    for pid in pids:
        argv = _cmdline(os.path.join(proc, pid, "cmdline"))
        if not argv or os.path.basename(argv[0]) != "dockerd":
            continue
        data_root = dockerd_data_root(argv, lambda p: _json(os.path.join(root, p.lstrip("/"))))
        if data_root is None or not data_root.startswith("/"):
            continue
        rel = os.path.join(data_root.lstrip("/"), "containers")
        through = os.path.join(proc, pid, "root", rel)
        found.append(through if os.path.isdir(through) else os.path.join(root, rel))
        if len(found) > MAX_DATA_ROOTS:
            break
    out: list[str] = []
    seen: set[str] = set()
    for d in found:
        key = os.path.realpath(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def docker_entries(root: str) -> list[Entry]:
    out = []
    for base in docker_container_dirs(root):
        for cdir in _dirs(base):
            doc = _json(os.path.join(cdir, "config.v2.json"))
            if doc is None:
                continue
            labels = (doc.get("Config") or {}).get("Labels") or {}
            sandbox = labels.get("io.kubernetes.docker.type") == "podsandbox"
            # Plain Docker (no Kubernetes labels): the container's own name is all there is.
            name = labels.get("io.kubernetes.container.name") or ("" if labels.get("io.kubernetes.pod.name") else
                                                                  str(doc.get("Name", "")).lstrip("/"))  # fmt: skip
            pid = (doc.get("State") or {}).get("Pid")
            out.append(Entry("docker", str(doc.get("ID") or os.path.basename(cdir)), labels.get("io.kubernetes.pod.name", ""),
                             labels.get("io.kubernetes.pod.namespace", ""), "" if sandbox else name, sandbox=sandbox,
                             pid=pid if isinstance(pid, int) and pid > 0 else None,
                             netns_path=(doc.get("NetworkSettings") or {}).get("SandboxKey") or None,
                             sandbox_id=labels.get("io.kubernetes.sandbox.id")))  # fmt: skip
    return out


def state_file_entries(root: str, errors: list[str] | None = None) -> list[Entry]:
    """Every sandbox and container the runtimes' state files under `root` describe."""
    out: list[Entry] = []
    for read in (containerd_entries, crio_entries, docker_entries):
        try:
            out += read(root)
        except Exception as e:  # noqa: BLE001 - a runtime's odd file must not hide the others
            if errors is not None:
                errors.append(f"{read.__name__}: {type(e).__name__}: {e}")
    return out


# -- joining -----------------------------------------------------------------------------------------


def join(namespaces: list[Namespace], entries: list[Entry]) -> dict[str, Owner]:
    """An Owner for every namespace: the runtime's names where an entry matches, else pid/command only."""
    by_id = {e.id: e for e in entries if e.id}
    by_pid = {e.pid: e for e in entries if e.pid}
    by_path: dict[str, Entry] = {}
    for e in sorted(entries, key=lambda e: e.sandbox):  # a pod's sandbox wins over its containers
        if e.netns_path:
            by_path[os.path.basename(e.netns_path)] = e
    out: dict[str, Owner] = {}
    for ns in namespaces:
        hit = None
        if ns.container_id:
            hit = by_id.get(ns.container_id) or next((e for i, e in by_id.items() if ns.container_id.startswith(i)), None)
        if hit is None and ns.pid:
            hit = by_pid.get(ns.pid)
        if hit is None:
            hit = next((by_path[n] for n in ns.names if n in by_path), None)
        if hit is not None and not hit.pod and hit.sandbox_id and hit.sandbox_id in by_id:
            sb = by_id[hit.sandbox_id]  # a container entry without pod names: its sandbox has them
            hit = Entry(hit.runtime, hit.id, sb.pod, sb.pod_namespace, hit.container, hit.sandbox, hit.pid)
        if hit is None or not (hit.pod or hit.container):
            out[ns.id] = Owner(pid=ns.pid, command=ns.command)
        else:
            out[ns.id] = Owner(hit.pod, hit.pod_namespace, hit.container, hit.runtime, ns.pid, ns.command)
    return out


def namespaces_named(owners: dict[str, Owner], name: str) -> list[str]:
    """The namespace ids whose owner is called `name`: a container's name (`web-1`, Docker's
    `--name`), a pod's name, or `pod_namespace/pod`. Every container of a pod shares its namespace."""
    hits = []
    for ns_id, o in owners.items():
        if name and name in (o.container, o.pod, f"{o.pod_namespace}/{o.pod}" if o.pod else ""):
            hits.append(ns_id)
    return hits


__all__ = ["CriNamer", "Entry", "Naming", "Owner", "docker_container_dirs", "dockerd_data_root", "join", "namespaces_named",
           "netns_path", "state_file_entries"]  # fmt: skip
