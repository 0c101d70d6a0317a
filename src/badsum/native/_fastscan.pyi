"""Types of the C scanner extension: checksum scan (scan.c), packet facts (facts.c) and flow
kernels (flowk.c), one module (module.c) over fs_common.h and the generated protofacts.h.

Arrays are reached only through the buffer protocol (numpy arrays of the dtypes named below);
argument order and shapes are checked in C and a mismatch raises TypeError or ValueError.
"""

from typing import TypeAlias

import numpy as np

Buffer: TypeAlias = bytes | bytearray | memoryview | np.ndarray

MAX_ROWS_PER_PACKET: int
"""Issue rows one packet can produce at most (the room `scan` needs before a packet)."""
ISSUE_SIZE: int
"""Bytes of one issue row (badsum.checksum.verdict.ISSUE_DTYPE.itemsize)."""
MAX_DEPTH: int
"""Tunnel levels judged (badsum.wire.protofacts.MAX_DEPTH; the depth axis of `counts`)."""
N_LAYERS: int
"""len(badsum.checksum.verdict.Layer): the layer axis of `counts`."""
N_STATUS: int
"""len(badsum.checksum.verdict.Status): the status axis of `counts`."""
FACT_SIZE: int
"""Bytes of one packet fact (badsum.flows.facts.FACTS_DTYPE.itemsize)."""
MAX_VLAN_TAGS: int
"""VLAN tags the facts walk follows, as the decoder (badsum.wire.protofacts.MAX_VLAN_TAGS)."""
SCAN_VLAN_TAGS: int
"""VLAN tags the checksum scan follows before it defers (badsum.wire.protofacts.SCAN_VLAN_TAGS)."""
MAX_IPV6_EXT_HEADERS: int
"""IPv6 extension headers walked (badsum.wire.protofacts.MAX_IPV6_EXT_HEADERS)."""

def scan(
    buf: Buffer,
    offset: Buffer,
    caplen: Buffer,
    origlen: Buffer,
    linktype: Buffer,
    tp_status: Buffer,
    first_frame: int,
    start: int,
    port_kind: Buffer,
    counts: Buffer,
    issues: Buffer,
    deferred: Buffer,
    stats: Buffer,
    /,
) -> tuple[int, int, int]:
    """Judge packets start.. of a batch -> (next_index, n_issues, n_deferred)."""

def facts(
    buf: Buffer,
    offset: Buffer,
    caplen: Buffer,
    origlen: Buffer,
    linktype: Buffer,
    ts_ns: Buffer,
    first_frame: int,
    port_kind: Buffer,
    out: Buffer,
    deferred: Buffer,
    /,
) -> int:
    """One FACTS_DTYPE row per packet into `out` -> how many were deferred to Python."""

def flow_keys(facts: Buffer, idx: Buffer | None, host_pair: bool, key: Buffer, dir: Buffer, /) -> None:
    """badsum.flows.facts.flow_keys of the rows `idx` (None: every row) into `key` and `dir`."""

def seg_match(
    facts: Buffer,
    min_payload: int,
    min_ip_len: int,
    status: Buffer | None,
    table: Buffer,
    filter: Buffer | None,
    idx: Buffer,
    prev: Buffer,
    /,
) -> int:
    """The retransmission finder of badsum.flows.base.SegmentTable over one batch -> hits."""

def pair_count(
    facts: Buffer,
    idx: Buffer,
    udp: bool,
    key: Buffer,
    counts: Buffer,
    a_dir: Buffer,
    ipver: Buffer,
    depth: Buffer,
    first: Buffer,
    last: Buffer,
    addr: Buffer,
    /,
) -> tuple[int, int]:
    """The host-pair table of badsum.flows.pairs.PairDetector -> (created, evicted)."""

def pmtu_pack(facts: Buffer, out: Buffer, /) -> None:
    """One 32-byte PMTU_DTYPE row per FACTS_DTYPE row (badsum.flows.pmtu)."""
