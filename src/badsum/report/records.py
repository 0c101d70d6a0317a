"""Checksum verdicts as people and programs read them: reasons, `--jsonl` records, comments.

The one encoder of `Verdict`s and `Flow`s: the text report, `--jsonl`, `--json` and `--annotate`
all go through these functions, so the reason text and the record cannot drift between outputs.
`badsum.checksum` holds the facts only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from badsum.checksum.verdict import Flow, Layer, Status, Verdict, VerdictFlag
from badsum.scan.rows import addr_text

#: What each status means and what to do, for the text report's legend.
MEANING: dict[Status, str] = {
    Status.OK: "the checksum verifies",
    Status.BAD: (
        "does not verify and is no offload pattern: corruption or a rewrite that did not fix the sum; "
        "trace the packet across capture points to find the first bad hop"
    ),
    Status.PARTIAL: (
        "the field holds the pseudo-header sum alone (transmit offload pending). Normal on the sending "
        "host (container eth0, host veth, bridge) and on a veth peer, which receives the same buffer "
        "with the sum still pending. A fault once the packet is re-created or leaves on a wire "
        "unfinished: the OVS userspace datapath and AF_PACKET relays forward it as is (KB-005, KB-007) "
        "and the receiver drops it (TcpInCsumErrors); fix: TX checksum offload off on the sender's veth"
    ),
    Status.ZERO_ALLOWED: "UDP without a checksum (allowed over IPv4, and over IPv6 for tunnels per RFC 6935)",
    Status.ZERO_INVALID: "UDP over IPv6 without a checksum: receivers drop it (RFC 8200 8.1)",
    Status.UNVERIFIABLE: "not judged: cut by the snap length, or a fragment whose datagram never completed",
    Status.NAT_STALE: "right for the address/port tuple before NAT: NAT rewrote the header and not the sum",
}

#: Prefix of the comments `--annotate` writes (docs/pcapng-encoding.md).
ANNOTATION_PREFIX = "badsum:"

_NAMES = {layer: layer.label.upper() for layer in Layer}
_LAYER_LABEL = {layer: layer.label for layer in Layer}  # separate maps: IntEnum members of both compare equal
_STATUS_LABEL = {status: status.label for status in Status}
_KERNEL, _INCOMPLETE, _TUNNEL_ZERO, _LSO = (int(VerdictFlag.KERNEL), int(VerdictFlag.INCOMPLETE_FRAGMENT),
                                            int(VerdictFlag.TUNNEL_ZERO), int(VerdictFlag.LSO_LEN0))  # fmt: skip
_GSO, _REASSEMBLED = int(VerdictFlag.GSO), int(VerdictFlag.REASSEMBLED)


def checksum_hex(layer: Layer, value: int) -> str:
    """A checksum value as the records and reasons print it: 4 hex digits, 8 for SCTP's CRC32c."""
    return f"0x{value:08x}" if layer == Layer.SCTP else f"0x{value:04x}"


def reason(v: Verdict) -> str:
    """A one-line reason for one verdict."""
    return _reason(v.layer, v.status, int(v.flags), v.extra, v.stored, v.computed)


def _reason(layer: int, status: int, f: int, extra: int, stored: int, computed: int) -> str:
    # Plain ints: IntFlag arithmetic costs more than the rest of this function (--jsonl hot path),
    # and checksum_lines calls it on a row's fields without building a Verdict.
    name = _NAMES[layer]
    kernel = " (kernel status TP_STATUS_CSUM_VALID)" if f & _KERNEL else ""
    if status == Status.OK:
        return f"{name} checksum verifies{kernel}"
    if status == Status.UNVERIFIABLE:
        if f & _INCOMPLETE:
            return f"{name} checksum not judged: the fragmented datagram never completed"
        return f"{name} checksum not judged: the covered bytes were cut by the snap length"
    if status == Status.ZERO_ALLOWED:
        if f & _TUNNEL_ZERO:
            return "UDP checksum 0 over IPv6 to a tunnel port: allowed by RFC 6935/6936"
        return "UDP checksum 0 over IPv4: no checksum (RFC 768)"
    if status == Status.ZERO_INVALID:
        return "UDP checksum 0 over IPv6 and not a tunnel port: invalid (RFC 8200 8.1), receivers drop it"
    if status == Status.PARTIAL:
        if layer == Layer.IPV4:
            if f & _LSO:
                return "IPv4 header checksum 0 and total length 0: TSO/LSO pending, the NIC fills both in"
            return "IPv4 header checksum 0 on an offloaded packet: the NIC fills it in"
        who = "kernel says TP_STATUS_CSUMNOTREADY; " if f & _KERNEL else ""
        if f & _LSO:
            what = "pseudo-header sum with length 0 (Windows LSO, IPv4 total length 0)"
        else:
            what = f"pseudo-header sum alone (length {extra}), not the full checksum {checksum_hex(layer, computed)}"
        gso = "; GSO/TSO super-frame, segmented later" if f & _GSO else ""
        return f"{who}{name} field holds the {what}: transmit offload pending{gso}"
    if status == Status.NAT_STALE:
        return f"{name} checksum is right for the tuple before NAT: the rewrite did not update it"
    re = " after IP reassembly" if f & _REASSEMBLED else ""
    return f"{name} checksum {checksum_hex(layer, stored)} should be {checksum_hex(layer, computed)}{re}"


