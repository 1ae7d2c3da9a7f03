"""A position moved back within one assignment (an offset reset: `Pipeline._end_read_again`): the
records read again must end with the one outcome they had, whatever the marks' state at that
moment. Found by review: the receipt marks were loaded at assignment only, and the dead-letter
marks were not loaded at all while they paused after a Redis failure."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition

from consumer.delivery.outcome import Outcome
from consumer.pipeline import Pipeline
from consumer.state.memory import MemoryDeadLetterMarks, MemoryReceiptMarks
from tests.support.fake_kafka import FakeConsumer
from tests.unit.test_pipeline_review import (
    TopicProducer,
    good,
    owner,
    receipts_of,
    receipts_owner,
    throttled_past_offset_0,
)

RECORDS = [good(n) for n in range(4)]


def _assigned(loop: Pipeline, consumer: FakeConsumer) -> None:
    consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    loop._on_assign(consumer, [TopicPartition("t", 0)])


def _with_receipts(*, marks_paused: bool = False) -> tuple[Pipeline, FakeConsumer, TopicProducer]:
    """A replica with receipts and both marks, which delivered offset 0 of RECORDS and dead-lettered
    1 and 2 (a 429 storm): each has its receipt, acknowledged, and marked unless `marks_paused` (a
    failed write of the receipt marks a moment before: they pause for MARKS_PAUSE_S)."""
    loop, consumer, producer = receipts_owner(MemoryReceiptMarks())
    loop.dlq.marks = MemoryDeadLetterMarks(horizon_s=3600)
    _assigned(loop, consumer)
    if marks_paused:
        assert loop.receipts is not None
        loop.receipts._marks_paused_until = time.monotonic() + 30
    consumer.queue = list(RECORDS[:3])
    for _ in range(2):
        loop._step()
    events = loop.delivery.drop(lambda e: True)
    loop.outcomes.put(Outcome("delivered", [e for e in events if e.offset == 0],
                              accepted_at_ms=int(time.time() * 1000)))
    loop.delivery.add([e for e in events if e.offset > 0])
    throttled_past_offset_0(loop, consumer, [])
    assert receipts_of(producer) == [(0, "accepted", None), (1, "dead_lettered", "throttled"),
                                     (2, "dead_lettered", "throttled")]
    return loop, consumer, producer


def _read_again_from_0(loop: Pipeline, consumer: FakeConsumer) -> None:
    """The position moves back to 0 (an offset reset): RECORDS read again, offset 3 for the first
    time; the copy of 0 is found delivered (dedup: `skipped`), 3 is accepted."""
    consumer.queue = list(RECORDS)
    for _ in range(3):
        loop._step()
    assert loop.tracker.moves_back == 1
    events = loop.delivery.drop(lambda e: True)
    assert sorted(e.offset for e in events) == [0, 3], "records handed to the batches"
    loop.outcomes.put(Outcome("skipped", [e for e in events if e.offset == 0]))
    loop.outcomes.put(Outcome("delivered", [e for e in events if e.offset == 3],
                              accepted_at_ms=int(time.time() * 1000)))
    for _ in range(3):
        loop._step()


def test_records_read_again_after_a_move_back_get_no_second_receipt() -> None:
    """Before: the receipts written since the assignment were marked in Redis but not in the marks
    the replica holds (loaded at the assignment), so each record read again got a second receipt:
    `duplicate` for the delivered one, `dead_lettered` again for the dead-lettered ones."""
    loop, consumer, producer = _with_receipts()
    _read_again_from_0(loop, consumer)
    assert receipts_of(producer)[3:] == [(3, "accepted", None)], "receipts written after the move back"
    loop._commit(sync=True, all_known=True)
    assert consumer.committed == {("t", 0): 4}


def test_records_read_again_while_the_receipt_marks_pause_wait_for_them() -> None:
    """Redis failed a moment before the move back (the receipt marks pause for MARKS_PAUSE_S), and
    the receipts acknowledged meanwhile were never marked in Redis: the copies' receipts wait for
    the marks (their records uncommitted), then none is written twice."""
    loop, consumer, producer = _with_receipts(marks_paused=True)
    consumer.queue = list(RECORDS)  # the position moved back to 0, the marks still paused
    for _ in range(3):
        loop._step()
    events = loop.delivery.drop(lambda e: True)
    assert sorted(e.offset for e in events) == [0, 3]
    loop.outcomes.put(Outcome("skipped", [e for e in events if e.offset == 0]))
    loop.outcomes.put(Outcome("delivered", [e for e in events if e.offset == 3],
                              accepted_at_ms=int(time.time() * 1000)))
    for _ in range(3):
        loop._step()
    assert len(receipts_of(producer)) == 3, "receipts written while the marks could not be loaded"
    assert consumer.paused  # not fetched meanwhile: what waits is one consume call's
    loop._commit(sync=True, all_known=True)
    assert consumer.committed.get(("t", 0), 0) == 0  # the copies wait, uncommitted
    assert loop.receipts is not None
    loop.receipts._marks_paused_until = 0.0  # MARKS_PAUSE_S later
    for _ in range(3):
        loop._step()
    assert not consumer.paused
    assert receipts_of(producer)[3:] == [(3, "accepted", None)], "receipts written after the move back"
    loop._commit(sync=True, all_known=True)
    assert consumer.committed == {("t", 0): 4}


def test_a_record_dead_lettered_before_a_move_back_while_the_marks_pause_is_held_not_sent() -> None:
    """Before: `DeadLetterQueue.assigned(now=True)` loads nothing while the marks pause after a
    Redis failure (Redis back a second later, the pause lasts MARKS_PAUSE_S); the partition was
    held from the next fetch, but the copies that consume call took went on: the records this
    replica had dead-lettered (a 429 storm, over now) were handed to the batches and sent, one
    record with a dead-letter and an SMS. They now wait, undecoded, for the marks."""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    loop, consumer, producer = owner(marks)
    _assigned(loop, consumer)
    throttled_past_offset_0(loop, consumer, RECORDS[:3])  # 1 and 2 dead-lettered, 0 waits
    assert len(marks) == 2 and len(producer.produced) == 2
    first_epoch = loop.tracker.epoch(("t", 0))
    assert first_epoch is not None
    loop.dlq._marks_paused_until = loop.dlq._clock() + 30  # a failed write of the marks
    loop.dlq._marks_away = True
    consumer.queue = list(RECORDS[1:])  # the position moved back to 1 (an offset reset)
    for _ in range(3):
        loop._step()
    assert loop.tracker.moves_back == 1
    handed = sorted(e.offset for e in loop.delivery.drop(lambda e: True))
    assert 1 not in handed and 2 not in handed, f"dead-lettered records handed to the batches: {handed}"
    assert handed == [], "records of a partition whose marks are not loaded taken"
    assert consumer.paused
    loop.dlq._marks_paused_until = 0.0  # MARKS_PAUSE_S later
    for _ in range(3):
        loop._step()
    assert not consumer.paused
    waiting = loop.delivery.drop(lambda e: True)
    assert [e.offset for e in waiting] == [3]  # read for the first time
    assert len(producer.produced) == 2  # 1 and 2 not dead-lettered twice
    loop.outcomes.put(Outcome("delivered", waiting, accepted_at_ms=int(time.time() * 1000)))
    loop._step()
    loop.tracker.finish(("t", 0), 0, first_epoch)  # 0 (below the new position) is delivered at last
    loop._commit(sync=True, all_known=True)
    assert consumer.committed == {("t", 0): 4}


def test_a_dead_letter_acknowledged_while_the_marks_pause_is_not_written_twice_after_a_move_back() -> None:
    """Before: an acknowledgement served while the marks paused was not marked (the pause drops
    it), so the reload after a move back found only its note: the record read again was
    dead-lettered a second time. This replica knows it was acknowledged: it ends at once."""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    loop, consumer, producer = owner(marks)
    _assigned(loop, consumer)
    producer.poll = lambda timeout=0: 0  # type: ignore[method-assign]  # acknowledged later
    throttled_past_offset_0(loop, consumer, RECORDS[:3])  # 1 and 2 noted and produced
    assert len(producer.produced) == 2 and loop.dlq.in_flight == 2
    loop.dlq._marks_paused_until = loop.dlq._clock() + 30  # a failed write of the marks
    loop.dlq._marks_away = True
    del producer.poll  # the acknowledgements come, while the marks pause
    loop._step()
    assert loop.dlq.in_flight == 0
    loop.dlq._marks_paused_until = 0.0  # MARKS_PAUSE_S later
    loop._step()
    consumer.queue = list(RECORDS[1:])  # the position moved back to 1 (an offset reset)
    for _ in range(3):
        loop._step()
    assert loop.tracker.moves_back == 1
    assert [e.offset for e in loop.delivery.drop(lambda e: True)] == [3]
    assert len(producer.produced) == 2, "dead-letters written again after the move back"



@pytest.mark.parametrize("dead_letter_marks_pause", [True, False])
def test_records_waiting_for_their_marks_after_a_move_back_are_left_to_the_next_owner_on_a_revoke(
        dead_letter_marks_pause: bool) -> None:
    """The copies held for their partition's dead-letter marks (`Pipeline._hold_read_again`), or
    their receipts waiting for the receipt marks (`ReceiptWriter.record`), leave with the
    partition: uncommitted, the next owner reads them again; none is decoded, dead-lettered or
    given a receipt here afterwards."""
    loop, consumer, producer = _with_receipts()
    assert loop.receipts is not None
    consumer.incremental_unassign = lambda partitions: None  # type: ignore[attr-defined]
    if dead_letter_marks_pause:
        loop.dlq._marks_paused_until = loop.dlq._clock() + 30  # Redis failed
        loop.dlq._marks_away = True
    loop.receipts._marks_paused_until = time.monotonic() + 30
    consumer.queue = list(RECORDS)  # the position moved back to 0
    for _ in range(3):
        loop._step()
    if dead_letter_marks_pause:
        assert loop.delivery.drop(lambda e: True) == [] and loop._unjudged
    else:
        assert loop.receipts._waiting  # 1 and 2 ended from their dead-letter marks, their receipts wait
    loop._on_revoke(consumer, [TopicPartition("t", 0)])
    assert not loop._unjudged and not loop.receipts._waiting
    loop.dlq._marks_paused_until = 0.0
    loop.receipts._marks_paused_until = 0.0
    for _ in range(3):
        loop._step()
    assert len(receipts_of(producer)) == 3 and producer.topics.count("dlq") == 2
    assert consumer.committed.get(("t", 0), 0) == 0  # the commit point went back to the new position
