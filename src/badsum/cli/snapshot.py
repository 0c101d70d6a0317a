"""Reading a saved host snapshot (`doctor --save`) for `doctor --from`, `fix --from` and
`trace --snapshot`: one function, one error code per way it can fail (docs/cli.md, "Snapshot files")."""

from __future__ import annotations

import json
import sys

from badsum.cli.result import Failure
from badsum.host.model import HostSnapshot


def read_snapshot(path: str) -> HostSnapshot:
    """The snapshot in `path` (`-`: standard input). Failure (exit 3) with one clear line and the code
    `snapshot.unreadable`, `snapshot.not_json`, `snapshot.not_a_snapshot` or `snapshot.schema`."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise Failure("snapshot.unreadable", f"cannot read {path}: {why}") from None
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise Failure("snapshot.not_json", f"{path} is not JSON ({e}); a snapshot is a file written by `doctor --save`") from None
    if not isinstance(raw, dict) or "kernel" not in raw or "namespaces" not in raw:
        raise Failure("snapshot.not_a_snapshot", f"{path} is not a badsum host snapshot (no kernel and namespaces)")
    try:
        return HostSnapshot.from_json(text)
    except ValueError as e:  # another schema_version
        raise Failure("snapshot.schema", f"{path}: {e}") from None
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise Failure("snapshot.not_a_snapshot", f"{path} is not a badsum host snapshot this version reads "
                                                 f"({type(e).__name__}: {e})") from None  # fmt: skip


__all__ = ["read_snapshot"]
