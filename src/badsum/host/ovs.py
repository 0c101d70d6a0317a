"""Every Open vSwitch instance on the host: the system one and private ones (a lab's, a container's).

Instances are found by their ovs-vswitchd processes (database remote from the command line,
namespace from /proc/PID/ns/net) and by the default socket. Each database is read with
`ovs-vsctl list`, which changes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from badsum.host.commands import Output, Target, which
from badsum.host.model import HOST_NS, OVSBridge, OVSInfo, OVSPort
from badsum.host.netns import ns_inode

DEFAULT_SOCKET = "/var/run/openvswitch/db.sock"
Runner = Callable[[list[str], Target | None], Output]


@dataclass(frozen=True, slots=True)
class Vswitchd:
    """A running ovs-vswitchd, as its command line and /proc tell."""

    pid: int
    db: str
    """Its database remote (`unix:/path`, `tcp:...`); OVS's default when none is given."""
    unixctl: str | None
    inode: int | None


def parse_cmdline(argv: list[str], pid: int) -> tuple[str, str | None]:
    """ovs-vswitchd's argv -> (database remote, unixctl socket)."""
    db, ctl = f"unix:{DEFAULT_SOCKET}", None
    for arg in argv[1:]:
        if arg.startswith("--unixctl="):
            ctl = arg.split("=", 1)[1]
        elif not arg.startswith("-") and arg.split(":", 1)[0] in ("unix", "tcp", "ssl"):
            db = arg
    return db, ctl or f"/var/run/openvswitch/ovs-vswitchd.{pid}.ctl"


def find_vswitchd(proc: str = "/proc") -> list[Vswitchd]:
    found = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"{proc}/{pid}/comm") as f:
                if f.read().strip() != "ovs-vswitchd":
                    continue
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        try:
            inode = ns_inode(os.readlink(f"{proc}/{pid}/ns/net"))
        except OSError:
            inode = None
        db, ctl = parse_cmdline(argv, pid)
        found.append(Vswitchd(pid, db, ctl, inode))
    return sorted(found, key=lambda v: v.pid)


def _reachable(path: str, pid: int | None) -> str:
    """A unix socket path as this process can reach it (through the daemon's root if it runs in
    another mount namespace, as in a container)."""
    if os.path.exists(path) or pid is None:
        return path
    alt = f"/proc/{pid}/root{path}"
    return alt if os.path.exists(alt) else path


