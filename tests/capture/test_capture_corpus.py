"""Real captures from other projects (../shared/captures): counts, lengths, bytes and times agree
with independent readers (tshark's recorded output, scapy, and tshark itself when installed)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import warnings
from decimal import Decimal
from pathlib import Path

import pytest
from capfiles import CORPUS, corpus_dir

from badsum.capture import Batch, CaptureReader, open_capture

pytestmark = pytest.mark.corpus


def manifest_rows() -> list[dict[str, str]]:
    path = CORPUS / "manifest.csv"
    if not path.is_file():
        return [{"file": "(corpus absent)"}]
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


ROWS = manifest_rows()


def is_damaged(row: dict[str, str]) -> bool:
    return "capinfos failed" in row["file_format"] or "damaged" in row["notes"].lower()


def read(path: Path, **kw: int) -> tuple[CaptureReader, list[tuple[Batch, int]]]:
    with open_capture(path, **kw) as reader:
        batches = list(reader)
    return reader, [(b, i) for b in batches for i in range(len(b))]


def tshark_lengths(name: str, expected: int) -> list[tuple[int, int]]:
    """(frame.len, frame.cap_len) per packet from tshark's recorded run over the corpus."""
    with (corpus_dir() / "tshark" / f"{name}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) > expected:  # tshark 4 shows pcapng custom blocks as frames of "data"
        rows = [r for r in rows if r["frame.protocols"] != "data"]
    return [(int(r["frame.len"]), int(r["frame.cap_len"])) for r in rows]


def scapy_packets(path: Path) -> list[tuple[bytes, int | None]]:
    """(bytes, ts_ns or None) per packet, from scapy's raw readers (asked not to cut packets
    at its default 1500-byte MTU)."""
    from scapy.utils import RawPcapNgReader, RawPcapReader

    out: list[tuple[bytes, int | None]] = []
    ng = path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with (RawPcapNgReader if ng else RawPcapReader)(str(path)) as r:
            while True:
                try:
                    data, m = r._read_packet(size=1 << 20)
                except EOFError:
                    break
                if ng:
                    ts = None if m.tshigh is None else ((m.tshigh << 32) | m.tslow) * 10**9 // m.tsresol
                else:
                    ts = m.sec * 10**9 + m.usec * (1 if r.nano else 1000)
                out.append((data, ts))
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_corpus_file(row: dict[str, str]) -> None:
    path = corpus_dir() / row["file"]
    expected = int(row["packet_count"])
    reader, packets = read(path)
    lengths = [(int(b.origlen[i]), int(b.caplen[i])) for b, i in packets]
    recorded = tshark_lengths(row["file"], expected)
    theirs = scapy_packets(path)
    if is_damaged(row):
        # Packets before the damage are kept, and the damage is reported, not raised.
        assert 1 <= len(packets) <= expected
        assert reader.errors, "damage must be recorded"
        assert lengths == recorded[: len(packets)]
    else:
        assert len(packets) == expected and not reader.errors, reader.errors
        assert lengths == recorded
        assert len(theirs) == expected
    for (b, i), (data, ts) in zip(packets, theirs, strict=False):
        if ts is None:  # an SPB: scapy caps it with the first section's snaplen, tshark agrees with us
            assert b.packet(i).startswith(data) and int(b.ts_ns[i]) == 0
        else:
            assert b.packet(i) == data
            assert int(b.ts_ns[i]) == ts


@pytest.mark.parametrize("row", ROWS[:1])
def test_corpus_small_chunks_agree(row: dict[str, str]) -> None:
    """Every file read with 1000-byte chunks and 7-packet batches gives the same packets."""
    directory = corpus_dir()
    for path in sorted(directory.glob("*.pcap*")):
        reader, packets = read(path)
        small_reader, small = read(path, chunk_size=1000, batch_packets=7)
        assert [b.packet(i) for b, i in small] == [b.packet(i) for b, i in packets], path.name
        assert [int(b.file_offset[i]) for b, i in small] == [int(b.file_offset[i]) for b, i in packets]
        assert small_reader.errors == reader.errors


def test_known_damage_is_named() -> None:
    directory = corpus_dir()
    reader, packets = read(directory / "suricata-verify__bug-6875-01__fuzz.pcap")
    # libpcap (what suricata reads with) also stops after one packet: record 2 claims far more
    # than any snaplen. tshark's recovery heuristics count one more.
    assert len(packets) == 1 and [e.code for e in reader.errors] == ["pcap.record_too_large"]
    reader, packets = read(directory / "gopacket__test901.pcapng")
    assert len(packets) == 1 and [e.code for e in reader.errors] == ["pcapng.unsupported_version"]
    assert "2.0" in reader.errors[0].message


def test_multi_section_corpus_file_interfaces() -> None:
    reader, packets = read(corpus_dir() / "pcapng-test-generator__le_test202.pcapng")
    assert [s.byte_order for s in reader.sections] == ["little", "big", "little"]
    assert [int(b.interface[i]) for b, i in packets] == [0, 0, 1, 2, 2, 2, 2, 4]
    assert [int(b.linktype[i]) for b, i in packets] == [1, 1, 0, 1, 1, 1, 1, 0]
    assert reader.skipped_blocks == {"NRB": 5, "CB": 1, "ISB": 4, "DCB": 2}


@pytest.mark.tools
def test_pcapng_times_match_live_tshark() -> None:
    """tshark applies if_tsresol itself; our ts_ns must agree to the nanosecond."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark not on PATH")
    for path in sorted(corpus_dir().glob("*.pcapng")):
        fields = ["-e", "frame.interface_id", "-e", "frame.time_epoch"]
        args = ["tshark", "-n", "-r", str(path), "-T", "fields", *fields]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        times = []
        for line in out.stdout.splitlines():
            iface, _, epoch = line.partition("\t")
            if iface:  # frames without an interface are custom blocks
                times.append(int(Decimal(epoch) * 10**9) if epoch else 0)
        _, packets = read(path)
        assert [int(b.ts_ns[i]) for b, i in packets] == times[: len(packets)], path.name


def test_frame_numbers_are_tsharks_on_every_pcapng_corpus_file() -> None:
    """`frame` is 1-based "as tshark counts": tshark numbers pcapng custom blocks as frames, so a
    packet after one keeps tshark's number (le_test202: the bad IPv4 sums are frames 3, 6, 9).
    Oracle: tshark's recorded frame.number of every IPv4 header with a bad checksum."""
    checked = 0
    for path in sorted(corpus_dir().glob("*.pcapng*")):  # numbering differs only where blocks hold no packet
        baseline = corpus_dir() / "tshark" / f"{path.name}.csv"
        if not baseline.exists():
            continue
        with baseline.open() as f:
            rows = list(csv.DictReader(f))
        want = sorted(int(r["frame.number"]) for r in rows if "0" in r["ip.checksum.status"].split("|"))
        # Frames tshark dissected as IPv4 at all (a fuzzed frame it leaves as "data" is not a numbering question).
        ip_frames = {int(r["frame.number"]) for r in rows if r["ip.checksum.status"]}
        r = subprocess.run([sys.executable, "-m", "badsum", "pcap", "--jsonl", str(path)], capture_output=True,
                           text=True, timeout=120, check=False)  # fmt: skip
        # Any non-ok IPv4 verdict: badsum calls a TSO header (length and sum 0) `partial` where tshark says bad.
        got = sorted({json.loads(ln)["frame"] for ln in r.stdout.splitlines() if '"layer":"ipv4"' in ln} & ip_frames)
        assert got == want, path.name
        checked += len(want)
    assert checked >= 3  # le_test202's three at least
