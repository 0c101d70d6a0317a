"""A private Open vSwitch (ovsdb-server + ovs-vswitchd) for one lab, inside a lab namespace.

If the lab needs OVS it starts its own daemons with database, sockets and logs in the run's
directory, so a system OVS (if any) is never touched. The userspace `netdev` datapath needs no
kernel module; ovs-vswitchd runs in the lab's host namespace so its AF_PACKET ports are there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from badsum.lab.runner import Background, run, spawn, wait_for

SCHEMA_PATHS = (Path("/usr/share/openvswitch/vswitch.ovsschema"),)


def ovs_available() -> str | None:
    """None when OVS can run here, else why not."""
    for tool in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovsdb-tool"):
        if shutil.which(tool) is None:
            return f"{tool} not found: install Debian's openvswitch-switch"
    if not any(p.exists() for p in SCHEMA_PATHS):
        return "the OVS schema vswitch.ovsschema is missing"
    return None


class PrivateOVS:
    """ovsdb-server + ovs-vswitchd for one lab, in namespace `ns`."""

    def __init__(self, ns: str, rundir: Path) -> None:
        self.ns = ns
        self.dir = rundir
        self.db = rundir / "conf.db"
        self.sock = rundir / "db.sock"
        self.procs: list[Background] = []

    def vsctl(self, *args: str) -> str:
        return run(["ovs-vsctl", f"--db=unix:{self.sock}", "--timeout=10", *args], timeout=15).stdout

    def start(self) -> list[Background]:
        self.dir.mkdir(parents=True, exist_ok=True)
        schema = next(p for p in SCHEMA_PATHS if p.exists())
        run(["ovsdb-tool", "create", str(self.db), str(schema)])
        db = spawn("ovsdb-server", ["ovsdb-server", str(self.db), f"--remote=punix:{self.sock}",
                                    f"--unixctl={self.dir / 'ovsdb.ctl'}", f"--log-file={self.dir / 'ovsdb.log'}"],
                   ns=self.ns, logdir=self.dir)  # fmt: skip
        self.procs.append(db)
        wait_for(self.sock.exists, 10, what="ovsdb-server socket")
        self.vsctl("--no-wait", "init")
        vs = spawn("ovs-vswitchd", ["ovs-vswitchd", f"unix:{self.sock}", f"--unixctl={self.dir / 'vswitchd.ctl'}",
                                    f"--log-file={self.dir / 'vswitchd.log'}", "--disable-system"],
                   ns=self.ns, logdir=self.dir)  # fmt: skip
        self.procs.append(vs)
        wait_for(lambda: (self.dir / "vswitchd.ctl").exists(), 15, what="ovs-vswitchd control socket")
        return self.procs

    def add_bridge(self, name: str, ports: tuple[str, ...], datapath: str = "netdev") -> None:
        self.vsctl("add-br", name, "--", "set", "bridge", name, f"datapath_type={datapath}")
        for p in ports:
            self.vsctl("add-port", name, p)
        run(["ip", "-n", self.ns, "link", "set", name, "up"], check=False)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
