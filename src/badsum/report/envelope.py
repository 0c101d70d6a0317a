"""The JSON envelope every command prints under `--json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass(slots=True)
class Envelope:
    """`{schema_version, command, status, data, errors}`."""

    command: str
    """The command that ran (`pcap`, ...)."""
    status: str
    """`ok` (nothing wrong), `findings` (something wrong was found), `error` (could not finish)."""
    data: dict[str, Any] = field(default_factory=dict)
    """The command's result."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Problems met: each with `code`, `message` and, where known, `offset`."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "command": self.command,
                "status": self.status,
                "data": self.data,
                "errors": self.errors,
            },
            indent=2,
            sort_keys=False,
        )
