"""`badsum follow` inside a lab: the eBPF programs run for one phase of traffic, and the journeys are
named with the lab's own namespace names (`host:c1-veth`, not `bslab-1a2b-host:c1-veth`).

Where eBPF cannot run (no BTF, not root, an old kernel) the phase goes on without it and the result
says why; the other oracles (nstat, tcpdump, the application) still decide the scenario.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import dataclasses

from badsum.follow.result import follow_analysis, to_data
from badsum.kernel.symbols import Symbols
from badsum.wire.ports import PortTable

#: Events kept per phase at most: a lab phase is a few thousand packets.
MAX_EVENTS = 100_000


@dataclass(slots=True)
class LabFollow:
    """Use as a context manager around the traffic; `data` is `badsum follow --json`'s data."""

    names: dict[str, str]
    """Lab namespace name (`c1`) -> its real name (`<prefix>-c1`)."""
    filter_text: str = ""
    ports: PortTable = field(default_factory=PortTable)
    why_not: str | None = None
    data: dict[str, Any] | None = None
    events: list = field(default_factory=list)
    _session: Any = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> LabFollow:
        from badsum.kernel.filter import parse
        from badsum.kernel.session import FollowConfig, FollowSession, Unavailable

        try:
            self._session = FollowSession(FollowConfig(parse(self.filter_text), rate=0, ports=dict(self.ports.by_port)))
        except Unavailable as e:
            self.why_not = str(e)
            return self
        self._thread = threading.Thread(target=self._poll, name="lab-follow", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            got = self._session.poll_raw(50)
            room = MAX_EVENTS - len(self.events)
            self.events.extend(got[:room])

    def __exit__(self, *exc: object) -> None:
        if self._session is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.events.extend(self._session.stop()[: max(0, MAX_EVENTS - len(self.events))])
            self.events = self._session.decode(self.events)
            loss = self._session.loss()
        finally:
            self._session.close()
        inodes = {}
        for short, real in self.names.items():
            try:
                inodes[os.stat(f"/run/netns/{real}").st_ino] = short
            except OSError:
                continue
        syms = Symbols()
        # Only the lab's own namespaces: another lab or test may use the same documentation addresses.
        mine = [e for e in self.events if e.netns in inodes]
        events = [dataclasses.replace(e, location_name=syms.name(e.location)) if e.location else e for e in mine]
        self.data = to_data(follow_analysis(events, inodes, self.ports))
        self.data["recording"] = {"filter": self.filter_text, "events": len(events),
                                  "lost": {"ring_full": loss.ring_full, "rate_limited": loss.rate_limited}}  # fmt: skip

    def first_bad_hops(self) -> list[dict[str, Any]]:
        if self.data is None:
            return []
        return [f["first_bad_hop"] for f in self.data["flows"] if f["first_bad_hop"]]

    def drops(self, reason: str | None = None, label: str | None = None) -> int:
        """How many drops of `reason` at device `label` (`c2:eth0`) follow saw."""
        if self.data is None:
            return 0
        return sum(d["count"] for d in self.data["drops"]
                   if (reason is None or d["reason"] == reason) and (label is None or d["label"] == label))  # fmt: skip

    def summary(self) -> str:
        """One sentence for the lab's evidence list."""
        if self.why_not is not None:
            return f"not run: {self.why_not}"
        assert self.data is not None
        hops = self.first_bad_hops()
        if not hops:
            return f"no packet went bad ({self.data['summary']['journeys']} packets followed)"
        seen = []
        for fb in hops:
            ids = ", ".join(c["id"] for c in fb.get("likely_causes", []))
            text = f"first bad hop {fb['after'] or '(first seen)'} -> {fb['before']}: {fb['kind']}" + (f" ({ids})" if ids else "")
            if text not in seen:
                seen.append(text)
        return "; ".join(seen)
