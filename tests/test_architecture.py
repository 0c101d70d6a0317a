"""The package's shape (DESIGN.md, "Layers"): imports go down the layers, never up, directly or
through other modules; the pure layers stay pure; the C kernels live in `badsum.native`."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "badsum"
PURE = ("wire", "checksum", "native", "scan", "flows", "analyze", "trace", "rules", "follow")
#: Modules that would give a pure layer I/O, a clock or a process.
FORBIDDEN = {"subprocess", "pyroute2", "time", "datetime", "os", "pathlib", "shutil", "io", "gzip", "sys", "rich"}
FORBIDDEN_OWN = ("badsum.capture.reader", "badsum.capture._stream", "badsum.host", "badsum.lab", "badsum.fix", "badsum.cli", "badsum.report")


#: Pure data the rules may read: the snapshot's own types (no collector code).
ALLOWED_OWN = frozenset({"badsum.host.model"})

#: The layers, lowest first. A module belongs to the longest prefix listed here; it may import
#: modules of its own layer and of the layers below, never of one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("badsum",),  # the package root: __version__ and nothing else
    ("badsum.wire",),
    ("badsum.checksum",),
    ("badsum.native",),
    ("badsum.scan",),
    ("badsum.flows",),
    ("badsum.analyze",),
    # The snapshot's records (frozen dataclasses, stdlib only) sit below their readers: trace's
    # topology and capture's interface choice read a HostSnapshot. The collectors that fill it
    # stay in the host layer above.
    ("badsum.host.model",),
    # Where a writer may put its output (stdlib only): capture's pcapng writer and fix's journal.
    ("badsum.outfile",),
    ("badsum.capture",),
    ("badsum.trace",),
    ("badsum.follow",),
    # follow's journeys written as pcapng: an encoder of follow's results kept beside the pcapng
    # writer it drives, so it sits above follow (kernel/ and follow/ never import it).
    ("badsum.capture.follow_pcapng",),
    ("badsum.kernel",),
    ("badsum.host",),
    ("badsum.rules",),
    ("badsum.fix",),
    ("badsum.lab",),
    ("badsum.exporter",),
    ("badsum.report",),
    ("badsum.cli", "badsum.__main__"),
)


# ---- the import graph ----


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def own_modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package: the .py files, and the .pyi of each C extension."""
    found: dict[str, Path] = {}
    for path in sorted(src.rglob("*.py")) + sorted(src.rglob("*.pyi")):
        found.setdefault(module_name(path, src), path)
    return found


def imports_of(source: str, module: str, package: bool, modules: set[str] | frozenset[str]) -> set[str]:
    """The badsum modules a module imports by name, anywhere in it (in functions and under
    TYPE_CHECKING too: an import that runs late or only for annotations still names a dependency).

    `from M import x` names `M.x` when that is a module, else `M` (x is then one of M's names).
    """
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {name for name in out if name in modules and name != module}


def import_graph(src: Path = SRC) -> dict[str, frozenset[str]]:
    """Module -> the badsum modules it imports by name."""
    found = own_modules(src)
    names = frozenset(found)
    return {m: frozenset(imports_of(p.read_text(), m, p.stem == "__init__", names)) for m, p in found.items()}


