"""The fast path and the detailed decoder give the same verdicts on every packet (DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import write_zoo
from support import RowCollector, corpus_files, own_captures

from badsum.analyze import ScanConfig, Scanner
from badsum.capture import open_capture

KEY = ["frame", "layer", "depth", "status", "offset", "stored", "computed", "flags", "extra", "ipver", "proto", "sport", "dport", "src", "dst"]


def scan(path: Path, fast: bool, jobs: int = 1):  # noqa: ANN201
    sink = RowCollector()
    scanner = Scanner(ScanConfig(fast=fast, jobs=jobs), [sink])
    with open_capture(path, chunk_size=1 << 16) as reader:  # small chunks: many batches
        summary = scanner.run(reader)
    rows = np.concatenate(sink.parts) if sink.parts else np.zeros(0)
    return summary, sorted(map(tuple, rows[KEY].tolist())) if len(rows) else []


def assert_same(path: Path) -> int:
    fast, fast_rows = scan(path, True)
    slow, slow_rows = scan(path, False)
    assert np.array_equal(fast.counts, slow.counts), np.argwhere(fast.counts != slow.counts)
    assert fast_rows == slow_rows
    assert fast.packets == slow.packets
    return fast.packets - fast.deferred


@pytest.mark.corpus
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_paths_agree(path: Path) -> None:
    assert_same(path)


@pytest.mark.parametrize("path", own_captures(), ids=lambda p: p.name)
def test_own_captures_paths_agree(path: Path) -> None:
    assert assert_same(path) > 0


def test_zoo_paths_agree_and_fast_path_did_the_work(tmp_path: Path) -> None:
    p = tmp_path / "zoo.pcap"
    write_zoo(p)
    judged_fast = assert_same(p)
    assert judged_fast >= 15  # most zoo frames are common cases the C scanner must judge itself


def test_jobs_give_the_same_result(tmp_path: Path) -> None:
    p = tmp_path / "zoo.pcap"
    write_zoo(p)
    one, rows1 = scan(p, True, jobs=1)
    two, rows2 = scan(p, True, jobs=3)
    assert np.array_equal(one.counts, two.counts) and rows1 == rows2


def _batch(frames: list[tuple[bytes, int, int]]):  # noqa: ANN202 - (data, linktype, tp_status)
    from badsum.scan.batch import Batch

    buf = b"".join(f for f, _, _ in frames)
    offs = np.cumsum([0] + [len(f) for f, _, _ in frames[:-1]]).astype(np.int64)
    n = len(frames)
    lens = np.array([len(f) for f, _, _ in frames], dtype=np.uint32)
    return Batch(
        buf, 1, offs, lens, lens.copy(), np.zeros(n, np.int64),
        np.array([lt for _, lt, _ in frames], np.uint16), np.zeros(n, np.uint32),
        np.array([tp for _, _, tp in frames], np.uint32), np.zeros(n, np.uint8), np.zeros(n, np.int64),
    )  # fmt: skip


def test_kernel_status_and_sll_vlan_agree() -> None:
    from builders import zoo
    from scapy.all import IP, TCP, Dot1Q, Ether, Raw

    from badsum.checksum.verdict import TP_STATUS_CSUM_VALID, TP_STATUS_CSUMNOTREADY, TP_STATUS_GSO_TCP
    from badsum.scan.rows import verdicts_to_rows

    big = Ether(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=2) / Raw(b"x" * 3000)))
    big[TCP].chksum ^= 0x1111
    big = bytes(big)
    bad = next(c.frame for c in zoo() if c.name == "tcp4-bad")
    # SLL header (16 bytes) whose protocol is a VLAN tag libpcap re-inserted, then the tag and IPv4.
    sll = b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 6 + b"\x00\x00" + b"\x81\x00"
    inner = bytes(Dot1Q(vlan=5) / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=3, dport=4))
    frames = [
        (big, 1, TP_STATUS_CSUMNOTREADY | TP_STATUS_GSO_TCP),
        (bad, 1, TP_STATUS_CSUM_VALID),
        (bad, 1, TP_STATUS_CSUMNOTREADY),
        (sll + inner, 113, 0xFFFFFFFF),
    ]
    batch = _batch(frames)
    fast = Scanner(ScanConfig()).fast.scan(batch)
    assert len(fast.deferred) == 0  # the C scanner judged all four itself
    from badsum.checksum.detailed import DetailedJudge

    judge = DetailedJudge()
    verdicts = [v for i, (f, lt, tp) in enumerate(frames) for v in judge.judge(i + 1, 0, f, len(f), lt, tp).verdicts]
    slow = verdicts_to_rows(verdicts)
    assert sorted(map(tuple, fast.issues[KEY].tolist())) == sorted(map(tuple, slow[KEY].tolist()))
    assert {(int(r["frame"]), int(r["status"]), int(r["flags"])) for r in slow} == {(1, 2, 0x01 | 0x02), (3, 2, 0x02)}
    assert any(v.frame == 4 and v.layer.label == "tcp" and v.status.label == "ok" for v in verdicts)


def _lco_frame() -> bytes:
    """A VXLAN frame as the sending host holds it with local checksum offload: the outer UDP sum
    is the finished packet's (scapy computes it), the inner TCP field still holds the
    pseudo-header sum."""
    from scapy.all import IP, TCP, UDP, VXLAN, Ether, Raw, raw

    inner = Ether(src="02:00:00:00:0c:01", dst="02:00:00:00:0c:02") / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(
        sport=5, dport=6, flags="PA") / Raw(b"abcd")  # fmt: skip
    done = Ether(raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.51.100.1", dst="198.51.100.2")
                     / UDP(sport=40000, dport=4789) / VXLAN(vni=7) / inner))  # fmt: skip
    data = bytearray(raw(done))
    tcp_at = 14 + 20 + 8 + 8 + 14 + 20
    tcp_len = len(data) - tcp_at
    from badsum.checksum import inet

    pseudo = inet.pseudo_v4(bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 6, tcp_len)
    data[tcp_at + 16 : tcp_at + 18] = pseudo.to_bytes(2, "big")
    return bytes(data)


def test_lco_outer_udp_is_pending_with_the_inner_sum_in_both_paths() -> None:
    """Local checksum offload: with TP_STATUS_CSUMNOTREADY the outer UDP sum that verifies once the
    inner sum is filled in is pending (kernel), in the C scanner and the decoder alike; without the
    kernel's word it is bad (only the bytes speak)."""
    from badsum.checksum.detailed import DetailedJudge
    from badsum.checksum.verdict import TP_STATUS_CSUMNOTREADY, Layer, Status
    from badsum.scan.rows import verdicts_to_rows

    lco = _lco_frame()
    broken = bytearray(lco)
    broken[14 + 20 + 6] ^= 0x01  # an outer sum that is wrong even after the fill
    frames = [(lco, 1, TP_STATUS_CSUMNOTREADY), (lco, 1, 0xFFFFFFFF), (bytes(broken), 1, TP_STATUS_CSUMNOTREADY)]
    fast = Scanner(ScanConfig()).fast.scan(_batch(frames))
    judge = DetailedJudge()
    verdicts = [v for i, (f, lt, tp) in enumerate(frames) for v in judge.judge(i + 1, 0, f, len(f), lt, tp).verdicts]
    slow = verdicts_to_rows(verdicts)
    assert sorted(map(tuple, fast.issues[KEY].tolist())) == sorted(map(tuple, slow[KEY].tolist()))
    outer = {v.frame: v.status for v in verdicts if v.layer == Layer.UDP and v.depth == 0}
    assert outer == {1: Status.PARTIAL, 2: Status.BAD, 3: Status.BAD}


