"""The Docker datapath of this host, for `badsum canary`: read, never changed.

A running dockerd is found by its process (its `-H`/`--host` sockets, else daemon.json's `hosts`,
else /var/run/docker.sock) and asked over its API socket with GET requests only: the engine's
version, its networks and its running containers. Interfaces and offloads are read in the engine's
own network namespace (`ip -j -d link`, `ethtool --json -k`; through `nsenter --net` when dockerd
runs in another one), a container's side of a veth through /proc/PID/root/sys/class/net (its
sysfs). Nothing is attached to a Docker bridge and nothing is started.

Which canary cell exercises the same datapath: Docker's bridge driver is veth + Linux bridge (the
`bridge` cell), its overlay driver is VXLAN (`vxlan`), and containers on an OVS userspace bridge
through ovs-docker are `ovs-netdev`.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from badsum.lab.docker import running_processes

DEFAULT_HOST = "unix:///var/run/docker.sock"
DAEMON_JSON = Path("/etc/docker/daemon.json")
API_TIMEOUT = 3.0
MAX_CONTAINERS = 256  # API and sysfs reads per engine: a bound on a host running thousands
#: Docker network driver -> the matrix datapath that exercises it (None: no cell, and why).
CELL_BY_DRIVER: dict[str, tuple[str | None, str]] = {
    "bridge": ("bridge", "veth pairs on a Linux bridge"),
    "overlay": ("vxlan", "VXLAN between hosts (a Linux bridge in the overlay's namespace)"),
    "macvlan": (None, "macvlan is not in the matrix"),
    "ipvlan": (None, "ipvlan is not in the matrix"),
    "host": (None, "the host's own stack: no virtual datapath"),
    "null": (None, "no network"),
}
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"


@dataclass(frozen=True, slots=True)
class Engine:
    """A dockerd to ask: its pid (None when named by --docker-host) and API socket."""

    pid: int | None
    host: str


@dataclass(slots=True)
class DockerEndpoint:
    """A running container on a network, and the host side of its veth."""

    container: str
    """The container's Docker name (without the leading /)."""
    id: str
    ifname: str | None = None
    """The container's own interface on this network (eth0)."""
    veth: str | None = None
    """Its peer in the engine's namespace (a bridge port)."""
    tx: bool | None = None
    """tx-checksumming of the veth, as ethtool --json -k reads it (None: not read)."""
    rx: bool | None = None


@dataclass(slots=True)
class DockerNetwork:
    """One Docker network and the canary cell that tests its datapath."""

    name: str
    id: str
    driver: str
    bridge: str | None = None
    """The Linux bridge (bridge driver): docker0, br-<id>, or the bridge.name option."""
    mtu: int | None = None
    """The bridge's MTU as the kernel has it, else the driver.mtu option."""
    subnets: list[str] = field(default_factory=list)
    cell: str | None = None
    """The matrix datapath exercising the same path (None: none does)."""
    cell_why: str = ""
    canary: str | None = None
    """That cell's status in this run (PASS, FAIL, ...); None when it was not run."""
    bridge_tx: bool | None = None
    bridge_rx: bool | None = None
    containers: list[DockerEndpoint] = field(default_factory=list)


@dataclass(slots=True)
class OvsDockerPort:
    """A port `ovs-docker add-port` made (ovsdb tags it external_ids:container_id)."""

    port: str
    container: str
    """external_ids:container_id, as the user gave it to ovs-docker (a name or an id)."""
    bridge: str | None
    datapath_type: str | None
    """`netdev` (userspace) or `system` (kernel), as ovsdb says."""
    cell: str | None
    cell_why: str
    canary: str | None = None


@dataclass(slots=True)
class DockerEngine:
    """What one dockerd said, or why it said nothing."""

    host: str
    pid: int | None = None
    version: str | None = None
    api_version: str | None = None
    netns: str = "root"
    """`root`, or the /proc path of dockerd's own network namespace."""
    networks: list[DockerNetwork] = field(default_factory=list)
    ovs_ports: list[OvsDockerPort] = field(default_factory=list)
    error: str | None = None


