"""Helpers shared by the test modules (import them as `from support import ...`).

Kept out of conftest.py on purpose: several directories have a conftest.py, and `from conftest
import` would find whichever pytest imported last.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("BADSUM_CORPUS", REPO.parent / "shared" / "captures")).resolve()


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))


def own_captures() -> list[Path]:
    """Captures shipped with the repo in tests/data: made by the real kernel, or built by a seeded script
    there (csum-timeline.pcap, make_csum_timeline.py)."""
    return sorted(p for p in (REPO / "tests" / "data").iterdir() if p.suffix in (".pcap", ".pcapng"))


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name}); .ci/run installs it")
    return path


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs the suite as root")


class RowCollector:
    """A pipeline sink that keeps every batch's non-ok rows (and late rows) for a test to compare."""

    def __init__(self) -> None:
        self.parts: list = []

    def rows(self, batch, rows) -> None:  # noqa: ANN001
        self.parts.append(rows.copy())

    def late_rows(self, rows) -> None:  # noqa: ANN001
        self.parts.append(rows.copy())


#: Output paths a rename must not replace (badsum.outfile), each as make_target builds it, with
#: the words badsum's refusal uses for it.
UNSAFE_TARGETS = {
    "char-device": "a character device",
    "fifo": "a FIFO",
    "socket": "a socket",
    "directory": "a directory",
    "symlink-to-fifo": "a symlink to a FIFO",
    "symlink-to-file": "a symlink to a regular file",
    "dangling-symlink": "a symlink to nothing that exists",
}


def build_target(kind: str, where: Path, bound: list[socket.socket]) -> Path:
    """A real file of `kind` in `where` (`char-device` is /dev/null itself; a socket stays bound
    until the caller closes what `bound` got; `regular` holds b"old content")."""
    if kind == "char-device":
        return Path("/dev/null")
    path = where / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))  # a short name: sun_path holds 108 bytes
        bound.append(s)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink-to-fifo":
        os.mkfifo(where / "the-fifo")
        path.symlink_to(where / "the-fifo")
    elif kind == "symlink-to-file":
        (where / "the-file").write_bytes(b"keep me")
        path.symlink_to(where / "the-file")
    elif kind == "dangling-symlink":
        path.symlink_to(where / "nothing-here")
    elif kind == "regular":
        path.write_bytes(b"old content")
    else:
        raise ValueError(kind)
    return path


def file_identity(path: Path) -> tuple:
    """What a refused write must leave as it was: the type, inode, device numbers, a link's target
    and what it points to, a directory's entries, a small regular file's bytes."""
    st = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    pointed = file_identity(Path(os.path.realpath(path))) if link is not None and os.path.exists(path) else None
    entries = sorted(os.listdir(path)) if stat.S_ISDIR(st.st_mode) else None
    data = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) and st.st_size < 1 << 20 else None
    return stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev, link, pointed, entries, data


def html_report_bench():
    """bench/html_report.py loaded as a module (its synthetic 500-namespace host and measure())."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("html_report_bench", REPO / "bench" / "html_report.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
