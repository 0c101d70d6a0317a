"""KB-005 with real Docker (seeds 000 and 003): containers on an OVS userspace bridge via ovs-docker.

The set-up users reported: dockerd starts two containers with `--net=none`, and `ovs-docker
add-port` gives each an eth0 whose host end is a port of an OVS `netdev` bridge. The datapath is
the one ovs-userspace-veth builds from plain namespaces (veth TX offload on, ovs-vswitchd reading
the frames with AF_PACKET and sending the pseudo-header sum on unfinished), so the phases are its
own: ping from inside a container works (ICMP is summed in software), TCP fails, c2's kernel counts
TcpInCsumErrors; `ethtool -K eth0 tx off` in both containers' namespaces fixes it.

The engine is the lab's private dockerd (lab/docker.py) in the lab's `host` namespace, no bridge
and no firewall rules; the containers' namespaces are named `<prefix>-c1/c2` for the lab's tools,
and Docker names them `<prefix>-app1/app2`.
"""

from __future__ import annotations

import json

from badsum.lab.lab import Lab
from badsum.lab.result import ScenarioResult
from badsum.lab.scenarios.base import Scenario
from badsum.lab.scenarios.ovs_userspace_veth import C1, C2, observe_and_fix
from badsum.lab.topology import Container, OVSBridge, Topology

#: Lab namespace -> the name Docker knows its container by (after the prefix).
CONTAINERS = {"c1": "app1", "c2": "app2"}


def topology() -> Topology:
    return Topology(
        name="docker-ovs",
        namespaces=["host", "c1", "c2"],
        ovs=[OVSBridge("host", "br0", ())],
        containers=[
            Container("c1", CONTAINERS["c1"], "host", "br0", f"{C1}/24"),
            Container("c2", CONTAINERS["c2"], "host", "br0", f"{C2}/24"),
        ],
    )


def ovs_port(lab: Lab, ns: str) -> str:
    """The host end ovs-docker made for the container (`<13 hex>_l`), found by the container name it
    recorded in the interface's external_ids."""
    name = lab.container_name(ns)
    out = lab.ovs["host"].vsctl("--data=bare", "--no-heading", "--columns=name", "find", "interface",
                                f"external_ids:container_id={name}", "external_ids:container_iface=eth0")  # fmt: skip
    ports = out.split()
    if len(ports) != 1:
        raise RuntimeError(f"ovs-docker port of {name}: expected one, OVSDB has {ports}")
    return ports[0]


def docker_ping(lab: Lab, ns: str, addr: str, count: int = 3) -> dict:
    """busybox ping inside the container (`docker exec`), as a user would try first."""
    assert lab.docker is not None
    r = lab.docker.docker("exec", lab.container_name(ns), "ping", "-c", str(count), "-W", "1", addr,
                          timeout=count * 2 + 15, check=False)  # fmt: skip
    received = 0
    for line in r.stdout.splitlines():
        if "received" in line:  # "3 packets transmitted, 3 packets received, 0% packet loss"
            received = int(line.split(",")[1].split()[0])
    return {"ok": received == count, "sent": count, "received": received, "stderr": r.stderr.strip(),
            "via": f"docker exec {lab.container_name(ns)} ping"}  # fmt: skip


def inspect_facts(lab: Lab) -> list[dict]:
    """`docker inspect` of the lab's containers: the facts the evidence quotes."""
    assert lab.docker is not None
    names = [lab.container_name(ns) for ns in CONTAINERS]
    docs = json.loads(lab.docker.docker("inspect", *names, timeout=30).stdout)
    return [{"name": d["Name"].lstrip("/"), "id": d["Id"], "pid": d["State"]["Pid"], "image": d["Config"]["Image"],
             "image_id": d["Image"], "network_mode": d["HostConfig"]["NetworkMode"]} for d in docs]  # fmt: skip


def body(lab: Lab, result: ScenarioResult, fix: bool) -> None:
    assert lab.docker is not None
    ports = {ns: ovs_port(lab, ns) for ns in CONTAINERS}
    facts = inspect_facts(lab)
    result.add("docker", f"dockerd {lab.docker.version()} (private: own data root and socket, no bridge, no iptables); "
               + "; ".join(f"{f['name']} id {f['id'][:12]} pid {f['pid']} image {f['image']} --net={f['network_mode']}"
                           for f in facts), facts)  # fmt: skip
    listed = lab.ovs["host"].vsctl("list-ports", "br0").split()
    result.add("ovs-vsctl", f"br0 ports {', '.join(listed)}; "
               + ", ".join(f"{ports[ns]} is {lab.container_name(ns)}'s eth0 (ovs-docker)" for ns in CONTAINERS),
               {"ports": listed, "container_ports": {lab.container_name(ns): p for ns, p in ports.items()}})  # fmt: skip
    points = {"c1:eth0": ("c1", "eth0"), f"host:{ports['c1']}": ("host", ports["c1"]),
              f"host:{ports['c2']}": ("host", ports["c2"]), "c2:eth0": ("c2", "eth0")}  # fmt: skip
    observe_and_fix(lab, result, fix, points, ping=lambda: docker_ping(lab, "c1", C2))


SCENARIO = Scenario(
    name="docker-ovs",
    title="Docker containers on an OVS userspace bridge (ovs-docker): ping works, TCP fails",
    kb=("KB-005",),
    topology=topology,
    body=body,
    needs_ovs=True,
    needs_docker=True,
    tools=("ovs-docker", "uuidgen"),  # ovs-docker names its veth pairs with uuidgen
    watch=("c1", "c2"),
)
