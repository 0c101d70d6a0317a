"""Throwaway network namespaces for root tests, built with iproute2/ethtool/tcpdump argv lists.

Everything this module creates is named `bs-<random>-...`; teardown deletes exactly the
namespaces a `Topology` created (their veths vanish with them) and stops exactly the processes it
started, by pid. Waits poll for the state they need (`ip -j link` operstate, tcpdump's
"listening on") with a deadline; nothing sleeps blindly or loops without a bound.

Only documentation addresses belong in these topologies: 192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24 and 2001:db8::/32.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path
from typing import Any, Self

# One prefix per test process; the leak test looks for anything left under it.
SESSION_PREFIX = f"bs-{secrets.token_hex(4)}"
CMD_TIMEOUT = 10.0
POLL_INTERVAL = 0.02

# Every pid any Topology started, for the leak test (pid, argv[0] after `ip netns exec NS`).
STARTED: list[tuple[int, str]] = []

_DOC_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_serial = count(1)


class NetnsError(RuntimeError):
    """A command in a test topology failed; the message carries argv and stderr."""


def run(argv: Sequence[str], *, timeout: float = CMD_TIMEOUT, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv (never a shell string) with a timeout; raise NetnsError on failure if check."""
    argv = [str(a) for a in argv]
    try:
        cp = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"timed out after {timeout}s: {argv}") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"exit {cp.returncode}: {argv}\n{cp.stderr.strip()}")
    return cp


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll predicate until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise NetnsError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def list_netns() -> list[str]:
    """Names of all namespaces in /run/netns, from `ip -j netns list` (prints nothing when none)."""
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [e["name"] for e in json.loads(out)] if out else []


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _check_doc_address(cidr: str) -> None:
    addr = ipaddress.ip_interface(cidr).ip
    if not any(addr in net for net in _DOC_NETS):
        raise ValueError(f"{cidr} is not a documentation address (RFC 5737 / RFC 3849)")


