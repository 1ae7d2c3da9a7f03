"""observe_many (consumer/operations/metrics.py) fills a histogram exactly as one observe per amount."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from consumer.operations.metrics import observe_many

BUCKETS = (0.5, 1, 2, 5, 10, 30, 60)


def _samples(histogram: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in histogram.collect() for s in metric.samples if not s.name.endswith("_created")}


def test_many_amounts_at_once_fill_the_same_buckets_and_sum_as_one_at_a_time() -> None:
    one = Histogram("one_seconds", "x", buckets=BUCKETS, registry=CollectorRegistry())
    many = Histogram("one_seconds", "x", buckets=BUCKETS, registry=CollectorRegistry())
    rng = random.Random(7)
    # Bounds themselves, values between them, zero and beyond the last bound.
    amounts = [*BUCKETS, 0.0, 1000.0] + [rng.uniform(0, 90) for _ in range(500)]
    for amount in amounts:
        one.observe(amount)
    observe_many(many, amounts[:100])
    observe_many(many, amounts[100:])
    observe_many(many, [])
    expected, got = _samples(one), _samples(many)
    total = ("one_seconds_sum", ())
    assert got.pop(total) == pytest.approx(expected.pop(total))  # summed in another order
    assert got == expected
