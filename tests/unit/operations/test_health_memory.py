"""The health probe publishes Redis's memory use, and says when the eviction policy turns unsafe."""

from __future__ import annotations

import logging

import pytest

from consumer.operations.health import Health, HealthProbe
from consumer.operations.metrics import Metrics
from tests.unit.state.test_eviction import NOPERM, FakeRedis, memory


def probe(client: FakeRedis, metrics: Metrics, allow: bool = False) -> HealthProbe:
    return HealthProbe(Health(), metrics, redis_client=client, producer=None, dlq_topic="dlq", destinations=[],
                       allow_eviction=allow)


def ratio(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("pisano_sms_redis_memory_used_ratio")


def test_memory_ratio_is_used_over_maxmemory_and_zero_without_maxmemory() -> None:
    metrics = Metrics()
    probe(FakeRedis(memory(used=750, maximum=1000)), metrics)._check_memory()
    assert ratio(metrics) == 0.75
    probe(FakeRedis(memory(used=750, maximum=0)), metrics)._check_memory()
    assert ratio(metrics) == 0.0


def test_a_policy_changed_at_run_time_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    checker = probe(FakeRedis(memory("allkeys-lru")), Metrics())
    with caplog.at_level(logging.ERROR):
        checker._check_memory()
        checker._check_memory()
    assert caplog.text.count("maxmemory-policy is allkeys-lru") == 1


def test_a_user_that_may_not_read_info_leaves_the_metric_alone() -> None:
    metrics = Metrics()
    probe(FakeRedis(NOPERM, NOPERM), metrics)._check_memory()
    assert ratio(metrics) == 0.0  # never set
