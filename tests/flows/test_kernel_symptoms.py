"""SYN retry ladders made by the real kernel, and badsum's `syn-retries` symptoms judged against them.

An nftables rule in the server namespace drops SYNs for a while (tests/flows/kernelkit.py), so the
client kernel's own retransmission timer makes the ladder. Oracles the tests read themselves: the SYN
and SYN-ACK times from tshark on the same capture, the connect time the client measured, the client
namespace's TcpExtTCPSynRetrans delta from nstat and the drop rule's counter from nft. The kernel's
back-off model below only checks that a capture is the ladder the test meant to make (within the timer
wheel's slack); badsum's numbers are compared with the captured ones.

The 63-second ladder runs live once (about 65 s) and is also shipped as tests/data/syn-ladder-63s.pcap
with the oracle its recording script wrote (tests/data/make_syn_ladder.py); that check needs no root.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from kernelkit import (
    CLOSED_PORT,
    SynLab,
    SynRun,
    badsum_symptoms,
    kernel_hz,
    of_kind,
    syn_rows,
    tshark_times,
    wheel_slack_s,
)
from netns import list_netns, pid_alive
from support import REPO, need_root, need_tool

LINEAR = "net.ipv4.tcp_syn_linear_timeouts"
RETRIES = "net.ipv4.tcp_syn_retries"
SHIPPED = REPO / "tests" / "data" / "syn-ladder-63s.pcap"
# Two readers of the same pcap timestamps (microseconds) disagree only by rounding.
SAME_PCAP_S = 2e-3
# The client's clock runs around connect(): neighbour resolution before the first SYN and the
# scheduler after the SYN-ACK add a few ms on a busy 2-core host.
CLIENT_CLOCK_S = 0.1
# Softirq and scheduling delay on top of the timer wheel's rounding.
SCHED_S = 0.05


def nominal_gaps(n: int, linear: int) -> list[float]:
    """The kernel's SYN back-off (tcp_retransmit_timer, 6.x): the RTO starts at TCP_TIMEOUT_INIT, 1 s,
    and doubles after retransmission k only once k > tcp_syn_linear_timeouts."""
    gaps, rto = [], 1.0
    for k in range(1, n + 1):
        gaps.append(rto)
        if k > linear:
            rto *= 2
    return gaps


def expected_pattern(gaps: list[float]) -> str:
    """The name the issue gives a nominal ladder: 1 s steps, doubling, or 1 s steps then doubling."""
    doubling = [i for i in range(1, len(gaps)) if gaps[i] == 2 * gaps[i - 1]]
    if not doubling:
        return "linear"
    return "exponential" if doubling[0] == 1 else "linear-then-exponential"


def check_kernel_ladder(run: SynRun, linear: int, hz: int) -> None:
    """The capture, nstat and the client agree with each other and with the back-off we asked for."""
    assert run.syn_times, f"no SYN captured: {run}"
    assert len(run.syn_times) - 1 == run.syn_retrans, (run.syn_times, run.syn_retrans)
    for gap, nominal in zip(run.gaps_s, nominal_gaps(len(run.gaps_s), linear), strict=True):
        assert nominal - 0.005 <= gap <= nominal + wheel_slack_s(nominal, hz) + SCHED_S, (run.gaps_s, linear)
    if run.outcome == "connected":
        assert len(run.synack_times) == 1, run.synack_times
        assert run.dropped == len(run.syn_times) - 1, (run.dropped, run.syn_times)
        assert run.synack_times[0] - run.syn_times[0] == pytest.approx(run.connect_s, abs=CLIENT_CLOCK_S)


def the_ladder(symptoms: list[dict[str, Any]], run: SynRun) -> dict[str, Any]:
    """The one syn-retries symptom for run's connect; fails with the JSON if there is not exactly one."""
    found = [s for s in of_kind(symptoms, "syn-retries")
             if s["flow"] and s["flow"]["dst"] == run.server and s["flow"]["dport"] == run.port]
    assert len(found) == 1, json.dumps(symptoms, indent=1)
    return found[0]


def check_badsum_ladder(symptoms: list[dict[str, Any]], run: SynRun, outcome: str) -> dict[str, Any]:
    """badsum's one syn-retries symptom for run's connect against tshark, nstat and the client; returns it."""
    s = the_ladder(symptoms, run)
    dump = json.dumps(s, indent=1)
    assert s["flow"] == {"src": run.client, "dst": run.server, "proto": 6, "sport": run.sport, "dport": run.port}, dump
    d = s["details"]
    assert s["count"] == run.syn_retrans == len(run.syn_times) - 1, dump
    assert d["syns"] == len(run.syn_times), dump
    assert d["duplicates"] == 0, dump
    assert d["side"] == "client", dump
    assert d["outcome"] == outcome, dump
    assert d["gaps_s"] == pytest.approx(run.gaps_s, abs=SAME_PCAP_S), dump
    assert s["first_frame"] == run.syn_frames[0], dump
    assert s["first_time"] == pytest.approx(run.syn_times[0], abs=SAME_PCAP_S), dump
    assert s["duration_s"] >= run.syn_times[-1] - run.syn_times[0] - SAME_PCAP_S, dump
    assert {e["frame"] for e in s["evidence"]} <= set(run.syn_frames) | set(_frames_after(run)), dump
    assert all(c["id"] and c["why"] for c in s["likely_causes"]), dump
    if outcome == "connected":
        on_wire = run.synack_times[0] - run.syn_times[0]
        assert d["connect_s"] == pytest.approx(on_wire, abs=SAME_PCAP_S), dump
        assert d["connect_s"] == pytest.approx(run.connect_s, abs=CLIENT_CLOCK_S), dump
        assert s["duration_s"] <= on_wire + SAME_PCAP_S, dump
    if outcome == "unanswered":
        assert d["connect_s"] is None, dump
    # Every SYN here carries the sender's partial checksum (veth TX offload) and the answered one
    # did too: partial sums on the sending side are not why they were retransmitted.
    assert not of_kind(symptoms, "bad-retransmissions"), json.dumps(symptoms, indent=1)
    return s


