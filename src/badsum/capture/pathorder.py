"""The path order a capture was taken in, written beside its files and inside them, read back by trace.

`badsum capture --point A --point B ...` (or `--auto`) knows the order packets cross its points;
the shell does not (`trace caps/*.pcapng` sorts by name). So capture records the order twice:
- `manifest.json` in the output folder: the points in path order with their files, namespaces,
  interfaces and, for `--auto`, why each point was chosen;
- a comment in each pcapng's section header, `badsum-path ["c1:eth0", "host:c1-veth", ...]`
  (pcapng shb_comment, draft-ietf-opsawg-pcapng 4.1), so a file that travelled without the
  manifest still says where it sits.
Pure apart from reading and writing that one small file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MANIFEST = "manifest.json"
SHB_PREFIX = "badsum-path "
MANIFEST_KIND = "badsum capture"
#: A manifest or comment larger than this is not ours (or is hostile): ignored.
MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class PathOrder:
    labels: tuple[str, ...]
    """Point labels in path order."""
    files: dict[str, str]
    """label -> file name (relative to the manifest's folder) where the manifest gives it."""
    source: str
    """`manifest <path>` or `section header`."""


def shb_comment(labels: Sequence[str]) -> str:
    return SHB_PREFIX + json.dumps(list(labels))


def parse_shb_comment(text: str) -> tuple[str, ...] | None:
    if not text.startswith(SHB_PREFIX) or len(text) > MAX_BYTES:
        return None
    try:
        value = json.loads(text[len(SHB_PREFIX):])
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value) and len(set(value)) == len(value):
        return tuple(value)
    return None


def manifest_data(points: Iterable[dict], *, auto: str | None = None) -> dict:
    """The manifest's content: `points` are capture's per-point dicts (point, namespace, interface, file)."""
    pts = [{"label": p["point"], "namespace": p.get("namespace"), "interface": p.get("interface"),
            "file": os.path.basename(p["file"]), **({"why": p["why"]} if p.get("why") else {})} for p in points]  # fmt: skip
    return {"kind": MANIFEST_KIND, "version": 1, "path": [p["label"] for p in pts], "points": pts,
            **({"auto": auto} if auto else {})}  # fmt: skip


def write_manifest(folder: str, data: dict) -> str:
    """Atomically (temporary file, then rename): a crash leaves the old manifest or none."""
    path = os.path.join(folder, MANIFEST)
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".part", dir=folder)  # a new file, never a planted link
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_manifest(folder: str) -> PathOrder | None:
    """The manifest in `folder`, or None when there is none or it is not a badsum capture's."""
    path = os.path.join(folder, MANIFEST)
    try:
        if os.path.getsize(path) > MAX_BYTES:
            return None
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND or not isinstance(data.get("points"), list):
        return None
    labels, files = [], {}
    for p in data["points"]:
        if not isinstance(p, dict) or not isinstance(p.get("label"), str) or not p["label"]:
            return None
        labels.append(p["label"])
        if isinstance(p.get("file"), str) and p["file"] and "/" not in p["file"]:
            files[p["label"]] = p["file"]
    if not labels or len(set(labels)) != len(labels):
        return None
    return PathOrder(tuple(labels), files, f"manifest {path}")


def order_of(files: Sequence[str], labels_by_file: Sequence[Sequence[str]],
             comments_by_file: Sequence[Sequence[str]]) -> PathOrder | None:  # fmt: skip
    """The recorded order the points of `files` (their interface labels, in file order) follow, if
    every one of them is in one recorded path: first a manifest beside the files, then the section
    header comments (which must all agree). None when nothing recorded covers them all."""
    wanted = [label for labels in labels_by_file for label in labels]
    if not wanted:
        return None
    folders = {os.path.dirname(os.path.abspath(f)) for f in files}
    if len(folders) == 1:
        m = read_manifest(folders.pop())
        if m is not None and set(wanted) <= set(m.labels):
            return m
    paths = {parsed for comments in comments_by_file for c in comments if (parsed := parse_shb_comment(c))}
    if len(paths) == 1:
        (path,) = paths
        if set(wanted) <= set(path):
            return PathOrder(path, {}, "section header")
    return None


__all__ = ["MANIFEST", "PathOrder", "manifest_data", "order_of", "parse_shb_comment", "read_manifest", "shb_comment",
           "write_manifest"]  # fmt: skip
