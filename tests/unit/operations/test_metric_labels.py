"""Label values known in advance exist at 0 from the start (consumer/operations/metrics.py)."""

from __future__ import annotations

from consumer.operations.metrics import REDIS_OPERATIONS, REGISTRY_ERROR_KINDS, Metrics


def samples(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for family in metrics.registry.collect() if family.name == name
            for s in family.samples if s.name == f"{name}_total"}


def test_failure_counters_start_at_zero_for_every_known_label_value() -> None:
    """A counter born at 1 shows no increase to rate(): the first Redis or registry failure would
    be invisible to the alerts and the dashboard."""
    metrics = Metrics()
    assert samples(metrics, "pisano_sms_redis_errors", "operation") == dict.fromkeys(REDIS_OPERATIONS, 0.0)
    assert samples(metrics, "pisano_sms_schema_registry_errors", "kind") == dict.fromkeys(REGISTRY_ERROR_KINDS, 0.0)
