"""`badsum trace` from the command line: files written with scapy, the envelope, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scapy.all import Ether, wrpcap
from tracekit import MAC2, tcp_frame

from badsum.cli.main import main

A, B, NAT = "192.0.2.1", "198.51.100.2", "203.0.113.1"
DATA = bytes(range(200))


def _write(path: Path, frames: list[bytes]) -> str:
    wrpcap(str(path), [Ether(f) for f in frames])
    return str(path)


def test_json_envelope_names_the_nat_hop(tmp_path: Path, capsys) -> None:
    before = tcp_frame(A, B, 40000, 80, DATA)
    stale = tcp_frame(NAT, B, 50000, 80, DATA, ttl=63, mac=MAC2, chksum=Ether(before)["TCP"].chksum)
    a, b = _write(tmp_path / "a.pcap", [before]), _write(tmp_path / "b.pcap", [stale])
    code = main(["trace", "--json", f"c1:eth0={a}", f"host:eth0={b}"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["command"] == "trace" and doc["status"] == "findings"
    (flow,) = doc["data"]["flows"]
    assert flow["flow"] == {"src": A, "dst": B, "proto": 6, "sport": 40000, "dport": 80}
    assert [h["point"] for h in flow["hops"]] == ["c1:eth0", "host:eth0"]
    fb = flow["first_bad_hop"]
    assert (fb["after"], fb["before"], fb["kind"]) == ("c1:eth0", "host:eth0", "nat-stale")


def test_text_report_and_bare_file_labels(tmp_path: Path, capsys) -> None:
    f = tcp_frame(A, B, 40000, 80, DATA)
    a, b = _write(tmp_path / "first.pcap", [f]), _write(tmp_path / "second.pcap", [f])
    assert main(["trace", "-v", a, b]) == 0
    out = capsys.readouterr().out
    assert "path: first -> second" in out and "no packet went bad" in out


def test_unreadable_capture_and_duplicate_labels(tmp_path: Path, capsys) -> None:
    assert main(["trace", "x:eth0=" + str(tmp_path / "missing.pcap")]) == 3
    a = _write(tmp_path / "a.pcap", [tcp_frame(A, B, 40000, 80, DATA)])
    assert main(["trace", f"p={a}", f"p={a}"]) == 2
    assert main(["trace", "--snapshot", str(tmp_path / "nope.json"), a]) == 3
    capsys.readouterr()


def test_max_packets_bounds_what_is_read(tmp_path: Path) -> None:
    # Tracing keeps decoded packets in memory; --max-packets bounds it per point and says so.
    from scapy.all import IP, TCP, Ether, wrpcap

    frames = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2", id=i) / TCP(sport=1000, dport=80, seq=i) for i in range(10)]
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    wrpcap(str(a), frames)
    wrpcap(str(b), frames)
    r = subprocess.run([sys.executable, "-m", "badsum", "trace", "--json", "--max-packets", "4", str(a), str(b)],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    doc = json.loads(r.stdout)
    notes = doc["data"]["notes"]
    assert sum("only its first 4 packets" in n for n in notes) == 2, notes
    assert sum(h["seen"] for f in doc["data"]["flows"] for h in f["hops"][:1]) == 4
