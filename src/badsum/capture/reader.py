"""Stream pcap and pcapng captures as `Batch`es with bounded memory.

The file is read in chunks (8 MiB by default). `_framing` frames every complete record of a
chunk in C; the partial record at its end is carried into the next chunk. Memory therefore
depends on the chunk size and the largest record (at most `max_record`), never on the file size.

Damaged content never raises: the packets framed before the damage are yielded, reading stops,
and one `CaptureError` is appended to `errors`. Only `CaptureOpenError` is raised, and only while
opening (see errors.py).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from badsum.capture import _pcapng
from badsum.capture._stream import Chunks, mapped_chunks, open_source
from badsum.capture.errors import CaptureError, CaptureOpenError
from badsum.capture.info import Interface, Section
from badsum.native import _framing
from badsum.scan.batch import Batch

DEFAULT_CHUNK_SIZE = 8 << 20
DEFAULT_BATCH_PACKETS = 1 << 16
MAX_RECORD = 256 << 20
"""No real packet is larger; a record claiming more is damage, and is never allocated."""
PCAP_SANE_SNAPLEN = 262144
"""libpcap's and Wireshark's largest normal snaplen: records may exceed a smaller file snaplen
(some writers lie about it) up to this, but not beyond (suricata bug 6875: a 16 MB claim)."""
NO_TP_STATUS = 0xFFFFFFFF
_STOPPED = -1  # a Python-side handler already recorded the damage
_SPLIT = -2  # the batch ends before a block that takes a frame number (FRAME_BLOCKS); reading goes on
#: Blocks Wireshark numbers as frames though they carry no packet: custom blocks (copiable and not,
#: shown as "data"/PCAPNG frames) and systemd journal entries. They take a frame number here too, so
#: that badsum's 1-based `frame` is tshark's frame.number on every file (pcapng-test-generator
#: le_test202: frames 3, 6, 9, not 2, 5, 7).
FRAME_BLOCKS = frozenset({0x00000BAD, 0x40000BAD, 0x00000009})

# magic as read little-endian -> (byte order, nanosecond timestamps, record header length)
_PCAP_MAGICS = {
    0xA1B2C3D4: ("<", False, 16),
    0xD4C3B2A1: (">", False, 16),
    0xA1B23C4D: ("<", True, 16),
    0x4D3CB2A1: (">", True, 16),
    # Alexey Kuznetzov's patched libpcap: 8 more bytes per record (ifindex, protocol, pkt_type)
    0xA1B2CD34: ("<", False, 24),
    0x34CDB2A1: (">", False, 24),
}
_PCAPNG_MAGIC = struct.pack("<I", _pcapng.BT_SHB)
_ALL_MAGICS = [struct.pack("<I", m) for m in _PCAP_MAGICS] + [_PCAPNG_MAGIC]


class CaptureReader:
    """Iterate over a pcap or pcapng capture (plain or gzip; a path, `-` or a binary file).

    `interfaces`, `sections` and `skipped_blocks` grow as reading proceeds (pcapng may define
    interfaces anywhere); they are complete once iteration ends. Use as a context manager.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        batch_packets: int = DEFAULT_BATCH_PACKETS,
        max_record: int = MAX_RECORD,
    ) -> None:
        if chunk_size < 64 or batch_packets < 1 or max_record < 1:
            raise ValueError("chunk_size >= 64, batch_packets >= 1 and max_record >= 1 required")
        self._chunk_size = chunk_size
        self._batch_packets = batch_packets
        self._max_record = max_record
        src, self.compressed, self.name, self._close = open_source(source)
        self._c = mapped_chunks(src, chunk_size, self._error) or Chunks(src, chunk_size, self._error)
        self.format = ""
        """`pcap` or `pcapng`."""
        self.interfaces: list[Interface] = []
        self.sections: list[Section] = []
        self.errors: list[CaptureError] = []
        """Damage found; reading stopped at the first one."""
        self.skipped_blocks: dict[str, int] = {}
        """pcapng blocks read past without use, by name (`NRB`, `ISB`, `DSB`, `CB`...)."""
        self.packets = 0
        self.numbered_blocks = 0
        """Blocks that took a frame number without holding a packet (FRAME_BLOCKS), so far."""
        """Packets yielded so far."""
        self.empty_records = 0
        """Of those, records with no captured bytes (caplen 0): nothing in them can be judged."""
        self._done = self._swapped = False
        self._gen: Iterator[Batch] | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- public ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        if self._gen is None:
            self._gen = self._run_pcap() if self.format == "pcap" else self._run_pcapng()
        return self._gen

    def close(self) -> None:
        """Release the file (not standard input or a caller's file object). Idempotent."""
        if self._gen is not None and hasattr(self._gen, "close"):
            self._gen.close()
        self._close()
        self._done = True
        self._c.release()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def bytes_read(self) -> int:
        """Bytes of the (decompressed) file consumed so far."""
        return self._c.offset

    # -- common -----------------------------------------------------------------------------

    def _error(self, code: str, message: str, offset: int) -> None:
        self.errors.append(CaptureError(code, message, offset))

    def _after_walk(self, status: int, detail: int) -> bool:
        """Act on why a framing walk stopped; True to keep reading."""
        if status in (_framing.FULL, _SPLIT):
            return True
        if status == _framing.NEED_MORE and not self._c.eof:
            self._c.refill(detail)
            return True
        if status == _framing.NEED_MORE:
            self._truncated(detail)
        elif status != _STOPPED:
            self._framing_damage(status, detail)
        self._done = True
        return False

    def _truncated(self, need: int) -> None:
        avail = self._c.avail
        if avail == 0 or self._c.damaged:  # a clean end, or the cause is already recorded
            return
        offset = self._c.offset
        header = self._hdr_len if self.format == "pcap" else 12
        what = "record" if self.format == "pcap" else "block"
        if avail < header:
            code, message = "truncated_header", f"the file ends {avail} bytes into a {what} header"
        else:
            code = "truncated_record" if self.format == "pcap" else "truncated_block"
            message = f"the {what} needs {need} bytes; the file ends after {avail}"
        self._error(f"{self.format}.{code}", message, offset)

    # -- opening ----------------------------------------------------------------------------

    def _open(self) -> None:
        c = self._c
        c.refill(0)
        if c.fill == 0:
            if self.errors and self.errors[0].code == "gzip.corrupt":
                raise CaptureOpenError(self.name, "gzip_corrupt", self.errors[0].message)
            raise CaptureOpenError(self.name, "empty", "the file is empty")
        head = bytes(c.buf[: min(4, c.fill)])
        if len(head) < 4:
            if not any(m.startswith(head) for m in _ALL_MAGICS):
                raise CaptureOpenError(self.name, "unknown_format", "not a pcap or pcapng file")
            self.format = "pcapng" if _PCAPNG_MAGIC.startswith(head) else "pcap"
            self._hdr_len = 16
            self._error(f"{self.format}.truncated_header", "the file ends inside its magic number", 0)
            self._done = True
        elif head == _PCAPNG_MAGIC:
            self.format = "pcapng"
            self._open_pcapng()
        elif struct.unpack("<I", head)[0] in _PCAP_MAGICS:
            self.format = "pcap"
            self._open_pcap(struct.unpack("<I", head)[0])
        else:
            raise CaptureOpenError(
                self.name, "unknown_format", f"not a pcap or pcapng file (starts with 0x{head.hex()})"
            )

    def _open_pcap(self, magic: int) -> None:
        order, self._nsec, self._hdr_len = _PCAP_MAGICS[magic]
        self._swapped = (order == "<") != (sys.byteorder == "little")
        if self._c.fill < 24:
            self._error(
                "pcap.truncated_header", f"the file ends {self._c.fill} bytes into its 24-byte header", 0
            )
            self._done = True
            return
        major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(order + "HHiIII", self._c.buf, 4)
        self._c.pos = 24
        byte_order = "little" if order == "<" else "big"
        self.sections.append(Section(0, byte_order, (major, minor), first_interface=0))
        # Upper bits of the link-type field carry FCS information (pcap-savefile(5)).
        fcs_len = 2 * (network >> 28) if network & 0x04000000 else None
        self.interfaces.append(
            Interface(0, 0, network & 0x03FFFFFF, snaplen, tsresol=9 if self._nsec else 6, fcs_len=fcs_len)
        )
        self._linktype = network & 0xFFFF
        bound = max(snaplen, PCAP_SANE_SNAPLEN) if snaplen else self._max_record
        self._max_caplen = min(bound, self._max_record)
        if major != 2:
            self._error("pcap.unsupported_version", f"pcap version {major}.{minor} is not 2.x", 4)
            self._done = True

    def _open_pcapng(self) -> None:
        self._if_base = 0
        self._if_table = np.zeros(0, np.int64)
        self._max_block = self._max_record + (1 << 16)
        self._ncomments = np.zeros(self._batch_packets, np.uint16)
        # Read the leading SHB and IDBs now so `interfaces` is known before the first batch.
        empty = _pcapng_arrays(0)
        while True:
            _n, status, detail = self._walk_pcapng(empty, {})
            if status == _framing.FULL or not self._after_walk(status, detail):
                break

    # -- pcap -------------------------------------------------------------------------------

    def _run_pcap(self) -> Iterator[Batch]:
        c = self._c
        while not self._done:
            off, caplen, origlen, ts_ns, file_offset = _pcap_arrays(self._batch_packets)
            n, c.pos, status, detail = _framing.frame_pcap(
                c.buf, c.pos, c.fill, self._swapped, self._nsec, self._hdr_len,
                self._max_caplen, c.base, 0, off, caplen, origlen, ts_ns, file_offset,
            )  # fmt: skip
            if n:
                constant = (np.zeros(n, np.uint32), np.full(n, self._linktype, np.uint16),
                            np.full(n, NO_TP_STATUS, np.uint32), np.zeros(n, np.uint8))  # fmt: skip
                yield self._batch(n, (off, caplen, origlen, ts_ns, file_offset, *constant), {})
            self._after_walk(status, detail)

    # -- pcapng -----------------------------------------------------------------------------

    def _run_pcapng(self) -> Iterator[Batch]:
        while not self._done:
            arrays = _pcapng_arrays(self._batch_packets)
            comments: dict[int, list[str]] = {}
            n, status, detail = self._walk_pcapng(arrays, comments)
            if n:
                yield self._batch(n, arrays, comments)
            self._after_walk(status, detail)

    def _walk_pcapng(
        self, arrays: tuple[np.ndarray, ...], comments: dict[int, list[str]]
    ) -> tuple[int, int, int]:
        """Frame packets into `arrays` until C stops at something it leaves to Python; handle
        SHBs, IDBs and other blocks here and go on. Returns (rows, status, detail)."""
        c, n = self._c, 0
        while True:
            before = n
            n, c.pos, status, detail = _framing.frame_pcapng(
                c.buf, c.pos, c.fill, self._swapped, self._if_table, self._if_base,
                self._max_block, c.base, n, *arrays, self._ncomments,
            )  # fmt: skip
            if n > before:
                self._collect_comments(before, n, arrays[4], comments)
            if status == _framing.BLOCK:
                if int(detail) in FRAME_BLOCKS:
                    if n:  # frame numbers in a batch are consecutive: end it before this block
                        return n, _SPLIT, 0
                    self.numbered_blocks += 1
                if not self._on_block(int(detail)):
                    return n, _STOPPED, 0
            elif status == _framing.SHB:
                need = self._on_shb()
                if need:
                    return n, (_STOPPED if need < 0 else _framing.NEED_MORE), need
            else:
                return n, status, int(detail)

    def _collect_comments(
        self, lo: int, hi: int, file_offset: np.ndarray, into: dict[int, list[str]]
    ) -> None:
        for i in np.flatnonzero(self._ncomments[lo:hi]) + lo:
            into[int(i)] = _framing.epb_comments(
                self._c.buf, int(file_offset[i]) - self._c.base, self._swapped
            )

    def _on_shb(self) -> int:
        """Start a new section at the SHB at `_pos`. 0 when done, bytes needed, or -1 (damage)."""
        c = self._c
        offset, avail = c.offset, c.avail
        if avail < 12:
            return 12
        head = _pcapng.shb_header(bytes(c.buf[c.pos : c.pos + 12]))
        if head is None:
            self._error(
                "pcapng.bad_byte_order_magic",
                "the section header's byte-order magic is not 0x1a2b3c4d",
                offset,
            )
            return -1
        length = head.total_len
        if length < _pcapng.SHB_MIN_LEN or length % 4:
            self._error("pcapng.bad_block_length", f"section header length {length} is invalid", offset)
            return -1
        if length > self._max_block:
            self._error("pcapng.block_too_large", f"section header claims {length} bytes", offset)
            return -1
        if avail < length:
            return length
        block = bytes(c.buf[c.pos : c.pos + length])
        if block[-4:] != block[4:8]:
            self._mismatch(struct.unpack_from(head.order + "I", block, length - 4)[0], length, offset)
            return -1
        section = _pcapng.parse_shb(block, head.order, len(self.sections), len(self.interfaces))
        if section.version[0] != 1:
            version = "{}.{}".format(*section.version)
            self._error("pcapng.unsupported_version", f"section header version {version} is not 1.x", offset)
            return -1
        self.sections.append(section)
        self._swapped = (head.order == "<") != (sys.byteorder == "little")
        self._if_base = len(self.interfaces)
        self._if_table = np.zeros(0, np.int64)
        c.pos += length
        return 0

    def _on_block(self, block_type: int) -> bool:
        """Consume the well-framed non-packet block at `_pos`; False on damage."""
        c, order = self._c, self._order()
        length = struct.unpack_from(order + "I", c.buf, c.pos + 4)[0]
        if block_type == _pcapng.BT_IDB:
            if length < _pcapng.IDB_MIN_LEN:
                message = f"interface block length {length} is shorter than 20"
                self._error("pcapng.bad_block_length", message, c.offset)
                return False
            block = bytes(c.buf[c.pos : c.pos + length])
            iface = _pcapng.parse_idb(block, order, len(self.interfaces), len(self.sections) - 1)
            self.interfaces.append(iface)
            row = [iface.linktype, iface.snaplen, iface.tsresol, iface.tsoffset]
            self._if_table = np.concatenate([self._if_table, np.array(row, np.int64)])
        else:
            name = _pcapng.block_name(block_type)
            self.skipped_blocks[name] = self.skipped_blocks.get(name, 0) + 1
        c.pos += length
        return True

    def _mismatch(self, trailer: int, length: int, offset: int) -> None:
        message = f"block length {length} at the start but {trailer} at the end"
        self._error("pcapng.block_length_mismatch", message, offset)

    def _framing_damage(self, status: int, detail: int) -> None:
        """Turn a C damage status into a `CaptureError` naming the record and the numbers."""
        if status == _framing.LENGTH_MISMATCH:
            leading = struct.unpack_from(self._order() + "I", self._c.buf, self._c.pos + 4)[0]
            self._mismatch(detail, leading, self._c.offset)
            return
        if status == _framing.TOO_LARGE and self.format == "pcap":
            code = "pcap.record_too_large"
            snaplen = self.interfaces[0].snaplen
            message = (
                f"record claims {detail} captured bytes; the limit is {self._max_caplen} (snaplen {snaplen})"
            )
        elif status == _framing.TOO_LARGE:
            code, message = (
                "pcapng.block_too_large",
                f"block claims {detail} bytes; the limit is {self._max_block}",
            )
        elif status == _framing.BAD_LENGTH:
            code, message = (
                "pcapng.bad_block_length",
                f"block length {detail} is too short or not a multiple of 4",
            )
        elif status == _framing.BAD_CAPLEN:
            code, message = (
                "pcapng.caplen_exceeds_block",
                f"packet claims {detail} captured bytes, more than its block",
            )
        elif status == _framing.UNDEFINED_INTERFACE:
            defined = len(self.interfaces) - self._if_base
            code, message = (
                "pcapng.undefined_interface",
                f"packet names interface {detail}; the section has {defined}",
            )
        else:
            code, message = f"{self.format}.framing_failed", f"framing stopped with status {status}"
        self._error(code, message, self._c.offset)

    def _order(self) -> str:
        """struct prefix of the current section's byte order."""
        return "<" if (sys.byteorder == "little") != self._swapped else ">"

    # -- batches ----------------------------------------------------------------------------

    def _batch(self, n: int, columns: tuple[np.ndarray, ...], comments: dict[int, list[str]]) -> Batch:
        """A Batch of the first n rows of `columns` (in `_pcapng_arrays` order)."""
        off, caplen, origlen, ts_ns, file_offset, interface, linktype, tp_status, direction = (
            _trim(c, n) for c in columns
        )
        batch = Batch(
            buf=self._c.buf, first_frame=self.packets + self.numbered_blocks + 1, offset=off, caplen=caplen, origlen=origlen,
            ts_ns=ts_ns, linktype=linktype, interface=interface, tp_status=tp_status,
            direction=direction, file_offset=file_offset, comments=comments,
        )  # fmt: skip
        self.packets += n
        self.empty_records += int(np.count_nonzero(caplen == 0))
        return batch


def open_capture(source: str | os.PathLike[str] | BinaryIO, **options: int) -> CaptureReader:
    """Open a capture for reading; see `CaptureReader`."""
    return CaptureReader(source, **options)


def _pcap_arrays(cap: int) -> tuple[np.ndarray, ...]:
    return (np.empty(cap, np.int64), np.empty(cap, np.uint32), np.empty(cap, np.uint32),
            np.empty(cap, np.int64), np.empty(cap, np.int64))  # fmt: skip


def _pcapng_arrays(cap: int) -> tuple[np.ndarray, ...]:
    """offset, caplen, origlen, ts_ns, file_offset, interface, linktype, tp_status, direction."""
    return (*_pcap_arrays(cap), np.empty(cap, np.uint32), np.empty(cap, np.uint16),
            np.empty(cap, np.uint32), np.empty(cap, np.uint8))  # fmt: skip


def _trim(column: np.ndarray, n: int) -> np.ndarray:
    """The first n rows; copied when much smaller, so a short batch does not pin a big array."""
    return column[:n].copy() if n < column.shape[0] // 4 else column[:n]
