"""The dead-letter marks' contract (issue 11, finding 9): an origin acknowledged once is known,
a new record at an old origin (a topic created again) is not, and marks end with the horizon."""

from __future__ import annotations

import time

from consumer.ingest.records import InboundRecord
from consumer.state.dead_letters import Origin


def origin(offset: int, value: bytes = b"v", timestamp: int = 1_800_000_000_000) -> Origin:
    return Origin.of(InboundRecord("t", 0, offset, b"k", value, [], (1, timestamp)))


def test_an_acknowledged_origin_is_seen(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks()
    assert marks.seen([origin(1), origin(2)]) == [False, False]
    marks.mark([origin(1)])
    assert marks.seen([origin(1), origin(2)]) == [True, False]
    assert marks.seen([]) == []


def test_another_record_at_the_same_origin_is_not_seen(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks()
    marks.mark([origin(1)])
    # The topic was deleted and created again: offset 1 is another record now.
    assert marks.seen([origin(1, value=b"other"), origin(1, timestamp=1_800_000_000_001)]) == [False, False]


def test_marks_end_with_the_horizon(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks(horizon_s=1)
    marks.mark([origin(1)])
    time.sleep(1.1)
    assert marks.seen([origin(1)]) == [False]
