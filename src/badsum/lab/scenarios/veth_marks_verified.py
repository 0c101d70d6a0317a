"""veth-marks-verified (seed 002, KB-001): a corrupting wire in front of a routed container path,
with the old veth bug emulated, so corrupt bytes reach the application and no counter moves.

    h1 =veth= sw [relay] sw =veth= h2:eth0 -route- h2:br0 =veth= h2:veth-c2 ~~> c2:eth0

bad-wire's topology and relay (imported from it, not copied). Before ce8c839b74e3 (Linux 4.4)
veth_xmit() marked every CHECKSUM_NONE skb CHECKSUM_UNNECESSARY when the receiving device had
NETIF_F_RXCSUM: the relay's frames enter h2 unverified (CHECKSUM_NONE), h2 forwards them without
looking at L4, and at h2:veth-c2 the old kernel declared them verified, so c2's TCP never summed
them (Twitter/Mesos, 2015-16). This kernel is fixed, so badsum.lab.kb001 puts the same marking back
at the same place (tc egress on h2:veth-c2, the veth whose transmit did it). `--fix` is the
historical workaround, `ethtool -K eth0 rx off` in the container: the peer loses NETIF_F_RXCSUM,
the emulation stops marking for that reason, and c2 drops the corrupt segments (TcpInCsumErrors).
"""

from __future__ import annotations

import dataclasses
import signal

from badsum.lab import kb001
from badsum.lab.lab import Lab, LabError
from badsum.lab.result import ScenarioResult
from badsum.lab.scenarios import bad_wire
from badsum.lab.scenarios.base import Scenario
from badsum.lab.topology import Topology

EMU_NS, EMU_DEV, RECEIVER = "h2", "veth-c2", ("c2", "eth0")
#: The relay corrupts only bad-wire's ports; both phases are routed straight to c2 (no NAT loaded).
BEFORE = bad_wire.Variant("routed-emulated", bad_wire.VARIANTS[0].port, bad_wire.C2, None)
AFTER = bad_wire.Variant("routed-rx-off", bad_wire.VARIANTS[1].port, bad_wire.C2, None)


def topology() -> Topology:
    return dataclasses.replace(bad_wire.topology(), name="veth-marks-verified")


def _phase(lab: Lab, result: ScenarioResult, emu: kb001.Emulation, v: bad_wire.Variant) -> dict:
    before = kb001.read_stats(emu)
    row = bad_wire.phase(lab, result, v)
    after = kb001.read_stats(emu)
    if before is not None and after is not None:
        emu.stats[v.label] = {k: after[k] - before[k] for k in after}
        result.add("emulation", f"{v.label}: the {kb001.KB} program marked {emu.stats[v.label]['marked']} skbs "
                   f"CHECKSUM_UNNECESSARY at {emu.device}; left {emu.stats[v.label]['rx_off']} alone because "
                   f"{emu.receiving_device} had rx-checksumming off", emu.stats[v.label])  # fmt: skip
    row["emulation"] = "marking" if _rx(lab) else "rx off: not marking"
    return row


def _rx(lab: Lab) -> bool:
    return bool(lab.features(*RECEIVER).get("rx-checksumming"))


def body(lab: Lab, result: ScenarioResult, fix: bool) -> None:
    if why := kb001.why_not():
        raise LabError(f"{kb001.KB} cannot be emulated here: {why}")
    relay = bad_wire.start_relay(lab)
    emu = kb001.attach(lab, EMU_NS, EMU_DEV, ":".join(RECEIVER))
    result.traffic["emulation"] = emu.as_dict()
    result.emulation = [emu.as_dict()]
    result.add("emulation", emu.label(), emu.as_dict())
    rows = []
    try:
        shown = kb001.filters(lab, EMU_NS, EMU_DEV)
        result.add("tc", f"`tc filter show dev {EMU_DEV} egress` in h2: program "
                   f"{emu.program} id {emu.program_id}, direct-action", shown)  # fmt: skip
        rx = _rx(lab)
        result.add("ethtool", f"c2:eth0 rx-checksumming {'on' if rx else 'off'} (the feature the old veth_xmit checked)", rx)
        ping = lab.ping("h1", bad_wire.C2, count=2)
        result.add("ping", f"h1 -> c2 across the relay: {ping['received']}/{ping['sent']} answered", ping)
        rows.append(_phase(lab, result, emu, BEFORE))
        if fix:
            lab.set_feature(*RECEIVER, "rx", False)
            off = not _rx(lab)
            result.add("ethtool", f"fix: `ethtool -K eth0 rx off` in c2 (the historical workaround); "
                       f"ethtool --json -k confirms off: {off}", off)  # fmt: skip
            result.fix_applied = True
            rows.append(_phase(lab, result, emu, AFTER))
    finally:
        relay.stop(signal.SIGTERM)
        summary = bad_wire._last_json(bad_wire._text(lab.state.dir / "relay.out"))
        result.traffic["relay"] = {"pid": relay.pid, "exit": relay.proc.returncode, "summary": summary,
                                   "flip_log": str(lab.out / bad_wire.FLIP_LOG)}  # fmt: skip
        result.traffic["emulation"] = emu.as_dict()
        result.emulation = [emu.as_dict()]
        kb001.detach(lab, EMU_NS, EMU_DEV)
    result.table = rows
    _judge(result, rows, fix, emu)


def _judge(result: ScenarioResult, rows: list[dict], fix: bool, emu: kb001.Emulation) -> None:
    first, last = rows[0], rows[-1]
    corrupt = first["app"].startswith("CORRUPT")
    silent = corrupt and first["csum_err_c2"] == 0
    result.reproduced = silent
    result.symptom_observed = last["app"].startswith("CORRUPT")
    head = f"[{emu.label()}] "
    if first["flips"] == 0:
        result.verdict = head + "inconclusive: the wire flipped nothing"
        return
    if silent:
        text = (f"reproduced: {first['flips']} corrupt segments reached the application in c2 (sha256 differs) "
                "and TcpInCsumErrors in c2 did not move: the veth declared them verified")  # fmt: skip
    elif corrupt:
        text = f"corrupt data delivered, but c2 still counted {first['csum_err_c2']} checksum errors"
    else:
        text = f"not reproduced: {first['app']} ({first['flips']} flips, c2 TcpInCsumErrors +{first['csum_err_c2']})"
    if fix:
        ok = last["app"] == "intact" and last["csum_err_c2"] > 0
        text += (f"; after `ethtool -K eth0 rx off` in c2 the data arrived {last['app']} and c2's TCP dropped "
                 f"{last['csum_err_c2']} corrupt segments (TcpInCsumErrors)" + ("" if ok else ": the fix did NOT work"))  # fmt: skip
    result.verdict = head + text


SCENARIO = Scenario(
    name="veth-marks-verified",
    title="veth marks unverified packets verified (KB-001, emulated): corrupt data reaches a container silently",
    kb=("KB-001",),
    topology=topology,
    body=body,
    tools=("tc",),
    watch=("h1", "h2", "c2"),
)
