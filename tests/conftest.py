"""Shared fixtures. Helpers live in tests/support.py (`from support import ...`)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import CORPUS, build_target  # noqa: E402


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"../shared/captures not found at {CORPUS}: the external corpus tests need it")
    return CORPUS


@pytest.fixture
def make_target(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """make_target(kind, where=tmp_path) -> a real file of that kind (support.build_target);
    sockets it bound are closed after the test."""
    bound: list[socket.socket] = []
    yield lambda kind, where=tmp_path: build_target(kind, where, bound)
    for s in bound:
        s.close()
