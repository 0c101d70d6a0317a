"""KB-013 on real collected facts: a veth with rx-udp-gro-forwarding on and a VXLAN device in another
namespace, as doctor's collector reads them on this kernel.

This kernel (6.18) has 3d010c8031e3, so doctor itself must stay quiet; the saved snapshot with the
kernel set to 6.8.4 (before the fix) must fail on that veth, and doctor's own fix command must turn
the feature off (checked with `ethtool --json -k` as the independent oracle).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rule_fixtures import kernel
from support import need_root, need_tool

from badsum.host.model import HostSnapshot
from badsum.rules import evaluate, load_rules, problems
from badsum.rules.model import Outcome

REPO = Path(__file__).resolve().parents[2]
RULES = {r.id: r for r in load_rules()}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def _gro_fwd(dev: str) -> bool:
    (feats,) = json.loads(_run("ethtool", "--json", "-k", dev).stdout)
    return bool(feats["rx-udp-gro-forwarding"]["active"])


@pytest.mark.root
def test_live_udp_gro_forwarding_with_the_tunnel_in_another_namespace(tmp_path: Path) -> None:
    need_root()
    for tool in ("ip", "ethtool"):
        need_tool(tool)
    tag = f"{os.getpid() % 0x1000:03x}{os.urandom(2).hex()[:3]}"
    ns, dev = f"bs{tag}-kb013", f"bsg{tag}"  # bs + 6 hex: other live doctor tests take it for a lab
    saved = tmp_path / "snap.json"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", dev, "up")
        _run("ethtool", "-K", dev, "rx-udp-gro-forwarding", "on")
        _run("ip", "-n", ns, "addr", "add", "198.51.100.9/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "local",
             "198.51.100.9", "dev", "eth0", "nolearning")  # fmt: skip
        _run("ip", "-n", ns, "link", "set", "flannel.1", "mtu", "1450", "up")
        r = subprocess.run([sys.executable, "-m", "badsum", "doctor", "--json", "--save", str(saved), "--interval", "0.1"],
                           capture_output=True, text=True, timeout=120, cwd=REPO, check=False)  # fmt: skip
        assert r.returncode in (0, 1), r.stderr
        assert "KB-013" not in {f["rule"] for f in json.loads(r.stdout)["data"]["findings"]}  # 6.18 has the fixes

        snap = HostSnapshot.from_json(saved.read_text())
        host = snap.ns("host")
        assert host is not None and host.link(dev) is not None
        assert host.link(dev).feature_on("rx-udp-gro-forwarding") is True and _gro_fwd(dev)
        old = dataclasses.replace(snap, kernel=kernel("6.8.4"))
        found = [f for f in problems(evaluate(old, rules=[RULES["KB-013"]])) if any(o.name == dev for o in f.objects)]
        assert [f.outcome for f in found] == [Outcome.FAIL], found
        assert f"{ns}:flannel.1" in found[0].evidence
        (fix,) = found[0].fix
        _run(*fix.argv())
        assert not _gro_fwd(dev)
    finally:
        subprocess.run(["ip", "link", "del", dev], capture_output=True, check=False, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=30)
