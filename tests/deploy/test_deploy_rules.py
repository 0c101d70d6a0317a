"""The alerts: promtool checks and unit-tests them, the PrometheusRule is generated from the plain
rules file, every alert fires and stays quiet in the fixtures, and every runbook link resolves."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import yaml
from deploykit import (
    DEPLOY,
    DOCS,
    PROMRULE,
    REPO,
    RULES,
    RULES_TEST,
    anchors,
    contract_metrics,
    metric_names,
    promtool,  # fmt: skip
)

GEN = DEPLOY / "gen_rules.py"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_check_rules_accepts_the_rules_file():
    cp = promtool("check", "rules", str(RULES))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"SUCCESS: {len(rules())} rules found" in cp.stdout


def test_promtool_check_rules_accepts_the_prometheusrule_spec(tmp_path):
    spec = yaml.safe_load(PROMRULE.read_text())["spec"]
    path = tmp_path / "spec.yml"
    path.write_text(yaml.safe_dump(spec))
    cp = promtool("check", "rules", str(path))
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_promtool_check_rules_rejects_a_broken_expression(tmp_path):
    # The check above can fail: a rule with a PromQL syntax error is refused.
    doc = yaml.safe_load(RULES.read_text())
    doc["groups"][0]["rules"][0]["expr"] = "increase(badsum_checksum_errors_total[5m] > 0"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(doc))
    cp = promtool("check", "rules", str(path))
    assert cp.returncode != 0


def test_promtool_test_rules_passes_the_fixtures():
    cp = promtool("test", "rules", str(RULES_TEST.relative_to(REPO)), cwd=REPO)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "SUCCESS" in cp.stdout


def test_promtool_test_rules_notices_a_wrong_expectation(tmp_path):
    # The fixtures are not vacuous: expecting the firing checksum alert to be quiet fails.
    doc = yaml.safe_load(RULES_TEST.read_text())
    doc["rule_files"] = [str(RULES)]
    doc["tests"][0]["alert_rule_test"][1]["exp_alerts"] = []
    path = tmp_path / "wrong_test.yml"
    path.write_text(yaml.safe_dump(doc))
    cp = promtool("test", "rules", str(path))
    assert cp.returncode != 0
    assert "FAILED" in cp.stdout + cp.stderr


def _series_labels(series: str) -> tuple[str, dict[str, str]]:
    name, _, rest = series.partition("{")
    return name, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def test_every_alert_fires_and_stays_quiet_in_the_fixtures():
    """For each alert: some evaluation expects it firing, and some input series of the metrics it
    reads never appears in any expected alert (the quiet case: flat counter, passing canary,
    cleared finding, fresh collection)."""
    fixtures = yaml.safe_load(RULES_TEST.read_text())["tests"]
    for rule in rules():
        name, metrics = rule["alert"], metric_names(rule["expr"])
        fired = quiet = False
        for group in fixtures:
            evals = [e for e in group["alert_rule_test"] if e["alertname"] == name]
            if not evals:
                continue
            expected = [a["exp_labels"] for e in evals for a in e.get("exp_alerts", [])]
            own = [a for a in expected if all(a.get(k) == v for k, v in rule.get("labels", {}).items())]
            fired = fired or bool(own)
            for item in group["input_series"]:
                metric, labels = _series_labels(item["series"])
                if metric in metrics and not any(all(a.get(k) == v for k, v in labels.items()) for a in expected):
                    quiet = True
        assert fired, f"{name} ({rule['labels']}) never expected to fire in {RULES_TEST.name}"
        assert quiet, f"{name} has no input series that stays quiet in {RULES_TEST.name}"


def test_the_prometheusrule_is_generated_from_the_rules_file():
    cp = subprocess.run([sys.executable, str(GEN), "--check"], capture_output=True, text=True, check=False)
    assert cp.returncode == 0, cp.stderr
    assert yaml.safe_load(PROMRULE.read_text())["spec"] == yaml.safe_load(RULES.read_text())


def test_gen_rules_check_notices_drift(tmp_path):
    rules_copy = tmp_path / "rules.yml"
    rules_copy.write_text(RULES.read_text().replace("for: 5m", "for: 7m", 1))
    out = tmp_path / "prometheusrule.yaml"
    shutil.copy(PROMRULE, out)
    cp = subprocess.run([sys.executable, str(GEN), "--rules", str(rules_copy), "--out", str(out), "--check"],
                        capture_output=True, text=True, check=False)  # fmt: skip
    assert cp.returncode == 1
    assert "out of date" in cp.stderr
    # Writing it brings it up to date, and the change is there.
    subprocess.run([sys.executable, str(GEN), "--rules", str(rules_copy), "--out", str(out)], check=True)
    assert yaml.safe_load(out.read_text())["spec"]["groups"][0]["rules"][0]["for"] == "7m"


def test_gen_rules_runbook_base_makes_links_absolute():
    cp = subprocess.run([sys.executable, str(GEN), "--runbook-base", "https://git.example.org/b/blob/main/", "--out", "-"],
                        capture_output=True, text=True, check=True)  # fmt: skip
    links = [r["annotations"]["runbook_url"] for g in yaml.safe_load(cp.stdout)["spec"]["groups"] for r in g["rules"]]
    assert links and all(link.startswith("https://git.example.org/b/blob/main/docs/") for link in links)


def test_gen_rules_bad_input_is_one_line_and_exit_3(tmp_path):
    cp = subprocess.run([sys.executable, str(GEN), "--rules", str(tmp_path / "missing.yml"), "--out", "-"],
                        capture_output=True, text=True, check=False)  # fmt: skip
    assert cp.returncode == 3
    assert len(cp.stderr.strip().splitlines()) == 1 and "Traceback" not in cp.stderr


def test_rules_use_only_contract_metrics():
    contract = contract_metrics()
    assert len(contract) == 12
    used = set()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["expr"]
        assert names <= set(contract), f"{rule['alert']}: {names - set(contract)} not in docs/deploy.md"
        used |= names
    # Counters are only read through increase()/rate(), never compared raw.
    for rule in rules():
        for name in metric_names(rule["expr"]):
            if contract[name] == "counter":
                assert re.search(rf"(increase|rate)\({name}\b", rule["expr"]), rule["expr"]


def test_runbook_links_resolve_to_headings():
    """Static links point at an existing heading; the per-rule template resolves for every rule id
    in the catalogue (Prometheus's toLower gives GitHub's anchor for ids like KB-004)."""
    import tomllib

    catalogue = tomllib.loads((REPO / "src" / "badsum" / "rules" / "catalogue.toml").read_text())
    ids = {r["id"] for r in catalogue.get("rule", catalogue.get("rules", []))}
    assert ids, "no rule ids in the catalogue"
    rule_anchors = anchors(DOCS / "rules.md")
    for rule in rules():
        link = rule["annotations"]["runbook_url"]
        page, _, fragment = link.partition("#")
        assert (REPO / page).is_file(), link
        if "{{" in fragment:
            assert fragment == "{{ $labels.rule | toLower }}", link
            missing = {i for i in ids if i.lower() not in rule_anchors}
            assert not missing, f"rules without a heading in docs/rules.md: {sorted(missing)}"
        else:
            assert fragment in anchors(REPO / page), link
