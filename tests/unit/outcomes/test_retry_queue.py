"""RetryQueue: the dead letters and receipts waiting for their next attempt."""

from __future__ import annotations

import random

from consumer.outcomes.retry_queue import RetryQueue


def test_items_come_out_when_due_earliest_first_and_in_put_order_at_the_same_time() -> None:
    queue: RetryQueue[str] = RetryQueue()
    queue.put("late", 5.0)
    queue.put("first-now")
    queue.put("soon", 2.0)
    queue.put("second-now")

    assert queue.take_due(1.0) == ["first-now", "second-now"]
    assert queue.take_due(1.5) == []
    assert queue.take_due(5.0) == ["soon", "late"]
    assert len(queue) == 0 and not queue


def test_take_due_matches_a_scan_of_every_item_on_random_schedules() -> None:
    """The heap answers what the former list scan answered, in put order among equal times."""
    rng = random.Random(7)
    queue: RetryQueue[int] = RetryQueue()
    waiting: list[tuple[float, int]] = []
    for step in range(2000):
        if rng.random() < 0.6:
            due_at = rng.choice([0.0, rng.uniform(0, 100)])
            queue.put(step, due_at)
            waiting.append((due_at, step))
        else:
            now = rng.uniform(0, 100)
            expected = sorted(w for w in waiting if w[0] <= now)
            waiting = [w for w in waiting if w[0] > now]
            assert queue.take_due(now) == [item for _, item in expected]
    assert sorted(queue) == sorted(item for _, item in waiting)


def test_keep_drops_the_unwanted_and_says_how_many_and_the_rest_keep_their_order() -> None:
    queue: RetryQueue[int] = RetryQueue()
    for item in range(10):
        queue.put(item, float(10 - item))

    assert queue.keep(lambda item: item % 2 == 0) == 5
    assert queue.keep(lambda item: True) == 0
    assert queue.take_due(100.0) == [8, 6, 4, 2, 0]


def test_all_due_now_keeps_the_put_order() -> None:
    queue: RetryQueue[str] = RetryQueue()
    queue.put("b", 9.0)
    queue.put("a", 3.0)
    queue.put("c", 50.0)
    assert min(queue.due_at()) == 3.0

    queue.all_due_now()

    assert queue.take_due(0.0) == ["b", "a", "c"]
