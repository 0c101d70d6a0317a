"""A running lab: builds a topology under a fresh prefix, drives traffic, captures at named
points, reads the kernel's counters, and always tears down (finally, SIGINT, SIGTERM)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from badsum.lab import evidence
from badsum.lab.docker import LAB_IMAGE, PrivateDocker, docker_available
from badsum.lab.ovs import PrivateOVS, ovs_available
from badsum.lab.runner import Background, CommandError, proc_starttime, run, spawn, wait_for
from badsum.lab.state import CleanReport, LabState, Proc, existing_objects, new_prefix, teardown
from badsum.lab.topology import Container, Topology, build_commands, ns_name, route_commands

REQUIRED_TOOLS = ("ip", "ethtool", "nstat", "tcpdump")


class LabError(RuntimeError):
    """The lab cannot run here (not root, a tool missing, a prefix collision); exit code 3."""


def preflight(needs_ovs: bool = False, tools: tuple[str, ...] = (), needs_docker: bool = False) -> None:
    if os.geteuid() != 0:
        raise LabError("labs need root (network namespaces, veth, ethtool): run with sudo")
    for tool in (*REQUIRED_TOOLS, *tools):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is not installed (Debian: apt-get install {_PKG.get(tool, tool)})")
    if needs_ovs and (why := ovs_available()):
        raise LabError(why)
    if needs_docker and (why := docker_available()):
        raise LabError(why)


_PKG = {"ip": "iproute2", "nstat": "iproute2", "nft": "nftables", "ping": "iputils-ping", "ovs-vsctl": "openvswitch-switch",
        "ovs-docker": "openvswitch-common", "uuidgen": "uuid-runtime"}  # fmt: skip


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that teardown runs (and the CLI exits 130, as for Ctrl-C)."""