def _frames_after(run: SynRun) -> list[int]:
    """Frame numbers after the last SYN (the SYN-ACK, RST or handshake ACK may be cited too)."""
    last = run.syn_frames[-1] if run.syn_frames else 0
    return list(range(last + 1, last + 4))


def cause_ids(s: dict[str, Any]) -> set[str]:
    return {c["id"] for c in s["likely_causes"]}


# -- live, root -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    need_root()
    for tool in ("tcpdump", "nft", "tshark", "nstat"):
        need_tool(tool)
    kit = SynLab(tmp_path_factory.mktemp("syn-ladders"))
    with kit:
        yield kit
    # Independent of the kit's own bookkeeping: `ip -j netns list` and /proc.
    assert not [n for n in list_netns() if n.startswith(kit.prefix + "-")]


def connect(lab: SynLab, *, linear: int, drop_for: float | None, retries: int = 6, **kw: Any) -> SynRun:
    lab.sysctl(LINEAR, linear)
    lab.sysctl(RETRIES, retries)
    return lab.connect(drop_for=drop_for, **kw)


@pytest.mark.root
def test_exponential_ladder_connects_after_7s(lab: SynLab) -> None:
    """linear timeouts 0, SYNs dropped 3.5 s: SYNs at 0, 1, 3 and 7 s, connected at ~7 s."""
    run = connect(lab, linear=0, drop_for=3.5)
    assert run.outcome == "connected", run
    check_kernel_ladder(run, 0, kernel_hz())
    assert len(run.syn_times) == 4, run.offsets_s
    s = check_badsum_ladder(badsum_symptoms(run.pcap)[0], run, "connected")
    assert s["details"]["pattern"] == expected_pattern(nominal_gaps(3, 0)) == "exponential", s
    assert "KB-004" in cause_ids(s), s


@pytest.mark.root
def test_linear_ladder_with_default_linear_timeouts(lab: SynLab) -> None:
    """The 6.18 default (4 linear timeouts), SYNs dropped 2.5 s: 1 s steps, connected at ~3 s."""
    default = lab.default_linear
    run = connect(lab, linear=default, drop_for=2.5)
    assert run.outcome == "connected", run
    check_kernel_ladder(run, default, kernel_hz())
    assert len(run.syn_times) == 4, run.offsets_s
    s = check_badsum_ladder(badsum_symptoms(run.pcap)[0], run, "connected")
    assert s["details"]["pattern"] == expected_pattern(nominal_gaps(3, default)) == "linear", s


@pytest.mark.root
@pytest.mark.parametrize("family", [4, 6])
def test_one_dropped_syn_is_the_1s_delay(lab: SynLab, family: int) -> None:
    """Only the first SYN dropped: the "1-second delay" (one retransmission, connected at ~1 s)."""
    run = connect(lab, linear=0, drop_for=0.5, family=family)
    assert run.outcome == "connected", run
    check_kernel_ladder(run, 0, kernel_hz())
    assert len(run.syn_times) == 2 and run.dropped == 1, run
    s = check_badsum_ladder(badsum_symptoms(run.pcap)[0], run, "connected")
    assert s["details"]["connect_s"] == pytest.approx(1.0, abs=wheel_slack_s(1.0, kernel_hz()) + SCHED_S), s
    assert "KB-004" in cause_ids(s), s


@pytest.mark.root
def test_unanswered_ladder(lab: SynLab) -> None:
    """SYNs dropped for longer than the client waits (tcp_syn_retries=2): the kernel gives up, ETIMEDOUT.

    With linear timeouts the give-up is still timed as 1+2+4 s, so more than 2 retries fit in it.
    """
    default = lab.default_linear
    run = connect(lab, linear=default, drop_for=math.inf, retries=2)
    assert run.outcome == "ETIMEDOUT", run
    check_kernel_ladder(run, default, kernel_hz())
    assert run.dropped == len(run.syn_times) and not run.synack_times and not run.rst_times, run
    assert run.connect_s >= run.syn_times[-1] - run.syn_times[0], run
    s = check_badsum_ladder(badsum_symptoms(run.pcap)[0], run, "unanswered")
    assert s["severity"] == "fail", s
    assert s["details"]["pattern"] == expected_pattern(nominal_gaps(len(run.gaps_s), default)), s


