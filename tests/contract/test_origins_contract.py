"""The buckets' origins (consumer/state/origins.py) on memory, a single Redis and a Redis Cluster:
written once, kept as they are, new when lost; a dedup origin carries the layout, which a replica
finding the layout key lost restores from it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from consumer.errors import StateStoreError
from consumer.state.cooldown import bucket_tags
from consumer.state.dedup import ClaimRequest, ClaimStatus, RedisDedup, Settlement
from consumer.state.dedup_layout import SENTINEL, load_layout
from consumer.state.origins import (
    CONTACTS,
    DEDUP,
    Buckets,
    MemoryOrigins,
    Origin,
    OriginWatch,
    RedisOrigins,
    origin_key,
)
from consumer.state.redis import Keys
from consumer.state.witness import parse_stamp
from tests.conftest import flushed_client
from tests.contract.conftest import IMPLEMENTATIONS

SINCE = re.compile(r"([0-9]{13})-[0-9a-f]{16}")


class Variant:
    """One variant's store, how it loses every key, and (for Redis) the client."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.name = request.param
        self.client: Any = None if self.name == "memory" else flushed_client(request, self.name)
        self.store = MemoryOrigins() if self.client is None else RedisOrigins(self.client)

    def lose(self, keys: list[str]) -> None:
        if isinstance(self.store, MemoryOrigins):
            self.store.lose(keys)
        else:
            for key in keys:
                self.client.delete(key)


@pytest.fixture(params=IMPLEMENTATIONS)
def variant(request: pytest.FixtureRequest) -> Variant:
    return Variant(request)


def since(origins: list[Origin | StateStoreError]) -> list[str]:
    assert all(isinstance(origin, Origin) for origin in origins), origins
    return [origin.since for origin in origins if isinstance(origin, Origin)]


def checks(origins: list[Origin | StateStoreError]) -> list[int]:
    return [origin.checks for origin in origins if isinstance(origin, Origin)]


def test_an_origin_is_written_once_and_kept_and_each_call_counts_one_check(variant: Variant) -> None:
    tags = bucket_tags("t")
    asked = [(origin_key(tag), "") for tag in tags]
    first = variant.store.origins(asked)
    assert len(set(since(first))) == len(tags)  # each its own random part
    assert all(SINCE.fullmatch(value) for value in since(first))
    assert checks(first) == [1] * len(tags)
    again = variant.store.origins(asked)
    assert since(again) == since(first) and checks(again) == [2] * len(tags)
    if variant.client is not None:  # what another replica's client reads
        other = RedisOrigins(variant.client).origins(asked)
        assert since(other) == since(first) and checks(other) == [3] * len(tags)


def test_a_lost_origin_is_written_anew_with_another_value_and_only_that_one(variant: Variant) -> None:
    tags = bucket_tags("t")
    asked = [(origin_key(tag), "") for tag in tags]
    first = since(variant.store.origins(asked))
    variant.lose([origin_key(tags[3]), origin_key(tags[60])])
    again = since(variant.store.origins(asked))
    assert [i for i, (a, b) in enumerate(zip(first, again, strict=True)) if a != b] == [3, 60]


def test_the_watch_reports_what_was_lost_on_every_variant(variant: Variant) -> None:
    dedup_tags = [f"{{t:d:{b}:0}}" for b in range(4)]
    replica = OriginWatch(variant.store, [lambda: Buckets(DEDUP, dedup_tags, "{}"),
                                          lambda: Buckets(CONTACTS, bucket_tags("t"))])
    assert replica.check() == []
    variant.lose([origin_key(dedup_tags[1])] + [origin_key(tag) for tag in bucket_tags("t")[:7]])
    assert [(loss.state, loss.lost, loss.buckets) for loss in replica.check()] == [(DEDUP, 1, 4), (CONTACTS, 7, 64)]