class Background:
    """A process started inside a namespace; its stderr is collected by a reader thread."""

    def __init__(self, argv: list[str], proc: subprocess.Popen[str]) -> None:
        self.argv = argv
        self.proc = proc
        self.pid = proc.pid
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self._lines.append(line)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_stderr(self, text: str, timeout: float = 5.0) -> None:
        """Poll until `text` appears on stderr; fail early if the process died."""
        def seen() -> bool:
            if text in self.stderr:
                return True
            if self.proc.poll() is not None:
                self._reader.join(1.0)
                if text in self.stderr:
                    return True
                raise NetnsError(f"{self.argv} exited {self.proc.returncode} before {text!r}:\n{self.stderr}")
            return False
        wait_for(seen, timeout=timeout, what=f"{text!r} from {self.argv}")

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(1.0)
        return rc

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> int:
        """Send `sig` to this pid only, wait; SIGKILL it if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(1.0)
        return self.proc.returncode


class Topology:
    """Namespaces, veths, addresses and background processes, all removed by close()."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"{SESSION_PREFIX}-{next(_serial)}"
        if not self.prefix.startswith("bs-"):
            raise ValueError("test namespaces are named bs-...")
        self.namespaces: list[str] = []
        self.processes: list[Background] = []
        self.addresses: dict[tuple[str, str], list[str]] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building --------------------------------------------------------------------------

    def netns(self, suffix: str) -> str:
        """Create namespace `<prefix>-<suffix>` with lo up; return its name."""
        name = f"{self.prefix}-{suffix}"
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        return name

    def ip(self, ns: str, *args: str, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
        self._own(ns)
        return run(["ip", "-n", ns, *args], timeout=timeout)

    def ip_json(self, ns: str, *args: str) -> Any:
        self._own(ns)
        out = run(["ip", "-j", "-n", ns, *args]).stdout.strip()
        return json.loads(out) if out else []

    def exec(self, ns: str, argv: Sequence[str], *, timeout: float = CMD_TIMEOUT, check: bool = True,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv inside ns (`ip netns exec` execs it directly: no extra process)."""
        self._own(ns)
        return run(["ip", "netns", "exec", ns, *argv], timeout=timeout, check=check, input=input)

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair created straight into the two namespaces (never in the caller's)."""
        self._own(ns_a)
        self._own(ns_b)
        self.ip(ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)

    def addr(self, ns: str, ifname: str, cidr: str) -> None:
        """Add a documentation address; IPv6 ones with nodad, so they are usable at once."""
        _check_doc_address(cidr)
        extra = ["nodad"] if ipaddress.ip_interface(cidr).version == 6 else []
        self.ip(ns, "addr", "add", cidr, "dev", ifname, *extra)
        self.addresses.setdefault((ns, ifname), []).append(cidr)

    def up(self, ns: str, ifname: str) -> None:
        self.ip(ns, "link", "set", ifname, "up")

    def wait_oper_up(self, ns: str, ifname: str, timeout: float = 5.0) -> None:
        """Poll `ip -j link` until operstate is UP (a veth is UP once both ends are)."""
        def up() -> bool:
            links = self.ip_json(ns, "link", "show", "dev", ifname)
            return bool(links) and links[0].get("operstate") == "UP"
        wait_for(up, timeout=timeout, what=f"{ns}/{ifname} operstate UP")

    def wait_addrs_ready(self, ns: str, ifname: str, timeout: float = 5.0) -> None:
        """Poll `ip -j addr` until the addresses addr() put on ifname are present and not tentative.

        The kernel's own fe80:: address still runs DAD (about 2 s); our traffic does not need it.
        """
        wanted = {str(ipaddress.ip_interface(c).ip) for c in self.addresses.get((ns, ifname), [])}

        def ready() -> bool:
            info = self.ip_json(ns, "addr", "show", "dev", ifname)
            usable = {a["local"] for a in (info[0].get("addr_info", []) if info else [])
                      if not a.get("tentative")}
            return wanted <= usable
        wait_for(ready, timeout=timeout, what=f"{ns}/{ifname} addresses {sorted(wanted)} past DAD")

    # -- ethtool ---------------------------------------------------------------------------

    def features(self, ns: str, ifname: str) -> dict[str, bool]:
        """`ethtool --json -k` inside ns: feature name -> active."""
        data = json.loads(self.exec(ns, ["ethtool", "--json", "-k", ifname]).stdout)
        return {k: v["active"] for k, v in data[0].items() if isinstance(v, dict) and "active" in v}

    def set_features(self, ns: str, ifname: str, **features: str) -> None:
        """`ethtool -K ifname name on|off ...` inside ns; names with '_' become '-'."""
        argv = ["ethtool", "-K", ifname]
        for name, value in features.items():
            argv += [name.replace("_", "-"), value]
        self.exec(ns, argv)

    # -- processes -------------------------------------------------------------------------

    def spawn(self, ns: str, argv: Sequence[str], *, stdout: int | None = subprocess.DEVNULL) -> Background:
        """Start argv inside ns in its own session; close() stops it by pid."""
        self._own(ns)
        full = ["ip", "netns", "exec", ns, *[str(a) for a in argv]]
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        bg = Background(full, proc)
        self.processes.append(bg)
        STARTED.append((proc.pid, str(argv[0])))
        return bg

    def tcpdump(self, ns: str, ifname: str, path: Path, *, bpf: Sequence[str] = (),
                timeout: float = 5.0) -> Background:
        """Capture ifname to path (every packet flushed, full length); return once listening."""
        # -Z root: Debian's tcpdump otherwise drops to user tcpdump and cannot write into a
        # root-only pytest tmp dir. --immediate-mode: no packet waits in a TPACKET_V3 block; it
        # means TPACKET_V2 with one large fixed-size slot per packet, so the default 2 MB ring
        # holds few packets and a burst of small segments overflowed it ("N packets dropped by
        # kernel"): -B 32768 (KiB) gives hundreds of slots.
        bg = self.spawn(ns, ["tcpdump", "-i", ifname, "-nn", "-U", "-s", "0", "--immediate-mode",
                             "-B", "32768", "-Z", "root", "-w", str(path), *bpf])
        bg.wait_stderr("listening on", timeout)
        return bg

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop our processes, then delete our namespaces; every step runs even if one fails."""
        errors: list[str] = []
        for bg in reversed(self.processes):
            try:
                bg.stop()
            except Exception as e:  # noqa: BLE001 - keep tearing down
                errors.append(f"stop {bg.pid}: {e}")
        self.processes.clear()
        for name in reversed(self.namespaces):
            try:
                run(["ip", "netns", "del", name])
            except Exception as e:  # noqa: BLE001
                errors.append(f"netns del {name}: {e}")
        self.namespaces.clear()
        if errors:
            raise NetnsError("teardown: " + "; ".join(errors))

    def _own(self, ns: str) -> None:
        if ns not in self.namespaces:
            raise ValueError(f"{ns} was not created by this topology")
