"""Byte sources for the reader: a path, standard input (`-`) or a file object, gzip or not.

Everything is streamed: a gzip file is inflated piece by piece through zlib with a bounded output
size per call, never loaded whole, and never seeked (standard input and pipes cannot seek).
gzip is recognised by its magic bytes (1f 8b), not by the file name.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol

from badsum.capture.errors import CaptureOpenError

GZIP_MAGIC = b"\x1f\x8b"
_COMPRESSED_READ = 1 << 20


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

    def __init__(self, raw: _Plain) -> None:
        self._raw = raw
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._in = b""
        self._mid_member = False

    def readinto(self, view: memoryview) -> int:
        while True:
            if not self._in:
                self._in = self._raw.read(_COMPRESSED_READ)
                if not self._in:
                    if self._mid_member:
                        raise StreamDamage("gzip.truncated", "the gzip stream ends inside a member")
                    return 0
            if self._d.eof:
                if not self._in.strip(b"\0"):  # zero padding after the last member (tape, dd)
                    self._in = b""
                    continue
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._d.decompress(self._in, len(view))
            except zlib.error as exc:
                raise StreamDamage("gzip.corrupt", f"the gzip stream is corrupt ({exc})") from None
            self._mid_member = not self._d.eof
            self._in = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            if out:
                view[: len(out)] = out
                return len(out)


def open_source(source: str | os.PathLike[str] | BinaryIO) -> tuple[ByteSource, bool, str, Callable[[], None]]:
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
    byte_source: ByteSource = _Gunzip(plain) if compressed else plain
    return byte_source, compressed, name, (lambda: _close_quietly(owned))


def _open_path(name: str) -> BinaryIO:
    try:
        return open(name, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
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
        try:
            fileobj.close()
        except OSError:
            pass
