"""UDP GRO forwarding on a veth that carries VXLAN to an endpoint in another namespace, for real
(known-issues-2 C, rule KB-013): the doctor snapshot must show the feature as `ethtool --json -k`
does.

Topology (tests/netns.py): VTEP namespace `a` -- veth va/vr1 -- forwarding namespace `r` -- veth
vr2/vb -- VTEP namespace `b`; vx0 (VXLAN 42, port 4789) in a and b, pinged across. `ethtool -K vr1
rx-udp-gro-forwarding on` in r: the VXLAN packets r forwards arrive there, and their tunnel
endpoint sits in another namespace (b). Nothing is put in the root namespace; doctor is limited
to the test's namespaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Topology
from support import need_root, need_tool

from badsum.rules.engine import load_rules

pytestmark = pytest.mark.root

BADSUM = [sys.executable, "-m", "badsum"]
FEATURES = ("rx-udp-gro-forwarding", "rx-gro-list")
A, RA, RB, B = "198.51.100.1/30", "198.51.100.2/30", "198.51.100.5/30", "198.51.100.6/30"
INNER_A, INNER_B = "203.0.113.1/24", "203.0.113.2/24"


def test_udp_gro_forwarding_on_a_veth_carrying_vxlan(tmp_path: Path) -> None:
    need_root()
    for tool in ("ip", "ethtool", "tcpdump", "ping", "nstat"):
        need_tool(tool)
    with Topology() as t:
        a, r, b = t.netns("a"), t.netns("r"), t.netns("b")
        t.veth(a, "va", r, "vr1")
        t.veth(r, "vr2", b, "vb")
        for ns, dev, cidr in ((a, "va", A), (r, "vr1", RA), (r, "vr2", RB), (b, "vb", B)):
            t.addr(ns, dev, cidr)
            t.up(ns, dev)
        t.exec(r, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        t.ip(a, "route", "add", "198.51.100.4/30", "via", RA.split("/")[0])
        t.ip(b, "route", "add", "198.51.100.0/30", "via", RB.split("/")[0])
        for ns, local, remote, dev, inner in ((a, A, B, "va", INNER_A), (b, B, A, "vb", INNER_B)):
            t.ip(ns, "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789", "local", local.split("/")[0],
                 "remote", remote.split("/")[0], "dev", dev)  # fmt: skip
            t.addr(ns, "vx0", inner)
            t.up(ns, "vx0")
        for ns, dev in ((a, "va"), (r, "vr1"), (r, "vr2"), (b, "vb")):
            t.wait_oper_up(ns, dev)
        # The oracle before and after: ethtool's own JSON, read in r.
        assert t.features(r, "vr1")["rx-udp-gro-forwarding"] is False
        t.set_features(r, "vr1", rx_udp_gro_forwarding="on")
        oracle = {(ns, dev): t.features(ns, dev) for ns, dev in ((a, "va"), (r, "vr1"), (r, "vr2"), (b, "vb"))}
        assert oracle[(r, "vr1")]["rx-udp-gro-forwarding"] is True and oracle[(r, "vr2")]["rx-udp-gro-forwarding"] is False

        # vr1 carries VXLAN: ping across the tunnel while tcpdump (not badsum) watches vr1.
        cap = tmp_path / "vr1.pcap"
        dump = t.tcpdump(r, "vr1", cap, bpf=["udp", "port", "4789"])
        ping = t.exec(a, ["ping", "-c", "2", "-i", "0.2", "-W", "2", INNER_B.split("/")[0]], check=False, timeout=10)
        dump.stop()
        assert ping.returncode == 0, ping.stdout + ping.stderr
        vx = subprocess.run(["tcpdump", "-nn", "-r", str(cap)], check=False, capture_output=True, text=True, timeout=30).stdout
        assert sum("VXLAN" in line for line in vx.splitlines()) >= 4, vx  # 2 requests, 2 replies

        snap = tmp_path / "snap.json"
        argv = [*BADSUM, "doctor", "--json", "-v", "--interval", "0.2", "--save", str(snap), "-n", a, "-n", r, "-n", b]
        run = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
        assert run.returncode in (0, 1), run.stderr
        doc = json.loads(run.stdout)
        saved = json.loads(snap.read_text())

    by_ns = {n["id"]: {link["name"]: link for link in n["links"]} for n in saved["namespaces"]}
    for (ns, dev), feats in oracle.items():
        got = by_ns[ns][dev]["features"]
        for name in FEATURES:
            if name in feats:  # the kernel has it: the snapshot must say what ethtool says
                assert got[name]["active"] is feats[name], (ns, dev, name)
    assert by_ns[r]["vr1"]["features"]["rx-udp-gro-forwarding"]["active"] is True
    assert by_ns[r]["vr1"]["kind"] == "veth" and by_ns[r]["vr1"]["peer_ns"] == a
    assert by_ns[b]["vx0"]["vxlan"]["port"] == 4789

    # KB-013 (UDP GRO forwarding with a tunnel endpoint in another namespace) is written on another
    # branch: the rule checks run when the rule is in this tree's catalogue, and only that decides it.
    if "KB-013" in {rule.id for rule in load_rules()}:
        live = [o for o in doc["data"]["findings"] + doc["data"]["outcomes"] if o["rule"] == "KB-013"]
        assert len(live) == 1, live  # evaluated on the live facts (whatever this kernel's outcome)
        # The same facts on a kernel without 3d010c8031e3 (6.8.0): the finding names vr1 in r, and
        # no interface whose features are off.
        saved["kernel"] = {**saved["kernel"], "release": "6.8.0-generic", "version": [6, 8, 0]}
        old = tmp_path / "snap-6.8.json"
        old.write_text(json.dumps(saved))
        replay = subprocess.run([*BADSUM, "doctor", "--json", "--from", str(old)], check=False, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        hits = [f for f in json.loads(replay.stdout)["data"]["findings"] if f["rule"] == "KB-013"]
        assert replay.returncode == 1 and hits, replay.stdout
        named = {(o.get("namespace"), o.get("name")) for f in hits for o in f["objects"]}
        assert (r, "vr1") in named and not named & {(a, "va"), (r, "vr2"), (b, "vb")}, named
