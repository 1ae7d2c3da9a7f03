"""A 429 without Retry-After pauses the fleet for at least the shortest window (h-sender).

README ("The shared throttle"): every 429 pauses the token's limiter for the whole fleet. Without a
Retry-After the pause was the retry's jittered backoff, `uniform(0, base * 2^n)`: near zero, so the
fleet went straight back into Pisano's throttle, each request heard 429 and paused again for a
moment. Pisano counts in sliding windows: a 429 says one of them is full at Pisano's count, and
the shortest window is the soonest one that can have given a slot back.
"""

from __future__ import annotations

import pytest

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


def test_a_retry_after_is_still_pisanos_word_below_the_floor() -> None:
    # Pisano said when: the floor is for a 429 that says nothing.
    limiter = windows_limiter("20/5s,160/625s")
    r = rig(FakePisano([PisanoApiError(429, None, "Too Many Requests", retry_after_s=1.0)]), limiter=limiter,
            max_attempts=1)
    r.process([event(1)])
    paused_ms = limiter.state.data.pause_until - limiter.clock()
    assert 500 <= paused_ms <= 1_000, paused_ms
