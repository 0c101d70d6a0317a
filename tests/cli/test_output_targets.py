"""Output paths a rename must not replace, command by command (docs/cli.md, "Output files").

`pcap --annotate`, `capture --single`/`-o`, `doctor --save`, `canary --state-file` and
`fix --journal` refuse a character device (/dev/null itself), a FIFO, a unix socket, a directory
and a symlink before doing any work: exit 2, one line on stderr naming the path, the error
envelope with --json, nothing created, and the path left exactly as it was (support.file_identity).
A regular file is still replaced, and a new name created. The real process runs (`python -m
badsum`), so exit codes, stderr and files are what a user gets.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, UNSAFE_TARGETS, file_identity, need_root

from badsum.capture import open_capture
from badsum.capture.session import CaptureError, check_outputs, parse_point

BADSUM = [sys.executable, "-m", "badsum"]
TIMEOUT = 60
SNAPSHOT = REPO / "tests" / "rules" / "fixtures" / "clean-host.json"
KINDS = sorted(UNSAFE_TARGETS)


def badsum(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # stdin closed: a command that wrongly read a FIFO or stdin would not wait for a person.
    return subprocess.run([*BADSUM, *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, cwd=cwd, check=False)  # fmt: skip


def refused(r: subprocess.CompletedProcess[str], option: str, path: Path, kind: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr: the option, the path and what it is."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"badsum: {option} {path}: it is {UNSAFE_TARGETS[kind]}, not a regular file "
                                     "(give a regular file's own path or a new name)"]  # fmt: skip


def error_envelope(r: subprocess.CompletedProcess[str], command: str) -> dict:
    assert r.returncode == 2, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"schema_version", "command", "status", "data", "errors"}
    assert (doc["command"], doc["status"]) == (command, "error") and len(doc["errors"]) == 1
    assert len(r.stderr.splitlines()) == 1  # the same message for a person
    return doc["errors"][0]


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three good TCP packets (scapy), in a directory of their own."""
    from scapy.all import IP, TCP, Ether, Raw, wrpcap

    path = tmp_path_factory.mktemp("input") / "in.pcap"
    frames = [Ether(bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=40000 + i) / Raw(b"x" * 20)))
              for i in range(3)]  # fmt: skip
    wrpcap(str(path), frames)
    return path


def packets(path: Path) -> int:
    with open_capture(path) as reader:
        return sum(len(b) for b in reader)


# -- pcap --annotate --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_annotate_refuses_and_leaves_the_path_as_it_was(make_target, tmp_path: Path, capture: Path, kind: str) -> None:
    target = make_target(kind)
    before, files = file_identity(target), listing(tmp_path)
    r = badsum("pcap", "--annotate", target, capture)
    refused(r, "--annotate", target, kind)
    assert file_identity(target) == before and listing(tmp_path) == files  # no .part file either
    if kind == "char-device":
        assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


@pytest.mark.parametrize("kind", KINDS)
def test_annotate_refusal_in_the_json_envelope(make_target, capture: Path, kind: str) -> None:
    target = make_target(kind)
    r = badsum("pcap", "--json", "--annotate", target, capture)
    err = error_envelope(r, "pcap")
    assert err["code"] == "annotate.not_a_regular_file" and str(target) in err["message"]
    assert UNSAFE_TARGETS[kind] in err["message"]


def test_annotate_is_judged_before_the_capture_is_read(make_target, tmp_path: Path) -> None:
    """The input is a FIFO nobody writes to: opening it would block, so only a check made first
    can answer (and a missing input would give 3, not 2)."""
    target = make_target("fifo")
    silent = tmp_path / "in-fifo"
    os.mkfifo(silent)
    refused(badsum("pcap", "--annotate", target, silent), "--annotate", target, "fifo")
    refused(badsum("pcap", "--annotate", target, tmp_path / "missing.pcap"), "--annotate", target, "fifo")


def test_annotate_replaces_a_regular_file(make_target, tmp_path: Path, capture: Path) -> None:
    old = make_target("regular")
    inode = old.stat().st_ino
    r = badsum("pcap", "--annotate", old, capture)
    assert r.returncode == 0, r.stderr
    assert packets(old) == 3 and old.stat().st_ino != inode and stat.S_ISREG(old.lstat().st_mode)
    assert listing(tmp_path) == ["regular"]


def test_annotate_creates_a_new_file(tmp_path: Path, capture: Path) -> None:
    new = tmp_path / "sub" / "copy.pcapng"
    new.parent.mkdir()
    r = badsum("pcap", "--annotate", new, capture)
    assert r.returncode == 0 and f"annotated copy: {new} (3 packets)" in r.stdout
    assert packets(new) == 3 and listing(new.parent) == ["copy.pcapng"]


