"""Byte sources for the reader: a path, standard input (`-`) or a file object, gzip or not.

Everything is streamed: a gzip file is inflated piece by piece through zlib with a bounded output
size per call, never loaded whole, and never seeked (standard input and pipes cannot seek).
gzip is recognised by its magic bytes (1f 8b), not by the file name.

The inflater is zlib-ng's zlib-compatible module when it is installed (`pip install badsum[fast]`),
else the standard library's zlib: both keep `decompressobj().copy()` and zlib's error messages,
which the damage handling below relies on. python-isal's isal_zlib inflates this kind of capture
about 20% faster but has no `copy()` and one message for both trailer checks, so the packets
before a damaged call and the gzip.crc_mismatch / gzip.length_mismatch codes could not be kept.
A gzip source inflates on its own thread, ahead of the reader (inflate releases the GIL), so the
scan of one chunk overlaps the inflate of the next.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import queue
import stat
import sys
import threading
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import BinaryIO, Protocol

from badsum.capture.errors import CaptureOpenError

GZIP_MAGIC = b"\x1f\x8b"
_COMPRESSED_READ = 1 << 20
_AHEAD_PIECE = 4 << 20
"""Bytes the inflate thread hands over at a time; two pieces wait at most (memory stays flat)."""


def inflate_backends() -> list[tuple[str, ModuleType]]:
    """The zlib-compatible inflaters installed, fastest first; the standard library's zlib last."""
    out = []
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pass
    else:
        out.append(("zlib-ng", zlib_ng))
    out.append(("zlib", zlib))
    return out


class StreamDamage(Exception):
    """The byte stream itself is damaged (truncated or corrupt gzip, failing disk)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ByteSource(Protocol):
    """What the reader needs: fill a buffer, return how many bytes (0 at the end)."""

    def readinto(self, view: memoryview) -> int: ...


class _Plain:
    """A raw stream with bytes already peeked at its start served first."""

    def __init__(self, fileobj: BinaryIO, head: bytes) -> None:
        self._f = fileobj
        self._head = head
        self._readinto = getattr(fileobj, "readinto", None)

    def read(self, n: int) -> bytes:
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._f.read(n) or b""

    def readinto(self, view: memoryview) -> int:
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._readinto is not None:
            return self._readinto(view) or 0
        data = self._f.read(len(view)) or b""
        view[: len(data)] = data
        return len(data)


class _Gunzip:
    """Inflates a gzip stream (several members allowed, as `cat a.gz b.gz` makes) on demand.

    Every byte inflated before damage is delivered before `StreamDamage` is raised, so the reader
    keeps the packets that precede a truncated or corrupt gzip tail.
    """

    def __init__(self, raw: _Plain, backend: ModuleType | None = None) -> None:
        self._raw = raw
        self._z = backend or inflate_backends()[0][1]
        self._d = self._z.decompressobj(16 + zlib.MAX_WBITS)
        self._in = b""
        self._mid_member = False
        self._damage: StreamDamage | None = None
        """Found while inflating; raised once the bytes before it are delivered."""

    def readinto(self, view: memoryview) -> int:
        out = self.read_piece(len(view))
        view[: len(out)] = out
        return len(out)

    def read_piece(self, limit: int) -> bytes:
        """Up to `limit` inflated bytes (b"" at the end), as inflate made them: no copy."""
        if self._damage is not None:
            raise self._damage
        while True:
            if not self._in:
                self._in = self._raw.read(_COMPRESSED_READ)
                if not self._in:
                    if self._mid_member:
                        raise StreamDamage("gzip.truncated", "the gzip stream ends inside a member")
                    return b""
            if self._d.eof:
                if not self._in.strip(b"\0"):  # zero padding after the last member (tape, dd)
                    self._in = b""
                    continue
                self._d = self._z.decompressobj(16 + zlib.MAX_WBITS)
            out = self._inflate(limit)
            if self._damage is not None:
                if not out:
                    raise self._damage
            else:
                self._mid_member = not self._d.eof
                self._in = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            if out:
                return out

    def _inflate(self, limit: int) -> bytes:
        before = self._d.copy()
        try:
            return self._d.decompress(self._in, limit)
        except self._z.error as exc:
            self._damage = _gzip_damage(exc)
        # zlib drops the whole output of a call that fails, up to `limit` (a chunk, 8 MiB): at a bad
        # CRC trailer that is the capture's last packets, every packet of a small file. Find the
        # longest input prefix that still inflates cleanly and keep its output.
        good, ok, bad = b"", 0, len(self._in)
        while bad - ok > 1:
            mid = (ok + bad) // 2
            try:
                out = before.copy().decompress(self._in[:mid], limit)
            except self._z.error:
                bad = mid
            else:
                ok, good = mid, out
        return good


class _ReadAhead:
    """A byte source read on a thread of its own, a few pieces ahead of the consumer.

    What the source delivers before an exception (StreamDamage, OSError) is handed over first,
    then the exception is raised in the consumer, in order: the reader sees the same bytes and the
    same damage as without the thread.
    """

    def __init__(self, source: _Gunzip, piece: int = _AHEAD_PIECE) -> None:
        self._src = source
        self._piece = piece
        self._q: queue.Queue = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._cur = memoryview(b"")
        self._end: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._fill, name="badsum-inflate", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        while not self._stop.is_set():
            try:
                buf = self._src.read_piece(self._piece)
            except BaseException as exc:  # noqa: BLE001 - delivered to the consumer, in order
                self._put((None, exc))
                return
            if not buf:
                self._put((None, None))
                return
            self._put((buf, None))

    def _put(self, item: tuple) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readinto(self, view: memoryview) -> int:
        while not len(self._cur):
            if self._end is not None:
                raise self._end
            if self._done:
                return 0
            buf, exc = self._q.get()
            if buf is None:
                self._done = True
                self._end = exc
            else:
                self._cur = memoryview(buf)
        n = min(len(view), len(self._cur))
        view[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n

    def close(self) -> None:
        """Stop the thread (before its file is closed under it)."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join()


