"""Throwaway namespaces for the host collector's root tests, and the independent oracles.

Every namespace is named `bs<6 hex>-<name>` (one fresh prefix per Netns) and nothing is ever put in
the root namespace; teardown deletes exactly the namespaces carrying the prefix and stops exactly
the processes it started, by pid. Only documentation addresses are used. Oracles are the tools
themselves (`ip -j`, `ethtool --json`, `nstat`, `iptables-save`, `nft`), run by the test, never
the collector's code.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, Self

TIMEOUT = 20.0
NO_DAD = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]


def run(argv: list[str], *, check: bool = True, timeout: float = TIMEOUT, input: str | None = None) -> str:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, input=input,
                        stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
    if check and cp.returncode != 0:
        raise RuntimeError(f"exit {cp.returncode}: {argv}: {cp.stderr.strip()}")
    return cp.stdout


def netns_list() -> list[str]:
    out = run(["ip", "-j", "netns", "list"]).strip()
    return [e["name"] for e in json.loads(out)] if out else []


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Netns:
    """`with Netns() as n:` -> n.add("a") creates namespace `bs<hex>-a`; all removed on exit."""

    def __init__(self) -> None:
        self.prefix = "bs" + secrets.token_hex(3)
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        assert not any(n.startswith(self.prefix + "-") for n in netns_list())
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        for name in netns_list():
            if name.startswith(self.prefix + "-"):
                run(["ip", "netns", "delete", name], check=False)

    def name(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def add(self, *shorts: str) -> list[str]:
        out = []
        for short in shorts:
            full = self.name(short)
            self.created.append(full)
            run(["ip", "netns", "add", full])
            run(["ip", "-n", full, "link", "set", "lo", "up"])
            # No IPv6 duplicate address detection: addresses do not change state while a test looks.
            run(["ip", "netns", "exec", full, "sysctl", "-qw", *NO_DAD])
            out.append(full)
        return out

    def ip(self, short: str, *args: str) -> str:
        return run(["ip", "-n", self.name(short), *args])

    def exec(self, short: str, argv: list[str], *, check: bool = True, input: str | None = None) -> str:
        return run(["ip", "netns", "exec", self.name(short), *argv], check=check, input=input)

    def spawn_held(self, seconds: int = 30) -> subprocess.Popen[bytes]:
        """A namespace only a process holds: `unshare --net sleep N` (bounded; killed on exit)."""
        p = subprocess.Popen(["unshare", "--net", "sleep", str(seconds)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        self.procs.append(p)
        own = os.readlink("/proc/self/ns/net")
        wait_for(lambda: _ns_link(p.pid) not in (None, own), 10, "unshare --net to take effect")
        in_pid_ns(p.pid, ["sysctl", "-qw", *NO_DAD])
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(5)


def _ns_link(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def in_pid_ns(pid: int, argv: list[str], *, check: bool = True) -> str:
    return run(["nsenter", "-t", str(pid), "-n", *argv], check=check)


# -- oracles -------------------------------------------------------------------------------------


def ip_links(ns: str | None) -> list[dict[str, Any]]:
    prefix = ["ip", "-n", ns] if ns else ["ip"]
    return json.loads(run([*prefix, "-j", "-d", "link", "show"]))


def ethtool_features(ns: str | None, dev: str) -> dict[str, Any]:
    argv = ["ethtool", "--json", "-k", dev]
    out = run(["ip", "netns", "exec", ns, *argv] if ns else argv)
    doc = json.loads(out)[0]
    doc.pop("ifname", None)
    return doc


def nstat(ns: str, *names: str) -> dict[str, int]:
    out = run(["ip", "netns", "exec", ns, "nstat", "-a", "-s", "-z", "--json", *names])
    return {k: int(v) for k, v in json.loads(out)["kernel"].items()}
