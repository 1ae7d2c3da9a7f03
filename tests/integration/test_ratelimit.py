"""The shared limiter on real Redis, in one process (the multi-process proof is its own test)."""

from __future__ import annotations

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.state.limiter import RedisLimiter
from consumer.state.redis import Keys, connect
from tests.conftest import Stack
from tests.support.redis_trips import count_round_trips


@pytest.fixture
def limiter(stack: Stack, redis_client):  # type: ignore[no-untyped-def]
    def build(windows: str, margin_ms: int = 0, horizon_ms: int = 60_000, token: str = "tok",
              grace_ms: int = 0) -> RedisLimiter:
        return RedisLimiter(connect(stack.redis_url), Keys("t"), token, parse_rate_limits(windows),
                           margin_ms=margin_ms, horizon_ms=horizon_ms, grace_ms=grace_ms)

    return build


def test_far_slot_is_refused_without_reserving(limiter, redis_client) -> None:  # type: ignore[no-untyped-def]
    rl = limiter("2/10s", horizon_ms=1000)
    assert rl.acquire().granted and rl.acquire().granted
    refused = rl.acquire()
    assert not refused.granted and 9.0 < refused.wait_s <= 10.0
    assert redis_client.llen(rl._keys[0]) == 2


def test_tokens_have_separate_budgets(limiter) -> None:  # type: ignore[no-untyped-def]
    a, b = limiter("1/10s", token="a"), limiter("1/10s", token="b")
    assert a.acquire().wait_s == 0 and b.acquire().wait_s == 0


def test_keys_never_contain_the_token(limiter, redis_client) -> None:  # type: ignore[no-untyped-def]
    limiter("1/1s", token="super-secret-token").acquire()
    assert not [k for k in redis_client.keys("*") if b"super-secret" in k]


def test_one_round_trip_per_acquisition(limiter, redis_client) -> None:  # type: ignore[no-untyped-def]
    rl = limiter("1000/1s")
    rl.acquire()  # loads the script
    with count_round_trips() as trips:
        for _ in range(50):
            rl.acquire()
    assert trips[0] == 50
