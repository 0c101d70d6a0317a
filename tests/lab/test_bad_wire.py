"""bad-wire on the real kernel, judged by oracles of its own: the relay's flip log against
tcpdump's verdicts and scapy's bytes in the captures, nstat's deltas, the application's hashes,
and `ip -j netns list` and /proc afterwards (nothing left behind)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from support import need_root, need_tool

from badsum.lab.result import ScenarioResult

pytestmark = pytest.mark.root

H1 = "198.51.100.1"
#: variant -> (port, the namespace whose TCP must drop the corrupt segments)
EXPECTED = {"routed": (9100, "c2"), "nat": (9200, "h2"), "nat-nocsum": (9300, "c2")}
_IP_LINE = re.compile(r"\bIP \(.*?\bid (?P<id>\d+),")
_TCP_LINE = re.compile(r"^\s+198\.51\.100\.1\.\d+ > [\d.]+\.(?P<port>\d+): .*?cksum 0x[0-9a-f]+ \((?P<v>correct|incorrect)"
                       r".*?\bseq (?P<seq>\d+)")  # fmt: skip


def tcpdump_verdicts(pcap: Path, port: int) -> dict[tuple[int, int], str]:
    """(IPv4 id, absolute seq) -> `correct` | `incorrect`, for h1's data segments to `port`."""
    r = subprocess.run(["tcpdump", "-n", "-vv", "-S", "-r", str(pcap), f"tcp and src host {H1} and port {port}"],
                       capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    out: dict[tuple[int, int], str] = {}
    ip_id = None
    for line in r.stdout.splitlines():
        if m := _IP_LINE.search(line):
            ip_id = int(m["id"])
        elif (m := _TCP_LINE.match(line)) and ip_id is not None and " length 0" not in line:
            out[(ip_id, int(m["seq"]))] = m["v"]
    return out


def frames_by_key(pcap: Path) -> dict[tuple[int, int], bytes]:
    from scapy.all import IP, TCP, rdpcap

    out = {}
    for pkt in rdpcap(str(pcap)):
        if IP in pkt and TCP in pkt and pkt[IP].src == H1:
            out.setdefault((pkt[IP].id, pkt[TCP].seq), bytes(pkt))
    return out


class Run(NamedTuple):
    result: ScenarioResult
    out: Path
    prefix: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    need_root()
    for tool in ("ip", "ethtool", "nstat", "tcpdump", "nft", "sysctl"):
        need_tool(tool)
    pytest.importorskip("scapy")
    from badsum.lab.scenarios.bad_wire import SCENARIO
    from badsum.lab.state import new_prefix

    out, prefix = tmp_path_factory.mktemp("bad-wire"), new_prefix()
    t0 = time.monotonic()
    result = SCENARIO.run(out, prefix=prefix)
    assert time.monotonic() - t0 < 30
    return Run(result, out, prefix)


def flips(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "relay-flips.jsonl").read_text().splitlines() if line]


def test_no_path_delivers_corrupt_data(run: Run) -> None:
    result = run.result
    from badsum.lab.agent import payload

    want = hashlib.sha256(payload(256 * 1024)).hexdigest()
    for label in EXPECTED:
        tcp = result.traffic[label]["tcp"]
        assert tcp["server"]["bytes"] == 256 * 1024, (label, tcp)
        assert tcp["server"]["sha256"] == tcp["client"]["sha256"] == want, label
    assert result.symptom_observed is False
    assert result.fix_applied is False
    assert "no path delivered corrupt data" in result.verdict


