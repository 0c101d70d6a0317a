"""The rule toolkit is public and typed: checks and their helpers read a HostSnapshot, never Any."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path
from types import ModuleType

import pytest

from badsum.host.model import HostSnapshot, KernelInfo, Link, Namespace
from badsum.rules import checks, engine, kernels, masquerade, toolkit, tunnels
from badsum.rules.model import Finding, Rule

RULES_SRC = Path(checks.__file__).resolve().parent
#: The modules checks are written in, and the toolkit they share.
CHECK_MODULES = (toolkit, checks, tunnels, kernels, masquerade)
#: What a parameter of this name must be, wherever a check or helper takes one.
BY_NAME: dict[str, object] = {"snap": HostSnapshot, "snapshot": HostSnapshot, "ns": Namespace, "link": Link,
                              "kernel": KernelInfo, "rule": Rule}  # fmt: skip


def _functions(module: ModuleType) -> list[tuple[str, typing.Callable[..., object]]]:
    return [(name, fn) for name, fn in vars(module).items()
            if inspect.isfunction(fn) and fn.__module__ == module.__name__]  # fmt: skip


def _mentions_any(hint: object) -> bool:
    return hint is typing.Any or any(_mentions_any(arg) for arg in typing.get_args(hint))


ALL_FUNCTIONS = [(f"{m.__name__}.{name}", fn) for m in CHECK_MODULES for name, fn in _functions(m)]


@pytest.mark.parametrize(("name", "check"), list(checks.CHECKS.items()))
def test_every_check_takes_the_snapshot_type(name: str, check: toolkit.Check) -> None:
    params = list(inspect.signature(check).parameters)
    assert len(params) == 2, name
    hints = typing.get_type_hints(check)
    assert hints[params[0]] is HostSnapshot, f"{name}: {hints[params[0]]!r}"
    assert hints[params[1]] is Rule and hints["return"] == list[Finding], name


@pytest.mark.parametrize(("name", "fn"), ALL_FUNCTIONS, ids=[n for n, _ in ALL_FUNCTIONS])
def test_every_check_and_helper_is_annotated_without_any(name: str, fn: typing.Callable[..., object]) -> None:
    hints = typing.get_type_hints(fn)
    params = inspect.signature(fn).parameters
    assert set(params) | {"return"} <= set(hints), f"{name}: unannotated {sorted(set(params) - set(hints))}"
    assert not [p for p, h in hints.items() if _mentions_any(h)], f"{name} is annotated with Any: {hints}"
    for param, want in BY_NAME.items():
        if param in params:
            assert hints[param] is want, f"{name}({param}: {hints[param]!r}), want {want!r}"


def test_records_of_the_check_modules_have_no_any() -> None:
    for module in CHECK_MODULES:
        for cls in [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == module.__name__]:
            hints = typing.get_type_hints(cls)
            assert not [f for f, h in hints.items() if _mentions_any(h)], f"{cls.__qualname__}: {hints}"


def test_the_engine_takes_the_snapshot_type() -> None:
    for fn in (engine.evaluate, engine.notes, engine.resolve_namespaces):
        assert typing.get_type_hints(fn)["snapshot"] is HostSnapshot, fn.__name__


def test_the_toolkit_is_public_and_documented() -> None:
    assert toolkit.__all__ and not [n for n in toolkit.__all__ if n.startswith("_")]
    assert all(hasattr(toolkit, n) for n in toolkit.__all__)
    for name, fn in _functions(toolkit):
        if not name.startswith("_"):
            assert name in toolkit.__all__ and (fn.__doc__ or "").strip(), name


def test_no_rule_module_imports_another_ones_private_names() -> None:
    offenders = []
    for path in sorted(RULES_SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("badsum."):
                offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not offenders, offenders
