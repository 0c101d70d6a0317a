"""Reading pcap: both byte orders, µs/ns/Kuznetzov, any chunk size, gzip, stdin and file objects."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from capfiles import Built, payload, pcap, simple_pcap

from badsum.capture import Batch, CaptureReader, open_capture

SRC = Path(__file__).resolve().parents[2] / "src"


def read_all(source: object, **kw: int) -> tuple[CaptureReader, list[Batch]]:
    with open_capture(source, **kw) as reader:  # type: ignore[arg-type]
        batches = list(reader)
    return reader, batches


def check_packets(built: Built, batches: list[Batch], base: int = 0, frames: list[int] | None = None) -> None:
    """Every packet's bytes, lengths, time, frame number and offset are as built. Frame numbers
    count packets, unless `frames` gives them (pcapng blocks tshark numbers without a packet)."""
    packets = [(b, i) for b in batches for i in range(len(b))]
    assert len(packets) == len(built.packets)
    for k, (b, i) in enumerate(packets):
        assert b.first_frame + i == (k + 1 if frames is None else frames[k])
        assert b.packet(i) == built.packets[k]
        assert int(b.caplen[i]) == len(built.packets[k])
        assert int(b.origlen[i]) == built.origlens[k]
        assert int(b.ts_ns[i]) == built.ts_ns[k]
        assert int(b.file_offset[i]) == built.record_starts[k] + base


def write(tmp_path: Path, data: bytes, name: str = "f.pcap") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nsec,kuznetzov", [(False, False), (True, False), (False, True)])
def test_pcap_variants(tmp_path: Path, order: str, nsec: bool, kuznetzov: bool) -> None:
    built = simple_pcap(12, order=order, nsec=nsec, kuznetzov=kuznetzov, linktype=113)
    reader, batches = read_all(write(tmp_path, built.data))
    assert reader.format == "pcap" and not reader.errors
    check_packets(built, batches)
    for b in batches:
        assert b.offset.dtype == np.int64 and b.caplen.dtype == np.uint32 and b.ts_ns.dtype == np.int64
        assert (b.linktype == 113).all() and b.linktype.dtype == np.uint16
        assert (b.interface == 0).all() and (b.direction == 0).all()
        assert (b.tp_status == 0xFFFFFFFF).all() and b.comments == {}
    iface = reader.interfaces[0]
    assert (iface.linktype, iface.snaplen, iface.tsresol) == (113, 65535, 9 if nsec else 6)
    assert reader.sections[0].byte_order == ("little" if order == "<" else "big")
    assert reader.packets == 12 and reader.bytes_read == len(built.data)


@pytest.mark.parametrize("chunk_size", [64, 65, 100, 1000, 4099, 1 << 20])
@pytest.mark.parametrize("batch_packets", [1, 3, 1000])
def test_chunk_and_batch_sizes_do_not_change_the_result(
    tmp_path: Path, chunk_size: int, batch_packets: int
) -> None:
    built = simple_pcap(40)  # includes 9000-byte packets: larger than the small chunks
    reader, batches = read_all(
        write(tmp_path, built.data), chunk_size=chunk_size, batch_packets=batch_packets
    )
    assert not reader.errors
    assert all(0 < len(b) <= batch_packets for b in batches)
    check_packets(built, batches)


def test_batches_keep_their_bytes_after_later_chunks(tmp_path: Path) -> None:
    """Each chunk is a new buffer: holding on to an old batch is safe."""
    built = simple_pcap(30)
    _, batches = read_all(write(tmp_path, built.data), chunk_size=128)
    assert len({id(b.buf) for b in batches}) > 1
    check_packets(built, batches)


def test_fcs_bits_of_the_link_type_field(tmp_path: Path) -> None:
    built = pcap([(1, 2, b"abcd", 4)], linktype=1 | 0x04000000 | (2 << 28))
    reader, batches = read_all(write(tmp_path, built.data))
    assert reader.interfaces[0].linktype == 1 and reader.interfaces[0].fcs_len == 4
    assert int(batches[0].linktype[0]) == 1


def test_record_larger_than_snaplen_but_sane_is_kept(tmp_path: Path) -> None:
    big = payload(70000)
    built = pcap([(1, 0, big, 70000)], snaplen=1500)  # GSO frames exceed small snaplens
    reader, batches = read_all(write(tmp_path, built.data), chunk_size=4096)
    assert not reader.errors and batches[0].packet(0) == big


def test_gzip_detected_by_magic_not_name(tmp_path: Path) -> None:
    built = simple_pcap(25)
    path = write(tmp_path, gzip.compress(built.data), "no-suffix.pcap")
    reader, batches = read_all(path, chunk_size=256)
    assert reader.compressed and not reader.errors
    check_packets(built, batches)


def test_multi_member_gzip(tmp_path: Path) -> None:
    built = simple_pcap(20)
    cut = len(built.data) // 3
    data = gzip.compress(built.data[:cut]) + gzip.compress(built.data[cut:]) + b"\0" * 64
    reader, batches = read_all(write(tmp_path, data), chunk_size=100)
    assert not reader.errors
    check_packets(built, batches)


def test_file_object_and_read_only_object() -> None:
    built = simple_pcap(10)
    _, batches = read_all(io.BytesIO(built.data), chunk_size=100)
    check_packets(built, batches)

    class ReadOnly:  # no readinto: the reader must fall back to read()
        def __init__(self, data: bytes) -> None:
            self._f = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._f.read(min(n, 7))  # short reads, as from a socket

    _, batches = read_all(ReadOnly(gzip.compress(built.data)), chunk_size=100)
    check_packets(built, batches)


def test_pipe_object() -> None:
    built = simple_pcap(50)
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(built.data), 1000):
                f.write(built.data[i : i + 1000])
                f.flush()

    thread = threading.Thread(target=feed)
    thread.start()
    with os.fdopen(r, "rb") as f:
        _, batches = read_all(f, chunk_size=4096)
    thread.join()
    check_packets(built, batches)


@pytest.mark.parametrize("compress", [False, True])
def test_stdin(tmp_path: Path, compress: bool) -> None:
    built = simple_pcap(30)
    data = gzip.compress(built.data) if compress else built.data
    code = (
        "from badsum.capture import open_capture\n"
        "r = open_capture('-', chunk_size=512)\n"
        "n = sum(len(b) for b in r)\n"
        "print(n, r.compressed, len(r.errors))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split() == ["30", str(compress), "0"]


def test_iterating_again_continues_and_close_is_idempotent(tmp_path: Path) -> None:
    built = simple_pcap(5)
    reader = CaptureReader(write(tmp_path, built.data))
    first = next(iter(reader))
    assert list(reader) == []  # the one pass already yielded everything in the first batch
    assert len(first) == 5
    reader.close()
    reader.close()
