"""Helpers shared by the test modules (import them as `from support import ...`).

Kept out of conftest.py on purpose: several directories have a conftest.py, and `from conftest
import` would find whichever pytest imported last.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("BADSUM_CORPUS", REPO.parent / "shared" / "captures")).resolve()


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))


def own_captures() -> list[Path]:
    """Captures shipped with the repo (made by the real kernel in tests/data)."""
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

