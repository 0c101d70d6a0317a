"""The metric table of docs/deploy.md (what the alerts and the dashboard are checked against) is the
set of families the exporter declares, with the same types."""

from __future__ import annotations

import ast

from deploykit import REPO, contract_metrics

FAMILIES = REPO / "src" / "badsum" / "exporter" / "families.py"
TYPES = {"CounterMetricFamily": "counter", "GaugeMetricFamily": "gauge"}


def declared() -> dict[str, str]:
    """{exposed name: type} of every *MetricFamily("name", ...) in the exporter (prometheus_client
    exposes a counter family `x` as `x_total`)."""
    out = {}
    for node in ast.walk(ast.parse(FAMILIES.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in TYPES \
                and node.args and isinstance(node.args[0], ast.Constant):  # fmt: skip
            kind = TYPES[node.func.id]
            name = node.args[0].value + ("_total" if kind == "counter" else "")
            out[name] = kind
    return out


def test_docs_metric_table_matches_the_exporter_families():
    documented, families = contract_metrics(), declared()
    assert len(families) >= 10, "the family scan found too little to compare"
    assert documented == families
