"""The simulator's throttle is exact: (t - T, t] per window, boundaries to the nanosecond."""

from __future__ import annotations

import json
import random

import pytest

from consumer.config.windows import RateWindow, parse_rate_limits
from consumer.simulator.clock import ManualClock
from consumer.simulator.config import SimulatorConfig
from consumer.simulator.sharing import handle_sharing
from consumer.simulator.state import SimulatorState
from consumer.simulator.throttle import SlidingWindowThrottle, ThrottleDecision

MS = 1_000_000
S = 1_000_000_000


def windows(text: str) -> tuple[RateWindow, ...]:
    return parse_rate_limits(text)


def test_a_request_exactly_one_window_after_the_oldest_is_accepted() -> None:
    throttle = SlidingWindowThrottle(windows("3/1s"))
    for _ in range(3):
        assert throttle.try_acquire("k", 0).accepted

    just_before = throttle.try_acquire("k", S - 1)
    at_boundary = throttle.try_acquire("k", S)

    assert just_before == ThrottleDecision(False, wait_ns=1, exceeded=windows("3/1s"))
    assert at_boundary.accepted


@pytest.mark.parametrize("binding", ["3/1s", "5/3s", "7/10s"])
def test_every_window_has_an_exact_boundary(binding: str) -> None:
    """Fill one window to its limit, spread so the other windows stay below theirs."""
    all_windows = windows("3/1s,5/3s,7/10s")
    window = windows(binding)[0]
    throttle = SlidingWindowThrottle(all_windows)
    # window.limit requests evenly inside one period: every shorter window stays under its limit.
    step = window.period_ms * MS // window.limit
    times = [i * step for i in range(window.limit)]
    for t in times:
        assert throttle.try_acquire("k", t).accepted, t
    oldest_leaves = times[0] + window.period_ms * MS

    rejected = throttle.try_acquire("k", oldest_leaves - 1)
    accepted = throttle.try_acquire("k", oldest_leaves)

    assert not rejected.accepted
    assert rejected.exceeded == (window,)
    assert rejected.wait_ns == 1
    assert accepted.accepted


def test_wait_is_the_latest_of_the_exceeded_windows() -> None:
    throttle = SlidingWindowThrottle(windows("2/1s,3/10s"))
    for t in (0, 100 * MS, 5 * S):
        assert throttle.try_acquire("k", t).accepted
    assert throttle.try_acquire("k", 5 * S + 1).exceeded == windows("3/10s")
    assert throttle.try_acquire("k", 5 * S).wait_ns == 10 * S - 5 * S
    throttle.try_acquire("k", 5 * S)  # rejected: leaves no trace

    decision = throttle.try_acquire("k", 5 * S + 500 * MS)

    # 2/1s is full until 6 s (the 5 s request leaves) and 3/10s until 10 s (the 0 s one leaves).
    assert decision.exceeded == windows("3/10s")
    assert decision.wait_ns == 10 * S - (5 * S + 500 * MS)
    assert throttle.try_acquire("k", 10 * S).accepted


def test_both_windows_exceeded_wait_for_the_later_one() -> None:
    throttle = SlidingWindowThrottle(windows("2/1s,3/5s"))
    for t in (0, 2 * S, 2 * S + 100 * MS):
        assert throttle.try_acquire("k", t).accepted

    decision = throttle.try_acquire("k", 2 * S + 200 * MS)

    assert decision.exceeded == windows("2/1s,3/5s")
    assert decision.wait_ns == 5 * S - (2 * S + 200 * MS)  # 3/5s frees at 5 s, 2/1s at 3 s


def test_rejected_requests_do_not_consume_budget() -> None:
    throttle = SlidingWindowThrottle(windows("1/1s"))
    assert throttle.try_acquire("k", 0).accepted
    for t in range(1, 1000):
        assert not throttle.try_acquire("k", t * MS).accepted
    assert throttle.try_acquire("k", S).accepted


def test_tokens_have_separate_budgets() -> None:
    throttle = SlidingWindowThrottle(windows("1/1s"))
    assert throttle.try_acquire("a", 0).accepted
    assert throttle.try_acquire("b", 0).accepted
    assert not throttle.try_acquire("a", 0).accepted


def test_off_accepts_everything() -> None:
    throttle = SlidingWindowThrottle(windows("off"))
    assert all(throttle.try_acquire("k", 0).accepted for _ in range(10_000))


def test_reset_forgets_history() -> None:
    throttle = SlidingWindowThrottle(windows("1/1s"))
    throttle.try_acquire("k", 0)
    throttle.reset()
    assert throttle.try_acquire("k", 0).accepted


@pytest.mark.parametrize(
    ("wait_ns", "retry_after_s"),
    [(1, 1), (S - 1, 1), (S, 1), (S + 1, 2), (2 * S + 500 * MS, 3), (625 * S, 625)],
)
def test_retry_after_rounds_up_to_whole_seconds(wait_ns: int, retry_after_s: int) -> None:
    assert ThrottleDecision(False, wait_ns=wait_ns).retry_after_s == retry_after_s


