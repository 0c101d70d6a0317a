"""Capture at many points at once: one worker process per point, each in its own namespace.

Every worker (`python -m badsum.capture.live`) is started through `nsenter --net=PATH`, so no
process here ever setns()es itself. Each binds its socket and attaches the filter, says READY,
and only then is told `go`: if any point fails (unknown interface, a filter that does not compile)
every worker is told to quit before writing anything, and nothing is left behind. Ctrl-C or
SIGTERM here becomes SIGTERM to each worker (by pid); each commits its file atomically.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from badsum.capture import pathorder
from badsum.host.model import HOST_NS
from badsum.outfile import UnsafeTarget, check_writable_target, kind_of

READY_TIMEOUT = 15.0


class CaptureError(Exception):
    """Nothing was started. `usage` True: the request was wrong (exit 2); else could not (exit 3)."""

    def __init__(self, message: str, *, code: str, usage: bool) -> None:
        super().__init__(message)
        self.code = code
        self.usage = usage


@dataclass(frozen=True, slots=True)
class Point:
    """One capture point."""

    ns: str
    """Namespace id: `host`, a netns name, or `pid:PID`."""
    dev: str
    enter: str | None
    """Path to enter the namespace (`/run/netns/NAME`, `/proc/PID/ns/net`); None for the host's own."""
    why: str = ""
    """How --auto found it (`container interface`, `veth peer`, `bridge`, ...)."""

    @property
    def label(self) -> str:
        return f"{self.ns}:{self.dev}"


@dataclass(frozen=True, slots=True)
class Limits:
    snaplen: int = 262144
    duration: float | None = None
    count: int | None = None
    bytes: int | None = None


def parse_point(text: str) -> Point:
    """`NS:IFNAME` -> Point; `host:` is the root namespace, `pid:PID:IFNAME` or `PID:IFNAME` a process's."""
    ns, sep, dev = text.rpartition(":")
    if not sep or not ns or not dev:
        raise CaptureError(f"--point {text!r}: expected NS:IFNAME (host:IFNAME for the root namespace)",
                           code="point.syntax", usage=True)  # fmt: skip
    return resolve_namespace(ns, dev)


def resolve_namespace(ns: str, dev: str, why: str = "") -> Point:
    if ns == HOST_NS:
        return Point(HOST_NS, dev, None, why)
    pid = ns.removeprefix("pid:")
    if pid.isdigit():
        path = f"/proc/{pid}/ns/net"
        if not os.path.exists(path):
            raise CaptureError(f"namespace {ns!r}: no process {pid}", code="namespace.unknown", usage=True)
        return Point(f"pid:{pid}", dev, path, why)
    if "/" in ns or ns in (".", ".."):
        raise CaptureError(f"namespace {ns!r}: not a namespace name", code="namespace.unknown", usage=True)
    path = f"/run/netns/{ns}"
    if not os.path.exists(path):
        raise CaptureError(f"unknown namespace {ns!r} (not in `ip netns list`, not host, not pid:PID)",
                           code="namespace.unknown", usage=True)  # fmt: skip
    return Point(ns, dev, path, why)


@dataclass(slots=True)
class _Worker:
    point: Point
    out: str
    proc: subprocess.Popen
    lines: list[dict] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    packets: int = 0
    bytes: int = 0
    error: dict | None = None
    result: dict | None = None
    stderr: str = ""

    def read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.strip()
            if line == "READY":
                self.ready.set()
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if "progress" in obj:
                self.packets, self.bytes = obj["progress"]["packets"], obj["progress"]["bytes"]
            elif "error" in obj:
                self.error = obj
            else:
                self.result = obj
                self.packets, self.bytes = obj["packets"], obj["bytes"]
        self.ready.set()  # exited: whoever waits for READY looks at error/result

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)  # our own child, by pid
            except ProcessLookupError:
                pass


@dataclass(slots=True)
class Session:
    """Results of a finished capture."""

    files: dict[str, str]
    """label -> file (with --single, every label maps to the one file)."""
    points: list[dict]
    stopped_by: str
    seconds: float
    manifest: str | None = None
    """The manifest written beside the files (path order; None with --single, whose file holds the order)."""


def _argv(point: Point, out: str, filter_expr: str | None, limits: Limits, path: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "badsum.capture.live", "--dev", point.dev, "--out", out, "--label", point.label,
            "--snaplen", str(limits.snaplen), "--progress", "0.5", "--wait-go"]  # fmt: skip
    for label in path:
        argv += ["--path-label", label]
    if filter_expr:
        argv += ["--filter", filter_expr]
    for flag, value in (("--timeout", limits.duration), ("--count", limits.count), ("--bytes", limits.bytes)):
        if value:
            argv += [flag, str(value)]
    if point.enter is not None:
        argv = ["nsenter", f"--net={point.enter}", "--", *argv]
    return argv


