"""Bounded memory on a large capture, framing speed, and no file-descriptor leaks."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from capfiles import rich_pcapng, simple_pcap

from badsum.capture import CaptureOpenError, open_capture
from badsum.capture.pcapng_writer import PcapngWriter

SRC = Path(__file__).resolve().parents[2] / "src"
SIZES = np.array([60, 66, 74, 1514, 590, 1434, 54, 200], dtype=np.int64)


def write_big_pcap(path: Path, target_bytes: int, sizes: np.ndarray = SIZES) -> int:
    """A valid pcap of about target_bytes, written in vectorised blocks; returns packets."""
    block_packets = 1 << 16
    lengths = np.resize(sizes, block_packets)
    rec = lengths + 16
    starts = np.concatenate([[0], np.cumsum(rec)[:-1]])
    block_bytes = int(rec.sum())
    data = np.random.default_rng(1).integers(0, 256, block_bytes, dtype=np.uint8)
    header = np.zeros(
        block_packets, dtype=[("sec", "<u4"), ("usec", "<u4"), ("caplen", "<u4"), ("origlen", "<u4")]
    )
    header["caplen"] = header["origlen"] = lengths
    packets = 0
    with path.open("wb") as f:
        f.write(np.array([0xA1B2C3D4], "<u4").tobytes() + np.array([2, 4], "<u2").tobytes()
                + np.array([0, 0, 65535, 1], "<u4").tobytes())  # fmt: skip
        while packets * (block_bytes / block_packets) < target_bytes:
            header["sec"] = 1_700_000_000 + (packets + np.arange(block_packets)) // 100_000
            header["usec"] = (packets + np.arange(block_packets)) % 1_000_000
            raw = header.view(np.uint8).reshape(block_packets, 16)
            for k in range(16):
                data[starts + k] = raw[:, k]
            f.write(data.tobytes())
            packets += block_packets
    return packets


# Peak RSS is the child's VmHWM: ru_maxrss survives exec, so a child of a big pytest process
# would report its parent's peak. ru_maxrss is reported too, as a ceiling.
READ_ALL = """
import json, re, resource, sys, time
from badsum.capture import open_capture
start = time.perf_counter()
packets = captured = 0
with open_capture(sys.argv[1]) as reader:
    for batch in reader:
        packets += len(batch)
        captured += int(batch.caplen.sum())
    errors = [str(e) for e in reader.errors]
elapsed = time.perf_counter() - start
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as f:
        hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))
except OSError:
    hwm = maxrss
print(json.dumps({"packets": packets, "captured": captured, "seconds": elapsed, "errors": errors,
                  "peak_rss_kib": hwm, "maxrss_kib": maxrss}))
"""


def run_reader(path: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", READ_ALL, str(path)], capture_output=True, text=True,
                         env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def big_pcap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("big") / "big.pcap"
    return path, write_big_pcap(path, 300 << 20)


def test_300mb_pcap_in_bounded_memory(big_pcap: tuple[Path, int], record_property: object) -> None:
    path, packets = big_pcap
    result = run_reader(path)
    assert result["packets"] == packets and result["errors"] == []
    rss_mib = result["peak_rss_kib"] / 1024  # type: ignore[operator]
    rate = packets / result["seconds"]  # type: ignore[operator]
    mb_s = path.stat().st_size / result["seconds"] / 1e6  # type: ignore[operator]
    print(f"\n{path.stat().st_size / 2**20:.0f} MiB, {packets} packets: {rate / 1e6:.1f} M packets/s, "
          f"{mb_s:.0f} MB/s, peak RSS {rss_mib:.0f} MiB")  # fmt: skip
    record_property("packets_per_second", rate)  # type: ignore[operator]
    record_property("peak_rss_mib", rss_mib)  # type: ignore[operator]
    assert rss_mib < 150


def test_gzip_stream_in_bounded_memory(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pcap"
    packets = write_big_pcap(plain, 100 << 20)
    packed = tmp_path / "packed.pcap.gz"
    with plain.open("rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
        while chunk := src.read(8 << 20):
            dst.write(chunk)
    plain.unlink()
    result = run_reader(packed)
    assert result["packets"] == packets and result["errors"] == []
    assert result["peak_rss_kib"] / 1024 < 150  # type: ignore[operator]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_descriptor_leaks(tmp_path: Path) -> None:
    pcap = tmp_path / "a.pcap"
    pcap.write_bytes(simple_pcap(20).data)
    packed = tmp_path / "b.pcapng.gz"
    packed.write_bytes(gzip.compress(rich_pcapng().data))
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a capture at all")
    truncated = tmp_path / "t.pcap"
    truncated.write_bytes(simple_pcap(20).data[:-5])
    before = open_fds()
    for i in range(100):
        with open_capture(pcap, chunk_size=64) as reader:
            for batch in reader:
                break  # abandoned mid-iteration
        # A batch the caller keeps holds its mapped window, and the descriptor mmap duplicated for
        # it, until the batch is dropped: a reference, not a leak.
        del batch
        reader = open_capture(packed)
        list(reader)
        reader.close()
        with open_capture(truncated) as reader:
            list(reader)
        for bad in (junk, tmp_path / "missing", tmp_path):
            with pytest.raises(CaptureOpenError):
                open_capture(bad)
        w = PcapngWriter(tmp_path / f"w{i % 3}.pcapng")
        w.add_interface(1)
        w.close() if i % 2 else w.abort()
    assert open_fds() == before
