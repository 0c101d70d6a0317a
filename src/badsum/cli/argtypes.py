"""Argument types shared by the commands: one message per kind of bad value (exit 2 via argparse),
and the check of an output path each command makes before it starts working."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from badsum.outfile import UnsafeTarget, check_writable_target


def int_range(lo: int, hi: int | None = None, what: str = "a number") -> Callable[[str], int]:
    """An argparse type accepting whole numbers in [lo, hi] (no upper bound when hi is None)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            bound = f"{lo}-{hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"out of range ({bound}): {v}")
        return v

    return parse


positive = int_range(1)
port = int_range(1, 65535, "a port number")


def unsafe_output(option: str, path: str) -> tuple[str, str] | None:
    """(error code, one-line message) when `path`, given to `option`, is not a regular file or a new
    name: the caller exits 2 (usage) before doing any work. None when a write may go ahead; a
    missing directory is not judged here, the write itself reports it (exit 3)."""
    try:
        check_writable_target(path)
    except UnsafeTarget as e:
        return f"{option.lstrip('-').replace('-', '_')}.{e.code}", f"{option} {path}: {e.strerror}"
    except OSError:
        pass
    return None
