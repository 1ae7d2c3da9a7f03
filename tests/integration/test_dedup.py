"""Deduplication on real Redis: claim, settle, hold back, unknown fate, replays."""

from __future__ import annotations

import pytest

from consumer.state.dedup import ClaimRequest, ClaimStatus, RedisDedup, Settlement
from consumer.state.redis import Keys, connect
from tests.conftest import Stack
from tests.support.redis_trips import count_round_trips


@pytest.fixture
def make(stack: Stack, redis_client):  # type: ignore[no-untyped-def]
    def build(lease_ms: int = 60_000) -> RedisDedup:
        return RedisDedup(connect(stack.redis_url), Keys("t"), lease_ms=lease_ms, horizon_s=3600)

    return build


def ids(*names: str, replay: bool = False) -> list[ClaimRequest]:
    return [ClaimRequest(n, replay) for n in names]







def test_keys_expire_after_the_horizon(stack: Stack, redis_client) -> None:  # type: ignore[no-untyped-def]
    dedup = RedisDedup(connect(stack.redis_url), Keys("t"), lease_ms=1000, horizon_s=60)
    tag = dedup.new_tag()
    dedup.claim(tag, ids("e1"))
    dedup.settle(Settlement.DELIVERED, tag, ["e1"])
    ttl = redis_client.pttl("{t}:e:e1")
    assert 55_000 < ttl <= 60_000


def test_one_round_trip_for_five_thousand_ids(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    dedup = make()
    dedup.claim(dedup.new_tag(), ids("warm-up"))  # scripts loaded
    dedup.settle(Settlement.DELIVERED, dedup.new_tag(), ["warm-up"])
    tag = dedup.new_tag()
    with count_round_trips() as trips:
        assert dedup.claim(tag, ids(*(f"e{i}" for i in range(5000)))) == [ClaimStatus.CLAIMED] * 5000
        dedup.settle(Settlement.DELIVERED, tag, [f"e{i}" for i in range(5000)])
    assert trips[0] == 2