@pytest.mark.parametrize("vxlan_ports", [(), (1234,), (6081, 4754, 9999)])
def test_both_paths_read_one_port_table(vxlan_ports: tuple[int, ...]) -> None:
    """The C port table is the decoder's PortTable, port for port, also when a user's VXLAN port
    is a default port of another tunnel (the user wins in both)."""
    from badsum.flows.extract import FactExtractor

    scanner = Scanner(ScanConfig(vxlan_ports=vxlan_ports))
    want = np.array([int(scanner.ports.kind(p)) for p in range(65536)], np.uint8)
    assert np.array_equal(scanner.fast._ports, want)
    assert np.array_equal(FactExtractor(vxlan_ports)._table, want)
    assert scanner.facts is not None and scanner.facts._ports is scanner.ports and np.array_equal(scanner.facts._table, want)
    for p in vxlan_ports:
        assert want[p] == 1  # UDPTunnel.VXLAN


def test_a_user_vxlan_port_on_the_geneve_port_agrees(tmp_path: Path) -> None:
    from scapy.all import IP, TCP, UDP, VXLAN, Ether, raw

    inner = Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=2, chksum=0x1234)
    frame = raw(Ether() / IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=40000, dport=6081) / VXLAN(vni=5) / inner)
    batch = _batch([(frame, 1, 0xFFFFFFFF)])
    config = ScanConfig(vxlan_ports=(6081,))
    fast = Scanner(config).fast.scan(batch)
    from badsum.checksum.detailed import DetailedJudge
    from badsum.scan.rows import verdicts_to_rows

    slow = verdicts_to_rows(DetailedJudge(Scanner(config).ports).judge(1, 0, frame, len(frame), 1).verdicts)
    assert len(fast.deferred) == 0  # read as VXLAN by the C scanner, as the user asked
    assert sorted(map(tuple, fast.issues[KEY].tolist())) == sorted(map(tuple, slow[KEY].tolist()))
    assert any(int(r["depth"]) == 1 for r in slow)


