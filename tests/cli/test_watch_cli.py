"""`badsum watch`: help, usage errors, exit codes, the JSON lines, and the text view's headline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

from badsum.cli import watch, watch_view
from badsum.cli.argtypes import resolve
from badsum.cli.main import COMMANDS, main
from badsum.host import watching
from badsum.host.drops import Drop
from badsum.host.nscounters import WATCH_COUNTERS, NsDelta

BADSUM = [sys.executable, "-m", "badsum"]
ENVELOPE_KEYS = {"schema_version", "command", "status", "data", "errors"}
DROP_KEYS = {"reason", "reason_code", "protocol", "protocol_name", "location", "count", "netns", "namespace",
             "attribution", "candidates", "device"}  # fmt: skip


def badsum(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BADSUM, *argv], capture_output=True, text=True, timeout=60, check=False, cwd=REPO)


def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The not-root path, in process (an unprivileged user could not import the editable install)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def test_help_has_examples_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "--help"]) == 0
    out = capsys.readouterr().out
    assert "sudo badsum watch --json --duration 10" in out and "exit codes:" in out
    assert COMMANDS["watch"] == watch.HELP


@pytest.mark.parametrize("argv", [["--interval", "0"], ["--interval", "x"], ["--duration", "-1"], ["--interval", "nan"],
                                  ["--bogus"], ["--drops", "bpftrace"]])  # fmt: skip
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(["watch", *argv]) == 2
    assert "usage: badsum" in capsys.readouterr().err


def test_unknown_netns_exits_2_naming_it() -> None:
    r = badsum("watch", "--netns", "no-such-ns-bs", "-d", "1")
    assert r.returncode == 2
    assert r.stderr.startswith("badsum: unknown namespace 'no-such-ns-bs' for --netns (known: host")
    assert r.stdout == ""


def test_json_lines_one_per_interval_then_a_summary(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    not_root(monkeypatch)
    code = main(["watch", "--json", "--interval", "0.5", "--duration", "1", "--netns", "host"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""  # no progress noise when not a terminal; notes are in the JSON
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["data"]["kind"] for d in docs] == ["interval", "interval", "summary"]
    for d in docs:
        assert set(d) == ENVELOPE_KEYS and d["command"] == "watch" and d["schema_version"] == 1
        assert d["status"] == "ok"
        assert [e["code"] for e in d["errors"]] == ["watch.not_root"]
    first, second, summary = (d["data"] for d in docs)
    assert [first["seq"], second["seq"]] == [1, 2]
    assert first["start"] < first["end"] <= second["start"] < second["end"]
    ns = first["namespaces"]
    assert [n["id"] for n in ns] == ["host"] and set(ns[0]) == {"id", "inode", "state", "deltas", "error"}
    assert ns[0]["inode"] == os.stat("/proc/self/ns/net").st_ino and set(ns[0]["deltas"]) == set(WATCH_COUNTERS)
    assert first["drops"] == [] and first["drops_method"] is None
    assert summary["intervals"] == 2 and summary["namespaces"] == ["host"] and summary["drops_note"] == "not root"
    assert summary["findings"] is False


def test_not_root_text_says_why_on_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    not_root(monkeypatch)
    code = main(["watch", "-i", "0.3", "-d", "0.3"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ("badsum: not root: counters of badsum's own namespace (host) only; other namespaces and "
                   "kernel drops need root\n")  # fmt: skip
    lines = out.splitlines()
    assert lines[0].endswith("#1 no checksum errors or drops in 1 namespace")
    assert lines[1] == "badsum watch: 1 interval, no checksum errors or drops in 1 namespace"
    assert "\x1b[" not in out


def test_could_not_watch_at_all_exits_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:  # fmt: skip
    """Not root (no drops) and no nstat on the PATH (no counters): nothing can be watched."""
    not_root(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))
    code = main(["watch", "--json", "-d", "1"])
    out, err = capsys.readouterr()
    assert code == 3
    assert err == "badsum: cannot watch: counters unreadable (nstat: not installed) and not root\n"
    doc = json.loads(out)
    assert doc["status"] == "error" and doc["errors"][0]["code"] == "watch.cannot"


# -- records and headline (no kernel) ------------------------------------------------------------


class FakeWatch:
    def __init__(self) -> None:
        self.reasons = {10: "TCP_CSUM", 11: "UDP_CSUM", 2: "NOT_SPECIFIED"}
        self.lost = 0
        self.why_not = None


def zero() -> dict[str, int]:
    return dict.fromkeys(WATCH_COUNTERS, 0)


def test_interval_record_joins_a_drop_to_the_one_namespace_whose_counter_moved() -> None:
    moved = [NsDelta("host", 1, zero()), NsDelta("bs1234-c2", 2, {**zero(), "TcpInCsumErrors": 4}),
             NsDelta("web1", 3, {**zero(), "UdpInCsumErrors": 1}), NsDelta("web2", 4, {**zero(), "Udp6InCsumErrors": 1})]  # fmt: skip
    drops = [Drop("TCP_CSUM", 0x800, "tcp_v4_rcv", None, 4), Drop("UDP_CSUM", 0x800, "__udp4_lib_rcv", None, 2),
             Drop("NOT_SPECIFIED", 0x86DD, "ip6_mc_input", None, 9)]  # fmt: skip
    rec = watching.interval_record(3, 10.0, 11.0, moved, drops, FakeWatch(), "counter-join")
    tcp, udp, other = rec["drops"]
    assert set(tcp) == DROP_KEYS
    assert (tcp["namespace"], tcp["netns"], tcp["attribution"], tcp["reason_code"]) == ("bs1234-c2", 2, "counter-join", 10)
    assert (udp["namespace"], udp["attribution"], udp["candidates"]) == (None, "host-wide", ["web1", "web2"])
    assert (other["namespace"], other["attribution"], other["candidates"], other["protocol_name"]) == (None, "host-wide", [], "IPv6")
    assert rec["findings"] is True
    assert watch_view.headline(rec["drops"], {}, 4) == "TCP_CSUM drops: 4 in bs1234-c2 (tcp_v4_rcv); UDP_CSUM drops: 2 host-wide (__udp4_lib_rcv)"


def test_headline_falls_back_to_counters_then_quiet() -> None:
    assert watch_view.headline([], {"web1": {"TcpInCsumErrors": 3, "IpFragFails": 2}}, 2) == "checksum errors: TcpInCsumErrors +3 in web1"
    assert watch_view.headline([], {"web1": {"IpFragFails": 2}}, 2) == "no checksum errors or drops in 2 namespaces"
    drops = [{"reason": "NOT_SPECIFIED", "namespace": None, "location": "x", "count": 5}]
    assert watch_view.headline(drops, {}, 1) == "no checksum errors or drops in 1 namespace"


def test_fragmentation_alone_is_not_a_finding_and_totals_add_up() -> None:
    moved = [NsDelta("web1", 3, {**zero(), "IpFragFails": 2})]
    rec = watching.interval_record(1, 0.0, 1.0, moved, [], FakeWatch(), "counter-join")
    assert rec["findings"] is False
    t = watching.Totals()
    watching.add(t, rec)
    watching.add(t, rec)
    assert t.counters == {("web1", "IpFragFails"): 4} and t.intervals == 2 and not t.findings
    text = watch_view.text_block(rec, show_all=False)
    assert text.splitlines()[1] == "  web1: IpFragFails +2"
    assert len(watch_view.text_block(rec, show_all=True).splitlines()[1].split("+")) == len(WATCH_COUNTERS) + 1


def test_resolve_by_id_or_name() -> None:
    from badsum.host.netns import NsRef

    refs = [NsRef("host", 1, None), NsRef("web1", 2, "/run/netns/web1", ("web1", "alias")), NsRef("pid:9", 3, "/proc/9/ns/net")]
    chosen, missing = resolve(refs, ["alias", "pid:9", "nope"])
    assert [r.id for r in chosen] == ["web1", "pid:9"] and missing == ["nope"]


# -- drops the kernel placed (no kernel: records from Drop values) ----------------------------------


def test_kernel_drops_keep_their_own_namespace_and_device_whatever_the_counters_say() -> None:
    """Both namespaces' TcpInCsumErrors moved: the counter join could not choose, the kernel did."""
    moved = [NsDelta("bs1234-c2", 2, {**zero(), "TcpInCsumErrors": 4, "UdpInCsumErrors": 1}),
             NsDelta("web1", 3, {**zero(), "TcpInCsumErrors": 1, "UdpInCsumErrors": 2})]  # fmt: skip
    drops = [Drop("TCP_CSUM", 0x800, "tcp_v4_rcv", 2, 4, "eth0"), Drop("UDP_CSUM", 0x800, "__udp4_lib_rcv", 3, 2, "veth0"),
             Drop("TCP_CSUM", 0x800, "tcp_v4_rcv", 3, 1, "veth0"), Drop("NOT_SPECIFIED", 0x800, "x", 99, 1, "lo"),
             Drop("NOT_SPECIFIED", 0, "skb_release", None, 3)]  # fmt: skip
    ids = {2: "bs1234-c2", 3: "web1"}
    rec = watching.interval_record(1, 0.0, 1.0, moved, drops, FakeWatch(), "kernel", ids)
    assert rec["drops_method"] == "kernel"
    got = [(d["reason"], d["namespace"], d["netns"], d["device"], d["attribution"], d["count"], d["candidates"])
           for d in rec["drops"]]  # fmt: skip
    assert got == [("TCP_CSUM", "bs1234-c2", 2, "eth0", "kernel", 4, []), ("UDP_CSUM", "web1", 3, "veth0", "kernel", 2, []),
                   ("TCP_CSUM", "web1", 3, "veth0", "kernel", 1, []),
                   ("NOT_SPECIFIED", None, 99, "lo", "kernel", 1, []),  # a namespace no process or mount holds
                   ("NOT_SPECIFIED", None, None, None, "host-wide", 3, [])]  # fmt: skip
    assert all(set(d) == DROP_KEYS for d in rec["drops"])
    assert rec["drops"][0]["reason_code"] == 10
    assert watch_view.headline(rec["drops"], {}, 2) == ("TCP_CSUM drops: 4 in bs1234-c2 on eth0 (tcp_v4_rcv); "
                                                        "UDP_CSUM drops: 2 in web1 on veth0 (__udp4_lib_rcv); "
                                                        "TCP_CSUM drops: 1 in web1 on veth0 (tcp_v4_rcv)")  # fmt: skip
    rows = watch_view.text_block(rec, show_all=False).splitlines()
    assert rows[-5].split() == ["4", "TCP_CSUM", "IPv4", "tcp_v4_rcv", "bs1234-c2:eth0"]
    assert rows[-2].split()[-1] == "netns:99:lo" and rows[-1].split()[-1] == "host-wide"


