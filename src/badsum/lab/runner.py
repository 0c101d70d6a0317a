"""Running commands for a lab: argv lists with timeouts, in a namespace when asked."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class CommandError(RuntimeError):
    """A command failed or timed out; the message names it and quotes its stderr."""

    def __init__(self, argv: list[str], detail: str) -> None:
        super().__init__(f"{' '.join(argv)}: {detail}")
        self.argv = argv
        self.detail = detail


def in_ns(ns: str | None, argv: list[str]) -> list[str]:
    return argv if ns is None else ["ip", "netns", "exec", ns, *argv]


def run(argv: list[str], *, ns: str | None = None, timeout: float = 20, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = in_ns(ns, argv)
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input, check=False)
    except subprocess.TimeoutExpired:
        raise CommandError(full, f"timed out after {timeout:g} s") from None
    except FileNotFoundError:
        raise CommandError(full, f"{full[0]} is not installed") from None
    if check and proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise CommandError(full, lines[-1] if lines else f"exit {proc.returncode}")
    return proc


def proc_starttime(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a recycled pid from the process we started."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw.rsplit(")", 1)[1].split()[19])


@dataclass(slots=True)
class Background:
    """A process the lab started; stopped by its pid, and only if it is still ours."""

    name: str
    argv: list[str]
    proc: subprocess.Popen
    log: Path
    starttime: int | None = None
    stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> int | None:
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        return self.proc.returncode

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def spawn(name: str, argv: list[str], *, ns: str | None, logdir: Path, stdout_file: Path | None = None) -> Background:
    """Start `argv` (in `ns`) in its own process group; stderr (and stdout) go to a log file."""
    log = logdir / f"{name}.log"
    out = open(stdout_file or log, "wb")  # noqa: SIM115 - handed to the child
    err = out if stdout_file is None else open(log, "wb")  # noqa: SIM115
    try:
        proc = subprocess.Popen(in_ns(ns, argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        out.close()
        if err is not out:
            err.close()
    return Background(name, in_ns(ns, argv), proc, log, proc_starttime(proc.pid))


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition") -> None:  # noqa: ANN001
    """Poll until `predicate()` is true (never a blind sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:g} s")
        time.sleep(interval)
