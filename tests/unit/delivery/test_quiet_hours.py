"""Quiet hours at the batcher and the sender's attempts (consumer/delivery/quiet_hours.py)."""

import threading
from datetime import UTC, datetime

from consumer.config.send_window import parse_send_window
from consumer.delivery.batching import Batcher, PendingEvent
from consumer.delivery.quiet_hours import CLOSING_LEAD_MS, QuietHours
from consumer.ingest.mapping import Recipient
from consumer.operations.metrics import Metrics
from consumer.outcomes.offsets import OffsetTracker

STOP = threading.Event()


class Wall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now_ms(self) -> int:
        return self.ms


def utc_ms(hour: int, minute: int = 0, second: int = 0) -> int:
    return int(datetime(2026, 6, 3, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def ev(n: int, campaign: str, at: float = 100.0) -> PendingEvent:
    return PendingEvent(message=None, tp=("t", 0), offset=n, epoch=1,
                        recipient=Recipient(f"e{n}", campaign, f"+9053200{n:05d}"), enqueued_at=at)


def gate(wall: Wall, metrics: Metrics | None = None) -> QuietHours:
    return QuietHours("default", parse_send_window("09:00-21:00 UTC"),
                      {"night": parse_send_window("22:00-06:00 UTC"), "free": parse_send_window("always")},
                      wall, metrics)


def test_campaign_windows_override_the_destinations() -> None:
    wall = Wall(utc_ms(3))
    quiet = gate(wall)
    assert quiet.holds("any") and not quiet.holds("night") and not quiet.holds("free")
    wall.ms = utc_ms(12)
    assert not quiet.holds("any") and quiet.holds("night") and not quiet.holds("free")


def test_a_batch_is_not_taken_in_the_last_moment_before_closing_but_may_still_leave() -> None:
    wall = Wall(utc_ms(21) - CLOSING_LEAD_MS // 2)
    quiet = gate(wall)
    assert quiet.holds("any")  # a request taken now would leave after 21:00
    assert quiet.sending_allowed("any")  # one already prepared may still leave
    wall.ms = utc_ms(21)
    assert not quiet.sending_allowed("any")


def test_held_campaigns_are_never_due_and_drain_in_full_batches_at_opening() -> None:
    wall = Wall(utc_ms(3))
    metrics = Metrics()
    quiet = gate(wall, metrics)
    now = [100.0]
    batcher = Batcher(3, 1.0, lambda: now[0], holds=quiet.holds)
    batcher.add([ev(n, "any") for n in range(7)] + [ev(n, "free") for n in range(7, 9)])
    now[0] += 60  # far older than BATCH_MAX_WAIT_MS, and flushing: still held
    batcher.flush_all()
    batcher.flush_all(False)
    assert batcher.wait_for_demand(STOP, 0)  # the `always` campaign's two events
    assert not batcher.wait_for_demand(STOP, 0)  # nothing of the held campaign
    assert batcher.take(only="any") is None
    free = batcher.take()
    assert free is not None and free.campaign_id == "free" and len(free) == 2
    assert batcher.take() is None  # even a promise-less take never hands out a held batch
    assert batcher.peek() is None
    assert [e.offset for e in batcher.held_events()] == list(range(7)) and batcher.held_count() == 7
    assert metrics.send_window_open.labels("default", "destination")._value.get() == 0

    wall.ms = utc_ms(9)
    sizes = []
    while batcher.wait_for_demand(STOP, 0):
        batch = batcher.take()
        assert batch is not None
        sizes.append(len(batch))
    assert sizes == [3, 3, 1] and batcher.buffered == 0 and batcher.held_events() == [] and batcher.held_count() == 0
    assert metrics.send_window_open.labels("default", "destination")._value.get() == 1


def test_records_held_by_the_window_are_not_stuck_and_age_from_their_release() -> None:
    tracker = OffsetTracker()
    tracker.assign(("t", 0))
    for offset in range(3):
        tracker.track(("t", 0), offset, 10, now=0.0)
    assert tracker.oldest_unfinished_age(1000.0) == 1000.0
    tracker.waiting([(("t", 0), 0), (("t", 0), 1)], now=990.0)
    assert tracker.oldest_unfinished_age(1000.0) == 1000.0  # offset 2 is not held: it is that old
    tracker.finish(("t", 0), 2, tracker.epoch(("t", 0)) or 0)
    assert tracker.oldest_unfinished_age(1000.0) == 10.0  # the held ones: since they were last seen held
    tracker.waiting([(("t", 0), 0), (("t", 0), 1)], now=1000.0)
    assert tracker.oldest_unfinished_age(1000.0) == 0.0
    assert tracker.oldest_unfinished_age(1300.0) == 300.0  # let go at the opening: ages from there
    tracker.finish(("t", 0), 0, tracker.epoch(("t", 0)) or 0)
    tracker.finish(("t", 0), 1, tracker.epoch(("t", 0)) or 0)
    assert tracker.oldest_unfinished_age(1300.0) == 0.0


def test_a_retry_after_the_window_closed_is_not_sent_and_its_events_wait() -> None:
    from consumer.errors import PisanoApiError
    from tests.support.fakes import FakePisano, event, rig

    wall = Wall(utc_ms(20, 59, 58))

    def unavailable_until_closing(phones: list[str]) -> PisanoApiError:
        wall.ms = utc_ms(21)  # the backoff runs past the closing
        return PisanoApiError(503, None, "Service Unavailable")

    r = rig(FakePisano([unavailable_until_closing]), quiet_hours=gate(wall))
    r.process([event(1), event(2)])
    assert len(r.pisano.requests) == 1  # no retry outside the window
    assert r.kinds() == {"e1": {"requeue"}, "e2": {"requeue"}}  # back to wait for the opening
    assert r.dedup.state("e1") is None and r.dedup.state("e2") is None  # released: sendable at the opening


def test_a_held_backlog_makes_no_request_urgent_until_its_window_opens() -> None:
    wall = Wall(utc_ms(3))
    batcher = Batcher(3, 1.0, holds=gate(wall).holds)
    batcher.add([ev(n, "any") for n in range(7)] + [ev(7, "free")])
    assert batcher.full_requests() == 0  # the `free` campaign's one event is paced, not urgent
    wall.ms = utc_ms(9)
    assert batcher.full_requests() == 2  # the morning backlog: full batches back to back
