"""Deduplication on a real single Redis: the layout (buckets, time slices, digests), its cost in
round trips and bytes, and 0.2.0's marks honoured after an upgrade."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from consumer.app import State, build_dead_letter_marks
from consumer.config.settings import Settings
from consumer.errors import StateStoreError
from consumer.ingest.records import InboundRecord
from consumer.state import dedup as dedup_module
from consumer.state.dead_letters import Origin
from consumer.state.dedup import ClaimRequest, ClaimStatus, RedisDedup, Settlement
from consumer.state.dedup_layout import BUCKETS, SLICES, Layout, digest
from consumer.state.redis import Keys, connect
from tests.conftest import Stack
from tests.support.redis_trips import count_round_trips

SETTINGS = Settings(pisano_api_token="t", dlq_topic="dlq", kafka_group_id="g")


@pytest.fixture
def make(stack: Stack, redis_client) -> Callable[..., RedisDedup]:  # type: ignore[no-untyped-def]
    def build(lease_ms: int = 60_000, horizon_s: int = 3600) -> RedisDedup:
        return RedisDedup(connect(stack.redis_url), Keys("t"), lease_ms=lease_ms, horizon_s=horizon_s)

    return build


def ids(*names: str, replay_of: str | None = None) -> list[ClaimRequest]:
    return [ClaimRequest(n, replay_of) for n in names]


def codes(statuses: list[ClaimStatus]) -> str:
    return "".join(s.value for s in statuses)


def slice_keys(redis_client: Any) -> list[bytes]:
    return list(redis_client.scan_iter(match="{t:d:*", count=1000))


def marks_in(redis_client: Any, key: bytes) -> dict[bytes, bytes]:
    """A slice hash's marks, without the field that keeps it out of the listpack encoding."""
    return {f: v for f, v in redis_client.hgetall(key).items() if f != b"#"}


