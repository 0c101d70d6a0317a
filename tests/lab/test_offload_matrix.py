"""offload-matrix on the real kernel: every datapath x tx/rx, judged by oracles the test reads itself.

The scenario runs once for the module (about 20 s). The test then re-reads what the run left:
its captures with `tcpdump -vv -r` (does the checksum verify?), scapy (is the stored value the
pseudo-header sum alone?) and tshark (the kernel status comment per packet); the receivers' nstat
deltas the run recorded; and `ip -j netns list` for leftovers. Smaller tests build one veth
datapath and check the agent's corrupt datagram and the offload settings with tcpdump and ethtool.
Speed is measured by the run (result.duration_s), never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import need_root, need_tool
from labkit import netns_names
from scapy.all import IP, TCP, UDP, PcapNgReader, PcapReader, checksum, in4_pseudoheader

from badsum.lab import matrix
from badsum.lab.lab import Lab
from badsum.lab.ovs import ovs_available
from badsum.lab.scenarios.offload_matrix import SCENARIO
from badsum.lab.state import new_prefix

pytestmark = pytest.mark.root
KB005 = {("ovs-netdev", "on", "on"), ("ovs-netdev", "on", "off")}


def _tools() -> None:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump"):
        need_tool(tool)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    _tools()
    prefix = new_prefix()
    result = SCENARIO.run(tmp_path_factory.mktemp("offload-matrix"), prefix=prefix)
    print(f"\noffload-matrix: {len(result.table)} cells in {result.duration_s:.1f} s")
    return {"result": result, "prefix": prefix, "netns_after": netns_names()}


def cell(run: dict, datapath: str, tx: str, rx: str) -> tuple[dict, dict, Path]:
    label = f"{datapath} tx={tx} rx={rx}"
    res = run["result"]
    row = next(r for r in res.table if (r["datapath"], r["tx"], r["rx"]) == (datapath, tx, rx))
    return row, res.traffic[label], Path(res.captures[label])


def need_ovs(run: dict) -> None:
    if not any(r["datapath"] == "ovs-netdev" for r in run["result"].table):
        pytest.skip(f"OVS not available: {ovs_available()}")


def tcpdump_incorrect(path: Path, bpf: str) -> tuple[int, int]:
    """(incorrect checksums, packets) as tcpdump itself reads the capture."""
    r = subprocess.run(["tcpdump", "-n", "-vv", "-r", str(path), bpf], capture_output=True, text=True, timeout=60, check=True)
    packets = sum(1 for line in r.stdout.splitlines() if line[:1].isdigit())
    return r.stdout.count("(incorrect"), packets


def test_the_table_has_every_cell(run: dict) -> None:
    table = run["result"].table
    datapaths = list(dict.fromkeys(r["datapath"] for r in table))
    assert datapaths[:2] == ["veth", "bridge"] and "vxlan" in datapaths
    assert len(table) == 4 * len(datapaths)
    assert {(r["tx"], r["rx"]) for r in table} == {("on", "on"), ("on", "off"), ("off", "on"), ("off", "off")}
    assert all(set(r) == {"datapath", "tx", "rx", "tcp", "corrupt_dropped", "wire_complete"} for r in table)


def test_only_ovs_netdev_with_tx_on_breaks_tcp(run: dict) -> None:
    need_ovs(run)
    res = run["result"]
    failing = {(r["datapath"], r["tx"], r["rx"]) for r in res.table if not r["tcp"] or r["corrupt_dropped"] is False}
    assert failing == KB005
    assert res.symptom_observed and res.reproduced
    assert "ovs-netdev tx=on rx=on" in res.verdict and "ovs-netdev tx=on rx=off" in res.verdict


def test_ovs_tx_on_segments_hold_the_pseudo_header_sum_alone(run: dict) -> None:
    """tcpdump and scapy, not badsum, judge the receiver-side capture of the KB-005 cell."""
    need_ovs(run)
    row, traffic, path = cell(run, "ovs-netdev", "on", "on")
    assert row["wire_complete"] is False
    incorrect, packets = tcpdump_incorrect(path, f"tcp and dst host {matrix.C2}")
    assert packets > 0 and incorrect == packets
    segments = [p for p in PcapNgReader(str(path)) if TCP in p and p[IP].dst == matrix.C2]
    assert segments
    for p in segments:
        tcp_len = p[IP].len - 4 * p[IP].ihl
        pseudo_sum = ~checksum(in4_pseudoheader(6, p[IP], tcp_len)) & 0xFFFF
        assert p[TCP].chksum == pseudo_sum
    assert traffic["counters"]["TcpInCsumErrors"] > 0  # the receiver's kernel dropped them (nstat)


def test_tx_off_cells_put_complete_sums_on_the_wire(run: dict) -> None:
    for row in run["result"].table:
        if row["tx"] != "off":
            continue
        dp = matrix.DATAPATHS[row["datapath"]]
        _, traffic, path = cell(run, row["datapath"], "off", row["rx"])
        incorrect, packets = tcpdump_incorrect(path, dp.wire_filter)
        assert packets > 0 and incorrect == 0, row
        assert row["wire_complete"] is True and traffic["counters"]["TcpInCsumErrors"] == 0


def test_pending_and_unfinished_are_told_apart_by_the_kernel_status(run: dict) -> None:
    """tshark reads the status comment: veth tx on still owes the sum, OVS's rebuilt packet does not."""
    tshark = need_tool("tshark")

    def comments(path: Path) -> list[str]:
        r = subprocess.run([tshark, "-r", str(path), "-Y", f"tcp and ip.dst == {matrix.C2}", "-T", "fields", "-e",
                            "frame.comment"], capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return r.stdout.splitlines()

    veth = comments(cell(run, "veth", "on", "on")[2])
    assert veth and all("TP_STATUS_CSUMNOTREADY" in c for c in veth)
    if any(r["datapath"] == "ovs-netdev" for r in run["result"].table):
        ovs = comments(cell(run, "ovs-netdev", "on", "on")[2])
        assert ovs and not any("TP_STATUS_CSUMNOTREADY" in c for c in ovs)


def test_every_datapath_drops_the_corrupt_datagrams(run: dict) -> None:
    for row in run["result"].table:
        _, traffic, _ = cell(run, row["datapath"], row["tx"], row["rx"])
        udp = traffic["udp"]
        assert row["corrupt_dropped"] is True, row
        assert udp["sent"] == matrix.CORRUPT_COUNT and udp["others"] == 0 and udp["marker_seen"]
        assert traffic["counters"]["UdpInCsumErrors"] == matrix.CORRUPT_COUNT  # nstat in the receiver


def test_nothing_of_the_run_is_left(run: dict) -> None:
    assert not [n for n in run["netns_after"] if n.startswith(run["prefix"] + "-")]
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10, check=True).stdout
    assert not [e["name"] for e in json.loads(out or "[]") if e["name"].startswith(run["prefix"] + "-")]