@pytest.mark.parametrize("variant", ["redis", "cluster"], indirect=True)
def test_a_dedup_origin_carries_the_layout_and_a_lost_layout_key_is_restored_from_it(variant: Variant) -> None:
    """With every slice expired (an idle fleet) the origins are the only copies of the layout."""
    dedup = RedisDedup(variant.client, Keys("t"), lease_ms=60_000, horizon_s=3600)
    tags, layout_copy = dedup.buckets()
    replica = OriginWatch(variant.store, [lambda: Buckets(DEDUP, tags, layout_copy)])
    replica.check()
    assert variant.client.hget(origin_key(tags[0]), SENTINEL).decode() == layout_copy
    variant.client.delete(Keys("t").dedup_layout())
    cluster = variant.name == "cluster"
    assert load_layout(variant.client, Keys("t"), 3600_000, cluster=cluster).encode() == layout_copy


def _snapshot(client: Any) -> list[tuple[bytes, int, bytes]]:
    """Every key as a snapshot holds it (its DUMP and time to live), as an RDB file does."""
    return [(key, max(0, client.pttl(key)), client.dump(key)) for key in client.scan_iter(count=1000)]


def _rolled_back(client: Any, snapshot: list[tuple[bytes, int, bytes]]) -> None:
    """Redis back at the snapshot: a restart from its last RDB (no AOF, `pisano-sms check`'s
    persistence warning), a restore from a backup, or a failover to a replica that lagged."""
    client.flushall()
    for key, ttl, dumped in snapshot:
        client.restore(key, ttl, dumped)


@pytest.mark.parametrize("variant", ["redis", "cluster"], indirect=True)
def test_redis_rolled_back_to_an_earlier_snapshot_is_a_loss(variant: Variant) -> None:
    dedup = RedisDedup(variant.client, Keys("t"), lease_ms=60_000, horizon_s=3600)
    replica = OriginWatch(variant.store, [lambda: Buckets(DEDUP, *dedup.buckets())])

    def deliver(event_id: str) -> None:
        tag = dedup.new_tag()
        assert dedup.claim(tag, [ClaimRequest(event_id)]) == [ClaimStatus.CLAIMED]
        dedup.settle(Settlement.DELIVERED, tag, [event_id])

    deliver("before-the-snapshot")
    assert replica.check() == []
    snapshot = _snapshot(variant.client)
    deliver("after-the-snapshot")
    assert replica.check() == []
    assert replica.check() == []  # a snapshot older than the check before the last
    _rolled_back(variant.client, snapshot)
    # The loss is real: the id delivered after the snapshot may be sent again
    assert dedup.claim(dedup.new_tag(), [ClaimRequest("after-the-snapshot")]) == [ClaimStatus.CLAIMED]
    losses = replica.check()
    assert [(loss.state, loss.lost, loss.rolled_back) for loss in losses] == [(DEDUP, 64, True)]
    assert "went back to a state of 64 of 64 buckets of the dedup state" in losses[0].message()
    assert replica.check() == []  # said once


@pytest.mark.parametrize("variant", ["redis", "cluster"], indirect=True)
def test_redis_that_lost_only_this_replicas_last_check_says_nothing(variant: Variant) -> None:
    """An AOF written every second, or a failover's replication lag, loses the last second or so:
    not what the rollback check says (README: a Redis restarted with its data says nothing)."""
    tags = bucket_tags("t")
    replica = OriginWatch(variant.store, [lambda: Buckets(CONTACTS, tags)])
    replica.check()
    replica.check()
    snapshot = _snapshot(variant.client)
    replica.check()
    _rolled_back(variant.client, snapshot)
    assert replica.check() == []
    assert replica.check() == []