def _jsonl(path: Path, jobs: int, chunk: int = 1 << 12) -> tuple[str, list, dict]:
    from io import StringIO

    from badsum.report.sinks import JsonLinesSink

    out = StringIO()
    scanner = Scanner(ScanConfig(jobs=jobs), [JsonLinesSink(out)])
    with open_capture(path, chunk_size=chunk) as reader:  # tiny chunks: many batches in flight
        summary = scanner.run(reader)
    return out.getvalue(), summary.symptoms, summary.flow_stats


@pytest.mark.parametrize("jobs", [2, 4])
def test_jsonl_and_symptoms_the_same_with_jobs(tmp_path: Path, jobs: int) -> None:
    # The reader runs on its own thread with --jobs: records, their order and the flow analysis
    # must not notice.
    paths = [tmp_path / "zoo.pcap", *own_captures()]
    write_zoo(paths[0])
    for p in paths:
        one = _jsonl(p, 1)
        assert one[0] and _jsonl(p, jobs) == one, p.name


def test_jobs_keep_the_packets_before_damage(tmp_path: Path) -> None:
    p = tmp_path / "zoo.pcap"
    write_zoo(p)
    cut = tmp_path / "cut.pcap"
    data = p.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with open_capture(cut, chunk_size=1 << 12) as r1:
        s1 = Scanner(ScanConfig(jobs=1)).run(r1)
        e1 = [(e.code, e.offset) for e in r1.errors]
    with open_capture(cut, chunk_size=1 << 12) as r2:
        s2 = Scanner(ScanConfig(jobs=2)).run(r2)
        e2 = [(e.code, e.offset) for e in r2.errors]
    assert e1 and e1 == e2 and s1.packets == s2.packets and np.array_equal(s1.counts, s2.counts)


def test_jobs_stop_when_a_sink_fails(tmp_path: Path) -> None:
    import threading

    class Fails:
        def rows(self, batch, rows) -> None:  # noqa: ANN001
            raise BrokenPipeError

        def late_rows(self, rows) -> None:  # noqa: ANN001
            pass

    p = tmp_path / "zoo.pcap"
    write_zoo(p)
    with open_capture(p, chunk_size=1 << 10) as reader, pytest.raises(BrokenPipeError):
        Scanner(ScanConfig(jobs=2), [Fails()]).run(reader)
    assert not [t for t in threading.enumerate() if t.name == "badsum-read"]
