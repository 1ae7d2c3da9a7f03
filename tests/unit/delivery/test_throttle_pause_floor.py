"""A 429 without Retry-After pauses the fleet for at least the shortest window (h-sender).

README ("The shared throttle"): every 429 pauses the token's limiter for the whole fleet. Without a
Retry-After the pause was the retry's jittered backoff, `uniform(0, base * 2^n)`: near zero, so the
fleet went straight back into Pisano's throttle, each request heard 429 and paused again for a
moment. Pisano counts in sliding windows: a 429 says one of them is full at Pisano's count, and
the shortest window is the soonest one that can have given a slot back.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from consumer.delivery.attempts import RetryPolicy
from consumer.delivery.backoff import Backoff
from consumer.errors import PisanoApiError
from tests.support.fakes import FakePisano, event, rig, windows_limiter


@pytest.mark.parametrize(("windows", "floor_ms"), [("20/5s,40/25s,80/125s,160/625s", 5_000), ("10/2s", 2_000)])
def test_a_429_without_retry_after_pauses_the_fleet_for_the_shortest_window_at_least(
        windows: str, floor_ms: int) -> None:
    limiter = windows_limiter(windows)
    r = rig(FakePisano([PisanoApiError(429, None, "Too Many Requests")]), limiter=limiter, max_attempts=1)
    r.process([event(1)])
    assert r.reasons() == {"e1": "throttled"}
    paused_ms = limiter.state.data.pause_until - limiter.clock()
    assert floor_ms - 200 <= paused_ms <= 625_000, paused_ms


@pytest.mark.parametrize("retry_after_s", [0.0, 0.001, 1.0])
def test_a_retry_after_below_the_floor_gets_the_floor_too(retry_after_s: float) -> None:
    # Found by review (h-pause): `Retry-After: 0` (a gateway's, a proxy's, a Pisano node's "now")
    # paused the fleet for the backoff alone, a few milliseconds, and it went straight back into the
    # full window. Whatever the 429 says, one of Pisano's windows is full, and the shortest window is
    # the soonest that can give a slot back: the same floor as a 429 without Retry-After.
    limiter = windows_limiter("20/5s,160/625s")
    r = rig(FakePisano([PisanoApiError(429, None, "Too Many Requests", retry_after_s=retry_after_s)]),
            limiter=limiter, max_attempts=1)
    r.process([event(1)])
    paused_ms = limiter.state.data.pause_until - limiter.clock()
    assert 4_800 <= paused_ms <= 5_000, paused_ms


def test_a_retry_after_above_the_floor_is_kept() -> None:
    limiter = windows_limiter("10/2s,160/625s")
    r = rig(FakePisano([PisanoApiError(429, None, "Too Many Requests", retry_after_s=7.0)]), limiter=limiter,
            max_attempts=1)
    r.process([event(1)])
    paused_ms = limiter.state.data.pause_until - limiter.clock()
    assert 6_800 <= paused_ms <= 7_000, paused_ms


def retrying(limiter: Any, budget_s: float, answer: Any = None) -> Any:
    """A rig whose first POST hears `answer` (a plain 429 by default), then may retry: 3
    attempts within `budget_s`, backoffs of a millisecond or two."""
    r = rig(FakePisano([answer or PisanoApiError(429, None, "Too Many Requests")]), limiter=limiter, max_attempts=3)
    r.sender.attempts.retry = RetryPolicy(3, budget_s, Backoff(0.001, 0.002))
    return r


def test_the_retry_budget_counts_the_pause_floor_not_the_backoff() -> None:
    # Found by review (h-pause): the budget check added the jittered backoff (milliseconds) to the
    # time spent, yet the retry waits for a slot after the pause (the floor: 2 s here), so it left
    # up to a floor past PISANO_RETRY_BUDGET_MS (1 s here). Not retried now: dead-lettered at once.
    r = retrying(windows_limiter("10/2s"), 1.0)
    started = time.monotonic()
    r.process([event(1)])
    assert len(r.pisano.requests) == 1, "retried past the budget"
    assert r.reasons() == {"e1": "throttled"}
    assert time.monotonic() - started < 1.0


def test_a_retry_within_the_budget_waits_out_the_floor() -> None:
    r = retrying(windows_limiter("10/1s"), 3.0)
    started = time.monotonic()
    r.process([event(1)])
    assert len(r.pisano.requests) == 2 and r.kinds() == {"e1": {"delivered"}}
    assert time.monotonic() - started >= 0.9  # in a slot after the pause


def test_the_retry_budget_counts_a_longer_pause_the_fleet_is_under() -> None:
    # The retry's next slot lies after the fleet's pause, which another replica's 429 (its
    # Retry-After: 3 s) may have made longer than this 429's floor (1 s here): the budget (2 s) counts that.
    limiter = windows_limiter("10/1s")
    other = limiter.replica()

    def throttled_after_another_replicas_429(phones: list[str]) -> PisanoApiError:
        other.pause(3.0)  # while this request was in flight
        return PisanoApiError(429, None, "Too Many Requests")

    r = retrying(limiter, 2.0, throttled_after_another_replicas_429)
    started = time.monotonic()
    r.process([event(1)])
    assert len(r.pisano.requests) == 1, "retried past the budget"
    assert r.reasons() == {"e1": "throttled"}
    assert time.monotonic() - started < 1.0