@pytest.mark.parametrize("variant", ["redis", "cluster"], indirect=True)
def test_an_origin_that_cannot_be_read_does_not_hide_the_losses_of_the_others(variant: Variant) -> None:
    """One refused call (a key of another type written by hand; on a cluster a master down while
    the others serve) used to fail the whole check, every time: no loss anywhere was said again."""
    tags = bucket_tags("t")
    replica = OriginWatch(variant.store, [lambda: Buckets(CONTACTS, tags)])
    replica.check()
    variant.client.delete(origin_key(tags[0]))
    variant.client.set(origin_key(tags[0]), "not a hash")  # WRONGTYPE for its HSETNX
    variant.lose([origin_key(tags[9])])
    assert [(loss.state, loss.lost) for loss in replica.check()] == [(CONTACTS, 1)]
    assert replica.unread is not None and "WRONGTYPE" in replica.unread


@pytest.mark.parametrize("variant", ["redis", "cluster"], indirect=True)
def test_a_dedup_origin_left_without_the_layout_copy_does_not_stop_the_layout_being_restored(
        variant: Variant) -> None:
    """The origins are written by plain commands, not atomically: `HSETNX #` can fail while the
    bucket's `HSETNX since` succeeds (on a cluster, the commands that failed in a failover are sent
    again one by one, the first out of retries before the replica is promoted, the next after; on
    a single Redis, keys deleted between two reads of the pipeline). Such an origin is no mark: a
    replica that finds the layout key lost must take the copy from a hash that holds one, not
    refuse to start (`dedup marks exist ... restore ... from a backup`) until a running replica's
    next check writes the copy, which none does if every replica restarted."""
    dedup = RedisDedup(variant.client, Keys("t"), lease_ms=60_000, horizon_s=3600)
    tags, layout_copy = dedup.buckets()
    OriginWatch(variant.store, [lambda: Buckets(DEDUP, tags, layout_copy)]).check()
    for tag in tags[:-1]:  # one bucket keeps its copy
        variant.client.hdel(origin_key(tag), SENTINEL)
    variant.client.delete(Keys("t").dedup_layout())
    cluster = variant.name == "cluster"
    assert load_layout(variant.client, Keys("t"), 3600_000, cluster=cluster).encode() == layout_copy


def test_the_kept_stamp_reads_back_as_written_and_is_lost_with_the_state(variant: Variant) -> None:
    key = Keys("t").witnessed()
    assert variant.store.witnessed(key) is None
    variant.store.keep_witnessed(key, "pisano-sms/1 dedup=1.abcdefabcdef.00.-")
    assert variant.store.witnessed(key) == "pisano-sms/1 dedup=1.abcdefabcdef.00.-"
    variant.store.keep_witnessed(key, "pisano-sms/1")  # the next start's
    assert variant.store.witnessed(key) == "pisano-sms/1"
    variant.lose([key])
    assert variant.store.witnessed(key) is None


def test_a_start_after_a_loss_says_it_once_and_keeps_its_stamp_for_the_next(
        variant: Variant, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch over each store: a loss while no replica ran, witnessed by a commit's stamp."""
    # Numbered origins: a random one would share the lost one's byte of the stamp once in 256.
    numbers = iter(range(1, 1000))
    monkeypatch.setattr("consumer.state.origins.new_since", lambda: f"1800000000000-{next(numbers):016x}")
    tags = bucket_tags("t")
    keys = [origin_key(tag) for tag in tags]

    def replica() -> OriginWatch:
        return OriginWatch(variant.store, [lambda: Buckets(CONTACTS, tags)], witnessed_key=Keys("t").witnessed())

    first = replica()
    first.witness({})
    for _ in range(3):
        assert first.check() == []
    stamp = first.stamp
    assert stamp is not None
    variant.lose(keys[:5])
    second = replica()
    second.witness({CONTACTS: list(parse_stamp(stamp).values())})
    assert [(loss.state, loss.lost, loss.witnessed) for loss in second.check()] == [(CONTACTS, 5, True)]
    third = replica()
    third.witness({CONTACTS: list(parse_stamp(stamp).values())})
    assert third.check() == []  # the second kept its stamp: the loss is said once
