"""Running read-only commands for the snapshot: argv lists with timeouts, inside a namespace when asked.

A namespace is entered by the child alone (`nsenter --net=`), never by a setns() of this process.
The child is handed an fd we opened on the namespace and checked by inode, so a recycled pid or a
re-created name can never make us read the wrong namespace, and one that vanished is a clean
error ("vanished"), not a wrong answer.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import dataclass

# Target is pure data (NsRef.target builds it), so it lives with the snapshot's records.
from badsum.host.model import Target

#: Tools live in sbin on Debian; an unprivileged PATH often lacks it.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
DEFAULT_TIMEOUT = 5.0


def which(tool: str) -> str | None:
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(tool, path=os.pathsep.join([path, *_SBIN]))


@dataclass(frozen=True, slots=True)
class Output:
    """A finished command: stdout when it exited 0, else None and a one-line reason."""

    stdout: str | None
    error: str | None = None
    vanished: bool = False
    """The namespace could not be opened any more (deleted, or its last process exited)."""

    @property
    def ok(self) -> bool:
        return self.stdout is not None


class NamespaceGone(Exception):
    """The namespace's path no longer opens, or now names another namespace."""


def open_namespace(target: Target) -> int:
    """An fd on the namespace, checked to be the very one discovered (by inode)."""
    assert target.enter is not None
    try:
        fd = os.open(target.enter, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ESRCH, errno.EINVAL):
            raise NamespaceGone(f"namespace {target.ns_id} vanished ({target.enter}: {e.strerror})") from None
        raise
    if os.fstat(fd).st_ino != target.inode:
        os.close(fd)
        raise NamespaceGone(f"namespace {target.ns_id} vanished ({target.enter} now names another namespace)")
    return fd


_ENV = {"LC_ALL": "C", "LANG": "C"}


def run(argv: list[str], target: Target | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Output:
    """Run argv (in `target`'s namespace if it is not ours). Never raises for the command's sake."""
    exe = which(argv[0])
    if exe is None:
        return Output(None, f"{argv[0]}: not installed")
    full = [exe, *argv[1:]]
    fd: int | None = None
    if target is not None and target.enter is not None:
        nsenter = which("nsenter")
        if nsenter is None:
            return Output(None, "nsenter: not installed (util-linux); cannot enter other namespaces")
        try:
            fd = open_namespace(target)
        except NamespaceGone as e:
            return Output(None, str(e), vanished=True)
        except OSError as e:
            return Output(None, f"cannot open {target.enter}: {e.strerror}")
        full = [nsenter, f"--net=/proc/self/fd/{fd}", "--", *full]
    env = {**os.environ, **_ENV, "PATH": os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])}
    try:
        cp = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False, env=env,
                            stdin=subprocess.DEVNULL, pass_fds=(fd,) if fd is not None else (), errors="replace")  # fmt: skip
    except subprocess.TimeoutExpired:
        return Output(None, f"{' '.join(argv)}: timed out after {timeout:g} s")
    except OSError as e:
        return Output(None, f"{' '.join(argv)}: {e.strerror}")
    finally:
        if fd is not None:
            os.close(fd)
    if cp.returncode != 0:
        lines = (cp.stderr or cp.stdout or "").strip().splitlines()
        detail = lines[-1] if lines else f"exit {cp.returncode}"
        return Output(None, f"{' '.join(argv)}: {detail}")
    return Output(cp.stdout)
