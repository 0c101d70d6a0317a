"""report.output: a failed write to standard output is an `OutputError` (one line, exit 3), never an
`OSError` a command would take for its own files; a closed pipe stays `BrokenPipeError` (exit 141).
The real process under /dev/full and `>&-` is tests/cli/test_pcap_cli.py."""

from __future__ import annotations

import errno
import io
import sys

import pytest

from badsum.report.output import (
    EXIT_CANNOT_WRITE,
    OutputError,
    Stdout,
    cannot_write,
    stdout,
)


class Failing(io.StringIO):
    def __init__(self, exc: OSError, at: str) -> None:
        super().__init__()
        self.exc, self.at = exc, at

    def write(self, text: str) -> int:
        if self.at == "write":
            raise self.exc
        return super().write(text)

    def flush(self) -> None:
        if self.at == "flush":
            raise self.exc


@pytest.mark.parametrize("at", ["write", "flush"])
def test_a_full_disk_is_an_output_error_not_an_oserror(at: str) -> None:
    out = Stdout(Failing(OSError(errno.ENOSPC, "No space left on device"), at))
    with pytest.raises(OutputError) as exc:
        out.write("report\n")
        out.flush()
    assert not isinstance(exc.value, OSError)
    assert str(exc.value) == "cannot write to standard output: No space left on device"


@pytest.mark.parametrize("at", ["write", "flush"])
def test_a_closed_pipe_stays_a_broken_pipe(at: str) -> None:
    out = Stdout(Failing(BrokenPipeError(errno.EPIPE, "Broken pipe"), at))
    with pytest.raises(BrokenPipeError):
        out.write("report\n")
        out.flush()


def test_no_standard_output_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of a descriptor 1 closed at start
    with pytest.raises(OutputError) as exc:
        stdout()
    assert str(exc.value) == "cannot write to standard output: Bad file descriptor"


def test_stdout_writes_through_and_wraps_once(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = stdout()
    print("a line", file=out)
    out.flush()
    assert capsys.readouterr().out == "a line\n"
    monkeypatch.setattr(sys, "stdout", out)  # a command that installed it for print()
    assert stdout() is out


def test_cannot_write_says_one_line_and_gives_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert cannot_write(OutputError("No space left on device")) == EXIT_CANNOT_WRITE == 3
    assert capsys.readouterr().err == "badsum: cannot write to standard output: No space left on device\n"
