"""The last canary result, for badsum_canary_ok: read from the file `badsum canary --state-file` writes,
and, only when asked (`--canary-every`), produced by running that command now and then.

The canary builds namespaces, so it never runs by default. It runs as a child process (the lab
installs signal handlers, which only a main thread may), started and stopped by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from badsum.exporter.families import CanaryState

#: Where `badsum canary --state-file` is expected by default (tmpfs: a reboot forgets it).
DEFAULT_STATE = "/run/badsum/canary.json"
RUN_TIMEOUT = 900.0


class CanaryUnreadable(ValueError):
    """The state file exists but is not a canary result."""


def read_state(path: str) -> CanaryState | None:
    """The result in `path`; None when there is no file (no canary has run)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 22)
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CanaryUnreadable(f"cannot read {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(raw)
        data = doc["data"]
        statuses = {str(o["datapath"]): str(o["status"]) for o in data["outcomes"]}
    except (ValueError, KeyError, TypeError) as e:
        raise CanaryUnreadable(f"{path} is not a `badsum canary --state-file` result ({type(e).__name__}: {e})") from None
    finished = data.get("finished_at")
    return CanaryState(statuses, float(finished) if isinstance(finished, (int, float)) else st.st_mtime)


class CanaryRunner:
    """Runs `badsum canary --state-file PATH` every `every` seconds in a thread of its own."""

    def __init__(self, path: str, every: float, *, log: Callable[[str], None], on_error: Callable[[str], None],
                 badsum: tuple[str, ...] = (sys.executable, "-m", "badsum")) -> None:  # fmt: skip
        self.badsum = badsum
        self.path = path
        self.every = every
        self.log = log
        self.on_error = on_error
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="badsum-canary", daemon=True)
        self._wake = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping:
            self.run_once()
            self._wake.wait(self.every)

    def run_once(self) -> None:
        argv = [*self.badsum, "canary", "--json", "--state-file", self.path]
        with self._lock:
            if self._stopping:
                return
            self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            _, err = self._proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            _, err = self._proc.communicate()
        code = self._proc.returncode
        with self._lock:
            self._proc = None
        if code not in (0, 1) and not self._stopping:  # 1 is a canary that ran and found a failing datapath
            lines = err.decode(errors="replace").strip().splitlines()
            self.on_error(f"canary exited {code}: {lines[-1] if lines else 'no message'}")
        else:
            self.log(f"canary finished (exit {code}), result in {self.path}")

    def stop(self, timeout: float = 120.0) -> None:
        """SIGTERM a running canary (it tears its namespaces down) and wait for it."""
        with self._lock:
            self._stopping = True
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


__all__ = ["DEFAULT_STATE", "CanaryRunner", "CanaryUnreadable", "read_state"]
