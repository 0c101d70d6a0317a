"""badsum.lab.image without an engine: the apt mirror, the cache name, the build context, the CAs
passed to pip, and the DaemonSet translated to `docker run` flags (each flag against the YAML)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import yaml
from support import REPO

from badsum.lab import image

DAEMONSET = REPO / "deploy" / "kubernetes" / "daemonset.yaml"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_apt_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# deb http://old.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n")  # fmt: skip
    assert image.apt_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert image.apt_mirror("bookworm", tmp_path) == "http://one.example/debian"  # sources.list is read first
    assert image.apt_mirror("trixie", tmp_path) is None


def test_cache_name_changes_with_mirror_day_and_recipe() -> None:
    a = image.base_cache_name("http://a/debian", "2026-12-06")
    assert a.startswith("bookworm-") and a.endswith("-2026-12-06.tar")
    assert a != image.base_cache_name("http://b/debian", "2026-12-06")
    assert a != image.base_cache_name("http://a/debian", "2026-12-07")
    assert a != image.base_cache_name("http://a/debian", "2026-12-06", packages=("python3",))


def test_context_is_what_the_containerfile_copies_without_build_products() -> None:
    with tarfile.open(fileobj=io.BytesIO(image.context_tar(REPO))) as tar:
        names = tar.getnames()
    assert {"pyproject.toml", "setup.py", "README.md", "deploy/Containerfile", "src/badsum/__init__.py"} <= set(names)
    assert not [n for n in names if n.endswith((".so", ".pyc")) or "__pycache__" in n or ".egg-info" in n]
    assert not [n for n in names if n.split("/")[0] in ("tests", ".git", "docs", "bench")]


def test_local_cas_are_passed_as_pem_text(tmp_path: Path) -> None:
    assert image.local_ca_pem(tmp_path / "none") == ""
    (tmp_path / "proxy.crt").write_text(PEM)
    (tmp_path / "junk.crt").write_text("not a certificate")
    assert image.local_ca_pem(tmp_path) == PEM.strip()
    (tmp_path / "huge.crt").write_text(PEM * 2000)  # beyond one argv string: leave pip to its own bundle
    assert image.local_ca_pem(tmp_path) == ""


def test_quantities() -> None:
    assert image.quantity_bytes("16Mi") == 16 << 20 and image.quantity_bytes("1G") == 10**9
    assert image.quantity_bytes("1000") == 1000 and image.millicpu("500m") == 500 and image.millicpu("2") == 2000
    with pytest.raises(ValueError):
        image.quantity_bytes("1.5Gi")


def test_the_daemonset_as_docker_run_flags() -> None:
    ds = yaml.safe_load(DAEMONSET.read_text())
    flags, args = image.run_flags(ds, name="x")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert args == c["args"] == ["exporter", "--listen", "0.0.0.0:9847"]
    assert {"--network=host", "--pid=host", "--read-only", "--cap-drop=ALL", "--user=0", "--security-opt=no-new-privileges",
            "--security-opt=apparmor=unconfined", "--stop-timeout=30", "--expose=9847/tcp"} <= set(flags)  # fmt: skip
    assert sorted(f.split("=", 1)[1] for f in flags if f.startswith("--cap-add=")) == sorted(c["securityContext"]["capabilities"]["add"])
    assert not [f for f in flags if f.startswith(("--privileged", "--security-opt=seccomp", "-p", "--publish"))]
    vols = [f.split("=", 1)[1] for f in flags if f.startswith("--volume=")]
    assert "/run/netns:/run/netns:ro,rslave" in vols and "/sys/kernel/tracing:/sys/kernel/tracing:rw" in vols
    assert len(vols) == len(image.host_paths(ds)) == 7
    assert "--tmpfs=/tmp:rw,size=16777216" in flags


def test_settings_that_cannot_be_translated_are_refused() -> None:
    ds = yaml.safe_load(DAEMONSET.read_text())
    ds["spec"]["template"]["spec"]["volumes"][0] = {"name": "tmp", "emptyDir": {}}  # on disk: no tmpfs equivalent
    with pytest.raises(ValueError, match="emptyDir"):
        image.run_flags(ds, name="x")
    ds = yaml.safe_load(DAEMONSET.read_text())
    ds["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": "p.json"}
    with pytest.raises(ValueError, match="seccomp"):
        image.run_flags(ds, name="x")