# -- finding engines (pure) ---------------------------------------------------------------------------


def hosts_of(argv: list[str], daemon_json: dict | None) -> list[str]:
    """The API sockets a dockerd listens on: its -H/--host arguments, else daemon.json's hosts,
    else the default. fd:// (systemd socket activation) is the default socket; tcp:// is left out
    (it may need TLS, and the canary asks local engines only)."""
    found: list[str] = []
    for i, a in enumerate(argv):
        if a in ("-H", "--host") and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif a.startswith(("-H=", "--host=")):
            found.append(a.split("=", 1)[1])
        elif a.startswith("-H") and len(a) > 2 and "=" not in a:
            found.append(a[2:])
    if not found and daemon_json:
        found = [h for h in daemon_json.get("hosts", []) if isinstance(h, str)]
    out = []
    for h in found or [DEFAULT_HOST]:
        h = DEFAULT_HOST if h.startswith("fd://") else h
        if h.startswith("unix://") and h not in out:
            out.append(h)
    return out


def find_engines(processes: list[tuple[int, list[str]]], daemon_json: dict | None) -> list[Engine]:
    """Every running dockerd and its first unix socket (they all serve the same engine)."""
    engines = []
    for pid, argv in processes:
        if argv and os.path.basename(argv[0]) == "dockerd":
            hosts = hosts_of(argv, daemon_json)
            if hosts:
                engines.append(Engine(pid, hosts[0]))
    return engines


# -- interpreting what the engine said (pure) ---------------------------------------------------------


def bridge_name(net: dict) -> str | None:
    if net.get("Driver") != "bridge":
        return None
    opts = net.get("Options") or {}
    return opts.get(BRIDGE_NAME_OPTION) or f"br-{net.get('Id', '')[:12]}"


def interpret(raw: dict, links: list[dict], container_links: dict[str, list[dict]], features: dict[str, dict[str, bool]],
              ovs_ifaces: dict[str, str], ovs_bridges: dict[str, tuple[str, tuple[str, ...]]]) -> DockerEngine:  # fmt: skip
    """Build the report from recorded inputs: `raw` is {host, pid, netns, version, networks,
    containers} as the API returned them; `links` is `ip -j -d link` in the engine's namespace;
    `container_links` {container id: [{ifname, address, iflink}]}; `features` ethtool's, by name;
    `ovs_ifaces` {OVS interface: external_ids:container_id}; `ovs_bridges` as canary.read_ovs."""
    ver = raw.get("version") or {}
    eng = DockerEngine(raw["host"], raw.get("pid"), ver.get("Version"), ver.get("ApiVersion"), raw.get("netns", "root"))
    by_index = {lk.get("ifindex"): lk for lk in links}
    by_name = {lk.get("ifname"): lk for lk in links}
    names = {c["Id"]: c.get("Name", "").lstrip("/") or c["Id"][:12] for c in raw.get("containers", [])}
    for net in sorted(raw.get("networks", []), key=lambda n: n.get("Name", "")):
        driver = net.get("Driver", "")
        cell, why = CELL_BY_DRIVER.get(driver, (None, f"driver {driver} is not in the matrix"))
        n = DockerNetwork(net.get("Name", ""), net.get("Id", ""), driver, bridge_name(net), cell=cell, cell_why=why)
        n.subnets = [c["Subnet"] for c in ((net.get("IPAM") or {}).get("Config") or []) if c.get("Subnet")]
        br = by_name.get(n.bridge) if n.bridge else None
        opt_mtu = (net.get("Options") or {}).get(MTU_OPTION)
        n.mtu = br.get("mtu") if br else int(opt_mtu) if opt_mtu else None
        if n.bridge and n.bridge in features:
            n.bridge_tx, n.bridge_rx = features[n.bridge].get("tx-checksumming"), features[n.bridge].get("rx-checksumming")
        for cid, ep in sorted((net.get("Containers") or {}).items(), key=lambda kv: names.get(kv[0], kv[0])):
            if cid not in names:
                continue  # not running: no veth to read
            e = DockerEndpoint(names[cid], cid)
            mine = [x for x in container_links.get(cid, []) if x.get("address") == ep.get("MacAddress")]
            if mine:
                e.ifname = mine[0].get("ifname")
                peer = by_index.get(mine[0].get("iflink"))
                if peer is not None and peer.get("master") == n.bridge:
                    e.veth = peer["ifname"]
            if e.veth in features:
                e.tx, e.rx = features[e.veth].get("tx-checksumming"), features[e.veth].get("rx-checksumming")
            n.containers.append(e)
        eng.networks.append(n)
    port_bridge = {p: (b, dp) for b, (dp, ports) in ovs_bridges.items() for p in ports}
    for iface, container in sorted(ovs_ifaces.items()):
        bridge, dp = port_bridge.get(iface, (None, None))
        cell = "ovs-netdev" if dp == "netdev" else None
        why = "OVS userspace (netdev) datapath" if cell else "the OVS kernel datapath is not in the matrix"
        eng.ovs_ports.append(OvsDockerPort(iface, container, bridge, dp, cell, why))
    return eng


