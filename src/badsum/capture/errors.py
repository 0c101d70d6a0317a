"""What can go wrong reading a capture: damage is data on the reader, not an exception.

A damaged file still yields every packet framed before the damage; the reader then stops and
records one `CaptureError`. Only a file that cannot be opened at all, or whose first bytes are not
a capture format, raises `CaptureOpenError` (the CLI maps it to exit code 3, "could not inspect").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CaptureError:
    """Damage found while reading; reading stopped at `offset`."""

    code: str
    """Stable id, `<format>.<what>`: `pcap.record_too_large`, `pcapng.block_length_mismatch`..."""
    message: str
    """One human sentence with the numbers that explain it."""
    offset: int
    """Absolute byte offset in the (decompressed) file of the record or block at fault."""

    def __str__(self) -> str:
        return f"{self.code} at {self.offset}: {self.message}"


class CaptureOpenError(Exception):
    """The capture cannot be read at all: missing, unreadable, empty, or not pcap/pcapng."""

    exit_code = 3
    """badsum's documented exit code for "could not inspect"."""

    def __init__(self, path: str, reason: str, message: str) -> None:
        super().__init__(f"cannot read capture {path}: {message}")
        self.path = path
        """The name the caller gave (`-` for standard input)."""
        self.reason = reason
        """Stable id: `not_found`, `permission_denied`, `is_a_directory`, `io_error`, `empty`,
        `unknown_format`, `gzip_corrupt`."""
