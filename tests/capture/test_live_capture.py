"""`badsum capture` on the real kernel, in lab namespaces only: tp_status and direction per packet,
the same packets as tcpdump on the same interface, filters, --single, SIGINT, and --auto.

Independent oracles: tshark reads the files (frame.comment, frame.packet_flags_direction), and a
tcpdump runs at the same time on the same interface.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import need_root, need_tool

from badsum.capture import open_capture
from badsum.capture.pcapng_writer import (
    DIRECTION_INBOUND,
    DIRECTION_OUTBOUND,
    parse_tp_status_comment,
)
from badsum.lab.lab import Lab
from badsum.lab.runner import wait_for
from badsum.lab.topology import Address, Bridge, Topology, Veth, Vxlan

pytestmark = pytest.mark.root
C1, C2 = "198.51.100.1", "198.51.100.2"
TP_STATUS_CSUMNOTREADY = 0x8


def topology() -> Topology:
    """c1, c2 on a Linux bridge in `host` that also holds a VXLAN over an uplink veth to `remote`."""
    return Topology(
        name="capture-test",
        namespaces=["host", "c1", "c2", "remote"],
        veths=[Veth("c1", "eth0", "host", "c1-veth"), Veth("c2", "eth0", "host", "c2-veth"),
               Veth("host", "uplink", "remote", "uplink")],
        vxlans=[Vxlan("host", "vx0", vni=42, port=4789, local="203.0.113.1", remote="203.0.113.2", dev="uplink")],
        bridges=[Bridge("host", "br0", ("c1-veth", "c2-veth", "vx0"))],
        addresses=[Address("c1", "eth0", f"{C1}/24"), Address("c2", "eth0", f"{C2}/24"),
                   Address("host", "uplink", "203.0.113.1/24"), Address("remote", "uplink", "203.0.113.2/24")],
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need_root()
    need_tool("tcpdump")
    need_tool("nsenter")
    with Lab(topology(), scenario="capture-test", out=tmp_path_factory.mktemp("lab")) as lab:
        yield lab


def badsum(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "badsum.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "badsum.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_capturing(out: Path, n: int) -> None:
    """Workers open their (temporary) files only once every point is bound and told to go."""
    wait_for(lambda: len(list(out.glob(".*.part"))) >= n, 15, what="capture workers")


def tshark(path: Path, *fields: str, display: str | None = None) -> list[list[str]]:
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
    argv += [a for f in fields for a in ("-e", f)] + (["-Y", display] if display else [])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in r.stdout.splitlines()]


def read_packets(path: Path) -> list[tuple[int, int, int, int]]:
    """(caplen, origlen, tp_status, direction) per packet, with badsum's reader."""
    rows = []
    with open_capture(path) as reader:
        for b in reader:
            for i in range(len(b)):
                rows.append((int(b.caplen[i]), int(b.origlen[i]), int(b.tp_status[i]), int(b.direction[i])))
    return rows


@pytest.fixture(scope="module")
def interrupted_run(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """TCP c1 -> c2 captured by badsum at three points and by tcpdump on c1:eth0 at the same time;
    badsum is stopped with SIGINT."""
    base = tmp_path_factory.mktemp("cap")
    out, raw = base / "out", base / "tcpdump.pcap"
    dump = lab.spawn("tcpdump-c1", "c1", ["tcpdump", "-i", "eth0", "-n", "-s", "0", "-U", "--immediate-mode",
                                          "-w", str(raw), "tcp"])  # fmt: skip
    wait_for(lambda: "listening on" in dump.output() or not dump.alive(), 10, what="tcpdump")
    c1, host = lab.ns("c1"), lab.ns("host")
    points = [f"{c1}:eth0", f"{host}:c1-veth", f"{host}:br0"]
    p = start("capture", *(a for pt in points for a in ("--point", pt)), "-f", "tcp", "-o", str(out), "--json")
    try:
        wait_capturing(out, len(points))
        tcp = lab.tcp_transfer("c1", "c2", C2, port=9100, nbytes=300_000, timeout=8)
        time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=30)
        time.sleep(0.2)
        dump.stop(signal.SIGINT)
    return {"rc": p.returncode, "stdout": stdout, "stderr": stderr, "out": out, "tcpdump": raw, "tcp": tcp,
            "points": points}  # fmt: skip


