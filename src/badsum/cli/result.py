"""What a command returns, and the one renderer that prints it (docs/cli.md, "Exit codes").

A command's `run(args)` returns a `Result`: its exit code, the envelope's `data` and `errors`, the
text for people and the lines for standard error. `render` prints it: the JSON envelope under
`--json`, else the text. A check that stops a command raises `Failure`; `Result.failed` turns it
into a result. The long-running commands (`watch`, `exporter`) stream their own lines and return
an `ExitCode`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from badsum.report.envelope import Envelope
from badsum.report.output import stdout


class ExitCode(IntEnum):
    """Every exit code badsum documents; a script may rely on each meaning."""

    OK = 0
    """Nothing wrong."""
    FINDINGS = 1
    """Something wrong was found (a bad checksum, a first bad hop, a failing rule)."""
    USAGE = 2
    """The command line cannot be carried out as given (argparse's own code)."""
    UNREADABLE = 3
    """Could not read or inspect: a damaged input, not root, a command that failed."""
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT) before there was anything to report."""
    BROKEN_PIPE = 141
    """The reader of standard output went away (128 + SIGPIPE), as a SIGPIPE'd process exits."""

    @property
    def status(self) -> str:
        """The envelope's `status` for this code."""
        return {ExitCode.OK: "ok", ExitCode.FINDINGS: "findings"}.get(self, "error")


def say(message: str) -> None:
    """One `badsum: ...` line on standard error, flushed (it may precede a long wait)."""
    print(f"badsum: {message}", file=sys.stderr, flush=True)


class Failure(Exception):
    """A command cannot go on: a stable `code`, one line for people, and the exit code."""

    def __init__(self, code: str, message: str, exit_code: ExitCode = ExitCode.UNREADABLE) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code


@dataclass(slots=True)
class Result:
    """One command's outcome, printed by `render`."""

    command: str
    """The envelope's `command` (`doctor`, `lab run`, ...)."""
    exit_code: ExitCode
    data: dict[str, Any] = field(default_factory=dict)
    """The envelope's `data`."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """The envelope's `errors`: each `{code, message}`."""
    text: str | Callable[[], str] = ""
    """What people read on standard output (built only when it is printed)."""
    stderr: list[str] = field(default_factory=list)
    """Lines for standard error in either mode (why the command could not do its job)."""
    text_stderr: list[str] = field(default_factory=list)
    """Lines for standard error in text mode only (under --json they are in `errors`)."""
    status: str | None = None
    """The envelope's `status` when it is not the exit code's word (canary: its verdict)."""

    @classmethod
    def failed(cls, command: str, failure: Failure, data: dict[str, Any] | None = None) -> Result:
        """A run that stopped: nothing on standard output but the envelope, one line on standard error."""
        error = {"code": failure.code, "message": failure.message}
        return cls(command, failure.exit_code, data or {}, [error], stderr=[failure.message])

    def envelope(self) -> Envelope:
        return Envelope(self.command, self.status or self.exit_code.status, self.data, self.errors)


def render(result: Result, as_json: bool) -> int:
    """Print `result` (the envelope under --json, else its text), then its lines for standard error."""
    out = stdout()  # a write that fails (disk full, stdout closed) is OutputError: main says so, exit 3
    if as_json:
        print(result.envelope().to_json(), file=out)
    else:
        text = result.text() if callable(result.text) else result.text
        if text:
            out.write(text)
    out.flush()
    for line in result.stderr if as_json else [*result.stderr, *result.text_stderr]:
        say(line)
    return int(result.exit_code)


__all__ = ["ExitCode", "Failure", "Result", "render", "say"]
