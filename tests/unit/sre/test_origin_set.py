"""`dlq stats` counts unique origins exactly (as a set would) in a few bytes a record, not ~130."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from consumer.sre.dlq_stats import DlqStats
from tests.support.dead_letters import StatsLetter as Letter


@pytest.mark.parametrize("seed", range(40))
def test_unique_origins_are_exact_in_any_order_with_repeats(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.origin_set as origin_set

    monkeypatch.setattr(origin_set, "MIN_PENDING", 3)  # merge often: every path of the merge runs
    rnd = random.Random(seed)
    stats, expected = DlqStats("dlq"), set()
    span = rnd.choice([5, 60, 2000])
    for _ in range(rnd.randint(0, 600)):
        offset = rnd.randint(0, span) if rnd.random() < 0.8 else rnd.randint(0, 10**17)
        origin = (rnd.choice(["a", "b"]), rnd.randint(0, 2), offset)
        expected.add(origin)
        stats.add(Letter(origin))  # type: ignore[arg-type]
        if rnd.random() < 0.05:
            assert stats.as_json()["unique_origins"] == len(expected)
    document = stats.as_json()
    assert document["unique_origins"] == len(expected)
    assert [row["unique_origins"] for row in document["rows"]] == ([len(expected)] if expected else [])


def test_a_large_dlq_costs_a_few_bytes_a_record() -> None:
    # Found in review: a set per row and one for the topic, ~130 bytes a record: 1.3 GB for the
    # 10 million dead-letters of a long token outage. Shuffled distinct offsets of 4 partitions.
    records = 60_000
    origins = [("transactions", n % 4, 5_000 + n // 4) for n in range(records)]
    random.Random(1).shuffle(origins)
    tracemalloc.start()
    try:
        stats = DlqStats("dlq")
        for origin in origins:
            stats.add(Letter(origin))  # type: ignore[arg-type]
        assert stats.as_json()["unique_origins"] == records
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / records < 40, peak / records
