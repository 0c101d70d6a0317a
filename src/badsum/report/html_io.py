"""The edges of `--html`: running Graphviz's `dot` to lay out a map, and writing the page atomically."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from badsum.outfile import atomic_write

#: A map of a few hundred namespaces lays out in seconds; a wedged dot must not hang doctor.
DOT_TIMEOUT_S = 120


class LayoutError(RuntimeError):
    """dot is missing or failed; the message is one line for the user."""


def have_dot() -> bool:
    return shutil.which("dot") is not None


def dot_to_svg(dot_text: str, timeout: float = DOT_TIMEOUT_S) -> str:
    """SVG for inline use in HTML: Graphviz's output without its XML prolog, DOCTYPE (which names a
    URL) and namespace declarations (an HTML parser does not need them)."""
    exe = shutil.which("dot")
    if exe is None:
        raise LayoutError("--html needs Graphviz's dot to lay out the map (apt-get install graphviz); nothing written")
    try:
        r = subprocess.run([exe, "-Tsvg"], input=dot_text.encode(), capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LayoutError(f"dot took more than {timeout:.0f} s to lay out the map; nothing written") from None
    if r.returncode != 0:
        first = (r.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise LayoutError(f"dot failed (exit {r.returncode}): {first}; nothing written")
    return inline_svg(r.stdout.decode())


def inline_svg(svg: str) -> str:
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    return re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg, count=2)


def write_page(path: str, text: str) -> None:
    """The whole page or nothing (outfile.atomic_write; UnsafeTarget for a FIFO, device, symlink...)."""
    atomic_write(Path(path), text.encode())


__all__ = ["LayoutError", "dot_to_svg", "have_dot", "inline_svg", "write_page"]