@pytest.mark.root
def test_rst_is_not_a_ladder(lab: SynLab) -> None:
    """No listener: one SYN answered by RST at once. Not a retry ladder."""
    run = connect(lab, linear=0, drop_for=None, port=CLOSED_PORT)
    assert run.outcome == "ECONNREFUSED", run
    assert len(run.syn_times) == 1 and len(run.rst_times) == 1 and run.syn_retrans == 0, run
    symptoms, _ = badsum_symptoms(run.pcap)
    assert of_kind(symptoms, "syn-retries") == [], json.dumps(symptoms, indent=1)


@pytest.mark.root
def test_refused_after_a_retry(lab: SynLab) -> None:
    """No listener and the first SYN dropped: one retry, then RST. A ladder whose outcome is refused."""
    run = connect(lab, linear=0, drop_for=0.5, port=CLOSED_PORT)
    assert run.outcome == "ECONNREFUSED", run
    check_kernel_ladder(run, 0, kernel_hz())
    assert len(run.syn_times) == 2 and len(run.rst_times) == 1 and run.dropped == 1, run
    check_badsum_ladder(badsum_symptoms(run.pcap)[0], run, "refused")


@pytest.mark.root
def test_63s_ladder_live(lab: SynLab) -> None:
    """The classic case, live (about 65 s): linear timeouts 0, SYNs dropped 40 s, connected at ~63 s."""
    run = connect(lab, linear=0, drop_for=40.0)
    assert run.outcome == "connected", run
    check_kernel_ladder(run, 0, kernel_hz())
    assert len(run.syn_times) == 7, run.offsets_s
    s = check_badsum_ladder(badsum_symptoms(run.pcap)[0], run, "connected")
    assert s["details"]["pattern"] == "exponential", s
    assert "KB-004" in cause_ids(s), s


@pytest.mark.root
def test_kit_leaves_nothing_behind(tmp_path: Path) -> None:
    """Namespaces and processes of a kit are gone after close, even after a connect that failed."""
    need_root()
    for tool in ("tcpdump", "nft", "tshark", "nstat"):
        need_tool(tool)
    with SynLab(tmp_path) as kit:
        kit.connect(drop_for=None, port=CLOSED_PORT)
        pids = [bg.pid for bg in kit.processes]
        names = list(kit.namespaces)
        with pytest.raises(ValueError):
            kit.exec("bs000000-cli", ["true"])  # not the kit's: refused
    assert names and not set(names) & set(list_netns())
    assert pids and not [p for p in pids if pid_alive(p)]


# -- the shipped 63 s capture, no root ---------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    need_tool("tshark")
    oracle = json.loads(SHIPPED.with_suffix(".json").read_text())
    # The oracle file and the capture belong together: tshark reads the same SYN times today.
    rows = syn_rows(SHIPPED, oracle["client"])
    assert [t for _, t, _ in rows] == pytest.approx(oracle["syn_times"], abs=1e-6)
    assert tshark_times(SHIPPED, "tcp.flags.syn==1 && tcp.flags.ack==1") == pytest.approx(oracle["synack_times"], abs=1e-6)
    oracle["syn_frames"], oracle["sport"] = [f for f, _, _ in rows], rows[0][2]
    return oracle


def shipped_run(o: dict[str, Any]) -> SynRun:
    return SynRun(pcap=SHIPPED, client=o["client"], server=o["server"], port=o["port"], outcome=o["client_outcome"],
                  connect_s=o["client_connect_s"], syn_times=tuple(o["syn_times"]), syn_frames=tuple(o["syn_frames"]),
                  sport=o["sport"], synack_times=tuple(o["synack_times"]), rst_times=(),
                  syn_retrans=o["nstat_TcpExtTCPSynRetrans"], dropped=o["nft_dropped"])


def test_shipped_63s_capture_is_the_ladder(shipped: dict[str, Any]) -> None:
    """The recording is what its script says: 7 SYNs 1+2+4+8+16+32 s apart, nstat and nft agree."""
    run = shipped_run(shipped)
    assert shipped["sysctl"][LINEAR] == 0 and run.outcome == "connected"
    check_kernel_ladder(run, 0, shipped["hz"])
    assert len(run.syn_times) == 7 and run.syn_retrans == 6


def test_shipped_63s_capture(shipped: dict[str, Any]) -> None:
    """badsum on the shipped capture: one ladder of 6 retransmissions, exponential, connected at ~63 s."""
    run = shipped_run(shipped)
    s = check_badsum_ladder(badsum_symptoms(SHIPPED)[0], run, "connected")
    assert s["details"]["pattern"] == "exponential", s
    assert s["details"]["connect_s"] == pytest.approx(63.0, abs=sum(wheel_slack_s(2.0**k, shipped["hz"]) + SCHED_S for k in range(6))), s
    assert "KB-004" in cause_ids(s), s