def _decode(value: object) -> object:
    """OVSDB JSON -> Python: ["uuid", u] -> u, ["set", [...]] -> list, ["map", [[k, v]...]] -> dict."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        tag, body = value
        if tag in ("uuid", "named-uuid"):
            return body
        if tag == "set" and isinstance(body, list):
            return [_decode(v) for v in body]
        if tag == "map" and isinstance(body, list):
            return {str(_decode(k)): _decode(v) for k, v in body}
    return value


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def parse_tables(text: str) -> list[list[dict[str, object]]]:
    """ovs-vsctl --format=json output of several `list` commands -> rows of each, decoded."""
    decoder, pos, tables = json.JSONDecoder(), 0, []
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        doc, pos = decoder.raw_decode(text, pos)
        headings = doc.get("headings", [])
        tables.append([{h: _decode(v) for h, v in zip(headings, row)} for row in doc.get("data", [])])
    return tables


VSCTL_LIST = ["--", "--columns=_uuid,name,datapath_type,ports", "list", "Bridge",
              "--", "--columns=_uuid,name,interfaces", "list", "Port",
              "--", "--columns=_uuid,name,type", "list", "Interface",
              "--", "--columns=ovs_version,other_config", "list", "Open_vSwitch"]  # fmt: skip


def build(text: str) -> tuple[tuple[OVSBridge, ...], dict[str, str], str | None]:
    """The four tables -> bridges with their ports, Open_vSwitch other_config, ovs_version."""
    bridges_t, ports_t, ifaces_t, ovs_t = parse_tables(text)
    ifaces = {str(r["_uuid"]): r for r in ifaces_t}
    ports = {str(r["_uuid"]): r for r in ports_t}
    bridges = []
    for b in sorted(bridges_t, key=lambda r: str(r.get("name"))):
        bname = str(b.get("name"))
        out_ports = []
        for pu in _as_list(b.get("ports")):
            port = ports.get(str(pu))
            if port is None:
                continue
            for iu in _as_list(port.get("interfaces")):
                iface = ifaces.get(str(iu), {})
                # An empty type is OVS's default: `system` (a kernel device, AF_PACKET on netdev).
                out_ports.append(OVSPort(name=str(iface.get("name", port.get("name"))), bridge=bname,
                                         type=str(iface.get("type") or "system")))  # fmt: skip
        dp = b.get("datapath_type")
        bridges.append(OVSBridge(bname, str(dp) if isinstance(dp, str) and dp else "system",
                                 tuple(sorted(out_ports, key=lambda p: p.name))))  # fmt: skip
    other: dict[str, str] = {}
    version = None
    if ovs_t:
        oc = ovs_t[0].get("other_config")
        other = {str(k): str(v) for k, v in oc.items()} if isinstance(oc, dict) else {}
        v = ovs_t[0].get("ovs_version")
        version = v if isinstance(v, str) and v else None
    return tuple(bridges), other, version


def _appctl_version(ctl: str | None, pid: int | None, run: Runner) -> str | None:
    if ctl is None:
        return None
    out = run(["ovs-appctl", "--timeout=2", "-t", _reachable(ctl, pid), "version"], None)
    if out.stdout is None:
        return None
    first = out.stdout.strip().splitlines()
    return first[0].rsplit(" ", 1)[-1] if first else None


def read_instance(db: str, pid: int | None, ctl: str | None, ns_id: str, run: Runner, *,
                  ns_target: Target | None = None) -> OVSInfo:  # fmt: skip
    running = pid is not None
    kind, _, where = db.partition(":")
    if kind == "unix":
        remote, target = f"unix:{_reachable(where, pid)}", None
    elif kind == "tcp":
        remote, target = db, ns_target  # a TCP remote means something only in the daemon's namespace
    else:
        return OVSInfo(running=running, db=db, pid=pid, namespace=ns_id, error=f"database {db} not read (only unix: and tcp:)")
    out = run(["ovs-vsctl", f"--db={remote}", "--timeout=2", "--no-wait", "--format=json", *VSCTL_LIST], target)
    if out.stdout is None:
        return OVSInfo(running=running, db=db, pid=pid, namespace=ns_id, error=out.error)
    try:
        bridges, other, version = build(out.stdout)
    except (ValueError, KeyError, TypeError) as e:
        return OVSInfo(running=running, db=db, pid=pid, namespace=ns_id, error=f"ovs-vsctl output not understood: {e}")
    version = version or _appctl_version(ctl, pid, run)
    return OVSInfo(running=running, db=db, pid=pid, version=version, bridges=bridges, other_config=other, namespace=ns_id)


def collect_ovs(run: Runner, ns_by_inode: Mapping[int, Target], proc: str = "/proc") -> tuple[OVSInfo, ...]:
    """Every instance. Nothing at all (no ovs-vsctl, no daemon, no socket) -> ()."""
    procs = find_vswitchd(proc)
    default_present = os.path.exists(DEFAULT_SOCKET)
    installed = which("ovs-vsctl") is not None
    if not installed:
        if not procs and not default_present:
            return ()
        why = "ovs-vsctl is not installed: this instance's bridges are unknown"
        infos = [OVSInfo(running=None, db=v.db, pid=v.pid, namespace=_ns_id(v.inode, ns_by_inode), error=why) for v in procs]
        return tuple(infos) or (OVSInfo(running=None, db=f"unix:{DEFAULT_SOCKET}", error=why),)
    infos = []
    served = set()
    for v in procs:
        kind, _, where = v.db.partition(":")
        if kind == "unix":
            served.add(os.path.realpath(_reachable(where, v.pid)))
        target = ns_by_inode.get(v.inode) if v.inode is not None else None
        infos.append(read_instance(v.db, v.pid, v.unixctl, _ns_id(v.inode, ns_by_inode), run, ns_target=target))
    if default_present and os.path.realpath(DEFAULT_SOCKET) not in served:
        info = read_instance(f"unix:{DEFAULT_SOCKET}", None, None, HOST_NS, run)
        msg = "ovsdb-server answers on the default socket but no ovs-vswitchd process was found"
        infos.append(OVSInfo(running=False, db=info.db, version=info.version, bridges=info.bridges,
                             other_config=info.other_config, namespace=HOST_NS,
                             error=f"{msg}; {info.error}" if info.error else msg))  # fmt: skip
    if not infos:
        infos.append(OVSInfo(running=False, error="Open vSwitch is installed but not running: no ovs-vswitchd "
                                                  f"process, no {DEFAULT_SOCKET}"))  # fmt: skip
    return tuple(infos)


def _ns_id(inode: int | None, ns_by_inode: Mapping[int, Target]) -> str:
    """The id of the daemon's namespace; `unknown` when /proc would not tell (not root)."""
    t = ns_by_inode.get(inode) if inode is not None else None
    return t.ns_id if t is not None else "unknown"
