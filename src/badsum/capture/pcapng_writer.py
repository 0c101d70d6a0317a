"""A streaming pcapng writer (little-endian) that never leaves a half-written file behind.

Output goes to a temporary file in the destination directory and is renamed over the
destination only by a successful `close()`; an error, `abort()`, or a writer dropped unclosed
removes the temporary file. The destination must be a regular file or a new name
(badsum.outfile): a rename would put a regular file in place of a FIFO or a device node. Used
by `badsum capture` (kernel status per packet, see docs/pcapng-encoding.md) and by `--annotate`
(copy packets, add comments).
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import numpy as np

from badsum import __version__
from badsum.capture.info import Interface
from badsum.native import _framing
from badsum.outfile import check_writable_target
from badsum.scan.batch import Batch

TP_STATUS_PREFIX = "badsum:tp_status="
NO_TP_STATUS = 0xFFFFFFFF
# <linux/if_packet.h>: the tp_status bits a PACKET_AUXDATA reader can see.
TP_STATUS_BITS = {
    0x1: "TP_STATUS_USER",
    0x2: "TP_STATUS_COPY",
    0x4: "TP_STATUS_LOSING",
    0x8: "TP_STATUS_CSUMNOTREADY",
    0x10: "TP_STATUS_VLAN_VALID",
    0x20: "TP_STATUS_BLK_TMO",
    0x40: "TP_STATUS_VLAN_TPID_VALID",
    0x80: "TP_STATUS_CSUM_VALID",
    0x100: "TP_STATUS_GSO_TCP",
}
DIRECTION_INBOUND, DIRECTION_OUTBOUND = 1, 2

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_OPT_COMMENT, _EPB_FLAGS = 1, 2
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_SHB_HARDWARE, _SHB_OS, _SHB_USERAPPL = 2, 3, 4
_EPB_HEAD = struct.Struct("<IIIIIII")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_END_OF_OPTIONS = b"\0\0\0\0"
_ENCODE_PACKETS = 8192


def tp_status_comment(tp_status: int) -> str:
    """The opt_comment badsum stores the kernel status in (docs/pcapng-encoding.md), e.g.
    `badsum:tp_status=0x00000108 TP_STATUS_CSUMNOTREADY|TP_STATUS_GSO_TCP`."""
    tp_status &= 0xFFFFFFFF
    names = [TP_STATUS_BITS.get(1 << b, f"0x{1 << b:x}") for b in range(32) if tp_status >> b & 1]
    text = f"{TP_STATUS_PREFIX}0x{tp_status:08x}"
    return f"{text} {'|'.join(names)}" if names else text


def parse_tp_status_comment(comment: str) -> int | None:
    """The tp_status in a badsum status comment; None for any other comment."""
    if not comment.startswith(TP_STATUS_PREFIX + "0x"):
        return None
    digits = comment[len(TP_STATUS_PREFIX) + 2 :].split(" ", 1)[0]
    if not 1 <= len(digits) <= 8 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        return None
    return int(digits, 16)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + _PAD[len(value) & 3]


def _text_option(code: int, text: str) -> bytes:
    value = text.encode("utf-8")
    if len(value) > 0xFFFF:  # an option length is 16 bits: cut at a character boundary
        value = value[:0xFFFF].decode("utf-8", "ignore").encode("utf-8")
    return _option(code, value)


def _epb_options(comments: Sequence[str], direction: int) -> bytes:
    """opt_comment for each comment, epb_flags for a known direction, then opt_endofopt."""
    parts = [_text_option(_OPT_COMMENT, c) for c in comments]
    if direction in (DIRECTION_INBOUND, DIRECTION_OUTBOUND):
        parts.append(_option(_EPB_FLAGS, struct.pack("<I", direction)))
    return b"".join(parts) + _END_OF_OPTIONS if parts else b""


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class PcapngWriter:
    """Write one section of little-endian pcapng to `path`, atomically.

    Interfaces are declared with `add_interface` (or implicitly by `write_batch`); timestamps are
    written in nanoseconds (if_tsresol 9). Use as a context manager: an exception inside the
    `with` aborts, a normal exit commits. Raises badsum.outfile.UnsafeTarget, before creating
    anything, when `path` is not a regular file or a new name.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        userappl: str | None = None,
        hardware: str | None = None,
        os_name: str | None = None,
        comments: Sequence[str] = (),
        buffer_size: int = 1 << 20,
    ) -> None:
        self.path = os.fspath(path)
        check_writable_target(self.path)  # UnsafeTarget before any temporary file exists
        directory, base = os.path.split(os.path.abspath(self.path))
        fd, self._tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=directory)
        self._f: BinaryIO = os.fdopen(fd, "wb", buffering=buffer_size)
        self._finalizer = weakref.finalize(self, _discard, self._f, self._tmp)
        self._closed = False
        self._idb_by_key: dict[tuple[int, int, int], int] = {}
        self.interfaces = 0
        """IDBs written so far."""
        self.packets = 0
        """EPBs written so far."""
        options = [_text_option(_OPT_COMMENT, c) for c in comments]
        options += [_text_option(code, value) for code, value in (
            (_SHB_HARDWARE, hardware), (_SHB_OS, os_name),
            (_SHB_USERAPPL, userappl if userappl is not None else f"badsum {__version__}"),
        ) if value]  # fmt: skip
        body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + b"".join(options) + _END_OF_OPTIONS
        self._write(_block(_SHB, body))

    # -- writing ----------------------------------------------------------------------------

    def add_interface(
        self, linktype: int, *, snaplen: int = 0, name: str | None = None, description: str | None = None
    ) -> int:
        """Write an IDB; return its interface id. snaplen 0 means no limit."""
        options = [_option(_IF_TSRESOL, b"\x09")]
        options += [_text_option(c, v) for c, v in ((_IF_NAME, name), (_IF_DESCRIPTION, description)) if v]
        body = struct.pack("<HHI", linktype & 0xFFFF, 0, snaplen & 0xFFFFFFFF) + b"".join(options)
        self._write(_block(_IDB, body + _END_OF_OPTIONS))
        self.interfaces += 1
        return self.interfaces - 1

    def write_packet(
        self,
        interface_id: int,
        data: bytes | bytearray | memoryview,
        *,
        ts_ns: int,
        origlen: int | None = None,
        comments: Sequence[str] = (),
        direction: int = 0,
        tp_status: int | None = None,
    ) -> None:
        """Write one EPB. A tp_status other than None/0xFFFFFFFF becomes the status comment
        (unless `comments` already has one); direction 1/2 becomes epb_flags inbound/outbound."""
        if not 0 <= interface_id < self.interfaces:
            raise ValueError(f"interface {interface_id} was not added")
        comments = _with_status(list(comments), tp_status)
        length = len(data)
        self._write_epb(
            interface_id, data, length, length if origlen is None else origlen, ts_ns, comments, direction
        )

    def write_batch(
        self,
        batch: Batch,
        comments_by_index: Mapping[int, Sequence[str]] | None = None,
        *,
        interfaces: Sequence[Interface] | None = None,
    ) -> None:
        """Copy every packet of `batch`, keeping its comments, status and direction, adding
        `comments_by_index[i]` to packet i. One IDB is written per distinct (link type, snaplen,
        source interface) as first met; `interfaces` (a reader's) supplies snaplen and names.
        Packets are encoded in C; only those with comments or a status pass through Python."""
        n = len(batch)
        if not n:
            return
        idb = self._idbs_for(batch, interfaces)
        extra = comments_by_index or {}
        options: list[bytes | None] = [None] * n
        with_status = np.flatnonzero(batch.tp_status != NO_TP_STATUS).tolist()
        for i in sorted({*batch.comments, *(k for k in extra if 0 <= k < n), *with_status}):
            comments = [*batch.comments.get(i, ()), *extra.get(i, ())]
            comments = _with_status(comments, int(batch.tp_status[i]))
            options[i] = _epb_options(comments, int(batch.direction[i])) or None
        offset = np.ascontiguousarray(batch.offset, np.int64)
        caplen = np.ascontiguousarray(batch.caplen, np.uint32)
        origlen = np.ascontiguousarray(batch.origlen, np.uint32)
        ts_ns = np.ascontiguousarray(batch.ts_ns, np.int64)
        direction = np.ascontiguousarray(batch.direction, np.uint8)
        for lo in range(0, n, _ENCODE_PACKETS):  # bounded pieces: the output is a copy
            s = slice(lo, lo + _ENCODE_PACKETS)
            encoded = _framing.encode_epbs(
                batch.buf, offset[s], caplen[s], origlen[s], ts_ns[s], idb[s], direction[s], options[s]
            )
            self._write(encoded)
        self.packets += n

    def _idbs_for(self, batch: Batch, interfaces: Sequence[Interface] | None) -> np.ndarray:
        """Per packet, the IDB id (uint32) for its (linktype, snaplen, source interface)."""
        key = batch.interface.astype(np.uint64) << np.uint64(16) | batch.linktype.astype(np.uint64)
        uniq, inverse = np.unique(key, return_inverse=True)
        ids = []
        for k in uniq.tolist():
            source, linktype = k >> 16, k & 0xFFFF
            info = interfaces[source] if interfaces is not None and source < len(interfaces) else None
            snaplen = info.snaplen if info else 0
            found = self._idb_by_key.get((linktype, snaplen, source))
            if found is None:
                name, description = (info.name, info.description) if info else (None, None)
                found = self.add_interface(linktype, snaplen=snaplen, name=name, description=description)
                self._idb_by_key[(linktype, snaplen, source)] = found
            ids.append(found)
        per_packet: np.ndarray = np.asarray(ids, dtype=np.uint32)[inverse.reshape(-1)]
        return per_packet

    def _write_epb(
        self, idb: int, data: bytes | bytearray | memoryview, caplen: int, origlen: int,
        ts_ns: int, comments: Sequence[str], direction: int,
    ) -> None:  # fmt: skip
        options = _epb_options(comments, direction)
        pad = _PAD[caplen & 3]
        total = 32 + caplen + len(pad) + len(options)
        ts = ts_ns & 0xFFFFFFFFFFFFFFFF
        head = _EPB_HEAD.pack(_EPB, total, idb, ts >> 32, ts & 0xFFFFFFFF, caplen, origlen & 0xFFFFFFFF)
        self._write(head, data, pad + options + struct.pack("<I", total))
        self.packets += 1

    def _write(self, *parts: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ValueError("the pcapng writer is closed")
        try:
            for part in parts:
                self._f.write(part)
        except BaseException:
            self.abort()
            raise

    # -- ending -----------------------------------------------------------------------------

    def close(self) -> None:
        """Commit: flush, fsync, and rename the temporary file onto `path`. Idempotent."""
        if self._closed:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            umask = os.umask(0o022)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp made it 0600
            check_writable_target(self.path)  # again: a long capture gives time to put a FIFO there
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()

    def abort(self) -> None:
        """Discard everything written; `path` is left as it was. Idempotent."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _with_status(comments: list[str], tp_status: int | None) -> list[str]:
    if tp_status is None or tp_status == NO_TP_STATUS:
        return comments
    if any(c.startswith(TP_STATUS_PREFIX) for c in comments):
        return comments
    return [tp_status_comment(tp_status), *comments]


def _discard(fileobj: BinaryIO, tmp: str) -> None:
    with contextlib.suppress(OSError):
        fileobj.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
