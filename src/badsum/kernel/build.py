"""Rebuild the committed eBPF objects from their sources: `python3 -m badsum.kernel.build`.

The objects are CO-RE (compiled once, relocated by libbpf against each kernel's BTF at load time),
so they are built by developers and committed, as cilium/ebpf's bpf2go does: users need no
compiler. Building needs clang (14 or later), llvm-strip and the libbpf headers (Debian: clang,
llvm, libbpf-dev, linux-libc-dev). `objects.json` records a digest of each object's sources and of
the object itself; tests/kernel checks both, so an edited source with a stale object fails.

`--check` verifies instead of building (no compiler needed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent / "bpf"
MANIFEST = BPF_DIR / "objects.json"
HEADERS = ("badsum_types.h", "follow_event.h")
#: object -> its C source; each includes every header in HEADERS.
OBJECTS = {"follow.bpf.o": "follow.bpf.c", "drops.bpf.o": "drops.bpf.c", "kb001_veth.bpf.o": "kb001_veth.bpf.c",
           "kb004_nat.bpf.o": "kb004_nat.bpf.c"}
CLANGS = ("clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14")
STRIPS = ("llvm-strip", "llvm-strip-19", "llvm-strip-18", "llvm-strip-17", "llvm-strip-16", "llvm-strip-15", "llvm-strip-14")


def sources_digest(obj: str, bpf_dir: Path = BPF_DIR) -> str:
    h = hashlib.sha256()
    for name in (OBJECTS[obj], *HEADERS):
        h.update(name.encode() + b"\0" + (bpf_dir / name).read_bytes() + b"\0")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stale(bpf_dir: Path = BPF_DIR) -> list[str]:
    """Why the committed objects do not match their sources (empty: they do)."""
    try:
        manifest = json.loads((bpf_dir / "objects.json").read_text())
    except (OSError, ValueError) as e:
        return [f"objects.json unreadable: {e}"]
    out = []
    for obj in OBJECTS:
        rec = manifest.get(obj)
        path = bpf_dir / obj
        if rec is None or not path.exists():
            out.append(f"{obj}: missing")
            continue
        if rec.get("sources_sha256") != sources_digest(obj, bpf_dir):
            out.append(f"{obj}: its sources changed since it was built")
        if rec.get("object_sha256") != file_digest(path):
            out.append(f"{obj}: the object is not the one recorded")
    return out


def _tool(names: tuple[str, ...]) -> str | None:
    return next((p for p in (shutil.which(n) for n in names) if p), None)


def include_dirs() -> list[str]:
    """<asm/types.h> lives under the multiarch directory on Debian."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [f"/usr/include/{multiarch}"] if multiarch else []
    return [d for d in dirs if Path(d).is_dir()]


def compile_object(obj: str, out: Path, clang: str, strip: str, bpf_dir: Path = BPF_DIR) -> None:
    # Relative names and a stripped object: the result does not depend on where it was built.
    argv = [clang, "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-I", ".",
            f"-fdebug-prefix-map={bpf_dir}=."]  # BTF line info names the source file; not where it sat
    for d in include_dirs():
        argv += ["-idirafter", d]
    argv += ["-c", OBJECTS[obj], "-o", str(out)]
    subprocess.run(argv, cwd=bpf_dir, check=True)
    subprocess.run([strip, "-g", str(out)], check=True)  # DWARF off; .BTF and .BTF.ext stay


def build(bpf_dir: Path = BPF_DIR) -> dict[str, dict[str, str]]:
    clang, strip = _tool(CLANGS), _tool(STRIPS)
    if clang is None or strip is None:
        raise SystemExit("build needs clang and llvm-strip (Debian: apt install clang llvm libbpf-dev linux-libc-dev)")
    version = subprocess.run([clang, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    manifest = {}
    for obj in OBJECTS:
        compile_object(obj, bpf_dir / obj, clang, strip, bpf_dir)
        manifest[obj] = {"source": OBJECTS[obj], "sources_sha256": sources_digest(obj, bpf_dir),
                         "object_sha256": file_digest(bpf_dir / obj), "compiler": version}  # fmt: skip
    (bpf_dir / "objects.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m badsum.kernel.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--check", action="store_true", help="verify the committed objects against their sources; build nothing")
    args = ap.parse_args(argv)
    if args.check:
        problems = stale()
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    for obj, rec in build().items():
        print(f"{obj}: {rec['object_sha256'][:16]} ({rec['compiler']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
