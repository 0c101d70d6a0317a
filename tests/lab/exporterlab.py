"""Running `badsum exporter` and a real Prometheus (Debian's `prometheus`) for the lab tests.

Both are started by the test, on loopback and free ports, with a temp config and storage, and
stopped by pid in the test's finally; nothing else is touched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BADSUM = [sys.executable, "-m", "badsum"]
HANG_GUARD_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def nstat(ns: str) -> dict[str, int]:
    """The test's own read of a namespace's counters (absolute)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-a", "-s", "-z", "--json"], capture_output=True,
                         text=True, timeout=10, check=True).stdout  # fmt: skip
    return {k: int(v) for group in json.loads(out).values() for k, v in group.items()}


def poll(fn, what: str, tries: int = 600, every: float = 0.2):
    """Call fn until it returns something truthy; the bound is a count, a guard against a hang."""
    for _ in range(tries):
        got = fn()
        if got:
            return got
        threading.Event().wait(every)
    raise AssertionError(f"gave up waiting for {what}")


def _stop(p: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def exporter(*args: str, usage: dict | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """`badsum exporter --listen 127.0.0.1:0 ARGS`; yields (process, base URL) once it serves.
    With `usage`, it is stopped with SIGTERM and reaped with wait4(), and usage["rusage"] holds
    its resource usage (ru_maxrss: its peak RSS, as getrusage reports it) and usage["code"] its exit code."""
    p = subprocess.Popen([*BADSUM, "exporter", "--listen", "127.0.0.1:0", *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = ""
        while "serving http://" not in line:
            line = p.stderr.readline()  # type: ignore[union-attr]
            assert line, "the exporter exited before serving"
        base = line.split("serving ", 1)[1].split("/metrics", 1)[0]
        # Keep draining stderr so a chatty exporter never blocks on a full pipe.
        threading.Thread(target=lambda: p.stderr.read(), daemon=True).start()  # type: ignore[union-attr]
        yield p, base
    finally:
        if usage is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            _, status, usage["rusage"] = os.wait4(p.pid, 0)
            p.returncode = usage["code"] = os.waitstatus_to_exitcode(status)
        _stop(p)


@contextmanager
def prometheus(target: str, workdir: Path) -> Iterator[str]:
    """A Prometheus scraping `target` (host:port) every second; yields its base URL."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: badsum
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ['{target}']
""")
    log = (workdir / "prometheus.log").open("w")
    p = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: p.poll() is None and _ready(base) or (p.poll() is not None and _died(p, workdir)), "prometheus ready")
        yield base
    finally:
        _stop(p)
        log.close()


def _ready(base: str) -> bool:
    try:
        return get(f"{base}/-/ready", timeout=2)[0] == 200
    except OSError:
        return False


def _died(p: subprocess.Popen, workdir: Path) -> bool:
    raise AssertionError(f"prometheus exited {p.returncode}: {(workdir / 'prometheus.log').read_text()[-2000:]}")


def query(base: str, promql: str) -> list[dict]:
    code, body = get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert code == 200, body
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def scalar(base: str, promql: str) -> float | None:
    """The value of a query that selects one series (None while it selects none)."""
    result = query(base, promql)
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None
