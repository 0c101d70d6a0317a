"""Argument types shared by the commands: one message per kind of bad value (exit 2 via argparse),
the check of an output path each command makes before it starts working, and the one check of
`--namespace`/`--netns` values against the namespaces there are."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from badsum.cli.result import ExitCode, Failure
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


class Named(Protocol):
    """A namespace as found (host/netns.py NsRef) or as snapshotted (host/model.py Namespace)."""

    @property
    def id(self) -> str: ...

    @property
    def names(self) -> tuple[str, ...]: ...


N = TypeVar("N", bound=Named)


def resolve(found: Iterable[N], names: Iterable[str]) -> tuple[list[N], list[str]]:
    """The namespaces `names` name (an id, or any name a namespace is mounted under), and the
    names that matched none."""
    found = list(found)
    chosen: list[N] = []
    missing: list[str] = []
    for name in names:
        hit = [ns for ns in found if ns.id == name or name in ns.names]
        chosen += [ns for ns in hit if ns not in chosen]
        if not hit:
            missing.append(name)
    return chosen, missing


def pick_namespaces(option: str, found: Sequence[N], names: Iterable[str]) -> list[N]:
    """What `option` names among `found`. A name that matches none is a usage error (exit 2) in
    every command, on one line naming the namespaces there are (docs/cli.md, "Namespaces")."""
    chosen, missing = resolve(found, names)
    if missing:
        what = "namespace" if len(missing) == 1 else "namespaces"
        known = ", ".join(ns.id for ns in found) or "none"
        raise Failure("namespace.unknown", f"unknown {what} {', '.join(map(repr, missing))} for {option} (known: {known})",
                      ExitCode.USAGE)  # fmt: skip
    return chosen


def label_and_path(text: str) -> str:
    """`trace`'s POINT: `LABEL=FILE` with neither part empty, or a bare FILE (kept as given)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty POINT: give LABEL=FILE or FILE")
    if "=" in text and not os.path.exists(text):
        label, _, path = text.partition("=")
        if not label:
            raise argparse.ArgumentTypeError(f"{text!r}: the label before '=' is empty (LABEL=FILE)")
        if not path:
            raise argparse.ArgumentTypeError(f"{text!r}: the file after '=' is empty (LABEL=FILE)")
    return text
