"""A sysctl fix on the real kernel, with `--persist`: applied, kept in a sysctl.d drop-in under a
temporary root, read back by procps `sysctl -p` itself, and undone; judged by `sysctl -n` run by the
test inside throwaway namespaces. badsum runs inside one of them (`ip netns exec`), so that namespace
is its "host" one and nothing of the real host's namespace is touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Topology
from support import REPO, need_root

pytestmark = pytest.mark.root

KEY, OTHER_KEY = "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter"

CHILD = r"""
import json, sys, time
from pathlib import Path
from badsum.fix.apply import apply_plan, undo
from badsum.fix.journal import Journal, open_entries
from badsum.fix.persist import choose, install, uninstall
from badsum.fix.plan import build_plan
from badsum.fix.session import Host
from badsum.rules.model import Finding, FixAction, ObjectRef, Outcome, Severity

mode, root, journal, other = sys.argv[1:5]
j = Journal(Path(journal))
if mode == "apply":
    acts = [FixAction("sysctl", "host", None, "net.ipv4.ip_forward", "net.ipv4.ip_forward", "1"),
            FixAction("sysctl", "other", f"/run/netns/{other}", "net.ipv4.conf.all.rp_filter",
                      "net.ipv4.conf.all.rp_filter", "2")]
    f = Finding("KB-011", "t", Severity.HIGH, Outcome.FAIL, (ObjectRef("host", "x"),), "e", "r", tuple(acts))
    plan = build_plan([f])
    keep = choose(list(plan.actions), None, Host().persistence(Path(root)))
    with j.locked():
        results = apply_plan(list(plan.actions), j, time.time())
        written = [install(p.artefact, Path(root), j, time.time(), p.rules) for p in keep if p.artefact]
    print(json.dumps({"results": [r.status for r in results], "written": [w[0] for w in written],
                      "keep": [p.as_dict() for p in keep]}))
else:
    with j.locked():
        done = undo(j, open_entries(j.entries()), time.time(), file_undo=uninstall)
    print(json.dumps([[r.entry.kind, r.status, r.message] for r in done]))
"""


def test_sysctl_apply_persist_to_sysctl_d_and_undo(tmp_path: Path) -> None:
    need_root()
    root, journal = tmp_path / "root", tmp_path / "journal.json"
    with Topology() as topo:
        here, other = topo.netns("here"), topo.netns("other")

        def sysctl_n(ns: str, key: str) -> str:
            return topo.exec(ns, ["sysctl", "-n", key]).stdout.strip()

        def badsum_in(ns: str, mode: str) -> object:
            r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CHILD, mode, str(root), str(journal), other],
                               capture_output=True, text=True, timeout=60, check=False,
                               env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        before = (sysctl_n(here, KEY), sysctl_n(other, OTHER_KEY))
        assert before[0] == "0" and before[1] != "2"  # a new namespace starts from the defaults
        done = badsum_in(here, "apply")
        assert done["results"] == ["applied", "applied"] and done["written"] == ["written"]
        assert (sysctl_n(here, KEY), sysctl_n(other, OTHER_KEY)) == ("1", "2")
        methods = {p["namespace"]: p["method"] for p in done["keep"]}
        assert methods == {"host": "sysctl.d", "other": "none"}
        dropin = root / "etc/sysctl.d/90-badsum.conf"
        assert "net.ipv4.ip_forward = 1\n" in dropin.read_text() and OTHER_KEY not in dropin.read_text()

        # procps reads the file as badsum wrote it: set the value back by hand, load the file, it is 1 again.
        topo.exec(here, ["sysctl", "-w", f"{KEY}=0"])
        topo.exec(here, ["sysctl", "-p", str(dropin)])
        assert sysctl_n(here, KEY) == "1"

        undone = badsum_in(here, "undo")
        assert sorted((k, s) for k, s, _ in undone) == [("file", "restored"), ("sysctl", "restored"), ("sysctl", "restored")]
        assert (sysctl_n(here, KEY), sysctl_n(other, OTHER_KEY)) == before
        assert not dropin.exists()
