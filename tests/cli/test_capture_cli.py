"""`badsum capture`: usage, exit codes, docs, and `--auto` on recorded snapshots (no root needed);
`--list` and a read-only capture on host:lo as root."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, need_root

from badsum.capture.auto import auto_points
from badsum.capture.session import CaptureError
from badsum.cli.main import COMMANDS, build_parser, main
from badsum.host.model import (
    HostSnapshot,
    KernelInfo,
    Link,
    Namespace,
    OVSBridge,
    OVSInfo,
    OVSPort,
    Route,
    VxlanInfo,
)

DOCS = REPO / "docs" / "cli.md"


def badsum(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "badsum.cli.main", *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_registered_with_its_help() -> None:
    from badsum.cli import capture

    assert COMMANDS["capture"] == capture.HELP


def test_help_has_examples_and_exit_codes() -> None:
    r = badsum("capture", "--help")
    assert r.returncode == 0
    assert "examples:" in r.stdout and "exit codes" in r.stdout


def test_every_option_is_documented() -> None:
    docs = DOCS.read_text()
    section = docs[docs.index("## `badsum capture`") :]
    sub = next(a for a in build_parser("capture")._actions if hasattr(a, "choices") and a.choices)
    options = [o for a in sub.choices["capture"]._actions for o in a.option_strings if o not in ("-h", "--help")]
    missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", section)]
    assert not missing


def test_no_point_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["capture", "-d", "1"]) == 2
    assert "--point" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-c", "0"], ["-d", "-1"], ["--snaplen", "x"], ["-o", "d", "--single", "f"]])
def test_bad_values_exit_2(argv: list[str]) -> None:
    r = badsum("capture", "--point", "host:lo", *argv)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_not_root_exits_3_and_starts_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["capture", "--point", "host:lo", "-o", str(tmp_path / "o"), "--json"]) == 3
    out, err = capsys.readouterr()
    assert "root" in err
    assert json.loads(out)["errors"][0]["code"] == "not_root"
    assert not (tmp_path / "o").exists()


# -- --auto on snapshots --------------------------------------------------------------------------


def _veth(ifindex: int, name: str, peer_ns: str, peer: str, **kw) -> Link:
    return Link(ifindex, name, "veth", 1500, "up", peer_ns=peer_ns, peer_name=peer, **kw)


def _snapshot(*, ovs: bool) -> HostSnapshot:
    container = Namespace("web", 4026532001, "/run/netns/web", names=("web",), links=(
        Link(1, "lo", "loopback", 65536, "unknown"),
        _veth(2, "eth0", "host", "veth9", addresses=("198.51.100.7/24",)),
    ))  # fmt: skip
    host_links = [
        Link(1, "lo", "loopback", 65536, "unknown"),
        Link(2, "eth1", "device", 1500, "up", addresses=("203.0.113.1/24",)),
        _veth(9, "veth9", "web", "eth0", master=None if ovs else "br0"),
        Link(10, "br0", "openvswitch" if ovs else "bridge", 1500, "up"),
        Link(11, "vx0", "vxlan", 1450, "up", master=None if ovs else "br0",
             vxlan=VxlanInfo(42, 4789, "203.0.113.1", "203.0.113.9", None, False, None)),
    ]  # fmt: skip
    host = Namespace("host", 4026531840, None, links=tuple(host_links), routes=(Route("default", "eth1", "203.0.113.254"),))
    infos = ()
    if ovs:
        br = OVSBridge("br0", "netdev", (OVSPort("veth9", "br0", "system"), OVSPort("vx0", "br0", "system")))
        infos = (OVSInfo(running=True, bridges=(br,)),)
    return HostSnapshot(0.0, "node", KernelInfo("6.1.0", (6, 1, 0)), True, (container, host), ovs=infos)


@pytest.mark.parametrize("ovs", [False, True], ids=["linux-bridge", "ovs"])
@pytest.mark.parametrize("target", ["web", "198.51.100.7"])
def test_auto_follows_the_path(ovs: bool, target: str) -> None:
    points = auto_points(_snapshot(ovs=ovs), target)
    assert [p.label for p in points] == ["web:eth0", "host:veth9", "host:br0", "host:vx0", "host:eth1"]
    assert points[0].enter == "/run/netns/web" and points[1].enter is None


def test_auto_by_pid_uses_the_namespace_inode() -> None:
    points = auto_points(_snapshot(ovs=False), "4242", pid_inode=4026532001)
    assert points[0].label == "web:eth0"


@pytest.mark.parametrize("target", ["nosuch", "192.0.2.99", "77777"])
def test_auto_unknown_target_is_a_usage_error(target: str) -> None:
    with pytest.raises(CaptureError) as e:
        auto_points(_snapshot(ovs=False), target)
    assert e.value.usage


# -- as root ------------------------------------------------------------------------------------


@pytest.mark.root
def test_list_explicit_points() -> None:
    need_root()
    r = badsum("capture", "--point", "host:lo", "--list", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["data"]["points"][0]["point"] == "host:lo"


@pytest.mark.root
def test_capture_on_host_lo_with_a_duration(tmp_path: Path) -> None:
    """Read-only on the root namespace's loopback: the file exists, is named after the point, and
    the envelope says why it stopped."""
    need_root()
    out = tmp_path / "o"
    r = badsum("capture", "--point", "host:lo", "-d", "1", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env["data"]["points"][0]["stopped"] == "duration"
    assert (out / "host:lo.pcapng").is_file()
    assert r.stderr == ""  # no progress line when stderr is not a terminal
