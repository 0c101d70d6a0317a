"""The undo journal: every change `badsum fix --apply` made, with the values before it, written
before the change is made (DESIGN.md, "Safety on a live host").

One JSON file (default /var/lib/badsum/fix-journal.json), rewritten atomically (temporary file in
the same directory, fsync, rename). Entries are only ever appended; `--undo` marks them undone.
A namespace is recorded by its enter path and its inode, so one deleted and re-created under the
same name is noticed before anything is restored into it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from badsum.outfile import UnsafeTarget, atomic_write, check_writable_target

SCHEMA_VERSION = 1
DEFAULT_PATH = Path("/var/lib/badsum/fix-journal.json")

#: Entry states. `pending`: written, command not yet run (a crash leaves it so: undo still checks
#: and restores). `applied`, `failed` (the command failed; what did change is restored by undo),
#: `undone`, `unrestorable` (the namespace or interface went away or was re-created).
PENDING, APPLIED, FAILED, UNDONE, UNRESTORABLE = "pending", "applied", "failed", "undone", "unrestorable"
OPEN_STATES = (PENDING, APPLIED, FAILED)


class JournalError(RuntimeError):
    """The journal cannot be read or written; nothing is changed then."""


@dataclass(frozen=True, slots=True)
class NsRef:
    """A network namespace as the journal remembers it."""

    id: str
    """The snapshot's id (`host`, a netns name, `pid:1234`)."""
    enter: str | None
    """`/run/netns/NAME` or `/proc/PID/ns/net`; None for the namespace badsum itself runs in."""
    inode: int | None
    """Inode of the namespace (nsfs) when the change was made."""


@dataclass(slots=True)
class Entry:
    """One applied change."""

    id: int
    kind: str
    """`ethtool-feature`, `mtu`, `iptables-rule`, `sysctl`, or `file` (a persistence artefact)."""
    applied_at: float
    """Unix time, passed in by the caller."""
    status: str = PENDING
    rules: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    namespace: NsRef | None = None
    target: str = ""
    """Interface, iptables table, sysctl key, or the file's path."""
    ifindex: int | None = None
    """The interface's index when changed: a different one later means it was re-created."""
    command: list[str] = field(default_factory=list)
    """The argv that was run."""
    before: dict[str, Any] = field(default_factory=dict)
    """The values before (features that changed, `mtu`, the rule, the file's previous content)."""
    after: dict[str, Any] = field(default_factory=dict)
    """The values right after (what undo expects to find)."""
    undo: list[list[str]] = field(default_factory=list)
    """The commands that restore `before` (for people; `--undo` recomputes and checks first)."""
    undone_at: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Entry:
        raw = dict(raw)
        ns = raw.pop("namespace", None)
        return cls(**raw, namespace=NsRef(**ns) if ns else None)


class Journal:
    """The journal file; `with journal.locked():` around a whole apply or undo."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[Journal]:
        """An exclusive lock (a `.lock` file next to the journal), so two runs never interleave."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            check_writable_target(self.path)  # a FIFO here would hang the first read; a device would be replaced
        except UnsafeTarget as e:
            raise JournalError(str(e)) from None
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalError(f"{self.path} is in use by another `badsum fix` run") from None
            self._lock_fd = fd
            yield self
        finally:
            self._lock_fd = None
            os.close(fd)  # closing drops the lock

    def entries(self) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise JournalError(f"cannot read {self.path}: {e.strerror}") from None
        try:
            raw = json.loads(text)
            if raw.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"schema_version {raw.get('schema_version')!r}, this badsum reads {SCHEMA_VERSION}")
            return [Entry.from_dict(e) for e in raw["entries"]]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # Never overwrite a journal we cannot read: it may be the only record of what to undo.
            raise JournalError(f"{self.path} is not a badsum fix journal ({e}); it was left as it is") from None

    def append(self, entry: Entry) -> Entry:
        """Add an entry (its id is assigned here) and write the journal before returning."""
        entries = self.entries()
        entry.id = max((e.id for e in entries), default=0) + 1
        self._write([*entries, entry])
        return entry

    def update(self, entry: Entry) -> None:
        entries = self.entries()
        for i, e in enumerate(entries):
            if e.id == entry.id:
                entries[i] = entry
                break
        else:
            raise JournalError(f"entry {entry.id} is not in {self.path}")
        self._write(entries)

    def _write(self, entries: list[Entry]) -> None:
        doc = {"schema_version": SCHEMA_VERSION, "tool": "badsum fix", "entries": [e.as_dict() for e in entries]}
        data = json.dumps(doc, indent=1) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, data.encode())
        except OSError as e:
            raise JournalError(f"cannot write {self.path}: {e.strerror or e}") from None


def open_entries(entries: list[Entry], rules: set[str] | None = None) -> list[Entry]:
    """Entries `--undo` still has to restore (of `rules` when given), newest first."""
    todo = [e for e in entries if e.status in OPEN_STATES]
    if rules:
        todo = [e for e in todo if rules & {r.upper() for r in e.rules}]
    return sorted(todo, key=lambda e: e.id, reverse=True)
