"""`doctor --html` and `trace --html` from the command line: the file, exit codes, dot missing,
refused and failed writes (nothing half-written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scapy.all import Ether, wrpcap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trace"))
from tracekit import MAC2, tcp_frame

REPO = Path(__file__).resolve().parents[2]
KB005 = REPO / "tests" / "rules" / "fixtures" / "KB-005" / "fire-netdev-veth.json"
CLEAN = REPO / "tests" / "rules" / "fixtures" / "clean-host.json"
BADSUM = [sys.executable, "-m", "badsum"]
A, B, NAT = "192.0.2.1", "198.51.100.2", "203.0.113.1"


def badsum(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BADSUM, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=env, check=False)  # fmt: skip


def nat_captures(tmp_path: Path) -> list[str]:
    before = tcp_frame(A, B, 40000, 80, bytes(200))
    stale = tcp_frame(NAT, B, 50000, 80, bytes(200), ttl=63, mac=MAC2, chksum=Ether(before)["TCP"].chksum)
    out = []
    for label, frame in (("c1:eth0", before), ("host:eth0", stale), ("host:eth1", stale)):
        path = tmp_path / f"{label.replace(':', '_')}.pcap"
        wrpcap(str(path), [Ether(frame)])
        out.append(f"{label}={path}")
    return out


def test_doctor_html_writes_the_map_and_keeps_the_exit_code(tmp_path: Path) -> None:
    page = tmp_path / "map.html"
    r = badsum("doctor", "--from", KB005, "--html", page, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["data"]["html"] == str(page) and doc["errors"] == []
    text = page.read_text()
    assert "<svg" in text and 'class="node flagged"' in text and "<title>host:c1&#45;veth</title>" in text
    assert [p.name for p in tmp_path.iterdir()] == ["map.html"]  # no temporary file left beside it
    assert badsum("doctor", "--from", CLEAN, "--html", tmp_path / "clean.html").returncode == 0
    assert "nothing wrong found" in (tmp_path / "clean.html").read_text()


def test_doctor_html_without_dot_exits_3_at_once_and_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    page = tmp_path / "map.html"
    r = badsum("doctor", "--from", KB005, "--html", page, env={**os.environ, "PATH": str(empty)})
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "dot" in r.stderr and "graphviz" in r.stderr
    assert not page.exists() and list(tmp_path.iterdir()) == [empty]
    j = badsum("doctor", "--from", KB005, "--html", page, "--json", env={**os.environ, "PATH": str(empty)})
    assert j.returncode == 3 and json.loads(j.stdout)["errors"][0]["code"] == "html.no_dot"


def test_doctor_html_refuses_a_device_and_reports_a_failed_write(tmp_path: Path) -> None:
    r = badsum("doctor", "--from", KB005, "--html", "/dev/null")
    assert r.returncode == 2 and "--html /dev/null" in r.stderr
    r = badsum("doctor", "--from", KB005, "--html", tmp_path / "no" / "such" / "map.html")
    assert r.returncode == 3 and "cannot write" in r.stderr
    assert "FAIL" in r.stdout  # the report itself is still printed


def test_trace_html_names_the_first_bad_hop(tmp_path: Path) -> None:
    page = tmp_path / "path.html"
    r = badsum("trace", "--html", page, *nat_captures(tmp_path))
    assert r.returncode == 1, r.stderr
    text = page.read_text()
    assert 'class="hop bad first-bad" data-point="host:eth0"' in text and "nat-stale" in text


def test_trace_html_refused_and_failed_writes(tmp_path: Path) -> None:
    points = nat_captures(tmp_path)
    assert badsum("trace", "--html", "/dev/null", *points).returncode == 2
    r = badsum("trace", "--json", "--html", tmp_path / "missing" / "p.html", *points)
    assert r.returncode == 3 and json.loads(r.stdout)["errors"][0]["code"] == "html.cannot_write"


def test_follow_html_refuses_a_device_before_loading_anything() -> None:
    r = badsum("follow", "--html", "/dev/null", "-d", "1")
    assert r.returncode == 2 and "--html /dev/null" in r.stderr


def test_pcap_html_writes_the_ladder_and_refuses_bad_targets(tmp_path: Path) -> None:
    ladder = REPO / "tests" / "data" / "syn-ladder-63s.pcap"
    page = tmp_path / "pcap.html"
    r = badsum("pcap", "--html", page, ladder)
    assert r.returncode == 1, r.stderr  # the 64-second connect is a failing symptom
    assert page.read_text().count('<circle class="send"') == 7
    assert badsum("pcap", "--html", "/dev/null", ladder).returncode == 2
    assert badsum("pcap", "--html", ladder, ladder).returncode == 2  # never over the input
    r = badsum("pcap", "--json", "--html", tmp_path / "no" / "p.html", ladder)
    assert r.returncode == 3 and "html.cannot_write" in r.stdout


def test_docs_cover_html() -> None:
    docs = (REPO / "docs" / "cli.md").read_text()
    assert "### `doctor --html`" in docs and "### `trace --html`" in docs
    for command in ("trace", "doctor", "follow", "pcap"):
        assert "[--html FILE]" in docs.split(f"## `badsum {command}`")[1].split("\n## ")[0], command