def summary(eng: DockerEngine) -> list[str]:
    """One line per engine and per network, for the text output."""
    if eng.error:
        return [f"docker at {eng.host}: not read: {eng.error}"]
    where = "" if eng.netns == "root" else f", network namespace {eng.netns}"
    lines = [f"docker {eng.version} at {eng.host}" + (f" (dockerd pid {eng.pid}{where})" if eng.pid else where)]
    for n in eng.networks:
        parts = [n.driver]
        if n.bridge:
            parts.append(f"bridge {n.bridge}" + (f" tx {_onoff(n.bridge_tx)} rx {_onoff(n.bridge_rx)}" if n.bridge_tx is not None else ""))
        if n.mtu:
            parts.append(f"MTU {n.mtu}")
        eps = [f"{e.container}" + (f" via {e.veth} tx {_onoff(e.tx)} rx {_onoff(e.rx)}" if e.veth else "") for e in n.containers]
        if eps:
            parts.append(f"{len(eps)} running: {', '.join(eps)}")
        test = f"{n.cell} cell: {n.canary or 'not run'}" if n.cell else f"no cell ({n.cell_why})"
        lines.append(f"  network {n.name}: {'; '.join(parts)} -> {test}")
    for p in eng.ovs_ports:
        test = f"{p.cell} cell: {p.canary or 'not run'}" if p.cell else f"no cell ({p.cell_why})"
        lines.append(f"  ovs-docker port {p.port} of {p.container} on {p.bridge} ({p.datapath_type}) -> {test}")
    return lines


def _onoff(v: bool | None) -> str:
    return "?" if v is None else "on" if v else "off"


