"""The chart's Grafana dashboard and alert rules query only metrics the consumer really exports.

A renamed metric, a missing `_total` or a typo would otherwise leave an empty panel or an alert
that can never fire, and nobody notices until the day it was needed. The names come from the
consumer's own registry (`consumer.operations.metrics.Metrics`), so these tests follow metrics.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.operations.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "pisano-sms-consumer"
DASHBOARD = CHART / "dashboards" / "pisano-sms.json"
RULES = CHART / "alerts" / "pisano-sms.rules.yaml"

# The series each metric type puts in the exposition (prometheus_client's text format).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}

# Everything in PromQL that looks like a name but is not a metric.
_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                    "unless", "offset", "inf", "nan"}
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def exported_metric_names() -> set[str]:
    """Every series name the consumer's /metrics can show, e.g. pisano_sms_requests_total."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, ranges, functions and
    grouping labels stripped). Grafana's $variables only occur inside matchers and ranges."""
    label_values = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, flags=re.S)
    if label_values:  # a Grafana variable query: label_values(<series selector>, <label>)
        expr = label_values.group(1)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = _LABEL_LISTS.sub(" ", expr)
    names = set()
    for match in _NAME.finditer(expr):
        if expr[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group(0).lower() not in _PROMQL_KEYWORDS:
            names.add(match.group(0))
    return names


def rules_without_helm(text: str) -> dict[str, Any]:
    """The rule file as Prometheus would get it, without Helm: comments and assignments dropped,
    {{`...`}} passed through, every other action (a threshold, a duration, the selector) 0."""

    def substitute(action: re.Match[str]) -> str:
        body = action.group(1)
        if body.startswith("/*") or ":=" in body:
            return ""
        if body.startswith("`"):
            return body[1:-1]
        return "0"

    plain = re.sub(r"\{\{-?\s*(/\*.*?\*/|`[^`]*`|[^}]*?)\s*-?\}\}", substitute, text, flags=re.S)
    loaded = yaml.safe_load(plain)
    assert isinstance(loaded, dict)
    return loaded


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


# ------------------------------------------------------------------------------ the registry


def test_exported_names_cover_what_the_exposition_shows() -> None:
    from prometheus_client import generate_latest

    metrics = Metrics()
    metrics.requests.labels("200", "", "default").inc()  # a labelled family only shows once it has a child
    shown = {line.split("{")[0].split(" ")[0]
             for line in generate_latest(metrics.registry).decode().splitlines() if not line.startswith("#")}
    assert shown <= exported_metric_names()
    assert {"pisano_sms_requests_total", "pisano_sms_batch_size_bucket", "pisano_sms_consumer_lag"} \
        <= exported_metric_names()


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (le) (rate(pisano_sms_batch_size_bucket{job=~"$job"}[$__rate_interval]))',
     {"pisano_sms_batch_size_bucket"}),
    ("histogram_quantile(0.95, sum(rate(a_bucket[5m])) by (le)) / on (job) b > 1e-3 offset 5m",
     {"a_bucket", "b"}),
    ('label_values(pisano_sms_events_consumed_total{namespace=~"$namespace"}, job)',
     {"pisano_sms_events_consumed_total"}),
    ("x > bool 0 unless ignoring (pod) group_left (topic) y", {"x", "y"}),
])
def test_metric_names_in_reads_promql(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names


# ------------------------------------------------------------------------------ the dashboard


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']}: no query"
            # The data source is the dashboard's variable, so the file works in any Grafana.
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_queries_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    queries = [(panel["title"], target["expr"]) for panel in dashboard_panels(dashboard)
               for target in panel.get("targets", [])]
    queries += [(f"variable {v['name']}", v["query"]["query"]) for v in dashboard["templating"]["list"]
                if v["type"] == "query"]
    for where, expr in queries:
        names = metric_names_in(expr)
        assert names, f"{where}: {expr!r} selects no metric"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} not exported by consumer/operations/metrics.py ({expr})"


def test_dashboard_quantiles_read_histogram_buckets(dashboard: dict[str, Any]) -> None:
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            if "histogram_quantile" in target["expr"]:
                assert "_bucket" in target["expr"] and re.search(r"by \(le\)", target["expr"]), target["expr"]


def test_dashboard_shows_every_metric_family(dashboard: dict[str, Any]) -> None:
    """A new metric belongs on the dashboard: SREs look there, not in metrics.py."""
    used = {name for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])
            for name in metric_names_in(target["expr"])}
    for family in Metrics().registry.collect():
        series = {family.name + suffix for suffix in SERIES_SUFFIXES[family.type]}
        assert series & used, f"{family.name} is on no panel of {DASHBOARD.relative_to(ROOT)}"


def test_dashboard_breaks_down_requests_and_dead_letters(dashboard: dict[str, Any]) -> None:
    exprs = [target["expr"] for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])]
    assert any("pisano_sms_requests_total" in e and "by (destination, status, code)" in e for e in exprs)
    assert any("pisano_sms_dead_letters_total" in e and "by (reason, code)" in e for e in exprs)
    assert any("pisano_sms_throttle_window_utilisation" in e and "by (window, destination)" in e for e in exprs)
    assert any("histogram_quantile" in e and "pisano_sms_end_to_end_latency_seconds_bucket" in e for e in exprs)


# ------------------------------------------------------------------------------ the alert rules

EXPECTED_ALERTS = {"PisanoSmsCircuitOpen", "PisanoSmsCampaignCircuitOpen", "PisanoSmsDeadLetterRateHigh",
                   "PisanoSmsConsumerLagGrowing", "PisanoSmsThrottleSaturated", "PisanoSmsNoDeliveries",
                   "PisanoSmsRedisErrors", "PisanoSmsRecordStuck", "PisanoSmsSchemaRegistryFailing",
                   "PisanoSmsRedisMemoryHigh", "PisanoSmsRedisStateLost"}


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    loaded = rules_without_helm(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_alert_rules_parse_and_are_complete(rules: list[dict[str, Any]]) -> None:
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["expr"] and "for" in rule, rule["alert"]
        assert "severity" in rule["labels"], rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_alert_rules_query_only_exported_metrics(rules: list[dict[str, Any]]) -> None:
    exported = exported_metric_names()
    for rule in rules:
        names = metric_names_in(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: {sorted(names - exported)} not exported"


def test_alert_thresholds_come_from_values() -> None:
    """Every threshold the rule file reads exists in values.yaml (a typo renders as nothing)."""
    text = RULES.read_text(encoding="utf-8")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    configured = values["prometheusRule"]["rules"]
    used = re.findall(r"\$r\.(\w+)\.(\w+)", text)
    assert {alert for alert, _ in used} == set(configured)
    for alert, field in used:
        assert field in configured[alert], f"prometheusRule.rules.{alert}.{field} is not in values.yaml"
