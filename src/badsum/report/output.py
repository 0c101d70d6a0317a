"""Standard output for reports: a write that fails is one line naming standard output, not a traceback.

`badsum pcap --json > /dev/full` (ENOSPC) or `badsum pcap >&-` (no standard output at all) cannot
deliver the report: the command says so on standard error and exits 3 (could not inspect,
docs/cli.md). `OutputError` is deliberately not an `OSError`, so a command's own handling of its
input and output files never mistakes it for theirs. A reader that goes away (`| head`, EPIPE)
stays `BrokenPipeError`, which `badsum.cli.main` turns into exit 141.

Use: `out = stdout()` before any work, write the report to `out` (print(file=out),
Console(file=out), a JSON-lines sink), `out.flush()` at the end, and on `OutputError` return
`cannot_write(e)` (the one line, and `EXIT_CANNOT_WRITE`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import TextIO

#: docs/cli.md: 3, could not inspect (the report could not be delivered).
EXIT_CANNOT_WRITE = 3


class OutputError(Exception):
    """Standard output cannot be written: disk full, descriptor closed, I/O error."""

    def __init__(self, strerror: str) -> None:
        super().__init__(f"cannot write to standard output: {strerror}")
        self.strerror = strerror


class Stdout:
    """A text stream over `sys.stdout` whose failed writes raise `OutputError` (EPIPE excepted)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._failed(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._failed(e) from None

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def __getattr__(self, name: str) -> object:
        # The rest of TextIO (`buffer`, `errors`, `closed` ...) for code handed this as sys.stdout.
        if name == "_stream":
            raise AttributeError(name)
        return getattr(self._stream, name)

    def _failed(self, e: OSError) -> OutputError:
        # What could not be written stays in the buffer, and the interpreter flushes it again at
        # exit ("Exception ignored ...", exit 120): send the rest to /dev/null, as main() does for EPIPE.
        with contextlib.suppress(OSError, ValueError):
            if self._stream.fileno() == 1:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.close(devnull)
        return OutputError(e.strerror or str(e))


def stdout() -> Stdout:
    """Standard output for a report; raises `OutputError` at once when there is none (`>&-`)."""
    stream = sys.stdout
    if isinstance(stream, Stdout):
        return stream
    if stream is None:  # Python's sys.stdout when descriptor 1 was closed at start
        raise OutputError(os.strerror(errno.EBADF))
    return Stdout(stream)


def cannot_write(e: OutputError) -> int:
    """Say on standard error that the report could not be written; the exit code to return."""
    print(f"badsum: {e}", file=sys.stderr, flush=True)
    return EXIT_CANNOT_WRITE
