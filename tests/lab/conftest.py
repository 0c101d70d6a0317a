"""Every lab test leaves nothing behind: no namespace, journal, tracefs instance or process of a run.

The check is generic (it knows prefixes, not scenarios): it takes an inventory of everything a lab
can leave before each test and again after it, and fails the test with the list of what is new.
Leftovers are found with independent tools (`ip -j netns list`, /proc, /proc/self/mounts), not
with the lab's own journal. A run whose own process is still alive and is not this pytest process
or one of its children belongs to someone else (a concurrent lab on the same host) and is ignored.
Leftovers are reported, never removed here: `badsum lab clean --prefix PREFIX` removes them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labkit import *  # noqa: E402,F403 - the inventory helpers
from labkit import SETTLE_S, Inventory, _tracefs_items, inventory, leftovers, run_elsewhere  # noqa: E402,F401


@pytest.fixture(scope="session", autouse=True)
def tracefs_view() -> Iterator[None]:
    """tracefs instances are only visible through a mount of it. When none is mounted (the lab
    mounts its own privately, only while it runs), mount one for the session, so that an instance
    a run leaks is seen, and seen as new."""
    if os.geteuid() != 0 or any(i.kind == "tracefs view" for i in _tracefs_items()):
        yield
        return
    point = tempfile.mkdtemp(prefix="bstests-tracefs-")
    argv = ["mount", "-t", "tracefs", "nodev", point]
    mounted = subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
    try:
        yield
    finally:
        if mounted:
            subprocess.run(["umount", point], capture_output=True, timeout=10, check=False)
        os.rmdir(point)


@pytest.fixture
def lab_inventory() -> Callable[[], Inventory]:
    """`lab_inventory()`: everything of any lab run on this host now (namespaces, journals, ...)."""
    return inventory


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = inventory()
    yield
    left = leftovers(before)
    # Reported, not removed: telling a leak from a concurrent session's run is not certain enough
    # to delete anything (`badsum lab clean --prefix` does it by hand). The next test's inventory
    # starts with them, so one leak fails one test.
    if left:
        pytest.fail("the test left lab objects behind:\n  " + "\n  ".join(map(str, left)), pytrace=False)