def test_the_summary_keeps_namespace_and_device_and_says_how_drops_were_placed() -> None:
    from badsum.host.kernel_drops import DropSource

    moved = [NsDelta("bs1234-c2", 2, {**zero(), "TcpInCsumErrors": 4})]
    t = watching.Totals()
    for _ in range(2):
        watching.add(t, watching.interval_record(1, 0.0, 1.0, moved, [Drop("TCP_CSUM", 0x800, "tcp_v4_rcv", 2, 4, "eth0")],
                                           FakeWatch(), "kernel", {2: "bs1234-c2"}))  # fmt: skip
    s = watching.summary_record(t, 0.0, 2.0, DropSource(object(), "kernel", None, None))  # type: ignore[arg-type]
    assert s["drops"] == [{"reason": "TCP_CSUM", "protocol": 0x800, "protocol_name": "IPv4", "location": "tcp_v4_rcv",
                           "namespace": "bs1234-c2", "netns": 2, "device": "eth0", "count": 8}]  # fmt: skip
    assert (s["drops_method"], s["drops_note"]) == ("kernel", None)
    text = watch_view.summary_text(s)
    assert text.splitlines()[0] == "badsum watch: 2 intervals, TCP_CSUM drops: 8 in bs1234-c2 on eth0 (tcp_v4_rcv)"
    assert "drops placed by the kernel" in text
    fallback = watching.summary_record(watching.Totals(), 0.0, 1.0, DropSource(object(), "counter-join", "no kernel BTF at /x", None))  # type: ignore[arg-type]
    assert (fallback["drops_method"], fallback["drops_note"]) == ("counter-join", "no kernel BTF at /x")
    assert watch_view.summary_text(fallback).splitlines()[-1] == "  (kernel drop counter not available: no kernel BTF at /x)"


