"""Every query of the Grafana dashboard, evaluated by a real Prometheus scraping a real consumer.

The static checks (tests/unit/operations/test_observability_assets.py) compare metric names with
the registry; this one catches what they cannot: a wrong label in a matcher or a `by`, a
function applied to the wrong type, a histogram read without `le`. A replica runs a mix that
makes every metric move (deliveries, a Pisano refusal with its code, a record that is not Avro,
duplicates, a throttle, a topic not yet created), Prometheus scrapes it every second with the
labels a ServiceMonitor gives (namespace, job, pod), and each expression, with Grafana's
variables substituted as Grafana would, must return a series with a finite value during the run.

The chart's alert rules are loaded into the same Prometheus: each must evaluate without error
against the real series.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

from consumer.ingest.samples import encode, phone_for, transaction
from tests.conftest import unique
from tests.integration.test_helm_chart import BASE, NAMESPACE, RELEASE, helm, merged, render  # noqa: F401
from tests.support.consumers import ConsumerProcess, consumer_env, wait_until
from tests.support.kafka import all_committed, produce
from tests.support.prometheus import Prometheus, Target, finite_values, running_prometheus
from tests.support.runs import Run
from tests.unit.operations.test_observability_assets import DASHBOARD, EXPECTED_ALERTS, dashboard_panels

JOB = f"{RELEASE}-pisano-sms-consumer"  # the job a ServiceMonitor of the chart's release gives
POD = f"{JOB}-7d9f8-x2k4q"
SCRAPE_S = 1
# Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval); with a
# range query of one-second steps that is the 4 x scrape interval.
RATE_INTERVAL = f"{4 * SCRAPE_S}s"
REFUSED = 13002  # a campaign Pisano does not know: requests{status=404,code=13002}, a dead letter


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(f"{panel['title']} [{target.get('refId', '?')}]", target["expr"])
            for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])]


def variable_queries() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return {v["name"]: v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"}


def grafana_escape(value: str) -> str:
    """A value as Grafana writes it into a Prometheus regex matcher: regex metacharacters escaped
    with a backslash that is itself escaped for the PromQL string (`-` is not escaped: PromQL
    strings refuse `\\-`)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def grafana_all(values: list[str]) -> str:
    """What Grafana puts for a multi-value variable set to All (no custom all value): an
    alternation of every value."""
    escaped = [grafana_escape(v) for v in values]
    return "(" + "|".join(escaped) + ")" if len(escaped) > 1 else escaped[0]


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):  # $__rate_interval before $__range
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    assert "$" not in expr, f"a Grafana variable left unsubstituted: {expr}"
    return expr


def variable_values(prometheus: Prometheus) -> dict[str, str]:
    """The dashboard's own variable queries (label_values(selector, label)), chained as Grafana
    chains them: job's query uses the namespace chosen."""
    chosen: dict[str, str] = {}
    for name, query in variable_queries().items():
        found = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, flags=re.S)
        assert found, f"variable {name}: {query}"
        selector, label = substitute(found.group(1), chosen), found.group(2)
        values = prometheus.label_values(label, selector)
        assert values, f"variable {name}: {query} found no value"
        chosen[name] = grafana_all(values)
    assert chosen == {"namespace": NAMESPACE, "job": JOB}
    return chosen


def rendered_rules(helm: str, tmp_path: Path) -> Path:  # noqa: F811 - the helm fixture's value
    """The chart's alert rules as the release's PrometheusRule holds them, as a rule file."""
    docs = render(helm, merged(BASE, {"prometheusRule": {"enabled": True}}))
    rule_object = next(d for d in docs if d["kind"] == "PrometheusRule")
    path = tmp_path / "pisano-sms.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_object["spec"]["groups"]}), encoding="utf-8")
    return path


def events(prefix: str, count: int, campaign: str, first: int) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}-{n}".encode(), encode(transaction(f"{prefix}-{n}", phone_for(n), campaign, n=n)))
            for n in range(first, first + count)]