class Lab:
    """Use as a context manager: `with Lab(topology) as lab: ...`."""

    def __init__(self, topology: Topology, *, scenario: str, out: Path, prefix: str | None = None, keep: bool = False) -> None:
        self.topology = topology
        self.prefix = prefix or new_prefix()
        self.out = out
        self.keep = keep
        self.full = False
        """The scenario's full (slow) variant was asked for (`lab run --full`)."""
        self.state = LabState(self.prefix, scenario, owner_pid=os.getpid(), owner_starttime=proc_starttime(os.getpid()))
        self.procs: list[Background] = []
        self.ovs: dict[str, PrivateOVS] = {}
        self.docker: PrivateDocker | None = None
        self._old_term = None

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        topo = self.topology
        topo.validate()
        clash = existing_objects(self.prefix)
        if clash:
            raise LabError(f"objects with prefix {self.prefix} already exist ({', '.join(clash)}): "
                           f"run `badsum lab clean --prefix {self.prefix}` first")  # fmt: skip
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "topology.json").write_text(json.dumps(topo.as_dict(), indent=1))
        # Journal first, then create: a crash between the two leaves nothing unrecorded.
        self.state.namespaces = [self.ns(n) for n in topo.namespaces]
        self.state.save()
        self._old_term = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            self._build()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _build(self) -> None:
        topo = self.topology
        for argv in build_commands(topo, self.prefix):
            run(argv)
        for br in topo.ovs:
            ovs = self.ovs.get(br.ns)
            if ovs is None:
                ovs = self.ovs[br.ns] = PrivateOVS(self.ns(br.ns), self.state.dir / f"ovs-{br.ns}")
                for p in ovs.start():
                    self._record(p)
            ovs.add_bridge(br.name, br.ports, br.datapath)
        if topo.containers:
            self._start_containers(topo.containers)
        for rs in topo.nft:
            run(["nft", "-f", "-"], ns=self.ns(rs.ns), input=rs.ruleset)
        for argv in route_commands(topo, self.prefix):
            run(argv)

    def _start_containers(self, containers: list[Container]) -> None:
        """The private dockerd, the lab image, and each container: `docker run --net=none`, wired to
        its OVS bridge by ovs-docker, its namespace named for the lab's helpers (`ip netns attach`)."""
        engine_ns = containers[0].engine_ns
        d = self.docker = PrivateDocker(self.ns(engine_ns), self.state.dir / "docker")
        # Journaled before dockerd starts: `lab clean` finds it by the pidfile in this directory even
        # when the run is killed before the process is recorded.
        self.state.docker_dirs.append(str(d.dir))
        self.state.save()
        try:
            d.start()
        finally:
            for p in d.procs:
                self._record(p)
        d.import_lab_image()
        for c in containers:
            name = self.container_name(c.ns)
            # sleep 86400: a kept lab's containers outlive an afternoon of trying doctor and fix on them.
            d.docker("run", "-d", "--net=none", "--name", name, "--label", f"badsum.lab.prefix={self.prefix}",
                     LAB_IMAGE, "sleep", "86400")  # fmt: skip
            ovs = self.ovs[c.engine_ns]
            # ovs-docker calls `docker` and `ovs-vsctl` itself: pointed at our engine and our ovsdb
            # (OVS_RUNDIR holds db.sock), never at a Docker or Open vSwitch the host runs.
            run(["env", f"DOCKER_HOST={d.host}", f"OVS_RUNDIR={ovs.dir}", "ovs-docker", "add-port", c.bridge, c.iface,
                 name, f"--ipaddress={c.address}"], ns=self.ns(c.engine_ns), timeout=90)  # fmt: skip
            run(["ip", "netns", "attach", self.ns(c.ns), str(d.pid_of(name))])

    def container_name(self, ns: str) -> str:
        """Docker's name for the container holding lab namespace `ns`."""
        c = next(c for c in self.topology.containers if c.ns == ns)
        return f"{self.prefix}-{c.name}"

    def __exit__(self, *exc: object) -> None:
        try:
            # A kept lab keeps its private Open vSwitch and dockerd running (journaled: `lab clean`
            # stops them by pid and start time), so that doctor and fix can be tried on the live topology.
            engines = [*self.ovs.values(), *([self.docker] if self.docker else [])]
            daemons = {id(p) for o in engines for p in o.procs}
            for p in reversed(self.procs):
                if id(p) not in daemons:
                    p.stop()
            if not self.keep:
                if self.docker is not None:
                    self.docker.stop()  # its containers first, while dockerd still answers
                for o in self.ovs.values():
                    o.stop()
                teardown(self.state, CleanReport())
            else:
                self.state.owner_pid = self.state.owner_starttime = None  # kept: `lab clean` may remove it
                self.state.save()
        finally:
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)
                self._old_term = None

    # -- helpers for scenarios ------------------------------------------------------------------

    def ns(self, name: str) -> str:
        return ns_name(self.prefix, name)

    def _record(self, p: Background) -> None:
        self.procs.append(p)
        self.state.procs.append(Proc(p.name, p.pid, p.starttime, p.argv))
        self.state.save()

    def spawn(self, name: str, ns: str, argv: list[str], stdout_file: Path | None = None) -> Background:
        p = spawn(name, argv, ns=self.ns(ns), logdir=self.state.dir, stdout_file=stdout_file)
        self._record(p)
        return p

    def exec(self, ns: str, argv: list[str], timeout: float = 20, check: bool = True):  # noqa: ANN201
        return run(argv, ns=self.ns(ns), timeout=timeout, check=check)

    def features(self, ns: str, dev: str) -> dict[str, bool]:
        """`ethtool --json -k` (an independent view of the state we set)."""
        out = self.exec(ns, ["ethtool", "--json", "-k", dev]).stdout
        doc = json.loads(out)[0]
        return {k: bool(v.get("active")) for k, v in doc.items() if isinstance(v, dict) and "active" in v}

    def set_feature(self, ns: str, dev: str, feature: str, on: bool) -> None:
        self.exec(ns, ["ethtool", "-K", dev, feature, "on" if on else "off"])

    def counters(self, namespaces: list[str]) -> dict[str, dict[str, int]]:
        return {n: evidence.counters(self.ns(n)) for n in namespaces}

    # -- traffic (the agent runs inside the namespaces) -------------------------------------------

    def _agent(self, ns: str, name: str, args: list[str]) -> Background:
        path = self.state.dir / f"{name}.out"
        return self.spawn(name, ns, [sys.executable, "-m", "badsum.lab.agent", *args], stdout_file=path)

    @staticmethod
    def _result(p: Background, timeout: float) -> dict:
        try:
            p.proc.wait(timeout)
        except Exception:  # noqa: BLE001 - a stuck agent is stopped and reported, not raised
            p.stop()
        lines = [ln for ln in _stdout(p).splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": "agent produced no result", "log": p.output()[-400:]}

    def tcp_transfer(self, client_ns: str, server_ns: str, server_addr: str, *, port: int = 9000,
                     nbytes: int = 200_000, timeout: float = 8.0, seed: int = 1,
                     connect_addr: str | None = None) -> dict:  # fmt: skip
        """One TCP connection; the receiver hashes what the application got. The client connects to
        `connect_addr` when given (a service VIP that NAT sends to `server_addr`)."""
        srv = self._agent(server_ns, f"tcp-server-{port}", ["tcp-server", "--bind", server_addr, "--port", str(port),
                                                            "--timeout", str(timeout)])  # fmt: skip
        wait_for(lambda: "READY" in _stdout(srv) or not srv.alive(), 10, what="TCP server")
        cli = self._agent(client_ns, f"tcp-client-{port}", ["tcp-client", "--connect", connect_addr or server_addr,
                                                            "--port", str(port), "--bytes", str(nbytes),
                                                            "--timeout", str(timeout), "--seed", str(seed)])  # fmt: skip
        c = self._result(cli, timeout + 5)
        s = self._result(srv, timeout + 5)
        ok = c.get("error") is None and s.get("bytes") == nbytes and s.get("sha256") == c.get("sha256")
        corrupt = s.get("bytes") == nbytes and s.get("sha256") != c.get("sha256")
        return {"ok": ok, "corrupt_delivered": corrupt, "client": c, "server": s}

    def udp_exchange(self, client_ns: str, server_ns: str, server_addr: str, *, port: int = 9001, size: int = 200,
                     count: int = 3, df: bool = False, timeout: float = 5.0) -> dict:  # fmt: skip
        srv = self._agent(server_ns, f"udp-echo-{port}", ["udp-echo", "--bind", server_addr, "--port", str(port),
                                                          "--count", str(count), "--timeout", str(timeout)])  # fmt: skip
        wait_for(lambda: "READY" in _stdout(srv) or not srv.alive(), 10, what="UDP server")
        args = ["udp-send", "--connect", server_addr, "--port", str(port), "--size", str(size), "--count", str(count)]
        cli = self._agent(client_ns, f"udp-send-{port}", [*args, "--df"] if df else args)
        c = self._result(cli, timeout + 5)
        srv.stop()
        s = self._result(srv, 2)
        return {"ok": c.get("replies") == count, "client": c, "server": s}

    def ping(self, ns: str, addr: str, count: int = 3, size: int | None = None, df: bool = False) -> dict:
        argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "1", "-n"]
        if size is not None:
            argv += ["-s", str(size)]
        if df:
            argv += ["-M", "do"]
        r = self.exec(ns, [*argv, addr], timeout=count * 2 + 5, check=False)
        received = 0
        for line in r.stdout.splitlines():
            if "received" in line:
                received = int(line.split(",")[1].split()[0])
        return {"ok": received == count, "sent": count, "received": received, "stderr": r.stderr.strip()}

    # -- eBPF ----------------------------------------------------------------------------------

    def follow(self, filter_text: str = "", ports=None):  # noqa: ANN001, ANN201
        """`badsum follow` for the duration of a `with` block, journeys named with the lab's names."""
        from badsum.lab.follow import LabFollow
        from badsum.wire.ports import PortTable

        return LabFollow({n: self.ns(n) for n in self.topology.namespaces}, filter_text, ports or PortTable())

    # -- capture points -------------------------------------------------------------------------

    @contextmanager
    def capture(self, points: dict[str, tuple[str, str]], tag: str = "") -> Iterator[dict[str, Path]]:
        """tcpdump at every point (label -> (namespace, device)) for the duration of the block;
        afterwards each becomes one pcapng named after its point (and `tag`, e.g. the phase)."""
        raw: dict[str, tuple[Background, Path]] = {}
        macs = {label: _mac(self.ns(ns), dev) for label, (ns, dev) in points.items()}
        for label, (ns, dev) in points.items():
            safe = (f"{tag}-" if tag else "") + label.replace(":", "_").replace("/", "_")
            safe = safe.replace(" ", "-")
            path = self.out / f"{safe}.pcap"
            p = self.spawn(f"tcpdump-{safe}", ns, ["tcpdump", "-i", dev, "-U", "-n", "-s", "0", "-B", "32768",
                                                    "--immediate-mode", "-w", str(path)])  # fmt: skip
            raw[label] = (p, path)
        for p, _ in raw.values():
            wait_for(lambda p=p: "listening on" in p.output() or not p.alive(), 10, what="tcpdump start")
        result: dict[str, Path] = {}
        try:
            yield result
        finally:
            time.sleep(0.2)  # let the last packets leave the capture buffers
            for label, (p, path) in raw.items():
                p.stop(signal.SIGINT)
                result[label] = _to_pcapng(path, label, macs[label])


