"""The detailed path: decode one frame fully, reassemble fragments, and judge every checksum.

Used for the packets the fast path defers, for `--annotate`, and as the reference the fast
path is tested against. Stateful only through the reassembler; time is the capture's.
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field

from badsum.checksum.verdict import TP_STATUS_UNKNOWN, Flow, Layer, Status, Verdict, VerdictFlag
from badsum.checksum.verify import _L4_LAYER, apply_kernel_status, superframes, verify_frame
from badsum.wire.cursor import DecodeIssue
from badsum.wire.frame import Frame, decode_frame
from badsum.wire.link import LINKTYPE_RAW
from badsum.wire.ports import PortTable
from badsum.wire.reassembly import Datagram, Incomplete, Reassembler


@dataclass(slots=True)
class FrameResult:
    """What the detailed path found in one frame."""

    frame: Frame
    """The decoded frame."""
    verdicts: list[Verdict] = field(default_factory=list)
    """Every checksum judged in this frame (incl. datagrams this frame completed)."""
    issues: list[DecodeIssue] = field(default_factory=list)
    """Decode issues (and fragment overlap findings) for this frame."""


class DetailedJudge:
    """Judges frames one by one, in capture order."""

    def __init__(self, ports: PortTable | None = None, reassembler: Reassembler | None = None) -> None:
        self.ports = ports or PortTable()
        self.reassembler = reassembler or Reassembler()

    def judge(
        self,
        frame_no: int,
        ts_ns: int,
        data: bytes,
        wire_len: int,
        linktype: int,
        tp_status: int = TP_STATUS_UNKNOWN,
    ) -> FrameResult:
        frame = decode_frame(data, linktype, wire_len, self.ports)
        res = FrameResult(frame, issues=list(frame.issues))
        res.verdicts = verify_frame(frame, frame_no, ports=self.ports)
        n_issues = len(self.reassembler.issues)
        for pkt in frame.packets:
            if pkt.quoted or not pkt.is_fragment:
                continue
            dg = self.reassembler.push(frame_no, ts_ns, frame.data, pkt)
            if dg is not None:
                res.verdicts.extend(self._judge_datagram(dg, frame_no))
        res.issues.extend(i for _, i in self.reassembler.issues[n_issues:])
        if tp_status != TP_STATUS_UNKNOWN:
            res.verdicts = apply_kernel_status(res.verdicts, tp_status, superframes(frame), frame, self.ports)
        return res

    def _judge_datagram(self, dg: Datagram, frame_no: int) -> list[Verdict]:
        inner = decode_frame(dg.data, LINKTYPE_RAW, len(dg.data), self.ports)
        out = []
        for v in verify_frame(inner, frame_no, ports=self.ports, extra_flags=VerdictFlag.REASSEMBLED, skip_ip_header=True):
            out.append(dataclasses.replace(v, depth=v.depth + dg.depth, offset=v.offset + dg.ip_offset))
        return out

    def expired(self, final: bool = False) -> list[Verdict]:
        """Verdicts for datagrams that never completed (all pending ones when `final`)."""
        if final:
            self.reassembler.flush()
        return [_incomplete_verdict(i) for i in self.reassembler.take_incomplete() if i.proto in _L4_LAYER]


def _incomplete_verdict(i: Incomplete) -> Verdict:
    fam = socket.AF_INET if i.ipver == 4 else socket.AF_INET6
    flow = Flow(i.ipver, socket.inet_ntop(fam, i.src), socket.inet_ntop(fam, i.dst), i.proto, 0, 0)
    flags = VerdictFlag.INCOMPLETE_FRAGMENT | (VerdictFlag.TRUNCATED if i.truncated else VerdictFlag.NONE)
    return Verdict(i.first_frame, _L4_LAYER[i.proto], i.depth, 0, 0, 0, Status.UNVERIFIABLE, flags, flow)


__all__ = ["DetailedJudge", "FrameResult", "Layer"]