def test_a_mark_lives_in_its_slice_hash_for_the_horizon_plus_at_most_one_slice(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    dedup = make(horizon_s=60)
    tag = dedup.new_tag()
    dedup.claim(tag, ids("e1"))
    dedup.settle(Settlement.DELIVERED, tag, ["e1"])
    (key,) = slice_keys(redis_client)
    slice_ms = 60_000 // SLICES
    assert 60_000 - 1000 < redis_client.pttl(key) <= 60_000 + slice_ms
    assert list(marks_in(redis_client, key).values()) == [b"d"]  # one 14-byte field, one byte of value
    assert [len(f) for f in marks_in(redis_client, key)] == [14]
    assert redis_client.object("encoding", key) == b"hashtable"  # O(1) per field from the first mark


def test_one_round_trip_for_five_thousand_ids(make) -> None:  # type: ignore[no-untyped-def]
    dedup = make()
    dedup.claim(dedup.new_tag(), ids("warm-up"))  # layout read and scripts loaded
    dedup.settle(Settlement.DELIVERED, dedup.new_tag(), ["warm-up"])
    tag = dedup.new_tag()
    with count_round_trips() as trips:
        assert dedup.claim(tag, ids(*(f"e{i}" for i in range(5000)))) == [ClaimStatus.CLAIMED] * 5000
        dedup.settle(Settlement.DELIVERED, tag, [f"e{i}" for i in range(5000)])
    assert trips[0] == 2


def test_a_batch_spreads_over_every_bucket_and_statuses_come_back_in_request_order(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    dedup = make()
    delivered = [f"d{i}" for i in range(300)]
    tag = dedup.new_tag()
    dedup.claim(tag, ids(*delivered))
    dedup.settle(Settlement.DELIVERED, tag, delivered)
    mixed = [name for pair in zip(delivered, (f"n{i}" for i in range(300)), strict=True) for name in pair]
    assert codes(dedup.claim(dedup.new_tag(), ids(*mixed))) == "DC" * 300
    assert len(slice_keys(redis_client)) == BUCKETS  # one slice hash per bucket so far


def test_marks_take_a_third_of_the_memory_of_0_2_0s_keys(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    # 40,000 marks: about 625 per bucket hash, past the compact small-hash encoding, as in
    # production. 0.2.0 measured 104 bytes of MEMORY USAGE (165 of used_memory) per mark.
    dedup = make()
    names = [f"7f3c9a10-{n:04x}-4b2e-9d51-0c6e{n:08x}" for n in range(40_000)]
    for first in range(0, len(names), 5000):
        tag = dedup.new_tag()
        dedup.claim(tag, ids(*names[first:first + 5000]))
        dedup.settle(Settlement.DELIVERED, tag, names[first:first + 5000])
    used = sum(redis_client.memory_usage(k, samples=0) for k in slice_keys(redis_client))
    assert used / len(names) < 70, used / len(names)


def test_a_digest_collision_never_sends_twice(make, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # Two ids share a mark only if 118 bits of their digests collide (dedup_layout.py). Should it
    # happen, the later id is held back, skipped or dead-lettered as ambiguous, never sent again.
    real = dedup_module.by_bucket
    monkeypatch.setattr(dedup_module, "by_bucket",
                        lambda event_ids, buckets, *_: real(["twin" if e in ("a", "b") else e for e in event_ids],
                                                                    buckets))
    a, b = make(), make()
    tag = a.new_tag()
    assert codes(a.claim(tag, ids("a"))) == "C"
    assert codes(b.claim(b.new_tag(), ids("b"))) == "H"
    a.settle(Settlement.DELIVERED, tag, ["a"])
    assert codes(b.claim(b.new_tag(), ids("b"))) == "D"


def test_the_first_replica_fixes_the_layout_for_the_fleet(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    first, second = make(horizon_s=3600), make(horizon_s=7200)  # DEDUP_HORIZON_S changed on one
    tag = first.new_tag()
    first.claim(tag, ids("e1"))
    first.settle(Settlement.DELIVERED, tag, ["e1"])
    assert codes(second.claim(second.new_tag(), ids("e1"))) == "D"  # same slices, same keys
    layout = Layout.decode(redis_client.get(Keys("t").dedup_layout()))
    assert layout == Layout(BUCKETS, 3600_000 // SLICES, 0)
    tag = second.new_tag()
    second.claim(tag, ids("e2"))
    second.settle(Settlement.DELIVERED, tag, ["e2"])
    ttls = [redis_client.pttl(k) for k in slice_keys(redis_client)]
    assert max(ttls) > 7000_000  # the longer horizon keeps the slice it wrote to; never shortened


def test_a_lost_layout_key_is_restored_from_the_marks_copy(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    first = make(horizon_s=3600)
    tag = first.new_tag()
    first.claim(tag, ids("e1"))
    first.settle(Settlement.DELIVERED, tag, ["e1"])
    layout = redis_client.get(Keys("t").dedup_layout())
    redis_client.delete(Keys("t").dedup_layout())
    # A replica with another horizon would have sliced time otherwise, and missed the mark.
    later = make(horizon_s=7200)
    assert codes(later.claim(later.new_tag(), ids("e1"))) == "D"
    assert redis_client.get(Keys("t").dedup_layout()) == layout


def test_a_layout_from_a_newer_release_fails_closed(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    newer = Layout(BUCKETS, 1000, 0).encode().replace('"version": 1', '"version": 2')
    redis_client.set(Keys("t").dedup_layout(), newer)
    with pytest.raises(StateStoreError, match="newer release"):
        make().claim("o|n", ids("e1"))


def test_a_flushed_script_cache_is_reloaded(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    dedup = make()
    dedup.claim(dedup.new_tag(), ids("e1"))
    redis_client.script_flush()  # a restart or a failover to a server without the scripts
    assert codes(dedup.claim(dedup.new_tag(), ids("e1", "e2"))) == "HC"


class TestMarksOf020:
    """0.2.0 kept one string key per id (`Keys.event`). After the upgrade they are honoured for one
    horizon: read where no slice holds the id, never written."""

    def write_0_2_0_marks(self, redis_client: Any, lease_ms: int) -> dict[str, str]:
        now = int(time.time() * 1000)
        marks = {"delivered": "d", "unknown": "u|0ld0wner000|00000001", "legacy-unknown": "u",
                 "claimed": f"c|0ld0wner000|00000002|{now}", "lapsed": f"c|0ld0wner000|00000003|{now - lease_ms - 1}"}
        for name, value in marks.items():
            redis_client.set(Keys("t").event(name), value, px=3_600_000)
        return marks

    def test_each_kind_of_mark_counts_as_it_did(self, make, redis_client) -> None:  # type: ignore[no-untyped-def]
        marks = self.write_0_2_0_marks(redis_client, lease_ms=60_000)
        dedup = make()
        assert dedup.state("delivered") == "d" and dedup.state("claimed") == marks["claimed"]
        found = dedup.claim(dedup.new_tag(), ids("delivered", "unknown", "legacy-unknown", "claimed", "lapsed", "new"))
        assert codes(found) == "DUUHUC"
        assert found.attempts == ["", "0ld0wner000|00000001", "-", "", "0ld0wner000|00000003", ""]
        # The lapsed claim is unknown from now on, in the new layout; 0.2.0's keys stay as they were.
        assert dedup.state("lapsed") == "u|0ld0wner000|00000003"
        assert redis_client.get(Keys("t").event("lapsed")).decode() == marks["lapsed"]
        assert codes(dedup.claim(dedup.new_tag(), ids("lapsed"))) == "U"

    def test_a_replay_of_the_named_attempt_may_send_and_then_it_is_delivered(self, make, redis_client) -> None:  # type: ignore[no-untyped-def]
        self.write_0_2_0_marks(redis_client, lease_ms=60_000)
        dedup = make()
        assert codes(dedup.claim(dedup.new_tag(), ids("unknown", replay_of="someone|else"))) == "U"
        tag = dedup.new_tag()
        assert codes(dedup.claim(tag, ids("unknown", "delivered", replay_of="0ld0wner000|00000001"))) == "CD"
        dedup.settle(Settlement.UNKNOWN, tag, ["unknown", "delivered"])  # never downgrades 0.2.0's 'd'
        assert dedup.state("delivered") == "d" and dedup.state("unknown") == f"u|{tag}"
        replay = dedup.new_tag()
        assert codes(dedup.claim(replay, ids("unknown", replay_of=tag))) == "C"
        dedup.settle(Settlement.DELIVERED, replay, ["unknown"])
        assert codes(dedup.claim(dedup.new_tag(), ids("unknown", replay_of=tag))) == "D"

    def test_they_are_not_read_when_none_existed_at_the_upgrade(self, make, redis_client) -> None:  # type: ignore[no-untyped-def]
        # A fleet that started on 0.3.0 never reads them: a 0.2.0 replica must not run beside it.
        dedup = make()
        dedup.claim(dedup.new_tag(), ids("first"))
        assert Layout.decode(redis_client.get(Keys("t").dedup_layout())).legacy_until_ms == 0
        assert not dedup.reads_previous_release()
        self.write_0_2_0_marks(redis_client, lease_ms=60_000)
        assert codes(dedup.claim(dedup.new_tag(), ids("delivered"))) == "C"

    def test_the_dead_letter_marks_read_0_2_0s_as_long_as_the_layout_does(self, make, redis_client) -> None:  # type: ignore[no-untyped-def]
        """One look for both kinds of 0.2.0 mark, made when the layout is created: a prefix where
        0.2.0 only dead-lettered (no dedup mark left) reads its dead-letter marks; one where it left
        none never looks them up, not even for a mark written later."""
        mark = Origin.of(InboundRecord("t", 0, 5, b"k", b"v", [], (1, 1_800_000_000_000)))
        for prefix, left_by_0_2_0 in (("t", True), ("fresh", False)):
            keys = Keys(prefix)
            if left_by_0_2_0:
                redis_client.set(keys.dead_letter("t", 0, 5), mark.fingerprint, px=3_600_000)
            dedup = RedisDedup(redis_client, keys, lease_ms=60_000, horizon_s=3600)
            marks = build_dead_letter_marks(SETTINGS, State(redis_client, keys), dedup)
            # Before the first claim loads the layout, 0.2.0's marks are read (the poll loop never
            # waits for the layout's creation).
            assert dedup.reads_previous_release() and marks.seen([mark]) == [left_by_0_2_0]
            dedup.claim(dedup.new_tag(), ids("first"))  # the layout is made here
            if not left_by_0_2_0:
                redis_client.set(keys.dead_letter("t", 0, 5), mark.fingerprint, px=3_600_000)
            assert marks.seen([mark]) == [left_by_0_2_0]
            assert dedup.reads_previous_release() is left_by_0_2_0


def test_digests_of_ids_differ_from_the_ids(make, redis_client) -> None:  # type: ignore[no-untyped-def]
    # No event id appears in Redis: only 14 bytes of its digest.
    dedup = make()
    tag = dedup.new_tag()
    dedup.claim(tag, ids("txn-0001"))
    dedup.settle(Settlement.DELIVERED, tag, ["txn-0001"])
    assert not [k for k in redis_client.scan_iter(count=1000) if b"txn-0001" in k]
    assert [f for k in slice_keys(redis_client) for f in marks_in(redis_client, k)] == [digest("txn-0001")[1]]
