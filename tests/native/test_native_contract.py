"""What the C kernels export agrees with Python: every constant of `_fastscan`, and each module's
public names with its .pyi stub."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from badsum.checksum import verdict
from badsum.flows.facts import FACTS_DTYPE
from badsum.native import _fastscan, _framing
from badsum.wire import frame, ipv6, link, protofacts as pf

NATIVE = Path(__file__).resolve().parents[2] / "src" / "badsum" / "native"

#: Each constant `_fastscan` exports and what Python says it is.
FASTSCAN_CONSTANTS = {
    "ISSUE_SIZE": verdict.ISSUE_DTYPE.itemsize,
    "FACT_SIZE": FACTS_DTYPE.itemsize,
    "MAX_DEPTH": pf.MAX_DEPTH,
    # an IPv4 header checksum and an L4 checksum at every tunnel level
    "MAX_ROWS_PER_PACKET": 2 * pf.MAX_DEPTH,
    "N_LAYERS": len(verdict.Layer),
    "N_STATUS": len(verdict.Status),
    "MAX_VLAN_TAGS": pf.MAX_VLAN_TAGS,
    "SCAN_VLAN_TAGS": pf.SCAN_VLAN_TAGS,
    "MAX_IPV6_EXT_HEADERS": pf.MAX_IPV6_EXT_HEADERS,
}


def _int_constants(module: types.ModuleType) -> dict[str, int]:
    return {k: v for k, v in vars(module).items() if k.isupper() and isinstance(v, int)}


def test_every_fastscan_constant_is_pythons() -> None:
    assert _int_constants(_fastscan) == FASTSCAN_CONSTANTS


def test_the_python_copies_of_the_limits_are_the_registrys() -> None:
    assert verdict.MAX_DEPTH == frame.MAX_DEPTH == pf.MAX_DEPTH
    assert link.MAX_VLAN_TAGS == pf.MAX_VLAN_TAGS and ipv6.MAX_EXT_HEADERS == pf.MAX_IPV6_EXT_HEADERS


def test_framing_status_codes_are_distinct() -> None:
    codes = _int_constants(_framing)
    assert len(set(codes.values())) == len(codes) >= 9


def _stub_names(path: Path) -> set[str]:
    """Names a .pyi declares at top level, less its own helpers (imports and type aliases)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = ast.unparse(node.annotation)
            if annotation != "TypeAlias":
                names.add(node.target.id)
    return names


@pytest.mark.parametrize("module", [_fastscan, _framing], ids=lambda m: m.__name__)
def test_each_stub_names_exactly_what_its_module_exports(module: types.ModuleType) -> None:
    stub = NATIVE / (module.__name__.rpartition(".")[2] + ".pyi")
    public = {n for n in dir(module) if not n.startswith("_")}
    assert _stub_names(stub) == public


@pytest.mark.parametrize("module", [_fastscan, _framing], ids=lambda m: m.__name__)
def test_stub_functions_take_as_many_arguments_as_the_c_checks(module: types.ModuleType) -> None:
    """Calling with the stub's positional count gets past the count check (to a type error about
    an argument, not about how many there are)."""
    stub = NATIVE / (module.__name__.rpartition(".")[2] + ".pyi")
    for node in ast.parse(stub.read_text()).body:
        if not isinstance(node, ast.FunctionDef) or node.args.vararg is not None:
            continue
        n = len(node.args.posonlyargs) + len(node.args.args)
        with pytest.raises((TypeError, ValueError)) as e:
            getattr(module, node.name)(*([object()] * n))
        assert "argument" not in str(e.value) or "given" not in str(e.value), (node.name, str(e.value))