def _gzip_damage(exc: Exception) -> StreamDamage:
    # zlib's own words for the trailer checks (inflate.c): the data inflated, the trailer disagrees.
    if "incorrect data check" in str(exc):
        return StreamDamage("gzip.crc_mismatch", "the CRC-32 in the gzip trailer does not match the inflated data")
    if "incorrect length check" in str(exc):
        return StreamDamage("gzip.length_mismatch", "the length in the gzip trailer does not match the inflated data")
    return StreamDamage("gzip.corrupt", f"the gzip stream is corrupt ({exc})")


def open_source(
    source: str | os.PathLike[str] | BinaryIO,
) -> tuple[ByteSource, bool, str, Callable[[], None]]:
    """Open `source`; return (byte source, gzip?, display name, close function).

    Raises `CaptureOpenError` when nothing can be read. Standard input and caller-given file
    objects are not closed by the returned close function: the caller owns them.
    """
    owned: BinaryIO | None = None
    if isinstance(source, (str, os.PathLike)):
        name = os.fsdecode(source)
        if name == "-":
            stdin = sys.stdin
            if stdin is None:
                raise CaptureOpenError(name, "io_error", "there is no standard input")
            fileobj: BinaryIO = stdin.buffer
        else:
            fileobj = owned = _open_path(name)
    else:
        fileobj = source
        name = str(getattr(source, "name", "<stream>"))
    try:
        head = _read_exactly(fileobj, len(GZIP_MAGIC))
    except OSError as exc:
        _close_quietly(owned)
        raise CaptureOpenError(name, "io_error", exc.strerror or str(exc)) from None
    plain = _Plain(fileobj, head)
    compressed = head == GZIP_MAGIC
    if not compressed:
        return plain, False, name, (lambda: _close_quietly(owned))
    ahead = _ReadAhead(_Gunzip(plain))

    def close() -> None:
        ahead.close()
        _close_quietly(owned)

    return ahead, True, name, close


def _open_path(name: str) -> BinaryIO:
    try:
        return open(name, "rb", buffering=0)
    except FileNotFoundError:
        raise CaptureOpenError(name, "not_found", "no such file") from None
    except PermissionError:
        raise CaptureOpenError(name, "permission_denied", "permission denied") from None
    except IsADirectoryError:
        raise CaptureOpenError(name, "is_a_directory", "it is a directory") from None
    except OSError as exc:
        raise CaptureOpenError(name, "io_error", exc.strerror or str(exc)) from None


