"""Damaged captures: never a traceback, never a hang; keep what precedes the damage, say where."""

from __future__ import annotations

import gzip
import io
import os
import struct
import time
from pathlib import Path

import pytest
from capfiles import (
    Built,
    PcapngBuilder,
    block,
    epb,
    idb,
    payload,
    pcap,
    rich_pcapng,
    shb,
    simple_pcap,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badsum.capture import CaptureError, CaptureOpenError, CaptureReader, open_capture

PCAP = simple_pcap(8)
PCAPNG = rich_pcapng()


def read_bytes(data: bytes, **kw: int) -> tuple[CaptureReader, list[bytes]]:
    with open_capture(io.BytesIO(data), **kw) as reader:
        packets = [b.packet(i) for b in reader for i in range(len(b))]
    return reader, packets


def pcapng_boundaries(data: bytes) -> set[int]:
    """Offsets where a block ends, walking lengths in each section's byte order."""
    ends, pos, order = {0}, 0, "<"
    while pos + 12 <= len(data):
        if data[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":
            order = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        pos += struct.unpack_from(order + "I", data, pos + 4)[0]
        ends.add(pos)
    return ends


def only_error(reader: CaptureReader) -> CaptureError:
    assert len(reader.errors) == 1, reader.errors
    return reader.errors[0]


@pytest.mark.parametrize("built,fmt", [(PCAP, "pcap"), (PCAPNG, "pcapng")], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("chunk_size", [64, 1 << 20])
def test_truncated_at_every_offset(built: Built, fmt: str, chunk_size: int) -> None:
    boundaries = {24, *built.record_ends} if fmt == "pcap" else pcapng_boundaries(built.data)
    with pytest.raises(CaptureOpenError) as exc:
        read_bytes(b"")
    assert exc.value.reason == "empty"
    for cut in range(1, len(built.data) + 1):
        reader, packets = read_bytes(built.data[:cut], chunk_size=chunk_size)
        complete = sum(end <= cut for end in built.record_ends)
        assert packets == built.packets[:complete], cut
        if cut in boundaries:
            assert not reader.errors, (cut, reader.errors)
        else:
            error = only_error(reader)
            assert error.code.startswith(fmt + ".truncated"), (cut, error)
            assert 0 <= error.offset < cut


def test_pcap_record_claiming_16mb_in_a_64k_snaplen_file() -> None:
    good = simple_pcap(3)
    damaged = good.data + struct.pack("<IIII", 1, 0, 16711424, 16711424) + b"\0" * 100
    start = time.monotonic()
    reader, packets = read_bytes(damaged)
    assert time.monotonic() - start < 5
    assert packets == good.packets
    error = only_error(reader)
    assert error.code == "pcap.record_too_large" and error.offset == len(good.data)
    assert "16711424" in error.message


def test_pcap_limits_follow_snaplen_and_the_256mib_cap() -> None:
    data = pcap([], snaplen=0).data + struct.pack("<IIII", 1, 0, (256 << 20) + 1, 0)
    assert only_error(read_bytes(data)[0]).code == "pcap.record_too_large"
    # A declared snaplen above 262144 raises the bound; the record is then merely cut short.
    data = pcap([], snaplen=1 << 20).data + struct.pack("<IIII", 1, 0, 900_000, 0) + b"x" * 1000
    assert only_error(read_bytes(data, chunk_size=4096)[0]).code == "pcap.truncated_record"


def test_pcap_garbage_tail() -> None:
    reader, packets = read_bytes(PCAP.data + b"\xff" * 40)
    assert packets == PCAP.packets
    assert only_error(reader).offset == len(PCAP.data)


def test_pcap_unsupported_version() -> None:
    data = bytearray(PCAP.data)
    data[4:6] = struct.pack("<H", 1)
    reader, packets = read_bytes(bytes(data))
    assert packets == [] and only_error(reader).code == "pcap.unsupported_version"


def _pcapng_with(tail: bytes) -> tuple[bytes, list[bytes]]:
    b = PcapngBuilder().add(shb()).add(idb(1))
    d = payload(50)
    b.packet(epb(0, 1, d), d, 50, 1000)
    built = b.done()
    return built.data + tail, built.packets


def _with_lengths(blk: bytes, leading: int | None = None, trailing: int | None = None) -> bytes:
    out = bytearray(blk)
    if leading is not None:
        out[4:8] = struct.pack("<I", leading)
    if trailing is not None:
        out[-4:] = struct.pack("<I", trailing)
    return bytes(out)


GOOD_EPB = epb(0, 2, payload(40))


@pytest.mark.parametrize(
    "tail,code",
    [
        (_with_lengths(GOOD_EPB, trailing=len(GOOD_EPB) + 4), "pcapng.block_length_mismatch"),
        (_with_lengths(GOOD_EPB, leading=len(GOOD_EPB) - 4), "pcapng.block_length_mismatch"),
        (_with_lengths(GOOD_EPB, leading=len(GOOD_EPB) + 2), "pcapng.bad_block_length"),
        (_with_lengths(GOOD_EPB, leading=8), "pcapng.bad_block_length"),
        (_with_lengths(GOOD_EPB, leading=0), "pcapng.bad_block_length"),
        (block(6, b"\0" * 12), "pcapng.bad_block_length"),  # an EPB too short for its header
        (block(1, b"\0" * 4), "pcapng.bad_block_length"),  # an IDB too short
        (block(3, b""), "pcapng.bad_block_length"),  # an SPB without origlen
        (_with_lengths(GOOD_EPB, leading=0x7FFFFFF0), "pcapng.block_too_large"),
        (
            epb(0, 2, b"abc")[:20] + struct.pack("<I", 999) + epb(0, 2, b"abc")[24:],
            "pcapng.caplen_exceeds_block",
        ),
        (epb(7, 2, payload(40)), "pcapng.undefined_interface"),
        (shb(version=(2, 0)) + idb(1) + GOOD_EPB, "pcapng.unsupported_version"),
        (shb()[:8] + b"\x01\x02\x03\x04" + shb()[12:], "pcapng.bad_byte_order_magic"),
        (_with_lengths(shb(), trailing=999), "pcapng.block_length_mismatch"),
        (_with_lengths(shb(), leading=26), "pcapng.bad_block_length"),
        (_with_lengths(shb(), leading=0x7FFFFFF0), "pcapng.block_too_large"),
        (b"\x00" * 64, "pcapng.bad_block_length"),
        (shb() + GOOD_EPB, "pcapng.undefined_interface"),  # new section, no IDB yet
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_pcapng_damage(tail: bytes, code: str) -> None:
    data, good = _pcapng_with(tail)
    reader, packets = read_bytes(data)
    assert packets == good
    error = only_error(reader)
    damage_at = len(data) - len(tail)
    if tail.startswith(shb()) and code == "pcapng.undefined_interface":
        damage_at += len(shb())
    assert (error.code, error.offset) == (code, damage_at), error
    assert error.message


def test_pcapng_damage_in_the_first_section() -> None:
    reader, packets = read_bytes(shb(version=(2, 0)) + idb(1) + GOOD_EPB)
    assert packets == [] and only_error(reader).code == "pcapng.unsupported_version"
    reader, packets = read_bytes(shb() + GOOD_EPB)
    assert packets == [] and only_error(reader).code == "pcapng.undefined_interface"


def test_truncated_claim_does_not_allocate_the_claim() -> None:
    data = pcap([], snaplen=0).data + struct.pack("<IIII", 1, 0, 250 << 20, 0) + b"x" * 5000
    start = time.monotonic()
    reader, packets = read_bytes(data, chunk_size=4096)
    assert time.monotonic() - start < 2 and packets == []
    assert only_error(reader).code == "pcap.truncated_record"


def test_gzip_truncated_keeps_what_inflates() -> None:
    built = simple_pcap(200)
    compressed = gzip.compress(built.data)
    reader, packets = read_bytes(compressed[: len(compressed) * 2 // 3], chunk_size=4096)
    assert 0 < len(packets) < 200 and packets == built.packets[: len(packets)]
    assert only_error(reader).code == "gzip.truncated"


def test_gzip_corrupt_and_garbage_after_it() -> None:
    built = simple_pcap(200)
    compressed = bytearray(gzip.compress(built.data))
    compressed[len(compressed) // 2] ^= 0xFF
    reader, packets = read_bytes(bytes(compressed), chunk_size=4096)
    # Corrupt deflate data may inflate to wrong bytes before zlib notices (at the latest at
    # the CRC): some error is recorded, whichever layer sees it first.
    assert len(packets) <= 200 and len(reader.errors) == 1
    reader, packets = read_bytes(gzip.compress(built.data) + b"not gzip at all", chunk_size=4096)
    assert packets == built.packets and only_error(reader).code == "gzip.corrupt"


def _trailer_damaged(data: bytes, field: str) -> bytes:
    """A real gzip of `data` whose trailer (RFC 1952 2.3.1: CRC-32, then ISIZE) has one field wrong."""
    gz = bytearray(gzip.compress(data))
    gz[-8 if field == "crc" else -4] ^= 0xFF
    return bytes(gz)


@pytest.mark.parametrize("field,code", [("crc", "gzip.crc_mismatch"), ("isize", "gzip.length_mismatch")])
@pytest.mark.parametrize("chunk_size", [4096, 8 << 20])
def test_gzip_bad_trailer_keeps_every_packet(field: str, code: str, chunk_size: int) -> None:
    # zlib raises at the trailer and drops that call's whole output: with the default 8 MiB chunk,
    # every packet of a small capture was lost.
    for built in (PCAP, PCAPNG):
        reader, packets = read_bytes(_trailer_damaged(built.data, field), chunk_size=chunk_size)
        assert packets == built.packets
        err = only_error(reader)
        assert (err.code, err.offset) == (code, len(built.data))
        assert "gzip trailer" in err.message


def test_gzip_bad_crc_in_the_second_member() -> None:
    first, second = simple_pcap(50), simple_pcap(200)
    body = second.data[24:]  # records only: `cat a.gz b.gz` of one capture split in two
    data = gzip.compress(first.data) + _trailer_damaged(body, "crc")
    reader, packets = read_bytes(data)
    assert packets == first.packets + second.packets
    assert only_error(reader).code == "gzip.crc_mismatch"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (gzip.compress(b""), "empty"),
        (b"PK\x03\x04 a zip file", "unknown_format"),
        (b"\x1f\x8bthis is no gzip stream", "gzip_corrupt"),
        (b"\xd4\xc3\xb2\xff", "unknown_format"),
        (b"x", "unknown_format"),
    ],
)
def test_open_errors(data: bytes, reason: str) -> None:
    with pytest.raises(CaptureOpenError) as exc:
        read_bytes(data)
    assert exc.value.reason == reason and exc.value.exit_code == 3
    assert "cannot read capture" in str(exc.value)


def test_open_errors_for_paths(tmp_path: Path) -> None:
    for path, reason in [(tmp_path / "missing.pcap", "not_found"), (tmp_path, "is_a_directory")]:
        with pytest.raises(CaptureOpenError) as exc:
            open_capture(path)
        assert exc.value.reason == reason and str(path) in str(exc.value)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.pcap"
        locked.write_bytes(PCAP.data)
        locked.chmod(0)
        with pytest.raises(CaptureOpenError) as exc:
            open_capture(locked)
        assert exc.value.reason == "permission_denied"


@pytest.mark.parametrize("prefix", [b"\xd4", b"\xd4\xc3\xb2", b"\x0a\x0d\x0d"])
def test_magic_cut_short_is_damage_not_an_open_error(prefix: bytes) -> None:
    reader, packets = read_bytes(prefix)
    assert packets == [] and only_error(reader).code.endswith("truncated_header")


def test_read_error_midway_is_recorded() -> None:
    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.served = 0

        def readable(self) -> bool:
            return True

        def readinto(self, view: memoryview) -> int:  # type: ignore[override]
            if self.served >= 300:
                raise OSError(5, "Input/output error")
            n = min(len(view), 100, len(PCAP.data) - self.served)
            view[:n] = PCAP.data[self.served : self.served + n]
            self.served += n
            return n

    with open_capture(Failing(), chunk_size=64) as reader:  # type: ignore[arg-type]
        packets = [b.packet(i) for b in reader for i in range(len(b))]
    assert packets == PCAP.packets[: len(packets)]
    assert [e.code for e in reader.errors] == ["io.read_error"]


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_fuzz_mutations_never_raise(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from([PCAP.data, PCAPNG.data]))
    mutated = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(mutated)))
    tail = data.draw(st.binary(max_size=64))
    chunk = data.draw(st.sampled_from([64, 200, 1 << 16]))
    damaged = bytes(mutated[:cut]) + tail
    try:
        reader, _ = read_bytes(damaged, chunk_size=chunk, max_record=1 << 20)
    except CaptureOpenError:
        assert damaged[:4] != base[:4]
        return
    assert len(reader.errors) <= 1
    assert all(e.offset >= 0 for e in reader.errors)


@FUZZ
@given(tail=st.binary(min_size=1, max_size=200), which=st.sampled_from(["pcap", "pcapng"]))
def test_fuzz_garbage_tail_keeps_every_intact_packet(tail: bytes, which: str) -> None:
    built = PCAP if which == "pcap" else PCAPNG
    _, packets = read_bytes(built.data + tail, chunk_size=128)
    assert packets[: len(built.packets)] == built.packets
