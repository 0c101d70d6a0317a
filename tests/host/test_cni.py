"""CNI, kube-proxy and engine sightings from interface names and process names (pure), and the
process reader on this machine's /proc (an independent list: `ps -e -o comm=`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rules"))

from rule_fixtures import host, netns, snapshot, veth, vxlan  # noqa: E402

from badsum.host import cni  # noqa: E402
from badsum.host.model import Link  # noqa: E402


def dev(name: str, ifindex: int, kind: str = "device") -> Link:
    return Link(ifindex, name, kind, 1500, "up")


def names(sightings: tuple[cni.Sighting, ...]) -> list[str]:
    return [s.name for s in sightings]


def test_flannel_node() -> None:
    snap = snapshot("5.15.0", host((vxlan("flannel.1"), dev("cni0", 6, "bridge"))))
    got = cni.detect(snap, {"flanneld", "kube-proxy", "containerd", "systemd"})
    assert names(got) == ["flannel", "kube-proxy", "containerd"]
    flannel = got[0]
    assert flannel.overlay == "vxlan" and flannel.interfaces == ("host:flannel.1", "host:cni0")
    assert flannel.evidence == "host:flannel.1, host:cni0; process flanneld"


def test_calico_veths_are_bounded_in_the_evidence() -> None:
    links = tuple(dev(f"cali{i:011x}", 10 + i, "veth") for i in range(8))
    snap = snapshot("5.15.0", host((*links, dev("tunl0", 3, "ipip"))))
    got = {s.name: s for s in cni.detect(snap, {"calico-node"})}
    assert set(got) == {"calico", "calico-ipip"}
    assert got["calico"].interface_count == 8 and len(got["calico"].interfaces) == 5
    assert got["calico"].evidence.endswith("and 3 more; process calico-node")


@pytest.mark.parametrize(("links", "procs", "expected"), [
    ((dev("cilium_host", 3), dev("cilium_vxlan", 4, "vxlan")), {"cilium-agent"}, ["cilium"]),
    ((dev("antrea-gw0", 3), dev("genev_sys_6081", 4, "geneve")), {"antrea-agent"}, ["antrea", "ovs-geneve"]),
    ((dev("ovn-k8s-mp0", 3), dev("genev_sys_6081", 4, "geneve")), {"ovnkube"}, ["ovn-kubernetes", "ovs-geneve"]),
    ((dev("kube-ipvs0", 3, "dummy"),), {"kube-proxy"}, ["kube-proxy-ipvs", "kube-proxy"]),
    ((dev("docker0", 3, "bridge"),), {"dockerd", "containerd"}, ["docker", "containerd"]),
    ((dev("eth0", 2),), {"sshd"}, []),
])  # fmt: skip
def test_signatures(links: tuple[Link, ...], procs: set[str], expected: list[str]) -> None:
    assert names(cni.detect(snapshot("6.1.0", host(links)), procs)) == expected


def test_interfaces_in_pod_namespaces_count() -> None:
    pod = netns("cni-1234", 4026532001, (veth("eth0", 2, "host", 9, "cali0123456789a"),))
    snap = snapshot("6.1.0", host((dev("cali0123456789a", 9, "veth"),)), pod)
    (s,) = cni.detect(snap)
    assert s.name == "calico" and s.interfaces == ("host:cali0123456789a",) and s.processes == ()


def test_lookalike_names_do_not_match() -> None:
    snap = snapshot("6.1.0", host((dev("flannel", 3), dev("calico", 4), dev("xdocker0", 5), dev("tunl01", 6))))
    assert cni.detect(snap) == ()


def test_process_names_match_ps() -> None:
    mine = cni.process_names()
    ps = subprocess.run(["ps", "-e", "-o", "comm="], capture_output=True, text=True, timeout=10, check=True).stdout
    theirs = {ln.strip() for ln in ps.splitlines() if ln.strip()}
    # Processes start and end between the two reads: the long-lived ones must agree.
    assert "python3" in mine or "pytest" in mine or any(n.startswith("python") for n in mine)
    assert len(mine & theirs) >= 0.8 * min(len(mine), len(theirs))


def test_process_names_bounded_and_safe_on_a_missing_proc(tmp_path: Path) -> None:
    assert cni.process_names(str(tmp_path / "nothing")) == set()
    for i in range(5):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "comm").write_bytes(b"x" * 1000 + b"\n")
    got = cni.process_names(str(tmp_path), limit=3)
    assert len(got) == 1 and all(len(n) <= 64 for n in got)
