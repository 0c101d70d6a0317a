"""The pcapng writer: round trips through our reader, scapy and tshark; atomic output."""

from __future__ import annotations

import gc
import os
import shutil
import stat
import subprocess
import warnings
from decimal import Decimal
from pathlib import Path

import pytest
from capfiles import TP_COMMENT, payload, rich_pcapng, simple_pcap
from test_pcap_reader import read_all, write

from badsum.capture import open_capture
from badsum.capture.pcapng_writer import PcapngWriter, parse_tp_status_comment, tp_status_comment
from badsum.outfile import UnsafeTarget


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def sample(path: Path) -> list[tuple[int, bytes, int, int, list[str], int, int | None]]:
    """Write a few packets on two interfaces; return what was written."""
    rows = [  # (iface, data, origlen, ts_ns, comments, direction, tp_status)
        (0, payload(60, 1), 60, 1_700_000_000_123_456_789, [], 0, None),
        (
            1,
            payload(41, 2),
            1500,
            1_700_000_001_000_000_001,
            ["badsum:ipv4 bad checksum", "é ünïcode"],
            1,
            None,
        ),
        (0, payload(1, 3), 1, 5, [], 2, 0x108),
        (1, b"", 0, 0, ["only a comment"], 0, 0x80),
    ]
    with PcapngWriter(path, hardware="test rig") as w:
        assert w.add_interface(1, snaplen=65535, name="eth0", description="uplink") == 0
        assert w.add_interface(101, name="tun0") == 1
        for iface, data, origlen, ts, comments, direction, status in rows:
            w.write_packet(iface, data, ts_ns=ts, origlen=origlen, comments=comments, direction=direction,
                           tp_status=status)  # fmt: skip
    return rows