# -- the pieces, on one veth datapath ------------------------------------------------------------


def test_udp_raw_stores_the_wrong_checksum_it_reports(tmp_path: Path) -> None:
    """tcpdump captures, scapy recomputes, nstat counts: the agent's datagrams are what it says."""
    _tools()
    with Lab(matrix.topology(["veth"]), scenario="test", out=tmp_path) as lab:
        rx = lab.ns("veth-c2")
        pcap = tmp_path / "raw.pcap"
        dump = subprocess.Popen(["ip", "netns", "exec", rx, "tcpdump", "-i", "eth0", "-U", "-n", "-w", str(pcap), "udp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        try:
            assert any(b"listening on" in dump.stderr.readline() for _ in range(3))
            before = _nstat(rx)
            r = subprocess.run(["ip", "netns", "exec", lab.ns("veth-c1"), sys.executable, "-m", "badsum.lab.agent",
                                "udp-raw", "--src", matrix.C1, "--dst", matrix.C2, "--dport", "9999", "--count", "3",
                                "--marker", "done"], capture_output=True, text=True, timeout=20, check=True)  # fmt: skip
            sent = json.loads(r.stdout.splitlines()[-1])
            _wait_packets(pcap, 4)
            after = _nstat(rx)
        finally:
            dump.terminate()
            dump.wait(10)
    pkts = [p for p in PcapReader(str(pcap)) if UDP in p]
    assert len(pkts) == 4 and sent["sent"] == 3
    for p in pkts[:3]:
        stored = p[UDP].chksum
        p[UDP].chksum = None
        right = IP(bytes(p[IP]))[UDP].chksum
        assert stored == int(sent["stored"], 16) and right == int(sent["correct"], 16) and stored not in (right, 0)
    marker = pkts[3]
    stored = marker[UDP].chksum
    marker[UDP].chksum = None
    assert bytes(marker[UDP].payload) == b"done" and stored == IP(bytes(marker[IP]))[UDP].chksum
    assert after - before == 3  # UdpInCsumErrors: the receiver checked and dropped all three


def test_run_cell_sets_the_offloads_it_reports(tmp_path: Path) -> None:
    """ethtool, read by the test inside the namespaces, agrees with the cell's settings."""
    _tools()
    with Lab(matrix.topology(["veth"]), scenario="test", out=tmp_path) as lab:
        r = matrix.run_cell(lab, matrix.Cell("veth", tx=False, rx=True), port=9300, out=tmp_path / "cells")
        for ns in ("veth-c1", "veth-c2"):
            out = subprocess.run(["ip", "netns", "exec", lab.ns(ns), "ethtool", "--json", "-k", "eth0"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
            f = json.loads(out)[0]
            assert f["tx-checksum-ip-generic"]["active"] is False and f["rx-checksumming"]["active"] is True
            assert r.applied[f"{ns}:eth0"] == {"tx": False, "rx": True}
    assert r.tcp and r.corrupt_dropped is True and r.wire_complete is True


def _nstat(ns: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-a", "-s", "-z", "--json"], capture_output=True, text=True,
                         timeout=10, check=True).stdout  # fmt: skip
    return int(json.loads(out)["kernel"]["UdpInCsumErrors"])


def _wait_packets(pcap: Path, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True, timeout=10, check=False)
        if len(r.stdout.splitlines()) >= n:
            return
        time.sleep(0.05)