def parents(module: str) -> list[str]:
    """The packages whose __init__ runs before `module` loads, outermost first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# ---- the layers ----


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """Index of the layer whose prefix matches `module` longest; None when no prefix does."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            root_only = prefix == "badsum"  # the root names itself only, not every module
            matches = module == prefix or (not root_only and module.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def layer_name(index: int, layers: tuple[tuple[str, ...], ...] = LAYERS) -> str:
    return "/".join(p.removeprefix("badsum.") for p in layers[index])


def upward_imports(graph: Mapping[str, frozenset[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Every import that reaches a layer above the importer's, directly or through other modules.

    The walk follows what Python loads: the modules a module imports, and the package __init__s
    above each module reached (loading `a.b.c` runs `a/__init__` and `a/b/__init__`). A package
    reached only that way is judged by what its __init__ imports, not by the layer of its name; a
    package imported by name is judged like any module. Each finding names the shortest chain; the
    walk stops at the first module above the importer, so the chain ends at the step that goes up.
    """
    found = []
    for origin in sorted(graph):
        level = layer_of(origin, layers)
        if level is None:
            continue  # test_every_module_has_a_layer names it
        # node -> (previous node, loaded only as a package of something)
        came_from: dict[str, tuple[str | None, bool]] = {origin: (None, False)}
        reported: set[str] = set()  # one finding per module reached, by its shortest chain
        todo = deque([origin])
        while todo:
            node = todo.popleft()
            # Loading `node` runs its packages' __init__s first, then its own imports.
            steps = [(p, True) for p in parents(node) if p in graph]
            steps += [(t, False) for t in sorted(graph.get(node, ()))]
            for target, implicit in steps:
                if not implicit:
                    target_level = layer_of(target, layers)
                    if target_level is not None and target_level > level:
                        if target in reported:
                            continue
                        reported.add(target)
                        chain = _chain(came_from, node) + [target]
                        found.append(
                            f"{origin} ({layer_name(level, layers)}) reaches {target} "
                            f"({layer_name(target_level, layers)}): {' -> '.join(chain)}"
                        )
                        continue
                if target not in came_from:
                    came_from[target] = (node, implicit)
                    todo.append(target)
    return sorted(found)


def _chain(came_from: dict[str, tuple[str | None, bool]], node: str) -> list[str]:
    chain = []
    at: str | None = node
    while at is not None:
        previous, implicit = came_from[at]
        chain.append(f"{at} (package __init__)" if implicit else at)
        at = previous
    return chain[::-1]


# ---- the real tree ----


def test_every_module_has_a_layer() -> None:
    graph = import_graph()
    assert len(graph) >= 150  # the tree was found: an empty walk would prove nothing
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, f"place these in LAYERS (tests/test_architecture.py): {unplaced}"
    stale = sorted(p for prefixes in LAYERS for p in prefixes if not any(m == p or m.startswith(p + ".") for m in graph))
    assert not stale, f"LAYERS names modules that no longer exist: {stale}"


def test_every_own_import_names_a_module() -> None:
    """A moved module leaves no importer behind (`badsum.scan._fastscan`, `badsum.scan.pipeline`)."""
    found = own_modules()
    broken = []
    for module, path in found.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            broken += [f"{module}:{node.lineno} imports {n}" for n in names if n.startswith("badsum") and n not in found]
    assert not broken, "\n".join(broken)


def test_imports_go_down_the_layers() -> None:
    found = upward_imports(import_graph())
    assert not found, "imports that go up a layer (DESIGN.md, Layers):\n" + "\n".join(found)


#: The layers below the edges, checked by really importing them as well (importing them has no
#: side effects; the edges above may open libraries or read the host at import).
LOADED_IN_ISOLATION = ("badsum.wire", "badsum.checksum", "badsum.native", "badsum.scan", "badsum.flows", "badsum.analyze")


def test_loading_a_low_layer_loads_nothing_above_it() -> None:
    """An independent oracle for the walk above: what a fresh interpreter actually loads."""
    graph = import_graph()
    for prefix in LOADED_IN_ISOLATION:
        level = layer_of(prefix)
        members = sorted(m for m in graph if layer_of(m) == level)
        code = (
            "import importlib, sys\n"
            f"for m in {members!r}: importlib.import_module(m)\n"
            "print('\\n'.join(m for m in sys.modules if m == 'badsum' or m.startswith('badsum.')))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        above = sorted(m for m in out.split() if (layer_of(m) or 0) > level)
        assert not above, f"importing {prefix} loads {above}"


def test_c_extensions_live_in_native() -> None:
    """The C kernels are `badsum.native.*`, each with its .pyi; no stale build at an old path."""
    setup = ast.parse((ROOT / "setup.py").read_text())
    extensions = [
        node.args[0].value
        for node in ast.walk(setup)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Extension"
    ]
    assert sorted(extensions) == ["badsum.native._fastscan", "badsum.native._framing"]
    for name in extensions:
        assert (SRC.parent / (name.replace(".", "/") + ".pyi")).is_file(), f"{name} has no .pyi"
    strays = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.so") if p.parent != SRC / "native")
    assert not strays, f"stale extension builds outside badsum/native: {strays}"


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
    files = [p for pkg in PURE for p in ((SRC / pkg).rglob("*.py") if (SRC / pkg).is_dir() else [SRC / f"{pkg}.py"]) if p.is_file()]
    assert len(files) >= 15  # the layers exist: an empty walk would prove nothing
    for path in files:
        for mod in imports(path):
            if mod in ALLOWED_OWN:
                continue
            if mod.split(".")[0] in FORBIDDEN or mod.startswith(FORBIDDEN_OWN):
                offenders.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not offenders, "\n".join(offenders)


# ---- the check itself catches what it is for ----

TOY_LAYERS: tuple[tuple[str, ...], ...] = (
    ("badsum",),
    ("badsum.mid.data",),  # placed below its package, as host.model is
    ("badsum.low",),
    ("badsum.mid",),
    ("badsum.high",),
)


def toy(graph: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    """A module graph holding every module and package named in `graph` (empty unless given)."""
    full = {m: frozenset(t) for m, t in graph.items()}
    for module in [*graph, *(t for ts in graph.values() for t in ts)]:
        for name in [*parents(module), module]:
            full.setdefault(name, frozenset())
    return full


def test_the_check_passes_imports_that_go_down_or_stay() -> None:
    graph = toy(
        {
            "badsum.high.cmd": {"badsum.mid.run", "badsum.low.sum", "badsum"},
            "badsum.mid.run": {"badsum.mid.data", "badsum.low.sum"},
            "badsum.low.sum": {"badsum.low.cursor", "badsum.mid.data"},
        }
    )
    assert upward_imports(graph, TOY_LAYERS) == []


def test_the_check_catches_a_direct_upward_import() -> None:
    graph = toy({"badsum.low.sum": {"badsum.mid.run"}})
    assert upward_imports(graph, TOY_LAYERS) == [
        "badsum.low.sum (low) reaches badsum.mid.run (mid): badsum.low.sum -> badsum.mid.run"
    ]


def test_the_check_catches_an_indirect_upward_import_and_names_the_chain() -> None:
    graph = toy(
        {
            "badsum.low.sum": {"badsum.low.helper"},
            "badsum.low.helper": {"badsum.low.deep"},
            "badsum.low.deep": {"badsum.high.cmd"},
        }
    )
    assert upward_imports(graph, TOY_LAYERS) == [
        "badsum.low.deep (low) reaches badsum.high.cmd (high): badsum.low.deep -> badsum.high.cmd",
        (
            "badsum.low.helper (low) reaches badsum.high.cmd (high): "
            "badsum.low.helper -> badsum.low.deep -> badsum.high.cmd"
        ),
        (
            "badsum.low.sum (low) reaches badsum.high.cmd (high): "
            "badsum.low.sum -> badsum.low.helper -> badsum.low.deep -> badsum.high.cmd"
        ),
    ]


def test_the_check_catches_an_upward_import_through_a_package_init() -> None:
    """Importing `mid.data` (placed low) runs `mid/__init__`, which loads the rest of `mid`."""
    graph = toy({"badsum.low.sum": {"badsum.mid.data"}, "badsum.mid": {"badsum.mid.reader"}})
    assert upward_imports(graph, TOY_LAYERS) == [
        (
            "badsum.low.sum (low) reaches badsum.mid.reader (mid): "
            "badsum.low.sum -> badsum.mid.data -> badsum.mid (package __init__) -> badsum.mid.reader"
        ),
        (
            "badsum.mid.data (mid.data) reaches badsum.mid.reader (mid): "
            "badsum.mid.data -> badsum.mid (package __init__) -> badsum.mid.reader"
        ),
    ]
    # With an empty __init__ the same import is fine: the package is judged by what it loads.
    assert upward_imports(toy({"badsum.low.sum": {"badsum.mid.data"}}), TOY_LAYERS) == []


def test_the_check_catches_the_old_tangle_in_the_real_tree() -> None:
    """scan importing flows again (as scan/pipeline.py did) is found, and so is every scan module
    that reaches flows through it."""
    graph = dict(import_graph())
    graph["badsum.scan.rows"] = graph["badsum.scan.rows"] | {"badsum.flows.symptom"}
    found = upward_imports(graph)
    assert "badsum.scan.rows (scan) reaches badsum.flows.symptom (flows): badsum.scan.rows -> badsum.flows.symptom" in found
    assert (
        "badsum.scan.flowtable (scan) reaches badsum.flows.symptom (flows): "
        "badsum.scan.flowtable -> badsum.scan.rows -> badsum.flows.symptom"
    ) in found
    assert all(f.startswith("badsum.scan.") for f in found), found


def test_the_graph_sees_imports_inside_functions_and_relative_ones() -> None:
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
from badsum.low import cursor as c, CONSTANT
if TYPE_CHECKING:
    from badsum.mid.data import Record
def later():
    from badsum.high.cmd import run
    import badsum.high.other
class Thing:
    def method(self):
        from . import sum
        from ..mid import run
"""
    modules = {
        "badsum",
        "badsum.low",
        "badsum.low.thing",
        "badsum.low.sum",
        "badsum.low.cursor",
        "badsum.mid",
        "badsum.mid.data",
        "badsum.mid.run",
        "badsum.high",
        "badsum.high.cmd",
        "badsum.high.other",
    }
    names = imports_of(source, "badsum.low.thing", False, modules)
    assert names == {
        "badsum.low",  # CONSTANT
        "badsum.low.cursor",
        "badsum.low.sum",
        "badsum.mid.data",
        "badsum.mid.run",
        "badsum.high.cmd",
        "badsum.high.other",
    }
    found = upward_imports(toy({"badsum.low.thing": names}), TOY_LAYERS)
    assert [f.split(":")[0] for f in found] == [
        "badsum.low.thing (low) reaches badsum.high.cmd (high)",
        "badsum.low.thing (low) reaches badsum.high.other (high)",
        "badsum.low.thing (low) reaches badsum.mid.run (mid)",
    ]