def _stdout(p: Background) -> str:
    path = p.log.with_suffix(".out")
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _mac(ns: str, dev: str) -> bytes | None:
    """The device's own MAC address (None for devices without one, or when it cannot be read)."""
    try:
        links = json.loads(run(["ip", "-j", "link", "show", "dev", dev], ns=ns, timeout=10).stdout or "[]")
        return bytes.fromhex(links[0]["address"].replace(":", "")) if links else None
    except (CommandError, ValueError, KeyError, json.JSONDecodeError):
        return None


def _direction(frame: bytes, mac: bytes | None) -> int:
    """pcapng direction (1 inbound, 2 outbound, 0 unknown) of an Ethernet frame seen on a device
    with this MAC: what the kernel would have said (PACKET_HOST / PACKET_OUTGOING). tcpdump's pcap
    files lose it, and the symptom detectors need it: a partial checksum is normal on a packet
    leaving, a fault on one that arrived and had to be sent again (KB-005)."""
    if mac is None or len(frame) < 12:
        return 0
    if frame[6:12] == mac:
        return 2
    if frame[0:6] == mac:
        return 1
    return 0


def _to_pcapng(pcap: Path, label: str, mac: bytes | None = None) -> Path:
    """One pcapng per point, its interface named after the point (independent tools open it),
    with each Ethernet frame's direction from the device's own MAC."""
    from badsum.capture import open_capture
    from badsum.capture.linktypes import LINKTYPE_ETHERNET
    from badsum.capture.pcapng_writer import PcapngWriter

    out = pcap.with_suffix(".pcapng")
    if not pcap.exists() or pcap.stat().st_size < 24:
        return pcap
    with open_capture(pcap) as reader, PcapngWriter(out) as w:
        linktype = reader.interfaces[0].linktype
        iface = w.add_interface(linktype, name=label)
        for b in reader:
            for i in range(len(b)):
                data = b.packet(i)
                d = _direction(data, mac) if linktype == LINKTYPE_ETHERNET else 0
                w.write_packet(iface, data, ts_ns=int(b.ts_ns[i]), origlen=int(b.origlen[i]), direction=d)
    pcap.unlink()
    return out


__all__ = ["Lab", "LabError", "CommandError", "preflight"]
