"""Argument types shared by the commands: one message per kind of bad value (exit 2 via argparse)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
