"""The exporter's image, built and run for real: deploy/Containerfile on a private dockerd (Debian's
docker.io), from a Debian base made here with debootstrap (no registry is reachable), run with the
DaemonSet's settings as `docker run` flags, and scraped by a real Prometheus.

Oracles the test reads itself: `docker inspect` of the running container against the parsed
daemonset.yaml; the kernel's view of the container's process (/proc/PID/status CapEff and
NoNewPrivs, its namespaces' inodes, its mountinfo); Prometheus' own query API against `nstat` in the
namespaces of the test's lab (tests/badcsum.py: TCP SYNs with a wrong checksum, counted as
TcpInCsumErrors); dpkg inside the image for the compiler. Figures (base and image build time, image
size, start-up to the first scrape that has the lab's series) are printed and kept in docs/deploy.md.

Teardown removes the container, the images, the engine (its containerd and shims go with it), its
directory, and the host directories the test created for hostPath volumes. The debootstrap tarball
stays in /var/cache/badsum-tests (one per mirror and day), so a second run skips debootstrap.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from badcsum import BadChecksums, tcp_syns, udp_datagrams
from deploykit import KUBE, REPO
from netns import Topology
from support import need_root, need_tool

from badsum.lab import image
from badsum.lab.docker import engine_pid, kill_leftover_shims

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
from exporterlab import get, poll, prometheus, query, scalar

pytestmark = pytest.mark.root

DAEMONSET = KUBE / "daemonset.yaml"
NAME = "badsum-exporter-under-test"
#: Linux capability numbers (include/uapi/linux/capability.h): the oracle for CapEff.
CAP_BITS = {"NET_ADMIN": 12, "SYS_PTRACE": 19, "SYS_ADMIN": 21}
SYNS_BEFORE, SYNS_AFTER, BAD_UDP = 3, 2, 4
#: The exporter collects every 30 s by default (the DaemonSet sets no --interval): a new count shows
#: within one collection plus one scrape; the poll's bound is a count of 0.5 s tries.
TRIES_PER_COLLECTION = 2 * 45


def container(ds: dict) -> dict:
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return c


def listen_port(ds: dict) -> int:
    (p,) = container(ds)["ports"]
    return int(p["containerPort"])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def make_host_dirs(ds: dict, made: list[Path]) -> None:
    """What kubelet (DirectoryOrCreate) or the runtime would create on a node; each directory made
    here is appended to `made` (parents first) as it is made, so teardown removes exactly those."""
    for path, kind in image.host_paths(ds).items():
        p = Path(path)
        if kind == "Directory":
            assert p.is_dir(), f"the DaemonSet needs {path} on the node"
            continue
        missing = [q for q in [p, *p.parents] if not q.exists()]
        for q in reversed(missing):
            q.mkdir()
            made.append(q)


def cap_eff(pid: int) -> set[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    bits = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    names = {b: n for n, b in CAP_BITS.items()}
    return {names.get(b, f"cap{b}") for b in range(64) if bits >> b & 1}


def no_new_privs(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("NoNewPrivs:")))


def root_mount_options(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return fields[5].split(",")
    raise AssertionError("no root mount in the container's mountinfo")


def check_inspect(doc: dict, ds: dict) -> None:
    """docker inspect against the DaemonSet, field by field, in Kubernetes' own terms."""
    pod, c = ds["spec"]["template"]["spec"], container(ds)
    sc, hc, cfg = c["securityContext"], doc["HostConfig"], doc["Config"]
    assert (hc["NetworkMode"] == "host") == pod["hostNetwork"] is True
    assert (hc["PidMode"] == "host") == pod["hostPID"] is True
    norm = lambda caps: sorted(x.removeprefix("CAP_") for x in caps or [])
    assert norm(hc["CapDrop"]) == norm(sc["capabilities"]["drop"]) == ["ALL"]
    assert norm(hc["CapAdd"]) == norm(sc["capabilities"]["add"])
    assert hc["ReadonlyRootfs"] is sc["readOnlyRootFilesystem"] is True
    assert hc["Privileged"] is sc["privileged"] is False
    assert ("no-new-privileges" in hc["SecurityOpt"]) is (sc["allowPrivilegeEscalation"] is False)
    assert ("apparmor=unconfined" in hc["SecurityOpt"]) is (sc["appArmorProfile"]["type"] == "Unconfined")
    assert not any(o.startswith("seccomp") for o in hc["SecurityOpt"])  # RuntimeDefault: the engine's default profile
    assert cfg["User"] == str(sc["runAsUser"])
    assert cfg["Cmd"] == c["args"]
    assert {f"{e['name']}={e['value']}" for e in c["env"]} <= set(cfg["Env"])
    assert f"{listen_port(ds)}/tcp" in cfg["ExposedPorts"]
    assert hc["Memory"] == 256 << 20 and c["resources"]["limits"]["memory"] == "256Mi"
    assert hc["NanoCpus"] == 500_000_000 and c["resources"]["limits"]["cpu"] == "500m"
    assert hc["CpuShares"] == 51 and c["resources"]["requests"]["cpu"] == "50m"  # kubelet: 50 * 1024 // 1000
    assert doc["Config"]["StopTimeout"] == pod["terminationGracePeriodSeconds"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["Destination"]: m for m in doc["Mounts"]}
    host_mounts = [m for m in c["volumeMounts"] if "hostPath" in volumes[m["name"]]]
    assert len(hc["Binds"]) == len(host_mounts) == len(mounts)
    for m in host_mounts:
        got = mounts[m["mountPath"]]
        assert got["Type"] == "bind" and got["Source"] == volumes[m["name"]]["hostPath"]["path"]
        assert got["RW"] is not m.get("readOnly", False), m
        assert got["Propagation"] == {"HostToContainer": "rslave", None: "rprivate"}[m.get("mountPropagation")], m
    (tmp,) = [m for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    assert volumes[tmp["name"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Mi"}
    assert hc["Tmpfs"] == {tmp["mountPath"]: f"rw,size={16 << 20}"}


def test_the_image_builds_and_runs_with_the_daemonsets_settings(tmp_path: Path) -> None:
    need_root()
    for tool in ("dockerd", "containerd", "runc", "docker", "debootstrap", "prometheus", "unshare", "nstat"):
        need_tool(tool)
    mirror = image.apt_mirror()
    if mirror is None:
        pytest.skip("no Debian bookworm mirror in /etc/apt/sources.list*: debootstrap needs one")
    ds = yaml.safe_load(DAEMONSET.read_text())
    port = listen_port(ds)
    assert port_free(port), f"port {port} is taken on this host: the DaemonSet's exporter listens there"
    # Short: containerd's sockets under the exec root must fit in sun_path (108 bytes).
    rundir = Path(tempfile.mkdtemp(prefix="bsimg-", dir="/tmp"))
    engine = image.HostEngine(rundir)
    made: list[Path] = []
    figures: dict[str, str] = {}
    with Topology() as topo:
        # The lab first: dockerd's mount namespace is a copy taken when it starts (the host's mounts
        # are private here), so the lab's /run/netns files must exist by then to be seen inside.
        bad = BadChecksums(topo)
        bad.send(bad.tcp, tcp_syns(bad.tcp, SYNS_BEFORE))
        bad.send(bad.udp, udp_datagrams(bad.udp, BAD_UDP))
        try:
            base = image.debootstrap_base(mirror, day=time.strftime("%Y-%m-%d", time.gmtime()))
            figures["base"] = "cached" if base.cached else f"debootstrap {base.seconds:.0f} s"
            engine.start()
            image.import_base(engine, base.tarball)
            t = time.monotonic()
            image.build_image(engine, REPO, base=image.BASE_TAG, log=tmp_path / "build.log")
            figures["build"] = f"{time.monotonic() - t:.0f} s"
            size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", image.IMAGE_TAG).stdout)
            figures["size"] = f"{size / 1e6:.0f} MB"

            # No compiler in the image: dpkg of the image itself, and no gcc/cc on its PATH; no pip in
            # badsum's venv; the C extensions compiled in the build stage are there and load.
            dpkg = engine.docker("run", "--rm", "--network=none", "--entrypoint", "dpkg-query", image.IMAGE_TAG, "-W",
                                 "-f", "${Package}\\n", timeout=120).stdout.split()  # fmt: skip
            assert "iproute2" in dpkg and not {"gcc", "gcc-12", "cpp", "python3-dev", "libc6-dev"} & set(dpkg)
            which = engine.docker("run", "--rm", "--network=none", "--entrypoint", "sh", image.IMAGE_TAG, "-c",
                                  "for p in gcc cc cpp badsum nsenter nstat; do command -v $p; done; ls /opt/badsum/bin/pip* 2>/dev/null; "
                                  "python3 -c 'import badsum.native._framing, badsum.native._fastscan' && echo native-ok",
                                  timeout=120).stdout.split()  # fmt: skip
            assert which[0] == "/opt/badsum/bin/badsum" and [os.path.basename(w) for w in which] == ["badsum", "nsenter", "nstat", "native-ok"], which

            make_host_dirs(ds, made)
            flags, args = image.run_flags(ds, name=NAME)
            work = tmp_path / "prom"
            work.mkdir()
            series = f'badsum_checksum_errors_total{{protocol="tcp",netns="{bad.tcp.ns}"}}'
            t0 = time.monotonic()
            engine.docker("run", "-d", *flags, image.IMAGE_TAG, *args, timeout=60)

            def served() -> bool:
                try:
                    code, body = get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                except OSError:
                    return False
                if code == 200:
                    figures.setdefault("first 200", f"{time.monotonic() - t0:.1f} s")
                return code == 200 and f'netns="{bad.tcp.ns}"' in body

            poll(served, "the container's first /metrics with the lab's namespace", tries=5 * TRIES_PER_COLLECTION, every=0.1)
            figures["startup"] = f"{time.monotonic() - t0:.1f} s"

            doc = json.loads(engine.docker("inspect", NAME).stdout)[0]
            assert doc["State"]["Running"] is True
            check_inspect(doc, ds)
            pid = doc["State"]["Pid"]
            # The kernel's view of the exporter's process, not Docker's.
            assert cap_eff(pid) == set(container(ds)["securityContext"]["capabilities"]["add"])
            assert no_new_privs(pid) == 1
            assert "ro" in root_mount_options(pid)
            for kind in ("net", "pid"):
                assert os.stat(f"/proc/{pid}/ns/{kind}").st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino, kind

            with prometheus(f"127.0.0.1:{port}", work) as prom:
                poll(lambda: scalar(prom, 'up{job="badsum"}') == 1.0, "Prometheus to scrape the container")
                before = bad.nstat(bad.tcp)["TcpInCsumErrors"]
                assert before >= SYNS_BEFORE  # the test's own oracle: the receiver's kernel counted them
                poll(lambda: scalar(prom, series) == before, f"{series} == {before}", tries=TRIES_PER_COLLECTION, every=0.5)
                (labels,) = [x["metric"] for x in query(prom, series)]
                assert labels["netns_inode"] == str(bad.tcp.inode)
                udp = f'badsum_checksum_errors_total{{protocol="udp",netns="{bad.udp.ns}"}}'
                assert scalar(prom, udp) == bad.nstat(bad.udp)["UdpInCsumErrors"] >= BAD_UDP
                # The host's own namespace, seen through host networking and host PID.
                (host,) = [x["metric"] for x in query(prom, 'badsum_checksum_errors_total{protocol="tcp",netns="host"}')]
                assert host["netns_inode"] == str(os.stat("/proc/self/ns/net").st_ino)
                seen = {x["metric"]["netns"] for x in query(prom, "badsum_checksum_errors_total")}
                assert {"host", bad.sender, bad.tcp.ns, bad.udp.ns} <= seen

                # A live count: more bad SYNs, and Prometheus follows the kernel's counter.
                bad.send(bad.tcp, tcp_syns(bad.tcp, SYNS_AFTER, first_port=41000))
                after = bad.nstat(bad.tcp)["TcpInCsumErrors"]
                assert after == before + SYNS_AFTER
                poll(lambda: scalar(prom, series) == after, f"{series} == {after}", tries=TRIES_PER_COLLECTION, every=0.5)
                assert scalar(prom, f"increase({series}[10m])") > 0
                assert scalar(prom, 'badsum_collection_errors_total{stage="snapshot"}') == 0.0
                assert scalar(prom, 'badsum_collection_errors_total{stage="counters"}') == 0.0
                figures["query"] = f"{series} = {scalar(prom, series):g} (nstat {after})"
        finally:
            teardown(engine, made)
    assert not rundir.exists()
    assert engine_pid(rundir) is None
    assert not [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if str(rundir) in ln]
    assert kill_leftover_shims(rundir / "exec") == []  # nothing of the engine's is still running
    assert not [p for p in made if p.exists()]
    assert port_free(port)
    print(f"\nimage figures: base {figures.get('base')}; image build {figures.get('build')}; size {figures.get('size')}; "
          f"start to first /metrics {figures.get('first 200')}, to the first with the lab's series {figures.get('startup')}; "
          f"{figures.get('query')}")


def teardown(engine: image.HostEngine, made: list[Path]) -> None:
    """Every step runs, whatever failed before it."""
    if engine.procs and engine.ping():
        engine.docker("rm", "-f", NAME, timeout=60, check=False)
        engine.docker("image", "rm", "-f", image.IMAGE_TAG, image.BASE_TAG, timeout=60, check=False)
    engine.stop()
    for p in reversed(made):
        try:
            p.rmdir()  # only if still empty: something else may have put files there meanwhile
        except OSError:
            pass
    subprocess.run(["rm", "-rf", "--one-file-system", str(engine.dir)], timeout=120, check=False)
