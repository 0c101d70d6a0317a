"""badsum.host.cri: Docker containers named from the data root of every running dockerd.

A fixture root holds `proc/<pid>/cmdline` (NUL-separated, as the kernel writes it), the daemon's
config file and the data roots. The default /var/lib/docker is covered by tests/exporter/test_cri.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from badsum.host.cri import CriNamer, Owner, docker_container_dirs, dockerd_data_root
from badsum.host.model import Namespace

C1 = "1" * 64
C2 = "2" * 64


def ns(id: str, *, pid: int | None = None, cid: str | None = None) -> Namespace:
    return Namespace(id=id, inode=4026533000 + len(id), enter=None, pid=pid, container_id=cid)


def process(root: Path, pid: int, *argv: str) -> None:
    d = root / "proc" / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def container(base: Path, cid: str, name: str, pid: int) -> None:
    path = base / cid / "config.v2.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"ID": cid, "Name": f"/{name}", "State": {"Pid": pid}, "Config": {"Labels": {}},
                                "NetworkSettings": {"SandboxKey": ""}}))  # fmt: skip


def names(root: Path, namespaces: list[Namespace]) -> dict[str, Owner]:
    return CriNamer(str(root), which=lambda _t: None).name(namespaces).owners


@pytest.mark.parametrize(
    ("argv", "config", "want"),
    [
        (["dockerd", "--data-root=/srv/docker"], None, "/srv/docker"),
        (["dockerd", "-H", "unix:///x.sock", "--data-root", "/srv/docker"], None, "/srv/docker"),
        (["/usr/sbin/dockerd", "-g", "/old/graph"], None, "/old/graph"),
        (["dockerd", "--graph=/old/graph"], None, "/old/graph"),
        (["dockerd"], {"data-root": "/from/daemon.json"}, "/from/daemon.json"),
        (["dockerd", "--config-file", "/etc/alt.json"], {"graph": "/from/alt"}, "/from/alt"),
        (["dockerd", "--config-file=/etc/alt.json", "--data-root=/flag/wins"], {"data-root": "/cfg"}, "/flag/wins"),
        (["dockerd"], None, None),
        (["dockerd", "--data-root"], None, None),  # a flag without its value names nothing
        (["dockerd", "-g=/not/a/short/flag"], None, None),
    ],
)
def test_data_root_from_the_command_line_and_the_config_file(argv: list[str], config: dict | None, want: str | None) -> None:
    asked: list[str] = []

    def read(path: str) -> dict | None:
        asked.append(path)
        return config

    assert dockerd_data_root(argv, read) == want
    flags = " ".join(argv)
    if "--data-root=" in flags or "--data-root /" in flags or "-g" in argv or "--graph=" in flags:
        assert asked == []  # a flag wins: the config file is not even read
    else:
        assert asked == ["/etc/alt.json" if "alt.json" in flags else "/etc/docker/daemon.json"]


def test_a_dockerd_with_its_own_data_root_names_its_containers(tmp_path: Path) -> None:
    process(tmp_path, 300, "dockerd", "--iptables=false", "--data-root=/run/lab/docker/data", "-H", "unix:///run/lab/d.sock")
    process(tmp_path, 301, "sleep", "--data-root=/elsewhere")  # not a dockerd: its arguments mean nothing
    container(tmp_path / "run/lab/docker/data/containers", C1, "bs123456-app1", 4001)
    container(tmp_path / "elsewhere/containers", C2, "not-read", 4002)
    owners = names(tmp_path, [ns("bs123456-c1", pid=4001, cid=C1), ns("pid:4002", pid=4002, cid=C2)])
    assert owners["bs123456-c1"] == Owner("", "", "bs123456-app1", "docker", 4001)
    assert owners["pid:4002"] == Owner(pid=4002)  # /elsewhere is no dockerd's data root


def test_the_default_data_root_and_daemon_json_both_count(tmp_path: Path) -> None:
    process(tmp_path, 10, "/usr/bin/dockerd", "-H", "fd://")
    (tmp_path / "etc/docker").mkdir(parents=True)
    (tmp_path / "etc/docker/daemon.json").write_text(json.dumps({"data-root": "/mnt/disk2/docker"}))
    container(tmp_path / "mnt/disk2/docker/containers", C1, "web", 5001)
    container(tmp_path / "var/lib/docker/containers", C2, "old-default", 5002)
    owners = names(tmp_path, [ns("pid:5001", pid=5001, cid=C1), ns("pid:5002", pid=5002, cid=C2)])
    assert owners["pid:5001"].container == "web"
    assert owners["pid:5002"].container == "old-default"


def test_a_dockerd_in_its_own_mount_namespace_is_read_through_proc_root(tmp_path: Path) -> None:
    """Its data root may be a mount only it sees (the lab's dockerd runs in a private mount namespace)."""
    process(tmp_path, 42, "dockerd", "--data-root", "/private/docker")
    container(tmp_path / "proc/42/root/private/docker/containers", C1, "inside", 6001)
    dirs = docker_container_dirs(str(tmp_path))
    assert str(tmp_path / "proc/42/root/private/docker/containers") in dirs
    assert names(tmp_path, [ns("x", pid=1, cid=C1)])["x"].container == "inside"


def test_the_same_directory_is_read_once(tmp_path: Path) -> None:
    process(tmp_path, 7, "dockerd", "--data-root=/var/lib/docker")
    process(tmp_path, 8, "dockerd", "--data-root=/var/lib/docker")
    container(tmp_path / "var/lib/docker/containers", C1, "one", 7001)
    dirs = docker_container_dirs(str(tmp_path))
    assert dirs == [str(tmp_path / "var/lib/docker/containers")]


def test_no_proc_no_dockerd_nothing_breaks(tmp_path: Path) -> None:
    assert docker_container_dirs(str(tmp_path)) == [str(tmp_path / "var/lib/docker/containers")]
    process(tmp_path, 9, "dockerd", "--data-root=relative/path")  # not absolute: ignored
    (tmp_path / "proc/10").mkdir()  # a process gone between listdir and open: no cmdline
    assert docker_container_dirs(str(tmp_path)) == [str(tmp_path / "var/lib/docker/containers")]
