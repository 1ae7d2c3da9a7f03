"""observe_ages (consumer/operations/metrics.py) fills a histogram exactly as one observe per age."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from consumer.operations.metrics import observe_ages

BUCKETS = (0.5, 1, 2, 5, 10, 30, 60)


def _samples(histogram: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in histogram.collect() for s in metric.samples if not s.name.endswith("_created")}


@pytest.mark.parametrize("seed", range(5))
def test_ages_observed_at_once_fill_the_same_buckets_and_sum_as_one_at_a_time(seed: int) -> None:
    one = Histogram("one_seconds", "x", buckets=BUCKETS, registry=CollectorRegistry())
    many = Histogram("one_seconds", "x", buckets=BUCKETS, registry=CollectorRegistry())
    rng = random.Random(seed)
    now = 1_790_000_000_000
    # Each bound's own stamp and its neighbours, no timestamp (0, -1), a clock ahead of ours
    # (a future stamp: age 0), ages beyond the last bound, and random ones.
    edges = [now - round(bound * 1000) + step for bound in BUCKETS for step in (-1, 0, 1)]
    stamps = [*edges, 0, -1, now, now + 5_000, now - 10**6] + [now - rng.randrange(0, 90_000) for _ in range(500)]
    rng.shuffle(stamps)
    for stamp in stamps:
        if stamp > 0:
            one.observe(max(0.0, (now - stamp) / 1000))
    observe_ages(many, now, stamps[:100])
    observe_ages(many, now, iter(stamps[100:]))
    observe_ages(many, now, [])
    observe_ages(many, now, [0, -1])
    expected, got = _samples(one), _samples(many)
    total = ("one_seconds_sum", ())
    assert got.pop(total) == pytest.approx(expected.pop(total))  # summed in another order
    assert got == expected
