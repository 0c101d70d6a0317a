"""The pure layers stay pure (DESIGN.md: no I/O, no clock, no pyroute2 in wire/checksum/scan)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "badsum"
PURE = ("wire", "checksum", "scan", "flows", "trace", "rules", "follow")
#: Modules that would give a pure layer I/O, a clock or a process.
FORBIDDEN = {"subprocess", "pyroute2", "time", "datetime", "os", "pathlib", "shutil", "io", "gzip", "sys", "rich"}
FORBIDDEN_OWN = ("badsum.capture.reader", "badsum.capture._stream", "badsum.host", "badsum.lab", "badsum.fix", "badsum.cli", "badsum.report")


#: Pure data the rules may read: the snapshot's own types (no collector code).
ALLOWED_OWN = frozenset({"badsum.host.model"})


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_pure_layers_import_no_io() -> None:
    offenders = []
    files = [p for pkg in PURE if (SRC / pkg).is_dir() for p in (SRC / pkg).rglob("*.py")]
    assert len(files) >= 15  # the layers exist: an empty walk would prove nothing
    for path in files:
        for mod in imports(path):
            if mod in ALLOWED_OWN:
                continue
            if mod.split(".")[0] in FORBIDDEN or mod.startswith(FORBIDDEN_OWN):
                offenders.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not offenders, "\n".join(offenders)
