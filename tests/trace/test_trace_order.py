"""Which path order trace uses: the one `badsum capture` recorded (manifest, section headers), the
command line's, or the packets' times; unique labels for interfaces that share a name; FILE#IFACE.

The captures are pcapng files written with badsum's writer in the shape capture writes them (one
interface per file named NS:IFNAME, the path in the section header, a manifest beside them). The
ground truth is built into the frames: the packet is right at the first two points and NAT-stale
from the third on, so a wrong order names a wrong hop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from scapy.all import Ether
from tracekit import MAC2, tcp_frame

from badsum.capture import pathorder
from badsum.capture.pcapng_writer import PcapngWriter
from badsum.cli.main import main

A, B, NAT = "192.0.2.1", "198.51.100.2", "203.0.113.1"
DATA = bytes(range(120))
GOOD = tcp_frame(A, B, 40000, 80, DATA)
STALE = tcp_frame(NAT, B, 50000, 80, DATA, ttl=63, mac=MAC2, chksum=Ether(GOOD)["TCP"].chksum)
#: Path order, deliberately not the names' sort order (`c1` < `c2` < `host`), as in the issue.
PATH = ("c1:eth0", "host:c1-veth", "host:c2-veth", "c2:eth0")
FRAMES = {"c1:eth0": GOOD, "host:c1-veth": GOOD, "host:c2-veth": STALE, "c2:eth0": STALE}


def write(path: Path, ifaces: list[tuple[str, bytes]], comments: list[str] = ()) -> str:
    with PcapngWriter(path, comments=list(comments)) as w:
        ids = [w.add_interface(1, snaplen=65535, name=name) for name, _ in ifaces]
        for i, (_, frame) in zip(ids, ifaces):
            w.write_packet(i, frame, ts_ns=1_000_000_000 + i)
    return str(path)


def capture_dir(tmp: Path, *, manifest: bool = True, headers: bool = True) -> Path:
    d = tmp / "caps"
    d.mkdir()
    pts = []
    for label in PATH:
        f = write(d / f"{label}.pcapng", [(label, FRAMES[label])], [pathorder.shb_comment(PATH)] if headers else [])
        pts.append({"point": label, "namespace": label.split(":")[0], "interface": label.split(":")[1], "file": f})
    if manifest:
        pathorder.write_manifest(str(d), pathorder.manifest_data(pts))
    return d


def trace_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["trace", "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def first_bad(doc: dict) -> tuple[str, str]:
    (flow,) = doc["data"]["flows"]
    fb = flow["first_bad_hop"]
    return fb["after"], fb["before"]


def test_the_shells_name_order_is_wrong_and_the_recorded_order_wins(tmp_path: Path, capsys) -> None:
    d = capture_dir(tmp_path)
    glob = sorted(str(p) for p in d.glob("*.pcapng"))
    assert [Path(g).stem for g in glob] != list(PATH)  # what `caps/*.pcapng` expands to
    for argv in ([str(d)], glob):
        code, doc = trace_json(capsys, *argv)
        assert code == 1 and doc["data"]["path"] == list(PATH)
        assert doc["data"]["order"]["source"].startswith("recorded (manifest ")
        assert first_bad(doc) == ("host:c1-veth", "host:c2-veth")
    code, doc = trace_json(capsys, "--order", "given", *glob)  # the override still works, and says so
    assert doc["data"]["order"]["source"] == "as given on the command line"
    assert doc["data"]["path"] == [Path(g).stem for g in glob] and first_bad(doc) != ("host:c1-veth", "host:c2-veth")


def test_section_headers_alone_still_give_the_order(tmp_path: Path, capsys) -> None:
    d = capture_dir(tmp_path, manifest=False)
    code, doc = trace_json(capsys, *sorted(str(p) for p in d.glob("*.pcapng")))
    assert doc["data"]["order"]["source"] == "recorded (section header)"
    assert first_bad(doc) == ("host:c1-veth", "host:c2-veth")


def test_nothing_recorded_means_the_given_order_and_recorded_is_refused(tmp_path: Path, capsys) -> None:
    d = capture_dir(tmp_path, manifest=False, headers=False)
    files = [str(d / f"{label}.pcapng") for label in PATH]
    code, doc = trace_json(capsys, *files)
    assert doc["data"]["order"]["source"] == "as given on the command line" and first_bad(doc) == ("host:c1-veth", "host:c2-veth")
    code, doc = trace_json(capsys, "--order", "recorded", *files)
    assert code == 2 and doc["errors"][0]["code"] == "trace.no_recorded_order"
    code, doc = trace_json(capsys, str(d))  # a folder without a manifest: name order, and a note says so
    assert code in (0, 1) and any("no badsum capture manifest" in n for n in doc["data"]["notes"])


def test_user_labels_keep_the_users_order(tmp_path: Path, capsys) -> None:
    d = capture_dir(tmp_path)
    argv = [f"{label}={d / (label + '.pcapng')}" for label in PATH]
    code, doc = trace_json(capsys, *argv)
    assert doc["data"]["order"]["source"] == "as given on the command line" and doc["data"]["path"] == list(PATH)


@pytest.mark.parametrize("bad", ["not json", '{"kind": "other", "points": []}', '{"kind": "badsum capture", "points": [{"label": "a"}, {"label": "a"}]}',
                                 '{"kind": "badsum capture", "points": "x"}', "[1, 2]"])  # fmt: skip
def test_a_foreign_or_broken_manifest_is_ignored(tmp_path: Path, bad: str) -> None:
    (tmp_path / pathorder.MANIFEST).write_text(bad)
    assert pathorder.read_manifest(str(tmp_path)) is None


@pytest.mark.parametrize("text", ["badsum-path not json", "badsum-path []", 'badsum-path ["a", "a"]', 'badsum-path [1]',
                                  "other comment", "badsum-path " + json.dumps(["x"] * 10)])  # fmt: skip
def test_hostile_section_comments_are_ignored(text: str) -> None:
    assert pathorder.parse_shb_comment(text) is None
    assert pathorder.parse_shb_comment(pathorder.shb_comment(PATH)) == PATH


def test_interfaces_that_share_a_name_get_unique_labels(tmp_path: Path, capsys) -> None:
    """The issue's `null1` twice: no longer refused; each keeps its name plus its position."""
    f = write(tmp_path / "two.pcapng", [("null1", GOOD), ("null1", STALE)])
    code, doc = trace_json(capsys, f)
    assert code == 1, doc
    assert doc["data"]["path"] == ["null1#0", "null1#1"]
    assert any("null1 -> null1#0" in n for n in doc["data"]["notes"])
    assert first_bad(doc) == ("null1#0", "null1#1")
    g = write(tmp_path / "other.pcapng", [("eth0", STALE)])
    h = write(tmp_path / "one.pcapng", [("eth0", GOOD)])
    code, doc = trace_json(capsys, h, g)  # one name in two single-interface files: the file tells them apart
    assert doc["data"]["path"] == ["eth0@one", "eth0@other"] and first_bad(doc) == ("eth0@one", "eth0@other")