def flow_record(flow: Flow | None) -> dict[str, Any] | None:
    """The `flow` object of every JSON output: `{src, dst, proto, sport, dport}`, or None."""
    if flow is None:
        return None
    return {"src": flow.src, "dst": flow.dst, "proto": flow.proto, "sport": flow.sport, "dport": flow.dport}


def flow_json(flow: Flow | None) -> str:
    """`flow_record` as compact JSON (a `--jsonl` writer caches it per flow)."""
    return json.dumps(flow_record(flow), separators=(",", ":"))


def flow_text(flow: Flow) -> str:
    """`192.0.2.1:40001 > 192.0.2.2:80 proto 6`; addresses alone when the protocol has no ports."""
    if flow.sport or flow.dport:
        src, dst = _hostport(flow.src, flow.sport, flow.ipver), _hostport(flow.dst, flow.dport, flow.ipver)
    else:
        src, dst = flow.src, flow.dst
    return f"{src} > {dst} proto {flow.proto}"


def _hostport(addr: str, port: int, ipver: int) -> str:
    return f"[{addr}]:{port}" if ipver == 6 else f"{addr}:{port}"


def checksum_line(v: Verdict, flow: str | None = None) -> str:
    """The `--jsonl` record of one verdict: one compact JSON object and a newline (docs/cli.md).

    `flow` is `flow_json(v.flow)` when the caller has it cached. Built as text, not through
    json.dumps: a capture from an offloading host has a record for nearly every packet.
    """
    layer, status, f = v.layer, v.status, int(v.flags)
    text = reason(v)
    text = f'"{text}"' if '"' not in text and "\\" not in text else json.dumps(text)
    extra = (',"gso":true' if f & _GSO else "") + (',"kernel":true' if f & _KERNEL else "")
    return (
        f'{{"record":"checksum","frame":{v.frame},"layer":"{_LAYER_LABEL[layer]}","depth":{v.depth},'
        f'"status":"{_STATUS_LABEL[status]}","stored":"{checksum_hex(layer, v.stored)}",'
        f'"computed":"{checksum_hex(layer, v.computed)}","offset":{v.offset},'
        f'"flow":{flow_json(v.flow) if flow is None else flow},"reason":{text}{extra}}}\n'
    )


def checksum_lines(rows: np.ndarray) -> str:
    """`checksum_line` of every issue row (ISSUE_DTYPE), the same text, for a whole batch at once.

    No Verdict or Flow per row: each distinct address is formatted once per batch and each record
    is one format of plain ints and strings. Nothing is kept between batches (memory stays flat).
    """
    if len(rows) == 0:
        return ""
    rows = np.ascontiguousarray(rows)
    ipver = rows["ipver"]
    src, dst = _addr_texts(ipver, rows["src"], rows["dst"])
    cols = (rows["frame"], rows["offset"], rows["stored"], rows["computed"], rows["extra"], rows["layer"],
            rows["depth"], rows["status"], rows["flags"], ipver, rows["proto"], rows["sport"], rows["dport"])  # fmt: skip
    out = []
    for (frame, offset, stored, computed, extra, layer, depth, status, f, v, proto, sport, dport), a, b in zip(
        zip(*(c.tolist() for c in cols)), src, dst
    ):
        text = _reason(layer, status, f, extra, stored, computed)
        text = f'"{text}"' if '"' not in text and "\\" not in text else json.dumps(text)
        flow = f'{{"src":"{a}","dst":"{b}","proto":{proto},"sport":{sport},"dport":{dport}}}' if v else "null"
        hx = _HEX8 if layer == _SCTP else _HEX4
        more = (',"gso":true' if f & _GSO else "") + (',"kernel":true' if f & _KERNEL else "")
        out.append(
            f'{{"record":"checksum","frame":{frame},"layer":"{_LAYER_LABEL[layer]}","depth":{depth},'
            f'"status":"{_STATUS_LABEL[status]}","stored":"{hx % stored}","computed":"{hx % computed}","offset":{offset},'
            f'"flow":{flow},"reason":{text}{more}}}\n'
        )
    return "".join(out)


_HEX4, _HEX8, _SCTP = "0x%04x", "0x%08x", int(Layer.SCTP)


def _addr_texts(ipver: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple[list[str], list[str]]:
    """Source and destination addresses of each row as text, each distinct address formatted once."""
    n = len(ipver)
    raw = np.zeros((2 * n, 17), dtype=np.uint8)
    raw[:n, 0] = raw[n:, 0] = ipver
    raw[:n, 1:] = np.ascontiguousarray(src).view(np.uint8).reshape(n, 16)
    raw[n:, 1:] = np.ascontiguousarray(dst).view(np.uint8).reshape(n, 16)
    keys, inverse = np.unique(raw.view(np.dtype((np.void, 17))).ravel(), return_inverse=True)
    texts = np.array([addr_text(k[0], k[1:]) for k in keys.tolist()], dtype=object)
    both = texts[inverse.ravel()].tolist()
    return both[:n], both[n:]


def annotation(v: Verdict) -> str:
    """The pcapng comment `--annotate` puts on the packet: `badsum:tcp[0] bad: <reason>`."""
    return f"{ANNOTATION_PREFIX}{_LAYER_LABEL[v.layer]}[{v.depth}] {_STATUS_LABEL[v.status]}: {reason(v)}"
