"""badsum.outfile: which output paths a rename may land on, and the atomic write that checks them.

Every kind of file a user could name is made for real in tmp_path (tests/support.py build_target:
a FIFO with os.mkfifo, a unix socket bound there, a directory, symlinks); the character device is
/dev/null itself, which must still be the same character device afterwards.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from support import UNSAFE_TARGETS, file_identity

from badsum.outfile import UnsafeTarget, atomic_write, check_writable_target


@pytest.mark.parametrize("kind", sorted(UNSAFE_TARGETS))
def test_refused_kinds_name_what_they_are(make_target, kind: str) -> None:
    path = make_target(kind)
    with pytest.raises(UnsafeTarget) as caught:
        check_writable_target(path)
    assert caught.value.what == UNSAFE_TARGETS[kind]
    assert caught.value.filename == str(path)
    assert str(caught.value) == f"refusing to write {path}: it is {UNSAFE_TARGETS[kind]}, not a regular file " \
                                "(give a regular file's own path or a new name)"  # fmt: skip
    assert isinstance(caught.value, OSError)  # so every existing "cannot write" handler reports it


def test_a_regular_file_and_a_new_name_are_accepted(make_target, tmp_path: Path) -> None:
    check_writable_target(make_target("regular"))
    check_writable_target(tmp_path / "not-yet")
    check_writable_target(str(tmp_path / "not-yet"))


def test_a_new_name_needs_its_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        check_writable_target(tmp_path / "no-such-dir" / "out.pcapng")
    assert missing.value.filename == str(tmp_path / "no-such-dir")
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        check_writable_target(tmp_path / "a-file" / "out.pcapng")


@pytest.mark.parametrize("kind", sorted(UNSAFE_TARGETS))
def test_atomic_write_refuses_and_creates_nothing(make_target, tmp_path: Path, kind: str) -> None:
    path = make_target(kind)
    before, listing = file_identity(path), sorted(os.listdir(tmp_path))
    with pytest.raises(UnsafeTarget):
        atomic_write(path, b"data")
    assert file_identity(path) == before
    assert sorted(os.listdir(tmp_path)) == listing  # no temporary file left either
    if kind == "char-device":
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_atomic_write_replaces_a_regular_file_and_creates_a_new_one(make_target, tmp_path: Path) -> None:
    old = make_target("regular")
    atomic_write(old, b"new content", 0o600)
    assert old.read_bytes() == b"new content" and stat.S_IMODE(old.stat().st_mode) == 0o600
    new = tmp_path / "fresh.json"
    atomic_write(new, b"{}\n")
    assert new.read_bytes() == b"{}\n" and stat.S_ISREG(new.lstat().st_mode)
    assert sorted(os.listdir(tmp_path)) == ["fresh.json", "regular"]