def _env() -> dict[str, str]:
    """The worker must import this badsum, whatever directory nsenter leaves it in."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_session(points: list[Point], *, out_dir: str | None, single: str | None, filter_expr: str | None,
                limits: Limits, progress: Callable[[list[tuple[str, int, int]], float], None] | None = None,
                auto: str | None = None) -> Session:  # fmt: skip
    """Capture at every point until each worker stops (limits, Ctrl-C, SIGTERM). Raises
    CaptureError, with nothing started and no file written, when any point cannot be captured."""
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):
        raise CaptureError("the same point is named twice", code="point.duplicate", usage=True)
    if filter_expr:
        from badsum.capture.bpf import FilterError, compile_filter

        try:
            compile_filter(filter_expr, snaplen=limits.snaplen)
        except FilterError as e:
            raise CaptureError(str(e), code="filter.invalid", usage=True) from None
    if any(p.enter for p in points) and shutil.which("nsenter") is None:
        raise CaptureError("nsenter is not installed (Debian: util-linux)", code="tool.missing", usage=False)
    check_outputs(points, out_dir=out_dir, single=single)
    try:
        if single:
            work = tempfile.mkdtemp(prefix=".badsum-capture-", dir=os.path.dirname(os.path.abspath(single)))
        else:
            assert out_dir is not None
            made = not os.path.isdir(out_dir)
            os.makedirs(out_dir, exist_ok=True)
            work = out_dir
    except OSError as e:
        where = single or out_dir
        raise CaptureError(f"cannot write {where}: {e.strerror or e}", code="output.cannot_write", usage=False) from None
    workers: list[_Worker] = []
    started = time.monotonic()
    interrupted = []
    old = {s: signal.signal(s, lambda sig, f: interrupted.append(sig)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in points:
            out = os.path.join(work, f"{p.label}.pcapng")
            proc = subprocess.Popen(_argv(p, out, filter_expr, limits, labels), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)  # fmt: skip
            w = _Worker(p, out, proc)
            threading.Thread(target=w.read, daemon=True).start()
            workers.append(w)
        deadline = time.monotonic() + READY_TIMEOUT
        failed = None
        for w in workers:
            if not w.ready.wait(max(0.0, deadline - time.monotonic())) or w.error or w.proc.poll() not in (None, 0):
                failed = w
                break
            if interrupted:
                break
        if failed is not None or interrupted:
            err = _failure(failed) if failed is not None else None
            _quit(workers)
            if err is None:
                raise KeyboardInterrupt
            raise err
        for w in workers:
            _tell(w, "go\n")
        while any(w.proc.poll() is None for w in workers):
            if interrupted:
                for w in workers:
                    w.signal(signal.SIGTERM)
                interrupted.clear()
                interrupted.append(-1)  # remember that we were interrupted, signal only once
            if progress:
                progress([(w.point.label, w.packets, w.bytes) for w in workers], time.monotonic() - started)
            time.sleep(0.2)
        for w in workers:
            w.proc.wait()
            assert w.proc.stderr is not None
            w.stderr = w.proc.stderr.read()
            w.proc.stderr.close()
        time.sleep(0)  # readers have hit EOF once wait() returned and stdout closed
        for w in workers:
            _join_reader(w)
        files = _finish(workers, single)
    except BaseException:
        _quit(workers)
        if single:
            shutil.rmtree(work, ignore_errors=True)
        elif made:
            shutil.rmtree(out_dir, ignore_errors=True)  # type: ignore[arg-type]
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if single:
        shutil.rmtree(work, ignore_errors=True)
    stopped = "interrupted" if interrupted else "limits"
    pts = [{"point": w.point.label, "namespace": w.point.ns, "interface": w.point.dev, "file": files[w.point.label],
            **{k: (w.result or {}).get(k) for k in ("packets", "bytes", "wire_bytes", "truncated", "dropped", "stopped")},
            **({"why": w.point.why} if w.point.why else {})} for w in workers]  # fmt: skip
    manifest = None
    if not single:
        # The path order for `badsum trace DIR` (and globs of it): the shell's order is the names' order.
        manifest = pathorder.write_manifest(out_dir, pathorder.manifest_data(pts, auto=auto))  # type: ignore[arg-type]
    return Session(files, pts, stopped, round(time.monotonic() - started, 3), manifest)


def check_outputs(points: list[Point], *, out_dir: str | None, single: str | None) -> None:
    """Before any worker starts: every file the session would rename into place must be a regular
    file or a new name (a rename would replace a FIFO or a device node), and `out_dir` a directory
    if it exists. CaptureError with usage=True (exit 2) otherwise."""
    if single:
        targets = [("--single", single)]
    else:
        assert out_dir is not None
        if os.path.lexists(out_dir) and not os.path.isdir(out_dir):  # a symlink to a directory is one
            what = (kind_of(os.stat(out_dir).st_mode) or "a regular file") if os.path.exists(out_dir) else "a dangling symlink"
            raise CaptureError(f"--out {out_dir}: it is {what}, not a directory", code="out.not_a_directory", usage=True)
        targets = [("--out", os.path.join(out_dir, f"{p.label}.pcapng")) for p in points]
    for option, path in targets:
        try:
            check_writable_target(path)
        except UnsafeTarget as e:
            raise CaptureError(f"{option} {path}: {e.strerror}", code=f"{option[2:]}.{e.code}", usage=True) from None
        except OSError:
            pass  # a directory still to be made, or missing: the write says which


def _tell(w: _Worker, text: str) -> None:
    try:
        assert w.proc.stdin is not None
        w.proc.stdin.write(text)
        w.proc.stdin.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _quit(workers: list[_Worker]) -> None:
    """Every worker still running stops: before `go` it writes nothing; after, it commits."""
    for w in workers:
        if w.proc.stdin is not None:
            try:
                w.proc.stdin.close()
            except OSError:
                pass
        w.signal(signal.SIGTERM)
    for w in workers:
        try:
            w.proc.wait(10)
        except subprocess.TimeoutExpired:
            w.signal(signal.SIGKILL)
            w.proc.wait()
        for f in (w.proc.stdout, w.proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def _join_reader(w: _Worker) -> None:
    for _ in range(100):
        if w.result is not None or w.error is not None:
            return
        time.sleep(0.02)


def _failure(w: _Worker) -> CaptureError:
    if w.error:
        code = {"no_such_interface": "interface.unknown", "filter": "filter.invalid"}.get(w.error["error"], "capture.failed")
        return CaptureError(f"{w.point.label}: {w.error['message']}", code=code, usage=code != "capture.failed")
    why = (w.proc.stderr.read() if w.proc.stderr and w.proc.poll() is not None else "") or "did not start in time"
    return CaptureError(f"{w.point.label}: capture did not start: {why.strip()[-300:]}", code="capture.failed", usage=False)


def _finish(workers: list[_Worker], single: str | None) -> dict[str, str]:
    missing = [w for w in workers if w.result is None or not os.path.exists(w.out)]
    if missing:
        names = ", ".join(f"{w.point.label} ({w.stderr.strip()[-200:] or 'no result'})" for w in missing)
        raise CaptureError(f"capture failed at {names}", code="capture.failed", usage=False)
    if not single:
        return {w.point.label: w.out for w in workers}
    merge([w.out for w in workers], [w.point.label for w in workers], single)
    return {w.point.label: single for w in workers}


def merge(files: list[str], labels: list[str], out: str) -> int:
    """One pcapng with one interface per point, packets in timestamp order; returns the count."""
    from badsum.capture import open_capture
    from badsum.capture.pcapng_writer import PcapngWriter

    def packets(i: int, path: str) -> Iterator[tuple[int, int, bytes, int, int, int]]:
        with open_capture(path) as reader:
            for b in reader:
                for j in range(len(b)):
                    yield (int(b.ts_ns[j]), i, bytes(b.packet(j)), int(b.origlen[j]), int(b.direction[j]),
                           int(b.tp_status[j]))  # fmt: skip

    with PcapngWriter(out, comments=[pathorder.shb_comment(labels)]) as w:
        ids = []
        for path, label in zip(files, labels):
            with open_capture(path) as reader:
                info = reader.interfaces[0]
                ids.append(w.add_interface(info.linktype, snaplen=info.snaplen, name=label))
        for ts, i, data, origlen, direction, status in heapq.merge(*(packets(i, f) for i, f in enumerate(files))):
            w.write_packet(ids[i], data, ts_ns=ts, origlen=origlen, direction=direction, tp_status=status)
        return w.packets


__all__ = ["CaptureError", "Limits", "Point", "Session", "check_outputs", "merge", "parse_point", "resolve_namespace",
           "run_session"]
