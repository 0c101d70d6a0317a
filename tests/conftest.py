"""Shared fixtures. Helpers live in tests/support.py (`from support import ...`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import CORPUS  # noqa: E402


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"../shared/captures not found at {CORPUS}: the external corpus tests need it")
    return CORPUS
