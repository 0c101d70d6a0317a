"""Writing persistence artefacts under a root directory, journaled, and taking them back out.

A file badsum writes whole is removed or its previous content put back by `--undo`, unless it was
edited since. A merged file (the sysctl.d drop-in) keeps what undo needs to take only badsum's own
lines back out, so an edit elsewhere in it does not block the undo.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from badsum.fix import sysctl_d
from badsum.fix.journal import APPLIED, Entry, Journal
from badsum.outfile import atomic_write

if TYPE_CHECKING:
    from badsum.fix.persist import Artefact

__all__ = ["install", "uninstall"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def install(art: Artefact, root: Path, journal: Journal, now: float, rules: tuple[str, ...],
            findings: tuple[str, ...] = ()) -> tuple[str, str, int | None]:  # fmt: skip
    """Write the artefact under `root`: (`written`|`unchanged`, message, journal entry id).
    A merged file (`art.settings`) is merged again into what it holds now."""
    dest = Path(root) / art.path.lstrip("/")
    previous: bytes | None = None
    mode = None
    try:
        previous = dest.read_bytes()
        mode = dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        pass
    old_text = previous.decode(errors="surrogateescape") if previous is not None else None
    text = sysctl_d.merge(old_text, list(art.settings)) if art.settings else art.text
    data = text.encode(errors="surrogateescape")
    if previous == data:
        return "unchanged", f"{dest} holds this already", None
    after: dict[str, object] = {"sha256": _sha(data), "mode": art.mode}
    if art.settings:
        # What undo needs to take badsum's lines back out even after someone else edits the file.
        after["merge"] = {"written": {s.key: s.value for s in art.settings},
                          "previous": {s.key: sysctl_d.value_in(old_text, s.key) for s in art.settings}}  # fmt: skip
    entry = Entry(0, "file", now, rules=list(rules), findings=list(findings), target=str(dest),
                  before={"existed": previous is not None, "content": old_text, "mode": mode}, after=after)  # fmt: skip
    journal.append(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, data, art.mode)
    entry.status = APPLIED
    entry.undo = [["rm", str(dest)]] if previous is None else [["restore", str(dest)]]
    journal.update(entry)
    return "written", str(dest), entry.id


def uninstall(e: Entry):
    from badsum.fix.apply import UndoResult

    path = Path(e.target)
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        return UndoResult(e, "nothing", f"{path} is gone already")
    except OSError as ex:
        return UndoResult(e, "failed", f"cannot read {path}: {ex.strerror}")
    merged = e.after.get("merge")
    if _sha(current) != e.after.get("sha256"):
        if merged:
            return _unmerge(e, path, current.decode(errors="surrogateescape"), merged)
        return UndoResult(e, "refused", f"{path} was edited since badsum wrote it; left as it is")
    try:
        if e.before.get("existed"):
            atomic_write(path, e.before["content"].encode(errors="surrogateescape"), e.before.get("mode") or 0o644)
            return UndoResult(e, "restored", f"{path}: the previous content is back")
        os.unlink(path)
    except OSError as ex:
        return UndoResult(e, "failed", f"{path}: {ex.strerror}")
    return UndoResult(e, "restored", f"{path} removed")


def _unmerge(e: Entry, path: Path, current: str, merged: dict):
    """The file changed since badsum wrote it: take back only badsum's lines that are still as written."""
    from badsum.fix.apply import UndoResult

    text, left = sysctl_d.unmerge(current, merged.get("previous", {}), merged.get("written", {}))
    try:
        if sysctl_d.only_header(text):  # the file is badsum's own: nothing but its header left
            os.unlink(path)
        elif text != current:
            atomic_write(path, text.encode(errors="surrogateescape"), stat_mode(path))
    except OSError as ex:
        return UndoResult(e, "failed", f"{path}: {ex.strerror}")
    done = [k for k in merged.get("written", {}) if k not in left]
    if left:
        return UndoResult(e, "refused" if not done else "restored",
                          f"{path}: {', '.join(left)} changed since badsum wrote {'it' if len(left) == 1 else 'them'}; "
                          f"left as {'it is' if len(left) == 1 else 'they are'}"
                          + (f"; {', '.join(done)} taken back out" if done else ""))  # fmt: skip
    return UndoResult(e, "restored", f"{path}: badsum's lines for {', '.join(done)} taken back out (the file was "
                      "edited since; the rest of it is left as it is)")  # fmt: skip


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777