def _read_exactly(fileobj: BinaryIO, n: int) -> bytes:
    """Up to n bytes; fewer only at the end (pipes return short reads)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = fileobj.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _close_quietly(fileobj: BinaryIO | None) -> None:
    if fileobj is not None:
        with contextlib.suppress(OSError):
            fileobj.close()


class Chunks:
    """The sliding window over the byte stream: `buf[pos:fill]` is unconsumed data, `buf[0]`
    is at offset `base` of the (decompressed) file.

    `refill` moves the unconsumed tail into another buffer and tops it up; the current buffer is
    never written again, because the batches already yielded point into it.
    """

    def __init__(
        self, source: ByteSource, chunk_size: int, on_damage: Callable[[str, str, int], None]
    ) -> None:
        self._src = source
        self._chunk_size = chunk_size
        self._on_damage = on_damage
        self._spare: list[bytearray] = []
        self.buf = bytearray()
        self.base = self.pos = self.fill = 0
        self.eof = False
        self.damaged = False
        """The stream itself failed (gzip, I/O): truncation after it is not news."""

    @property
    def avail(self) -> int:
        return self.fill - self.pos

    @property
    def offset(self) -> int:
        """File offset of `pos`."""
        return self.base + self.pos

    def refill(self, need: int) -> None:
        """Make at least `need` bytes available from `pos` if the stream has them: a full chunk,
        or more for a record larger than a chunk."""
        tail = self.avail
        # Grow geometrically towards a large record rather than trusting its claimed length at
        # once: a truncated file that claims 200 MB must not cost 200 MB.
        size = max(self._chunk_size, min((need + 0xFFFF) & ~0xFFFF, 2 * max(tail, self._chunk_size)))
        new = self._take_buffer(size)
        with memoryview(self.buf) as old, memoryview(new) as view:
            view[:tail] = old[self.pos : self.fill]
            fill = tail
            while fill < size and not self.eof:
                got = self._read(view[fill:], self.offset + fill)
                self.eof = not got
                fill += got
        self.base += self.pos
        if len(self.buf) == self._chunk_size and len(self._spare) < 2:
            self._spare.append(self.buf)
        self.buf, self.pos, self.fill = new, 0, fill

    def release(self) -> None:
        self.buf = bytearray()
        self._spare.clear()

    def _read(self, view: memoryview, offset: int) -> int:
        try:
            return self._src.readinto(view)
        except StreamDamage as exc:
            code, message = exc.code, exc.message
        except OSError as exc:
            code, message = "io.read_error", f"reading failed: {exc.strerror or exc}"
        self.damaged = True
        self._on_damage(code, message, offset)
        return 0

    def _take_buffer(self, size: int) -> bytearray:
        """A spare chunk buffer nobody references any more (no batch, no view: only our list
        holds it), else a new one. Reuse saves zero-filling and page-faulting every chunk."""
        if size == self._chunk_size:
            for i in range(len(self._spare)):
                if sys.getrefcount(self._spare[i]) == 2:  # the list's reference + the argument
                    return self._spare.pop(i)
        return bytearray(size)


class MappedChunks(Chunks):
    """`Chunks` over a regular file without copying: each refill maps a new read-only window.

    A window stays mapped while a batch points into it and is unmapped when the last one goes,
    so resident memory stays at a few windows whatever the file size (file pages count in RSS).
    The copy that `readinto` makes was the largest cost of a scan after the checksums themselves.
    """

    def __init__(self, fd: int, size: int, chunk_size: int, on_damage: Callable[[str, str, int], None]) -> None:
        super().__init__(_NoSource(), chunk_size, on_damage)
        self._fd = fd
        self._size = size
        self.buf = b""

    def refill(self, need: int) -> None:
        start = self.base + self.pos
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        size = max(self._chunk_size, need + (start - aligned))
        size = min(size, self._size - aligned)
        if size <= 0:
            self.base, self.buf, self.pos, self.fill, self.eof = start, b"", 0, 0, True
            return
        try:
            window = mmap.mmap(self._fd, size, offset=aligned, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            self.damaged, self.eof = True, True
            self._on_damage("io.read_error", f"mapping the file failed: {exc}", start)
            return
        with contextlib.suppress(AttributeError, OSError):
            window.madvise(mmap.MADV_SEQUENTIAL)
        self.base, self.buf, self.pos, self.fill = aligned, window, start - aligned, size
        self.eof = aligned + size >= self._size

    def release(self) -> None:
        # Batches the caller still holds keep their window (and the descriptor mmap duplicated
        # for it) until they are dropped; data a caller holds stays valid after close.
        self.buf = b""


class _NoSource:
    def readinto(self, view: memoryview) -> int:
        return 0


def mapped_chunks(
    source: ByteSource, chunk_size: int, on_damage: Callable[[str, str, int], None]
) -> MappedChunks | None:
    """Zero-copy chunks when `source` is an uncompressed regular file we can map, else None."""
    if not isinstance(source, _Plain):  # gzip streams are _Gunzip
        return None
    try:
        fd = source._f.fileno()
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    # The two peeked bytes came from offset 0 of a file we opened ourselves (not a pipe).
    if source._f.tell() != len(GZIP_MAGIC):
        return None
    return MappedChunks(fd, st.st_size, chunk_size, on_damage)
