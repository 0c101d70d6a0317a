"""The relay: its flip logic, pure (frames built by scapy, an independent builder, flipped by
badsum.lab.relay, then judged by scapy again: one byte changed, no checksum fixed); and the
process (it refuses to run outside a lab namespace, keeps its bounds, and takes its taps along)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import need_root, need_tool

pytest.importorskip("scapy")
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw

from badsum.lab.relay import Corrupter, FlipRule, flip_frame, lab_netns, tcp_segment

PAYLOAD = bytes(range(256)) * 2


def v4_frame(payload: bytes = PAYLOAD, dport: int = 9100, seq: int = 1000, ip_id: int = 77) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.51.100.1", dst="203.0.113.2", id=ip_id, flags="DF")
                 / TCP(sport=40000, dport=dport, seq=seq, flags="PA", options=[("NOP", None), ("NOP", None),
                                                                              ("Timestamp", (1, 2))])
                 / Raw(payload))  # fmt: skip


def v6_frame(payload: bytes = PAYLOAD) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=40000, dport=9100, seq=5) / Raw(payload))


def recomputed(frame: bytes) -> tuple[int | None, int]:
    """(IPv4 header checksum, TCP checksum) as scapy computes them for these bytes."""
    pkt = Ether(frame)
    l3 = pkt[IP] if IP in pkt else pkt[IPv6]
    if IP in pkt:
        del l3.chksum
    del pkt[TCP].chksum
    again = Ether(bytes(pkt))
    return (again[IP].chksum if IP in again else None), again[TCP].chksum


@pytest.mark.parametrize("build", [v4_frame, v6_frame], ids=["ipv4", "ipv6"])
def test_flip_changes_one_payload_byte_and_fixes_no_checksum(build: Callable[[], bytes]) -> None:
    frame = build()
    new, entry = flip_frame(frame, 100, 0x01)
    assert len(new) == len(frame)
    diff = [i for i in range(len(frame)) if frame[i] != new[i]]
    assert diff == [entry["offset"]]
    # The offset is the payload's 101st byte, wherever scapy put the payload.
    assert entry["offset"] == len(frame) - len(PAYLOAD) + 100
    assert (entry["old"], entry["new"]) == (frame[entry["offset"]], new[entry["offset"]]) == (PAYLOAD[100], PAYLOAD[100] ^ 1)

    before, after = Ether(frame), Ether(new)
    assert after[TCP].chksum == before[TCP].chksum == entry["tcp_checksum"]  # stored sum untouched
    assert recomputed(frame)[1] == before[TCP].chksum  # scapy's frame was right...
    assert recomputed(new)[1] != after[TCP].chksum  # ...and the flipped one is not
    if IP in before:
        assert after[IP].chksum == before[IP].chksum == recomputed(new)[0]  # the IP header was not touched
        assert entry["ip_id"] == before[IP].id
    assert entry["seq"] == before[TCP].seq
    assert entry["byte_seq"] == before[TCP].seq + 100
    assert (entry["sport"], entry["dport"], entry["payload_len"]) == (40000, 9100, len(PAYLOAD))


def test_flip_refuses_what_it_cannot_flip() -> None:
    assert flip_frame(v4_frame(b"short"), 100) is None  # payload shorter than the offset
    assert flip_frame(v4_frame(b""), 0) is None  # no payload
    udp = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.51.100.1", dst="203.0.113.2") / UDP(sport=1, dport=2) / Raw(PAYLOAD))
    assert flip_frame(udp, 100) is None
    frag = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.51.100.1", dst="203.0.113.2", flags="MF") / TCP() / Raw(PAYLOAD))
    assert flip_frame(frag, 100) is None
    with pytest.raises(ValueError):
        flip_frame(v4_frame(), 100, 0)


def test_truncated_and_garbage_frames_never_raise() -> None:
    frame = v4_frame()
    for cut in range(len(frame)):
        seg = tcp_segment(frame[:cut])
        assert seg is None or seg.payload_at + seg.payload_len <= cut
        flip_frame(frame[:cut] + b"\xff" * 7, 3)


def test_corrupter_flips_every_nth_data_segment_up_to_the_limit() -> None:
    c = Corrupter(FlipRule(every=3, offset=10, xor=0x80, max_flips=2, ports=frozenset({9100})))
    flipped = []
    for i in range(12):
        frame = v4_frame(seq=1000 + i * len(PAYLOAD), ip_id=i)
        new, entry = c.process(frame, i)
        assert (entry is None) == (new == frame)
        if entry:
            flipped.append((entry["frame"], entry["segment"], entry["flow_flip"], entry["ip_id"]))
        # Pure ACKs and other ports neither count nor get flipped.
        assert c.process(v4_frame(b""), 100 + i) == (v4_frame(b""), None)
        assert c.process(v4_frame(dport=9999), 200 + i)[1] is None
    assert flipped == [(2, 3, 1, 2), (5, 6, 2, 5)]
    assert c.total == 2


# -- the process: refuses to run outside a lab namespace; bounded; taps vanish with it -------------


def relay_argv(log: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "badsum.lab.relay", "--tap-a", "tapA", "--tap-b", "tapB", "--log", str(log), *extra]


def test_relay_refuses_to_run_outside_a_lab_namespace(tmp_path: Path) -> None:
    if lab_netns() is not None:
        pytest.skip("this test process itself runs in a lab namespace")
    r = subprocess.run(relay_argv(tmp_path / "flips.jsonl", "--timeout", "1"), capture_output=True, text=True,
                       timeout=20, check=False)  # fmt: skip
    assert r.returncode == 2 and "refusing" in r.stderr
    assert "READY" not in r.stdout


@pytest.mark.root
def test_relay_stops_on_its_deadline_and_on_sigint(tmp_path: Path) -> None:
    need_root()
    need_tool("ip")
    from badsum.lab.lab import Lab
    from badsum.lab.runner import wait_for
    from badsum.lab.topology import Topology

    def taps(lab: Lab) -> set[str]:
        links = json.loads(lab.exec("sw", ["ip", "-j", "link", "show"]).stdout)
        return {ln["ifname"] for ln in links} & {"tapA", "tapB"}

    with Lab(Topology(name="relay", namespaces=["sw"]), scenario="relay-test", out=tmp_path) as lab:
        p = lab.spawn("relay-deadline", "sw", relay_argv(tmp_path / "a.jsonl", "--timeout", "1"))
        assert p.proc.wait(10) == 0
        assert json.loads(p.output().splitlines()[-1])["stopped_by"] == "timeout"
        assert taps(lab) == set()

        p = lab.spawn("relay-sigint", "sw", relay_argv(tmp_path / "b.jsonl", "--timeout", "30"))
        wait_for(lambda: "READY" in p.output() or not p.alive(), 10, what="relay")
        assert taps(lab) == {"tapA", "tapB"}
        t0 = time.monotonic()
        assert p.stop(signal.SIGINT) == 0
        assert time.monotonic() - t0 < 2
        assert json.loads(p.output().splitlines()[-1])["stopped_by"] == "SIGINT"
        assert taps(lab) == set()
