"""The image build file: every program badsum's host layer (and the exporter) runs comes from a
Debian package the Containerfile installs. The package owning each program is asked of this
machine's dpkg database (the oracle), not written down here."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess

from deploykit import DEPLOY, REPO
from support import need_tool

CONTAINERFILE = DEPLOY / "Containerfile"
#: Programs the code may run but the image leaves out on purpose, and why (the code degrades).
OPTIONAL = {"crictl": "not packaged in Debian 12; pod names come from the runtimes' state files"}
RUN_NAMES = {"run", "command", "which"}


def programs() -> dict[str, str]:
    """{program: file} for argv[0] of every run([...]) / command([...]) / which("...") call and
    *ARGV list constant under src/badsum/host and src/badsum/exporter."""
    found: dict[str, str] = {}
    files = sorted((REPO / "src" / "badsum" / "host").glob("*.py")) + sorted((REPO / "src" / "badsum" / "exporter").glob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            first = None
            if isinstance(node, ast.Call) and node.args:
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name in RUN_NAMES:
                    arg = node.args[0]
                    first = arg.elts[0] if isinstance(arg, ast.List) and arg.elts else arg if name == "which" else None
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.List) and node.value.elts \
                    and any(isinstance(t, ast.Name) and t.id.endswith("ARGV") for t in node.targets):  # fmt: skip
                first = node.value.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and re.fullmatch(r"[\w.+-]+", first.value):
                found.setdefault(first.value, path.name)
    return found


def image_packages() -> set[str]:
    """The packages of the runtime stage's apt-get install (the last FROM)."""
    text = CONTAINERFILE.read_text()
    final = text[text.rindex("\nFROM "):]
    m = re.search(r"apt-get install -y --no-install-recommends((?:\s*\\\n)?(?:[ \t]+[\w.+-]+)+)", final)
    assert m, "no apt-get install in the runtime stage"
    return set(m.group(1).replace("\\", " ").split())


def owning_packages(programs: list[str]) -> dict[str, str]:
    """{program: Debian package} for the programs installed here, in one dpkg query. A program is
    followed through its symlinks (iptables-save -> alternatives -> xtables-nft-multi), and asked
    under both /usr and / (merged-/usr systems register some files under /bin and /sbin)."""
    # One file can be several programs (iptables-save and ip6tables-save are both xtables-nft-multi).
    candidates: dict[str, set[str]] = {}
    for program in programs:
        path = shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if path is None:
            continue
        for p in {path, os.path.realpath(path)}:
            candidates.setdefault(p, set()).add(program)
            candidates.setdefault(p.removeprefix("/usr"), set()).add(program)
    cp = subprocess.run(["dpkg", "-S", *sorted(candidates)], capture_output=True, text=True, check=False)
    owners: dict[str, str] = {}
    for line in cp.stdout.splitlines():
        pkgs, _, path = line.partition(": ")
        for program in sorted(candidates.get(path, ())):
            owners.setdefault(program, pkgs.split(",")[0].split(":")[0].strip())
    return owners


def test_the_program_scan_finds_the_known_ones():
    found = programs()
    assert {"nsenter", "nstat", "ip", "ethtool", "nft", "iptables-save", "sysctl", "mount"} <= found.keys()


def test_every_program_comes_from_a_package_in_the_image():
    need_tool("dpkg")  # the Debian package database tells which package owns a program
    packages = image_packages()
    needed = {p: where for p, where in programs().items() if p not in OPTIONAL}
    owners = owning_packages(sorted(needed))
    missing = []
    for program, where in sorted(needed.items()):
        owner = owners.get(program)
        assert owner is not None, f"{program} (run in {where}) is not installed here: .ci/run installs its package"
        if owner not in packages:
            missing.append(f"{program} ({where}) from {owner}")
    assert not missing, f"not installed in {CONTAINERFILE.name}: {missing}"


def test_the_image_runs_the_exporter_on_the_daemonset_port():
    text = CONTAINERFILE.read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") == 2, "a build stage and a runtime stage"
    assert 'ENTRYPOINT ["badsum"]' in text
    assert 'CMD ["exporter", "--listen", "0.0.0.0:9847"]' in text
    assert "gcc" not in text[text.rindex("\nFROM "):], "the compiler stays in the build stage"
