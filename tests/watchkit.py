"""`badsum watch --json` run in the background by a test, its JSON lines collected as they come."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

BADSUM = [sys.executable, "-m", "badsum"]


class Watch:
    """`badsum watch --json ARGS` in the background; stopped by `finish()`, by pid, always."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([*BADSUM, "watch", "--json", *argv], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, pred: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert self.proc.poll() is None or pred(), self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline, "watch did not get there in time"
            time.sleep(0.05)

    def intervals(self) -> list[dict]:
        return [d["data"] for d in self.lines if d["data"]["kind"] == "interval"]

    def finish(self, sig: int | None = None, timeout: float = 60) -> tuple[int, str]:
        """Send `sig` (if any), wait for the exit; a watch still running after `timeout` gets
        SIGINT, then SIGKILL. Returns the exit code and what it wrote on stderr."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._reader.join(timeout=10)
        return code, self.proc.stderr.read() if self.proc.stderr else ""