def test_round_trip_through_our_reader(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    rows = sample(path)
    reader, batches = read_all(path)
    assert not reader.errors and reader.format == "pcapng"
    b = batches[0]
    assert [b.packet(i) for i in range(len(b))] == [r[1] for r in rows]
    assert b.origlen.tolist() == [r[2] for r in rows]
    assert b.ts_ns.tolist() == [r[3] for r in rows]
    assert b.direction.tolist() == [r[5] for r in rows]
    assert b.tp_status.tolist() == [0xFFFFFFFF, 0xFFFFFFFF, 0x108, 0x80]
    assert b.comments == {
        1: rows[1][4],
        2: [tp_status_comment(0x108)],
        3: [tp_status_comment(0x80), "only a comment"],
    }
    assert [(i.linktype, i.snaplen, i.name, i.description, i.tsresol) for i in reader.interfaces] == [
        (1, 65535, "eth0", "uplink", 9),
        (101, 0, "tun0", None, 9),
    ]
    section = reader.sections[0]
    assert section.userappl.startswith("badsum ") and section.hardware == "test rig"
    assert leftovers(tmp_path) == []


def test_round_trip_through_scapy(tmp_path: Path) -> None:
    from scapy.utils import RawPcapNgReader

    path = tmp_path / "out.pcapng"
    rows = sample(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with RawPcapNgReader(str(path)) as r:
            got = [(data, meta) for data, meta in r]
    assert [d for d, _ in got] == [r[1] for r in rows]
    assert [m.wirelen for _, m in got] == [r[2] for r in rows]
    assert [((m.tshigh << 32) | m.tslow) for _, m in got] == [r[3] for r in rows]
    assert [m.tsresol for _, m in got] == [10**9] * 4
    assert [m.linktype for _, m in got] == [1, 101, 1, 101]
    assert [c.decode() for c in got[1][1].comments] == rows[1][4]


@pytest.mark.tools
def test_round_trip_through_tshark(tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not on PATH")
    path = tmp_path / "out.pcapng"
    rows = sample(path)
    fields = ["frame.len", "frame.cap_len", "frame.time_epoch", "frame.comment", "frame.interface_name"]
    args = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", "aggregator=|"] + [a for f in fields for a in ("-e", f)]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line.split("\t") for line in out.stdout.splitlines()]
    assert [int(x[0]) for x in lines] == [r[2] for r in rows]
    assert [int(x[1]) for x in lines] == [len(r[1]) for r in rows]
    # The value, not one tshark build's way of printing it.
    assert Decimal(lines[0][2]) == Decimal("1700000000.123456789")
    assert lines[1][3] == "|".join(rows[1][4])
    assert lines[2][3] == tp_status_comment(0x108)
    assert [x[4] for x in lines] == ["eth0", "tun0", "eth0", "tun0"]


def test_write_batch_copies_packets_keeps_and_adds_comments(tmp_path: Path) -> None:
    source = write(tmp_path, rich_pcapng().data, "rich.pcapng")
    out = tmp_path / "annotated.pcapng"
    with open_capture(source, batch_packets=3) as reader, PcapngWriter(out) as w:
        for batch in reader:
            extra = {
                i: [f"badsum:test frame {batch.first_frame + i}"] for i in range(len(batch)) if i % 2 == 0
            }
            w.write_batch(batch, extra, interfaces=reader.interfaces)
        original = reader
    copy, batches = read_all(out)
    assert not copy.errors
    packets = [(b, i) for b in batches for i in range(len(b))]
    _, src_batches = read_all(source)
    src_packets = [(b, i) for b in src_batches for i in range(len(b))]
    assert [b.packet(i) for b, i in packets] == [b.packet(i) for b, i in src_packets]
    for name in ("origlen", "ts_ns", "linktype", "direction", "tp_status"):
        assert [int(getattr(b, name)[i]) for b, i in packets] == [
            int(getattr(b, name)[i]) for b, i in src_packets
        ]
    # One IDB per distinct (linktype, snaplen, source interface), named as in the source.
    assert [(i.linktype, i.snaplen, i.name) for i in copy.interfaces] == [
        (i.linktype, i.snaplen, i.name) for i in original.interfaces
    ]
    frame_comments = {b.first_frame + i: c for b in batches for i, c in b.comments.items()}
    assert frame_comments[2] == ["hello", TP_COMMENT.decode()]  # kept, no second status comment
    assert frame_comments[3] == ["badsum:test frame 3"]  # batches of 3: index 2 of the 1st batch
    # The source's custom block took frame 4 (as in tshark) and is not copied: the copy's frame 4 is
    # the source's frame 5, the first of the next batch.
    assert frame_comments[4] == ["badsum:test frame 5"]
    assert frame_comments[6] == ["be comment", "badsum:test frame 7"]  # existing first, then added


def test_write_batch_from_pcap_without_interfaces(tmp_path: Path) -> None:
    built = simple_pcap(10, linktype=113)
    out = tmp_path / "copy.pcapng"
    with open_capture(write(tmp_path, built.data)) as reader, PcapngWriter(out) as w:
        for batch in reader:
            w.write_batch(batch)
            w.write_batch(batch, {0: ["again"]})  # same key: no second IDB
    copy, batches = read_all(out)
    assert [(i.linktype, i.snaplen) for i in copy.interfaces] == [(113, 0)]
    assert [b.packet(i) for b in batches for i in range(len(b))] == built.packets * 2
    assert batches[0].comments == {10: ["again"]}


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    path.write_bytes(b"previous content")
    with pytest.raises(RuntimeError), PcapngWriter(path) as w:
        w.write_packet(w.add_interface(1), b"x" * 100, ts_ns=1)
        assert leftovers(tmp_path)  # the temporary file exists while writing, beside the target
        raise RuntimeError("boom")
    assert path.read_bytes() == b"previous content" and leftovers(tmp_path) == []


def test_abort_and_dropped_writer_remove_the_temporary_file(tmp_path: Path) -> None:
    w = PcapngWriter(tmp_path / "a.pcapng")
    w.abort()
    w.abort()
    with pytest.raises(ValueError):
        w.add_interface(1)
    w.close()  # after abort: nothing to commit
    assert not (tmp_path / "a.pcapng").exists()
    w = PcapngWriter(tmp_path / "b.pcapng")
    w.add_interface(1)
    del w
    gc.collect()
    assert leftovers(tmp_path) == [] and not (tmp_path / "b.pcapng").exists()


def test_close_commits_with_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "c.pcapng"
    w = PcapngWriter(path)
    w.close()
    w.close()
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    reader, batches = read_all(path)
    assert batches == [] and not reader.errors and len(reader.sections) == 1


def test_a_fifo_or_a_device_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    """A rename would put a regular file in place of the FIFO (or, as root, of /dev/null)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, Path("/dev/null")):
        with pytest.raises(UnsafeTarget):
            PcapngWriter(target)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_a_fifo_put_there_while_writing_is_not_replaced(tmp_path: Path) -> None:
    """Checked again at close: a long capture leaves time for the name to change."""
    path = tmp_path / "out.pcapng"
    w = PcapngWriter(path)
    w.write_packet(w.add_interface(1), b"x" * 60, ts_ns=1)
    os.mkfifo(path)
    with pytest.raises(UnsafeTarget):
        w.close()
    assert stat.S_ISFIFO(path.lstat().st_mode) and leftovers(tmp_path) == []


def test_bad_interface_and_write_failure(tmp_path: Path) -> None:
    path = tmp_path / "d.pcapng"
    w = PcapngWriter(path)
    with pytest.raises(ValueError):
        w.write_packet(0, b"", ts_ns=0)
    w._f.close()  # simulate the disk going away: the next write fails
    with pytest.raises(ValueError):
        w.add_interface(1)
    assert leftovers(tmp_path) == [] and not path.exists()


def test_long_comment_is_cut_at_a_character_boundary(tmp_path: Path) -> None:
    path = tmp_path / "e.pcapng"
    with PcapngWriter(path) as w:
        w.write_packet(w.add_interface(1), b"abc", ts_ns=1, comments=["é" * 40000])
    _, batches = read_all(path)
    (comment,) = batches[0].comments[0]
    assert set(comment) == {"é"} and len(comment.encode()) <= 0xFFFF


@pytest.mark.parametrize("status", [0, 0x8, 0x108, 0x80 | 0x10, 0xFFFFFFFE, 0x200])
def test_tp_status_comment_round_trip(status: int) -> None:
    text = tp_status_comment(status)
    assert text.startswith(f"badsum:tp_status=0x{status:08x}")
    assert parse_tp_status_comment(text) == status
    assert tp_status_comment(0x108) == "badsum:tp_status=0x00000108 TP_STATUS_CSUMNOTREADY|TP_STATUS_GSO_TCP"
    assert tp_status_comment(0) == "badsum:tp_status=0x00000000"
    assert parse_tp_status_comment("badsum:ipv4 something") is None
    assert parse_tp_status_comment("badsum:tp_status=0xzz") is None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