def test_file_hash_iface_picks_one_interface(tmp_path: Path, capsys) -> None:
    f = write(tmp_path / "two.pcapng", [("vethA", GOOD), ("vethB", STALE)])
    code, doc = trace_json(capsys, f"a:x={f}#0", f"b:y={f}#vethB")
    assert code == 1 and doc["data"]["path"] == ["a:x", "b:y"] and first_bad(doc) == ("a:x", "b:y")
    code, doc = trace_json(capsys, f"{f}#1")
    assert doc["data"]["path"] == ["vethB"]
    code, doc = trace_json(capsys, f"{f}#eth9")
    assert code == 2 and doc["errors"][0]["code"] == "trace.no_such_interface" and "vethA" in doc["errors"][0]["message"]


def test_a_file_whose_name_has_a_hash_is_still_a_file(tmp_path: Path, capsys) -> None:
    f = write(tmp_path / "odd#0.pcapng", [("eth0", GOOD)])
    code, doc = trace_json(capsys, f)
    assert code == 0 and doc["data"]["path"] == ["eth0"]


def test_manifest_is_written_atomically_and_never_through_a_planted_link(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep me")
    os.symlink(target, tmp_path / pathorder.MANIFEST)
    pathorder.write_manifest(str(tmp_path), {"kind": "badsum capture", "version": 1, "path": [], "points": []})
    assert target.read_text() == "keep me"  # the link was replaced, not followed
    assert not (tmp_path / pathorder.MANIFEST).is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