def test_flipped_segments_are_exactly_the_incorrect_ones_on_the_wire(run: Run) -> None:
    result, out, _ = run
    log = flips(out)
    for label, (port, _) in EXPECTED.items():
        mine = [e for e in log if e["dport"] == port]
        assert mine, f"{label}: the relay flipped nothing"
        flipped = {(e["ip_id"], e["seq"]) for e in mine}
        # Before the relay the kernel completed every sum (the tap has no offload) ...
        tap_in = tcpdump_verdicts(Path(result.captures[f"{label} sw:tapA"]), port)
        assert tap_in and set(tap_in.values()) == {"correct"}, label
        # ... after it, tcpdump calls exactly the flipped segments incorrect.
        wire = tcpdump_verdicts(Path(result.captures[f"{label} sw:p2"]), port)
        assert {k for k, v in wire.items() if v == "incorrect"} == flipped, label
        assert sum(v == "correct" for v in wire.values()) > 50, label
        # The log names the very byte: old value before the relay, new after, nothing else changed.
        before = frames_by_key(Path(result.captures[f"{label} sw:tapA"]))
        after = frames_by_key(Path(result.captures[f"{label} sw:p2"]))
        for e in mine:
            a, b = before[(e["ip_id"], e["seq"])], after[(e["ip_id"], e["seq"])]
            assert len(a) == len(b) == e["frame_len"]
            assert [i for i in range(len(a)) if a[i] != b[i]] == [e["offset"]]
            assert (a[e["offset"]], b[e["offset"]]) == (e["old"], e["new"]) and e["old"] ^ e["new"] == e["xor"]


def test_kernel_drops_them_where_expected(run: Run) -> None:
    result, out, _ = run
    log = flips(out)
    for label, (port, dropper) in EXPECTED.items():
        n = sum(e["dport"] == port for e in log)
        counters = result.traffic[label]["counters"]
        assert counters[dropper]["TcpInCsumErrors"] == n, (label, counters)
        other = "h2" if dropper == "c2" else "c2"
        assert counters[other]["TcpInCsumErrors"] == 0, (label, counters)
        assert counters["h1"]["TcpRetransSegs"] >= n, (label, counters)
        # Independently: do the corrupt segments reach the container's interface at all?
        at_c2 = tcpdump_verdicts(Path(result.captures[f"{label} c2:eth0"]), port)
        assert sum(v == "incorrect" for v in at_c2.values()) == (n if dropper == "c2" else 0), label
    assert result.traffic["nat"]["conntrack_invalid_h2"] >= sum(e["dport"] == 9200 for e in log)


def test_nothing_left_behind(run: Run) -> None:
    result, out, prefix = run
    names = [n["name"] for n in json.loads(subprocess.run(["ip", "-j", "netns", "list"], capture_output=True,
                                                          text=True, timeout=10, check=True).stdout or "[]")]  # fmt: skip
    assert not [n for n in names if n.startswith(prefix + "-")]
    relay = result.traffic["relay"]
    assert relay["exit"] == 0 and relay["summary"]["stopped_by"] == "SIGTERM"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            assert not (b"badsum.lab.relay" in cmd and str(out).encode() in b" ".join(cmd)), f"relay left running: {proc}"


def test_follow_places_the_corruption_after_the_relay_and_the_drop_where_nstat_counts(run: Run) -> None:
    """badsum follow (eBPF) in each phase: the first hop whose bytes are bad is the relay's
    output (sw:tapB, after sw:tapA where it read them); the TCP_CSUM drops are in the namespace
    whose TcpInCsumErrors rose (nstat), as many."""
    result, _, _ = run
    for label, (port, dropper) in EXPECTED.items():
        data = result.follow.get(label)
        assert data is not None and "not_run" not in data, f"badsum follow did not run in {label}: {data}"
        bad = [f["first_bad_hop"] for f in data["flows"] if f["first_bad_hop"]]
        assert bad, (label, data["summary"])
        assert {(b["after"], b["before"], b["kind"]) for b in bad} == {("sw:tapA", "sw:tapB", "bad")}, (label, bad)
        counters = result.traffic[label]["counters"]
        for ns in ("h2", "c2"):
            seen = sum(d["count"] for d in data["drops"] if d["reason"] == "TCP_CSUM" and d["namespace"] == ns)
            assert seen == counters[ns]["TcpInCsumErrors"], (label, ns, seen, counters[ns])
        assert sum(d["count"] for d in data["drops"] if d["reason"] == "TCP_CSUM" and d["namespace"] == dropper) > 0
