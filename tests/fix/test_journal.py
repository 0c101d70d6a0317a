"""The undo journal: written before a change, atomically, append-only, never overwritten when unreadable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from badsum.fix.journal import (
    APPLIED,
    UNDONE,
    Entry,
    Journal,
    JournalError,
    NsRef,
    open_entries,
)


def test_append_assigns_ids_and_round_trips(tmp_path: Path) -> None:
    j = Journal(tmp_path / "deep" / "dir" / "journal.json")
    assert j.entries() == []
    e = j.append(Entry(0, "mtu", 1700000000.5, rules=["KB-003"], namespace=NsRef("h1", "/run/netns/h1", 4026532000),
                       target="vxlan0", ifindex=4, command=["ip"], before={"mtu": 1500}))
    j.append(Entry(0, "ethtool-feature", 1700000001.0, target="eth0"))
    assert e.id == 1
    got = j.entries()
    assert [x.id for x in got] == [1, 2]
    assert got[0] == e
    raw = json.loads((tmp_path / "deep" / "dir" / "journal.json").read_text())
    assert raw["schema_version"] == 1
    assert raw["entries"][0]["namespace"] == {"id": "h1", "enter": "/run/netns/h1", "inode": 4026532000}
    assert raw["entries"][0]["applied_at"] == 1700000000.5  # the time passed in, not a clock


def test_update_marks_and_open_entries_are_newest_first_and_filter_by_rule(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.json")
    a = j.append(Entry(0, "mtu", 1.0, status=APPLIED, rules=["KB-003"]))
    b = j.append(Entry(0, "ethtool-feature", 2.0, status=APPLIED, rules=["KB-005"]))
    c = j.append(Entry(0, "ethtool-feature", 3.0, status=APPLIED, rules=["KB-005"]))
    c.status, c.undone_at = UNDONE, 4.0
    j.update(c)
    assert [e.id for e in open_entries(j.entries())] == [b.id, a.id]
    assert [e.id for e in open_entries(j.entries(), {"KB-003"})] == [a.id]
    assert j.entries()[2].undone_at == 4.0


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.json")
    for i in range(5):
        j.append(Entry(0, "mtu", float(i)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.json"]


def test_unreadable_journal_is_refused_and_left_alone(tmp_path: Path) -> None:
    p = tmp_path / "j.json"
    p.write_text("{not json")
    j = Journal(p)
    with pytest.raises(JournalError, match="not a badsum fix journal"):
        j.entries()
    with pytest.raises(JournalError):
        j.append(Entry(0, "mtu", 1.0))
    assert p.read_text() == "{not json"
    p.write_text(json.dumps({"schema_version": 99, "entries": []}))
    with pytest.raises(JournalError, match="schema_version 99"):
        j.entries()


def test_a_journal_that_is_a_fifo_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """Reading a FIFO would hang the run, and the journal's rename would replace it."""
    p = tmp_path / "j.json"
    os.mkfifo(p)
    with pytest.raises(JournalError, match="it is a FIFO"), Journal(p).locked():
        pass
    assert stat.S_ISFIFO(p.lstat().st_mode) and sorted(x.name for x in tmp_path.iterdir()) == ["j.json"]


def test_lock_refuses_a_second_run(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.json")
    with j.locked(), pytest.raises(JournalError, match="in use"), Journal(tmp_path / "j.json").locked():
        pass
    with j.locked():  # released
        pass


def test_lock_does_not_leak_file_descriptors(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    j = Journal(tmp_path / "j.json")
    for _ in range(20):
        with j.locked():
            j.append(Entry(0, "mtu", 1.0))
    assert len(os.listdir("/proc/self/fd")) == before
