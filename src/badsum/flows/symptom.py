"""What a user would call the problem: symptoms found in a capture, with evidence and causes.

A `Symptom` is what one detector concluded about one flow (or host pair): a kind from the field
(`syn-retries`, `pmtu`, `icmp-only`, ...), how many times it happened and over how long, the
frames that show it, and the known issues that produce it. Detectors build them; the report
prints them, and `badsum.report.symptoms.symptom_record` is their JSON (`data.symptoms`, `--jsonl`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from badsum.checksum.verdict import Flow


class Kind(str, Enum):
    """Symptom kinds (stable strings: they are the JSON `kind`)."""

    SYN_RETRIES = "syn-retries"  # SYN retransmitted with back-off; connected late, or never
    BAD_RETRANSMISSIONS = "bad-retransmissions"  # segments with a bad/partial sum sent again: the receiver drops them
    ICMP_ONLY = "icmp-only"  # per host pair: ping answered, TCP/UDP not
    PMTU = "pmtu"  # ICMP frag-needed / Packet Too Big, joined to the packets that caused it
    DF_OVERSIZE = "df-oversize"  # DF packets larger than an MTU already reported on that path
    BLACKHOLE = "blackhole"  # large segments never acknowledged while small ones are
    TUNNEL_OUTER_CSUM = "tunnel-outer-csum"  # VXLAN/Geneve outer UDP checksum bad
    HEARTBEAT_UNANSWERED = "heartbeat-unanswered"  # overlay heartbeats (UDP 6784) not answered
    TUNNEL_ZERO_CSUM = "tunnel-zero-csum"  # VXLAN/Geneve outer UDP checksum 0: no GRO on unfixed receivers (a note)
    UDP6_CSUM_ERRORS = "udp6-csum-errors"  # UDPv6 sums verify, the receiver's Udp6InCsumErrors rose (needs counters)


class Severity(str, Enum):
    FAIL = "fail"  # something is broken for this traffic
    WARN = "warn"  # degraded or suspicious (recovered late, one-sided)
    INFO = "info"  # worth knowing, not a fault (PMTU discovery that worked)


@dataclass(frozen=True, slots=True)
class Evidence:
    """One frame that shows the symptom, with what it shows."""

    frame: int
    ts_ns: int
    text: str
    """One line: 'SYN retransmission 3 after 4.0 s', 'ICMP frag-needed mtu 1492 quoting frame 22'."""


@dataclass(frozen=True, slots=True)
class Cause:
    """A known issue (rules/catalogue.toml id) that produces this symptom, and why we think so."""

    id: str
    why: str


#: Evidence items kept per symptom (the count is complete; the list is for reading).
MAX_EVIDENCE = 12


@dataclass(frozen=True, slots=True)
class Symptom:
    kind: Kind
    severity: Severity
    summary: str
    """One line that leads with the answer: 'connect took 63.0 s: 6 SYN retransmissions (1+2+4+8+16+32 s)'."""
    flow: Flow | None
    """The 5-tuple as first seen (client to server for TCP), or the host pair (proto 0, ports 0)."""
    count: int
    """How many events (retransmissions, ICMP errors, oversize packets, unanswered heartbeats ...)."""
    first_ts_ns: int
    last_ts_ns: int
    first_frame: int
    last_frame: int
    evidence: tuple[Evidence, ...] = ()
    likely_causes: tuple[Cause, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    """Kind-specific facts, JSON-ready (e.g. syn-retries: gaps_s, pattern, outcome, connect_s)."""
    depth: int = 0
    """Tunnel depth of the flow (1: inside VXLAN/Geneve ...)."""

    @property
    def duration_s(self) -> float:
        return max(self.last_ts_ns - self.first_ts_ns, 0) / 1e9
