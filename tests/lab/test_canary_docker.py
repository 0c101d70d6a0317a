"""`badsum canary` reports the Docker datapath: engine, networks, bridges, MTUs, veth offloads, and
the cell that exercised each one.

Pure: `hosts_of`/`find_engines` on dockerd command lines, and `interpret` on a recorded engine
(tests/data/canary/docker-bridge.json: the API's /version, /networks/ID and /containers/ID/json of a
private dockerd with one bridge network and one running container, with `ip -j -d link` and
`ethtool --json -k` of its namespace). As root: a private dockerd (docker.io 20.10) started by the
test in a namespace of its own, a bridge network on a documentation subnet and one container; the
canary is pointed at it with --docker-host and its report is checked against `docker` and
`ip`/`ethtool` read by the test in that namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from netns import Topology
from support import need_root, need_tool

from badsum.cli.canary import render
from badsum.cli.main import main
from badsum.lab import canary_docker as cd
from badsum.lab.canary import (
    CanaryReport,
    Outcome,
    OvsBridges,
    detect,
    docker_presence,
    docker_verdicts,
    settings,
)
from badsum.lab.docker import LAB_IMAGE, PrivateDocker, docker_available, engine_pid

BADSUM = [sys.executable, "-m", "badsum"]
RECORDED = Path(__file__).resolve().parents[1] / "data" / "canary" / "docker-bridge.json"
SUBNET = "198.51.100.0/24"  # documentation range (RFC 5737); never Docker's 172.17.0.0/16
BRIDGE = "bsdk0"
MTU = 1400
MTU_KEY = cd.MTU_OPTION


# -- finding engines (pure) -------------------------------------------------------------------------


def test_hosts_from_flags_daemon_json_and_defaults() -> None:
    assert cd.hosts_of(["dockerd", "-H", "unix:///run/a.sock", "--host=unix:///run/b.sock"], None) == [
        "unix:///run/a.sock", "unix:///run/b.sock"]  # fmt: skip
    assert cd.hosts_of(["dockerd", "-H=unix:///x.sock", "-H", "tcp://0.0.0.0:2375"], None) == ["unix:///x.sock"]
    assert cd.hosts_of(["/usr/sbin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock"], None) == [cd.DEFAULT_HOST]
    assert cd.hosts_of(["dockerd"], {"hosts": ["unix:///srv/d.sock"]}) == ["unix:///srv/d.sock"]
    assert cd.hosts_of(["dockerd"], None) == [cd.DEFAULT_HOST]
    assert cd.hosts_of(["dockerd", "-H", "tcp://127.0.0.1:2375"], None) == []  # TCP only: not asked


def test_find_engines_takes_dockerd_only() -> None:
    procs = [(1, ["/sbin/init"]), (40, ["/usr/sbin/dockerd", "-H", "unix:///run/d.sock"]), (41, ["containerd"]),
             (42, ["docker", "-H", "unix:///run/d.sock", "ps"]), (43, ["dockerd-rootless.sh"])]  # fmt: skip
    assert cd.find_engines(procs, None) == [cd.Engine(40, "unix:///run/d.sock")]


# -- a recorded engine (pure) -------------------------------------------------------------------------


def recorded() -> cd.DockerEngine:
    doc = json.loads(RECORDED.read_text())
    return cd.interpret(doc["raw"], doc["links"], doc["container_links"], doc["features"], {}, {})


def test_recorded_bridge_network_is_the_bridge_cell() -> None:
    doc = json.loads(RECORDED.read_text())
    eng = recorded()
    assert eng.version == doc["raw"]["version"]["Version"] and eng.error is None
    by = {n.name: n for n in eng.networks}
    assert set(by) == {"bsnet", "host", "none"}
    net = by["bsnet"]
    assert (net.driver, net.bridge, net.mtu, net.subnets, net.cell) == ("bridge", BRIDGE, MTU, [SUBNET], "bridge")
    (ep,) = net.containers
    assert ep.container == "bs-c1" and ep.ifname == "eth0"
    # The recorded veth had tx off (set by the recording test): the reader must say so, not the default.
    veth = next(lk["ifname"] for lk in doc["links"] if lk.get("master") == BRIDGE)
    assert (ep.veth, ep.tx, ep.rx) == (veth, False, True)
    assert (by["host"].cell, by["none"].cell) == (None, None) and "host's own stack" in by["host"].cell_why


def test_docker_network_makes_its_cell_present_and_gets_its_verdict() -> None:
    eng = recorded()
    pres = detect([], OvsBridges({}, "not installed"))
    feats = docker_presence(pres, [eng])
    assert pres["bridge"].present and pres["bridge"].reasons == [f"Docker network bsnet (bridge {BRIDGE})"]
    # Recorded as an engine in the root namespace: its veths are the root's bridge ports already.
    assert feats == {} and pres["bridge"].interfaces == []
    eng.netns = "/proc/4242/ns/net"
    pres = detect([], OvsBridges({}, "not installed"))
    (label,) = docker_presence(pres, [eng])
    assert label.endswith("@bs-c1") and pres["bridge"].interfaces == [label]
    (s,) = settings(pres["bridge"], docker_presence(detect([], OvsBridges({})), [eng]))
    assert (s.tx, s.rx) == (False, True) and label in s.source
    assert not pres["vxlan"].present
    row = {"datapath": "bridge", "tx": "on", "rx": "on", "tcp": False, "corrupt_dropped": True, "wire_complete": False,
           "settings": "defaults", "wire": {"partial_pending": 0}}
    failed = Outcome("bridge", "FAIL", "valid TCP broken", True, pres["bridge"].reasons, [row])
    docker_verdicts([eng], [failed, Outcome("vxlan", "ABSENT", "not on this host", False, [])])
    assert next(n for n in eng.networks if n.name == "bsnet").canary == "FAIL"
    text = render(CanaryReport([failed], docker=[eng]))
    lines = text.splitlines()
    assert lines[0].startswith("FAIL")
    assert lines[2].startswith("docker 20.10") and f"network bsnet: bridge; bridge {BRIDGE}" in text
    assert "-> bridge cell: FAIL" in text and "tx off rx on" in text


def test_overlay_and_ovs_docker_ports_map_to_their_cells() -> None:
    raw = {"host": cd.DEFAULT_HOST, "version": {"Version": "24.0.5"},
           "networks": [{"Name": "ov", "Id": "a" * 64, "Driver": "overlay", "Options": {MTU_KEY: "1450"}},
                        {"Name": "mv", "Id": "b" * 64, "Driver": "macvlan"}], "containers": []}  # fmt: skip
    eng = cd.interpret(raw, [], {}, {}, {"5f3c_l": "web1"}, {"br-dp": ("netdev", ("5f3c_l",))})
    by = {n.name: n for n in eng.networks}
    assert (by["ov"].cell, by["ov"].mtu, by["mv"].cell) == ("vxlan", 1450, None)
    assert eng.ovs_ports == [cd.OvsDockerPort("5f3c_l", "web1", "br-dp", "netdev", "ovs-netdev", "OVS userspace (netdev) datapath")]
    pres = detect([], OvsBridges({}))
    docker_presence(pres, [eng])
    assert pres["ovs-netdev"].present and pres["ovs-netdev"].reasons == ["ovs-docker port 5f3c_l of web1"]
    assert pres["vxlan"].present and not pres["bridge"].present
    docker_verdicts([eng], [Outcome("ovs-netdev", "FAIL", "KB-005", True, []), Outcome("vxlan", "PASS", "ok", True, [])])
    assert eng.ovs_ports[0].canary == "FAIL" and by["ov"].canary == "PASS" and by["mv"].canary is None
    text = "\n".join(cd.summary(eng))
    assert "ovs-docker port 5f3c_l of web1 on br-dp (netdev) -> ovs-netdev cell: FAIL" in text
    assert "network mv: macvlan -> no cell (macvlan is not in the matrix)" in text


def test_docker_host_must_be_a_unix_socket(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["canary", "--json", "--docker-host", "tcp://127.0.0.1:2375"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["errors"][0]["code"] == "canary.docker_host"


# -- a private dockerd (root) ------------------------------------------------------------------------


def ip_json(ns: str, *args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", "-n", ns, *args], capture_output=True, text=True, timeout=10,
                                     check=True).stdout or "[]")  # fmt: skip


def ethtool_k(ns: str, ifname: str) -> dict[str, bool]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "--json", "-k", ifname], capture_output=True, text=True,
                         timeout=10, check=True).stdout  # fmt: skip
    return {k: bool(v["active"]) for k, v in json.loads(out)[0].items() if isinstance(v, dict) and "active" in v}


@pytest.mark.root
def test_canary_reports_a_private_dockers_bridge_network() -> None:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "nsenter"):
        need_tool(tool)
    if (why := docker_available()) is not None:
        pytest.skip(why)
    # Short paths: containerd's sockets under the exec root must fit in sun_path (108 bytes).
    rundir = Path(tempfile.mkdtemp(prefix="bsdk-", dir="/tmp"))
    with Topology() as topo:
        ns = topo.netns("dk")  # dockerd's bridges live here, never in the root namespace
        engine = PrivateDocker(ns, rundir)
        try:
            engine.start()
            engine.import_lab_image()
            engine.docker("network", "create", "--driver", "bridge", "--subnet", SUBNET, "--opt",
                          f"com.docker.network.bridge.name={BRIDGE}", "--opt", f"{MTU_KEY}={MTU}", "bsnet")  # fmt: skip
            engine.docker("run", "-d", "--name", "bs-c1", "--network", "bsnet", LAB_IMAGE, "sleep", "600")
            # The test's own oracles, in dockerd's namespace: the container's veth is the bridge's port.
            (veth,) = [lk["ifname"] for lk in ip_json(ns, "-d", "link", "show") if lk.get("master") == BRIDGE]
            subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", veth, "tx", "off"], capture_output=True, timeout=10,
                           check=True)  # fmt: skip
            want_veth, want_bridge = ethtool_k(ns, veth), ethtool_k(ns, BRIDGE)
            (br,) = ip_json(ns, "link", "show", "dev", BRIDGE)
            pid = engine_pid(rundir)
            assert pid is not None

            # Discovery by process: this dockerd and its -H socket are found without being named.
            assert cd.Engine(pid, engine.host) in cd.find_engines(cd.running_processes(), cd.read_daemon_json())
            fds = sorted(os.listdir("/proc/self/fd"))
            (again,) = cd.discover(engine.host, {})
            assert again.error is None and sorted(os.listdir("/proc/self/fd")) == fds  # the API connections are closed
            if os.environ.get("BADSUM_RECORD_DOCKER"):
                record(engine, pid)

            r = subprocess.run([*BADSUM, "canary", "--json", "--docker-host", engine.host], capture_output=True, text=True,
                               timeout=300, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
            doc = json.loads(r.stdout)
            (eng,) = doc["data"]["docker"]
            assert eng["error"] is None and eng["version"] == engine.version() and eng["pid"] == pid
            assert eng["netns"] == f"/proc/{pid}/ns/net"  # not the root namespace: read there through nsenter
            by = {n["name"]: n for n in eng["networks"]}
            inspected = json.loads(engine.docker("network", "inspect", "bsnet").stdout)[0]
            net = by["bsnet"]
            assert net["id"] == inspected["Id"] and net["driver"] == inspected["Driver"] == "bridge"
            assert net["bridge"] == BRIDGE and net["mtu"] == br["mtu"] == MTU and net["subnets"] == [SUBNET]
            assert (net["bridge_tx"], net["bridge_rx"]) == (want_bridge["tx-checksumming"], want_bridge["rx-checksumming"])
            (ep,) = net["containers"]
            assert ep["container"] == "bs-c1" and ep["veth"] == veth and ep["ifname"] == "eth0"
            assert (ep["tx"], ep["rx"]) == (want_veth["tx-checksumming"], want_veth["rx-checksumming"]) and ep["tx"] is False
            bridge_outcome = next(o for o in doc["data"]["outcomes"] if o["datapath"] == "bridge")
            assert net["cell"] == "bridge" and net["canary"] == bridge_outcome["status"] and bridge_outcome["cells"]
            assert any(x.startswith("Docker network bsnet") for x in bridge_outcome["reasons"])
            # The cell ran with the Docker veth's own settings (tx off), read in dockerd's namespace.
            assert [(c["tx"], c["rx"]) for c in bridge_outcome["cells"]] == [("off", "on" if ep["rx"] else "off")]
            assert f"{veth}@bs-c1" in bridge_outcome["cells"][0]["settings"]
            assert by["host"]["cell"] is None and by["none"]["driver"] == "null"
            assert r.returncode == (1 if doc["data"]["status"] == "FAIL" else 0 if doc["data"]["status"] == "PASS" else 3)

            t = subprocess.run([*BADSUM, "canary", "--docker-host", engine.host], capture_output=True, text=True,
                               timeout=300, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
            lines = t.stdout.splitlines()
            assert lines[0].split(":", 1)[0] in ("PASS", "FAIL", "UNKNOWN")  # the answer first
            assert lines[2].startswith(f"docker {engine.version()} at {engine.host}")
            assert f"network bsnet: bridge; bridge {BRIDGE}" in t.stdout and f"-> bridge cell: {net['canary']}" in t.stdout
            print(f"\ncanary with a private dockerd ({doc['data']['duration_s']:.1f} s):\n{t.stdout}")
            # Read-only: the engine still has exactly its one container and network, untouched.
            assert engine.docker("ps", "-q", "--no-trunc").stdout.split() == [ep["id"]]
            assert ip_json(ns, "link", "show", "dev", BRIDGE)[0]["mtu"] == MTU
        finally:
            engine.stop()
    leftover = subprocess.run(["sh", "-c", f"ps -eo args | grep -c '^[d]ockerd.*{rundir}'"], capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()  # fmt: skip
    assert leftover == "0", "the private dockerd outlived the test"
    subprocess.run(["rm", "-rf", "--one-file-system", str(rundir)], timeout=60, check=False)
    assert not rundir.exists()


def record(engine: PrivateDocker, pid: int) -> None:
    """BADSUM_RECORD_DOCKER=1: rewrite tests/data/canary/docker-bridge.json from this engine."""
    e = cd.Engine(pid, engine.host)
    netns = f"/proc/{pid}/ns/net"
    raw = {"host": e.host, "pid": None, "netns": "root", "version": cd.api_get(e.host, "/version"),
           "networks": [cd.api_get(e.host, f"/networks/{n['Id']}") for n in cd.api_get(e.host, "/networks")],
           "containers": [cd.api_get(e.host, f"/containers/{c['Id']}/json") for c in cd.api_get(e.host, "/containers/json")]}  # fmt: skip
    links = json.loads(subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", "-d", "link", "show"], capture_output=True,
                                      text=True, timeout=10, check=True).stdout)  # fmt: skip
    names = [lk["ifname"] for lk in links if lk.get("master") == BRIDGE] + [BRIDGE]
    features = {n: cd._features(netns, n) for n in names}
    # Environment and host paths of the containers are not needed and not kept.
    for c in raw["containers"]:
        c["Config"] = {"Image": c["Config"]["Image"]}
        c.pop("HostsPath", None), c.pop("ResolvConfPath", None), c.pop("HostnamePath", None), c.pop("LogPath", None)
        c.pop("GraphDriver", None)
    doc = {"raw": raw, "links": links, "container_links": {c["Id"]: cd._container_links(c) for c in raw["containers"]},
           "features": features}  # fmt: skip
    RECORDED.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
