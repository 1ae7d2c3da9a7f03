"""A real Redis's error answers to the throttle script are reported for what they are, not as
"Redis unreachable" (tests/unit/state/test_redis_error_messages.py has every kind; here Redis
itself answers, so the classes and texts are the server's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.errors import StateStoreError
from consumer.state.limiter import RedisLimiter
from consumer.state.redis import Keys, connect
from tests.conftest import close_redis


@pytest.fixture
def limiter(stack: Any, redis_client: Any) -> Iterator[RedisLimiter]:
    client = connect(str(stack.redis_url))
    yield RedisLimiter(client, Keys("t"), "tok", parse_rate_limits("20/5s"), margin_ms=0, horizon_ms=60_000)
    close_redis(client)


def test_a_foreign_key_in_the_throttle_key_space_is_named_not_unreachable(limiter: RedisLimiter,
                                                                          redis_client: Any) -> None:
    for key in Keys("t").limiter("tok"):
        redis_client.set(key, "written by hand")
    with pytest.raises(StateStoreError) as raised:
        limiter.acquire()
    assert "unreachable" not in str(raised.value)
    assert "REDIS_KEY_PREFIX" in str(raised.value)


def test_a_full_redis_is_named_with_maxmemory(limiter: RedisLimiter, stack: Any, redis_client: Any) -> None:
    if not stack.local:
        pytest.skip("changes maxmemory: needs the suite's own local stack")
    limiter.acquire()  # the state's first call only starts its fence, writing nothing a full Redis refuses
    before = redis_client.config_get("maxmemory")["maxmemory"]
    redis_client.config_set("maxmemory", "1")
    try:
        with pytest.raises(StateStoreError) as raised:
            limiter.acquire()
    finally:
        redis_client.config_set("maxmemory", before)
    assert "unreachable" not in str(raised.value)
    assert "maxmemory" in str(raised.value)
