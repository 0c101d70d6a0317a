"""The exporter's image (deploy/Containerfile), built and run on this host with no image registry.

No registry is reachable from the lab machines, so the base is made from Debian's own packages:
`debootstrap --variant=minbase` with python3 and its venv module, from the mirror apt already uses,
then `docker import`. The tarball is cached by suite, mirror and day, so a second build the same day
skips debootstrap. The engine is a private dockerd (`HostEngine`) in the root network namespace (the
DaemonSet's pod runs with hostNetwork) but with a mount namespace of its own, so its overlays and
the container's bind mounts never appear in the host's mount table.

`run_flags` translates the DaemonSet's pod spec into `docker run` flags (pure: it takes the parsed
YAML, so the rest of badsum needs no YAML parser).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from badsum.lab.docker import PrivateDocker, unmount_under
from badsum.lab.runner import CommandError

SUITE = "bookworm"
#: What the Containerfile needs of a base: python3 (3.11 in bookworm) and venv (PEP 668 forbids pip into it).
BASE_PACKAGES = ("python3", "python3-venv")
BASE_TAG = "badsum-base/debian:bookworm"
IMAGE_TAG = "badsum:0.1.0"
CACHE_DIR = Path("/var/cache/badsum-tests/debootstrap")
#: An imported rootfs carries no image config; the Containerfile's ENV PATH is absolute for the same reason.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What the Containerfile COPYs, and itself: the build context, and nothing else of the tree.
CONTEXT = ("pyproject.toml", "setup.py", "README.md", "src", "deploy/Containerfile")
#: Proxy settings docker build knows without an ARG line: passed on when this host has them.
PASS_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
#: Where Debian keeps the CAs an administrator added (update-ca-certificates): on a network whose
#: proxy inspects TLS, the host trusts its CA from here, and pip in the build must trust it too.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
MAX_EXTRA_CA = 64 * 1024  # a build argument is one argv string (the kernel caps one at 128 KiB)
#: As debian:bookworm-slim does (debuerreotype's slimify): no manuals, translations or documents
#: but the licences, now and for every package the Containerfile installs later.
DPKG_SLIM = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""
#: Bump when the recipe (packages, DPKG_SLIM, the cleaning) changes: it is part of the cache key.
BASE_RECIPE = "slim-1"
DEBOOTSTRAP_TIMEOUT = 900
BUILD_TIMEOUT = 1200


class HostEngine(PrivateDocker):
    """A private dockerd in the root network namespace, in a mount namespace of its own. The host's
    mounts are private here, and Docker refuses `rslave` (the DaemonSet's HostToContainer) on a
    private mount, so the copy is made rshared first: shared within dockerd's namespace only."""

    def __init__(self, rundir: Path) -> None:
        super().__init__(None, rundir)

    def _in_lab_ns(self, argv: list[str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount --make-rshared / && exec "$@"',
                "badsum-image-engine", *argv]  # fmt: skip


# -- the base (debootstrap) -----------------------------------------------------------------------


def apt_mirror(suite: str = SUITE, etc_apt: Path = Path("/etc/apt")) -> str | None:
    """The Debian mirror this host's apt uses for `suite` (one-line and deb822 sources)."""
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list")),
             *sorted((etc_apt / "sources.list.d").glob("*.sources"))]  # fmt: skip
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(_deb822_field(line) for line in stanza.splitlines() if ":" in line and not line.startswith("#"))
                if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                    return fields.get("uris", "").split()[0] if fields.get("uris") else None
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1]
    return None


def _deb822_field(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key.strip().lower(), value.strip()


def base_cache_name(mirror: str, day: str, suite: str = SUITE, packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    """`bookworm-<hash of mirror and packages>-<day>.tar`: a new day, mirror or package list builds anew."""
    key = hashlib.sha256(f"{mirror}\0{','.join(packages)}\0{BASE_RECIPE}".encode()).hexdigest()[:12]
    return f"{suite}-{key}-{day}.tar"


@dataclass(frozen=True, slots=True)
class Base:
    """The debootstrap tarball, and what making it cost."""

    tarball: Path
    cached: bool
    """True when an earlier run's tarball was reused."""
    seconds: float


def debootstrap_base(mirror: str, *, day: str, cache: Path = CACHE_DIR, suite: str = SUITE) -> Base:
    """The minbase root filesystem as a tarball under `cache` (built once per day and mirror)."""
    t0 = time.monotonic()
    name = base_cache_name(mirror, day, suite)
    tarball = cache / name
    if tarball.is_file():
        return Base(tarball, True, 0.0)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    rootfs = work / "rootfs"
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", suite, str(rootfs), mirror]
    try:
        _run(argv, DEBOOTSTRAP_TIMEOUT)
        slim(rootfs)
        partial = work / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], 300)
        partial.rename(tarball)  # same filesystem: a reader sees the whole tarball or none
    finally:
        # debootstrap mounts /proc and /sys in the target while it works; a failed run can leave them.
        unmount_under(rootfs)
        shutil.rmtree(work, ignore_errors=True)
    for old in cache.glob(f"{suite}-*.tar"):
        if old != tarball:
            old.unlink(missing_ok=True)  # an earlier day's or recipe's: the cache keeps one tarball
    return Base(tarball, False, round(time.monotonic() - t0, 1))