def test_sigint_finalises_every_file(interrupted_run: dict) -> None:
    r = interrupted_run
    assert r["tcp"]["ok"], r["tcp"]
    assert r["rc"] == 0, r["stderr"]
    env = json.loads(r["stdout"])
    assert env["command"] == "capture" and env["status"] == "ok"
    assert env["data"]["stopped_by"] == "interrupted"
    assert sorted(pt["point"] for pt in env["data"]["points"]) == sorted(r["points"])
    assert not list(r["out"].glob(".*.part")), "a temporary file was left"
    for pt in env["data"]["points"]:
        path = Path(pt["file"])
        assert path.name == f"{pt['point']}.pcapng"
        # (br0 sees only what is delivered to the bridge itself, not the unicast it forwards)
        assert pt["packets"] > 0 or pt["point"].endswith(":br0")
        rows = tshark(path, "frame.interface_name")
        assert len(rows) == pt["packets"]  # tshark opens it, and reads every packet
        assert {row[0] for row in rows} <= {pt["point"]}  # the IDB is named after the point


def test_tp_status_recorded_per_packet(interrupted_run: dict) -> None:
    path = interrupted_run["out"] / f"{interrupted_run['points'][0]}.pcapng"
    rows = read_packets(path)
    assert all(status != 0xFFFFFFFF for _, _, status, _ in rows), "every packet carries the kernel's status"
    sent = [status for _, _, status, direction in rows if direction == DIRECTION_OUTBOUND]
    # veth transmit offload: c1's data segments leave with the checksum still to be filled in.
    assert any(status & TP_STATUS_CSUMNOTREADY for status in sent)
    # The independent reading: tshark shows the same status comments, packet for packet.
    comments = [row[0] for row in tshark(path, "frame.comment")]
    assert [parse_tp_status_comment(c) for c in comments] == [status for _, _, status, _ in rows]
    assert any("TP_STATUS_CSUMNOTREADY" in c for c in comments)


def test_direction_in_epb_flags(interrupted_run: dict) -> None:
    path = interrupted_run["out"] / f"{interrupted_run['points'][0]}.pcapng"
    rows = tshark(path, "ip.src", "frame.packet_flags_direction")
    assert rows
    for src, direction in rows:
        # c1:eth0: what c1 sends is outbound (2), what it receives inbound (1).
        assert int(direction, 0) == (DIRECTION_OUTBOUND if src == C1 else DIRECTION_INBOUND), (src, direction)
    # The host end of the veth sees c1's packets arrive.
    host_rows = tshark(interrupted_run["out"] / f"{interrupted_run['points'][1]}.pcapng", "ip.src",
                       "frame.packet_flags_direction")  # fmt: skip
    assert any(src == C1 and int(d, 0) == DIRECTION_INBOUND for src, d in host_rows)


def test_same_packets_as_tcpdump(interrupted_run: dict) -> None:
    ours = read_packets(interrupted_run["out"] / f"{interrupted_run['points'][0]}.pcapng")
    theirs = read_packets(interrupted_run["tcpdump"])
    assert len(ours) == len(theirs) > 0
    assert sum(r[0] for r in ours) == sum(r[0] for r in theirs)  # captured bytes
    assert sum(r[1] for r in ours) == sum(r[1] for r in theirs)  # bytes on the wire


