"""Keeping sysctl changes: one `sysctl.d` drop-in owned by badsum, merged line by line.

Pure: the file's text comes in and goes out; persist.py reads and writes it under the root.

systemd-sysctl (and procps `sysctl --system`) read every `*.conf` in the sysctl.d directories in
the lexical order of their file names, and a later assignment of a key wins (sysctl.d(5)). Ours is
`90-badsum.conf`: after the distribution's `10-*`/`50-*`, before the admin's `99-*`. Both tools
run in the host's network namespace at boot, so only the host namespace's sysctls can be kept
this way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PATH = "/etc/sysctl.d/90-badsum.conf"
#: Where systemd-sysctl looks (sysctl.d(5)); a file name in an earlier directory masks the same name in later ones.
DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
#: Read last by procps `sysctl --system` (Debian also links it as /etc/sysctl.d/99-sysctl.conf).
SYSCTL_CONF = "/etc/sysctl.conf"
HEADER = ("# Written by `badsum fix --persist --apply`: the sysctls that keep its fixes across reboots\n"
          "# (systemd-sysctl and `sysctl --system` read this file at boot, in the host's namespace).\n"
          "# `badsum fix --undo` takes its lines back out; lines it did not write are left as they are.\n")  # fmt: skip
#: The comment badsum puts above each of its lines, naming the rules.
MARK = "# badsum:"
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./:@-]*$")
_SAFE_VALUE = re.compile(r"^[^\s#;]([^\n\r#;]*[^\s#;])?$")
#: Per-interface keys (`net.ipv4.conf.eth0.rp_filter`); `all` and `default` are not interfaces.
_IF_KEY = re.compile(r"^net/ipv[46]/(conf|neigh)/(?P<dev>[^/]+)/")


@dataclass(frozen=True, slots=True)
class Setting:
    """One `key = value` line badsum keeps."""

    key: str
    """As procps spells it (`net.ipv4.conf.flannel/1.rp_filter`); sysctl.d reads the same spelling."""
    value: str
    rules: tuple[str, ...] = ()


def normalize(key: str) -> str:
    """The key with `/` separators: sysctl.d(5) reads `a.b/c.d` as `a/b.c/d` (first separator decides)."""
    key = key.strip().lstrip("-")
    first = re.search(r"[./]", key)
    if first is None or first.group() == "/":
        return key
    return key.translate(str.maketrans("./", "/."))


def unsafe(key: str, value: str) -> str | None:
    """Why `key = value` cannot be written as one sysctl.d line (None when it can)."""
    if not _SAFE_KEY.match(key) or "*" in key:
        return f"the key {key!r} cannot be written into a sysctl.d file safely"
    if not _SAFE_VALUE.match(value):
        return f"the value {value!r} of {key} cannot be written into a sysctl.d file safely"
    return None


def interface_of(key: str) -> str | None:
    """The interface a per-interface key names (None for `all`, `default` and global keys)."""
    m = _IF_KEY.match(normalize(key))
    return None if m is None or m["dev"] in ("all", "default") else m["dev"].replace("/", ".")


def assignments(text: str) -> list[tuple[int, str, str]]:
    """(line index, normalized key, value) of each assignment, in order (sysctl.d(5) syntax)."""
    out = []
    for i, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out.append((i, normalize(key), value.strip()))
    return out


def value_in(text: str | None, key: str) -> str | None:
    """The value the text gives `key` (its last assignment wins), None when it has none."""
    want = normalize(key)
    found = [v for _, k, v in assignments(text or "") if k == want]
    return found[-1] if found else None


def merge(existing: str | None, settings: list[Setting]) -> str:
    """`existing` with each setting in place: badsum's earlier line for a key is updated (with its
    comment), a new key is appended with a `# badsum: RULES` line above it; nothing else changes."""
    lines = (existing or HEADER).splitlines()
    for s in settings:
        want = normalize(s.key)
        hits = [i for i, k, _ in assignments("\n".join(lines)) if k == want]
        if hits:
            i = hits[-1]
            lines[i] = f"{s.key} = {s.value}"
            if i > 0 and lines[i - 1].startswith(MARK):
                old = [r.strip() for r in lines[i - 1][len(MARK):].split(",") if r.strip()]
                lines[i - 1] = f"{MARK} {', '.join(dict.fromkeys([*old, *s.rules]))}"
            continue
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"{MARK} {', '.join(s.rules)}", f"{s.key} = {s.value}"]
    return "\n".join(lines) + "\n"


def unmerge(current: str, previous: dict[str, str | None], written: dict[str, str]) -> tuple[str, list[str]]:
    """Take badsum's lines back out of `current`: a key that still has the value badsum wrote gets
    its previous value back (or its line and badsum's comment go). Returns the text and the keys
    left alone because someone changed them since."""
    lines = current.splitlines()
    left = []
    drop: set[int] = set()
    for key, value in written.items():
        want = normalize(key)
        hits = [(i, v) for i, k, v in assignments(current) if k == want]
        if not hits or hits[-1][1] != value:
            if value_in(current, key) != previous.get(key):
                left.append(key)
            continue
        i = hits[-1][0]
        before = previous.get(key)
        if before is not None:
            lines[i] = f"{key} = {before}"
            continue
        drop.add(i)
        if i > 0 and lines[i - 1].startswith(MARK):
            drop.add(i - 1)
            if i > 1 and not lines[i - 2].strip() and (i + 1 >= len(lines) or not lines[i + 1].strip()):
                drop.add(i - 2)
    kept = [line for i, line in enumerate(lines) if i not in drop]
    return ("\n".join(kept) + "\n") if kept else "", left


def only_header(text: str) -> bool:
    """Nothing but badsum's own header and blank lines is left."""
    return text.strip() == HEADER.strip() or not text.strip()


def overrides(key: str, files: dict[str, str]) -> list[tuple[str, str]]:
    """(path, value) of the other files that set `key` and are read after ours, so win at boot."""
    ours = PATH.rsplit("/", 1)[1]
    later = []
    for path, text in files.items():
        name = path.rsplit("/", 1)[1]
        if path == PATH:
            continue
        if path == SYSCTL_CONF or name > ours:
            v = value_in(text, key)
            if v is not None:
                later.append((path, v))
    return sorted(later, key=lambda pv: (pv[0] == SYSCTL_CONF, pv[0].rsplit("/", 1)[1]))
