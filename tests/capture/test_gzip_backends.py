"""The gzip inflaters: zlib-ng when installed, the standard library's zlib always; the same bytes,
the same damage codes and offsets from each, and from the read-ahead thread as from a direct read."""

from __future__ import annotations

import gzip
import io
import sys
import threading
import zlib
from types import ModuleType

import pytest
from capfiles import Built, rich_pcapng, simple_pcap

from badsum.capture import CaptureReader, _stream, open_capture

PCAP = simple_pcap(300)
PCAPNG = rich_pcapng()
BACKENDS = _stream.inflate_backends()


def read_with(backend: ModuleType, data: bytes, monkeypatch: pytest.MonkeyPatch, **kw: int) -> tuple[CaptureReader, list[bytes]]:
    monkeypatch.setattr(_stream, "inflate_backends", lambda: [("forced", backend)])
    with open_capture(io.BytesIO(data), **kw) as reader:
        packets = [b.packet(i) for b in reader for i in range(len(b))]
    return reader, packets


def _damaged(built: Built) -> dict[str, bytes]:
    gz = gzip.compress(built.data)
    crc, isize, corrupt = bytearray(gz), bytearray(gz), bytearray(gz)
    crc[-8] ^= 0xFF
    isize[-4] ^= 0xFF
    corrupt[len(gz) // 2] ^= 0xFF
    cut = len(built.data) // 2
    return {
        "whole": gz,
        "members": gzip.compress(built.data[:cut]) + gzip.compress(built.data[cut:]) + b"\0" * 64,
        "truncated": gz[: len(gz) * 2 // 3],
        "crc": bytes(crc),
        "isize": bytes(isize),
        "corrupt": bytes(corrupt),
        "garbage_after": gz + b"not gzip at all",
    }


def test_zlib_is_always_the_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BACKENDS[-1] == ("zlib", zlib)
    monkeypatch.setitem(sys.modules, "zlib_ng", None)  # as if not installed: the import fails
    assert _stream.inflate_backends() == [("zlib", zlib)]


def test_zlib_ng_first_when_installed() -> None:
    pytest.importorskip("zlib_ng")
    assert BACKENDS[0][0] == "zlib-ng"


@pytest.mark.parametrize("name,backend", BACKENDS[:-1], ids=[n for n, _ in BACKENDS[:-1]])
@pytest.mark.parametrize("chunk_size", [4096, 8 << 20])
@pytest.mark.parametrize("built", [PCAP, PCAPNG], ids=["pcap", "pcapng"])
def test_backend_reads_as_zlib_does(name: str, backend: ModuleType, chunk_size: int, built: Built,
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for case, data in _damaged(built).items():
        want_reader, want = read_with(zlib, data, monkeypatch, chunk_size=chunk_size)
        got_reader, got = read_with(backend, data, monkeypatch, chunk_size=chunk_size)
        assert got == want, case
        assert [(e.code, e.offset) for e in got_reader.errors] == [(e.code, e.offset) for e in want_reader.errors], case


@pytest.mark.parametrize("name,backend", BACKENDS, ids=[n for n, _ in BACKENDS])
def test_read_ahead_delivers_what_a_direct_read_does(name: str, backend: ModuleType) -> None:
    for case, data in _damaged(PCAP).items():
        direct = _stream._Gunzip(_stream._Plain(io.BytesIO(data[2:]), data[:2]), backend)
        ahead = _stream._ReadAhead(_stream._Gunzip(_stream._Plain(io.BytesIO(data[2:]), data[:2]), backend), piece=1000)
        try:
            assert _drain(ahead) == _drain(direct), case
        finally:
            ahead.close()


def _drain(src: object) -> tuple[bytes, str | None]:
    out, buf = bytearray(), bytearray(777)
    while True:
        try:
            n = src.readinto(memoryview(buf))  # type: ignore[attr-defined]
        except _stream.StreamDamage as e:
            return bytes(out), e.code
        if not n:
            return bytes(out), None
        out += buf[:n]


def test_the_inflate_thread_ends_with_the_reader() -> None:
    data = gzip.compress(PCAP.data * 50)
    for _ in range(20):
        with open_capture(io.BytesIO(data), chunk_size=4096) as reader:
            next(iter(reader))  # abandoned mid-stream: the thread must not outlive the reader
    assert not [t for t in threading.enumerate() if t.name == "badsum-inflate"]
