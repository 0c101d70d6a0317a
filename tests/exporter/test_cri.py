"""badsum.host.cri: pod names for namespaces, from crictl or the runtimes' state files under a root.

Fixture trees are written the way each runtime lays its state out (containerd's v2 task bundles,
CRI-O's overlay-containers userdata, Docker's config.v2.json); crictl is a fake runner that
answers with recorded `crictl pods/ps/inspectp -o json` shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

from exporterkit import FIXTURES, collected, load, scrape, values

from badsum.exporter.collector import Exporter, Options
from badsum.host.commands import Output
from badsum.host.cri import CriNamer, Owner, join, state_file_entries
from badsum.host.model import Namespace

SANDBOX = "a" * 64
APP = "b" * 64
OTHER = "c" * 64


def ns(id: str, *, pid: int | None = None, cid: str | None = None, names: tuple[str, ...] = (), command: str | None = None) -> Namespace:
    return Namespace(id=id, inode=4026532000 + len(id), enter=None, names=names, pid=pid, command=command, container_id=cid)


def write(path: Path, doc: dict | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


def spec(annotations: dict, netns: str | None = None) -> dict:
    namespaces = [{"type": "pid"}] + ([{"type": "network", "path": netns}] if netns else [{"type": "network"}])
    return {"ociVersion": "1.1.0", "annotations": annotations, "linux": {"namespaces": namespaces}}


def no_crictl(_tool: str) -> None:
    return None


def containerd_tree(root: Path) -> None:
    base = root / "run/containerd/io.containerd.runtime.v2.task/k8s.io"
    write(base / SANDBOX / "config.json", spec({"io.kubernetes.cri.container-type": "sandbox",
                                                "io.kubernetes.cri.sandbox-name": "web-7d9f",
                                                "io.kubernetes.cri.sandbox-namespace": "shop"},
                                               "/var/run/netns/cni-1234-5678"))  # fmt: skip
    write(base / SANDBOX / "init.pid", "4100")
    write(base / APP / "config.json", spec({"io.kubernetes.cri.container-type": "container",
                                            "io.kubernetes.cri.container-name": "nginx",
                                            "io.kubernetes.cri.sandbox-id": SANDBOX,
                                            "io.kubernetes.cri.sandbox-name": "web-7d9f",
                                            "io.kubernetes.cri.sandbox-namespace": "shop"},
                                           "/proc/4100/ns/net"))  # fmt: skip
    write(base / APP / "init.pid", "4200")


def test_containerd_by_netns_name_by_pid_and_by_container_id(tmp_path: Path) -> None:
    containerd_tree(tmp_path)
    naming = CriNamer(str(tmp_path), which=no_crictl).name([
        ns("cni-1234-5678", names=("cni-1234-5678",)),  # CNI's named netns: joined by the spec's path
        ns("pid:4100", pid=4100),  # joined by the sandbox's init.pid
        ns("pid:4200", pid=9, cid=APP),  # joined by the container id in the cgroup
    ])  # fmt: skip
    assert naming.source == "state files" and naming.errors == []
    assert naming.owners["cni-1234-5678"] == Owner("web-7d9f", "shop", "", "containerd")
    assert naming.owners["pid:4100"] == Owner("web-7d9f", "shop", "", "containerd", 4100)
    assert naming.owners["pid:4200"] == Owner("web-7d9f", "shop", "nginx", "containerd", 9)


def test_crio(tmp_path: Path) -> None:
    base = tmp_path / "run/containers/storage/overlay-containers"
    write(base / SANDBOX / "userdata/config.json", spec({"io.kubernetes.cri-o.ContainerType": "sandbox",
                                                         "io.kubernetes.pod.name": "db-0",
                                                         "io.kubernetes.pod.namespace": "data"},
                                                        "/var/run/netns/8d1e6a2c"))  # fmt: skip
    write(base / SANDBOX / "userdata/pidfile", "5100\n")
    write(base / APP / "userdata/config.json", spec({"io.kubernetes.cri-o.ContainerType": "container",
                                                     "io.kubernetes.pod.name": "db-0", "io.kubernetes.pod.namespace": "data",
                                                     "io.kubernetes.container.name": "postgres",
                                                     "io.kubernetes.cri-o.SandboxID": SANDBOX}))  # fmt: skip
    naming = CriNamer(str(tmp_path), which=no_crictl).name(
        [ns("8d1e6a2c", names=("8d1e6a2c",)), ns("pid:5100", pid=5100), ns("pid:5200", pid=5200, cid=APP)])
    assert naming.owners["8d1e6a2c"] == Owner("db-0", "data", "", "cri-o")
    assert naming.owners["pid:5100"] == Owner("db-0", "data", "", "cri-o", 5100)
    assert naming.owners["pid:5200"] == Owner("db-0", "data", "postgres", "cri-o", 5200)


def test_docker_kubernetes_and_plain(tmp_path: Path) -> None:
    base = tmp_path / "var/lib/docker/containers"
    write(base / SANDBOX / "config.v2.json", {"ID": SANDBOX, "Name": "/k8s_POD_api-1_prod_uid_0", "State": {"Pid": 6100},
                                              "Config": {"Labels": {"io.kubernetes.docker.type": "podsandbox",
                                                                    "io.kubernetes.pod.name": "api-1",
                                                                    "io.kubernetes.pod.namespace": "prod"}},
                                              "NetworkSettings": {"SandboxKey": "/var/run/docker/netns/3f2a1b0c9d8e"}})  # fmt: skip
    write(base / OTHER / "config.v2.json", {"ID": OTHER, "Name": "/redis", "State": {"Pid": 6300}, "Config": {"Labels": {}},
                                            "NetworkSettings": {"SandboxKey": "/var/run/docker/netns/0a0b0c0d0e0f"}})  # fmt: skip
    naming = CriNamer(str(tmp_path), which=no_crictl).name(
        [ns("3f2a1b0c9d8e", names=("3f2a1b0c9d8e",)), ns("0a0b0c0d0e0f", names=("0a0b0c0d0e0f",)), ns("pid:6300", pid=6300)])
    assert naming.owners["3f2a1b0c9d8e"] == Owner("api-1", "prod", "", "docker")
    assert naming.owners["0a0b0c0d0e0f"] == Owner("", "", "redis", "docker")  # plain Docker: the container's name
    assert naming.owners["pid:6300"] == Owner("", "", "redis", "docker", 6300)


def test_degrades_to_pid_and_command(tmp_path: Path) -> None:
    write(tmp_path / "var/lib/docker/containers" / OTHER / "config.v2.json", "{broken")
    naming = CriNamer(str(tmp_path), which=no_crictl).name([ns("pid:77", pid=77, command="sleep 1000"), ns("host")])
    assert naming.source == "none"
    assert naming.owners == {"pid:77": Owner(pid=77, command="sleep 1000"), "host": Owner()}


def test_empty_root_finds_nothing(tmp_path: Path) -> None:
    assert state_file_entries(str(tmp_path)) == []


# -- crictl ------------------------------------------------------------------------------------


class FakeCrictl:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> Output:
        self.calls.append(argv)
        if argv[1] == "pods":
            return Output(json.dumps({"items": [{"id": SANDBOX, "metadata": {"name": "web-7d9f", "namespace": "shop",
                                                                             "uid": "u1", "attempt": 0},
                                                 "state": "SANDBOX_READY"}]}))  # fmt: skip
        if argv[1] == "ps":
            return Output(json.dumps({"containers": [{"id": APP, "podSandboxId": SANDBOX, "metadata": {"name": "nginx"}}]}))
        if argv[1] == "inspectp":
            return Output(json.dumps({"status": {"id": SANDBOX}, "info": {"pid": 4100, "runtimeSpec": spec({}, "/var/run/netns/cni-9")}}))
        return Output(None, "unexpected")


def test_crictl_names_and_caches_inspectp(tmp_path: Path) -> None:
    fake = FakeCrictl()
    namer = CriNamer(str(tmp_path), run=fake, which=lambda _t: "/usr/bin/crictl")
    nss = [ns("cni-9", names=("cni-9",)), ns("pid:4100", pid=4100), ns("pid:4200", pid=4200, cid=APP)]
    naming = namer.name(nss)
    assert naming.source == "crictl"
    assert naming.owners["cni-9"] == Owner("web-7d9f", "shop", "", "crictl")
    assert naming.owners["pid:4100"].pod == "web-7d9f"
    assert naming.owners["pid:4200"] == Owner("web-7d9f", "shop", "nginx", "crictl", 4200)
    namer.name(nss)
    assert [c[1] for c in fake.calls].count("inspectp") == 1  # a sandbox is inspected once


def test_crictl_failing_falls_back_to_state_files(tmp_path: Path) -> None:
    containerd_tree(tmp_path)
    namer = CriNamer(str(tmp_path), run=lambda argv: Output(None, "crictl pods: connect: no such file"),
                     which=lambda _t: "/usr/bin/crictl")  # fmt: skip
    naming = namer.name([ns("pid:4100", pid=4100)])
    assert naming.source == "state files" and naming.owners["pid:4100"].pod == "web-7d9f"
    assert naming.errors and "crictl pods" in naming.errors[0]


def test_join_prefers_sandbox_for_a_shared_netns_path() -> None:
    from badsum.host.cri import Entry

    entries = [Entry("x", APP, "p", "n", "c", netns_path="/var/run/netns/cni-1"),
               Entry("x", SANDBOX, "p", "n", "", sandbox=True, netns_path="/var/run/netns/cni-1")]  # fmt: skip
    assert join([ns("cni-1", names=("cni-1",))], entries)["cni-1"].container == ""


def test_exporter_labels_carry_the_pod_names(tmp_path: Path) -> None:
    snap = load(FIXTURES / "KB-005" / "fire-process-namespace.json")
    target = next(n for n in snap.namespaces if n.id.startswith("pid:"))
    base = tmp_path / "run/containerd/io.containerd.runtime.v2.task/k8s.io"
    write(base / SANDBOX / "config.json", spec({"io.kubernetes.cri.container-type": "sandbox",
                                                "io.kubernetes.cri.sandbox-name": "web-0",
                                                "io.kubernetes.cri.sandbox-namespace": "shop"}))  # fmt: skip
    write(base / SANDBOX / "init.pid", str(target.pid))
    ex = Exporter(Options(), snapshot=lambda _now: snap, namer=CriNamer(str(tmp_path), which=no_crictl))
    ex.collect_once()
    m = scrape(ex)
    assert values(m["badsum_checksum_errors"], netns=target.id, pod="web-0", pod_namespace="shop", protocol="tcp")
    assert values(m["badsum_interface_mtu_bytes"], netns=target.id, pod="web-0")
    assert values(m["badsum_checksum_errors"], netns="host", pod="") and values(m["badsum_collection_errors"], stage="cri") == [0]
    assert collected([snap]).latest.families  # without a namer: empty names, still served
