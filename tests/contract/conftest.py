"""Contract tests: each runs against the in-memory implementation and the Redis one.

The memory variants need nothing; the Redis variants use the suite's real local Redis (db 0,
flushed per test). A fake that passes here behaves like Redis for the sender's unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.state.circuit import CircuitStore, RedisCircuitStore
from consumer.state.dead_letters import DeadLetterMarks, RedisDeadLetterMarks
from consumer.state.dedup import DedupStore, RedisDedup
from consumer.state.limiter import Limiter, RedisLimiter
from consumer.state.memory import (
    MemoryCircuitStore,
    MemoryCircuitStores,
    MemoryDeadLetterMarks,
    MemoryDedup,
    MemoryLimiter,
)
from consumer.state.redis import Keys, connect

IMPLEMENTATIONS = ["memory", "redis"]


def _redis_url(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("redis_client")  # flushes db 0
    return str(request.getfixturevalue("stack").redis_url)


@pytest.fixture(params=IMPLEMENTATIONS)
def make_dedup(request: pytest.FixtureRequest) -> Callable[..., list[DedupStore]]:
    """`make_dedup(replicas, lease_ms=...)`: that many processes' views of one store."""

    def build(replicas: int = 1, lease_ms: int = 60_000, horizon_s: int = 3600) -> list[Any]:
        if request.param == "memory":
            first = MemoryDedup(lease_ms=lease_ms, horizon_s=horizon_s)
            return [first, *(first.replica() for _ in range(replicas - 1))]
        url = _redis_url(request)
        return [RedisDedup(connect(url), Keys("t"), lease_ms=lease_ms, horizon_s=horizon_s) for _ in range(replicas)]

    return build


@pytest.fixture(params=IMPLEMENTATIONS)
def make_limiter(request: pytest.FixtureRequest) -> Callable[..., Limiter]:
    shared: dict[str, Any] = {}

    def build(windows: str, margin_ms: int = 0, horizon_ms: int = 60_000) -> Any:
        if request.param == "memory":
            if windows not in shared:
                shared[windows] = MemoryLimiter(parse_rate_limits(windows), margin_ms=margin_ms, horizon_ms=horizon_ms)
                return shared[windows]
            return shared[windows].replica()
        url = shared.get("url") or _redis_url(request)
        shared["url"] = url
        return RedisLimiter(connect(url), Keys("t"), "tok", parse_rate_limits(windows), margin_ms=margin_ms,
                            horizon_ms=horizon_ms)

    return build


@pytest.fixture(params=IMPLEMENTATIONS)
def circuit_store(request: pytest.FixtureRequest) -> CircuitStore:
    if request.param == "memory":
        return MemoryCircuitStore()
    return RedisCircuitStore(connect(_redis_url(request)), Keys("t"), "tok")


@pytest.fixture(params=IMPLEMENTATIONS)
def make_marks(request: pytest.FixtureRequest) -> Callable[..., DeadLetterMarks]:
    def build(horizon_s: int = 3600) -> Any:
        if request.param == "memory":
            return MemoryDeadLetterMarks(horizon_s=horizon_s)
        return RedisDeadLetterMarks(connect(_redis_url(request)), Keys("t"), horizon_s=horizon_s)

    return build


@pytest.fixture(params=IMPLEMENTATIONS)
def campaign_stores(request: pytest.FixtureRequest) -> Callable[[str], CircuitStore]:
    """A store per campaign of one destination, as `consumer.state.campaigns` uses them."""
    if request.param == "memory":
        return MemoryCircuitStores()
    client = connect(_redis_url(request))
    return lambda campaign: RedisCircuitStore(client, Keys("t"), "tok", campaign)
