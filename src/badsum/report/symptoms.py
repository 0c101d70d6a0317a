"""Symptoms in the `badsum pcap` report: the one-line answer per symptom, evidence behind -v."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from badsum.flows.symptom import MAX_EVIDENCE, Severity, Symptom
from badsum.report.records import flow_record, flow_text

if TYPE_CHECKING:
    from rich.console import Console

#: Symptoms printed without -v (all with -v and in --jsonl; up to JSON_SYMPTOMS in --json, with the total).
TOP_SYMPTOMS = 10
JSON_SYMPTOMS = 200

_STYLE = {Severity.FAIL: "red", Severity.WARN: "yellow", Severity.INFO: "dim"}


def symptom_record(s: Symptom) -> dict[str, Any]:
    """One symptom as JSON: a `data.symptoms` item of `--json`, and a `--jsonl` line (docs/symptoms.md)."""
    return {
        "kind": s.kind.value,
        "severity": s.severity.value,
        "summary": s.summary,
        "flow": flow_record(s.flow),
        "depth": s.depth,
        "count": s.count,
        "first_time": s.first_ts_ns / 1e9,
        "last_time": s.last_ts_ns / 1e9,
        "duration_s": round(s.duration_s, 6),
        "first_frame": s.first_frame,
        "last_frame": s.last_frame,
        "evidence": [{"frame": e.frame, "time": e.ts_ns / 1e9, "text": e.text} for e in s.evidence[:MAX_EVIDENCE]],
        "likely_causes": [{"id": c.id, "why": c.why} for c in s.likely_causes],
        "details": s.details,
    }


def symptoms_data(symptoms: Sequence[Symptom]) -> list[dict[str, Any]]:
    return [symptom_record(s) for s in symptoms[:JSON_SYMPTOMS]]


def has_failure(symptoms: Sequence[Symptom]) -> bool:
    return any(s.severity is Severity.FAIL for s in symptoms)


def _where(s: Symptom) -> str:
    if s.flow is None:
        return "-"
    where = flow_text(s.flow) if (s.flow.proto or s.flow.sport or s.flow.dport) else f"{s.flow.src} <> {s.flow.dst}"
    return where + (f" (tunnel depth {s.depth})" if s.depth else "")


def render_symptoms(symptoms: Sequence[Symptom], console: Console, verbose: bool = False) -> None:
    """One block per symptom: what, where, the likely causes; the evidence frames with -v."""
    # rich only for text: --json and --jsonl runs never load it
    from rich.markup import escape

    if not symptoms:
        return
    shown = symptoms if verbose else symptoms[:TOP_SYMPTOMS]
    more = f" (top {len(shown)}; all with -v or --json)" if len(shown) < len(symptoms) else ""
    console.print()
    console.print(f"[bold]Symptoms[/] {len(symptoms)}{more}")
    for s in shown:
        style = _STYLE[s.severity]
        console.print(f"  [{style}]{s.severity.value.upper():<5}[/] [bold]{s.kind.value}[/] {escape(_where(s))}")
        console.print(f"        {escape(s.summary)}")
        frames = f"frame {s.first_frame}" if s.first_frame == s.last_frame else f"frames {s.first_frame}-{s.last_frame}"
        console.print(f"        [dim]{frames}, {s.duration_s:.3f} s[/]")
        for c in s.likely_causes:
            console.print(f"        likely: [bold]{escape(c.id)}[/] {escape(c.why)}")
        if verbose:
            for e in s.evidence:
                console.print(f"        [dim]frame {e.frame} @ {e.ts_ns / 1e9:.6f}: {escape(e.text)}[/]")
    if not verbose:
        console.print("\n[dim]Evidence frames per symptom: -v; known issues: badsum doctor, docs/rules.md[/]")


def write_symptom_lines(symptoms: Sequence[Symptom], out: TextIO) -> None:
    """`--jsonl`: one `{"record": "symptom", ...}` line per symptom, after the checksum lines."""
    out.write("".join(json.dumps({"record": "symptom", **symptom_record(s)}) + "\n" for s in symptoms))
