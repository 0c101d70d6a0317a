"""A private Docker engine for one lab (dockerd from Debian's docker.io), and the local images it runs.

The lab starts its own dockerd with its own data root, exec root and API socket in the run's
directory, so a Docker the user runs (if any) is never asked, changed or stopped. Started in the
root namespace with its defaults, dockerd rewrites the host's firewall (DOCKER chains, FORWARD
policy DROP) and creates docker0 in Docker's default range; the lab passes `--iptables=false
--ip6tables=false --bridge=none`, so it creates neither, and it runs inside a lab's network namespace
and a private copy of the mount namespace (its overlays and netns files live there and go with it).

No image registry is reachable from these machines, so images are built locally: a busybox-static
root filesystem (`docker import`) for the containers of a scenario, or a Debian base made with
debootstrap for the exporter's image (tests/deploy).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

from badsum.lab.runner import Background, CommandError, run, spawn, wait_for

#: The image the lab's containers run: busybox-static and nothing else, made on this host.
LAB_IMAGE = "badsum-lab/busybox:1"
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
#: The applets the scenarios use inside a container (sh for `docker exec`, ping, nc, sha256sum).
APPLETS = ("sh", "ip", "ping", "nc", "sleep", "cat", "sha256sum", "ifconfig", "ethtool", "hostname")
START_TIMEOUT = 30.0


def docker_available() -> str | None:
    """None when a private dockerd can run here, else why not (one line)."""
    for tool, pkg in (("dockerd", "docker.io"), ("containerd", "containerd"), ("runc", "runc"), ("docker", "docker.io"),
                      ("nsenter", "util-linux"), ("unshare", "util-linux")):  # fmt: skip
        if shutil.which(tool) is None:
            return f"{tool} not found: install Debian's {pkg}"
    if busybox_static() is None:
        return "a static busybox is needed for the lab image: install Debian's busybox-static"
    return None


def busybox_static() -> Path | None:
    """A statically linked busybox (the dynamic one would need the host's libc inside the image)."""
    for p in BUSYBOX_PATHS:
        try:
            head = p.read_bytes()[:4096] if p.is_file() else b""
        except OSError:
            continue
        # A dynamic ELF has a PT_INTERP naming the loader; busybox-static has none.
        if head.startswith(b"\x7fELF") and b"/lib64/ld-linux" not in head and b"/lib/ld-" not in head:
            return p
    return None


def busybox_rootfs_tar() -> bytes:
    """A root filesystem holding busybox-static and its applet links, as a tar stream (pure)."""
    bb = busybox_static()
    if bb is None:
        raise CommandError(["docker", "import"], "no static busybox (Debian: busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = bb.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


class PrivateDocker:
    """dockerd (and the containerd it starts) for one lab, in namespace `ns`, everything under `rundir`."""

    def __init__(self, ns: str | None, rundir: Path) -> None:
        self.ns = ns
        self.dir = rundir
        self.data_root = rundir / "data"
        self.exec_root = rundir / "exec"
        self.sock = rundir / "docker.sock"
        self.procs: list[Background] = []

    @property
    def host(self) -> str:
        """The value for `docker -H` and DOCKER_HOST."""
        return f"unix://{self.sock}"

    def docker(self, *args: str, timeout: float = 60, check: bool = True, input: str | None = None):  # noqa: A002, ANN201
        return run(["docker", "-H", self.host, *args], timeout=timeout, check=check, input=input)

    def start(self) -> list[Background]:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false",
                "--ip-masq=false", "--userland-proxy=false", f"--data-root={self.data_root}",
                f"--exec-root={self.exec_root}", f"--pidfile={self.dir / 'docker.pid'}", "-H", self.host,
                "--log-level=warn"]  # fmt: skip
        d = spawn("dockerd", self._in_lab_ns(argv), ns=None, logdir=self.dir)
        self.procs.append(d)
        try:
            wait_for(lambda: not d.alive() or self.ping(), START_TIMEOUT, interval=0.2, what="dockerd API")
        except TimeoutError:
            pass
        if not d.alive() or not self.ping():
            tail = d.output()[-300:].strip().replace("\n", " | ")
            raise CommandError(argv, f"dockerd did not start: {tail}")
        return self.procs

    def _in_lab_ns(self, argv: list[str]) -> list[str]:
        """dockerd in the lab's network namespace and a private mount namespace of its own. Not `ip
        netns exec`: it mounts a fresh /sys, which hides the cgroup hierarchies ("Devices cgroup
        isn't mounted"). A copy of the root mount namespace keeps them, and the overlays and netns
        files dockerd mounts stay in the copy (gone with its last process)."""
        if self.ns is None:
            return argv
        return ["nsenter", f"--net=/run/netns/{self.ns}", "unshare", "--mount", "--propagation", "private", *argv]

    def ping(self) -> bool:
        if not self.sock.exists():
            return False
        return self.docker("version", "--format", "{{.Server.Version}}", timeout=10, check=False).returncode == 0

    def version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}", timeout=10).stdout.strip()

    def import_lab_image(self, tag: str = LAB_IMAGE) -> str:
        """Build the busybox image with `docker import` (no registry is needed); returns its id."""
        argv = ["docker", "-H", self.host, "import", "-c", 'CMD ["/bin/sh"]', "-", tag]
        try:
            r = subprocess.run(argv, input=busybox_rootfs_tar(), capture_output=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise CommandError(argv, "timed out after 60 s") from None
        if r.returncode != 0:
            raise CommandError(argv, r.stderr.decode(errors="replace").strip() or f"exit {r.returncode}")
        return r.stdout.decode().strip()

    def containers(self) -> list[str]:
        return self.docker("ps", "-aq", "--no-trunc", timeout=20, check=False).stdout.split()

    def pid_of(self, container: str) -> int:
        return int(self.docker("inspect", "-f", "{{.State.Pid}}", container, timeout=20).stdout.strip())

    def stop(self) -> None:
        """Remove every container of this engine, then stop dockerd (its containerd goes with it)."""
        if any(p.alive() for p in self.procs) and self.sock.exists():
            ids = self.containers()
            if ids:
                self.docker("rm", "-f", *ids, timeout=60, check=False)
        for p in reversed(self.procs):
            # dockerd shuts down cleanly on SIGTERM (containerd and the shims with it), not on SIGINT.
            p.stop(signal.SIGTERM, timeout=20)
        kill_leftover_shims(self.exec_root)
        unmount_under(self.dir)
        self.procs.clear()


def engine_pid(rundir: Path) -> int | None:
    """The live dockerd a lab started in `rundir`: its pidfile's pid, if that process is dockerd with
    this data root on its command line (a recycled pid is someone else's and is left alone)."""
    try:
        pid = int((rundir / "docker.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    mine = f"--data-root={rundir / 'data'}".encode()
    return pid if argv[0].endswith(b"dockerd") and mine in argv and state != "Z" else None


def stop_engine(rundir: Path, timeout: float = 20.0) -> list[int]:
    """`lab clean` for a private dockerd whose lab is gone (SIGKILLed, or kept): its containers
    removed through its own API, SIGTERM (it stops containerd and the shims), SIGKILL if it hangs;
    then the shims, containers and mounts a killed engine leaves. Returns the pids signalled."""
    killed: list[int] = []
    pid = engine_pid(rundir)
    if pid is not None:
        sock = rundir / "docker.sock"
        if sock.exists():
            host = ["docker", "-H", f"unix://{sock}"]
            ids = subprocess.run([*host, "ps", "-aq", "--no-trunc"], capture_output=True, text=True, timeout=20,
                                 check=False).stdout.split()  # fmt: skip
            if ids:
                subprocess.run([*host, "rm", "-f", *ids], capture_output=True, timeout=60, check=False)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
                killed.append(pid)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while engine_pid(rundir) == pid and time.monotonic() < deadline:
                time.sleep(0.05)
            if engine_pid(rundir) != pid:
                break
    killed += kill_leftover_shims(rundir / "exec")
    unmount_under(rundir)
    return killed


def kill_leftover_shims(exec_root: Path, wait: float = 5.0) -> list[int]:
    """containerd's shims outlive a SIGKILLed dockerd (their parent is init), and so do the
    containers they hold: stop the shims that name this engine's exec root on their command line,
    and the processes in those containers' cgroups (`/docker/<id>`), and nothing else. Returns the pids."""
    mine = str(exec_root) + "/"
    shims: dict[int, str] = {}
    for pid, argv in running_processes():
        if argv and argv[0].endswith("containerd-shim-runc-v2") and any(a.startswith(mine) for a in argv):
            shims[pid] = argv[argv.index("-id") + 1] if "-id" in argv[:-1] else ""
    ids = {i for i in shims.values() if len(i) == 64}
    victims = list(shims)
    if ids:
        for pid, _ in running_processes():
            try:
                cg = Path(f"/proc/{pid}/cgroup").read_text()
            except OSError:
                continue
            if any(f"/docker/{i}" in cg or f"docker-{i}.scope" in cg for i in ids):
                victims.append(pid)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while victims and time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in victims):
        time.sleep(0.05)
    return victims


def unmount_under(root: Path) -> list[str]:
    """Unmount what a killed engine left mounted under `root` (overlays, its data-root bind mount,
    netns files), deepest first; a dockerd started in a lab namespace has its own mount namespace
    and leaves nothing here. Returns the mount points."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix) or mp == prefix[:-1]:
                points.append(mp)
    except OSError:
        return []
    for mp in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, timeout=20, check=False)
    return points


def running_processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process (a process that ends meanwhile is skipped)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            out.append((int(entry), [a.decode(errors="replace") for a in raw.split(b"\0") if a]))
    return out


__all__ = ["LAB_IMAGE", "PrivateDocker", "busybox_rootfs_tar", "busybox_static", "docker_available", "engine_pid",
           "kill_leftover_shims", "running_processes", "stop_engine", "unmount_under"]  # fmt: skip
