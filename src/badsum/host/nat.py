"""NAT and mangle rules as the kernel holds them: the active iptables backend, the legacy one when it
is not the active one, and the nftables ruleset.

Read without loading modules (DESIGN: no kernel module is ever loaded): `iptables-save -t nat`
would make the legacy backend load iptable_nat, so the whole dump is read (it lists only tables
that exist) and split by table; nft is not asked when nf_tables is a module that is not loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from badsum.host.commands import Output
from badsum.host.model import NatRules

Runner = Callable[[list[str]], Output]
TABLES = ("nat", "mangle")


def split_tables(text: str) -> dict[str, tuple[str, ...]]:
    """An iptables-save dump -> {table: its lines from `*table` to `COMMIT`}, comments dropped
    (they carry timestamps and would make equal snapshots differ)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("*"):
            current = out.setdefault(line[1:].strip(), [])
        if current is not None:
            current.append(line)
        if line.strip() == "COMMIT":
            current = None
    return {k: tuple(v) for k, v in out.items()}


def backend_of(version_text: str) -> str | None:
    """`iptables-save v1.8.9 (nf_tables)` -> `nf_tables`; `(legacy)` -> `legacy`."""
    if "(nf_tables)" in version_text:
        return "nf_tables"
    if "(legacy)" in version_text:
        return "legacy"
    return None


def module_absent(name: str, proc: str = "/proc", sys: str = "/sys") -> bool:
    """True only when the kernel loads modules and `name` is neither loaded nor built in: asking
    its subsystem would then load it. A kernel without module support cannot load anything."""
    try:
        with open(f"{proc}/modules") as f:
            loaded = {line.split(" ", 1)[0] for line in f}
    except OSError:
        return False
    return name not in loaded and not os.path.isdir(f"{sys}/module/{name}")


def collect_nat(run: Runner, *, backend: str | None, legacy_installed: bool, nft_loadable: bool) -> tuple[NatRules, list[str]]:
    """NatRules for one namespace (`run` already runs inside it)."""
    errors: list[str] = []
    nat: tuple[str, ...] | None = None
    mangle: tuple[str, ...] | None = None
    legacy_nat: tuple[str, ...] | None = None
    legacy_mangle: tuple[str, ...] | None = None
    nft: str | None = None
    if backend == "nf_tables" and not nft_loadable:
        nat, mangle = (), ()  # nf_tables is not loaded: no iptables-nft table can exist
    else:
        out = run(["iptables-save"])
        if out.stdout is not None:
            tables = split_tables(out.stdout)
            nat, mangle = tables.get("nat", ()), tables.get("mangle", ())
        else:
            errors.append(f"NAT rules unknown: {out.error}")
    if backend == "nf_tables" and legacy_installed:
        out = run(["iptables-legacy-save"])
        if out.stdout is not None:
            tables = split_tables(out.stdout)
            legacy_nat, legacy_mangle = tables.get("nat", ()), tables.get("mangle", ())
        else:
            errors.append(f"legacy iptables rules unknown: {out.error}")
    # IPv6 NAT (kube-proxy's ip6tables rules on dual-stack nodes, Docker's ip6tables): the same two backends.
    nat6: tuple[str, ...] | None = None
    legacy_nat6: tuple[str, ...] | None = None
    if backend == "nf_tables" and not nft_loadable:
        nat6 = ()
    else:
        out = run(["ip6tables-save"])  # no `-t nat`: with the legacy backend it would load ip6table_nat
        if out.stdout is not None:
            nat6 = split_tables(out.stdout).get("nat", ())
        elif out.error and out.error.endswith("not installed"):
            nat6 = None
        else:
            errors.append(f"IPv6 NAT rules unknown: {out.error}")
    if backend == "nf_tables" and legacy_installed:
        out = run(["ip6tables-legacy-save"])
        if out.stdout is not None:
            legacy_nat6 = split_tables(out.stdout).get("nat", ())
        elif not (out.error and out.error.endswith("not installed")):
            errors.append(f"legacy IPv6 NAT rules unknown: {out.error}")
    if not nft_loadable:
        nft = ""  # nf_tables not loaded: the ruleset is empty, and asking would load it
    else:
        out = run(["nft", "list", "ruleset"])
        if out.stdout is not None:
            nft = out.stdout
        elif out.error and out.error.endswith("not installed"):
            nft = None
        else:
            errors.append(f"nftables ruleset unknown: {out.error}")
    rules = NatRules(iptables_nat=nat, iptables_mangle=mangle, nft_ruleset=nft, iptables_backend=backend,
                     iptables_legacy_nat=legacy_nat, iptables_legacy_mangle=legacy_mangle, ip6tables_nat=nat6,
                     ip6tables_legacy_nat=legacy_nat6)  # fmt: skip
    return rules, errors
