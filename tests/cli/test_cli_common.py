"""What every command shares: exit codes from one enum, unknown options named, one behaviour for an
unknown namespace, the result renderer, and the docs that say so."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

from badsum.cli.main import main
from badsum.cli.result import ExitCode, Failure, Result, render

BADSUM = [sys.executable, "-m", "badsum"]
DOCS = REPO / "docs" / "cli.md"
SNAPSHOT = REPO / "tests" / "rules" / "fixtures" / "clean-host.json"


def badsum(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BADSUM, *argv], capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def test_exit_codes_are_the_documented_ones() -> None:
    assert [(c.name, int(c)) for c in ExitCode] == [("OK", 0), ("FINDINGS", 1), ("USAGE", 2), ("UNREADABLE", 3),
                                                    ("INTERRUPTED", 130), ("BROKEN_PIPE", 141)]  # fmt: skip
    assert [c.status for c in ExitCode] == ["ok", "findings", "error", "error", "error", "error"]


# -- unknown options are named, before a missing argument is ---------------------------------------


@pytest.mark.parametrize("argv", [["--bogus"], ["--bogus", "doctor"]])
def test_an_unknown_option_at_the_top_is_named(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`badsum --bogus` said "the following arguments are required: COMMAND"."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "badsum: error: unrecognized arguments: --bogus"
    assert "required" not in err


@pytest.mark.parametrize(("argv", "usage"), [(["trace", "--bogus"], "badsum trace"), (["lab", "--bogus"], "badsum lab"),
                                             (["lab", "run", "--bogus"], "badsum lab run"),
                                             (["doctor", "--bogus", "x"], "badsum doctor"),
                                             (["fix", "--bogus"], "badsum fix")])  # fmt: skip
def test_an_unknown_option_of_a_command_is_named_under_its_usage(argv: list[str], usage: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`badsum trace --bogus` said "the following arguments are required: POINT"."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {usage} ")
    assert re.search(r"error: unrecognized arguments: --bogus( x)?$", err.splitlines()[-1]), err
    assert "required" not in err


def test_a_missing_argument_is_still_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "badsum trace: error: the following arguments are required: POINT"
    assert main([]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "badsum: error: the following arguments are required: COMMAND"


# -- trace: no empty label, no empty path ----------------------------------------------------------


@pytest.mark.parametrize(("point", "why"), [("=a.pcap", "the label before '=' is empty"),
                                            ("c1:eth0=", "the file after '=' is empty"), ("", "an empty POINT")])  # fmt: skip
def test_trace_refuses_an_empty_label_or_path(point: str, why: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`trace =a.pcap` traced a.pcap under its file name; `trace c1:eth0=` tried to open ''."""
    (tmp_path / "a.pcap").write_bytes(b"")
    r = subprocess.run([*BADSUM, "trace", "--json", point], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       check=False)  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines()[-1].startswith("badsum trace: error: argument POINT: ") and why in r.stderr


# -- one behaviour for an unknown namespace: exit 2, one line naming the known ones ------------------


@pytest.mark.parametrize("argv", [["doctor", "--from", str(SNAPSHOT), "--namespace", "nosuch"],
                                  ["fix", "--from", str(SNAPSHOT), "--namespace", "nosuch"],
                                  ["doctor", "--from", str(SNAPSHOT), "-n", "nosuch"]])  # fmt: skip
def test_an_unknown_namespace_is_a_usage_error_everywhere(argv: list[str]) -> None:
    r = badsum(*argv)
    assert r.returncode == 2 and r.stdout == ""
    assert re.fullmatch(r"badsum: unknown namespace 'nosuch' for --namespace \(known: host[^\n]*\)\n", r.stderr), r.stderr
    j = badsum(*argv, "--json")
    doc = json.loads(j.stdout)
    assert j.returncode == 2 and doc["status"] == "error" and doc["command"] == argv[0]
    assert doc["errors"][0]["code"] == "namespace.unknown"


def test_watch_says_the_same_for_an_unknown_netns() -> None:
    r = badsum("watch", "--netns", "nosuch", "-d", "1")
    assert r.returncode == 2 and r.stdout == ""
    assert re.fullmatch(r"badsum: unknown namespace 'nosuch' for --netns \(known: host[^\n]*\)\n", r.stderr), r.stderr
    j = badsum("watch", "--netns", "nosuch", "-d", "1", "--json")
    (line,) = j.stdout.splitlines()
    doc = json.loads(line)
    assert j.returncode == 2 and doc["status"] == "error" and doc["errors"][0]["code"] == "namespace.unknown"


def test_docs_say_how_an_unknown_namespace_ends() -> None:
    docs = DOCS.read_text()
    assert "unknown namespace 'NAME' for --namespace (known: " in docs and "`namespace.unknown`" in docs


# -- the renderer ------------------------------------------------------------------------------------


def test_render_prints_the_envelope_or_the_text_and_says_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    built: list[str] = []

    def text() -> str:
        built.append("text")
        return "the report\n"

    r = Result("doctor", ExitCode.FINDINGS, {"x": 1}, [{"code": "a.b", "message": "m"}], text=text,
               stderr=["always"], text_stderr=["text only"])  # fmt: skip
    assert render(r, as_json=True) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"schema_version": 1, "command": "doctor", "status": "findings", "data": {"x": 1},
                               "errors": [{"code": "a.b", "message": "m"}]}  # fmt: skip
    assert err == "badsum: always\n" and built == []  # the text is not built for --json
    assert render(r, as_json=False) == 1
    assert capsys.readouterr() == ("the report\n", "badsum: always\nbadsum: text only\n")
    failed = Result.failed("fix", Failure("fix.x", "no", ExitCode.USAGE), {"mode": "plan"})
    assert render(failed, as_json=False) == 2
    assert capsys.readouterr() == ("", "badsum: no\n")
    assert render(failed, as_json=True) == 2
    doc = json.loads(capsys.readouterr().out)
    assert (doc["status"], doc["data"], doc["errors"]) == ("error", {"mode": "plan"}, [{"code": "fix.x", "message": "no"}])


def test_commands_use_the_enum_and_the_shared_helpers() -> None:
    """No command module defines its own `_say`/`_fail` or returns a bare exit-code literal."""
    src = REPO / "src" / "badsum" / "cli"
    offenders = []
    for path in sorted(src.glob("*.py")):
        text = path.read_text()
        offenders += [f"{path.name}: def {m}" for m in re.findall(r"^def (_say|_fail)\b", text, re.MULTILINE)]
        offenders += [f"{path.name}: return {m}" for m in re.findall(r"^\s+return (\d+)\s*$", text, re.MULTILINE)]
    assert not offenders, offenders


@pytest.mark.parametrize("redirect", ["> /dev/full", ">&-"])
@pytest.mark.parametrize("json_flag", ["", "--json"])
def test_result_commands_name_a_stdout_they_cannot_write(redirect: str, json_flag: str) -> None:
    """Every command the one renderer prints: stdout full or closed is one line and exit 3 (was a
    traceback, or exit 1 with nothing said)."""
    capture = REPO / "tests" / "data" / "veth-tx-offload.pcap"
    cmd = f"{sys.executable} -m badsum trace {json_flag} {capture} {redirect}"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "cannot write to standard output" in r.stderr