def test_every_dashboard_query_and_alert_rule_evaluates_on_a_real_run(
        run: Run, new_topic: Callable[..., str], helm: str, tmp_path: Path) -> None:  # noqa: F811
    rules = rendered_rules(helm, tmp_path)
    topic, dlq, group = new_topic(partitions=2), new_topic("dlq"), unique("g")
    # Listed before it exists, as when a topic is added to KAFKA_TOPICS ahead of its producer:
    # librdkafka reports UNKNOWN_TOPIC_OR_PART, the one Kafka error a healthy stack can show.
    not_yet_created = unique("later")
    refused_campaign = str(uuid.uuid4())
    run.faults(campaign_codes={refused_campaign: REFUSED})
    env = consumer_env(bootstrap=run.stack.bootstrap, redis_url=run.stack.redis_url, topic=f"{topic},{not_yet_created}",
                       dlq=dlq, group=group, pisano_url=run.simulator.url, token=run.token,
                       PISANO_BACKOFF_BASE_MS=50, PISANO_BACKOFF_MAX_MS=500,
                       # A throttle, so the windows' utilisation and the slot waits have values.
                       PISANO_RATE_LIMITS="40/1s,2000/1m", KAFKA_CONFIG_TOPIC_METADATA_REFRESH_INTERVAL_MS=1000,
                       # A send window open all day, so the quiet-hours panel has its gauges.
                       SEND_WINDOW="00:00-24:00 UTC")
    replica = ConsumerProcess(env, tmp_path / "replica.log")
    run.processes.append(replica)
    target = Target(f"127.0.0.1:{replica.port}", {"namespace": NAMESPACE, "pod": POD})
    with running_prometheus([target], job=JOB, scrape_interval=f"{SCRAPE_S}s", rule_files=[rules]) as prometheus:
        replica.start().wait_ready()
        started = time.time()
        campaign = str(uuid.uuid4())
        first_wave = events("dash", 120, campaign, 0)
        produce(run.stack.bootstrap, topic, [
            *first_wave,
            *events("refused", 3, refused_campaign, 1000),
            (b"not-avro", b"\x00\x00\x00\x00\x07 this is not an Avro record"),
        ])

        def caught_up() -> bool:
            return all_committed(run.stack.bootstrap, group, topic)

        wait_until(caught_up, 90, "the first wave has its outcomes")
        # The same events again: their ids are marked delivered, so they are skipped.
        produce(run.stack.bootstrap, topic, first_wave[:20])
        produce(run.stack.bootstrap, topic, events("dash2", 60, campaign, 2000))
        wait_until(caught_up, 90, "the second wave has its outcomes")
        time.sleep(4 * SCRAPE_S + 2)  # the last increases scraped, and one rate window past them
        ended = time.time()
        assert prometheus.targets_up()
        assert replica.metric("pisano_sms_duplicates_skipped_total") >= 20, replica.log_tail()

        variables = {**variable_values(prometheus), "__rate_interval": RATE_INTERVAL,
                     "__interval": f"{SCRAPE_S}s", "__range": f"{int(ended - started) + 1}s"}
        empty = []
        for where, expr in dashboard_queries():
            query = substitute(expr, variables)
            series = prometheus.query_range(query, started, ended, step=SCRAPE_S)
            if not any(finite_values(s) for s in series):
                empty.append(f"{where}: {query}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        check_rules_evaluate(prometheus)
    assert replica.terminate() == 0, replica.log_tail()


def check_rules_evaluate(prometheus: Prometheus) -> None:
    """Every alert rule was evaluated on these series without an error (a vector matching that
    finds duplicates, a type error), and none fires: the refused campaign may make one pending,
    but no rule's `for` is as short as this run."""
    rules = prometheus.rules()
    assert {rule["name"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        assert rule["state"] != "firing", f"{rule['name']} fires: {rule['alerts']}"
