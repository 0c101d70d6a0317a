"""Files a user names for badsum to write, and the one atomic write they share.

Every output (`pcap --annotate`, `capture --single` and `-o`, `doctor --save`, `canary
--state-file`, `fix --journal`) is written to a temporary file beside its target and renamed over
it, so a reader or a crash sees the old file or the new one. But a rename replaces whatever the
name is: given a FIFO, a socket or a device node it silently puts a regular file in its place (as
root, `--annotate /dev/null` replaced /dev/null). So a target must be a regular file or a name not
taken yet, in a directory that exists; anything else is refused before any work starts, and
checked again just before the rename.

A symlink is refused whatever it points to. Replacing the link would break it (`--annotate
/dev/stdout` with stdout sent to a file would put a file in place of the /dev/stdout link), and
following it would let a link planted in /tmp steer a root process's write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

#: What a file type is called in a message, by its stat test.
_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class UnsafeTarget(OSError):
    """The output path names something a rename must not replace. Nothing was created or changed.

    An OSError, so code that reports a failed write reports this one too; commands that check
    before working map it to the usage exit code (2)."""

    code = "not_a_regular_file"
    """Stable id; commands prefix it with their option (`annotate.not_a_regular_file`)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(errno.EINVAL, f"it is {what}, not a regular file (give a regular file's own path or a new name)",
                         path)  # fmt: skip
        self.what = what
        """The kind of file found, as the message says it: `a FIFO`, `a symlink to a socket`."""

    def __str__(self) -> str:
        return f"refusing to write {self.filename}: {self.strerror}"


def kind_of(mode: int) -> str | None:
    """What a non-regular file is called in messages; None for a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "something other than a regular file"


def check_writable_target(path: str | os.PathLike[str]) -> None:
    """Raise unless a rename onto `path` can only replace a regular file or create a new name.

    UnsafeTarget: `path` is a device, FIFO, socket, directory, symlink or other non-regular file.
    FileNotFoundError / NotADirectoryError: the directory it would go in does not exist."""
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        _need_directory(os.path.dirname(os.path.abspath(p)))
        return
    if stat.S_ISLNK(st.st_mode):
        try:
            what = kind_of(os.stat(p).st_mode) or "a regular file"
        except OSError:
            what = "nothing that exists"
        raise UnsafeTarget(p, f"a symlink to {what}")
    what = kind_of(st.st_mode)
    if what is not None:
        raise UnsafeTarget(p, what)


def _need_directory(parent: str) -> None:
    st = os.stat(parent)  # FileNotFoundError names the missing directory
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that a reader (or a crash) sees the old file or the new one, never half.

    Raises UnsafeTarget (nothing written) when `path` is not a regular file or a new name."""
    check_writable_target(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        check_writable_target(path)  # again: the name may have been replaced while we wrote
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


__all__ = ["UnsafeTarget", "atomic_write", "check_writable_target", "kind_of"]