def test_annotate_refuses_the_input_under_another_spelling(tmp_path: Path, capture: Path) -> None:
    """Through a symlinked directory the input's own name is reached: renaming over it would lose it."""
    (tmp_path / "alias").symlink_to(capture.parent, target_is_directory=True)
    data = capture.read_bytes()
    r = badsum("pcap", "--json", "--annotate", tmp_path / "alias" / capture.name, capture)
    assert error_envelope(r, "pcap")["code"] == "annotate.is_the_input"
    assert capture.read_bytes() == data


# -- doctor --save, canary --state-file, fix --journal --------------------------------------------------


@pytest.mark.parametrize("kind", ["char-device", "fifo", "symlink-to-fifo"])
def test_doctor_save_refuses_before_inspecting(make_target, kind: str) -> None:
    target = make_target(kind)
    before = file_identity(target)
    refused(badsum("doctor", "--from", SNAPSHOT, "--save", target), "--save", target, kind)
    err = error_envelope(badsum("doctor", "--json", "--from", SNAPSHOT, "--save", target), "doctor")
    assert err["code"] == "save.not_a_regular_file"
    assert file_identity(target) == before


def test_doctor_save_replaces_a_regular_file(make_target, tmp_path: Path) -> None:
    old = make_target("regular")
    r = badsum("doctor", "--from", SNAPSHOT, "--save", old)
    assert r.returncode == 0, r.stderr
    assert json.loads(old.read_text()) == json.loads(SNAPSHOT.read_text()) and listing(tmp_path) == ["regular"]


@pytest.mark.parametrize("kind", ["fifo", "socket", "directory"])
def test_canary_state_file_refused_before_any_namespace(make_target, kind: str) -> None:
    target = make_target(kind)
    before = file_identity(target)
    refused(badsum("canary", "--state-file", target), "--state-file", target, kind)
    err = error_envelope(badsum("canary", "--json", "--state-file", target), "canary")
    assert err["code"] == "state_file.not_a_regular_file"
    assert file_identity(target) == before


@pytest.mark.parametrize("mode", ["--apply", "--undo"])
def test_fix_journal_refused_before_anything_is_read_or_changed(make_target, mode: str) -> None:
    """A FIFO journal: reading it (--undo reads first) would hang; --apply would replace it."""
    target = make_target("fifo")
    refused(badsum("fix", mode, "--journal", target), "--journal", target, "fifo")
    err = error_envelope(badsum("fix", mode, "--json", "--journal", target), "fix")
    assert err["code"] == "journal.not_a_regular_file"
    assert stat.S_ISFIFO(target.lstat().st_mode)


# -- capture --single / -o ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_capture_single_refused_before_any_worker(make_target, kind: str) -> None:
    target = make_target(kind)
    with pytest.raises(CaptureError) as caught:
        check_outputs([parse_point("host:lo")], out_dir=None, single=str(target))
    assert caught.value.usage and caught.value.code == "single.not_a_regular_file"
    assert str(caught.value) == f"--single {target}: it is {UNSAFE_TARGETS[kind]}, not a regular file " \
                                "(give a regular file's own path or a new name)"  # fmt: skip


def test_capture_out_dir_must_be_a_directory_and_its_files_regular(make_target, tmp_path: Path) -> None:
    points = [parse_point("host:lo")]
    with pytest.raises(CaptureError) as caught:
        check_outputs(points, out_dir=str(make_target("fifo")), single=None)
    assert caught.value.usage and caught.value.code == "out.not_a_directory" and "it is a FIFO" in str(caught.value)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "host:lo.pcapng")
    with pytest.raises(CaptureError) as caught:
        check_outputs(points, out_dir=str(out), single=None)
    assert caught.value.code == "out.not_a_regular_file" and "host:lo.pcapng" in str(caught.value)
    # What may be written passes: a directory still to be made, a new file, a regular one.
    check_outputs(points, out_dir=str(tmp_path / "not-yet"), single=None)
    check_outputs(points, out_dir=str(tmp_path), single=str(tmp_path / "new.pcapng"))


@pytest.mark.root
def test_capture_cli_refuses_a_fifo_and_starts_nothing(make_target, tmp_path: Path) -> None:
    need_root()
    target = make_target("fifo")
    r = badsum("capture", "--point", "host:lo", "-c", "1", "--single", target)
    refused(r, "--single", target, "fifo")
    err = error_envelope(badsum("capture", "--point", "host:lo", "-c", "1", "--json", "--single", target), "capture")
    assert err["code"] == "single.not_a_regular_file"
    assert stat.S_ISFIFO(target.lstat().st_mode) and listing(tmp_path) == ["fifo"]  # no .badsum-capture-* either


@pytest.mark.root
def test_capture_single_into_a_missing_directory_exits_3(tmp_path: Path) -> None:
    need_root()
    r = badsum("capture", "--point", "host:lo", "-c", "1", "--json", "--single", tmp_path / "no-such" / "x.pcapng")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert json.loads(r.stdout)["errors"][0]["code"] == "output.cannot_write"
    assert listing(tmp_path) == []
