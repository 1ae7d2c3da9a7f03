"""The dead-letter marks' contract (issue 11, finding 9; consumer/state/dead_letters.py): an origin
acknowledged once is known, a new record at an old origin (a topic created again) is not, marks
are kept per consumer group and dead-letter topic, a confirmed commit removes the marks below it
(their memory is bounded by the records past the commit point), and marks end with the horizon."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.crc import key_slot

from consumer.ingest.records import InboundRecord
from consumer.state.dead_letters import Mark, Origin, RedisDeadLetterMarks


def origin(offset: int, value: bytes = b"v", timestamp: int = 1_800_000_000_000, partition: int = 0) -> Origin:
    return Origin.of(InboundRecord("t", partition, offset, b"k", value, [], (1, timestamp)))


def test_an_acknowledged_origin_is_seen(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks()
    assert marks.seen([origin(1), origin(2)]) == [False, False]
    marks.mark([origin(1)])
    marks.mark([])
    assert marks.seen([origin(1), origin(2)]) == [True, False]
    assert marks.seen([]) == []


def test_another_record_at_the_same_origin_is_not_seen(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks()
    marks.mark([origin(1)])
    # The topic was deleted and created again: offset 1 is another record now.
    assert marks.seen([origin(1, value=b"other"), origin(1, timestamp=1_800_000_000_001)]) == [False, False]


def test_marks_are_kept_per_group_and_dead_letter_topic(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks(group="g", dlq_topic="dlq")
    marks.mark([origin(1)])
    # Another group reads the same topic: its own dead-letter of the record is not suppressed.
    assert make_marks(group="other", dlq_topic="dlq").seen([origin(1)]) == [False]
    assert make_marks(group="g", dlq_topic="another-dlq").seen([origin(1)]) == [False]
    assert make_marks(group="g", dlq_topic="dlq").seen([origin(1)]) == [True]


def test_a_confirmed_commit_removes_the_marks_below_it_only(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks()
    marks.mark([origin(n) for n in range(6)] + [origin(3, partition=1)])
    marks.forget_below({("t", 0): 4})
    marks.forget_below({})
    assert marks.seen([origin(n) for n in range(6)]) == [False] * 4 + [True] * 2
    assert marks.seen([origin(3, partition=1)]) == [True]


def test_marks_end_with_the_horizon(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks(horizon_s=1)
    marks.mark([origin(1)])
    time.sleep(1.1)
    assert marks.seen([origin(1)]) == [False]


def test_a_mark_holds_its_dead_letters_reason(make_marks) -> None:  # type: ignore[no-untyped-def]
    """The partition's next owner ends a record dead-lettered before as it ended (consumer/pipeline.py):
    it loads the marks with their reasons. A mark without one (the previous version's) says None."""
    marks = make_marks()
    marks.mark([origin(n) for n in range(3)], ["throttled", "stale", "ambiguous"])
    marks.mark([origin(5)])
    assert marks.load(("t", 0)) == {0: Mark(origin(0).fingerprint, "throttled", True),
                                    1: Mark(origin(1).fingerprint, "stale", True),
                                    2: Mark(origin(2).fingerprint, "ambiguous", True),
                                    5: Mark(origin(5).fingerprint, None, True)}
    assert marks.load(("t", 1)) == {}
    assert marks.seen([origin(n) for n in range(3)]) == [True] * 3  # looked up as before


def test_a_reason_in_the_score_leaves_the_removal_below_a_commit_exact(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = make_marks()
    marks.mark([origin(n) for n in range(6)], ["stale"] * 6)  # the highest code: scores n + 0.75
    marks.forget_below({("t", 0): 4})
    assert sorted(marks.load(("t", 0))) == [4, 5]
    assert marks.seen([origin(n) for n in range(6)]) == [False] * 4 + [True] * 2


def test_a_dead_letter_about_to_be_produced_is_loaded_as_not_acknowledged(make_marks) -> None:  # type: ignore[no-untyped-def]
    """Noted before it is produced (`sending`): the next owner dead-letters its record again rather
    than send it. Never `seen`: its dead-letter may not be in the topic, so a lookup before a
    produce does not skip it. Once acknowledged, the mark says so."""
    marks = make_marks()
    marks.sending([origin(1), origin(2)], ["throttled", "pisano_error"])
    marks.mark([origin(2)], ["pisano_error"])
    assert marks.load(("t", 0)) == {1: Mark(origin(1).fingerprint, "throttled", False),
                                    2: Mark(origin(2).fingerprint, "pisano_error", True)}
    assert marks.seen([origin(1), origin(2)]) == [False, True]
    marks.forget_below({("t", 0): 2})
    assert marks.load(("t", 0)) == {2: Mark(origin(2).fingerprint, "pisano_error", True)}
    marks.forget_below({("t", 0): 3})
    assert marks.load(("t", 0)) == {}


def _redis(marks: Any) -> RedisDeadLetterMarks:
    if not isinstance(marks, RedisDeadLetterMarks):
        pytest.skip("the key layout is Redis's")
    return marks


def test_each_partitions_marks_are_one_key_of_their_own_hash_slot(make_marks) -> None:  # type: ignore[no-untyped-def]
    marks = _redis(make_marks(group="g", dlq_topic="dlq"))
    marks.mark([origin(n) for n in range(100)] + [origin(1, partition=1)])
    keys = sorted(k.decode() for k in marks.client.scan_iter("*"))
    assert keys == ["{t:dl:g:dlq:t:0}", "{t:dl:g:dlq:t:1}"]  # not one key per record
    slots = {key_slot(k.encode()) for k in keys}
    assert len(slots) == 2 and key_slot(b"{t}") not in slots  # not all in the prefix's slot
    marks.sending([origin(1)], ["throttled"])  # beside the partition's marks, in their slot
    sending = sorted(k.decode() for k in marks.client.scan_iter("*:sending"))
    assert sending == ["{t:dl:g:dlq:t:0}:sending"] and key_slot(sending[0].encode()) == key_slot(b"{t:dl:g:dlq:t:0}")


def test_a_mark_of_the_previous_layout_is_seen_while_the_dedup_layout_reads_them(make_marks) -> None:  # type: ignore[no-untyped-def]
    """0.2.0 wrote one string per record in the prefix's slot,
    `{prefix}:dl:<topic>:<partition>:<offset>`, the fingerprint its value; its marks are read
    as long as the dedup layout reads 0.2.0's."""
    marks = _redis(make_marks())
    marks.client.set("{t}:dl:t:0:1", origin(1).fingerprint, px=60_000)
    marks.client.set("{t}:dl:t:0:2", "1:other-fingerprint", px=60_000)
    assert marks.seen([origin(1), origin(2), origin(3)]) == [True, False, False]


def test_the_previous_layouts_marks_are_not_read_when_the_dedup_layout_says_none_are_left(make_marks) -> None:  # type: ignore[no-untyped-def]
    """A fleet that never ran 0.2.0, or one whose 0.2.0 marks expired: a dead-letter costs no
    lookup of them (consumer/state/dedup_layout.py looks for them once)."""
    marks = _redis(make_marks(previous_release=False))
    marks.client.set("{t}:dl:t:0:1", origin(1).fingerprint, px=60_000)  # by hand: no 0.2.0 replica left
    assert marks.seen([origin(1)]) == [False]


def test_a_previous_versions_mark_over_a_note_keeps_the_notes_reason(make_marks) -> None:  # type: ignore[no-untyped-def]
    """Found by review (a rolling upgrade): a replica of this version noted the dead-letter and died
    before its acknowledgement; a replica of the previous version read the record again, dead-lettered
    it and marked it without a reason, then died before its commit. The reason is the note's: without
    it, the next owner of this version judged the record again and, the storm over, sent it."""
    marks = make_marks()
    marks.sending([origin(1), origin(2)], ["throttled", "throttled"])
    marks.mark([origin(1), origin(2, value=b"another record")])  # the previous version's: integer scores
    assert marks.load(("t", 0)) == {1: Mark(origin(1).fingerprint, "throttled", True),
                                    2: Mark(origin(2, value=b"another record").fingerprint, None, True)}


def test_a_score_that_is_not_finite_is_a_mark_without_a_reason(make_marks) -> None:  # type: ignore[no-untyped-def]
    """Found by review: a score of inf or -inf (written by hand, by a bug) raised OverflowError out
    of every load: the partition was never fetched again, on every replica given it."""
    marks = _redis(make_marks())
    marks.client.zadd("{t:dl:g:dlq:t:0}", {f"1:{origin(1).fingerprint}": "inf"})
    marks.client.zadd("{t:dl:g:dlq:t:0}:sending", {f"2:{origin(2).fingerprint}": "-inf"})
    marks.mark([origin(3)], ["stale"])
    assert marks.load(("t", 0)) == {1: Mark(origin(1).fingerprint, None, True),
                                    2: Mark(origin(2).fingerprint, None, False),
                                    3: Mark(origin(3).fingerprint, "stale", True)}


def test_a_load_reads_every_mark_whatever_its_pages(make_marks) -> None:  # type: ignore[no-untyped-def]
    """Read in pages (`read_sets`: 3 members a round trip here), a partition's marks and notes load
    as read whole: pages that end inside a run of one score, an infinite score (written by hand)."""
    marks = make_marks(page=3)
    marks.mark([origin(n) for n in range(10)], ["throttled"] * 10)
    marks.sending([origin(n) for n in range(8, 14)], ["stale"] * 6)
    expected = {n: Mark(origin(n).fingerprint, "throttled", True) for n in range(10)} | \
        {n: Mark(origin(n).fingerprint, "stale", False) for n in range(10, 14)}
    assert marks.load(("t", 0)) == expected
    if isinstance(marks, RedisDeadLetterMarks):  # one score for many members, and an infinite one
        marks.client.zadd("{t:dl:g:dlq:t:1}", {f"{n}:f{n}": 5 for n in range(7)} | {"9:f": "inf"})
        assert marks.load(("t", 1)) == {n: Mark(f"f{n}", None, True) for n in range(7)} | {9: Mark("f", None, True)}


def test_a_partition_over_the_bound_is_not_loaded_and_its_key_named(make_marks) -> None:  # type: ignore[no-untyped-def]
    """More marks than a partition of this consumer ever holds (`MAX_PARTITION_MARKS`; 4 here): the
    load says so (OversizeStateError, which no wait ends) and names the key, before reading it;
    the partition's marks are still looked up, the other partitions' loaded."""
    from consumer.errors import OversizeStateError
    from consumer.state.redis_errors import passes

    marks = make_marks(most=4, page=2)
    marks.mark([origin(n) for n in range(4)] + [origin(n, partition=1) for n in range(5)], ["throttled"] * 9)
    assert sorted(marks.load(("t", 0))) == [0, 1, 2, 3]  # at the bound: loaded
    with pytest.raises(OversizeStateError) as raised:
        marks.load(("t", 1))
    text = str(raised.value)
    assert "5 dead-letter marks of t[1]" in text and "(4)" in text and "delete that key" in text
    assert not passes(raised.value)  # not an outage: its partition does not wait for it
    if isinstance(marks, RedisDeadLetterMarks):
        assert "{t:dl:g:dlq:t:1}" in text
    assert marks.seen([origin(4, partition=1)]) == [True]
    marks.sending([origin(n) for n in range(4, 9)], ["stale"] * 5)  # the notes have the same bound
    with pytest.raises(OversizeStateError, match=r"5 dead-letter marks of t\[0\]"):
        marks.load(("t", 0))


def test_a_commit_landing_while_a_load_reads_its_pages_loses_no_mark_past_it(make_marks) -> None:  # type: ignore[no-untyped-def]
    """The previous owner's confirmed commit removes the marks below it (`forget_below`) while the
    new owner reads its pages (3 members a round trip here): every mark at or past the commit
    loads (tests/unit/state/test_marks_pages.py; before, the first mark past the commit was
    skipped). Scores past 2**53 and infinite ones (written by hand) page as the others."""
    marks, previous = make_marks(page=3), make_marks()
    marks.mark([origin(n) for n in range(10)], ["throttled"] * 10)
    if isinstance(marks, RedisDeadLetterMarks):
        marks.client.zadd("{t:dl:g:dlq:t:0}",
                          {"20:a": 1e16, "21:b": 1e16, "22:c": 1e16 + 2, "23:d": "inf", "24:e": "inf"})
        client, trips = marks.client, [0]

        class Between:  # another client's commit lands after the first round trip
            def pipeline(self, transaction: bool = False) -> Any:
                pipe = client.pipeline(transaction=transaction)
                execute = pipe.execute

                def then() -> Any:
                    replies = execute()
                    trips[0] += 1
                    if trips[0] == 1:
                        previous.forget_below({("t", 0): 5})
                    return replies

                pipe.execute = then
                return pipe

        marks.client = Between()
    else:
        previous.forget_below({("t", 0): 5})
    loaded = marks.load(("t", 0))
    assert {n for n in loaded if 5 <= n < 10} == set(range(5, 10))
    if isinstance(marks, RedisDeadLetterMarks):
        assert {n for n in loaded if n >= 20} == set(range(20, 25))
