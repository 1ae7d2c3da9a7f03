"""The dedup layout without Redis: ids spread over buckets, buckets over a cluster's masters,
the stored layout, the window in which 0.2.0's marks are read."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from consumer.state.dedup_layout import (
    BUCKETS,
    FIELD_BYTES,
    LEGACY_CLOCK_MARGIN_MS,
    SLICES,
    BucketNames,
    Layout,
    by_bucket,
    digest,
)
from consumer.state.redis import Keys


def master_of(slot: int, masters: int) -> int:
    """Which master owns a slot when `redis-cli --cluster create` split the slots evenly."""
    return min(slot * masters // REDIS_CLUSTER_HASH_SLOTS, masters - 1)


def test_each_bucket_tag_sits_in_its_share_of_the_slots() -> None:
    bases = BucketNames(Keys("pisano-sms"), BUCKETS).bases
    assert len(set(bases)) == BUCKETS
    for bucket, base in enumerate(bases):
        slot = key_slot(base.encode())
        assert bucket * REDIS_CLUSTER_HASH_SLOTS // BUCKETS <= slot < (bucket + 1) * REDIS_CLUSTER_HASH_SLOTS // BUCKETS
        assert key_slot(f"{base}:123".encode()) == slot  # a slice hash is in its bucket's slot


@pytest.mark.parametrize("masters", [3, 4, 5, 6, 10])
def test_every_master_gets_its_share_of_the_buckets_within_two(masters: int) -> None:
    bases = BucketNames(Keys("another-prefix"), BUCKETS).bases
    per_master = Counter(master_of(key_slot(b.encode()), masters) for b in bases)
    assert len(per_master) == masters
    assert max(per_master.values()) - min(per_master.values()) <= 2, per_master


def test_ids_spread_over_three_masters_none_above_forty_percent() -> None:
    bases = BucketNames(Keys("pisano-sms"), BUCKETS).bases
    ids = [str(uuid.uuid4()) for _ in range(30_000)] + [f"txn-{n}" for n in range(30_000)]
    rows = by_bucket(ids, BUCKETS)  # the bucket digest(i)[0] % BUCKETS, for all ids in one call
    assert all(n in rows[digest(ids[n])[0] % BUCKETS].indexes for n in range(0, len(ids), 997))
    per_master: Counter[int] = Counter()
    for bucket, r in enumerate(rows):
        per_master[master_of(key_slot(bases[bucket].encode()), 3)] += len(r)
    assert max(per_master.values()) / len(ids) < 0.36, per_master


def test_the_digest_is_fixed_and_keeps_118_bits_of_the_id() -> None:
    bucket, field = digest("e1")
    assert (bucket, field) == digest("e1") and len(field) == FIELD_BYTES
    assert 0 <= bucket < 256 and 256 % BUCKETS == 0  # the bucket is uniform over BUCKETS
    assert digest("e2") != digest("e1")
    # Pinned: another digest would put every id elsewhere, so every replica must compute this one.
    assert digest("e1") == (139, bytes.fromhex("5cc4df7eec7d32a7814eca4af047"))
    # 100,000 ids through by_bucket in one call (what digest computes per id, without building 256
    # rows for each): a call per id made this unit test take 14 s.
    ids = [f"id-{n}" for n in range(100_000)]
    pairs = {(bucket, field) for bucket, rows in enumerate(by_bucket(ids, 256)) for field in rows.fields}
    assert len(pairs) == 100_000
    assert all(digest(i) in pairs for i in ids[::997])  # the same pairs as digest's


def test_the_layout_round_trips_and_a_newer_version_is_refused() -> None:
    layout = Layout(64, 75_600_000, 1_000)
    assert Layout.decode(layout.encode()) == layout
    with pytest.raises(ValueError, match="newer release"):
        Layout.decode(layout.encode().replace('"version": 1', '"version": 2'))
    for foreign in ("[1, 2]", "7", '"layout"'):  # found in review: AttributeError, not a refusal
        with pytest.raises(ValueError, match="not a dedup layout"):
            Layout.decode(foreign)


def test_marks_of_0_2_0_are_read_for_one_horizon_and_a_clock_margin() -> None:
    assert not Layout(64, 1000, 0).legacy_active(now_ms=0)  # none were found at creation
    layout = Layout(64, 1000, 1_000_000)
    assert layout.legacy_active(now_ms=1_000_000 + LEGACY_CLOCK_MARGIN_MS - 1)
    assert not layout.legacy_active(now_ms=1_000_000 + LEGACY_CLOCK_MARGIN_MS)


def test_a_lookup_reads_every_live_slice_and_the_next() -> None:
    horizon = 7 * 86_400_000
    layout = Layout(64, -(-horizon // SLICES), 0)
    assert layout.slices_read(horizon) == SLICES + 2
    assert layout.slices_read(2 * horizon) == 2 * SLICES + 2  # a horizon raised later reads more


def test_the_rows_of_a_bucket_list_each_id_once_with_its_own_field() -> None:
    # Rows hold indexes and fields as two lists: the i-th field is the i-th index's id's.
    ids = [f"evt-{n}" for n in range(3000)] + [str(uuid.uuid4()) for _ in range(3000)]
    rows = by_bucket(ids, BUCKETS)
    assert sorted(i for r in rows for i in r.indexes) == list(range(len(ids)))
    for bucket, r in enumerate(rows):
        assert len(r) == len(r.indexes) == len(r.fields)
        for i, field in zip(r.indexes, r.fields, strict=True):
            first, own = digest(ids[i])
            assert (first % BUCKETS, own) == (bucket, field) and len(field) == FIELD_BYTES
