"""Deduplication on real Redis: claim, settle, hold back, unknown fate, replays."""

from __future__ import annotations

import time

import pytest

from consumer.state.dedup import ClaimRequest, Deduplicator
from consumer.state.redis import Keys, connect
from tests.conftest import Stack
from tests.support.redis_trips import count_round_trips


@pytest.fixture
def make(stack: Stack, redis_client):  # type: ignore[no-untyped-def]
    def build(lease_ms: int = 60_000) -> Deduplicator:
        return Deduplicator(connect(stack.redis_url), Keys("t"), lease_ms=lease_ms, horizon_s=3600)

    return build


def ids(*names: str, replay: bool = False) -> list[ClaimRequest]:
    return [ClaimRequest(n, replay) for n in names]


def test_delivered_ids_are_skipped_fleet_wide(make) -> None:  # type: ignore[no-untyped-def]
    a, b = make(), make()
    tag = a.new_tag()
    assert a.claim(tag, ids("e1", "e2")) == "CC"
    assert b.claim(b.new_tag(), ids("e1", "e3")) == "HC"  # in flight on a: held back, not skipped
    a.delivered(tag, ["e1", "e2"])
    assert b.claim(b.new_tag(), ids("e1", "e2")) == "DD"


def test_released_ids_can_be_sent_again(make) -> None:  # type: ignore[no-untyped-def]
    a, b = make(), make()
    tag = a.new_tag()
    a.claim(tag, ids("e1"))
    b.release(b.new_tag(), ["e1"])  # someone else's release does nothing
    assert b.claim(b.new_tag(), ids("e1")) == "H"
    a.release(tag, ["e1"])
    assert b.claim(b.new_tag(), ids("e1")) == "C"


def test_a_retried_claim_is_idempotent(make) -> None:  # type: ignore[no-untyped-def]
    a = make()
    tag = a.new_tag()
    assert a.claim(tag, ids("e1")) == "C"
    assert a.claim(tag, ids("e1")) == "C"  # the first reply was lost; the retry must not hold itself
    assert a.claim(a.new_tag(), ids("e1")) == "H"  # another request of the same replica: held


def test_expired_claim_is_unknown_and_only_a_replay_may_send_it(make) -> None:  # type: ignore[no-untyped-def]
    crashed, survivor = make(lease_ms=300), make(lease_ms=300)
    crashed.claim(crashed.new_tag(), ids("e1"))  # then the process died before settling
    time.sleep(0.4)
    assert survivor.claim(survivor.new_tag(), ids("e1")) == "U"
    assert survivor.claim(survivor.new_tag(), ids("e1", replay=True)) == "C"


def test_unknown_fate_is_kept_and_never_downgrades_delivered(make) -> None:  # type: ignore[no-untyped-def]
    a = make()
    tag = a.new_tag()
    a.claim(tag, ids("e1", "e2"))
    a.unknown(tag, ["e1"])
    a.delivered(tag, ["e2"])
    a.unknown(tag, ["e2"])
    assert a.state("e1") == "u" and a.state("e2") == "d"
    assert a.claim(a.new_tag(), ids("e1", "e2")) == "UD"


def test_keys_expire_after_the_horizon(stack: Stack, redis_client) -> None:  # type: ignore[no-untyped-def]
    dedup = Deduplicator(connect(stack.redis_url), Keys("t"), lease_ms=1000, horizon_s=60)
    tag = dedup.new_tag()
    dedup.claim(tag, ids("e1"))
    dedup.delivered(tag, ["e1"])
    ttl = redis_client.pttl("{t}:e:e1")
    assert 55_000 < ttl <= 60_000


def test_one_round_trip_for_five_thousand_ids(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    dedup = make()
    dedup.claim(dedup.new_tag(), ids("warm-up"))  # scripts loaded
    dedup.delivered(dedup.new_tag(), ["warm-up"])
    tag = dedup.new_tag()
    with count_round_trips() as trips:
        assert dedup.claim(tag, ids(*(f"e{i}" for i in range(5000)))) == "C" * 5000
        dedup.delivered(tag, [f"e{i}" for i in range(5000)])
    assert trips[0] == 2

