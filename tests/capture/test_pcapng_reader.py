"""Reading pcapng: sections of both byte orders, interfaces, resolutions, SPB/PB, options."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from capfiles import (
    EXPECTED_RICH,
    TP_COMMENT,
    PcapngBuilder,
    block,
    epb,
    idb,
    opt,
    payload,
    q,
    rich_pcapng,
    shb,
    spb,
    u8,
    u32,
)
from test_pcap_reader import check_packets, read_all, write

from badsum.capture import Batch, open_capture


def column(batches: list[Batch], name: str) -> list[int]:
    return [int(v) for b in batches for v in getattr(b, name)]


def comments(batches: list[Batch]) -> dict[int, list[str]]:
    """By packet index (0-based, counting packets only)."""
    out, seen = {}, 0
    for b in batches:
        out.update({seen + i: c for i, c in b.comments.items()})
        seen += len(b)
    return out


def frames(batches: list[Batch]) -> list[int]:
    return [b.first_frame + i for b in batches for i in range(len(b))]


@pytest.mark.parametrize("chunk_size", [64, 100, 333, 1 << 20])
@pytest.mark.parametrize("batch_packets", [1, 2, 100])
def test_rich_file(tmp_path: Path, chunk_size: int, batch_packets: int) -> None:
    built = rich_pcapng()
    reader, batches = read_all(
        write(tmp_path, built.data), chunk_size=chunk_size, batch_packets=batch_packets
    )
    assert reader.format == "pcapng" and not reader.errors, reader.errors
    check_packets(built, batches, frames=EXPECTED_RICH["frames"])
    for name in ("interface", "linktype", "direction", "tp_status"):
        assert column(batches, name) == EXPECTED_RICH[name], name
    assert comments(batches) == EXPECTED_RICH["comments"]
    assert frames(batches) == EXPECTED_RICH["frames"]  # the CB after the third packet is frame 4, as in tshark
    assert reader.skipped_blocks == EXPECTED_RICH["skipped"]
    assert [s.byte_order for s in reader.sections] == ["little", "big", "little"]
    assert [s.first_interface for s in reader.sections] == [0, 3, 4]
    assert reader.sections[0].userappl == "capfiles" and reader.sections[0].comments == ("section zero",)
    ifs = reader.interfaces
    assert [(i.id, i.section, i.linktype) for i in ifs] == [
        (0, 0, 1),
        (1, 0, 101),
        (2, 0, 108),
        (3, 1, 276),
        (4, 2, 228),
    ]
    assert (ifs[0].name, ifs[0].description, ifs[0].snaplen, ifs[0].tsresol) == (
        "eth0",
        "first nic",
        65535,
        6,
    )
    assert (ifs[2].tsresol, ifs[2].tsoffset, ifs[2].ticks_per_second) == (0x80 | 20, 100, 1 << 20)
    assert ifs[3].ticks_per_second == 1000


def test_interfaces_known_before_the_first_batch(tmp_path: Path) -> None:
    with open_capture(write(tmp_path, rich_pcapng().data)) as reader:
        assert [i.name for i in reader.interfaces] == ["eth0", "tun0"]


@pytest.mark.parametrize("order", ["<", ">"])
def test_resolutions(tmp_path: Path, order: str) -> None:
    t = 1_600_000_000
    cases = [  # (if_tsresol option or None, ticks, expected ns)
        (None, t * 10**6 + 1, t * 10**9 + 1000),
        (u8(0), t, t * 10**9),
        (u8(3), t * 1000 + 1, t * 10**9 + 10**6),
        (u8(9), t * 10**9 + 1, t * 10**9 + 1),
        (u8(12), 10**18 + 1999, 10**15 + 1),  # picoseconds: 64 bits last ~213 days
        (u8(0x80 | 10), (t << 10) + 512, t * 10**9 + 500_000_000),
        (u8(0x80 | 32), (3 << 32) + (1 << 31), 3 * 10**9 + 500_000_000),
    ]
    b = PcapngBuilder().add(shb(order))
    for i, (res, ticks, want) in enumerate(cases):
        b.add(idb(1, 0, order, [(9, res)] if res else []))
        d = payload(10, i)
        b.packet(epb(i, ticks, d, order=order), d, 10, want)
    b.add(idb(1, 0, order, [(9, u8(6)), (14, q(-10, order))]))
    d = payload(10)
    b.packet(epb(len(cases), t * 10**6, d, order=order), d, 10, (t - 10) * 10**9)
    built = b.done()
    reader, batches = read_all(write(tmp_path, built.data))
    assert not reader.errors
    check_packets(built, batches)


def test_spb_caplen_is_min_of_origlen_snaplen_and_block(tmp_path: Path) -> None:
    b = PcapngBuilder().add(shb()).add(idb(1, 50))
    d = payload(80)
    b.packet(spb(d, 80), d[:50], 80, 0)  # snaplen
    d = payload(30)
    b.packet(spb(d, 27), d[:27], 27, 0)  # origlen below the (padded) data
    d = payload(30)
    b.packet(spb(d, 9999), d + b"\0\0", 9999, 0)  # block room, padding included
    built = b.done()
    reader, batches = read_all(write(tmp_path, built.data))
    assert not reader.errors
    check_packets(built, batches)


def test_idb_after_packets_and_no_snaplen_spb(tmp_path: Path) -> None:
    b = PcapngBuilder().add(shb()).add(idb(1, 0))
    d = payload(70)
    b.packet(spb(d), d, 70, 0)
    b.add(idb(113, 0, options=[(9, u8(9))]))
    b.packet(epb(1, 5, d), d, 70, 5)
    built = b.done()
    reader, batches = read_all(write(tmp_path, built.data), chunk_size=64)
    assert not reader.errors and column(batches, "linktype") == [1, 113]
    check_packets(built, batches)


def test_option_edge_cases(tmp_path: Path) -> None:
    """Only the first status comment counts; bad options and encodings never stop reading."""
    d = payload(20)
    second = b"badsum:tp_status=0x00000001 TP_STATUS_USER"
    cases = [
        ([(1, TP_COMMENT), (1, second)], 0x108, 0, [TP_COMMENT.decode(), second.decode()]),
        ([(1, b"x"), (1, second), (1, TP_COMMENT)], 0x1, 0, ["x", second.decode(), TP_COMMENT.decode()]),
        ([(1, b"badsum:tp_status=0xZZ")], 0xFFFFFFFF, 0, ["badsum:tp_status=0xZZ"]),
        ([(1, b"badsum:tp_status=0x123456789")], 0xFFFFFFFF, 0, ["badsum:tp_status=0x123456789"]),
        ([(1, b"badsum:tp_status=0x80")], 0x80, 0, ["badsum:tp_status=0x80"]),
        ([(1, b"\xff\xfe caf\xc3\xa9")], 0xFFFFFFFF, 0, ["\ufffd\ufffd café"]),
        ([(2, u32(3))], 0xFFFFFFFF, 0, None),  # direction 3 is invalid: unknown
        ([(2, u32(0x101))], 0xFFFFFFFF, 1, None),  # other flag bits are ignored
        ([(2, b"\x01")], 0xFFFFFFFF, 0, None),  # too short for a flags word
        ([(99, b"whatever"), (1, b"after unknown")], 0xFFFFFFFF, 0, ["after unknown"]),
    ]
    b = PcapngBuilder().add(shb()).add(idb(1))
    for options, *_ in cases:
        b.packet(epb(0, 1, d, options=options), d, 20, 1000)
    # A malformed option (length past the block end) ends the options, not the file.
    broken = epb(0, 1, d, options=[(1, b"ok")])
    broken = broken[:-8] + b"\x01\x00\xff\x00" + broken[-4:]  # replaces opt_endofopt
    b.packet(broken, d, 20, 1000)
    built = b.done()
    reader, batches = read_all(write(tmp_path, built.data))
    assert not reader.errors
    check_packets(built, batches)
    assert column(batches, "tp_status") == [c[1] for c in cases] + [0xFFFFFFFF]
    assert column(batches, "direction") == [c[2] for c in cases] + [0]
    got = comments(batches)
    for i, case in enumerate(cases):
        assert got.get(i) == case[3], i
    assert got[len(cases)] == ["ok"]


def test_many_comments_over_several_batches(tmp_path: Path) -> None:
    b = PcapngBuilder().add(shb(">")).add(idb(1, 0, ">"))
    for i in range(300):
        d = payload(i % 70, i)
        options = [(1, f"c{i}".encode())] if i % 3 == 0 else []
        b.packet(epb(0, i, d, order=">", options=options), d, len(d), i * 1000)
    built = b.done()
    reader, batches = read_all(write(tmp_path, gzip.compress(built.data)), chunk_size=500, batch_packets=7)
    assert not reader.errors
    check_packets(built, batches)
    assert comments(batches) == {i: [f"c{i}"] for i in range(0, 300, 3)}


def test_shb_only_and_empty_sections(tmp_path: Path) -> None:
    data = shb() + shb(">") + idb(1, 0, ">") + block(5, b"\0" * 12, ">") + shb()
    reader, batches = read_all(write(tmp_path, data))
    assert batches == [] and not reader.errors and len(reader.sections) == 3
    assert reader.skipped_blocks == {"ISB": 1}


def test_option_parser_helper_handles_truncation() -> None:
    from badsum.capture._pcapng import parse_options

    data = opt(2, b"eth0") + opt(3, b"x")
    for cut in range(len(data) + 1):
        assert len(parse_options(data[:cut], "<")) <= 2
    assert parse_options(data, "<") == [(2, b"eth0"), (3, b"x")]


def test_framing_rejects_bad_arguments() -> None:
    from badsum.native import _framing

    outs = [np.empty(1, t) for t in (np.int64, np.uint32, np.uint32, np.int64, np.int64)]
    with pytest.raises(ValueError):
        _framing.frame_pcap(b"\0" * 10, 5, 20, False, False, 16, 100, 0, 0, *outs)
    with pytest.raises(ValueError):
        _framing.frame_pcap(b"\0" * 10, 0, 10, False, False, 17, 100, 0, 0, *outs)
    with pytest.raises(ValueError):
        _framing.frame_pcap(b"\0" * 10, 0, 10, False, False, 16, 100, 0, 2, *outs)
    with pytest.raises(TypeError):
        _framing.frame_pcap(b"\0" * 10, 0, 10, False, False, 16, 100, 0, 0, *outs[:4], b"readonly")
    assert _framing.epb_comments(b"\0" * 8, 0, False) == []
    assert _framing.epb_comments(b"\0" * 64, 60, False) == []


def test_encoder_rejects_bad_arguments() -> None:
    from badsum.native import _framing

    def cols(offset: int, caplen: int) -> list[np.ndarray]:
        return [np.array([offset], np.int64), np.array([caplen], np.uint32), np.array([caplen], np.uint32),
                np.array([0], np.int64), np.array([0], np.uint32), np.array([0], np.uint8)]  # fmt: skip

    assert len(_framing.encode_epbs(b"abcd", *cols(0, 4), [None])) == 36
    with pytest.raises(ValueError):
        _framing.encode_epbs(b"abcd", *cols(2, 4), [None])
    with pytest.raises(ValueError):
        _framing.encode_epbs(b"abcd", *cols(0, 4), [])
    with pytest.raises(TypeError):
        _framing.encode_epbs(b"abcd", *cols(0, 4), [b"abc"])
