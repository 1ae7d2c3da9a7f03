"""The chart's alert rules, as `helm template` renders them, checked and unit-tested by promtool
(Debian's prometheus package, installed by scripts/localstack.py): they parse as Prometheus rules,
and each alert fires when it should and stays silent when it should
(tests/promtool/pisano-sms.rules.test.yaml).

By hand: render with `helm template sms helm/pisano-sms-consumer --namespace payments --set
prometheusRule.enabled=true --set secrets.pisanoApiToken=x --show-only templates/prometheusrule.yaml`,
write its `spec` to pisano-sms.rules.yaml beside a copy of the test file, and run
`promtool check rules pisano-sms.rules.yaml` and `promtool test rules pisano-sms.rules.test.yaml`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import localstack
from tests.integration.test_helm_chart import BASE, helm, merged, render  # noqa: F401
from tests.unit.operations.test_observability_assets import EXPECTED_ALERTS

ROOT = Path(__file__).resolve().parents[2]
RULE_TESTS = ROOT / "tests" / "promtool" / "pisano-sms.rules.test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return localstack.ensure_prometheus()[1]


@pytest.fixture
def rules_dir(helm: str, tmp_path: Path) -> Path:  # noqa: F811 - the helm fixture's value
    """The rendered rules and a copy of the rule tests, side by side as the tests name them."""
    docs = render(helm, merged(BASE, {"prometheusRule": {"enabled": True}}))
    rule_object = next(d for d in docs if d["kind"] == "PrometheusRule")
    (tmp_path / "pisano-sms.rules.yaml").write_text(yaml.safe_dump({"groups": rule_object["spec"]["groups"]}),
                                                    encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path


def promtool_run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rendered_rules(promtool: str, rules_dir: Path) -> None:
    result = promtool_run(promtool, "check", "rules", "pisano-sms.rules.yaml", cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_of_every_alert_pass(promtool: str, rules_dir: Path) -> None:
    result = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fails_a_rule_that_does_not_fire_as_tested(promtool: str, rules_dir: Path) -> None:
    """The unit tests can fail: with the circuit alert's `for` doubled, its firing case fails."""
    path = rules_dir / "pisano-sms.rules.yaml"
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    for rule in loaded["groups"][0]["rules"]:
        if rule["alert"] == "PisanoSmsCircuitOpen":
            rule["for"] = "10m"
    path.write_text(yaml.safe_dump(loaded), encoding="utf-8")
    result = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=rules_dir)
    assert result.returncode != 0
    assert "PisanoSmsCircuitOpen" in result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_is_silent() -> None:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    cases = [case for group in tests for case in group.get("alert_rule_test", [])]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    silent = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fires == EXPECTED_ALERTS, f"no firing case: {sorted(EXPECTED_ALERTS - fires)}"
    assert silent == EXPECTED_ALERTS, f"no silent case: {sorted(EXPECTED_ALERTS - silent)}"
