"""The Grafana dashboard: valid JSON on a datasource variable, every panel expression parsed by
promtool and using only the metrics of the contract (docs/deploy.md), every metric shown."""

from __future__ import annotations

import json

import pytest
import yaml
from deploykit import (
    DASHBOARD,
    contract_metrics,
    grafana_to_promql,
    metric_names,
    promtool,
)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def targets() -> list[tuple[dict, dict]]:
    return [(p, t) for p in panels() for t in p.get("targets", [])]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (netns, pod) (rate(badsum_checksum_errors_total{instance=~"a|b", x="rate(y)"}[5m]))',
         {"badsum_checksum_errors_total"}),
        ("time() - badsum_last_collection_timestamp_seconds > 300", {"badsum_last_collection_timestamp_seconds"}),
        ("a / on(instance) group_left(version) b offset 5m", {"a", "b"}),
        ("increase(c_total[1h:5m]) > bool 0 unless d and e or f", {"c_total", "d", "e", "f"}),
        ('label_replace(up, "x", "$1", "instance", "(.*)")', {"up"}),
    ],
)  # fmt: skip
def test_metric_names_finds_exactly_the_selected_metrics(expr, names):
    assert metric_names(expr) == names


def test_dashboard_is_json_with_a_datasource_variable():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert d["uid"] and d["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
    # Every query goes to the chosen data source, never to a fixed one.
    for p, t in targets():
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert t["datasource"]["uid"] == "${datasource}", p["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}"


def test_every_expression_uses_only_contract_metrics_and_every_metric_is_shown():
    contract = set(contract_metrics())
    used: set[str] = set()
    exprs = [t["expr"] for _, t in targets()]
    exprs += [v["definition"].removeprefix("label_values(").split(",")[0]
              for v in dashboard()["templating"]["list"] if v["type"] == "query"]  # fmt: skip
    for expr in exprs:
        names = metric_names(grafana_to_promql(expr))
        assert names, expr
        assert names <= contract, f"{expr}: {names - contract} not in docs/deploy.md"
        used |= names
    assert used == contract, f"metrics no panel shows: {sorted(contract - used)}"


def test_every_panel_expression_parses_in_promtool(tmp_path):
    """promtool parses each expression as a recording rule (Grafana variables replaced)."""
    rules = [{"record": f"badsum:panel{p['id']}_{t['refId'].lower()}", "expr": grafana_to_promql(t["expr"])}
             for p, t in targets()]  # fmt: skip
    assert len(rules) >= len(panels())
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    cp = promtool("check", "rules", str(path))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"SUCCESS: {len(rules)} rules found" in cp.stdout
    # And it would notice a broken one.
    rules[0]["expr"] += ")"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert promtool("check", "rules", str(path)).returncode != 0


def test_the_views_the_issue_asks_for_are_there():
    titles = " | ".join(p["title"].lower() for p in panels())
    for words in ("checksum errors by namespace and pod", "drops by reason", "offload", "mtu", "findings",
                  "canary", "last collection", "collection errors"):  # fmt: skip
        assert words in titles, words
