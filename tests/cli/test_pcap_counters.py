"""`badsum pcap --snapshot`: the receivers' checksum counters joined with the capture (KB-011), and
the zero-outer-sum note (KB-016) that must never change the exit code.

Captures are built with scapy; whether their UDP sums verify is asked of tshark (an independent
checksum implementation). Snapshots are written from the host model the way `doctor --save` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.all import IP, TCP, UDP, VXLAN, Ether, IPv6, Raw, wrpcap
from support import need_tool

from badsum.host.model import CounterSample, HostSnapshot, KernelInfo, Link, Namespace

BADSUM = [sys.executable, "-m", "badsum"]
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
CLIENT, DNS = "2001:db8:10::5", "2001:db8:20::53"


def pcap(tmp: Path, *args: str) -> tuple[int, dict]:
    r = subprocess.run([*BADSUM, "pcap", "--json", *args], check=False, capture_output=True, text=True, timeout=60)
    return r.returncode, json.loads(r.stdout)


def dns6(path: Path, n: int = 4, corrupt: int | None = None) -> None:
    """UDPv6 queries to DNS and their answers, every sum right (scapy computes it) unless `corrupt`."""
    pkts = []
    for i in range(n):
        q = Ether(bytes(Ether(**MAC) / IPv6(src=CLIENT, dst=DNS) / UDP(sport=33000 + i, dport=53) / Raw(b"q" * 30)))
        a = Ether(bytes(Ether(**MAC) / IPv6(src=DNS, dst=CLIENT) / UDP(sport=53, dport=33000 + i) / Raw(b"a" * 60)))
        if corrupt == i:
            q[UDP].chksum ^= 0x0202
            q = Ether(bytes(q))
        pkts += [q, a]
    wrpcap(str(path), pkts)


def ns(name: str, addr: str, first: dict[str, int], second: dict[str, int]) -> Namespace:
    link = Link(ifindex=2, name="eth0", kind="veth", mtu=1500, state="UP", addresses=(f"{addr}/64", "fe80::1/64"))
    return Namespace(id=name, inode=4026531000 + len(name), enter=f"/run/netns/{name}", links=(link,),
                     counters=CounterSample(first, second, 2.0))  # fmt: skip


def snapshot(path: Path, server: tuple[dict, dict], client: tuple[dict, dict] | None = None, server_addr: str = DNS) -> None:
    zero = {"Udp6InCsumErrors": 0, "TcpInCsumErrors": 0, "UdpInCsumErrors": 0}
    snap = HostSnapshot(
        taken_at=1_700_000_000.0, hostname="node2", kernel=KernelInfo("5.4.0-1", (5, 4, 0)), root=True,
        namespaces=(ns("client", CLIENT, *(client or (zero, zero))), ns("dns", server_addr, *server)),
    )  # fmt: skip
    path.write_text(snap.to_json())


def tshark_ok(path: Path) -> list[str]:
    """tshark's UDP checksum status per packet (1 good, 0 bad), with checksum validation on."""
    exe = need_tool("tshark")
    out = subprocess.run([exe, "-n", "-r", str(path), "-o", "udp.check_checksum:TRUE", "-T", "fields", "-e", "udp.checksum.status"],
                         capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    return out.split()


ROSE = ({"Udp6InCsumErrors": 10, "TcpInCsumErrors": 3}, {"Udp6InCsumErrors": 14, "TcpInCsumErrors": 3})


def test_udp6_errors_while_sums_verify_is_kb011(tmp_path: Path) -> None:
    cap, snap = tmp_path / "dns6.pcap", tmp_path / "snap.json"
    dns6(cap)
    assert tshark_ok(cap) == ["1"] * 8  # every captured UDPv6 sum verifies
    snapshot(snap, ROSE)
    code, doc = pcap(tmp_path, "--snapshot", str(snap), str(cap))
    [s] = [x for x in doc["data"]["symptoms"] if x["kind"] == "udp6-csum-errors"]
    assert code == 1 and doc["status"] == "findings" and s["severity"] == "fail"
    assert [c["id"] for c in s["likely_causes"]] == ["KB-011"]
    assert s["flow"]["dst"] == DNS and s["flow"]["dport"] == 53 and s["count"] == 4
    assert s["details"]["receivers"] == {"dns": 4} and s["details"]["matched_by"] == "address"
    assert s["details"]["flows"] == 4 and s["details"]["captured_bad"] == 0
    assert "189c9b1e9453" in s["summary"] and "Udp6InCsumErrors" in s["summary"]
    assert doc["data"]["snapshot"] == {"file": str(snap), "namespaces_with_counters": 2}
    # the answers went to the client, whose counters did not move: no symptom for them
    assert len([x for x in doc["data"]["symptoms"] if x["kind"] == "udp6-csum-errors"]) == 1
    # without the snapshot the same capture is clean
    code, doc = pcap(tmp_path, str(cap))
    assert code == 0 and doc["data"]["symptoms"] == [] and doc["data"]["snapshot"] is None


@pytest.mark.parametrize("case", ["tcp-rose-too", "no-rise", "bad-sum-captured", "more-errors-than-bad-sums"])
def test_quiet(tmp_path: Path, case: str) -> None:
    cap, snap = tmp_path / "dns6.pcap", tmp_path / "snap.json"
    bad = case in ("bad-sum-captured", "more-errors-than-bad-sums")
    dns6(cap, corrupt=0 if bad else None)
    if bad:
        assert tshark_ok(cap).count("0") == 1
    first, second = ROSE
    if case == "tcp-rose-too":
        second = {**second, "TcpInCsumErrors": 9}
    if case == "no-rise":
        second = first
    if case == "bad-sum-captured":  # one error, and the capture holds the one bad sum that explains it
        second = {**second, "Udp6InCsumErrors": first["Udp6InCsumErrors"] + 1}
    snapshot(snap, (first, second))
    code, doc = pcap(tmp_path, "--snapshot", str(snap), str(cap))
    found = [x for x in doc["data"]["symptoms"] if x["kind"] == "udp6-csum-errors"]
    if case == "more-errors-than-bad-sums":  # 4 errors, 1 bad sum captured: 3 the wire does not explain
        [s] = found
        assert s["details"]["captured_bad"] == 1 and s["details"]["flows"] == 3 and s["count"] == 3
    else:
        assert found == []
    # otherwise the only way to a non-zero exit here is the one bad checksum the capture itself holds
    assert code == (1 if bad else 0)


def test_destination_in_no_namespace_is_a_warning(tmp_path: Path) -> None:
    cap, snap = tmp_path / "dns6.pcap", tmp_path / "snap.json"
    dns6(cap)
    snapshot(snap, ROSE, server_addr="2001:db8:99::1")  # the NAT'd address: the capture's DNS is nobody's
    code, doc = pcap(tmp_path, "--snapshot", str(snap), str(cap))
    [s] = [x for x in doc["data"]["symptoms"] if x["kind"] == "udp6-csum-errors"]
    assert s["severity"] == "warn" and s["details"]["matched_by"] == "none" and s["details"]["receivers"] == {"dns": 4}
    assert code == 0  # a warning is not a failure


def test_snapshot_errors(tmp_path: Path) -> None:
    cap = tmp_path / "dns6.pcap"
    dns6(cap, n=1)
    code, doc = pcap(tmp_path, "--snapshot", str(tmp_path / "missing.json"), str(cap))
    assert code == 3 and doc["errors"][0]["code"] == "snapshot.unreadable"
    (tmp_path / "x.json").write_text("{}")
    code, doc = pcap(tmp_path, "--snapshot", str(tmp_path / "x.json"), str(cap))
    assert code == 3 and doc["errors"][0]["code"] == "snapshot.not_a_snapshot"
    snapshot(tmp_path / "s.json", ROSE)
    code, doc = pcap(tmp_path, "--no-symptoms", "--snapshot", str(tmp_path / "s.json"), str(cap))
    assert code == 2 and doc["errors"][0]["code"] == "snapshot.without_symptoms"


def test_zero_outer_sum_note_keeps_exit_zero(tmp_path: Path) -> None:
    cap = tmp_path / "flannel.pcap"
    inner = Ether(**MAC) / IP(src="10.244.1.2", dst="10.244.2.3") / TCP(sport=40000, dport=80, flags="PA", seq=1) / Raw(b"x" * 40)
    pkts = []
    for i in range(3):
        p = Ether(bytes(Ether(**MAC) / IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=40000 + i, dport=8472) / VXLAN(vni=1) / inner))
        p[UDP].chksum = 0
        pkts.append(Ether(bytes(p)))
    wrpcap(str(cap), pkts)
    code, doc = pcap(tmp_path, str(cap))
    [s] = doc["data"]["symptoms"]
    assert code == 0 and doc["status"] == "ok"
    assert s["kind"] == "tunnel-zero-csum" and s["severity"] == "info" and s["details"]["zero"] == 3
    assert [c["id"] for c in s["likely_causes"]] == ["KB-016"]
    text = subprocess.run([*BADSUM, "pcap", str(cap)], check=False, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "tunnel-zero-csum" in text.stdout and "KB-016" in text.stdout
    lines = subprocess.run([*BADSUM, "pcap", "--jsonl", str(cap)], check=False, capture_output=True, text=True, timeout=60)
    assert lines.returncode == 0
    assert [json.loads(x)["kind"] for x in lines.stdout.splitlines() if '"symptom"' in x] == ["tunnel-zero-csum"]
