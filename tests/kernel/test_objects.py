"""The committed eBPF objects: built from the committed sources, with the layouts user space reads.

The objects are CO-RE and committed (users need no compiler); `python3 -m badsum.kernel.build`
rebuilds them and records digests in objects.json. A source edited without a rebuild fails here.
The record layouts are read from the objects' own BTF (the compiler's idea of each struct), not
from our Python, so a field added on one side only is caught.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from badsum.kernel import build, filter as kf, libbpf, records

BTF_KIND_STRUCT = 4


def test_objects_are_built_from_the_committed_sources() -> None:
    assert build.stale() == []


def test_a_changed_source_is_reported_stale(tmp_path: Path) -> None:
    for p in build.BPF_DIR.iterdir():
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "follow_event.h").write_text((tmp_path / "follow_event.h").read_text() + "\n/* edit */\n")
    assert any("follow.bpf.o: its sources changed" in s for s in build.stale(tmp_path))
    (tmp_path / "drops.bpf.o").write_bytes(b"\x7fELF")
    assert any("drops.bpf.o: the object is not the one recorded" in s for s in build.stale(tmp_path))


def _struct_sizes(obj: Path) -> dict[str, int]:
    lib = libbpf.library()
    btf = lib.btf__parse(str(obj).encode(), None)
    assert btf, f"no BTF in {obj}"
    try:
        out = {}
        for name in ("event", "config", "filter_term", "drop_key", "drop_value"):
            tid = lib.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_STRUCT)
            if tid > 0:
                out[name] = libbpf._BtfType.from_address(lib.btf__type_by_id(btf, tid)).size
        return out
    finally:
        lib.btf__free(btf)


def test_record_layouts_match_the_objects() -> None:
    follow = _struct_sizes(build.BPF_DIR / "follow.bpf.o")
    assert follow["event"] == records.EVENT_HEADER.size + records.MAX_CAP
    assert follow["config"] == kf.CONFIG_SIZE
    drops = _struct_sizes(build.BPF_DIR / "drops.bpf.o")
    assert drops["drop_key"] == records.DROP_KEY.size
    assert drops["drop_value"] == records.DROP_VALUE.size


def test_rebuild_gives_the_committed_objects(tmp_path: Path) -> None:
    """Where the recording compiler is here, a rebuild is byte for byte the committed object."""
    clang, strip = build._tool(build.CLANGS), build._tool(build.STRIPS)
    manifest = json.loads(build.MANIFEST.read_text())
    if clang is None or strip is None or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip("clang, llvm-strip or libbpf-dev not installed: the digest test above still guards staleness")
    version = subprocess.run([clang, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    if version != manifest["follow.bpf.o"]["compiler"]:
        pytest.skip(f"objects were built by {manifest['follow.bpf.o']['compiler']}, this is {version}")
    for p in build.BPF_DIR.iterdir():
        if p.suffix in (".c", ".h"):
            shutil.copy(p, tmp_path / p.name)
    for obj in build.OBJECTS:
        build.compile_object(obj, tmp_path / obj, clang, strip, tmp_path)
        assert (tmp_path / obj).read_bytes() == (build.BPF_DIR / obj).read_bytes(), obj


def test_check_command_exit_code() -> None:
    assert build.main(["--check"]) == 0


def test_libbpf_print_callback_formats_varargs() -> None:
    # A bad object makes libbpf print through the va_list callback: the text must come back readable.
    with pytest.raises(libbpf.BpfError) as e:
        libbpf.BpfObject(b"not an ELF object at all", "junk")
    assert e.value.stage.startswith("opening junk")
    assert ctypes.sizeof(libbpf._OpenOpts) >= 56