@pytest.mark.parametrize("seed", range(20))
def test_decisions_match_a_brute_force_count(seed: int) -> None:
    """Random arrivals on a coarse grid (so boundaries coincide often) against the definition."""
    rng = random.Random(seed)
    config = windows("3/1s,5/3s,8/7s")
    throttle = SlidingWindowThrottle(config)
    accepted: list[int] = []
    now = 0
    for _ in range(400):
        now += rng.choice([0, 0, 100, 250, 500, 1000]) * MS
        expected = all(
            sum(1 for a in accepted if now - w.period_ms * MS < a <= now) < w.limit for w in config
        )
        decision = throttle.try_acquire("k", now)
        assert decision.accepted == expected, (now, accepted[-8:])
        if decision.accepted:
            accepted.append(now)
        else:
            # The promised wait is exact: 1 ns earlier is still too early.
            probe = SlidingWindowThrottle(config)
            for a in accepted:
                probe.try_acquire("k", a)
            assert not probe.try_acquire("k", now + decision.wait_ns - 1).accepted
            assert probe.try_acquire("k", now + decision.wait_ns).accepted


def test_pisano_cloud_windows_allow_bursts_then_the_long_windows_bind() -> None:
    throttle = SlidingWindowThrottle(windows("20/5s,40/25s,80/125s,160/625s"))
    accepted_at = []
    now = 0
    for _ in range(1000):  # bounded, so a broken throttle fails instead of looping
        decision = throttle.try_acquire("k", now)
        if decision.accepted:
            accepted_at.append(now)
            if len(accepted_at) == 160:
                break
        else:
            now += max(decision.wait_ns, 1)  # a client that honours the exact wait
    assert len(accepted_at) == 160
    assert accepted_at[:20] == [0] * 20
    assert accepted_at[20] == 5 * S
    assert accepted_at[40] == 25 * S
    assert accepted_at[80] == 125 * S
    assert throttle.try_acquire("k", now).exceeded == windows("20/5s,40/25s,80/125s,160/625s")
    assert not throttle.try_acquire("k", 625 * S - 1).accepted
    assert throttle.try_acquire("k", 625 * S).accepted


# The throttle inside a request: 429 body, Retry-After, counters and the request log.

TOKEN = "secret-token"


def _state(rate_limits: str, clock: ManualClock) -> SimulatorState:
    config = SimulatorConfig.from_options(
        tokens=[TOKEN, "other-token"], any_campaign=True, rate_limits=rate_limits
    )
    return SimulatorState(config, clock)


def _send(state: SimulatorState, token: str = TOKEN, phone: str = "+905321234567") -> int:
    body = json.dumps({"phone_numbers": [phone]}).encode()
    handling = handle_sharing(state, f"Token token={token}", "c", body)
    assert handling.answer is not None
    return handling.answer.http_status


def test_a_throttled_request_gets_429_with_retry_after_and_is_counted() -> None:
    clock = ManualClock()
    state = _state("2/1s,3/10s", clock)
    assert [_send(state), _send(state)] == [200, 200]
    clock.advance(ms=300)

    handling = handle_sharing(
        state, f"Token token={TOKEN}", "c", b'{"phone_numbers": ["+905321234567"]}'
    )

    assert handling.answer is not None
    assert handling.answer.http_status == 429
    assert handling.answer.headers == {"Retry-After": "1"}
    assert json.loads(handling.answer.body) == {
        "status": "too_many_requests",
        "code": None,
        "message": "Rate limit exceeded",
    }
    assert handling.record.retry_after_s == 1
    assert handling.record.recipients is None  # not read: the throttle answers first
    stats = state.stats_dict()
    assert stats["throttled"]["by_token"] == {
        handling.record.token: {"total": 1, "by_window": {"2/1s": 1}}
    }
    assert state.deliveries.recipients == 2


def test_a_request_at_the_boundary_over_the_app_state_is_accepted() -> None:
    clock = ManualClock()
    state = _state("2/1s", clock)
    _send(state)
    clock.advance(ms=400)
    _send(state)
    clock.advance(ms=599, ns=999_999)
    assert _send(state) == 429
    clock.advance(ns=1)  # exactly 1 s after the first
    assert _send(state) == 200
    assert _send(state) == 429  # the 400 ms one still counts until 1.4 s
    clock.advance(ms=400)
    assert _send(state) == 200


def test_retry_after_counts_up_from_the_exact_wait() -> None:
    clock = ManualClock()
    state = _state("1/5s", clock)
    _send(state)
    clock.advance(ms=1500)
    _send(state)
    assert state.requests.records()[-1]["retry_after_s"] == 4  # 3.5 s, rounded up


def test_each_token_is_throttled_and_counted_separately() -> None:
    clock = ManualClock()
    state = _state("1/1s,2/5s", clock)
    assert _send(state, TOKEN) == 200
    assert _send(state, "other-token") == 200
    assert _send(state, TOKEN) == 429
    clock.advance(ms=1000)
    assert _send(state, TOKEN) == 200
    clock.advance(ms=1000)
    assert _send(state, TOKEN) == 429  # 2/5s now

    by_token = state.stats_dict()["throttled"]["by_token"]
    assert list(by_token.values()) == [{"total": 2, "by_window": {"1/1s": 1, "2/5s": 1}}]
    assert state.stats_dict()["throttled"]["total"] == 2