def slim(rootfs: Path) -> None:
    """Leave out what a container base does not need: apt's downloaded lists and packages (the
    Containerfile runs apt-get update itself), manuals, translations and documents but licences."""
    (rootfs / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/dpkg/dpkg.cfg.d/badsum-slim").write_text(DPKG_SLIM)
    for sub in ("var/lib/apt/lists", "var/cache/apt", "usr/share/man", "usr/share/info", "usr/share/lintian"):
        for p in (rootfs / sub).glob("*"):
            if p.name not in ("partial", "archives"):  # apt's own directories stay, empty
                _remove(p)
    for p in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        p.unlink()
    for p in (rootfs / "usr/share/locale").glob("*"):
        if p.name != "locale.alias":
            _remove(p)
    for d in (rootfs / "usr/share/doc").glob("*"):
        for p in d.iterdir() if d.is_dir() and not d.is_symlink() else ():
            if p.name != "copyright":
                _remove(p)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def import_base(engine: PrivateDocker, tarball: Path, tag: str = BASE_TAG) -> str:
    """`docker import` the tarball with a PATH (an imported image has no config); returns the image id."""
    argv = ["docker", "-H", engine.host, "import", "-c", f"ENV PATH={BASE_PATH}", str(tarball), tag]
    return _run(argv, 300).strip()


# -- the image (docker build) ---------------------------------------------------------------------


def context_tar(repo: Path) -> bytes:
    """The build context as a tar stream: CONTEXT only, without compiled objects and caches."""

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name.rsplit("/", 1)[-1]
        return None if name == "__pycache__" or name.endswith((".so", ".pyc", ".egg-info")) else info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in CONTEXT:
            tar.add(repo / rel, arcname=rel, filter=keep)
    return buf.getvalue()


def build_image(engine: PrivateDocker, repo: Path, *, base: str, tag: str = IMAGE_TAG, log: Path | None = None) -> str:
    """`docker build --network=host` of deploy/Containerfile with BASE=base; returns the image id.
    Host network: the engine runs with --bridge=none, and apt and pip need the network."""
    with tempfile.TemporaryDirectory(prefix="badsum-image-context-") as ctx:
        with tarfile.open(fileobj=io.BytesIO(context_tar(repo))) as tar:
            tar.extractall(ctx, filter="data")
        extra_ca = local_ca_pem()
        argv = ["docker", "-H", engine.host, "build", "--network=host", "--build-arg", f"BASE={base}",
                *(a for k in PASS_ENV if k in os.environ for a in ("--build-arg", k)),
                *(("--build-arg", f"PIP_EXTRA_CA={extra_ca}") if extra_ca else ()),
                "-f", f"{ctx}/deploy/Containerfile", "-t", tag, ctx]  # fmt: skip
        # The legacy builder: docker.io 20.10 has no buildx, and BuildKit adds nothing to a two-stage file.
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise CommandError(argv, f"timed out after {BUILD_TIMEOUT} s") from None
    out = r.stdout + r.stderr
    if log is not None:
        log.write_text(out)
    if r.returncode != 0:
        raise CommandError(argv, out.strip()[-2000:] or f"exit {r.returncode}")
    return engine.docker("image", "inspect", "-f", "{{.Id}}", tag, timeout=30).stdout.strip()


def local_ca_pem(ca_dir: Path = LOCAL_CA_DIR) -> str:
    """The PEM certificates added to this host's trust (empty when none, or too many to pass)."""
    pems = []
    for f in sorted(ca_dir.rglob("*.crt")) if ca_dir.is_dir() else []:
        try:
            text = f.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if "-----BEGIN CERTIFICATE-----" in text:
            pems.append(text.strip())
    joined = "\n".join(pems)
    return joined if len(joined) <= MAX_EXTRA_CA else ""


def _run(argv: list[str], timeout: float) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CommandError(argv, f"timed out after {timeout:g} s") from None
    if r.returncode != 0:
        raise CommandError(argv, (r.stderr or r.stdout).strip()[-1500:] or f"exit {r.returncode}")
    return r.stdout


# -- the DaemonSet as docker run flags (pure) -----------------------------------------------------

#: Kubernetes mountPropagation -> Docker bind propagation (None: Docker's default, rprivate).
PROPAGATION = {"HostToContainer": "rslave", "Bidirectional": "rshared", "None": None}


def quantity_bytes(q: str) -> int:
    """A Kubernetes memory quantity (16Mi, 256Mi, 1G, 1000) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+)([KMGT]i?|k)?", str(q))
    if not m:
        raise ValueError(f"unsupported quantity {q!r}")
    return int(m.group(1)) * units.get(m.group(2) or "", 1)


def millicpu(q: str) -> int:
    s = str(q)
    return int(s[:-1]) if s.endswith("m") else int(float(s) * 1000)


def host_paths(daemonset: dict) -> dict[str, str]:
    """{hostPath: type} of the pod's volumes: the directories the node must have (kubelet creates
    DirectoryOrCreate ones; `docker run -v` would create the others, silently)."""
    vols = daemonset["spec"]["template"]["spec"].get("volumes", [])
    return {v["hostPath"]["path"]: v["hostPath"].get("type", "") for v in vols if "hostPath" in v}


def run_flags(daemonset: dict, *, name: str) -> tuple[list[str], list[str]]:
    """(`docker run` flags, the container's args) for the DaemonSet's one container. Raises
    ValueError on a setting it cannot translate, rather than running something else."""
    pod = daemonset["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    flags = ["--name", name]
    if pod.get("hostNetwork"):
        flags.append("--network=host")
    if pod.get("hostPID"):
        flags.append("--pid=host")
    if "terminationGracePeriodSeconds" in pod:
        flags.append(f"--stop-timeout={int(pod['terminationGracePeriodSeconds'])}")
    seccomp = (pod.get("securityContext") or {}).get("seccompProfile", {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        flags.append("--security-opt=seccomp=unconfined")
    elif seccomp != "RuntimeDefault":
        raise ValueError(f"seccompProfile {seccomp} has no docker run equivalent here")
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        flags.append("--privileged")
    if "runAsUser" in sc:
        flags.append(f"--user={int(sc['runAsUser'])}")
    if sc.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    caps = sc.get("capabilities") or {}
    flags += [f"--cap-drop={x}" for x in caps.get("drop", [])] + [f"--cap-add={x}" for x in caps.get("add", [])]
    apparmor = (sc.get("appArmorProfile") or {}).get("type", "RuntimeDefault")
    if apparmor == "Unconfined":
        flags.append("--security-opt=apparmor=unconfined")
    elif apparmor != "RuntimeDefault":
        raise ValueError(f"appArmorProfile {apparmor} has no docker run equivalent here")
    for e in c.get("env", []):
        flags.append(f"--env={e['name']}={e['value']}")
    for p in c.get("ports", []):
        # With host networking Docker publishes nothing: the port is the process's own listen address.
        flags.append(f"--expose={p['containerPort']}/{p.get('protocol', 'TCP').lower()}")
    res = c.get("resources") or {}
    limits, requests = res.get("limits", {}), res.get("requests", {})
    if "cpu" in limits:
        flags.append(f"--cpus={millicpu(limits['cpu']) / 1000:g}")
    if "memory" in limits:
        flags.append(f"--memory={quantity_bytes(limits['memory'])}")
    if "cpu" in requests:
        # kubelet turns a CPU request into cpu.shares = milliCPU * 1024 / 1000 (at least 2); a memory
        # request only schedules, it sets nothing on the node.
        flags.append(f"--cpu-shares={max(2, millicpu(requests['cpu']) * 1024 // 1000)}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "emptyDir" in v:
            ed = v["emptyDir"] or {}
            if ed.get("medium") != "Memory":
                raise ValueError(f"volume {m['name']}: only emptyDir with medium Memory is translated (a tmpfs)")
            size = f",size={quantity_bytes(ed['sizeLimit'])}" if "sizeLimit" in ed else ""
            flags.append(f"--tmpfs={m['mountPath']}:rw{size}")
        elif "hostPath" in v:
            opts = ["ro" if m.get("readOnly") else "rw"]
            prop = PROPAGATION[m.get("mountPropagation", "None")]
            if prop:
                opts.append(prop)
            flags.append(f"--volume={v['hostPath']['path']}:{m['mountPath']}:{','.join(opts)}")
        else:
            raise ValueError(f"volume {m['name']}: only emptyDir and hostPath are translated")
    if c.get("command"):
        raise ValueError("a container command (ENTRYPOINT override) is not translated")
    return flags, [str(a) for a in c.get("args", [])]


__all__ = ["BASE_TAG", "CACHE_DIR", "IMAGE_TAG", "Base", "HostEngine", "apt_mirror", "base_cache_name", "build_image",
           "context_tar", "debootstrap_base", "host_paths", "import_base", "run_flags"]  # fmt: skip