# -- reading (I/O; read-only) ---------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def api_get(host: str, path: str, timeout: float = API_TIMEOUT) -> object:
    """GET `path` from the engine's API socket (the only method this module sends)."""
    conn = _UnixConnection(host.removeprefix("unix://"), timeout)
    try:
        conn.request("GET", path, headers={"Host": "docker"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise OSError(f"GET {path}: HTTP {r.status} {body[:200].decode(errors='replace').strip()}")
        return json.loads(body)
    finally:
        conn.close()


def read_daemon_json(path: Path = DAEMON_JSON) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _netns_of(pid: int | None) -> str:
    """`root` when dockerd shares our network namespace, else its /proc path."""
    if pid is None:
        return "root"
    try:
        same = os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return "root"
    return "root" if same else f"/proc/{pid}/ns/net"


def _in(netns: str, argv: list[str]) -> list[str]:
    return argv if netns == "root" else ["nsenter", f"--net={netns}", *argv]


def _json_of(argv: list[str], timeout: float = 5) -> object | None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return None


def read_engine(engine: Engine, ovs_bridges: dict[str, tuple[str, tuple[str, ...]]]) -> DockerEngine:
    """Ask one engine and read its interfaces; an unreachable engine is an error on the result."""
    netns = _netns_of(engine.pid)
    try:
        raw = {"host": engine.host, "pid": engine.pid, "netns": netns, "version": api_get(engine.host, "/version")}
        nets = api_get(engine.host, "/networks")
        ids = [c["Id"] for c in api_get(engine.host, "/containers/json")][:MAX_CONTAINERS]  # type: ignore[index,union-attr]
        # The list leaves out each network's containers; the inspect of each network has them.
        raw["networks"] = [api_get(engine.host, f"/networks/{quote(n['Id'])}") for n in nets]  # type: ignore[union-attr]
        raw["containers"] = [api_get(engine.host, f"/containers/{quote(i)}/json") for i in ids]
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as e:
        return DockerEngine(engine.host, engine.pid, netns=netns, error=str(e) or type(e).__name__)
    links = _json_of(_in(netns, ["ip", "-j", "-d", "link", "show"]), 10) or []
    container_links = {c["Id"]: _container_links(c) for c in raw["containers"]}
    names = {n["Id"]: bridge_name(n) for n in raw["networks"]}
    wanted = [b for b in names.values() if b] + [lk["ifname"] for lk in links if lk.get("master") in set(names.values())]
    features = {x: f for x in wanted if (f := _features(netns, x)) is not None}
    ovs_ifaces = read_ovs_docker_ports() if ovs_bridges else {}
    return interpret(raw, links, container_links, features, ovs_ifaces, ovs_bridges)


def _container_links(c: dict) -> list[dict]:
    """The container's interfaces from its own sysfs (/proc/PID/root/sys/class/net): read-only,
    no setns. `iflink` is the peer's ifindex in the engine's namespace."""
    pid = (c.get("State") or {}).get("Pid")
    base = Path(f"/proc/{pid}/root/sys/class/net")
    out = []
    try:
        entries = sorted(os.listdir(base)) if pid else []
    except OSError:
        return []
    for name in entries:
        try:
            out.append({"ifname": name, "address": (base / name / "address").read_text().strip(),
                        "iflink": int((base / name / "iflink").read_text())})  # fmt: skip
        except (OSError, ValueError):
            continue
    return out


def _features(netns: str, ifname: str) -> dict[str, bool] | None:
    doc = _json_of(_in(netns, ["ethtool", "--json", "-k", ifname]))
    if not isinstance(doc, list) or not doc:
        return None
    return {k: bool(v.get("active")) for k, v in doc[0].items() if isinstance(v, dict) and "active" in v}


def read_ovs_docker_ports() -> dict[str, str]:
    """{OVS interface: container} for the ports ovs-docker added (it tags them external_ids:container_id)."""
    if shutil.which("ovs-vsctl") is None:
        return {}
    doc = _json_of(["ovs-vsctl", "--timeout=2", "-f", "json", "--columns=name,external_ids", "list", "Interface"], 4)
    out = {}
    for name, ids in (doc or {}).get("data", []) if isinstance(doc, dict) else []:
        pairs = dict(ids[1]) if isinstance(ids, list) and len(ids) == 2 and ids[0] == "map" else {}
        if "container_id" in pairs:
            out[name] = pairs["container_id"]
    return out


def discover(host: str | None, ovs_bridges: dict[str, tuple[str, tuple[str, ...]]]) -> list[DockerEngine]:
    """Every running dockerd (or only the one at `host`), as read now."""
    if host is not None:
        pid = next((e.pid for e in find_engines(running_processes(), read_daemon_json()) if e.host == host), None)
        engines = [Engine(pid, host)]
    else:
        engines = find_engines(running_processes(), read_daemon_json())
    return [read_engine(e, ovs_bridges) for e in engines]
