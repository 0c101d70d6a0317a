"""A bounds-checked reader over one frame that knows its absolute offset."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class DecodeIssue:
    """Why decoding stopped or what looked wrong, with a stable code."""

    code: str
    """Stable identifier, `layer.problem` (e.g. `ipv4.ihl_too_small`)."""
    offset: int
    """Absolute byte offset in the frame."""
    detail: str = ""
    """Human detail (values seen)."""

    def __str__(self) -> str:
        return f"{self.code} at {self.offset}" + (f" ({self.detail})" if self.detail else "")


class Short(Exception):
    """Internal: a read ran past the end. Caught at each layer boundary, never escapes decode()."""

    def __init__(self, layer: str, offset: int, need: int) -> None:
        super().__init__(f"{layer}: need {need} bytes at {offset}")
        self.layer = layer
        self.offset = offset
        self.need = need


class Cursor:
    """Reads big-endian fields from `data[pos:end]`; every read checks bounds."""

    __slots__ = ("data", "pos", "end", "layer")

    def __init__(self, data: bytes, pos: int, end: int | None = None, layer: str = "frame") -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))
        self.layer = layer

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.pos)

    def need(self, n: int) -> None:
        if self.pos + n > self.end:
            raise Short(self.layer, self.pos, n)

    def pull_u8(self) -> int:
        self.need(1)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def pull_u16(self) -> int:
        self.need(2)
        (v,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return v

    def pull_u32(self) -> int:
        self.need(4)
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return v

    def pull_bytes(self, n: int) -> bytes:
        if n < 0:
            raise Short(self.layer, self.pos, n)
        self.need(n)
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(v)

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n