def test_notes_say_how_drops_are_placed_when_not_by_the_kernel() -> None:
    from badsum.host.kernel_drops import DropSource

    assert watching.drops_notes(DropSource(object(), "kernel", None, None)) == []  # type: ignore[arg-type]
    assert watching.drops_notes(DropSource(object(), "counter-join", None, None)) == []  # type: ignore[arg-type]  # --drops tracefs: asked for
    [note] = watching.drops_notes(DropSource(object(), "counter-join", "no kernel BTF at /x", None))  # type: ignore[arg-type]
    assert note == {"code": "watch.counter_join", "message": "drops are host-wide, joined to namespaces by their "
                    "counters: the kernel drop counter is not available (no kernel BTF at /x)"}  # fmt: skip
    [note] = watching.drops_notes(DropSource(None, None, "a", "a; and b"))
    assert note["code"] == "watch.no_drops" and note["message"] == "kernel drops not shown: a; and b; counters only"


def test_live_view_draws_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    moved = [NsDelta("bs1234-c2", 2, {**zero(), "TcpInCsumErrors": 4})]
    rec = watching.interval_record(1, 0.0, 1.0, moved, [Drop("TCP_CSUM", 0x800, "tcp_v4_rcv", 2, 4, "eth0")], FakeWatch(),
                                "kernel", {2: "bs1234-c2"})  # fmt: skip
    t = watching.Totals()
    watching.add(t, rec)
    console = Console(width=200, record=True, color_system=None)
    console.print(watch_view.live_view(t, rec, False, 0.0))
    out = console.export_text()
    assert "TCP_CSUM drops: 4 in bs1234-c2 on eth0 (tcp_v4_rcv)" in out
    assert "placed by the kernel" in out
    row = next(line for line in out.splitlines() if "tcp_v4_rcv" in line and "IPv4" in line)
    assert row.split("│")[-2].strip() == "eth0"