def test_filter_and_single_file(lab: Lab, tmp_path: Path) -> None:
    c1, host = lab.ns("c1"), lab.ns("host")
    single = tmp_path / "all.pcapng"
    p = start("capture", "--point", f"{c1}:eth0", "--point", f"{host}:c1-veth", "-f", "icmp", "-d", "6",
              "--single", str(single), "--json")  # fmt: skip
    try:
        wait_capturing(tmp_path, 0)
        wait_for(lambda: len(list(tmp_path.glob(".badsum-capture-*/.*.part"))) >= 2, 15, what="capture workers")
        ping = lab.ping("c1", C2, count=3)
        tcp = lab.tcp_transfer("c1", "c2", C2, port=9101, nbytes=50_000, timeout=6)
    finally:
        stdout, stderr = p.communicate(timeout=30)
    assert ping["ok"] and tcp["ok"]
    assert p.returncode == 0, stderr
    env = json.loads(stdout)
    assert env["data"]["files"] == [str(single)]
    rows = tshark(single, "frame.interface_name", "frame.protocols")
    by_point: dict[str, int] = {}
    for name, protocols in rows:
        assert ":icmp" in protocols, protocols  # the filter let nothing else through
        by_point[name] = by_point.get(name, 0) + 1
    assert by_point == {f"{c1}:eth0": 6, f"{host}:c1-veth": 6}  # 3 requests and 3 replies at each
    assert not list(tmp_path.glob(".badsum-capture-*")), "the per-point temporary files were left"


def _our_workers(marker: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd and b"badsum.capture.live" in cmd:
                pids.append(int(d))
    return pids


@pytest.mark.parametrize("case", ["bad filter", "unknown namespace", "unknown interface"])
def test_bad_input_starts_nothing(lab: Lab, tmp_path: Path, case: str) -> None:
    c1 = lab.ns("c1")
    out = tmp_path / "out"
    argv = {"bad filter": ["--point", f"{c1}:eth0", "-f", "tcp port"],
            "unknown namespace": ["--point", f"{c1}-nosuch:eth0"],
            "unknown interface": ["--point", f"{c1}:eth0", "--point", f"{c1}:nosuch0"]}[case]  # fmt: skip
    r = badsum("capture", *argv, "-o", str(out), "-d", "5")
    assert r.returncode == 2, r.stderr
    expected = {"bad filter": "does not compile", "unknown namespace": "unknown namespace",
                "unknown interface": "no interface 'nosuch0'"}[case]  # fmt: skip
    assert expected in r.stderr
    assert not out.exists(), "nothing is written when a point cannot be captured"
    assert _our_workers(str(out)) == []


def test_auto_finds_the_path_a_person_would(lab: Lab) -> None:
    c1, host = lab.ns("c1"), lab.ns("host")
    expected = [f"{c1}:eth0", f"{host}:c1-veth", f"{host}:br0", f"{host}:vx0", f"{host}:uplink"]
    for target in (c1, C1):
        r = badsum("capture", "--auto", target, "--list", "--json", timeout=120)
        assert r.returncode == 0, r.stderr
        points = [p["point"] for p in json.loads(r.stdout)["data"]["points"]]
        assert points == expected, target


def test_packets_per_second_one_point(lab: Lab, tmp_path: Path) -> None:
    """Not a benchmark gate: records the rate in the test output (-s) and checks nothing is lost.
    The capture stops itself at the 50,000th packet (-c), so the time includes draining the queue."""
    c1 = lab.ns("c1")
    out = tmp_path / "out"
    n = 50_000
    p = start("capture", "--point", f"{c1}:eth0", "-o", str(out), "--json", "-f", "udp port 9", "-c", str(n))
    try:
        wait_capturing(out, 1)
        t0 = time.monotonic()
        code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"for i in range({n}): s.sendto(b'x'*64, ('{C2}', 9))\n")  # fmt: skip
        lab.exec("c1", [sys.executable, "-c", code], timeout=60)
        sent = time.monotonic() - t0
        stdout, stderr = p.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            p.communicate(timeout=30)
    point = json.loads(stdout)["data"]["points"][0]
    print(f"\none point: {point['packets']} packets ({point['dropped']} dropped) captured in {elapsed:.2f}s "
          f"(sent in {sent:.2f}s) = {point['packets'] / elapsed:,.0f} packets/s")
    assert point["packets"] == n and point["dropped"] == 0, stderr
    assert point["stopped"] == "count"
