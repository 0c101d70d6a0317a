"""Helpers for the deploy/ tests: the manifests, the metric contract, PromQL metric names, promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from support import REPO

DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus" / "badsum-rules.yml"
PROMRULE = KUBE / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "badsum-dashboard.json"
DOCS = REPO / "docs"
HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
RULES_TEST = HERE / "rules_test.yml"

#: The kinds the Kubernetes API itself defines (validated with kubernetes-validate); the others are
#: the Prometheus Operator's CRDs (validated against the vendored CRD schemas).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> list[tuple[Path, dict]]:
    """Every object of every manifest file, with its file."""
    out = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def the(kind: str) -> dict:
    found = [doc for _, doc in manifests() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


# -- the metric contract ------------------------------------------------------------------------

_METRIC_ROW = re.compile(r"^\|\s*`(badsum_[a-z0-9_]+)`\s*\|\s*(counter|gauge)\s*\|")


def contract_metrics() -> dict[str, str]:
    """{metric name: type} from the metrics table of docs/deploy.md (the exporter's contract)."""
    out = {}
    for line in (DOCS / "deploy.md").read_text().splitlines():
        m = _METRIC_ROW.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


# -- PromQL ---------------------------------------------------------------------------------------

#: Grafana's built-in and dashboard variables, replaced by values PromQL accepts.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${instance}": ".*",
    "$instance": ".*",
}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
             "bool", "offset", "inf", "nan", "atan2"}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
#: Possessive (*+): a function name must not match as its own prefix (`increas` before `e(`).
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*+)(?!\s*\()")


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords, label
    names (inside {} or a grouping clause), strings or durations."""
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _GROUPING.sub(" ", s)
    return {m for m in _IDENT.findall(s) if m.lower() not in _KEYWORDS}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    from support import need_tool

    exe = need_tool("promtool")
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=120)


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lower case, punctuation but - and _ dropped,
    spaces to dashes."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in doc.read_text().splitlines() if re.match(r"^#{1,6} ", line)}
